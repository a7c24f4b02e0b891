/**
 * Memory under back-pressure, for test/e2e/memory.test.ts (CI sizes) and `npm run
 * bench:memory` (the issue's: 1 GiB at 1 MiB/s): a pod server pushing to a program that
 * reads slowly, and a program pushing to a pod server that never reads. The agent's and
 * the CLI's resident memory are sampled throughout; what counts is how far each grows
 * above where it stood once the connection was open. And for the memory goals of issue 13
 * (`npm run bench`, bench/memory.ts goals): the agent's RSS per idle session.
 */
import { get } from 'node:http';
import type { Harness, Pod } from '../harness/harness.js';
import { peakRss, pollUntil, rssBytes, startCli, stopCli, type AgentProcess, type RunningCli } from './tsm.js';

const PY = '/usr/bin/python3';
export const PUSH_PORT = 9400;
export const SINK_PORT = 9401;

/** 9400: sends each connection the number of bytes its first line asks for; 9401: accepts and never reads. */
const SERVER = `
import socket, threading
def push(c):
    with c:
        f = c.makefile('rb'); n = int(f.readline())
        chunk = bytes(range(256)) * 4096
        while n > 0:
            part = chunk[:min(n, len(chunk))]; c.sendall(part); n -= len(part)
held = []
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port)); s.listen(64)
    while True:
        c, _ = s.accept()
        if fn: threading.Thread(target=fn, args=(c,), daemon=True).start()
        else: held.append(c)
threading.Thread(target=serve, args=(${SINK_PORT}, None), daemon=True).start()
serve(${PUSH_PORT}, push)
`;

/** Reads BYTES from the pod at RATE bytes/s (paced every 10 ms), checks the pattern and the count. */
const SLOW_READER = `
import socket, sys, time
total, rate = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(('memsrv', ${PUSH_PORT})); s.sendall(b'%d\\n' % total)
print('connected', flush=True)
pattern = bytes(range(256)); got = 0; start = time.monotonic()
while got < total:
    due = start + got / rate
    now = time.monotonic()
    if due > now: time.sleep(due - now)
    d = s.recv(min(65536, max(rate // 100, 1)))
    if not d: break
    if d != (pattern * (len(d) // 256 + 2))[got % 256:got % 256 + len(d)]: print('corrupt at', got, flush=True); sys.exit(2)
    got += len(d)
print('read', got, flush=True)
sys.exit(0 if got == total else 1)
`;

/** Writes to a pod server that never reads until a write has blocked for 3 s, holds on for HOLD s, then exits. */
const PUSHER = `
import socket, sys, time
hold = float(sys.argv[1])
s = socket.create_connection(('memsrv', ${SINK_PORT}))
print('connected', flush=True)
s.settimeout(3); chunk = b'x' * 65536; sent = 0
try:
    while True: sent += s.send(chunk)
except socket.timeout:
    pass
print('blocked after', sent, flush=True)
time.sleep(hold)
print('done', flush=True)
`;

export function addMemoryServer(harness: Harness): Promise<Pod> {
  return harness.addPod({ name: 'memsrv', namespace: 'default', command: [PY, '-c', SERVER], readyPort: PUSH_PORT });
}

export interface MemoryResult {
  /** How far the agent and the CLI grew above their RSS once the connection was open, in bytes. */
  agentGrowth: number;
  cliGrowth: number;
  agentBaseline: number;
  cliBaseline: number;
  /** What the program printed at the end (`read N`, `blocked after N`). */
  programSaid: string;
  seconds: number;
}

