/**
 * Low-level helpers of the local node harness: running commands (async and
 * synchronous), sleeping synchronously, reading `/proc`, shell quoting.
 *
 * Nothing here knows about pods; see `harness.ts`.
 *
 * @module
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

/** PATH given to every helper command and, unless the pod sets its own, to pods. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Result of a finished command. */
export interface RunResult {
  /** Exit code, or null when the command was ended by a signal. */
  code: number | null;
  /** Signal that ended the command, if any. */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options of {@link run}. */
export interface RunOptions {
  /** Written to the command's stdin (stdin is closed afterwards). */
  input?: string;
  /** Environment; defaults to `{ PATH: DEFAULT_PATH }` (never the test process's own). */
  env?: Record<string, string>;
  /** SIGKILL the command after this many ms (default 30 000). */
  timeoutMs?: number;
  /** Called with the child's pid right after it was spawned. */
  onSpawn?: (pid: number) => void;
}

/** Runs a command and collects its output. Never rejects for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? { PATH: DEFAULT_PATH },
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: '/',
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
    if (child.pid !== undefined) opts.onSpawn?.(child.pid);
    const timer = setTimeout(() => {
      if (child.pid !== undefined) killTree(child.pid);
    }, opts.timeoutMs ?? 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

/** Like {@link run} but throws when the command fails. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.code ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}

/** Synchronous {@link run} (for exit hooks, where the event loop no longer runs). */
export function runSync(cmd: string, args: readonly string[], input?: string): RunResult {
  const r = spawnSync(cmd, args, {
    env: { PATH: DEFAULT_PATH },
    input: input ?? '',
    encoding: 'utf8',
    timeout: 10_000,
    cwd: '/',
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Blocks the thread for `ms` milliseconds. */
export function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls `probe` every `intervalMs` until it returns something other than
 * undefined; throws `describe()` (or a generic message) after `timeoutMs`.
 */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => T | undefined,
  describe?: () => string,
  intervalMs = 5,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${describe ? `: ${describe()}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** Single-quotes a string for /bin/sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Reads a file, or returns undefined when it cannot be read. */
export function readOrUndefined(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
}

/** The fields of /proc/PID/stat after the command name (index 0 is the state). */
function statFields(pid: number): string[] | undefined {
  const s = readOrUndefined(`/proc/${pid}/stat`);
  if (s === undefined) return undefined;
  return s.slice(s.lastIndexOf(')') + 2).split(' ');
}

/** Kernel start time of a process (clock ticks since boot), to tell a pid's reuse apart. */
export function processStartTime(pid: number): string | undefined {
  return statFields(pid)?.[19];
}

/** True while the process exists and is not a zombie. */
export function isRunning(pid: number): boolean {
  const state = statFields(pid)?.[0];
  return state !== undefined && state !== 'Z' && state !== 'X';
}

/** Direct children of a process (its threads' `children` files). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    const s = readOrUndefined(`/proc/${pid}/task/${t}/children`) ?? '';
    for (const w of s.split(/\s+/)) if (w !== '') out.push(Number(w));
  }
  return out;
}

/**
 * SIGKILLs a process and all its descendants, deepest first, giving parents a
 * moment to reap: a `nsenter -p` killed before its child would leave that child
 * to the host's init, and the pod's PID 1 cannot finish exiting until it is reaped.
 */
export function killTree(pid: number): void {
  const all: number[] = [];
  const visit = (p: number): void => {
    all.push(p);
    for (const c of childrenOf(p)) visit(c);
  };
  visit(pid);
  const descendants = all.slice(1).reverse();
  for (const p of descendants) killQuiet(p, 'SIGKILL');
  const deadline = Date.now() + 200;
  while (descendants.some((p) => fs.existsSync(`/proc/${p}`)) && Date.now() < deadline) sleepSync(2);
  killQuiet(pid, 'SIGKILL');
}

/** process.kill that ignores ESRCH and friends. */
export function killQuiet(pid: number, sig: NodeJS.Signals): void {
  if (pid <= 1 || pid === process.pid) return;
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** Writes a file atomically (temp file + rename), creating the directory. */
export function writeFileAtomic(p: string, data: string, mode = 0o644): void {
  const dir = p.slice(0, p.lastIndexOf('/'));
  for (let attempt = 0; ; attempt++) {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
      const tmp = `${p}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, data, { mode });
      fs.renameSync(tmp, p);
      return;
    } catch (e) {
      // Another harness may have removed the (empty) directory in between.
      if (attempt < 5 && (e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw e;
    }
  }
}

/** Whether /proc/PID/net/tcp{,6} lists a listening socket on `port` (in PID's network namespace). */
export function isListening(pid: number, port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['tcp', 'tcp6']) {
    const s = readOrUndefined(`/proc/${pid}/net/${f}`);
    if (s === undefined) continue;
    for (const line of s.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      const local = cols[1];
      if (cols[3] === '0A' && local !== undefined && local.endsWith(`:${hex}`)) return true;
    }
  }
  return false;
}
