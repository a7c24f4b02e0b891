/**
 * Incoming traffic end to end, on the local node harness, with real programs: the pod
 * `app` runs a server on 8080; a local program under `tsmirror exec` listens on 8080
 * too; a `client` pod sends requests (curl, node) to the app's pod IP. Mirror, steal,
 * HTTP filters, several sessions on one port, fail-open.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { cliPath, pollUntil, repoRoot, startAgentProcess, stopAll, type AgentProcess, type BackgroundCli, startBackgroundCli } from './tsm.js';

const FIX = join(repoRoot, 'test', 'e2e', 'fixtures');
const SERVER = join(FIX, 'incoming-server.mjs');
const PY = '/usr/bin/python3';

let harness: Harness;
let app: Pod;
let client: Pod;
let agent: AgentProcess;
let localDir: string;

beforeAll(async () => {
  harness = await Harness.create({ name: 'incoming' });
  [app, client] = await Promise.all([
    harness.addPod({ name: 'app', command: ['/usr/bin/node', SERVER, 'pod', '8080'], readyPort: 8080, ipv6: true }),
    harness.addPod({ name: 'client', command: ['/usr/bin/sleep', 'infinity'], files: { '/data/big.bin': bigBody() }, ipv6: true }),
  ]);
  agent = await startAgentProcess();
  localDir = mkdtempSync(join(tmpdir(), 'tsm-incoming-'));
  writeFileSync(join(localDir, 'index.html'), 'hello from local\n');
});

afterAll(async () => {
  for (const s of sessions) s.kill();
  await stopAll({ agent, harness, dirs: [localDir] });
});

afterEach(async () => {
  await Promise.all([...sessions].map((s) => s.stop()));
});

let big: Buffer | undefined;
function bigBody(): Buffer {
  if (!big) {
    big = Buffer.alloc(10 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  }
  return big;
}

/** A `tsmirror exec` running in the background (in its own process group), its output collected. */
type Session = BackgroundCli;
const sessions = new Set<Session>();

function startSession(flags: string[], command: string[], agentUrl = agent.url, target: Pod = app): Session {
  return startBackgroundCli(['exec', '--agent', agentUrl, '--target', `pid/${target.pid}`, ...flags, '--', ...command], sessions, { cwd: localDir });
}

/** Starts a local node server NAME under tsmirror and waits until the pod's port is subscribed. */
async function localServer(name: string, flags: string[]): Promise<Session> {
  const s = startSession(flags, ['/usr/bin/node', SERVER, name, '8080']);
  await s.waitFor(/port 8080 of the pod/);
  return s;
}

const curl = (pod: Pod, url: string, extra: string[] = []) =>
  harness.exec(pod, ['curl', '-sS', '--max-time', '10', ...extra, url], { timeoutMs: 20000 });

const who = (body: string): string => body.split(' ')[0] ?? '';

function tables(pod: Pod): string {
  return spawnSync('nsenter', ['-t', String(pod.pid), '-n', 'nft', 'list', 'tables'], { encoding: 'utf8' }).stdout;
}

async function noRulesLeft(pod: Pod): Promise<void> {
  await pollUntil(() => !tables(pod).includes('tsmirror'), 5000);
  expect(tables(pod)).not.toContain('tsmirror');
}

