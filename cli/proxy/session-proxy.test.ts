import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unpackPlain } from '../../protocol/codec.js';
import { encodeShimRequest, shimFrame, type ShimRequest } from '../../protocol/shim-wire.js';
import { echoServer, InProcessAgent, programSocketClaim } from './in-process-agent.js';
import { SessionProxy, UNSEEN_WARNINGS } from './session-proxy.js';

const dir = mkdtempSync(join(tmpdir(), 'tsm-proxy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let agent: InProcessAgent;
let proxy: SessionProxy;
let shim: net.Socket;
let echo: Awaited<ReturnType<typeof echoServer>>;
const replies: unknown[] = [];

beforeEach(async () => {
  agent = new InProcessAgent();
  echo = await echoServer();
  proxy = await SessionProxy.start(agent, {
    routing: { remoteLocalhost: false, localDest: [], remoteDest: [] },
    localNameservers: [], podNameservers: [], log: () => undefined, tmpdir: dir,
  });
  shim = net.connect(proxy.socketPath);
  await new Promise((r) => shim.once('connect', r));
  replies.length = 0;
  let buf = Buffer.alloc(0);
  shim.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.byteLength >= 4 && buf.byteLength >= 4 + buf.readUInt32BE(0)) {
      replies.push(unpackPlain(buf.subarray(4, 4 + buf.readUInt32BE(0))));
      buf = buf.subarray(4 + buf.readUInt32BE(0));
    }
  });
});
afterEach(async () => {
  shim.destroy();
  await proxy.close();
  await echo.close();
});

