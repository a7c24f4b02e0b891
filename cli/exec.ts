/**
 * `tsmirror exec` and `tsmirror env`: open a session on the agent, then run the program
 * with the pod's network, names and environment.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { shimPath, supervisorPath } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';
import type { AgentHello, FilesMode, TargetRef } from '../protocol/messages.js';
import { connectAgent, type AgentConnection } from './agent-client.js';
import { formatEnvironment, importedFromPod, mergeEnvironment, type EnvOptions } from './environment.js';
import { EXIT, checkInterceptable, chooseInterception, findProgram, inspectProgram, runProgram, seccompSupport, seccompSupportAsync, type InterceptMode, type RunningProgram } from './launch.js';
import { parseDestRule, type RoutingPolicy } from './routing.js';
import { SessionProxy, sweepStaleSessionDirs } from './proxy/session-proxy.js';
import { fileRules } from './proxy/file-rules.js';
import { IncomingManager } from './proxy/incoming.js';
import { parseIncomingFlags, type IncomingFlags } from './proxy/incoming-flags.js';
import { parseTarget } from './target.js';
import { parseIgnorePatterns, runWatching } from './watch.js';
import type { KubeSessionFlags } from './agent-pod.js';
import { parseResolvConf } from '../common/resolv-conf.js';
import { mark } from './start-trace.js';

export interface SessionFlags extends KubeSessionFlags {
  agent?: string;
  target?: string;
  quiet?: boolean;
  verbose?: boolean;
  /** --fs-mode (exec): declared in the hello, enforced by the agent. */
  fsMode?: string;
}

export interface ExecFlags extends SessionFlags, Partial<IncomingFlags> {
  remoteLocalhost?: boolean;
  localDest: string[];
  remoteDest: string[];
  envInclude: string[];
  envExclude: string[];
  env: string[];
  force?: boolean;
  /** --intercept: auto, preload or seccomp. */
  intercept?: string;
  /** --watch: paths whose changes restart the program. */
  watch?: string[];
  watchIgnore?: string[];
  watchGrace?: string;
  /** --reconnect-grace, seconds. */
  reconnectGrace?: string;
  /** Pod files (cli/proxy/file-rules.ts). */
  fsLocal?: string[];
  fsRemote?: string[];
  fsNotFound?: string[];
}

/** How long incoming connections wait for a program that --watch restarts to listen again. */
export const WATCH_RELISTEN_WAIT_MS = 10_000;

export function progress(flags: SessionFlags, line: string): void {
  if (!flags.quiet) process.stderr.write(`tsmirror: ${line}\n`);
}

/** What the hello declares about pod files: only --fs-mode write may change them. */
function filesDeclared(flags: SessionFlags): { mode: FilesMode } {
  return { mode: flags.fsMode === 'write' ? 'write' : 'read' };
}

/** --reconnect-grace in seconds, as milliseconds (a usage error when it is not a number of seconds). */
export function reconnectGraceMs(value: string | undefined): number {
  if (value === undefined) return 60_000;
  const seconds = Number(value);
  if (value.trim() === '' || !Number.isFinite(seconds) || seconds < 0 || seconds > 86400) {
    throw new TsmError('TSM_ERR_USAGE', `--reconnect-grace "${value}" is not a number of seconds (0 to 86400)`, { hint: 'e.g. --reconnect-grace 60; 0 ends the session with its connection' });
  }
  return Math.round(seconds * 1000);
}

export async function openSession(flags: SessionFlags, incoming?: { mode: 'mirror' | 'steal'; filtered: boolean; record?: boolean }, graceMs = 0): Promise<AgentConnection> {
  const parsed = parseTarget(flags.target);
  if (parsed.kind === 'kubernetes') {
    // Kubernetes targets: resolved through the API, reached through the port-forward.
    const started = Date.now();
    // Loaded only here: @kubernetes/client-node takes ~75 ms to import, bundled.
    const { openKubeSession } = await import('./agent-pod.js');
    const { agent } = await openKubeSession(flags, parsed, (line) => progress(flags, line), incoming, filesDeclared(flags), graceMs);
    const h = agent.hello;
    progress(flags, `session ${h.session} on node ${h.agent.node} (agent ${h.agent.version}): ${h.target.description}, ready in ${Date.now() - started} ms`);
    return agent;
  }
  if (flags.container !== undefined || flags.node !== undefined) {
    throw new TsmError('TSM_ERR_USAGE', '--container and --node apply to Kubernetes targets (pod/NAME, deployment/NAME, …) only');
  }
  const target: TargetRef = parsed;
  if (!flags.agent) {
    throw new TsmError('TSM_ERR_USAGE', 'no agent given', { hint: 'pass --agent ws://HOST:PORT (the address `tsmirror agent --listen` printed)' });
  }
  progress(flags, `connecting to the agent at ${flags.agent}…`);
  const started = Date.now();
  const agent = await connectAgent({ url: flags.agent, target, files: filesDeclared(flags), ...(incoming ? { incoming } : {}), reconnectGraceMs: graceMs });
  const h = agent.hello;
  progress(flags, `session ${h.session} on node ${h.agent.node} (agent ${h.agent.version}): ${h.target.description}, ready in ${Date.now() - started} ms`);
  return agent;
}