describe('filtered steal', () => {
  it('x-dev: alice reaches the local python http.server, other requests the pod; it sees the client pod as its peer', async () => {
    const s = startSession(['--steal', '--http-header', 'x-dev: alice'], [PY, '-m', 'http.server', '8080', '--directory', localDir]);
    await s.waitFor(/stealing requests matching x-dev: alice on port 8080 of the pod/);
    const mine = await curl(client, `http://${app.ip}:8080/`, ['-H', 'x-dev: alice']);
    expect(mine.stdout).toBe('hello from local\n');
    const theirs = await curl(client, `http://${app.ip}:8080/`);
    expect(who(theirs.stdout)).toBe('pod');
    const other = await curl(client, `http://${app.ip}:8080/`, ['-H', 'x-dev: alicex']);
    expect(who(other.stdout)).toBe('pod');
    // python's access log names the peer accept() returned: the client pod, not loopback.
    await s.waitFor(new RegExp(`${client.ip.replace(/\./g, '\\.')} - - .*"GET / HTTP/1.1" 200`));
    expect(s.err()).not.toMatch(/127\.0\.0\.1 - - /);
    await s.stop();
    await noRulesLeft(app);
  });

  it('1,000 mixed requests over keep-alive connections are all routed right', async () => {
    const s = await localServer('alice', ['--http-header', 'X-Dev: alice']);
    const r = await harness.exec(client, ['/usr/bin/node', join(FIX, 'incoming-client.mjs'), `http://${app.ip}:8080/`, '1000', '8'], { timeoutMs: 60000 });
    expect(r.stderr).toBe('');
    const res = JSON.parse(r.stdout) as { answers: Record<string, number>; connections: number; mixedConnections: number; errors: number };
    expect(res.errors).toBe(0);
    expect(res.answers).toEqual({ 'alice->alice': 334, 'bob->pod': 333, '-->pod': 333 });
    // Keep-alive: at most 8 connections carried them all, each with answers from both sides.
    expect(res.connections).toBeLessThanOrEqual(8);
    expect(res.mixedConnections).toBe(res.connections);
    // The local program saw the client pod as peer on every stolen request.
    const lines = s.out().split('\n').filter((l) => l.startsWith('REQ alice'));
    expect(lines).toHaveLength(334);
    expect(lines.every((l) => l.includes(`peer=${client.ip} `))).toBe(true);
  });

  it('in-pod loopback traffic with the header is stolen too; a chunked POST body arrives whole', async () => {
    await localServer('alice', ['--steal', '--http-header', 'x-dev: alice']);
    const lo = await harness.exec(app, ['curl', '-sS', '--max-time', '10', '-H', 'x-dev: alice', 'http://127.0.0.1:8080/lo'], { timeoutMs: 20000 });
    expect(lo.stdout).toMatch(/^alice GET \/lo peer=127\.0\.0\.1 /);
    const plain = await harness.exec(app, ['curl', '-sS', '--max-time', '10', 'http://127.0.0.1:8080/lo'], { timeoutMs: 20000 });
    expect(who(plain.stdout)).toBe('pod');
    const body = 'x'.repeat(100000);
    const chunked = await curl(client, `http://${app.ip}:8080/up`, ['-H', 'x-dev: alice', '-H', 'Transfer-Encoding: chunked', '--data-binary', body]);
    expect(chunked.stdout).toContain(`alice POST /up peer=${client.ip} len=100000 sha256=${createHash('sha256').update(body).digest('hex')}`);
  });

  it('IPv6 clients are stolen too, and the program sees their IPv6 address; Expect: 100-continue works', async () => {
    await localServer('alice', ['--steal', '--http-header', 'x-dev: alice']);
    const v6 = await curl(client, `http://[${app.ipv6 ?? ''}]:8080/six`, ['-g', '-H', 'x-dev: alice']);
    expect(v6.stdout).toMatch(new RegExp(`^alice GET /six peer=${client.ipv6 ?? 'none'} `));
    expect(who((await curl(client, `http://[${app.ipv6 ?? ''}]:8080/six`, ['-g'])).stdout)).toBe('pod');
    const body = 'y'.repeat(5000);
    const cont = await curl(client, `http://${app.ip}:8080/cont`, ['-H', 'x-dev: alice', '-H', 'Expect: 100-continue', '--data-binary', body, '-w', ' %{http_code}']);
    expect(cont.stdout).toMatch(/^alice POST \/cont .* len=5000 .* 200$/s);
  });

  it('path and method filters select requests', async () => {
    await localServer('api', ['--http-path', '/api/.*', '--http-method', 'post']);
    expect(who((await curl(client, `http://${app.ip}:8080/api/x?q=1`, ['-X', 'POST'])).stdout)).toBe('api');
    expect(who((await curl(client, `http://${app.ip}:8080/api/x`)).stdout)).toBe('pod');
    expect(who((await curl(client, `http://${app.ip}:8080/apix`, ['-X', 'POST'])).stdout)).toBe('pod');
  });

  it('a WebSocket upgrade with the header reaches the local program and data flows both ways', async () => {
    await localServer('alice', ['--steal', '--http-header', 'x-dev: alice']);
    const ws = await harness.exec(client, ['/usr/bin/node', join(FIX, 'ws-client.mjs'), `ws://${app.ip}:8080/ws`, 'x-dev: alice', 'one', 'two'], { timeoutMs: 20000 });
    expect(ws.stderr).toBe('');
    expect(ws.stdout).toBe('alice:one\nalice:two\n');
    const podWs = await harness.exec(client, ['/usr/bin/node', join(FIX, 'ws-client.mjs'), `ws://${app.ip}:8080/ws`, 'x-dev: bob', 'three'], { timeoutMs: 20000 });
    expect(podWs.stdout).toBe('pod:three\n');
  });

  it('non-HTTP traffic on a filtered port passes through to the app, also when the server speaks first', async () => {
    const banner = await harness.addPod({
      name: 'banner',
      command: [PY, '-c', [
        'import socket', 's=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)', "s.bind(('0.0.0.0', 2525)); s.listen(8)",
        'while True:', '  c,_=s.accept(); c.sendall(b"220 banner from pod\\r\\n"); d=c.recv(100); c.sendall(b"got "+d); c.close()',
      ].join('\n')],
      readyPort: 2525,
    });
    try {
      const s = startSession(['--steal', '--http-header', 'x-dev: alice'],
        [PY, '-c', 'import socket,time\ns=socket.socket(); s.bind(("0.0.0.0", 2525)); s.listen(8)\nwhile True: time.sleep(1)'], agent.url, banner);
      await s.waitFor(/port 2525 of the pod/);
      // Server speaks first: the client waits for the banner before sending anything.
      const r = await harness.exec(client, [PY, '-c', [
        'import socket,time', `c=socket.create_connection(("${banner.ip}", 2525)); t=time.time()`,
        'b=c.recv(100); c.sendall(b"hi"); print(b.decode().strip(), c.recv(100).decode(), round(time.time()-t, 1))',
      ].join('\n')], { timeoutMs: 20000 });
      expect(r.stdout).toMatch(/^220 banner from pod got hi /);
      expect(Number(r.stdout.trim().split(' ').pop())).toBeLessThanOrEqual(1.5);
      // A client that speaks first but not HTTP goes through at once.
      const t = await harness.exec(client, [PY, '-c', [
        'import socket', `c=socket.create_connection(("${banner.ip}", 2525))`, 'c.sendall(b"\\x16\\x03\\x01 binary")',
        'print(c.recv(100).decode().strip())',
      ].join('\n')], { timeoutMs: 20000 });
      expect(t.stdout).toMatch(/^220 banner from pod/);
      await s.stop();
      await noRulesLeft(banner);
    } finally {
      await harness.removePod(banner);
    }
  });

  it('h2c (HTTP/2 with prior knowledge) is routed per request: matching streams to the program, the rest to the app, trailers and bodies intact', async () => {
    const H2 = join(FIX, 'h2-server.mjs');
    const h2 = await harness.addPod({ name: 'h2', command: ['/usr/bin/node', H2, 'pod', '8443'], readyPort: 8443 });
    try {
      const s = startSession(['--steal', '--http-header', 'x-dev: alice'], ['/usr/bin/node', H2, 'local', '8443'], agent.url, h2);
      await s.waitFor(/port 8443 of the pod/);
      const stolen = await harness.exec(client, ['curl', '-sS', '--max-time', '10', '--http2-prior-knowledge', '-H', 'x-dev: alice', `http://${h2.ip}:8443/a?q=1`], { timeoutMs: 20000 });
      expect(stolen.stdout, stolen.stderr).toMatch(/^local \/a\?q=1 x-dev=alice /);
      const passed = await harness.exec(client, ['curl', '-sS', '--max-time', '10', '--http2-prior-knowledge', `http://${h2.ip}:8443/b`], { timeoutMs: 20000 });
      expect(passed.stdout, passed.stderr).toMatch(/^pod \/b x-dev=- /);
      // 20 requests multiplexed on one connection, alternating, and a 1 MiB POST.
      const many = await harness.exec(client, ['/usr/bin/node', join(FIX, 'h2-client.mjs'), `http://${h2.ip}:8443`, '20'], { timeoutMs: 30000 });
      expect(many.code, many.stderr).toBe(0);
      const results = many.stdout.trim().split('\n').map((l) => JSON.parse(l) as { i: number; dev: boolean; body: string; trailer: string; sent: string });
      expect(results).toHaveLength(20);
      for (const r of results) {
        const who = r.dev ? 'local' : 'pod';
        expect(r.body, JSON.stringify(r)).toBe(`${who} /r${r.i} x-dev=${r.dev ? 'alice' : '-'} sha256=${r.sent}`);
        expect(r.trailer, JSON.stringify(r)).toBe(who);
      }
      await s.stop();
      // The session gone, h2c with the header goes to the app.
      const after = await harness.exec(client, ['curl', '-sS', '--max-time', '10', '--http2-prior-knowledge', '-H', 'x-dev: alice', `http://${h2.ip}:8443/c`], { timeoutMs: 20000 });
      expect(after.stdout, after.stderr).toMatch(/^pod \/c x-dev=alice /);
      await noRulesLeft(h2);
    } finally {
      await harness.removePod(h2);
    }
  });
});

