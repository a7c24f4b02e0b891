/**
 * Static and Go programs under the seccomp supervisor, on the local node harness: their
 * connections, name lookups and environment are the pod's, as the preload gives dynamic
 * libc programs. The Go programs are built from source in the test run (Debian's
 * golang-go; test/e2e/fixtures/go-net), never committed: a default (cgo, dynamically
 * linked) build, a CGO_ENABLED=0 build and `go run`; busybox-static besides; a C program
 * linked statically with musl (musl-gcc) and with glibc (test/e2e/fixtures/static-net.c),
 * and a static Rust program (test/e2e/fixtures/rust-net.rs, std only), each built here too.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode, udpEchoCommand } from '../harness/demo-pods.js';
import { cliPath, pollUntil, repoRoot, startAgentProcess, startCli, stopAll, stopCli, tsmExec, type AgentProcess } from './tsm.js';

const GO = '/usr/bin/go';
const BUSYBOX = '/bin/busybox';
const haveGo = existsSync(GO);
const MUSL_GCC = '/usr/bin/musl-gcc';
const haveMusl = existsSync(MUSL_GCC);
/** Debian's rustc (.ci/setup), or a rustup toolchain's. */
const RUSTC = ['/usr/bin/rustc', join(homedir(), '.cargo/bin/rustc')].find((p) => existsSync(p));

let harness: Harness;
let db: Pod;
let api: Pod;
let web: Pod;
let udp: Pod;
let agent: AgentProcess;

// A threaded HTTP server with a deep accept queue (http.server's is 5 deep: 64 clients at
// once would overflow it in the pod too, and wait for SYN retransmissions).
const WEB = `
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '3'); self.end_headers(); self.wfile.write(b'ok\\n')
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
S(('0.0.0.0', 8081), H).serve_forever()
`;
let work: string;
let goEnv: NodeJS.ProcessEnv;
const bin: Record<'cgo' | 'static', string> = { cgo: '', static: '' };
/** test/e2e/fixtures/static-net.c linked statically with musl and with glibc; rust-net.rs. */
const cBin: Record<'musl' | 'glibc', string> = { musl: '', glibc: '' };
let rustBin = '';

function build(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 300000 });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
}

function goBuild(out: string, cgo: boolean): void {
  const r = spawnSync(GO, ['build', '-o', out, '.'], { cwd: join(repoRoot, 'test/e2e/fixtures/go-net'), env: { ...goEnv, CGO_ENABLED: cgo ? '1' : '0' }, encoding: 'utf8', timeout: 300000 });
  if (r.status !== 0) throw new Error(`go build failed: ${r.stderr}`);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tsm-seccomp-'));
  // A Go cache of the test's own (no network: stdlib only). Kept between runs under the
  // system's temp folder, so a rerun does not compile the standard library again.
  goEnv = { ...process.env, GOCACHE: join(tmpdir(), 'tsmirror-test-gocache'), GOPATH: join(work, 'gopath'), GOFLAGS: '', GO111MODULE: 'on', GOPROXY: 'off', GOTOOLCHAIN: 'local' };
  if (haveGo) {
    bin.cgo = join(work, 'gonet-cgo');
    bin.static = join(work, 'gonet-static');
    goBuild(bin.cgo, true);
    goBuild(bin.static, false);
  }
  const staticNet = join(repoRoot, 'test/e2e/fixtures/static-net.c');
  if (haveMusl) build(MUSL_GCC, ['-static', '-O2', '-Wall', '-o', (cBin.musl = join(work, 'static-net-musl')), staticNet]);
  build('gcc', ['-static', '-O2', '-Wall', '-o', (cBin.glibc = join(work, 'static-net-glibc')), staticNet]);
  if (RUSTC) build(RUSTC, ['-O', '-C', 'target-feature=+crt-static', '-o', (rustBin = join(work, 'rust-net')), join(repoRoot, 'test/e2e/fixtures/rust-net.rs')]);
  const file = spawnSync('file', [cBin.glibc, ...(haveMusl ? [cBin.musl] : []), ...(RUSTC ? [rustBin] : [])], { encoding: 'utf8' }).stdout;
  expect(file).not.toMatch(/dynamically linked/);
  ({ harness, db, api } = await buildDemoNode({ name: 'seccomp-out', srvRecords: [{ name: '_http._tcp.db.default.svc.cluster.local', target: 'db.default.svc.cluster.local', port: 8080 }] }));
  [web, udp] = await Promise.all([
    harness.addPod({ name: 'web', namespace: 'default', command: ['/usr/bin/python3', '-c', WEB], readyPort: 8081 }),
    harness.addPod({ name: 'udp', namespace: 'default', command: udpEchoCommand(9999) }),
  ]);
  // A datagram sent before the echo server binds would be lost: wait for its socket.
  const bound = await pollUntil(() => spawnSync('nsenter', ['-t', String(udp.pid), '-n', 'ss', '-Hlun', 'sport = :9999'], { encoding: 'utf8' }).stdout.includes('9999'), 20000);
  expect(bound).toBe(true);
  agent = await startAgentProcess();
}, 600000);

