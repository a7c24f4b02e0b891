/**
 * `--watch`: the inner loop. The program runs in its own process group; a change under
 * the watched paths stops it gracefully (SIGTERM to the group, SIGKILL after a grace
 * period) and starts it again, while the session (agent connection, subscriptions)
 * stays up. Each restart prints one line with the time it took.
 */
import { relative, sep } from 'node:path';
import type { FSWatcher } from 'chokidar';
import { TsmError } from '../protocol/errors.js';
import { RELAYED, type RunningProgram } from './launch.js';

/** Ignored whatever the user watches: version control, dependencies, build output. */
export const DEFAULT_IGNORES = ['.git', '.hg', '.svn', 'node_modules', 'dist', 'build', 'out', 'target', 'coverage', '__pycache__', '.venv', '.tsmirror', '.next', '.cache'];
const IGNORED_SUFFIXES = ['.pyc', '.pyo', '.swp', '.swx', '~', '.tmp', '.log'];

export interface WatchOptions {
  paths: string[];
  /** Extra regular expressions; a path matching any is ignored. */
  ignore: RegExp[];
  debounceMs: number;
  graceMs: number;
  log: (line: string) => void;
  /** Called each time the program has stopped for a restart, before it starts again. */
  onStopped?: () => void;
}

/** Whether a changed path is ignored by the defaults or the user's patterns. */
export function isIgnored(path: string, extra: readonly RegExp[]): boolean {
  const parts = path.split(sep);
  if (parts.some((p) => DEFAULT_IGNORES.includes(p))) return true;
  const base = parts.at(-1) ?? '';
  if (IGNORED_SUFFIXES.some((s) => base.endsWith(s)) || /^\.#|^#.*#$|^4913$/.test(base)) return true; // editor droppings
  return extra.some((r) => r.test(path));
}

export function parseIgnorePatterns(patterns: readonly string[]): RegExp[] {
  return patterns.map((p) => {
    try {
      return new RegExp(p);
    } catch (err) {
      throw new TsmError('TSM_ERR_USAGE', `--watch-ignore "${p}" is not a regular expression: ${(err as Error).message}`, { hint: 'e.g. --watch-ignore "\\\\.test\\\\.ts$"' });
    }
  });
}

function alive(p: RunningProgram): boolean {
  return p.child.exitCode === null && p.child.signalCode === null;
}

function signalGroup(p: RunningProgram, signal: NodeJS.Signals): void {
  const pid = p.child.pid;
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      p.child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/** Whether any process of the program's group is left (a zombie nobody reaped counts: then the grace runs out). */
function groupAlive(p: RunningProgram): boolean {
  const pid = p.child.pid;
  if (pid === undefined) return false;
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Stops the program's process group: `signal`, then SIGKILL after the grace period. The
 * whole group has the grace, not only its leader: a leader that ends at once (`sh -c
 * 'server; true'`: the shell dies of the SIGTERM) must not cut short the shutdown of the
 * program it started.
 */
export async function stopProgram(p: RunningProgram, graceMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<number> {
  if (alive(p)) {
    const deadline = Date.now() + graceMs;
    signalGroup(p, signal);
    const timer = setTimeout(() => signalGroup(p, 'SIGKILL'), graceMs);
    await p.exitCode;
    while (groupAlive(p) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    clearTimeout(timer);
    signalGroup(p, 'SIGKILL'); // anything of the group that outlived the grace
  }
  return p.exitCode;
}

/**
 * Runs `start()` and restarts it on every change until tsmirror is told to stop
 * (SIGINT, SIGTERM, SIGHUP, SIGQUIT); resolves with the last program's exit code.
 */
export async function runWatching(start: () => RunningProgram, opts: WatchOptions): Promise<number> {
  const { watch } = await import('chokidar'); // loaded only for --watch
  const watcher: FSWatcher = watch(opts.paths, {
    ignoreInitial: true,
    ignored: (path: string) => isIgnored(path, opts.ignore),
    atomic: true,
  });
  await new Promise<void>((resolve, reject) => {
    watcher.once('ready', () => resolve());
    watcher.once('error', (err) => reject(new TsmError('TSM_ERR_USAGE', `cannot watch ${opts.paths.join(', ')}: ${String(err)}`)));
  });
  opts.log(`watching ${opts.paths.map((p) => relative(process.cwd(), p) || '.').join(', ')}; a change restarts the program`);

  let current = start();
  let stopping = false;
  let restarting: Promise<void> | undefined;
  let pending: string | undefined;
  let timer: NodeJS.Timeout | undefined;

  const reportExit = (p: RunningProgram): void => {
    void p.exitCode.then((code) => {
      if (p === current && !stopping && !restarting) opts.log(`the program exited (${code}); waiting for a change to start it again`);
    });
  };
  reportExit(current);

  const restart = async (): Promise<void> => {
    const what = pending ?? 'a file';
    pending = undefined;
    const t0 = performance.now();
    await stopProgram(current, opts.graceMs);
    if (stopping) return;
    opts.onStopped?.();
    current = start();
    reportExit(current);
    await new Promise<void>((resolve) => {
      current.child.once('spawn', () => resolve());
      current.child.once('error', () => resolve());
    });
    opts.log(`${what} changed; restarted in ${Math.round(performance.now() - t0)} ms`);
  };

  watcher.on('all', (_event: string, path: string) => {
    if (stopping) return;
    pending = relative(process.cwd(), path) || path;
    clearTimeout(timer);
    timer = setTimeout(() => {
      // Changes during a restart start one more restart after it.
      const run = async (): Promise<void> => {
        while (restarting) await restarting;
        restarting = restart().finally(() => (restarting = undefined));
        await restarting;
      };
      void run();
    }, opts.debounceMs);
  });

  const done = new Promise<NodeJS.Signals>((resolve) => {
    for (const signal of RELAYED) process.once(signal, () => resolve(signal));
  });
  const signal = await done;
  stopping = true;
  // A second signal while the program is stopping does not wait for the grace period.
  for (const s of RELAYED) process.on(s, () => signalGroup(current, 'SIGKILL'));
  clearTimeout(timer);
  await watcher.close();
  while (restarting) await restarting;
  return stopProgram(current, opts.graceMs, signal);
}