describe('several sessions on one port', () => {
  it('alice and bob steal their requests, a mirror sees all, the pod answers the rest', async () => {
    const alice = await localServer('alice', ['--steal', '--http-header', 'x-dev: alice']);
    const bob = await localServer('bob', ['--steal', '--http-header', 'x-dev: bob']);
    const mirror = await localServer('mirror', ['--mirror']);
    // All three listen on 8080 here: the later ones were moved to free ports.
    expect(bob.err()).toMatch(/the program asked for 8080, which is taken here/);
    const r = await harness.exec(client, ['/usr/bin/node', join(FIX, 'incoming-client.mjs'), `http://${app.ip}:8080/`, '300', '4'], { timeoutMs: 60000 });
    const res = JSON.parse(r.stdout) as { answers: Record<string, number>; errors: number };
    expect(res.errors).toBe(0);
    expect(res.answers).toEqual({ 'alice->alice': 100, 'bob->bob': 100, '-->pod': 100 });
    const count = (s: Session, prefix: string): number => s.out().split('\n').filter((l) => l.startsWith(prefix)).length;
    const t0 = Date.now();
    while (count(mirror, 'REQ mirror GET') < 300 && Date.now() - t0 < 5000) await new Promise((res2) => setTimeout(res2, 50));
    expect(count(mirror, 'REQ mirror GET')).toBe(300);
    expect(count(alice, 'REQ alice')).toBe(100);
    expect(count(bob, 'REQ bob')).toBe(100);
    expect(mirror.out()).toContain(`peer=${client.ip} `);
    await Promise.all([alice.stop(), bob.stop()]);
    // The mirror is still there: the rules stay until the last session leaves.
    expect(tables(app)).toContain('tsmirror');
    await mirror.stop();
    await noRulesLeft(app);
  });
});