afterAll(async () => {
  await stopAll({ agent, harness });
  if (work) rmSync(work, { recursive: true, force: true });
});

const exec = (command: string[], flags: string[] = []) => tsmExec(agent.url, `pid/${api.pid}`, command, flags, { timeoutMs: 90000, env: goEnv });

describe.skipIf(!haveGo)('Go programs under seccomp', () => {
  for (const build of ['cgo', 'static'] as const) {
    describe(`${build === 'cgo' ? 'default (cgo, dynamically linked)' : 'CGO_ENABLED=0'} build`, () => {
      it("an HTTP GET to a cluster service by its short name (the pod's resolv.conf and nameserver), full name and IP goes through the pod", async () => {
        for (const url of ['http://db:8080/', 'http://db.default.svc.cluster.local:8080/', `http://${db.ip}:8080/`]) {
          const r = await exec([bin[build], 'get', url]);
          expect(r.stderr).toBe('');
          expect(r.stdout).toBe('hello from db\n');
          expect(r.code).toBe(0);
        }
      });

      it('without tsmirror the same GET fails', async () => {
        const r = spawnSync(bin[build], ['get', `http://${db.ip}:8080/`], { encoding: 'utf8', timeout: 30000 });
        expect(r.status).not.toBe(0);
      });

      it("net.LookupHost resolves a cluster name to the pod's answer; an unknown name fails", async () => {
        for (const name of ['db', 'db.default', 'db.default.svc.cluster.local']) {
          const r = await exec([bin[build], 'lookup', name]);
          expect(r.stderr).toBe('');
          expect(r.stdout.trim()).toBe([db.ip, db.ipv6].filter((a) => a !== undefined).sort().join(' '));
        }
        const bad = await exec([bin[build], 'lookup', 'nope']);
        expect(bad.code).toBe(1);
        expect(bad.stderr).toMatch(/no such host/);
      });

      it("net.LookupSRV answers as in the pod (the search list applies to the service's name)", async () => {
        for (const name of ['db', 'db.default.svc.cluster.local']) {
          const r = await exec([bin[build], 'srv', 'http', 'tcp', name]);
          expect(r.stderr).toBe('');
          expect(r.stdout.trim()).toBe('db.default.svc.cluster.local.:8080');
        }
        const bad = await exec([bin[build], 'srv', 'http', 'tcp', 'nope']);
        expect(bad.code).toBe(1);
      });

      it("a relayed UDP reply read with ReadMsgUDP (recvmsg) and ReadFromUDP (recvfrom) comes from the pod's address", async () => {
        const r = await exec([bin[build], 'udpmsg', `${udp.ip}:9999`, 'ping']);
        expect(r.stderr).toBe('');
        expect(r.stdout).toBe(`msg ${udp.ip}:9999 echo:ping\nfrom ${udp.ip}:9999 echo:ping\n`);
      });

      it("getpeername and getsockname: Go sees the address it dialed and the pod's own", async () => {
        const r = await exec([bin[build], 'dial', `${db.ip}:8080`]);
        expect(r.stderr).toBe('');
        expect(r.stdout.trim()).toBe(`${db.ip}:8080 ${api.ip}`);
      });

      it("the pod's environment is seen", async () => {
        const r = await exec([bin[build], 'env', 'DB_URL']);
        expect(r.stdout).toBe('http://db:8080/\n');
      });
    });
  }

  it('64 goroutines x 50 requests all succeed', async () => {
    // --verbose: on a failure, the proxy's counts (held connects, failures) come with it.
    const r = await exec([bin.static, 'many', '64', '50', `http://${web.ip}:8081/`], ['--verbose']);
    expect(r.stderr).not.toMatch(/first error/);
    expect(r.stdout.trim()).toBe('3200 0');
  }, 120000);

  it('a Go program that starts curl and a Go child: both are intercepted', async () => {
    const url = `http://${db.ip}:8080/`;
    const curl = await exec([bin.static, 'spawn', 'curl', '-sS', '--max-time', '10', url]);
    expect(curl.stderr).toBe('');
    expect(curl.stdout).toBe('hello from db\n');
    const child = await exec([bin.cgo, 'spawn', bin.static, 'get', url]);
    expect(child.stderr).toBe('');
    expect(child.stdout).toBe('hello from db\n');
  });

  it('go run: the built program is intercepted too', async () => {
    const r = await tsmExec(agent.url, `pid/${api.pid}`, [GO, 'run', '.', 'get', `http://${db.ip}:8080/`], [], { timeoutMs: 240000, env: goEnv, cwd: join(repoRoot, 'test/e2e/fixtures/go-net') });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\n');
  }, 300000);

  it('--intercept preload on a Go program warns that the shim sees almost nothing', async () => {
    const r = await exec([bin.cgo, 'env', 'DB_URL'], ['--intercept', 'preload']);
    expect(r.stderr).toMatch(/is a Go program under --intercept preload: Go makes its own system calls/);
    expect(r.stdout).toBe('http://db:8080/\n');
  });

  it('SIGKILL of the supervisor: the program ends with a message, no hang, no leftover', async () => {
    const cli = spawn(process.execPath, [cliPath, 'exec', '-q', '--agent', agent.url, '--target', `pid/${api.pid}`, '--', bin.static, 'loop', `http://${db.ip}:8080/`], { stdio: ['ignore', 'pipe', 'pipe'], env: goEnv });
    let out = '';
    let err = '';
    cli.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    cli.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<number | null>((resolve) => cli.once('close', (c) => resolve(c)));
    expect(await pollUntil(() => out.includes('ok\n'), 20000)).toBe(true);
    const supervisor = spawnSync('pgrep', ['-P', String(cli.pid), '-f', 'tsmirror-supervise'], { encoding: 'utf8' }).stdout.trim();
    expect(supervisor).toMatch(/^\d+$/);
    const program = spawnSync('pgrep', ['-P', supervisor], { encoding: 'utf8' }).stdout.trim();
    expect(program).toMatch(/^\d+$/);
    process.kill(Number(supervisor), 'SIGKILL');
    const code = await exited;
    expect(code).toBe(125);
    expect(err).toMatch(/the seccomp supervisor \(tsmirror-supervise\) was killed by SIGKILL before the program ended; the program was ended with it/);
    expect(await pollUntil(() => !existsSync(`/proc/${program}`), 5000)).toBe(true);
  });

  it('SIGKILL of the CLI takes the supervisor and the program with it', async () => {
    const cli = spawn(process.execPath, [cliPath, 'exec', '-q', '--agent', agent.url, '--target', `pid/${api.pid}`, '--', bin.static, 'loop', `http://${db.ip}:8080/`], { stdio: ['ignore', 'pipe', 'ignore'], env: goEnv });
    let out = '';
    cli.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    expect(await pollUntil(() => out.includes('ok\n'), 20000)).toBe(true);
    const supervisor = spawnSync('pgrep', ['-P', String(cli.pid), '-f', 'tsmirror-supervise'], { encoding: 'utf8' }).stdout.trim();
    const program = spawnSync('pgrep', ['-P', supervisor], { encoding: 'utf8' }).stdout.trim();
    expect(program).toMatch(/^\d+$/);
    cli.kill('SIGKILL');
    const gone = await pollUntil(() => !existsSync(`/proc/${supervisor}`) && !existsSync(`/proc/${program}`), 5000, 10);
    if (!gone) for (const pid of [program, supervisor]) try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    expect(gone).toBe(true);
  });
});

