import net from 'node:net';
import { constants as osConstants } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { streamPair } from '../../common/stream-pair.js';
import { InProcessAgent } from './in-process-agent.js';
import { IncomingManager } from './incoming.js';
import type { IncomingOptions } from './incoming-flags.js';

const options = (extra: Partial<IncomingOptions> = {}): IncomingOptions => ({ mode: 'steal', filter: undefined, portMap: new Map(), ports: undefined, ...extra });

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** The program's listener: a real loopback server; resolves each accepted connection's first bytes. */
async function programListener(): Promise<{ port: number; accepted: Array<{ socket: net.Socket; first: Promise<string> }>; close: () => Promise<void> }> {
  const accepted: Array<{ socket: net.Socket; first: Promise<string> }> = [];
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    accepted.push({ socket, first: new Promise((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString()))) });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => {
    for (const a of accepted) a.socket.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted,
    close: () => new Promise<void>((resolve) => {
      for (const a of accepted) a.socket.destroy();
      server.close(() => resolve());
    }),
  };
}

let nextStream = 2 ** 31;

/** The agent opens a stream for a pod client of `port` and sends `bytes` on it; resolves the errno it is closed with, if it is. */
function podClient(agent: InProcessAgent, port: number, bytes: string): { stream: number; closed: Promise<number | undefined> } {
  const stream = nextStream++;
  let closed!: (errno: number | undefined) => void;
  const closedP = new Promise<number | undefined>((resolve) => { closed = resolve; });
  agent.podMux.open(stream, (errno) => closed(errno));
  const [toCli, client] = streamPair();
  agent.podMux.bindSocket(stream, toCli as never);
  client.write(bytes);
  agent.emit({ type: 'incoming.open', stream, port, mode: 'steal', remoteAddress: '10.244.0.9', remotePort: 51000, localAddress: '10.244.0.5', localPort: port });
  return { stream, closed: closedP };
}

const until = async (check: () => boolean, ms = 3000): Promise<void> => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
};

function manager(agent: InProcessAgent, extra: Partial<IncomingOptions> = {}): IncomingManager {
  agent.answers['port.subscribe'] = (b) => ({ port: b.port });
  agent.answers['port.unsubscribe'] = (b) => ({ port: b.port });
  const m = new IncomingManager(agent, options(extra), () => undefined);
  cleanup.push(() => m.close());
  return m;
}

describe('incoming connections to the program', () => {
  it('a listen subscribes the pod\'s port; its connections reach the program, whose accept learns the pod client', async () => {
    const agent = new InProcessAgent();
    const incoming = manager(agent);
    const program = await programListener();
    expect(await incoming.listen({ op: 'listen', port: 8080, localPort: program.port, family: 4 })).toEqual({ ok: true, action: 'remote' });
    expect(agent.requests).toEqual([{ type: 'port.subscribe', port: 8080, mode: 'steal' }]);
    podClient(agent, 8080, 'GET / HTTP/1.1\r\n\r\n');
    await until(() => program.accepted.length === 1);
    const conn = program.accepted[0];
    expect(await conn?.first).toBe('GET / HTTP/1.1\r\n\r\n');
    const accepted = { op: 'peer', port: conn?.socket.remotePort ?? 0, addr: conn?.socket.remoteAddress ?? '', localPort: program.port } as const;
    expect(incoming.peer(accepted)).toEqual({ ok: true, action: 'remote', addr: '10.244.0.9', port: 51000, localAddr: '10.244.0.5', localPort: 8080 });
    expect(incoming.peer({ ...accepted, port: 1 })).toEqual({ ok: true, action: 'local' });
  });

  it('a local user who connects to the program\'s listener from our relay\'s port on another loopback address is no pod client', async () => {
    const agent = new InProcessAgent();
    const incoming = manager(agent);
    const program = await programListener();
    await incoming.listen({ op: 'listen', port: 8080, localPort: program.port, family: 4 });
    podClient(agent, 8080, 'GET / HTTP/1.1\r\n\r\n');
    await until(() => program.accepted.length === 1);
    const relayPort = program.accepted[0]?.socket.remotePort ?? 0;
    const impostor = net.connect({ port: program.port, host: '127.0.0.1', localAddress: '127.0.0.2', localPort: relayPort });
    impostor.on('error', () => undefined);
    cleanup.push(() => impostor.destroy());
    await until(() => program.accepted.length === 2);
    const accepted = program.accepted[1]?.socket;
    expect(accepted?.remoteAddress).toBe('127.0.0.2');
    expect(incoming.peer({ op: 'peer', port: accepted?.remotePort ?? 0, addr: accepted?.remoteAddress ?? '', localPort: program.port })).toEqual({ ok: true, action: 'local' });
    // Ours, asked about with the wrong listener port, is not it either.
    expect(incoming.peer({ op: 'peer', port: relayPort, addr: '127.0.0.1', localPort: 1 })).toEqual({ ok: true, action: 'local' });
  });

  it('debugger ports and a targetless session stay local', async () => {
    const agent = new InProcessAgent();
    const incoming = manager(agent);
    expect(await incoming.listen({ op: 'listen', port: 9229, localPort: 9229, family: 4 })).toEqual({ ok: true, action: 'local' });
    expect(agent.requests).toEqual([]);
  });

  it('without a relisten wait, closing the listener unsubscribes at once', async () => {
    const agent = new InProcessAgent();
    const incoming = manager(agent);
    await incoming.listen({ op: 'listen', port: 8080, localPort: 8080, family: 4 });
    incoming.unlisten({ op: 'unlisten', port: 8080 });
    expect(agent.requests.at(-1)).toEqual({ type: 'port.unsubscribe', port: 8080 });
  });
});

describe('--watch: connections wait for the program to listen again', () => {
  it('a connection that arrives while the program restarts goes to its new listener', async () => {
    const agent = new InProcessAgent();
    const incoming = manager(agent, { relistenWaitMs: 2000 });
    const before = await programListener();
    await incoming.listen({ op: 'listen', port: 8080, localPort: before.port, family: 4 });
    incoming.unlisten({ op: 'unlisten', port: 8080 });
    await before.close();
    podClient(agent, 8080, 'waited');
    await new Promise((r) => setTimeout(r, 50));
    const after = await programListener();
    expect(await incoming.listen({ op: 'listen', port: 8080, localPort: after.port, family: 4 })).toEqual({ ok: true, action: 'remote' });
    await until(() => after.accepted.length === 1);
    expect(await after.accepted[0]?.first).toBe('waited');
    expect(agent.requests.filter((r) => r.type === 'port.subscribe')).toHaveLength(1); // the port stayed subscribed
    expect(agent.requests.some((r) => r.type === 'port.unsubscribe')).toBe(false);
  });

  it('the program stopped (programStopped) and did not come back in time: unsubscribed, the waiting connection handed back to the pod\'s app', async () => {
    const agent = new InProcessAgent();
    const incoming = manager(agent, { relistenWaitMs: 100 });
    const program = await programListener();
    await incoming.listen({ op: 'listen', port: 8080, localPort: program.port, family: 4 });
    incoming.programStopped();
    const client = podClient(agent, 8080, 'nobody');
    expect(await client.closed).toBe(osConstants.errno.ECONNREFUSED);
    expect(program.accepted).toHaveLength(0);
    await until(() => agent.requests.at(-1)?.type === 'port.unsubscribe');
  });
});