describe('mirror', () => {
  it('clients get the pod\'s answers, the local program sees each request, a 10 MB POST arrives intact', async () => {
    const m = await localServer('mirror', []);
    const get = await curl(client, `http://${app.ip}:8080/m1`);
    expect(get.stdout).toMatch(/^pod GET \/m1 /);
    const post = await curl(client, `http://${app.ip}:8080/upload`, ['--data-binary', '@/data/big.bin', '-H', 'content-type: application/octet-stream']);
    const sha = createHash('sha256').update(bigBody()).digest('hex');
    expect(post.stdout).toContain(`pod POST /upload peer=`);
    expect(post.stdout).toContain(`len=${bigBody().length} sha256=${sha}`);
    await m.waitFor(new RegExp(`REQ mirror POST /upload peer=${client.ip.replace(/\./g, '\\.')} len=${bigBody().length} sha256=${sha}`));
    await m.waitFor(/REQ mirror GET \/m1 /);
  });
  it('mirror-never-reads: a mirroring program that never reads does not hold up the pod\'s app; its copies are cut and counted', async () => {
    // Listens and never accepts: what the CLI relays stays in its socket, the CLI stops
    // crediting the copies' windows, and the copies back up in the agent.
    const s = startSession([], [PY, '-c', 'import socket, time\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 8080)); s.listen(64)\ntime.sleep(600)']);
    await s.waitFor(/port 8080 of the pod/);
    const uploads = 12;
    const r = await harness.exec(client, ['/bin/sh', '-c',
      `for i in $(seq ${uploads}); do curl -sS --max-time 50 -H 'content-type: application/octet-stream' --data-binary @/data/big.bin -o /tmp/up$i http://${app.ip}:8080/up$i & done; wait; cat /tmp/up*`], { timeoutMs: 60000 });
    const sha = createHash('sha256').update(bigBody()).digest('hex');
    const answers = r.stdout.trim().split('\n');
    expect(answers).toHaveLength(uploads);
    for (const a of answers) expect(a).toMatch(new RegExp(`^pod POST /up\\d+ peer=\\S+ len=${bigBody().length} sha256=${sha}$`));
    const status = await (await fetch(`${agent.url.replace('ws:', 'http:')}/status`)).json() as { sessions: Array<{ mirrorCut?: number; mirrorBytesDropped?: number }> };
    const cut = status.sessions.find((x) => (x.mirrorCut ?? 0) > 0);
    expect(cut?.mirrorCut).toBeGreaterThan(0);
    expect(cut?.mirrorBytesDropped).toBeGreaterThan(0);
    // Any of the three limits may cut first (a copy 16 MiB behind, the session 32 MiB behind, 8 MiB unsent on its WebSocket).
    expect(agent.log()).toMatch(/mirror of port 8080 for session \S+: .*; copies are cut while it is behind/);
  });
});