describe.skipIf(!existsSync(BUSYBOX))('busybox-static under seccomp', () => {
  it('wget of a cluster service by its short name, full name and IP goes through the pod', async () => {
    for (const url of ['http://db:8080/', 'http://db.default.svc.cluster.local:8080/', `http://${db.ip}:8080/`]) {
      const r = await exec([BUSYBOX, 'wget', '-q', '-O', '-', url]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('hello from db\n');
    }
  });

  it("nslookup asks the pod's nameserver, with the pod's search list", async () => {
    const r = await exec([BUSYBOX, 'nslookup', 'db.default.svc.cluster.local']);
    expect(r.stdout).toContain(db.ip);
    const short = await exec([BUSYBOX, 'nslookup', 'db']);
    expect(short.stdout).toContain(db.ip);
    const bad = await exec([BUSYBOX, 'nslookup', 'nope.default.svc.cluster.local']);
    expect(bad.code).not.toBe(0);
  });

  it('--watch: a save restarts the supervised program (SIGTERM reaches it once, through its group), and a program ignoring SIGTERM is killed after the grace period without a supervisor message', async () => {
    const dir = mkdtempSync(join(work, 'watch-'));
    const script = join(dir, 'app.sh');
    // busybox sh as the interpreter: the script runs under seccomp (auto), a GET per start.
    const app = (v: string): string => `#!${BUSYBOX} sh\ntrap 'echo "${v} got TERM"; exit 0' TERM\n${BUSYBOX} wget -q -O - http://db:8080/ | sed 's/^/${v}: /'\nwhile :; do sleep 0.05; done\n`;
    writeFileSync(script, app('v1'));
    chmodSync(script, 0o755);
    const cli = startCli(['exec', '--agent', agent.url, '--target', `pid/${api.pid}`, '--watch', dir, '--watch-grace', '1000', '--', script], { env: goEnv });
    try {
      await cli.waitFor(/v1: hello from db/, 30000);
      writeFileSync(script, app('v2'));
      await cli.waitFor(/v2: hello from db/, 30000);
      expect(cli.out().match(/v1 got TERM/g)).toHaveLength(1);
      // Now one that ignores SIGTERM: SIGKILL for the group after 1 s, quietly.
      writeFileSync(script, `#!${BUSYBOX} sh\ntrap '' TERM\necho v3 up\nwhile :; do sleep 0.05; done\n`);
      await cli.waitFor(/v3 up/, 30000);
      writeFileSync(script, app('v4'));
      await cli.waitFor(/v4: hello from db/, 30000);
      expect(cli.err()).not.toMatch(/seccomp supervisor/);
    } finally {
      await stopCli(cli.child);
    }
  }, 120000);

  it('--intercept preload refuses it, naming the fix', async () => {
    const r = await exec([BUSYBOX, 'true'], ['--intercept', 'preload']);
    expect(r.code).toBe(126);
    expect(r.stderr).toMatch(/statically linked: the shim cannot be preloaded into it/);
    expect(r.stderr).toMatch(/--intercept auto/);
  });
});

describe.skipIf(!haveMusl)('a static musl C program under seccomp', () => {
  // musl's resolver sends its queries with sendto on an unconnected UDP socket and keeps a
  // reply only when recvfrom says it came from a nameserver: the relayed replies must
  // carry the pod's nameserver as their source, else every lookup ends in "Try again".
  it("getaddrinfo resolves cluster names with the pod's search list; an unknown name fails as in the pod", async () => {
    for (const name of ['db', 'db.default', 'db.default.svc.cluster.local']) {
      const r = await exec([cBin.musl, 'lookup', name]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${db.ip}\n`);
    }
    const bad = await exec([cBin.musl, 'lookup', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('lookup nope: Name does not resolve\n');
  });

  it('an HTTP GET of a cluster service by its short name goes through the pod', async () => {
    const r = await exec([cBin.musl, 'get', 'http://db:8080/']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\n');
  });

  it("recvfrom of a relayed datagram reports the pod's address as its source: blocking, and non-blocking with MSG_PEEK|MSG_TRUNC", async () => {
    const r = await exec([cBin.musl, 'udp', udp.ip, '9999', 'ping']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${udp.ip} 9999 echo:ping\n`);
    const nb = await exec([cBin.musl, 'udp-nb', udp.ip, '9999', 'ping']);
    expect(nb.stderr).toBe('');
    expect(nb.stdout).toBe(`${udp.ip} 9999 9 echo:ping\n`);
  });

  it('a blocking recvfrom waiting for a relayed reply is interrupted by a signal, as without tsmirror', async () => {
    const r = await exec([cBin.musl, 'udp-alarm', udp.ip, '9']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('EINTR\n');
  });

  // recvmsg and recvmmsg carry the source buffer inside a msghdr the filter cannot read:
  // UDP sockets are placed at descriptor numbers it tests (udpwindow.c).
  it("recvmsg of a relayed datagram reports the pod's address as its source; the data spans both iovecs and the ancillary data is kept", async () => {
    const r = await exec([cBin.musl, 'udp-msg', udp.ip, '9999', 'ping']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${udp.ip} 9999 echo:ping cmsg=1/29\n`); // SOL_SOCKET/SCM_TIMESTAMP
  });

  it("recvmmsg of relayed datagrams reports the pod's address for each", async () => {
    const r = await exec([cBin.musl, 'udp-mmsg', udp.ip, '9999', 'ping']);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual([`${udp.ip} 9999 echo:ping`, `${udp.ip} 9999 echo:ping2`]);
  });

  it("a copy of a UDP socket made with fcntl(F_DUPFD_CLOEXEC) still reports the pod's address", async () => {
    const r = await exec([cBin.musl, 'udp-dup', udp.ip, '9999', 'ping']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${udp.ip} 9999 echo:ping cmsg=1/29\n`);
  });

  it('a blocking recvmsg waiting for a relayed reply is interrupted by a signal, as without tsmirror', async () => {
    const r = await exec([cBin.musl, 'udp-msg-alarm', udp.ip, '9']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('EINTR\n');
  });

  it('a TCP socket gets the lowest free descriptor number; a UDP socket one in the window, below 1024 (select() can take it), close-on-exec as asked', async () => {
    const r = await exec([cBin.musl, 'fdnums']);
    expect(r.stderr).toBe('');
    const m = /^tcp (\d+) udp (\d+) cloexec 1\n$/.exec(r.stdout);
    expect(m).not.toBeNull();
    expect(Number(m?.[1])).toBeLessThan(10);
    expect(Number(m?.[2])).toBeGreaterThanOrEqual(64);
    expect(Number(m?.[2])).toBeLessThan(1024); // FD_SETSIZE
  });

  it('more UDP sockets than the window holds, or a limit lowered below the window: every socket() still succeeds, at the kernel\'s numbers', async () => {
    const many = await exec([cBin.musl, 'udp-many', '140']);
    expect(many.stderr).toBe('');
    expect(many.stdout).toBe('140 sockets, 12 below 64\n'); // 128 in the window, the rest from 3 up
    const low = await exec([cBin.musl, 'udp-many', '3', '40']);
    expect(low.stderr).toBe('');
    expect(low.stdout).toBe('3 sockets, 3 below 64\n');
  });
});

describe('a static glibc C program under seccomp', () => {
  it("getaddrinfo (glibc's resolver: a connected UDP socket, replies checked with recvfrom) resolves cluster names; an unknown name fails", async () => {
    for (const name of ['db', 'db.default.svc.cluster.local']) {
      const r = await exec([cBin.glibc, 'lookup', name]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${db.ip}\n`);
    }
    const bad = await exec([cBin.glibc, 'lookup', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('lookup nope: Name or service not known\n');
  });

  it('recvfrom of a relayed datagram reports the pod address', async () => {
    const r = await exec([cBin.glibc, 'udp', udp.ip, '9999', 'ping']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${udp.ip} 9999 echo:ping\n`);
  });

  it('recvmsg and recvmmsg of relayed datagrams report the pod address', async () => {
    const r = await exec([cBin.glibc, 'udp-msg', udp.ip, '9999', 'ping']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${udp.ip} 9999 echo:ping cmsg=1/29\n`);
    const m = await exec([cBin.glibc, 'udp-mmsg', udp.ip, '9999', 'ping']);
    expect(m.stderr).toBe('');
    expect(m.stdout.split('\n').filter(Boolean).sort()).toEqual([`${udp.ip} 9999 echo:ping`, `${udp.ip} 9999 echo:ping2`]);
  });
});

describe.skipIf(!RUSTC)('a static Rust program under seccomp', () => {
  it('TcpStream::connect to a cluster service by its short name and a GET go through the pod', async () => {
    const r = await exec([rustBin, 'get', 'http://db:8080/']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\n');
  });

  it("name lookups are the pod's; an unknown name fails", async () => {
    const r = await exec([rustBin, 'lookup', 'db']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${db.ip}\n`);
    const bad = await exec([rustBin, 'lookup', 'nope']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^lookup: failed to lookup address information: Name or service not known/);
  });

  it("std::fs::read of a pod file reads the pod's content", async () => {
    const r = await exec([rustBin, 'read', '/data/index.html']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from api\n');
  });

  it("UdpSocket::recv_from reports the pod's address as the reply's source", async () => {
    const r = await exec([rustBin, 'udp', `${udp.ip}:9999`, 'ping']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${udp.ip}:9999 echo:ping\n`);
  });
});

describe('tsmirror doctor PROGRAM says how it would be intercepted', () => {
  it('busybox-static: seccomp, and the kernel supports it', () => {
    const r = spawnSync(process.execPath, [cliPath, 'doctor', '--json', BUSYBOX], { encoding: 'utf8', timeout: 30000, env: { ...process.env, KUBECONFIG: join(work, 'none') } });
    const checks = JSON.parse(r.stdout) as { ok: boolean | 'warn'; what: string }[];
    expect(checks.find((c) => /seccomp user notification/.test(c.what))).toMatchObject({ ok: true });
    expect(checks.find((c) => c.what.startsWith(BUSYBOX))?.what).toMatch(/statically linked.*seccomp/);
  });

  it('curl: the preload', () => {
    const r = spawnSync(process.execPath, [cliPath, 'doctor', '--json', 'curl'], { encoding: 'utf8', timeout: 30000, env: { ...process.env, KUBECONFIG: join(work, 'none') } });
    const checks = JSON.parse(r.stdout) as { ok: boolean | 'warn'; what: string }[];
    expect(checks.find((c) => /curl/.test(c.what))?.what).toMatch(/dynamically linked.*preload/);
  });
});
