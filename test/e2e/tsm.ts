/**
 * Running tsmirror for real in end-to-end tests: the agent as its own process (as the
 * DaemonSet runs it), `tsmirror …` as a user types it (to completion, or in the
 * background with its output collected), the agent's pod as the API server lists it, and
 * the teardown every suite does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sweepStaleAgentKeys } from '../../common/local-agent-key.js';
import { randomHex, type FakeApiServer, type FakePodSpec } from '../k8s/apiserver.js';
import { sessionAdmission } from '../../cli/manifests.js';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..').replace(/\/dist$/, '');
export const cliPath = join(repoRoot, 'bin', 'tsmirror.js');

export interface AgentProcess {
  url: string;
  child: ChildProcess;
  log: () => string;
  stop: () => Promise<void>;
}

/** Starts `tsmirror agent` on a free loopback port (or `listen`) and waits until it listens; `nodeArgs` go to node (a bench's --cpu-prof). */
export async function startAgentProcess(extra: string[] = [], listen = '127.0.0.1:0', nodeArgs: string[] = []): Promise<AgentProcess> {
  const child = spawn(process.execPath, [...nodeArgs, cliPath, 'agent', '--listen', listen, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start:\n${log}`)), 15000);
    child.stderr?.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /listening on (ws:\/\/\S+)/.exec(log);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => reject(new Error(`agent exited (${code}):\n${log}`)));
  });
  return {
    url,
    child,
    log: () => log,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGKILL');
      await gone;
      sweepStaleAgentKeys(); // a SIGKILLed agent cannot remove its key file
    },
  };
}

/**
 * SIGKILLs an agent (it can clean nothing up: its sessions just vanish) and, after
 * `downMs`, starts a new one with the same flags on the same port, as a DaemonSet pod
 * restarted by the kubelet would be. Resolves with the new agent once it listens.
 */
export async function restartAgentProcess(agent: AgentProcess, extra: string[] = [], downMs = 1000): Promise<AgentProcess> {
  const port = new URL(agent.url).port;
  await agent.stop();
  await new Promise((r) => setTimeout(r, downMs));
  for (let attempt = 0; ; attempt++) {
    try {
      return await startAgentProcess(extra, `127.0.0.1:${port}`);
    } catch (err) {
      // The port can still be held a moment by a connection of the old agent's.
      if (attempt >= 20 || !/EADDRINUSE|already in use/.test(String(err))) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  cwd?: string;
}

/** Runs a command to completion (killed after the timeout), capturing its output. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<Result> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd ?? repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => undefined); // a program that exits without reading stdin
    child.stdin.end(opts.input ?? '');
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30000);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/**
 * Builds the Go program test/e2e/fixtures/`fixture` into `out` (Debian's golang-go; stdlib
 * only, so no network: GOPROXY=off). The build cache is kept between runs under the
 * system's temp folder, so a rerun does not compile the standard library again.
 */
export async function buildGoFixture(fixture: string, out: string, opts: { cgo: boolean; gopath: string }): Promise<void> {
  const env = {
    ...process.env, GOCACHE: join(tmpdir(), 'tsmirror-test-gocache'), GOPATH: opts.gopath, GOFLAGS: '', GO111MODULE: 'on',
    GOPROXY: 'off', GOTOOLCHAIN: 'local', CGO_ENABLED: opts.cgo ? '1' : '0',
  };
  const r = await run('go', ['build', '-o', out, '.'], { env, cwd: join(repoRoot, 'test/e2e/fixtures', fixture), timeoutMs: 300000 });
  if (r.code !== 0) throw new Error(`go build of ${fixture} failed (${r.code}):\n${r.stderr}`);
}

/** `tsmirror ARGS…` to completion. */
export function runCli(args: string[], opts: RunOptions = {}): Promise<Result> {
  return run(process.execPath, [cliPath, ...args], opts);
}

/** `tsmirror exec --agent URL --target TARGET [flags] -- command…` */
export function tsmExec(agentUrl: string, target: string, command: string[], flags: string[] = [], opts: RunOptions = {}): Promise<Result> {
  return run(process.execPath, [cliPath, 'exec', '--quiet', '--agent', agentUrl, '--target', target, ...flags, '--', ...command], opts);
}

/** The resident set size of a process in bytes (from /proc). */
export async function rssBytes(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  return Number(kb ?? 0) * 1024;
}

/** utime + stime of a process, in seconds (10 ms steps: USER_HZ 100). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Samples the peak resident set size of some processes every 100 ms until `stop()`. */
export function peakRss(pids: number[]): { stop: () => number[] } {
  const peaks = pids.map(() => 0);
  const timer = setInterval(() => {
    pids.forEach((pid, i) => {
      void rssBytes(pid).then((b) => (peaks[i] = Math.max(peaks[i] ?? 0, b)), () => undefined);
    });
  }, 100);
  return {
    stop: () => {
      clearInterval(timer);
      return peaks;
    },
  };
}

/**
 * Ends a `tsmirror exec` the way a user does (SIGTERM, which it relays to the program),
 * then SIGKILL if it has not exited within `ms`. Killing only the CLI would leave the
 * program running.
 */
export async function stopCli(child: ChildProcess, ms = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  await closed;
  clearTimeout(timer);
}

/** Waits until `done()` holds or `ms` passed, looking every `everyMs`; says whether it holds. */
export async function pollUntil(done: () => boolean | Promise<boolean>, ms: number, everyMs = 50): Promise<boolean> {
  const started = Date.now();
  while (!(await done())) {
    if (Date.now() - started >= ms) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return true;
}

/** A `tsmirror …` running in the background, its output collected. */
export interface RunningCli {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  /** Resolves when the output (stdout, then stderr) matches; rejects after `ms` or if tsmirror exits first. */
  waitFor: (re: RegExp, ms?: number) => Promise<RegExpExecArray>;
  /** Resolves when tsmirror has exited and its output is read (listened for from the start, so never missed). */
  closed: Promise<void>;
}

/** A `tsmirror …` running in the background in its own process group, its output collected. */
export interface BackgroundCli extends RunningCli {
  /** SIGKILL to the whole process group: tsmirror and the program it runs. */
  kill: () => void;
  /** SIGTERM to tsmirror and a wait for its exit (the group is SIGKILLed after 5 s, and once it is gone); leaves `tracked`. */
  stop: () => Promise<void>;
}

/** Starts `tsmirror ARGS…` in its own process group, kept in `tracked` until it is stopped (for an afterEach). */
export function startBackgroundCli(args: string[], tracked: Set<BackgroundCli>, opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): BackgroundCli {
  const cli = startCli(args, { ...opts, detached: true });
  const { child } = cli;
  const s: BackgroundCli = {
    ...cli,
    kill: () => {
      try {
        process.kill(-(child.pid ?? 0), 'SIGKILL');
      } catch {
        // gone
      }
    },
    stop: async () => {
      tracked.delete(s);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      try {
        process.kill(child.pid ?? 0, 'SIGTERM');
      } catch {
        // gone
      }
      const t = setTimeout(() => s.kill(), 5000);
      await gone;
      clearTimeout(t);
      s.kill();
    },
  };
  tracked.add(s);
  return s;
}

/** Starts `tsmirror ARGS…` in the background (stdin closed). */
export function startCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; detached?: boolean } = {}): RunningCli {
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  const waitFor = async (re: RegExp, ms = 15000): Promise<RegExpExecArray> => {
    const until = Date.now() + ms;
    for (;;) {
      const m = re.exec(out + err);
      if (m) return m;
      if (Date.now() > until) throw new Error(`timed out waiting for ${re}\n--- stdout\n${out}\n--- stderr\n${err}`);
      if (child.exitCode !== null) throw new Error(`tsmirror exited (${child.exitCode}) waiting for ${re}\n--- stdout\n${out}\n--- stderr\n${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { child, out: () => out, err: () => err, waitFor, closed };
}

/**
 * Registers a pod of the agent DaemonSet with the fake API server (labelled as the
 * CLI looks for it, in tsmirror-system unless told), its session port 7777 forwarded
 * to `agent` when given (without one, nothing listens behind the port-forward).
 */
export function addAgentPod(api: FakeApiServer, agent: AgentProcess | undefined, pod: Partial<FakePodSpec> & { name: string }): void {
  const { labels, ...rest } = pod;
  api.addPod({
    namespace: 'tsmirror-system',
    labels: { 'app.kubernetes.io/name': 'tsmirror-agent', ...labels },
    containers: [{ name: 'agent', id: randomHex() }],
    forwards: agent ? { 7777: { host: '127.0.0.1', port: Number(new URL(agent.url).port) } } : {},
    ...rest,
  });
}

/**
 * The Session admission policy and its binding, as `tsmirror install` applies them: a cluster
 * agent refuses every session until they are in force.
 */
export function addSessionAdmission(api: FakeApiServer): void {
  for (const object of sessionAdmission()) api.put(structuredClone(object) as never);
}

/**
 * A suite's teardown: stops whichever of these it got to start (the agent, the API
 * server, the harness, in that order), then removes its folders.
 */
export async function stopAll(parts: {
  agent?: AgentProcess | undefined;
  api?: { close(): Promise<void> } | undefined;
  harness?: { destroy(): Promise<void> } | undefined;
  dirs?: Array<string | undefined>;
}): Promise<void> {
  await parts.agent?.stop();
  await parts.api?.close();
  await parts.harness?.destroy();
  for (const dir of parts.dirs ?? []) if (dir) rmSync(dir, { recursive: true, force: true });
}
