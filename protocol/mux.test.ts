import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { StreamMessage } from './messages.js';
import { Mux, RelayReader } from './mux.js';
import { streamPair } from '../common/stream-pair.js';

/** Two muxes joined back to back, with real loopback sockets at both ends. */
async function pair(window: number) {
  let a!: Mux;
  let b!: Mux;
  const sentToB: StreamMessage[] = [];
  a = new Mux((m) => { sentToB.push(m); setImmediate(() => b.handle(m)); }, () => 0, { window });
  b = new Mux((m) => setImmediate(() => a.handle(m)), () => 0, { window });
  return { a, b, sentToB };
}

async function socketPair(): Promise<[net.Socket, net.Socket, net.Server]> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise<void>((r) => client.once('connect', r));
  return [client, await accepted, server];
}

async function pollFor(done: () => boolean, ms = 10000): Promise<void> {
  const until = Date.now() + ms;
  while (!done() && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
}

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

describe('mux', () => {
  it('relays bytes both ways and propagates half-close', async () => {
    const { a, b } = await pair(64 * 1024);
    const [appA, muxSideA, s1] = await socketPair();
    const [muxSideB, appB, s2] = await socketPair();
    cleanup.push(() => { s1.close(); s2.close(); appA.destroy(); appB.destroy(); });
    a.open(1);
    b.open(1);
    a.bindSocket(1, muxSideA);
    b.bindSocket(1, muxSideB);
    const payload = randomBytes(3 * 1024 * 1024);
    const received: Buffer[] = [];
    const ended = new Promise<void>((r) => appB.on('end', r));
    appB.on('data', (d: Buffer) => received.push(d));
    appA.end(payload);
    await ended;
    expect(createHash('sha256').update(Buffer.concat(received)).digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'));
    // The other direction still works after A's half-close.
    const back = new Promise<Buffer>((r) => appA.once('data', r));
    appB.write('reply');
    expect(String(await back)).toBe('reply');
  });

  it('never has more than the window in flight for a reader that does not read', async () => {
    const window = 128 * 1024;
    const { a, b, sentToB } = await pair(window);
    const [appA, muxSideA, s1] = await socketPair();
    const [muxSideB, appB, s2] = await socketPair();
    cleanup.push(() => { s1.close(); s2.close(); appA.destroy(); appB.destroy(); });
    appB.pause(); // the slow reader
    a.open(1);
    b.open(1);
    a.bindSocket(1, muxSideA);
    b.bindSocket(1, muxSideB);
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (let i = 0; i < 256; i++) appA.write(chunk); // 16 MiB offered
    await new Promise((r) => setTimeout(r, 500));
    const sent = sentToB.filter((m) => m.type === 'data').reduce((n, m) => n + (m as { data: Uint8Array }).data.byteLength, 0);
    // What crossed is what B's kernel socket buffers absorbed plus at most one window and
    // one chunk; what waits in B's user-space buffer is bounded by the window.
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThan(16 * 1024 * 1024);
    expect(muxSideB.writableLength).toBeLessThanOrEqual(window + chunk.byteLength);
  });

  it('relays a socket read through a RelayReader: every byte in order, the end after the tail, frames over 64 KiB, never past the window', async () => {
    for (const window of [64 * 1024, 1024 * 1024]) {
      const { a, b, sentToB } = await pair(window);
      // A's mux side is read with onread (as the agent reads a pod connection).
      const server = net.createServer({ allowHalfOpen: true });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
      const reader = new RelayReader();
      const muxSideA = new net.Socket({ allowHalfOpen: true, onread: reader.onread } as net.SocketConstructorOpts);
      await new Promise<void>((r) => muxSideA.connect((server.address() as net.AddressInfo).port, '127.0.0.1', r));
      const appA = await accepted;
      const [muxSideB, appB, s2] = await socketPair();
      cleanup.push(() => { server.close(); s2.close(); appA.destroy(); appB.destroy(); });
      a.open(1);
      b.open(1);
      // Some bytes arrive before the bind: they wait in the reader.
      appA.write(Buffer.from('early '));
      await new Promise((r) => setTimeout(r, 50));
      a.bindSocket(1, muxSideA, reader);
      b.bindSocket(1, muxSideB);
      const payload = randomBytes(4 * 1024 * 1024);
      const received: Buffer[] = [];
      const ended = new Promise<void>((r) => appB.on('end', r));
      appB.on('data', (d: Buffer) => received.push(d));
      appA.end(payload);
      await ended;
      expect(Buffer.concat(received).equals(Buffer.concat([Buffer.from('early '), payload]))).toBe(true);
      const sizes = sentToB.filter((m) => m.type === 'data').map((m) => (m as { data: Uint8Array }).data.byteLength);
      expect(Math.max(...sizes)).toBeLessThanOrEqual(window);
      if (window > 64 * 1024) expect(Math.max(...sizes)).toBeGreaterThan(64 * 1024);
      expect(sentToB.findIndex((m) => m.type === 'end')).toBe(sentToB.length - 1 - [...sentToB].reverse().findIndex((m) => m.type === 'end'));
      expect(sentToB.slice(sentToB.findIndex((m) => m.type === 'end')).some((m) => m.type === 'data')).toBe(false);
      // The other direction still works after A's half-close.
      const back = new Promise<Buffer>((r) => appA.once('data', r));
      appB.write('reply');
      expect(String(await back)).toBe('reply');
    }
  }, 30000);

  it('RelayReaders of connections that only carry small reads share one buffer (no 256 KiB each per connect); a bulk one gets its own, and no chunk is ever overwritten', async () => {
    // Many connections, interleaved small writes: every chunk a reader delivered must stay as it was read.
    const readers = Array.from({ length: 8 }, () => new RelayReader());
    const buffers = new Set(readers.map((r) => r.onread.buffer()));
    expect(buffers.size).toBe(1); // one buffer for all of them, not one allocation per connection
    const server = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const apps: net.Socket[] = [];
    server.on('connection', (s) => apps.push(s));
    const sockets = await Promise.all(readers.map(async (reader) => {
      const s = new net.Socket({ allowHalfOpen: true, onread: reader.onread } as net.SocketConstructorOpts);
      await new Promise<void>((r) => s.connect((server.address() as net.AddressInfo).port, '127.0.0.1', r));
      return s;
    }));
    cleanup.push(() => { for (const s of [...sockets, ...apps]) s.destroy(); server.close(); });
    await pollFor(() => apps.length === readers.length);
    const got = readers.map(() => [] as Buffer[]);
    readers.forEach((reader, i) => { reader.deliver = (chunk) => { got[i]?.push(chunk); return true; }; });
    for (const s of sockets) s.resume();
    const sentText = apps.map(() => [] as string[]);
    for (let round = 0; round < 20; round++) {
      apps.forEach((app, i) => { const t = `conn ${i} round ${round};`; sentText[i]?.push(t); app.write(t); });
      await new Promise((r) => setTimeout(r, 2));
    }
    const expected = sentText.map((t) => t.join(''));
    await pollFor(() => got.every((chunks, i) => Buffer.concat(chunks).toString() === expected[i]));
    got.forEach((chunks, i) => expect(Buffer.concat(chunks).toString()).toBe(expected[i]));
    expect(new Set(readers.map((r) => r.onread.buffer())).size).toBe(1);
    // A bulk source: its reader gets a buffer of its own; the others keep the shared one.
    const big = randomBytes(2 * 1024 * 1024);
    apps[0]?.write(big);
    const want = Buffer.concat([Buffer.from(expected[0] ?? ''), big]);
    await pollFor(() => Buffer.concat(got[0] ?? []).byteLength >= want.byteLength);
    expect(Buffer.concat(got[0] ?? []).equals(want)).toBe(true);
    expect(readers[0]?.onread.buffer()).not.toBe(readers[1]?.onread.buffer());
    expect(readers[1]?.onread.buffer()).toBe(readers[2]?.onread.buffer());
  }, 30000);

  it('a connection done in both directions tells the peer with one `close`, not `end` then `close`; a half-close still sends `end` (issue 13)', async () => {
    for (const reader of [undefined, new RelayReader()]) {
      const sent: StreamMessage[] = [];
      const m = new Mux((msg) => sent.push(msg), () => 0);
      const server = net.createServer({ allowHalfOpen: true });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
      const side = new net.Socket({ allowHalfOpen: true, ...(reader ? { onread: reader.onread } : {}) } as net.SocketConstructorOpts);
      await new Promise<void>((r) => side.connect((server.address() as net.AddressInfo).port, '127.0.0.1', r));
      const app = await accepted;
      cleanup.push(() => { server.close(); app.destroy(); side.destroy(); });
      m.open(7);
      m.bindSocket(7, side, reader);
      // The peer ends first (the program closed); then the app answers and closes.
      const appEnded = new Promise<void>((r) => app.once('end', r));
      app.resume();
      m.handle({ type: 'end', stream: 7 });
      await appEnded;
      await pollFor(() => side.writableFinished);
      const closed = new Promise<void>((r) => side.once('close', () => r()));
      app.end('bye');
      await closed;
      await pollFor(() => sent.some((x) => x.type === 'close'));
      expect(sent.map((x) => x.type)).toEqual(['data', 'close']);
      expect(sent[1]).toEqual({ type: 'close', stream: 7 });

      // The app half-closes while the peer still writes: `end`, and the stream stays open.
      const sent2: StreamMessage[] = [];
      const m2 = new Mux((msg) => sent2.push(msg), () => 0);
      const [app2, side2, server2] = await socketPair();
      cleanup.push(() => { server2.close(); app2.destroy(); side2.destroy(); });
      m2.open(8);
      m2.bindSocket(8, side2);
      app2.end();
      await pollFor(() => sent2.some((x) => x.type === 'end'));
      expect(sent2.map((x) => x.type)).toEqual(['end']);
      expect(m2.has(8)).toBe(true);
    }
  });

  it('closes the socket when the peer resets the stream, and tells the peer when its socket closes', async () => {
    const sent: StreamMessage[] = [];
    const m = new Mux((msg) => sent.push(msg), () => 0);
    const [app, side, server] = await socketPair();
    cleanup.push(() => { server.close(); app.destroy(); });
    m.open(5);
    m.bindSocket(5, side);
    const closed = new Promise<void>((r) => app.on('close', () => r()));
    app.on('error', () => undefined);
    m.handle({ type: 'close', stream: 5, errno: 104 });
    await closed;
    expect(m.has(5)).toBe(false);

    const [app2, side2] = await socketPair();
    m.open(6);
    m.bindSocket(6, side2);
    app2.destroy(); // FIN from the program: half-close first, the stream stays open for the reply
    await new Promise((r) => setTimeout(r, 100));
    expect(sent.some((x) => x.type === 'end' && x.stream === 6)).toBe(true);
    expect(m.has(6)).toBe(true);
    m.handle({ type: 'close', stream: 6 }); // the peer finished too
    await new Promise((r) => setTimeout(r, 100));
    expect(m.has(6)).toBe(false);
  });

  it('a stream id the peer already uses, or one outside its range, is a protocol violation', () => {
    const m = new Mux(() => undefined, () => 0, { peerIds: 'client' });
    m.claimPeerStream(7);
    expect(() => m.claimPeerStream(7)).toThrow(expect.objectContaining({ code: 'TSM_ERR_PROTOCOL' }));
    m.open(7);
    expect(() => m.claimPeerStream(7)).toThrow(expect.objectContaining({ code: 'TSM_ERR_PROTOCOL' }));
    expect(() => m.open(7)).toThrow(expect.objectContaining({ code: 'TSM_ERR_PROTOCOL' }));
    expect(() => m.claimPeerStream(0x80000000)).toThrow(/outside the client's range/);
    expect(() => m.claimPeerStream(0)).toThrow(/outside the client's range/);
    m.claimPeerStream(8);
    m.releaseClaim(8);
    expect(m.isFree(8)).toBe(true);
    const agentSide = new Mux(() => undefined, () => 0, { peerIds: 'agent' });
    expect(() => agentSide.claimPeerStream(3)).toThrow(/outside the agent's range/);
    agentSide.claimPeerStream(0x80000001);
  });

  it('a peer that sends past its window is cut off; one that returns credit it never owed too', () => {
    const window = 64 * 1024;
    const m = new Mux(() => undefined, () => 0, { window });
    m.open(1); // no socket yet: data waits in the early buffer, credited only once delivered
    m.handle({ type: 'data', stream: 1, data: new Uint8Array(window) });
    expect(() => m.handle({ type: 'data', stream: 1, data: new Uint8Array(1) })).toThrow(expect.objectContaining({ code: 'TSM_ERR_PROTOCOL' }));
    m.open(2);
    expect(() => m.handle({ type: 'window', stream: 2, bytes: 1 })).toThrow(/credit for 1 bytes that were never sent/);
  });

  it('a sender never puts more than the window in flight, even from one chunk larger than the window', async () => {
    const window = 64 * 1024;
    const sent: StreamMessage[] = [];
    const m = new Mux((msg) => sent.push(msg), () => 0, { window });
    const [app, side, server] = await socketPair();
    cleanup.push(() => { server.close(); app.destroy(); });
    m.open(3);
    m.bindSocket(3, side);
    const payload = randomBytes(5 * window + 123);
    app.write(payload);
    const inFlight = (): number => sent.filter((x) => x.type === 'data').reduce((n, x) => n + (x as { data: Uint8Array }).data.byteLength, 0);
    await new Promise((r) => setTimeout(r, 200));
    expect(inFlight()).toBe(window);
    // Credit comes back in two parts; the rest follows in order, never past the window.
    m.handle({ type: 'window', stream: 3, bytes: window / 2 });
    await new Promise((r) => setTimeout(r, 100));
    expect(inFlight()).toBe(window + window / 2);
    let credited = window / 2;
    while (inFlight() < payload.byteLength) {
      const owed = inFlight() - credited;
      expect(owed).toBeLessThanOrEqual(window);
      m.handle({ type: 'window', stream: 3, bytes: owed });
      credited += owed;
      await new Promise((r) => setTimeout(r, 20));
    }
    const bytes = Buffer.concat(sent.filter((x) => x.type === 'data').map((x) => (x as { data: Uint8Array }).data));
    expect(bytes.equals(payload)).toBe(true);
  });

  it('delivers every byte of a stream whose app end closes while the tail still waits for credit (issue 16)', async () => {
    const window = 64 * 1024;
    const { a, b } = await pair(window);
    const [sideA, appA] = streamPair();
    const [sideB, appB] = streamPair();
    a.open(1);
    b.open(1);
    a.bindSocket(1, sideA);
    b.bindSocket(1, sideB);
    const received: Buffer[] = [];
    appB.on('data', (c: Buffer) => received.push(c));
    const ended = new Promise((r) => appB.once('end', r));
    // B's app ends its direction first, and A's app reads that to the end.
    appA.resume();
    const aEnded = new Promise((r) => appA.once('end', r));
    appB.end();
    await aEnded;
    // Then A's app writes more than the window at once and ends: its end is done both ways
    // and closes, while the last 1000 bytes wait in the stream for the credit to come back.
    const payload = randomBytes(window + 1000);
    appA.end(payload);
    await ended;
    expect(Buffer.concat(received).equals(payload)).toBe(true);
  });
});
