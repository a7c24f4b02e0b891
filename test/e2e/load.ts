/**
 * Many sessions on one agent, each a real program with many connections doing requests
 * (`npm run loadtest` at 50 × 20, test/e2e/load.test.ts at a CI size). Each session is
 * `tsmirror exec` running a Python client; the pod runs an asyncio server. Every client
 * opens its connections (each request resolves the pod's name through the agent and
 * connects now and then anew), reports "ready", waits for the word on stdin, so that all
 * sessions run at once, runs for the given time and prints what it saw as JSON.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Harness, Pod } from '../harness/harness.js';
import { cliPath, cpuSeconds, rssBytes, type AgentProcess } from './tsm.js';

const PY = '/usr/bin/python3';
export const LOAD_PORT = 9300;

/** The pod's server: answers each line `req …` with `ok <the line reversed>` padded to 256 bytes. */
const SERVER = `
import asyncio
async def serve(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line: break
            body = b'ok ' + line.rstrip(b'\\n')[::-1]
            writer.write(body.ljust(255, b'.') + b'\\n')
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(serve, '0.0.0.0', ${LOAD_PORT}, backlog=4096)
    async with server: await server.serve_forever()
asyncio.run(main())
`;

/** The program under tsmirror: CONNS threads, each a connection doing requests, reconnecting every RECONNECT. */
const CLIENT = `
import json, socket, sys, threading, time
host, port, conns, seconds, reconnect = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
lat, fails, lock = [], [], threading.Lock()
go, ready = threading.Event(), threading.Barrier(conns + 1)
def request(f, tag):
    f.write(tag + b'\\n'); f.flush()
    line = f.readline()
    expect = (b'ok ' + tag[::-1]).ljust(255, b'.') + b'\\n'
    if line != expect: raise RuntimeError('bad answer %r' % line[:80])
def worker(i):
    n, s, f, mine = 0, None, None, []
    def connect():
        s = socket.create_connection((host, port), timeout=30)
        return s, s.makefile('rwb')
    phase = 'connect'
    try:
        t0 = time.monotonic()
        s, f = connect(); phase = 'request'; request(f, b'req warm %d' % i)
    except Exception as e:
        with lock: fails.append('warm-up %s after %.1f s: %r' % (phase, time.monotonic() - t0, e))
    ready.wait(); go.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            if s is None: s, f = connect()
            request(f, b'req %d %d' % (i, n))
            mine.append(int((time.perf_counter() - t) * 1e6)); n += 1
            if n % reconnect == 0: s.close(); s = None
        except Exception as e:
            with lock: fails.append(repr(e))
            if s is not None: s.close()
            s = None
    if s is not None: s.close()
    with lock: lat.extend(mine)
threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
for t in threads: t.start()
ready.wait()
print('ready', flush=True)
sys.stdin.readline()
go.set()
for t in threads: t.join()
print(json.dumps({'latencies_us': lat, 'failures': fails[:20], 'failed': len(fails)}), flush=True)
`;

export interface LoadOptions {
  sessions: number;
  connections: number;
  seconds: number;
  /** Each connection is closed and opened anew after this many requests. */
  reconnectEvery?: number;
  log?: (line: string) => void;
}

export interface LoadResult {
  sessions: number;
  connections: number;
  requests: number;
  failed: number;
  failures: string[];
  requestsPerSecond: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  /** Agent CPU time during the measured run, as a share of one core. */
  agentCpu: number;
  agentRssBaseline: number;
  agentRssPeak: number;
  agentRssPerSession: number;
  cliRssPeak: number;
  /** CLIs that exited with a non-zero code, with their stderr. */
  cliFailures: string[];
  /** What the CLIs said about their connection to the agent (lost, resumed, re-established), counted. */
  reconnects: Record<string, number>;
}