async function measure(agent: AgentProcess, server: Pod, program: string[], timeoutMs: number): Promise<MemoryResult> {
  const cli = startCli(['exec', '--quiet', '--agent', agent.url, '--target', `pid/${server.pid}`, '--', PY, '-c', ...program]);
  try {
    await cli.waitFor(/^connected$/m, 30000);
    const agentPid = agent.child.pid ?? 0;
    const cliPid = cli.child.pid ?? 0;
    const [agentBaseline, cliBaseline] = [await rssBytes(agentPid), await rssBytes(cliPid)];
    const peaks = peakRss([agentPid, cliPid]);
    const started = Date.now();
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), timeoutMs);
      cli.child.once('close', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    const [agentPeak = 0, cliPeak = 0] = peaks.stop();
    if (code !== 0) throw new Error(`the program ${code === null ? 'did not finish in time' : `exited ${code}`}:\n${cli.out()}\n${cli.err()}`);
    return {
      agentGrowth: agentPeak - agentBaseline, cliGrowth: cliPeak - cliBaseline, agentBaseline, cliBaseline,
      programSaid: cli.out().trim().split('\n').slice(1).join('; '), seconds: (Date.now() - started) / 1000,
    };
  } finally {
    await stopCli(cli.child);
  }
}

/** A pod server pushes `bytes` to a program reading `rate` bytes/s. */
export function slowReader(agent: AgentProcess, server: Pod, bytes: number, rate: number): Promise<MemoryResult> {
  return measure(agent, server, [SLOW_READER, String(bytes), String(rate)], (bytes / rate) * 1000 * 2 + 60000);
}

/** A program pushes to a pod server that never reads, and holds its blocked connection `holdSeconds`. */
export function neverReads(agent: AgentProcess, server: Pod, holdSeconds: number): Promise<MemoryResult> {
  return measure(agent, server, [PUSHER, String(holdSeconds)], holdSeconds * 1000 + 120000);
}

export function formatMemory(what: string, r: MemoryResult): string {
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  return `${what}: ${r.programSaid} in ${r.seconds.toFixed(0)} s; agent ${mib(r.agentBaseline)} + ${mib(r.agentGrowth)}, CLI ${mib(r.cliBaseline)} + ${mib(r.cliGrowth)}`;
}

export interface IdleSessionsResult {
  sessions: number;
  /** The agent's RSS with no session (after one came and went: its code is loaded), and with `sessions` idle ones. */
  agentBefore: number;
  agentWith: number;
  /** (agentWith - agentBefore) / sessions, in bytes. */
  perSession: number;
}

/** How many sessions the agent serves now (its /status; a connection each: the agent closes idle ones at once). */
function agentSessions(agent: AgentProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    get(`${agent.url.replace('ws:', 'http:')}/status`, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        try {
          resolve((JSON.parse(body) as { sessions: unknown[] }).sessions.length);
        } catch (err) {
          reject(err as Error);
        }
      });
    }).on('error', reject);
  });
}

/**
 * The agent's resident memory per idle session: `n` sessions on `target` whose programs
 * sleep, against none. One session first comes and goes, so that the code every session
 * runs is loaded before the baseline; each figure is read after `settleMs` of quiet.
 */
export async function idleSessions(agent: AgentProcess, target: Pod, n: number, settleMs = 2000): Promise<IdleSessionsResult> {
  const agentPid = agent.child.pid ?? 0;
  const start = (): RunningCli => startCli(['exec', '--quiet', '--agent', agent.url, '--target', `pid/${target.pid}`, '--', 'sleep', '600']);
  const settle = async (count: number): Promise<number> => {
    if (!(await pollUntil(async () => (await agentSessions(agent)) === count, 60000, 200))) throw new Error(`the agent did not reach ${count} sessions`);
    await new Promise((r) => setTimeout(r, settleMs));
    return rssBytes(agentPid);
  };
  const warm = start();
  await settle(1).finally(() => stopCli(warm.child));
  const agentBefore = await settle(0);
  const clis = Array.from({ length: n }, start);
  try {
    const agentWith = await settle(n);
    return { sessions: n, agentBefore, agentWith, perSession: (agentWith - agentBefore) / n };
  } finally {
    await Promise.all(clis.map((c) => stopCli(c.child)));
  }
}