function envOptions(flags: ExecFlags): EnvOptions {
  return { include: flags.envInclude, exclude: flags.envExclude, set: flags.env };
}

export async function runEnv(flags: ExecFlags & { format: string }): Promise<void> {
  if (!['dotenv', 'json', 'shell'].includes(flags.format)) {
    throw new TsmError('TSM_ERR_USAGE', `--format must be dotenv, json or shell, not "${flags.format}"`);
  }
  const agent = await openSession({ ...flags, quiet: flags.quiet ?? true });
  try {
    const { env } = await agent.request({ type: 'env.get' });
    const imported = importedFromPod(env, envOptions(flags));
    for (const setting of flags.env) {
      const eq = setting.indexOf('=');
      if (eq > 0) imported[setting.slice(0, eq)] = setting.slice(eq + 1);
    }
    process.stdout.write(formatEnvironment(imported, flags.format as 'dotenv' | 'json' | 'shell'));
  } finally {
    agent.close();
  }
}

function localNameservers(): string[] {
  try {
    return parseResolvConf(readFileSync('/etc/resolv.conf', 'utf8')).nameservers;
  } catch {
    return [];
  }
}

/** Runs the program under the session; resolves with tsmirror's exit code. */
export async function runExec(command: string[], flags: ExecFlags): Promise<number> {
  const [program, ...args] = command;
  if (!program) throw new TsmError('TSM_ERR_USAGE', 'no program given', { hint: 'put the program after --, e.g. tsmirror exec --agent ws://127.0.0.1:7777 --target pid/123 -- curl http://db:8080/' });
  const routing: RoutingPolicy = {
    remoteLocalhost: flags.remoteLocalhost ?? false,
    localDest: flags.localDest.map(parseDestRule),
    remoteDest: flags.remoteDest.map(parseDestRule),
  };
  // Everything that can be refused is refused before connecting.
  for (const p of flags.watch ?? []) {
    if (!existsSync(p)) throw new TsmError('TSM_ERR_USAGE', `--watch ${p}: no such file or directory`, { hint: 'watch the directory of your sources, e.g. --watch src' });
  }
  parseIgnorePatterns(flags.watchIgnore ?? []);
  const graceMs = reconnectGraceMs(flags.reconnectGrace);
  if (flags.watchGrace !== undefined && !(Number(flags.watchGrace) >= 0)) {
    throw new TsmError('TSM_ERR_USAGE', `--watch-grace "${flags.watchGrace}" is not a number of milliseconds`);
  }
  const path = findProgram(program, process.env.PATH);
  const info = inspectProgram(path);
  const interception = chooseInterception(info, (flags.intercept ?? 'auto') as InterceptMode, process.env.PATH);
  for (const warning of checkInterceptable(info, flags.force ?? false, process.env.PATH, interception.how)) {
    process.stderr.write(`tsmirror: warning: ${warning}\n`);
  }
  // --force on what cannot be intercepted runs it plainly, through the launcher.
  const supervised = interception.how === 'seccomp' && seccompSupport().ok;
  const shim = shimPath();
  // Under the preload, the static and Go programs the program runs (`sh -c ./server`,
  // make, npm scripts) go under the supervisor (native/shim/exec_supervisor.c), unless
  // --intercept preload; probed while the session opens.
  const childSupervision = !supervised && (flags.intercept ?? 'auto') === 'auto' ? seccompSupportAsync() : undefined;
  const fsOptions = { mode: flags.fsMode, local: flags.fsLocal ?? [], remote: flags.fsRemote ?? [], notFound: flags.fsNotFound ?? [], programPath: path, cwd: process.cwd() };
  fileRules({ ...fsOptions, targetless: false }); // refuse bad --fs-* options before connecting
  const incomingOptions = parseIncomingFlags({ ...flags, httpHeader: flags.httpHeader ?? [], portMap: flags.portMap ?? [] });

  mark('exec: program inspected, flags checked');
  const agent = await openSession(flags, { mode: incomingOptions.mode, filtered: incomingOptions.filter !== undefined }, graceMs);
  const reporter = reportReconnects(agent, flags);
  let proxy: SessionProxy | undefined;
  // With --watch, a restarting program keeps its ports: requests wait for it (up to 10 s).
  const incoming = new IncomingManager(agent, { ...incomingOptions, relistenWaitMs: (flags.watch ?? []).length > 0 ? WATCH_RELISTEN_WAIT_MS : 0 }, (line) => progress(flags, line));
  try {
    // The pod's environment is asked for while the session proxy starts: one wait for the
    // agent less before the program runs.
    const podEnvAnswer = agent.hello.target.pid > 0 ? agent.request({ type: 'env.get' }) : Promise.resolve({ env: {} });
    podEnvAnswer.catch(() => undefined); // awaited below; the proxy failing to start first must not leave it unhandled
    proxy = await SessionProxy.start(agent, {
      routing,
      localNameservers: localNameservers(),
      podNameservers: agent.hello.target.nameservers,
      log: (line) => progress(flags, line),
      files: fileRules({ ...fsOptions, targetless: agent.hello.target.pid === 0 || !agent.hello.capabilities.includes('files') }),
      incoming,
    });
    mark('exec: session proxy listening');
    const { env: podEnv } = await podEnvAnswer;
    mark('exec: pod environment received');
    const env = mergeEnvironment(process.env, podEnv, envOptions(flags));
    if (agent.hello.target.pid === 0) progress(flags, "targetless session: the network is the agent's own; no incoming traffic, pod files or pod environment");
    else progress(flags, `imported ${Object.keys(importedFromPod(podEnv, envOptions(flags))).length} environment variables from the pod`);
    agent.on('reestablished', () => void incoming.resubscribe());
    if (supervised) {
      // The supervisor serves the program and every child it starts, dynamically linked
      // ones included: a preloaded shim as well would intercept the same calls twice.
      progress(flags, `intercepting with seccomp (${interception.why})`);
    } else {
      env.LD_PRELOAD = [shim, ...(env.LD_PRELOAD ?? '').split(/[: ]/).filter((p) => p && p !== shim)].join(':');
      env.TSMIRROR_SHIM = shim;
      env.TSMIRROR_SOCK = proxy.socketPath;
      delete env.TSMIRROR_SUPERVISOR;
      delete env.TSMIRROR_CLI_PID;
      const childSupervisionAnswer = await childSupervision;
      mark('exec: seccomp probe answered');
      if (childSupervisionAnswer?.ok === true) {
        env.TSMIRROR_SUPERVISOR = supervisorPath();
        env.TSMIRROR_CLI_PID = String(process.pid); // its signals the supervisor does not relay (main.c)
      }
    }
    const socketPath = proxy.socketPath;
    const launch = (ownGroup: boolean): RunningProgram => runProgram(path, args, program, env, { ownGroup, ...(supervised ? { supervise: socketPath } : {}) });

    // Folders of sessions that were killed before they could remove theirs (see there).
    setImmediate(() => sweepStaleSessionDirs());
    let programEnded = false;
    agent.peer.once('closed', () => {
      const why = agent.closedError;
      if (why && !programEnded) process.stderr.write(`tsmirror: the session ended: ${why.code}: ${why.message}; the program's remote connections now fail\n`);
    });
    const watching = flags.watch ?? [];
    const code = watching.length > 0
      ? await runWatching(() => launch(true), {
        paths: watching.map((p) => resolvePath(p)),
        ignore: parseIgnorePatterns(flags.watchIgnore ?? []),
        debounceMs: 50,
        graceMs: Number(flags.watchGrace ?? 3000),
        onStopped: () => incoming.programStopped(),
        log: (line) => progress(flags, line),
      })
      : await launchTraced(launch);
    programEnded = true;
    mark('exec: program ended');
    if (flags.verbose) {
      const s = proxy.stats;
      process.stderr.write(`tsmirror: ${s.tcpConnects} TCP connections (${s.heldConnects} answered before the pod's connect was done) and ${s.udpFlows} UDP flows through the pod, ${s.lookups} lookups (${s.cachedLookups} answered from the session's cache), ${s.dnsFlows} DNS flows answered by the proxy (${s.udpDnsQueries} queries) and ${s.dnsMessages} DNS messages (${s.cachedDnsMessages} of those queries and messages answered from the session's cache), ${s.localPassThrough} local connections, ${s.failures} failures\n`);
      if (s.unseen > 0) process.stderr.write(`tsmirror: ${s.unseen} reports of calls the shim cannot see (io_uring, connect or open through syscall())\n`);
      const f = proxy.files?.stats;
      if (f) process.stderr.write(`tsmirror: ${f.filesRead} files read from the pod, ${f.bytesIn} bytes in, ${f.bytesOut} bytes out, ${f.requests} file requests to the agent\n`);
      const i = incoming.stats;
      if (i.connections + i.refused > 0) process.stderr.write(`tsmirror: ${i.connections} incoming connections from the pod, ${i.refused} handed back to the pod's app\n`);
      process.stderr.write(`tsmirror: ${describeConnection(agent)}\n`);
    }
    return code;
  } finally {
    reporter.stop();
    incoming.close();
    await proxy?.close();
    mark('exec: session proxy closed');
    agent.close();
  }
}

