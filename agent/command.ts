/**
 * `tsmirror agent`: from the command's flags to a running agent (the session server, and
 * in a cluster its policy and health endpoint). The CLI declares the flags
 * (cli/commands/agent.ts, so that --help and completion need none of the agent) and loads
 * this module only when the command runs.
 */
import { TsmError } from '../protocol/errors.js';
import { clusterAdmission, startHealthServer, type ClusterSettings } from './cluster.js';
import { DEFAULT_AGENT_OPTIONS, startAgent } from './server.js';

/** The flags of `tsmirror agent`, as commander names them. */
export interface AgentFlags {
  listen: string;
  heartbeatInterval: string;
  heartbeatTimeout: string;
  kubeconfig?: string;
  inCluster?: boolean;
  policyConfigmap?: string;
  policyPoll: string;
  nodeName?: string;
  healthListen?: string;
  /** Local mode without the key check (any local user may use the agent). */
  insecureNoAuth?: boolean;
  /** MiB one session's streams may hold together (default 64). */
  sessionMemory?: string;
  /** Seconds: the longest grace a client may ask for. */
  maxReconnectGrace?: string;
}

/** --max-reconnect-grace in seconds, as milliseconds. */
export function maxReconnectGrace(value: string | undefined): number {
  if (value === undefined) return 600_000;
  const seconds = Number(value);
  if (value.trim() === '' || !Number.isFinite(seconds) || seconds < 0 || seconds > 86400) {
    throw new TsmError('TSM_ERR_USAGE', `--max-reconnect-grace "${value}" is not a number of seconds (0 to 86400)`);
  }
  return Math.round(seconds * 1000);
}

/** --session-memory in MiB, as bytes; a usage error when it is not a positive number. */
export function sessionMemory(value: string | undefined): number {
  if (value === undefined) return 64 * 1024 * 1024;
  const mib = Number(value);
  if (!/^\d+$/.test(value.trim()) || mib < 1 || mib > 65536) {
    throw new TsmError('TSM_ERR_USAGE', `--session-memory "${value}" is not a size in MiB (1 to 65536)`);
  }
  return mib * 1024 * 1024;
}

/** Parses `HOST:PORT` (IPv6 in brackets). */
export function parseListen(text: string, flag: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text);
  if (!m) throw new TsmError('TSM_ERR_USAGE', `${flag} "${text}" must be HOST:PORT`);
  return { host: (m[1] ?? '').replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

/**
 * With --kubeconfig or --in-cluster: the cluster settings the flags give. Without either:
 * none (a local agent, as in the tests and the demo).
 */
export function clusterSettings(flags: AgentFlags): ClusterSettings | undefined {
  if (!flags.kubeconfig && !flags.inCluster) {
    if (flags.policyConfigmap) throw new TsmError('TSM_ERR_USAGE', '--policy-configmap needs --in-cluster or --kubeconfig (the agent reads it through the API server)');
    return undefined;
  }
  const node = flags.nodeName ?? process.env.NODE_NAME;
  if (!node) throw new TsmError('TSM_ERR_USAGE', 'the agent needs its node name to find the pods it serves', { hint: 'pass --node-name, or set NODE_NAME from spec.nodeName through the downward API (the DaemonSet does)' });
  let configMap: { namespace: string; name: string } | undefined;
  if (flags.policyConfigmap) {
    const [namespace, name, ...rest] = flags.policyConfigmap.split('/');
    if (!namespace || !name || rest.length) throw new TsmError('TSM_ERR_USAGE', `--policy-configmap "${flags.policyConfigmap}" must be NAMESPACE/NAME`);
    configMap = { namespace, name };
  }
  const pollMs = Number(flags.policyPoll);
  if (!Number.isFinite(pollMs) || pollMs < 50) throw new TsmError('TSM_ERR_USAGE', `--policy-poll must be a number of milliseconds ≥ 50, not "${flags.policyPoll}"`);
  return { kubeconfig: flags.kubeconfig, node, configMap, pollMs };
}

/** Starts the agent; it runs until SIGTERM or SIGINT. */
export async function runAgent(flags: AgentFlags): Promise<void> {
  const { host, port } = parseListen(flags.listen, '--listen');
  const log = DEFAULT_AGENT_OPTIONS.log;
  const settings = clusterSettings(flags);
  const cluster = settings ? await clusterAdmission(settings, log) : undefined;
  const health = flags.healthListen ? parseListen(flags.healthListen, '--health-listen') : undefined;
  let healthServer: Awaited<ReturnType<typeof startHealthServer>> | undefined;
  let agent: Awaited<ReturnType<typeof startAgent>>;
  try {
    healthServer = health ? await startHealthServer(health.host, health.port, log) : undefined;
    agent = await startAgent({
      host,
      port,
      heartbeatMs: Number(flags.heartbeatInterval),
      heartbeatTimeoutMs: Number(flags.heartbeatTimeout),
      localAuth: flags.insecureNoAuth !== true,
      sessionMemoryBytes: sessionMemory(flags.sessionMemory),
      maxReconnectGraceMs: maxReconnectGrace(flags.maxReconnectGrace),
      ...(cluster ? { admit: cluster.admit, node: cluster.node } : flags.nodeName ? { node: flags.nodeName } : {}),
    });
  } catch (err) {
    // The policy poller and the health listener would keep a failed agent alive.
    cluster?.stop();
    healthServer?.close();
    throw err;
  }
  const stop = (): void => {
    cluster?.stop();
    healthServer?.close();
    void agent.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
