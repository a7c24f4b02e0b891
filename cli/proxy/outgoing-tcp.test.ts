import { spawn } from 'node:child_process';
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteError } from '../../protocol/errors.js';
import type { ShimRequestOf } from '../../protocol/shim-wire.js';
import { echoServer, InProcessAgent, programSocketClaim } from './in-process-agent.js';
import { OutgoingTcp } from './outgoing-tcp.js';

const dest = { action: 'remote', address: '10.0.0.9', family: 4 } as const;
const connect = (extra: Partial<ShimRequestOf<'connect'>> = {}): ShimRequestOf<'connect'> => ({ op: 'connect', proto: 'tcp', family: 4, addr: '10.0.0.9', port: 80, ...extra });

/** The program's socket, connected the way the shim does it: to the proxy's answer. */
function programConnect(port: number): net.Socket {
  const s = net.connect({ port, host: '127.0.0.1' });
  s.on('error', () => undefined);
  return s;
}

function once<T>(emitter: NodeJS.EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, resolve as (v: unknown) => void));
}

async function roundTrip(s: net.Socket, text: string): Promise<string> {
  s.write(text);
  return ((await once<Buffer>(s, 'data')).toString());
}

const until = async (check: () => boolean, ms = 3000): Promise<void> => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
};

let agent: InProcessAgent;
let tcp: OutgoingTcp;
let echo: Awaited<ReturnType<typeof echoServer>>;
const sockets: net.Socket[] = [];

beforeEach(async () => {
  agent = new InProcessAgent();
  echo = await echoServer();
  tcp = await OutgoingTcp.start(agent, { pairTimeoutMs: 200, heldPairTimeoutMs: 400, holdMs: 50 });
});

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await tcp.close();
  await echo.close();
});

describe('outgoing TCP: the pod connects first, then the program is paired by its port', () => {
  it('answers with the loopback listener and the pod-side address, and relays bytes both ways', async () => {
    agent.answers['tcp.connect'] = (b) => agent.connectInPod(b.stream, echo.port);
    const reply = await tcp.connect(connect(), dest);
    expect(reply).toMatchObject({ ok: true, action: 'proxy', proxyAddr: '127.0.0.1', stream: 1, localAddr: '127.0.0.1' });
    expect(agent.requests[0]).toMatchObject({ type: 'tcp.connect', host: '10.0.0.9', port: 80, family: 4, timeoutMs: 0 });
    expect(agent.requests[0]).not.toHaveProperty('holdMs'); // a blocking connect waits for the pod
    const program = programConnect((reply as { proxyPort: number }).proxyPort);
    sockets.push(program);
    await once(program, 'connect');
    tcp.attach({ op: 'attach', stream: 1, ...programSocketClaim(program) });
    expect(await roundTrip(program, 'ping')).toBe('ping');
    expect(tcp.stats).toEqual({ tcpConnects: 1, heldConnects: 0 });
  });

  it('pairs an attach that arrives before the accept', async () => {
    // Bind the program's port first so the attach can name it before the connect is accepted.
    const program = new net.Socket();
    sockets.push(program);
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const freePort = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    // Node has no socket (no inode) before its connect: the kernel's answer is the test's.
    await tcp.close();
    tcp = await OutgoingTcp.start(agent, { pairTimeoutMs: 200, peerOwner: (s) => (s.remotePort === freePort ? { inode: 42, uid: 0 } : undefined) });
    agent.answers['tcp.connect'] = (b) => agent.connectInPod(b.stream, echo.port);
    const reply = await tcp.connect(connect(), dest) as { proxyPort: number; stream: number };
    tcp.attach({ op: 'attach', stream: reply.stream, port: freePort, inode: 42, uid: 0 });
    program.connect({ port: reply.proxyPort, host: '127.0.0.1', localPort: freePort, localAddress: '127.0.0.1' });
    await once(program, 'connect');
    expect(await roundTrip(program, 'early attach')).toBe('early attach');
  });

  it('passes the pod\'s refusal through as its errno, and closes the stream', async () => {
    agent.answers['tcp.connect'] = () => Promise.reject(new RemoteError('TSM_ERR_CONNECT', 'connect ECONNREFUSED 10.0.0.9:80', osConstants.errno.ECONNREFUSED));
    expect(await tcp.connect(connect(), dest)).toEqual({ ok: false, errno: osConstants.errno.ECONNREFUSED, message: 'connect ECONNREFUSED 10.0.0.9:80' });
    expect(agent.peer.mux.has(1)).toBe(false);
  });

  it('a failure that is not the pod\'s own is thrown (the dispatcher answers it), and the stream closes', async () => {
    agent.answers['tcp.connect'] = () => Promise.reject(new Error('session ended'));
    await expect(tcp.connect(connect(), dest)).rejects.toThrow('session ended');
    expect(agent.peer.mux.has(1)).toBe(false);
  });

  it('drops an accepted connection that no attach claims, and a stream whose program never connects', async () => {
    agent.answers['tcp.connect'] = (b) => agent.connectInPod(b.stream, echo.port);
    const reply = await tcp.connect(connect(), dest) as { proxyPort: number; stream: number };
    const stray = programConnect(reply.proxyPort);
    sockets.push(stray);
    await once(stray, 'close'); // pairTimeoutMs
    expect(agent.peer.mux.has(reply.stream)).toBe(true);
    tcp.attach({ op: 'attach', stream: reply.stream, port: 1, inode: 1, uid: 0 }); // a socket that never connects
    await until(() => !agent.peer.mux.has(reply.stream));
    await until(() => echo.connections.size === 0); // the pod's connection went with it
  });
});

