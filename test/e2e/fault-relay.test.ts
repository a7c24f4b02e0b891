/**
 * The fault relay on its own (test/e2e/fault-relay.ts), against plain TCP servers on
 * loopback: what it relays arrives intact, and each fault does what the survival tests
 * rely on.
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FaultRelay } from './fault-relay.js';

const servers: net.Server[] = [];
const relays: FaultRelay[] = [];

afterEach(async () => {
  for (const r of relays.splice(0)) await r.close();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

/** A server on a free loopback port; `onConn` gets every connection. */
async function server(onConn: (s: net.Socket) => void): Promise<number> {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined); // the relay resets them at the end of each test
    onConn(s);
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return (srv.address() as net.AddressInfo).port;
}

async function relayTo(port: number): Promise<FaultRelay> {
  const relay = await FaultRelay.start({ host: '127.0.0.1', port });
  relays.push(relay);
  return relay;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    s.once('connect', () => {
      s.on('error', () => undefined); // tests that expect one listen for it themselves
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Everything a socket receives until its end. */
function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** Resolves once `n` bytes have arrived on `s` (collected from now on). */
function bytes(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const on = (d: Buffer): void => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        s.off('data', on);
        resolve(Buffer.concat(chunks));
      }
    };
    s.on('data', on);
  });
}

const echo = (s: net.Socket): void => {
  s.pipe(s);
};

describe('fault relay', () => {
  it('relays both directions intact, half-close included', async () => {
    const relay = await relayTo(await server(echo));
    const c = await connect(relay.port);
    const sent = randomBytes(4 << 20);
    const back = readAll(c);
    c.end(sent);
    expect((await back).equals(sent)).toBe(true);
    expect(relay.stats.up).toBe(sent.length);
    expect(relay.stats.down).toBe(sent.length);
  });

  it('a server that answers after the client half-closed still gets its answer through', async () => {
    const relay = await relayTo(await server((s) => {
      let n = 0;
      s.on('data', (d: Buffer) => (n += d.length));
      s.on('end', () => setTimeout(() => s.end(`got ${n}`), 200));
    }));
    const c = await connect(relay.port);
    const back = readAll(c);
    c.end(Buffer.alloc(1000));
    expect((await back).toString()).toBe('got 1000');
  });

  it('reset: open connections are reset, new ones refused for the window, then accepted on the same port', async () => {
    const relay = await relayTo(await server(echo));
    const c = await connect(relay.port);
    const err = new Promise<NodeJS.ErrnoException>((r) => c.once('error', r));
    const port = relay.port;
    await relay.reset(600);
    expect((await err).code).toBe('ECONNRESET');
    await expect(connect(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(relay.refusing).toBe(true);
    await relay.listening(3000);
    expect(relay.refusing).toBe(false);
    expect(relay.port).toBe(port);
    const d = await connect(port);
    const back = bytes(d, 5);
    d.write('again');
    expect((await back).toString()).toBe('again');
    d.destroy();
    expect(relay.stats.reset).toBe(1);
  });

  it('stall: nothing passes and nothing closes; afterwards what was held arrives in order, new connections included', async () => {
    const relay = await relayTo(await server(echo));
    const c = await connect(relay.port);
    let received = 0;
    c.on('data', (d: Buffer) => (received += d.length));
    relay.stall();
    const sent = randomBytes(256 << 10);
    c.write(sent);
    const late = await connect(relay.port); // accepted by the kernel; waits like a SYN would
    let lateReceived = 0;
    late.on('data', (d: Buffer) => (lateReceived += d.length));
    late.write('late');
    await new Promise((r) => setTimeout(r, 700));
    expect(received).toBe(0);
    expect(lateReceived).toBe(0);
    expect(c.destroyed).toBe(false);
    c.removeAllListeners('data');
    const back = bytes(c, sent.length);
    const lateBack = bytes(late, 4);
    relay.resume();
    expect((await back).equals(sent)).toBe(true);
    expect((await lateBack).toString()).toBe('late');
    c.destroy();
    late.destroy();
  });

  it('stall(ms) ends by itself', async () => {
    const relay = await relayTo(await server(echo));
    const c = await connect(relay.port);
    relay.stall(500);
    const started = Date.now();
    const back = bytes(c, 2);
    c.write('hi');
    await back;
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect(relay.stalled).toBe(false);
    c.destroy();
  });

  it('slow: throughput is limited and latency added, bytes intact', async () => {
    const payload = randomBytes(300 << 10);
    const relay = await relayTo(await server((s) => s.end(payload)));
    relay.slow({ bytesPerSecond: 200 << 10 });
    let started = Date.now();
    const got = await readAll(await connect(relay.port));
    const ms = Date.now() - started;
    expect(got.equals(payload)).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(1200); // 300 KiB at 200 KiB/s: 1.5 s
    relay.slow({ delayMs: 300 });
    const e = await relayTo(await server(echo));
    e.slow({ delayMs: 300 });
    const c = await connect(e.port);
    started = Date.now();
    const back = bytes(c, 4);
    c.write('ping');
    await back;
    expect(Date.now() - started).toBeGreaterThanOrEqual(550); // both directions delayed
    c.destroy();
  });

  it('reorderNext: connection attempts reach the upstream in reverse order', async () => {
    const order: string[] = [];
    const relay = await relayTo(await server((s) => {
      s.once('data', (d: Buffer) => order.push(d.toString()));
      s.on('error', () => undefined);
    }));
    relay.reorderNext(3, 200);
    const conns: net.Socket[] = [];
    for (const name of ['first', 'second', 'third']) {
      const c = await connect(relay.port);
      c.write(name);
      conns.push(c);
    }
    const until = Date.now() + 3000;
    while (order.length < 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(order).toEqual(['third', 'second', 'first']);
    for (const c of conns) c.destroy();
  });

  it('an upstream that refuses: the client is reset', async () => {
    const port = await server(echo);
    await new Promise((r) => servers.pop()?.close(r));
    const relay = await relayTo(port);
    const c = await connect(relay.port);
    const err = await new Promise<NodeJS.ErrnoException>((r) => c.once('error', r));
    expect(err.code).toBe('ECONNRESET');
  });
});