/** The pod the load runs against. */
export function addLoadServer(harness: Harness): Promise<Pod> {
  return harness.addPod({ name: 'loadsrv', namespace: 'default', command: [PY, '-c', SERVER], readyPort: LOAD_PORT });
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0;

interface Session {
  child: ChildProcess;
  out: string;
  err: string;
  code: Promise<number | null>;
}

/** Runs the load: `sessions` CLIs against `agent`, each with `connections` connections to `server`. */
export async function runLoad(agent: AgentProcess, server: Pod, opts: LoadOptions): Promise<LoadResult> {
  const log = opts.log ?? (() => undefined);
  const agentPid = agent.child.pid ?? 0;
  const agentRssBaseline = await rssBytes(agentPid);
  const sessions: Session[] = [];
  const stopAll = (): void => {
    for (const s of sessions) if (s.child.exitCode === null) s.child.kill('SIGKILL');
  };
  try {
    // Start in small waves: 50 CLIs starting at once on a small machine only measure its start-up.
    for (let i = 0; i < opts.sessions; i++) {
      const child = spawn(process.execPath, [cliPath, 'exec', '-v', '--agent', agent.url, '--target', `pid/${server.pid}`, '--',
        PY, '-c', CLIENT, 'loadsrv', String(LOAD_PORT), String(opts.connections), String(opts.seconds), String(opts.reconnectEvery ?? 50)],
      { stdio: ['pipe', 'pipe', 'pipe'] });
      const s: Session = { child, out: '', err: '', code: new Promise((r) => child.once('close', (code) => r(code))) };
      child.stdout?.on('data', (d: Buffer) => (s.out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (s.err += d.toString()));
      child.stdin?.on('error', () => undefined);
      sessions.push(s);
      if (i % 5 === 4) await waitReady(sessions.slice(i - 4, i + 1), 120000);
    }
    await waitReady(sessions, 120000);
    log(`${opts.sessions} sessions × ${opts.connections} connections ready; running ${opts.seconds} s`);
    const rssTimer = peakSampler([agentPid, ...sessions.map((s) => s.child.pid ?? 0)]);
    const cpu0 = cpuSeconds(agentPid);
    const t0 = Date.now();
    for (const s of sessions) s.child.stdin?.end('go\n');
    const codes = await Promise.all(sessions.map((s) => withTimeout(s.code, (opts.seconds + 120) * 1000)));
    const wall = (Date.now() - t0) / 1000;
    const agentCpu = (cpuSeconds(agentPid) - cpu0) / opts.seconds;
    const peaks = rssTimer.stop();
    const lat: number[] = [];
    const failures: string[] = [];
    const cliFailures: string[] = [];
    let failed = 0;
    sessions.forEach((s, i) => {
      const line = s.out.split('\n').find((l) => l.startsWith('{'));
      if (codes[i] !== 0 || !line) {
        cliFailures.push(`session ${i}: exit ${String(codes[i])}: ${s.err.trim().slice(-400)}`);
        return;
      }
      const r = JSON.parse(line) as { latencies_us: number[]; failures: string[]; failed: number };
      for (const v of r.latencies_us) lat.push(v);
      failed += r.failed;
      failures.push(...r.failures.map((f) => `session ${i}: ${f}`));
      if (r.failed > 0) failures.push(`session ${i} said: ${s.err.split('\n').filter((l) => /lost the agent|is back|ended|answered before/.test(l)).join(' | ')}`);
    });
    lat.sort((a, b) => a - b);
    const reconnects: Record<string, number> = {};
    for (const s of sessions) {
      const held = /\((\d+) answered before the pod's connect was done\)/.exec(s.err)?.[1];
      if (held) reconnects['connects answered before the pod\'s (held)'] = (reconnects['connects answered before the pod\'s (held)'] ?? 0) + Number(held);
      for (const m of s.err.matchAll(/tsmirror: (lost the agent|the agent is back[^:]*: session resumed|the agent is back[^(]*with a new session|the session ended)/g)) {
        const key = (m[1] ?? '').replace(/after [\d.]+ s/, 'after … s').replace(/session [0-9a-f]{8}/, 'session …');
        reconnects[key] = (reconnects[key] ?? 0) + 1;
      }
    }
    const agentRssPeak = peaks[0] ?? 0;
    return {
      sessions: opts.sessions, connections: opts.connections,
      requests: lat.length, failed, failures: failures.slice(0, 40),
      requestsPerSecond: lat.length / Math.min(wall, opts.seconds),
      p50Us: pct(lat, 0.5), p99Us: pct(lat, 0.99), maxUs: lat.at(-1) ?? 0,
      agentCpu, agentRssBaseline, agentRssPeak,
      agentRssPerSession: (agentRssPeak - agentRssBaseline) / opts.sessions,
      cliRssPeak: Math.max(0, ...peaks.slice(1)),
      cliFailures,
      reconnects,
    };
  } finally {
    stopAll();
  }
}

async function waitReady(sessions: Session[], ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const dead = sessions.find((s) => s.child.exitCode !== null);
    if (dead) throw new Error(`a session ended before it was ready (exit ${dead.child.exitCode}):\n${dead.err}\n${dead.out}`);
    if (sessions.every((s) => /^ready$/m.test(s.out))) return;
    if (Date.now() > until) throw new Error(`sessions not ready after ${ms} ms: ${sessions.filter((s) => !/^ready$/m.test(s.out)).length} waiting`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref())]);
}

/** The peak RSS of each process, sampled every 200 ms (a process that ended keeps its peak). */
function peakSampler(pids: number[]): { stop: () => number[] } {
  const peaks = pids.map(() => 0);
  const timer = setInterval(() => {
    pids.forEach((pid, i) => {
      try {
        const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
        peaks[i] = Math.max(peaks[i] ?? 0, Number(kb ?? 0) * 1024);
      } catch {
        // gone
      }
    });
  }, 200);
  return {
    stop: () => {
      clearInterval(timer);
      return peaks;
    },
  };
}

/** The figures as the bench prints them. */
export function formatLoad(r: LoadResult): string {
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  return [
    `sessions × connections: ${r.sessions} × ${r.connections}`,
    `requests: ${r.requests} (${r.requestsPerSecond.toFixed(0)}/s), failed: ${r.failed}, sessions failed: ${r.cliFailures.length}`,
    `latency: p50 ${(r.p50Us / 1000).toFixed(2)} ms, p99 ${(r.p99Us / 1000).toFixed(2)} ms, max ${(r.maxUs / 1000).toFixed(1)} ms`,
    `agent CPU: ${(r.agentCpu * 100).toFixed(0)}% of a core`,
    `agent RSS: ${mib(r.agentRssBaseline)} idle, ${mib(r.agentRssPeak)} peak, ${mib(r.agentRssPerSession)} per session`,
    `CLI RSS peak: ${mib(r.cliRssPeak)}`,
    ...Object.entries(r.reconnects).map(([what, n]) => `  ${n}× ${what}`),
    ...r.failures.map((f) => `  failure: ${f}`),
    ...r.cliFailures.map((f) => `  session failure: ${f}`),
  ].join('\n');
}
