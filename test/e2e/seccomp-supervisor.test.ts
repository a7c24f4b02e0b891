/**
 * tsmirror-supervise on its own (no session): it starts a program under its seccomp
 * filter, answers the notified calls, relays signals, reports how the program ended,
 * and a program whose supervisor dies ends with it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, constants as fsConstants, existsSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const supervise = join(root, 'build', 'Release', 'tsmirror-supervise');
const busybox = '/bin/busybox';

/** Runs the supervisor (this process is its CLI), the status line on fd 3. */
async function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; status: string }> {
  const child = spawn(supervise, [String(process.pid), '/nonexistent/proxy.sock', '3', ...args], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  const out = ['', '', '', ''];
  for (const fd of [1, 2, 3]) child.stdio[fd]?.on('data', (d: Buffer) => { out[fd] += d.toString(); });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('close', (c, s) => resolve([c, s])));
  return { code: code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : null), stdout: out[1] ?? '', stderr: out[2] ?? '', status: out[3] ?? '' };
}

describe.skipIf(!existsSync(busybox))('tsmirror-supervise', () => {
  let server: Server;
  let port = 0;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    server = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.end('HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('--probe says user notification works on this kernel', () => {
    const r = spawnSync(supervise, ['--probe'], { encoding: 'utf8', timeout: 10000 });
    expect(r.stdout.trim()).toBe('ok');
    expect(r.status).toBe(0);
  });

  it('runs a static program to its end and passes its exit code and output', async () => {
    const r = await run([busybox, 'busybox', 'sh', '-c', 'echo out; exit 3']);
    expect(r.stdout).toBe('out\n');
    expect(r.code).toBe(3);
    expect(r.status).toBe('exit 3\n');
  });

  it("leaves the program's speculation mitigations as they are without it (SECCOMP_FILTER_FLAG_SPEC_ALLOW)", async () => {
    // Where the kernel forces SSBD/STIBP on filtered processes (before 5.16, or booted with
    // spec_store_bypass_disable=seccomp), the lines would differ without the flag; on a
    // kernel that does not, they match either way.
    const lines = (status: string): string[] => status.split('\n').filter((l) => l.startsWith('Speculation'));
    const plain = spawnSync(busybox, ['cat', '/proc/self/status'], { encoding: 'utf8' });
    const filtered = await run([busybox, 'busybox', 'cat', '/proc/self/status']);
    expect(filtered.code, filtered.stderr).toBe(0);
    expect(lines(filtered.stdout)).toEqual(lines(plain.stdout));
    expect(lines(plain.stdout).length).toBeGreaterThanOrEqual(1);
  });

  it('answers notified calls: with no session proxy to ask, a connect fails with ENETUNREACH (as under the shim)', async () => {
    const r = await run([busybox, 'busybox', 'wget', '-q', '-O', '-', `http://127.0.0.1:${port}/`]);
    expect(r.stderr).toMatch(/Network is unreachable/);
    expect(r.code).toBe(1);
  });

  it('reports a program killed by a signal, and ends by the same signal', async () => {
    const r = await run([busybox, 'busybox', 'sh', '-c', 'kill -TERM $$']);
    expect(r.status).toBe('signal 15\n');
    expect(r.code).toBe(128 + 15);
  });

  it('a program that is not there: 127 and a message', async () => {
    const r = await run(['/nonexistent/program', 'program']);
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/cannot start \/nonexistent\/program: No such file or directory/);
  });

  it('relays SIGTERM to the program', async () => {
    const child = spawn(supervise, [String(process.pid), '/nonexistent/proxy.sock', '-1', busybox, 'busybox', 'sh', '-c', "trap 'echo got-term; exit 7' TERM; while :; do sleep 0.05; done"], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    expect(out).toBe('got-term\n');
    expect(code).toBe(7);
  });

  it('with no program left, its worker threads end instead of spinning on NOTIF_RECV (ENOENT at once, forever)', async () => {
    // The status line is written after the program has ended; a full pipe on fd 3 holds the
    // supervisor's main thread there, as a long write-back of pod files would.
    const dir = mkdtempSync(join(tmpdir(), 'tsm-sv-'));
    const fifo = join(dir, 'status');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const reader = openSync(fifo, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
    const page = Buffer.alloc(4096, 120);
    try {
      for (;;) writeSync(reader, page);
    } catch {
      // EAGAIN: the pipe is full
    }
    const writer = openSync(fifo, 'w');
    const child = spawn(supervise, [String(process.pid), '/nonexistent/proxy.sock', '3', busybox, 'busybox', 'true'], { stdio: ['ignore', 'ignore', 'pipe', writer] });
    closeSync(writer);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    const pid = child.pid ?? 0;
    const threads = (): number => readdirSync(`/proc/${pid}/task`).length;
    const cpuTicks = (): number => {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      return Number(f[11]) + Number(f[12]); // utime + stime
    };
    let status = '';
    try {
      const deadline = Date.now() + 10000;
      // The program has ended (the supervisor has no child), the supervisor is still there.
      while (Date.now() < deadline && spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.trim() !== '') await new Promise((r) => setTimeout(r, 20));
      while (Date.now() < deadline && threads() > 1) await new Promise((r) => setTimeout(r, 20));
      expect(threads()).toBe(1);
      const before = cpuTicks();
      await new Promise((r) => setTimeout(r, 500));
      expect(cpuTicks() - before).toBeLessThan(20);
    } finally {
      const buf = Buffer.alloc(65536);
      const drain = setInterval(() => {
        try {
          const n = readSync(reader, buf);
          status = (status + buf.subarray(0, n).toString()).slice(-64);
        } catch {
          // EAGAIN
        }
      }, 5);
      await exited;
      clearInterval(drain);
      try {
        const n = readSync(reader, buf);
        status = (status + buf.subarray(0, n).toString()).slice(-64);
      } catch {
        // nothing more
      }
      closeSync(reader);
      rmSync(dir, { recursive: true, force: true });
    }
    expect(status.endsWith('exit 0\n')).toBe(true);
  }, 20000);

  it('SIGKILL of the supervisor ends the program at once', async () => {
    const child = spawn(supervise, [String(process.pid), '/nonexistent/proxy.sock', '-1', busybox, 'busybox', 'sleep', '30'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 300));
    const kids = spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
    expect(kids.length).toBe(1);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && existsSync(`/proc/${kids[0]}`)) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(`/proc/${kids[0]}`)).toBe(false);
  });
});
