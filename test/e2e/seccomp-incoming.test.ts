/**
 * Incoming traffic for programs no preload reaches (issue 12): Go servers (the default
 * cgo build and CGO_ENABLED=0, built from source here with Debian's golang-go) and
 * busybox-static httpd run under `tsmirror exec`, whose seccomp supervisor answers their
 * bind/listen/accept/accept4/getpeername/getsockname (native/supervisor/listen.c, accept.c). On the
 * local node harness: the pod `app` runs a server on 8080, a `client` pod sends requests
 * to the app's pod IP.
 */
import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { pollUntil, repoRoot, run, startAgentProcess, stopAll, type AgentProcess, type BackgroundCli, startBackgroundCli } from './tsm.js';

const FIX = join(repoRoot, 'test', 'e2e', 'fixtures');
const NODE_SERVER = join(FIX, 'incoming-server.mjs');
const BUSYBOX = '/bin/busybox';

let harness: Harness;
let app: Pod;
let client: Pod;
let agent: AgentProcess;
let work: string;
/** The Go server, by build. */
const goServer: Record<'cgo' | 'static', string> = { cgo: '', static: '' };

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tsm-seccomp-in-'));
  writeFileSync(join(work, 'index.html'), 'hello from busybox\n');
  // Built from source on every run: the default build (cgo, dynamically linked) and a static one.
  const env = { ...process.env, GOCACHE: join(work, 'gocache'), GOPATH: join(work, 'gopath'), GOFLAGS: '-mod=mod', GO111MODULE: 'on' };
  const src = join(FIX, 'go-server');
  const builds = await Promise.all([
    run('go', ['build', '-o', join(work, 'go-server-cgo'), '.'], { cwd: src, env, timeoutMs: 240000 }),
    run('go', ['build', '-o', join(work, 'go-server-static'), '.'], { cwd: src, env: { ...env, CGO_ENABLED: '0' }, timeoutMs: 240000 }),
    run('gcc', ['-static', '-O2', '-o', join(work, 'accept-edge'), join(FIX, 'accept-edge.c')], { timeoutMs: 120000 }),
  ]);
  for (const b of builds) expect(b.code, b.stderr).toBe(0);
  goServer.cgo = join(work, 'go-server-cgo');
  goServer.static = join(work, 'go-server-static');
  expect(spawnSync('file', [goServer.static], { encoding: 'utf8' }).stdout).toContain('statically linked');
  expect(spawnSync('file', [goServer.cgo], { encoding: 'utf8' }).stdout).toContain('dynamically linked');
  harness = await Harness.create({ name: 'seccomp-in' });
  [app, client] = await Promise.all([
    harness.addPod({ name: 'app', command: ['/usr/bin/node', NODE_SERVER, 'pod', '8080'], readyPort: 8080, ipv6: true }),
    harness.addPod({ name: 'client', command: ['/usr/bin/sleep', 'infinity'], ipv6: true }),
  ]);
  agent = await startAgentProcess();
}, 300000);

afterAll(async () => {
  for (const s of sessions) s.kill();
  await stopAll({ agent, harness, dirs: [work] });
});

afterEach(async () => {
  await Promise.all([...sessions].map((s) => s.stop()));
});

type Session = BackgroundCli;
const sessions = new Set<Session>();

/**
 * `tsmirror exec` in the background, in its own process group. With no reconnect grace: a
 * session whose CLI a cleanup kills would otherwise keep its steal of 8080 at the agent for
 * the default 60 s grace (issue 16), and the next test's steal of that port is refused.
 */
