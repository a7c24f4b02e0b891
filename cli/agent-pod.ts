/**
 * The agent pods (one per node: how they are found and reached) and opening a session on
 * a Kubernetes target: resolve the target to a pod and container, find the agent pod on
 * that pod's node, and reach the agent through the API server's port-forward (or directly
 * with --agent ws://…, which bypasses the port-forward).
 */
import type { FilesMode } from '../protocol/messages.js';
import type { V1Pod } from '@kubernetes/client-node';
import { TsmError } from '../protocol/errors.js';
import type { Duplex } from 'node:stream';
import { connectAgent, type AgentConnection, type ConnectOptions, type RenewedSession } from './agent-client.js';
import { kubeError, loadKube, type Kube, type KubeFlags } from './kube.js';
import { createSessionObject, type SessionIdentity } from './kube-session-object.js';
import { isPodReady, resolveKubeTarget, type ResolvedKubeTarget } from './kube-target.js';
import { openPortForward, type PortForwardSocket } from './portforward.js';

/** Where `tsmirror install` puts the agent, and how its pods are labelled. */
export const AGENT_NAMESPACE = 'tsmirror-system';
export const AGENT_LABEL = 'app.kubernetes.io/name=tsmirror-agent';
/** The agent's session port, on its own pod's loopback. */
export const AGENT_PORT = 7777;

export interface KubeSessionFlags extends KubeFlags {
  agent?: string;
  container?: string;
  node?: string;
  agentNamespace?: string;
}

export interface AgentPod {
  name: string;
  namespace: string;
  node: string;
  ready: boolean;
  port: number;
  version: string | undefined;
  pod: V1Pod;
}

function agentPodOf(pod: V1Pod, namespace: string): AgentPod {
  const container = pod.spec?.containers.find((c) => (c.ports ?? []).some((p) => p.name === 'session')) ?? pod.spec?.containers[0];
  const port = container?.ports?.find((p) => p.name === 'session')?.containerPort ?? AGENT_PORT;
  return {
    name: pod.metadata?.name ?? '?', namespace, node: pod.spec?.nodeName ?? '?', ready: isPodReady(pod), port,
    version: pod.metadata?.labels?.['app.kubernetes.io/version'], pod,
  };
}

/** Every agent pod (one per node when the DaemonSet is healthy). */
export async function listAgentPods(kube: Kube, namespace = AGENT_NAMESPACE, node?: string): Promise<AgentPod[]> {
  try {
    const list = await kube.core.listNamespacedPod({ namespace, labelSelector: AGENT_LABEL, ...(node ? { fieldSelector: `spec.nodeName=${node}` } : {}) });
    return list.items.map((p) => agentPodOf(p, namespace)).sort((a, b) => a.node.localeCompare(b.node));
  } catch (err) {
    throw kubeError(err, `listing the tsmirror agents in namespace ${namespace}`, kube);
  }
}

/** The ready agent pod on `node`, or an error saying what is wrong and how to fix it. */
export async function findAgent(kube: Kube, node: string, namespace = AGENT_NAMESPACE, forWhat = `node '${node}'`): Promise<AgentPod> {
  const agents = await listAgentPods(kube, namespace, node);
  const ready = agents.find((a) => a.ready);
  if (ready) return ready;
  if (agents.length > 0) {
    const a = agents[0] as AgentPod;
    throw new TsmError('TSM_ERR_NO_AGENT', `the tsmirror agent on ${forWhat} (pod ${namespace}/${a.name}) is not ready (${a.pod.status?.phase ?? 'Unknown'})`,
      { hint: `look at it with kubectl describe pod -n ${namespace} ${a.name}; \`tsmirror doctor\` checks the rest` });
  }
  const elsewhere = [...new Set((await listAgentPods(kube, namespace)).map((a) => a.node))];
  throw new TsmError('TSM_ERR_NO_AGENT', `no tsmirror agent runs on ${forWhat}${elsewhere.length ? `; agents run on: ${elsewhere.join(', ')}` : ` (no agent pods in namespace ${namespace})`}`,
    { hint: elsewhere.length
      ? `the agent DaemonSet does not cover that node: check its tolerations and node selector (kubectl -n ${namespace} describe daemonset tsmirror-agent)`
      : 'a cluster admin installs the agent once with `tsmirror install` (see docs/install.md)' });
}

export interface KubeSession {
  agent: AgentConnection;
  target: ResolvedKubeTarget;
  agentPod: AgentPod | undefined;
  kube: Kube;
  /** The session's Session object (deleted when the session closes); none with --agent on a cluster without tsmirror. */
  sessionObject: { namespace: string; name: string } | undefined;
}

/** Opens a byte stream to an agent pod's port through the API server. */
export function forwardToAgent(kube: Kube, agent: AgentPod): Promise<PortForwardSocket> {
  return openPortForward(kube.kc, agent.namespace, agent.name, agent.port);
}