describe('unfiltered steal', () => {
  it('every request reaches the local program; a second steal is refused naming the holder', async () => {
    await localServer('thief', ['--steal']);
    for (const [extra, path] of [[[], '/a'], [['-H', 'x-dev: bob'], '/b'], [['-X', 'POST', '-d', 'x'], '/c']] as const) {
      const r = await curl(client, `http://${app.ip}:8080${path}`, [...extra]);
      expect(r.stdout).toMatch(new RegExp(`^thief \\w+ ${path} peer=${client.ip.replace(/\./g, '\\.')} `));
    }
    const second = startSession(['--steal'], ['/usr/bin/node', SERVER, 'second', '8080']);
    await second.waitFor(/cannot take port 8080 of the pod/);
    expect(second.err()).toContain(`already stolen by ${userInfo().username}@${hostname()}`);
    expect(second.err()).toContain('TSM_ERR_PORT_CONFLICT');
    const filtered = startSession(['--steal', '--http-header', 'x-dev: carol'], ['/usr/bin/node', SERVER, 'carol', '8080']);
    await filtered.waitFor(/cannot take port 8080 of the pod.*already stolen by/);
    // The holder keeps the port.
    expect(who((await curl(client, `http://${app.ip}:8080/d`)).stdout)).toBe('thief');
  });
});