async function launchTraced(launch: (ownGroup: boolean) => RunningProgram): Promise<number> {
  const running = launch(false);
  mark('exec: program spawned');
  return running.exitCode;
}

/** One line on the session's connection: resumes, new sessions, bytes sent again, gaps (exec -v). */
export function describeConnection(agent: AgentConnection): string {
  const s = agent.stats;
  const gaps = s.gapsMs.length === 0 ? 'no gaps' : `gaps of ${s.gapsMs.map((g) => `${(g / 1000).toFixed(1)} s`).join(', ')}`;
  return `connection to the agent: ${s.resumes} resumed, ${s.reestablished} re-established (new session), ${s.bytesResent} bytes sent again, ${gaps}`;
}

/**
 * Says when the connection to the agent is lost and when it is back: one line, updated in
 * place each second on a terminal (\`tsmirror: lost the agent, reconnecting… (3 s)\`).
 */
function reportReconnects(agent: AgentConnection, flags: SessionFlags): { stop(): void } {
  const tty = process.stderr.isTTY === true && !flags.quiet;
  let ticker: NodeJS.Timeout | undefined;
  let since = 0;
  const line = (text: string, final: boolean): void => {
    if (flags.quiet) return;
    if (tty) process.stderr.write(`\r\x1b[2K${text}${final ? '\n' : ''}`);
    else if (final) process.stderr.write(`${text}\n`);
  };
  let what = 'lost the agent, reconnecting…';
  const lostText = (): string => `tsmirror: ${what} (${Math.round((Date.now() - since) / 1000)} s)`;
  const stopTicker = (): void => {
    clearInterval(ticker);
    ticker = undefined;
  };
  agent.on('lost', (err: TsmError) => {
    since = Date.now();
    what = err.code === 'TSM_ERR_TARGET_GONE' ? 'the target went away, opening a new session on it…' : 'lost the agent, reconnecting…';
    if (tty) {
      line(lostText(), false);
      stopTicker();
      ticker = setInterval(() => line(lostText(), false), 1000);
      ticker.unref();
    } else {
      line(`tsmirror: ${what} (${err.code}: ${err.message})`, true);
    }
  });
  // Each distinct reason once (the agent refusing, the target not found again, …).
  agent.on('retry', (err: TsmError) => {
    line(`tsmirror: still reconnecting: ${err.code}: ${err.message}`, true);
    if (tty && ticker) line(lostText(), false);
  });
  agent.on('resumed', (r: { gapMs: number; resentBytes: number }) => {
    stopTicker();
    line(`tsmirror: the agent is back after ${(r.gapMs / 1000).toFixed(1)} s: session resumed, nothing lost`, true);
  });
  agent.on('reestablished', (r: { hello: AgentHello; previous: AgentHello; gapMs: number; note?: string }) => {
    stopTicker();
    const h = r.hello;
    const moved = h.target.description !== r.previous.target.description || h.agent.node !== r.previous.agent.node;
    line(`tsmirror: the agent is back after ${(r.gapMs / 1000).toFixed(1)} s with a new session ${h.session} (the old one was gone: open connections were reset)${r.note ? `; ${r.note}` : moved ? `; now ${h.target.description} on node ${h.agent.node}` : ''}`, true);
  });
  agent.peer.once('closed', stopTicker);
  return { stop: stopTicker };
}

export { EXIT };