function startSession(flags: string[], command: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Session {
  return startBackgroundCli(['exec', '--agent', agent.url, '--target', `pid/${app.pid}`, '--reconnect-grace', '0', ...flags, '--', ...command], sessions, { cwd: work, ...opts });
}

const curl = (pod: Pod, url: string, extra: string[] = []) =>
  harness.exec(pod, ['curl', '-sS', '--max-time', '10', ...extra, url], { timeoutMs: 20000 });

const who = (body: string): string => body.split(' ')[0] ?? '';
const re = (s: string): string => s.replace(/[.[\]]/g, '\\$&');

function tables(pod: Pod): string {
  return spawnSync('nsenter', ['-t', String(pod.pid), '-n', 'nft', 'list', 'tables'], { encoding: 'utf8' }).stdout;
}

async function noRulesLeft(pod: Pod): Promise<void> {
  await pollUntil(() => !tables(pod).includes('tsmirror'), 5000);
  expect(tables(pod)).not.toContain('tsmirror');
}

describe.each(['cgo', 'static'] as const)('a Go net/http server (%s build)', (build) => {
  it('under --steal --http-header: matching requests reach it with the client pod as RemoteAddr and the pod address as its local address; the rest reach the pod', async () => {
    const s = startSession(['--steal', '--http-header', 'x-dev: alice'], [goServer[build], 'alice', '8080']);
    await s.waitFor(/stealing requests matching x-dev: alice on port 8080 of the pod/);
    expect(s.err()).toMatch(/intercepting with seccomp/); // no flag: auto picks it for Go
    for (let i = 0; i < 3; i++) {
      const mine = await curl(client, `http://${app.ip}:8080/mine${i}`, ['-H', 'x-dev: alice']);
      expect(mine.stdout, mine.stderr).toBe(`alice GET /mine${i} peer=${client.ip} len=0 sha256=${EMPTY_SHA}\n`);
      const theirs = await curl(client, `http://${app.ip}:8080/theirs${i}`);
      expect(who(theirs.stdout), theirs.stderr).toBe('pod');
    }
    // getsockname of the accepted socket: the pod's address and port, not loopback.
    await s.waitFor(new RegExp(`REQ alice GET /mine2 peer=${re(client.ip)} .* x-dev=alice local=${re(app.ip)}:8080\\n`));
    expect(s.out()).not.toMatch(/peer=127\.0\.0\.1/);
    // An IPv6 client: its IPv6 address, and the pod's.
    const v6 = await curl(client, `http://[${app.ipv6 ?? ''}]:8080/six`, ['-g', '-H', 'x-dev: alice']);
    expect(v6.stdout, v6.stderr).toMatch(new RegExp(`^alice GET /six peer=${re(client.ipv6 ?? 'none')} `));
    await s.waitFor(new RegExp(`REQ alice GET /six .* local=\\[${re(app.ipv6 ?? '')}\\]:8080\\n`));
    await s.stop();
    await noRulesLeft(app);
  });

  it('under --mirror: the client gets the pod\'s answer and the Go server sees a copy', async () => {
    const s = startSession(['--mirror'], [goServer[build], 'mirror', '8080']);
    await s.waitFor(/mirroring port 8080 of the pod/);
    const r = await curl(client, `http://${app.ip}:8080/copy`, ['--data-binary', 'some body']);
    expect(who(r.stdout), r.stderr).toBe('pod');
    await s.waitFor(new RegExp(`REQ mirror POST /copy peer=${re(client.ip)} len=9 `));
    await s.stop();
    await noRulesLeft(app);
  });
});

describe('go run', () => {
  it('a server started with `go run .` (its child) is stolen from too', async () => {
    const env = { ...process.env, GOCACHE: join(work, 'gocache'), GOPATH: join(work, 'gopath'), GOTMPDIR: work, GOFLAGS: '-mod=mod', GOPROXY: 'off' };
    const s = startSession(['--steal', '--http-header', 'x-dev: alice'], ['go', 'run', '.', 'gorun', '8080'], { cwd: join(FIX, 'go-server'), env });
    await s.waitFor(/stealing requests matching x-dev: alice on port 8080 of the pod/, 120000);
    const mine = await curl(client, `http://${app.ip}:8080/run`, ['-H', 'x-dev: alice']);
    expect(mine.stdout, mine.stderr).toMatch(new RegExp(`^gorun GET /run peer=${re(client.ip)} `));
    expect(who((await curl(client, `http://${app.ip}:8080/other`)).stdout)).toBe('pod');
  }, 180000);
});

describe('a Go server under load', () => {
  it('600 mixed requests over 8 keep-alive connections are all routed right, each stolen one with the client pod as its peer', async () => {
    const s = startSession(['--steal', '--http-header', 'x-dev: alice'], [goServer.static, 'alice', '8080']);
    await s.waitFor(/stealing requests matching x-dev: alice on port 8080 of the pod/);
    const r = await harness.exec(client, ['/usr/bin/node', join(FIX, 'incoming-client.mjs'), `http://${app.ip}:8080/`, '600', '8'], { timeoutMs: 60000 });
    expect(r.stderr).toBe('');
    const res = JSON.parse(r.stdout) as { answers: Record<string, number>; errors: number };
    expect(res.errors).toBe(0);
    expect(res.answers).toEqual({ 'alice->alice': 200, 'bob->pod': 200, '-->pod': 200 });
    const lines = s.out().split('\n').filter((l) => l.startsWith('REQ alice'));
    expect(lines).toHaveLength(200);
    expect(lines.filter((l) => !l.includes(`peer=${client.ip} `) || !l.includes(`local=${app.ip}:8080`))).toEqual([]);
  });
});

describe('a Go server whose pod port another session steals', () => {
  it('fails to listen with EADDRINUSE, and the proxy\'s message names the holder', async () => {
    const holder = startSession(['--steal'], ['/usr/bin/node', NODE_SERVER, 'holder', '8080']);
    await holder.waitFor(/stealing all traffic on port 8080 of the pod/);
    const s = startSession(['--steal'], [goServer.static, 'second', '8080']);
    await s.waitFor(/cannot take port 8080 of the pod.*already stolen by/);
    // Go's net.Listen returns the error listen() failed with.
    await s.waitFor(/listen: listen tcp :8080: listen: address already in use/);
    expect(who((await curl(client, `http://${app.ip}:8080/`)).stdout)).toBe('holder');
  });
});

describe('hostile arguments (a static C program)', () => {
  it('bad pointers, lengths and flags fail as the kernel says; a connection taken for a call that then failed goes to the next accept', async () => {
    const s = startSession(['--steal'], [join(work, 'accept-edge'), '8080']);
    await s.waitFor(/stealing all traffic on port 8080 of the pod/);
    const r = await curl(client, `http://${app.ip}:8080/`);
    expect(r.stdout, r.stderr).toBe('from accept-edge\n');
    await s.waitFor(/peer .*\n/);
    const lines = s.out().trim().split('\n');
    expect(lines).toEqual([
      'bind-bad-pointer errno=14', // EFAULT
      'bind-bad-length errno=22', // EINVAL
      'up',
      'accept-bad-addr errno=14', // the connection is kept…
      'accept-bad-len errno=14',
      'accept-negative-len errno=22',
      'accept-bad-flags errno=22',
      'short-buffer len=28 family=10', // …for this accept: the address cut to 4 bytes, its length 28
      'getsockname-bad-pointer errno=14',
      `peer ::ffff:${client.ip} local ::ffff:${app.ip}:8080`,
    ]);
  });
});

describe('a Go server whose port is taken on this machine', () => {
  let taken: Server | undefined;
  beforeAll(async () => {
    const squatter = createServer((c) => c.end('the local squatter\n'));
    // Another suite's program may hold 8080 already: taken either way.
    taken = await new Promise<Server | undefined>((resolve) => {
      squatter.once('error', () => resolve(undefined));
      squatter.listen(8080, '0.0.0.0', () => resolve(squatter));
    });
  });
  afterAll(() => new Promise<void>((r) => (taken ? taken.close(() => r()) : r())));

  it('listens on a free port instead, still reports the asked port, gets the pod\'s traffic; closing the listener gives the port back to the pod', async () => {
    const s = startSession(['--steal'], [goServer.static, 'thief', '8080', '4']);
    const moved = await s.waitFor(/port 8080 of the pod → local port (\d+) \(the program asked for 8080, which is taken here\)/);
    // A client on this machine reaches the program directly and is its own peer.
    const local = await run('curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${moved[1] ?? ''}/local`]);
    expect(local.stdout, local.stderr).toMatch(/^thief GET \/local peer=127\.0\.0\.1 /);
    // getsockname of the listener reports the port it asked for.
    await s.waitFor(/LISTENING thief 8080 addr=\[::\]:8080/);
    const r = await curl(client, `http://${app.ip}:8080/x`);
    expect(r.stdout, r.stderr).toMatch(new RegExp(`^thief GET /x peer=${re(client.ip)} `));
    await s.waitFor(/CLOSED thief/, 10000);
    await s.waitFor(/port 8080 of the pod is back to the pod's app alone/);
    expect(who((await curl(client, `http://${app.ip}:8080/after`)).stdout)).toBe('pod');
    await s.stop();
    await noRulesLeft(app);
  });
});

describe('busybox-static httpd', () => {
  it('under --steal serves the pod\'s clients from the local folder, and logs the client pod as the peer (blocking accept)', async () => {
    const s = startSession(['--steal'], [BUSYBOX, 'httpd', '-f', '-vv', '-p', '8080', '-h', work]);
    await s.waitFor(/stealing all traffic on port 8080 of the pod/);
    for (let i = 0; i < 3; i++) {
      const r = await curl(client, `http://${app.ip}:8080/index.html`);
      expect(r.stdout, r.stderr).toBe('hello from busybox\n');
      // httpd serves each connection in a forked child that closes its copy of the
      // listener: that must not give the port back (the listener lives on in httpd).
      await new Promise((res) => setTimeout(res, 700));
    }
    expect(s.err()).not.toMatch(/back to the pod's app alone/);
    // busybox logs the address accept() gave it (an IPv6 listener: v4-mapped).
    await s.waitFor(new RegExp(`\\[::ffff:${re(client.ip)}\\]:\\d+: url:/index.html`));
    expect(s.err()).not.toMatch(/127\.0\.0\.1\]?:\d+: url:/);
    await s.stop();
    await noRulesLeft(app);
  });
});

describe('a blocking accept under --intercept seccomp (python)', () => {
  it('gets the pod client; a shutdown() from another thread ends the next blocking accept with EINVAL and gives the port back', async () => {
    const script = [
      'import socket, threading, time',
      's = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      "s.bind(('0.0.0.0', 8080)); s.listen(8); print('up', flush=True)",
      'c, a = s.accept(); print("peer", a[0], flush=True)',
      'c.recv(1000); c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nfrom python\\n"); c.close()',
      'def stop():',
      '  time.sleep(1); s.shutdown(socket.SHUT_RDWR)',
      'threading.Thread(target=stop).start()',
      'try:',
      '  s.accept()',
      'except OSError as e:',
      '  print("accept ended", e.errno, flush=True)',
      'time.sleep(60)',
    ].join('\n');
    const s = startSession(['--steal', '--intercept', 'seccomp'], ['/usr/bin/python3', '-c', script]);
    await s.waitFor(/stealing all traffic on port 8080 of the pod/);
    const r = await curl(client, `http://${app.ip}:8080/`);
    expect(r.stdout, r.stderr).toBe('from python\n');
    await s.waitFor(new RegExp(`peer ${re(client.ip)}\n`));
    await s.waitFor(/accept ended 22\n/);
    await s.waitFor(/port 8080 of the pod is back to the pod's app alone/);
    expect(who((await curl(client, `http://${app.ip}:8080/after`)).stdout)).toBe('pod');
  });
});

const EMPTY_SHA = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