describe('fail-open', () => {
  async function servedByPodWithin(ms: number): Promise<number> {
    const t0 = Date.now();
    for (;;) {
      const r = await curl(client, `http://${app.ip}:8080/probe`, ['--max-time', '1']);
      if (who(r.stdout) === 'pod') return Date.now() - t0;
      if (Date.now() - t0 > ms) return Date.now() - t0;
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  it('SIGKILL of the agent during an unfiltered steal: the pod serves again within 3 s; a new agent removes the old rules', async () => {
    const own = await startAgentProcess();
    try {
      const s = startSession(['--steal'], ['/usr/bin/node', SERVER, 'thief', '8080'], own.url);
      await s.waitFor(/port 8080 of the pod/);
      expect(who((await curl(client, `http://${app.ip}:8080/`)).stdout)).toBe('thief');
      own.child.kill('SIGKILL');
      const ms = await servedByPodWithin(6000);
      expect(ms).toBeLessThan(3500);
      expect(tables(app)).toContain('tsmirror'); // left behind by the dead agent…
      await s.stop();
      const next = await startAgentProcess();
      try {
        expect(next.log()).toMatch(/removed 1 redirect table\(s\) left by an earlier agent/);
        expect(tables(app)).not.toContain('tsmirror'); // …and removed by the next one
      } finally {
        await next.stop();
      }
    } finally {
      await own.stop();
    }
  });

  // A killed CLI looks to the agent like a dropped connection: the session (and its steal) is
  // kept for the reconnect grace, then released (fail-open).
  it('SIGKILL of the CLI: the pod serves again within 3 s after the reconnect grace', async () => {
    const s = await localServer('thief', ['--steal', '--reconnect-grace', '1']);
    expect(who((await curl(client, `http://${app.ip}:8080/`)).stdout)).toBe('thief');
    s.kill();
    const ms = await servedByPodWithin(8000);
    expect(ms).toBeLessThan(1000 + 3000);
    await noRulesLeft(app);
  });

  it('a CLI that stops answering (SIGSTOP): the pod serves again within 3 s after the heartbeat timeout and the reconnect grace', async () => {
    const own = await startAgentProcess(['--heartbeat-timeout', '2000', '--heartbeat-interval', '500']);
    try {
      const s = startSession(['--steal', '--reconnect-grace', '1'], ['/usr/bin/node', SERVER, 'thief', '8080'], own.url);
      await s.waitFor(/port 8080 of the pod/);
      expect(who((await curl(client, `http://${app.ip}:8080/`)).stdout)).toBe('thief');
      process.kill(s.child.pid ?? 0, 'SIGSTOP');
      const ms = await servedByPodWithin(12000);
      expect(ms).toBeLessThan(2000 + 1000 + 3000);
      process.kill(s.child.pid ?? 0, 'SIGCONT');
      await s.stop();
      await noRulesLeft(app);
    } finally {
      await own.stop();
    }
  });

  it('a steal whose program is not listening any more: requests go to the app', async () => {
    const s = startSession(['--steal'], [PY, '-c', 'import socket,time\ns=socket.socket(); s.bind(("0.0.0.0", 8080)); s.listen(8); print("up", flush=True)\ntime.sleep(2); s.close(); print("closed", flush=True); time.sleep(60)']);
    await s.waitFor(/closed/);
    await s.waitFor(/port 8080 of the pod is back to the pod's app alone/);
    expect(who((await curl(client, `http://${app.ip}:8080/`)).stdout)).toBe('pod');
  });
});

describe('options', () => {
  it('--port-map runs a program listening on 3000 for the pod\'s 8080; --ports leaves other listeners local', async () => {
    const s = startSession(['--steal', '--http-header', 'x-dev: alice', '--port-map', '3000:8080', '--ports', '8080'], [
      '/bin/sh', '-c', `/usr/bin/node ${SERVER} mapped 3000 & /usr/bin/node ${SERVER} other 9090 & wait`,
    ]);
    await s.waitFor(/port 8080 of the pod → local port 3000/);
    await s.waitFor(/LISTENING other 9090/);
    expect(who((await curl(client, `http://${app.ip}:8080/`, ['-H', 'x-dev: alice'])).stdout)).toBe('mapped');
    expect(s.err()).not.toMatch(/port 9090 of the pod/);
  });

  it('bad filters are refused before anything starts', async () => {
    const r = spawnSync(process.execPath, [cliPath, 'exec', '--agent', agent.url, '--target', `pid/${app.pid}`, '--mirror', '--http-header', 'x-dev: alice', '--', 'true'], { encoding: 'utf8' });
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(/HTTP filters .* select requests to steal.*TSM_ERR_USAGE/s);
    const bad = spawnSync(process.execPath, [cliPath, 'exec', '--agent', agent.url, '--target', `pid/${app.pid}`, '--http-path', '(', '--', 'true'], { encoding: 'utf8' });
    expect(bad.status).toBe(125);
    expect(bad.stderr).toMatch(/--http-path "\(" is not a valid regular expression/);
  });
});