export async function openKubeSession(
  flags: KubeSessionFlags,
  request: { resource: string; name: string; container: string | undefined },
  progress: (line: string) => void,
  incoming?: { mode: 'mirror' | 'steal'; filtered: boolean },
  files?: { mode: FilesMode },
  /** --reconnect-grace: resume through a new port-forward, else open a new session (the target resolved again). */
  reconnectGraceMs = 0,
): Promise<KubeSession> {
  const kube = loadKube(flags);
  const first = await planKubeSession(kube, flags, request, progress, incoming, files);
  let current = first;
  // A new session for the same target: resolved again (a workload's pod may have been
  // replaced, on another node), a new Session object, the agent of that pod's node.
  const renew = async (): Promise<RenewedSession> => {
    const previous = current;
    const next = await planKubeSession(kube, flags, request, () => undefined, incoming, files);
    current = next;
    const moved = next.target.podName !== previous.target.podName || next.target.node !== previous.target.node;
    return {
      options: { ...next.options, reconnectGraceMs, renew },
      dispose: () => void next.identity?.remove(),
      ...(moved ? { note: `now pod ${next.target.namespace}/${next.target.podName} on node ${next.target.node} (${request.resource}/${request.name}; was pod ${previous.target.podName})` } : {}),
    };
  };
  try {
    const agent = await connectAgent({ ...first.options, reconnectGraceMs, ...(reconnectGraceMs > 0 ? { renew } : {}), dispose: () => void first.identity?.remove() });
    return { agent, target: first.target, agentPod: first.agentPod, kube, sessionObject: first.identity?.session };
  } catch (err) {
    first.options.createConnection?.().destroy();
    await first.identity?.remove();
    throw err;
  }
}

interface KubeSessionPlan {
  options: ConnectOptions;
  target: ResolvedKubeTarget;
  agentPod: AgentPod | undefined;
  identity: SessionIdentity | undefined;
}

/**
 * Everything a session on a Kubernetes target needs before its hello: the target resolved
 * to a ready pod, the agent on that pod's node, the Session object, and the port-forward
 * (with `reopen` for a resume through a new one).
 */
async function planKubeSession(
  kube: Kube,
  flags: KubeSessionFlags,
  request: { resource: string; name: string; container: string | undefined },
  progress: (line: string) => void,
  incoming: { mode: 'mirror' | 'steal'; filtered: boolean } | undefined,
  files: { mode: FilesMode } | undefined,
): Promise<KubeSessionPlan> {
  const target = await resolveKubeTarget(kube, { ...request, container: request.container ?? flags.container, node: flags.node });
  for (const note of target.notes) progress(note);
  progress(`target ${target.description}`);
  // The agent lookup and the Session object (an exec plugin may take a while) in parallel.
  const agentLookup = flags.agent ? undefined
    : findAgent(kube, target.node, flags.agentNamespace ?? AGENT_NAMESPACE, `node '${target.node}' (where pod ${target.podName} runs)`);
  agentLookup?.catch(() => undefined); // awaited below; no unhandled rejection meanwhile
  // Who the user is and what they may do is the API server's to say: the Session object is
  // created with their credentials, and the agent reads it. No credential reaches the agent.
  // Created while the agent is found and the port-forward opens; a failure to reach the
  // agent is reported first (it is the more basic problem), and removes the object.
  const creating = createSessionObject(kube, target, { incoming, files: files?.mode ?? 'read' }, progress, flags.agent !== undefined);
  creating.catch(() => undefined); // awaited below
  const base = {
    target: { kind: 'container' as const, id: target.containerId },
    ...(incoming === undefined ? {} : { incoming }),
    ...(files === undefined ? {} : { files }),
  };
  const withIdentity = async (): Promise<{ identity: SessionIdentity | undefined; fields: Pick<ConnectOptions, 'session' | 'secret'> }> => {
    const identity = await creating;
    return { identity, fields: identity ? { session: identity.session, secret: identity.secret } : {} };
  };
  try {
    if (flags.agent) {
      progress(`connecting to the agent at ${flags.agent} (--agent: no port-forward)…`);
      const { identity, fields } = await withIdentity();
      return { options: { url: flags.agent, ...base, ...fields }, target, agentPod: undefined, identity };
    }
    const agentPod = await (agentLookup as Promise<AgentPod>);
    progress(`connecting to agent ${agentPod.namespace}/${agentPod.name} through the API server's port-forward…`);
    const forward = async (): Promise<{ createConnection: () => Duplex; transportError: () => TsmError | undefined }> => {
      const socket = await forwardToAgent(kube, agentPod);
      // Its failures reach whoever uses it (the WebSocket, transportError); unused, it must not end the CLI.
      socket.on('error', () => undefined);
      const transportError = (): TsmError | undefined => (socket.dropped === undefined ? undefined
        : new TsmError('TSM_ERR_PORT_FORWARD', `the port-forward to agent ${agentPod.namespace}/${agentPod.name} through the API server dropped: ${socket.dropped}`,
          { hint: 'run the command again; if it keeps dropping, check the API server and the agent pod (`tsmirror doctor`)' }));
      return { createConnection: () => socket, transportError };
    };
    const transport = await forward();
    // A resume goes to the same agent pod; once it is gone (the DaemonSet rolled), so is the
    // session: a new one is opened at once rather than after the grace.
    const reopen = async (): Promise<{ createConnection: () => Duplex; transportError: () => TsmError | undefined }> => {
      const now = await listAgentPods(kube, agentPod.namespace, agentPod.node);
      const same = now.find((a) => a.name === agentPod.name && a.pod.metadata?.uid === agentPod.pod.metadata?.uid);
      if (!same) throw new TsmError('TSM_ERR_RESUME_REFUSED', `the agent pod ${agentPod.namespace}/${agentPod.name} is gone, and the session with it`);
      return forward();
    };
    try {
      const { identity, fields } = await withIdentity();
      return {
        options: { url: `ws://${agentPod.name}.${agentPod.namespace}/`, ...transport, reopen, ...base, ...fields },
        target, agentPod, identity,
      };
    } catch (err) {
      transport.createConnection().destroy();
      throw err;
    }
  } catch (err) {
    await creating.then((made) => made?.remove(), () => undefined);
    throw err;
  }
}
