/**
 * `tsmirror exec` and `tsmirror env`: open a session on the agent, then run the program
 * with the pod's network, names and environment.
 */
import { readFileSync } from 'node:fs';
import { shimPath } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';
import type { TargetRef } from '../protocol/messages.js';
import { connectAgent, type AgentConnection } from './agent-client.js';
import { formatEnvironment, importedFromPod, mergeEnvironment, type EnvOptions } from './environment.js';
import { EXIT, checkInterceptable, findProgram, inspectProgram, runProgram } from './launch.js';
import { parseDestRule, type RoutingPolicy } from './routing.js';
import { SessionProxy } from './session-proxy.js';
import { parseTarget } from './target.js';
import type { KubeSessionFlags } from './kube-session.js';
import { parseResolvConf } from '../agent/resolver.js';

export interface SessionFlags extends KubeSessionFlags {
  agent?: string;
  target?: string;
  quiet?: boolean;
  verbose?: boolean;
}

export interface ExecFlags extends SessionFlags {
  remoteLocalhost?: boolean;
  localDest: string[];
  remoteDest: string[];
  envInclude: string[];
  envExclude: string[];
  env: string[];
  force?: boolean;
}

export function progress(flags: SessionFlags, line: string): void {
  if (!flags.quiet) process.stderr.write(`tsmirror: ${line}\n`);
}

export async function openSession(flags: SessionFlags): Promise<AgentConnection> {
  const parsed = parseTarget(flags.target);
  if (parsed.kind === 'kubernetes') {
    // Kubernetes targets: resolved through the API, reached through the port-forward.
    const started = Date.now();
    // Loaded only here: @kubernetes/client-node takes ~0.4 s to import.
    const { openKubeSession } = await import('./kube-session.js');
    const { agent } = await openKubeSession(flags, parsed, (line) => progress(flags, line));
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
  const agent = await connectAgent({ url: flags.agent, target });
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
  const path = findProgram(program, process.env.PATH);
  for (const warning of checkInterceptable(inspectProgram(path), flags.force ?? false, process.env.PATH)) {
    process.stderr.write(`tsmirror: warning: ${warning}\n`);
  }
  const shim = shimPath();

  const agent = await openSession(flags);
  let proxy: SessionProxy | undefined;
  try {
    const { env: podEnv } = agent.hello.target.pid > 0 ? await agent.request({ type: 'env.get' }) : { env: {} };
    const env = mergeEnvironment(process.env, podEnv, envOptions(flags));
    if (agent.hello.target.pid === 0) progress(flags, 'targetless session: no pod environment is imported');
    else progress(flags, `imported ${Object.keys(importedFromPod(podEnv, envOptions(flags))).length} environment variables from the pod`);
    proxy = await SessionProxy.start(agent, {
      routing,
      localNameservers: localNameservers(),
      podNameservers: agent.hello.target.nameservers,
      log: (line) => progress(flags, line),
    });
    env.LD_PRELOAD = [shim, ...(env.LD_PRELOAD ?? '').split(/[: ]/).filter((p) => p && p !== shim)].join(':');
    env.TSMIRROR_SHIM = shim;
    env.TSMIRROR_SOCK = proxy.socketPath;

    let programEnded = false;
    agent.peer.once('closed', () => {
      const why = agent.closedError;
      if (why && !programEnded) process.stderr.write(`tsmirror: the session ended: ${why.code}: ${why.message}; the program's remote connections now fail\n`);
    });
    const running = runProgram(path, args, program, env);
    const code = await running.exitCode;
    programEnded = true;
    if (flags.verbose) {
      const s = proxy.stats;
      process.stderr.write(`tsmirror: ${s.tcpConnects} TCP connections and ${s.udpFlows} UDP flows through the pod, ${s.lookups} lookups, ${s.localPassThrough} local connections, ${s.failures} failures\n`);
    }
    return code;
  } finally {
    await proxy?.close();
    agent.close();
  }
}

export { EXIT };