/** Sends requests as the shim does and waits for `expect` replies. */
async function ask(requests: Array<Record<string, unknown>>, expected = requests.length): Promise<unknown[]> {
  const from = replies.length;
  shim.write(Buffer.concat(requests.map((r) => shimFrame(encodeShimRequest(r as ShimRequest)))));
  const end = Date.now() + 3000;
  while (replies.length < from + expected && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  return replies.slice(from);
}

describe('session proxy: one op, one handler', () => {
  it('a remote TCP connect end to end: connect, the program\'s socket, attach on the channel, bytes through the pod', async () => {
    agent.answers['tcp.connect'] = (b) => agent.connectInPod(b.stream, echo.port);
    const [reply] = await ask([{ op: 'connect', proto: 'tcp', family: 4, addr: '10.0.0.9', port: 80, timeoutMs: 0 }]) as Array<{ proxyPort: number; stream: number }>;
    expect(reply).toMatchObject({ ok: true, action: 'proxy', proxyAddr: '127.0.0.1', stream: 1 });
    const program = net.connect({ port: reply?.proxyPort ?? 0, host: '127.0.0.1' });
    await new Promise((r) => program.once('connect', r));
    await ask([{ op: 'attach', stream: reply?.stream, ...programSocketClaim(program) }], 0);
    program.write('through the pod');
    expect(await new Promise<string>((resolve) => program.once('data', (d: Buffer) => resolve(d.toString())))).toBe('through the pod');
    program.destroy();
    expect(proxy.stats).toMatchObject({ tcpConnects: 1, heldConnects: 0, localPassThrough: 0, failures: 0 });
  });

  it('a blocking connect whose shim closed its channel meanwhile (a signal interrupted it): the pod connection is closed, not kept for the session', async () => {
    agent.answers['tcp.connect'] = async (b) => {
      await new Promise((r) => setTimeout(r, 100));
      return agent.connectInPod(b.stream, echo.port);
    };
    shim.write(shimFrame(encodeShimRequest({ op: 'connect', proto: 'tcp', family: 4, addr: '10.0.0.9', port: 80, timeoutMs: 0 })));
    await new Promise((r) => setTimeout(r, 20));
    shim.destroy();
    const end = Date.now() + 3000;
    while ((agent.peer.mux.size > 0 || echo.connections.size > 0) && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    expect(agent.requests.map((r) => r.type)).toEqual(['tcp.connect']);
    expect(agent.peer.mux.size).toBe(0);
    expect(echo.connections.size).toBe(0);
  });

  it('notices of what the preload cannot see: one warning per kind and session, every one counted', async () => {
    const warned: string[] = [];
    const quiet = await SessionProxy.start(agent, {
      routing: { remoteLocalhost: false, localDest: [], remoteDest: [] },
      localNameservers: [], podNameservers: [], log: () => undefined, tmpdir: dir, warn: (line) => warned.push(line),
    });
    const frames = (['io_uring', 'io_uring', 'raw-open', 'raw-connect', 'raw-open'] as const).map((what) => shimFrame(encodeShimRequest({ op: 'notice', what })));
    for (const frame of frames) {
      const process = net.connect(quiet.socketPath); // each from another process of the program
      process.end(frame);
    }
    const end = Date.now() + 3000;
    while (quiet.stats.unseen < 5 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    expect(quiet.stats.unseen).toBe(5);
    expect(warned.sort()).toEqual([UNSEEN_WARNINGS.io_uring, UNSEEN_WARNINGS['raw-connect'], UNSEEN_WARNINGS['raw-open']].sort());
    await quiet.close();
  });

  it('loopback stays local; names go to the pod; localhost does not', async () => {
    agent.answers['dns.lookup'] = () => ({ addresses: [{ family: 4, address: '10.96.0.7' }], canonname: 'db.default.svc.cluster.local' });
    expect(await ask([
      { op: 'connect', proto: 'tcp', family: 4, addr: '127.0.0.1', port: 5432 },
      { op: 'resolve', name: 'localhost' },
      { op: 'resolve', name: 'db', family: 4 },
    ])).toEqual([
      { ok: true, action: 'local' },
      { ok: true, action: 'local' },
      { ok: true, action: 'remote', addrs: [{ family: 4, addr: '10.96.0.7' }], canonname: 'db.default.svc.cluster.local' },
    ]);
    expect(proxy.stats).toMatchObject({ localPassThrough: 1, lookups: 1 });
  });

  it('a bad field, a name as a connect address and a session failure are answered with errno and eai, and counted', async () => {
    agent.answers['dns.lookup'] = () => Promise.reject(new Error('the session ended'));
    expect(await ask([
      { op: 'connect', proto: 'sctp', family: 4, addr: '10.0.0.9', port: 80 },
      { op: 'connect', proto: 'tcp', family: 4, addr: 'db', port: 80 },
      { op: 'resolve', name: 'db' },
    ])).toEqual([
      { ok: false, errno: osConstants.errno.EINVAL, eai: -3, message: 'shim request "connect" has a bad "proto"' },
      { ok: false, errno: osConstants.errno.EINVAL, eai: -3, message: 'connect needs a literal address' },
      { ok: false, errno: osConstants.errno.ENETDOWN, eai: -3, message: 'the session ended' },
    ]);
    expect(proxy.stats.failures).toBe(3);
  });

  it('without pod files or incoming traffic: fs.config says local, listen stays local', async () => {
    expect(await ask([
      { op: 'fs.config' },
      { op: 'fs.stat', path: '/data/x' },
      { op: 'listen', port: 8080, localPort: 8080, family: 4 },
      { op: 'peer', port: 40000, addr: '127.0.0.1', localPort: 8080 },
    ])).toEqual([
      { ok: true, mode: 'local' },
      { ok: false, errno: osConstants.errno.ENOSYS, message: 'this session has no pod files' },
      { ok: true, action: 'local' },
      { ok: true, action: 'local' },
    ]);
  });

  it('close removes the private folder and its socket', async () => {
    const folder = dirname(proxy.socketPath);
    expect(existsSync(proxy.socketPath)).toBe(true);
    await proxy.close();
    expect(existsSync(folder)).toBe(false);
    proxy = await SessionProxy.start(agent, { routing: { remoteLocalhost: false, localDest: [], remoteDest: [] }, localNameservers: [], podNameservers: [], log: () => undefined, tmpdir: dir });
  });
});
