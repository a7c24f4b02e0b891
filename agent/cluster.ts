/**
 * The agent inside a cluster: its Kubernetes access (in-cluster service account or a
 * kubeconfig), its policy, and a health endpoint on the pod's network for the kubelet's
 * probes (the session port stays on the pod's loopback, reachable only by port-forward).
 */
import { createServer, type Server } from 'node:http';
import { TsmError } from '../protocol/errors.js';
import { hostForUrl, listenOn, type AgentOptions } from './server.js';

export interface ClusterFlags {
  kubeconfig?: string;
  inCluster?: boolean;
  policyConfigmap?: string;
  policyPoll: string;
  nodeName?: string;
}

/** Parses `HOST:PORT` (IPv6 in brackets). */
export function parseListen(text: string, flag: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text);
  if (!m) throw new TsmError('TSM_ERR_USAGE', `${flag} "${text}" must be HOST:PORT`);
  return { host: (m[1] ?? '').replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

/**
 * With --kubeconfig or --in-cluster: the policy enforcer, started (its first read of the
 * ConfigMap done). Without either: nothing (a local agent, as in the tests and the demo).
 */
export async function clusterAdmission(flags: ClusterFlags, log: (line: string) => void): Promise<{ admit: NonNullable<AgentOptions['admit']>; node: string; stop: () => void } | undefined> {
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
  // Loaded only in cluster mode: @kubernetes/client-node takes ~75 ms to import, bundled.
  const { loadAgentKube } = await import('./kube.js');
  const { PolicyEnforcer } = await import('./policy.js');
  let kube;
  try {
    kube = loadAgentKube({ kubeconfig: flags.kubeconfig });
  } catch (err) {
    throw new TsmError('TSM_ERR_KUBE_CONFIG', `the agent cannot load its Kubernetes credentials: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const policy = new PolicyEnforcer({ kube, node, configMap, pollMs, log });
  await policy.start();
  return { admit: (req) => policy.admit(req), node, stop: () => policy.stop() };
}

/** Serves only GET /healthz, for the kubelet's readiness and liveness probes. */
export async function startHealthServer(host: string, port: number, log: (line: string) => void): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz') res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    else res.writeHead(404).end();
  });
  const taken = await listenOn(server, host, port, '--health-listen');
  log(`health endpoint on http://${hostForUrl(host)}:${taken}/healthz`);
  return server;
}