describe('another local user cannot take the program\'s connection', () => {
  /** The program's socket connected to the proxy's listener, and the proxy has accepted it (unclaimed yet). */
  async function programConnected(): Promise<{ reply: { proxyPort: number; stream: number }; program: net.Socket }> {
    agent.answers['tcp.connect'] = (b) => agent.connectInPod(b.stream, echo.port);
    const reply = await tcp.connect(connect(), dest) as { proxyPort: number; stream: number };
    const program = programConnect(reply.proxyPort);
    sockets.push(program);
    await once(program, 'connect');
    await new Promise((r) => setTimeout(r, 30));
    return { reply, program };
  }

  it('a connection from the program\'s port on another loopback address is not paired; the program\'s own is', async () => {
    await tcp.close();
    tcp = await OutgoingTcp.start(agent, { pairTimeoutMs: 2000 });
    const { reply, program } = await programConnected();
    const squatter = net.connect({ port: reply.proxyPort, host: '127.0.0.1', localAddress: '127.0.0.2', localPort: program.localPort ?? 0 });
    sockets.push(squatter);
    squatter.on('error', () => undefined);
    const squatterGot: string[] = [];
    squatter.on('data', (d: Buffer) => squatterGot.push(d.toString()));
    await once(squatter, 'connect');
    squatter.write('injected');
    await new Promise((r) => setTimeout(r, 30)); // accepted after the program's connection
    tcp.attach({ op: 'attach', stream: reply.stream, ...programSocketClaim(program) });
    expect(await roundTrip(program, 'mine')).toBe('mine');
    await new Promise((r) => setTimeout(r, 50));
    expect(squatterGot).toEqual([]);
  });

  it.skipIf(process.getuid?.() !== 0)('another user who writes from the program\'s port and closes at once is not paired', async () => {
    await tcp.close();
    tcp = await OutgoingTcp.start(agent, { pairTimeoutMs: 2000 });
    const { reply, program } = await programConnected();
    const script = `import socket\ns=socket.socket()\ns.bind(('127.0.0.2',${program.localPort ?? 0}))\ns.connect(('127.0.0.1',${reply.proxyPort}))\ns.sendall(b'injected')\ns.close()`;
    const squatter = spawn('/usr/bin/setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '/usr/bin/python3', '-c', script], { stdio: 'ignore' });
    expect(await once<number>(squatter, 'exit')).toBe(0);
    await new Promise((r) => setTimeout(r, 30));
    tcp.attach({ op: 'attach', stream: reply.stream, ...programSocketClaim(program) });
    expect(await roundTrip(program, 'mine')).toBe('mine');
  });
});

describe('held connects through OutgoingTcp', () => {
  it('a non-blocking connect the pod has not finished in holdMs is answered at once with a held listener', async () => {
    agent.answers['tcp.connect'] = (b) => {
      expect(b.holdMs).toBe(50);
      agent.podMux.open(b.stream);
      return { localAddress: '', localPort: 0, pending: true };
    };
    const reply = await tcp.connect(connect({ nonblock: true }), dest) as Record<string, unknown>;
    expect(reply).toMatchObject({ ok: true, action: 'proxy', proxyAddr: '127.0.0.1', stream: 1 });
    expect(reply).not.toHaveProperty('localAddr');
    expect(tcp.heldCount).toBe(1);
    const program = programConnect(reply.proxyPort as number);
    sockets.push(program);
    let connected = false;
    program.once('connect', () => { connected = true; });
    await new Promise((r) => setTimeout(r, 100));
    expect(connected).toBe(false); // its SYN is dropped: still connecting
    tcp.attach({ op: 'attach', stream: 1, ...programSocketClaim(program) });
    const pod = await agent.connectInPod(1, echo.port);
    agent.emit({ type: 'tcp.connected', stream: 1, ...pod });
    await until(() => connected);
    expect(await roundTrip(program, 'late')).toBe('late');
    expect(tcp.heldCount).toBe(0);
    expect(tcp.stats.heldConnects).toBe(1);
  });

  it('tcp.connected right behind the pending answer (dispatched before the request continues): the held connect is released', async () => {
    agent.answers['tcp.connect'] = (b) => {
      agent.podMux.open(b.stream);
      // The agent sends both at once: the pending answer, then tcp.connected in the same chunk.
      queueMicrotask(() => agent.emit({ type: 'tcp.connected', stream: b.stream, localAddress: '10.0.0.5', localPort: 40000 }));
      return { localAddress: '', localPort: 0, pending: true };
    };
    const reply = await tcp.connect(connect({ nonblock: true }), dest) as { proxyPort: number; stream: number };
    const program = programConnect(reply.proxyPort);
    sockets.push(program);
    let connected = false;
    program.once('connect', () => { connected = true; });
    await new Promise((r) => setTimeout(r, 50));
    tcp.attach({ op: 'attach', stream: reply.stream, ...programSocketClaim(program) });
    await until(() => connected, 2000); // before: it waited for a tcp.connected that had come and gone
    expect(tcp.heldCount).toBe(0);
  });

  it('the pod\'s failure right behind the pending answer: the held listener closes, the program is refused', async () => {
    agent.answers['tcp.connect'] = (b) => {
      agent.podMux.open(b.stream);
      queueMicrotask(() => agent.podMux.close(b.stream, osConstants.errno.EHOSTUNREACH));
      return { localAddress: '', localPort: 0, pending: true };
    };
    await tcp.connect(connect({ nonblock: true }), dest);
    await until(() => tcp.heldCount === 0, 2000);
  });

  it('the pod\'s failure closes the held listener: the program is refused', async () => {
    agent.answers['tcp.connect'] = (b) => {
      agent.podMux.open(b.stream);
      return { localAddress: '', localPort: 0, pending: true };
    };
    const reply = await tcp.connect(connect({ nonblock: true }), dest) as { proxyPort: number };
    const program = net.connect({ port: reply.proxyPort, host: '127.0.0.1' });
    sockets.push(program);
    const failed = new Promise<string | undefined>((resolve) => program.once('error', (e: NodeJS.ErrnoException) => resolve(e.code)));
    tcp.attach({ op: 'attach', stream: 1, port: program.localPort ?? 0, inode: 1, uid: 0 });
    agent.podMux.close(1, osConstants.errno.EHOSTUNREACH);
    await until(() => tcp.heldCount === 0);
    expect(await failed).toBe('ECONNREFUSED'); // at the SYN retransmission, about 1 s later
  }, 10000);

  // The agent sends its `pending` answer and, as soon as the pod's connect is done,
  // tcp.connected (or the stream's close): both may arrive in one read, the message handled
  // before the reply's continuation has made the held connect (issue 12's flaky 64 x 50 test).
  it('tcp.connected handled before the pending answer\'s continuation still releases the held connect', async () => {
    agent.answers['tcp.connect'] = async (b) => {
      const pod = await agent.connectInPod(b.stream, echo.port);
      queueMicrotask(() => agent.emit({ type: 'tcp.connected', stream: b.stream, ...pod }));
      return { localAddress: '', localPort: 0, pending: true };
    };
    const reply = await tcp.connect(connect({ nonblock: true }), dest) as { proxyPort: number };
    expect(tcp.stats.heldConnects).toBe(1);
    const program = programConnect(reply.proxyPort);
    sockets.push(program);
    let connected = false;
    program.once('connect', () => { connected = true; });
    await new Promise((r) => setTimeout(r, 100));
    expect(connected).toBe(false); // its SYN is dropped: still connecting
    tcp.attach({ op: 'attach', stream: 1, ...programSocketClaim(program) });
    await until(() => connected);
    expect(await roundTrip(program, 'early')).toBe('early');
    expect(tcp.heldCount).toBe(0);
  });

  it('the stream\'s close handled before the pending answer\'s continuation: the connect fails with the pod\'s errno', async () => {
    agent.answers['tcp.connect'] = (b) => {
      agent.podMux.open(b.stream);
      queueMicrotask(() => agent.peer.mux.handle({ type: 'close', stream: b.stream, errno: osConstants.errno.EHOSTUNREACH }));
      return { localAddress: '', localPort: 0, pending: true };
    };
    const reply = await tcp.connect(connect({ nonblock: true }), dest);
    expect(reply).toMatchObject({ ok: false, errno: osConstants.errno.EHOSTUNREACH });
    expect(tcp.heldCount).toBe(0);
  });

  it('beyond maxHeld a non-blocking connect waits for the pod as a blocking one does', async () => {
    await tcp.close();
    tcp = await OutgoingTcp.start(agent, { maxHeld: 0 });
    agent.answers['tcp.connect'] = (b) => agent.connectInPod(b.stream, echo.port);
    await tcp.connect(connect({ nonblock: true }), dest);
    expect(agent.requests[0]).not.toHaveProperty('holdMs');
  });
});

describe('loopback addresses', () => {
  it('an IPv6 program socket is sent to ::1 when there is one, else to the mapped IPv4 loopback', () => {
    expect(tcp.proxyAddress(4)).toBe('127.0.0.1');
    expect(tcp.proxyAddress(6)).toBe(tcp.hasIpv6Loopback ? '::1' : '::ffff:127.0.0.1');
  });
});
