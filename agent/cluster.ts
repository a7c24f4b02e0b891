/**
 * The agent inside a cluster: its Kubernetes access (in-cluster service account or a
 * kubeconfig), its policy, and a health endpoint on the pod's network for the kubelet's
 * probes (the session port stays on the pod's loopback, reachable only by port-forward).
 */
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { TsmError } from '../protocol/errors.js';
import { hostForUrl, listenOn, type AgentOptions } from './server.js';

/** What cluster mode needs, from the agent's flags (agent/command.ts). */
export interface ClusterSettings {
  /** Reach the API server with this kubeconfig; without it, the pod's service account. */
  kubeconfig: string | undefined;
  node: string;
  /** The ConfigMap holding the policy; without it, the empty policy. */
  configMap: { namespace: string; name: string } | undefined;
  pollMs: number;
}

/** The policy enforcer, started (its first read of the ConfigMap done). */
export async function clusterAdmission(settings: ClusterSettings, log: (line: string) => void): Promise<{ admit: NonNullable<AgentOptions['admit']>; node: string; stop: () => void }> {
  const { kubeconfig, node, configMap, pollMs } = settings;
  // Loaded only in cluster mode: @kubernetes/client-node takes ~75 ms to import, bundled.
  const { loadAgentKube } = await import('./kube.js');
  const { PolicyEnforcer } = await import('./policy.js');
  let kube;
  try {
    kube = loadAgentKube({ kubeconfig });
  } catch (err) {
    throw new TsmError('TSM_ERR_KUBE_CONFIG', `the agent cannot load its Kubernetes credentials: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  // In a pod the hostname is the pod's name: the Sessions this agent claims say which agent it was.
  const policy = new PolicyEnforcer({ kube, node, configMap, pollMs, log, agentName: hostname() });
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
