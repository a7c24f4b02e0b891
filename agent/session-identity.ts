/**
 * Who is behind a cluster session, and what they may do: the Session object
 * (sessions.tsmirror.dev, common/session-object.ts) its user created with their own
 * credentials. The API server authenticated that user (whatever their kubeconfig holds),
 * RBAC let them create Sessions in the target's namespace, and the admission policy tied
 * `spec.user` to them and checked the mode's grants (cli/manifests.ts). The agent reads the
 * object with its own service account and accepts the hello only when the object
 *
 * - is in the namespace of the pod that owns the target container (looked up in the API);
 * - was created within SESSION_FRESH_MS and was never claimed before: the agent claims it by
 *   writing its status with the resourceVersion it read (optimistic concurrency: of two
 *   agents or two hellos racing, one wins), and also remembers the uids it claimed, so a
 *   Session whose status write was lost still opens one session here;
 * - names this node, this pod and this container;
 * - carries sha256(secret) of the secret in the hello (only the CLI that created it knows it).
 *
 * Then the session's user is spec.user and its modes (files, incoming) are spec.mode, which
 * the agent enforces. The object is polled while the session lives; deleting it ends the
 * session.
 */
import { normalizeContainerId } from '../common/container-id.js';
import {
  parseSessionSpec, secretMatches, SESSION_FRESH_MS, SESSION_PLURAL, SESSION_GROUP, type SessionObject, type SessionSpec,
} from '../common/session-object.js';
import { TsmError } from '../protocol/errors.js';
import type { ClientHello } from '../protocol/messages.js';
import type { AgentKube, PodRef } from './kube.js';

/** How often a live session's object is checked (deletion ends the session within this). */
export const SESSION_POLL_MS = 1000;

export interface VerifiedSession {
  object: SessionObject;
  spec: SessionSpec;
  /** `namespace/name`, for messages. */
  ref: string;
}

const unauthenticated = (message: string, hint?: string): TsmError => new TsmError('TSM_ERR_UNAUTHENTICATED', message,
  { hint: hint ?? 'run the session with tsmirror exec against the cluster (it creates the Session object with your credentials); `tsmirror doctor` checks the setup' });

/**
 * The uids of Sessions this agent claimed, with when (one secret, one session, even if a
 * status write is lost). Kept only while such a Session would still be fresh: after that
 * the freshness check refuses it anyway, so the map stays small.
 */
const claimed = new Map<string, number>();

function forgetStaleClaims(now: number): void {
  for (const [uid, at] of claimed) if (now - at > 2 * SESSION_FRESH_MS) claimed.delete(uid);
}

/** Verifies the hello's Session against the pods that own the target container; returns it and the pod it names. */
export async function verifySession(kube: AgentKube, hello: ClientHello, pods: PodRef[], node: string, agentName: string, now = Date.now()): Promise<{ verified: VerifiedSession; pod: PodRef }> {
  if (hello.session === undefined) {
    if (hello.token !== undefined) {
      throw unauthenticated('this CLI sent a bearer token, as tsmirror did before Session objects; this agent verifies users only through a Session object (sessions.tsmirror.dev) the user creates',
        'upgrade the tsmirror CLI to the version of the agent (`tsmirror doctor` shows both)');
    }
    throw unauthenticated(`this agent (cluster mode) serves only sessions backed by a Session object (${SESSION_PLURAL}.${SESSION_GROUP}) that their user created; none came with this connection`);
  }
  const s = hello.session as { namespace?: unknown; name?: unknown };
  if (typeof s.namespace !== 'string' || typeof s.name !== 'string' || s.name === '' || s.namespace === '') throw new TsmError('TSM_ERR_BAD_FRAME', 'hello.session must be {namespace, name}');
  const ref = `${s.namespace}/${s.name}`;
  const inNamespace = pods.filter((p) => p.namespace === s.namespace);
  if (inNamespace.length === 0) {
    const pod = pods[0] as PodRef;
    throw unauthenticated(`the Session ${ref} is in namespace ${s.namespace}, but the target pod ${pod.namespace}/${pod.name} is in ${pod.namespace}; a Session must live in its target's namespace`);
  }
  const object = await kube.readSession(s.namespace, s.name);
  if (!object) throw unauthenticated(`there is no Session ${ref}; it must exist while the session opens`);
  const spec = parseSessionSpec(object.spec);
  if (!spec) throw unauthenticated(`the Session ${ref} has a malformed spec`);
  if (!secretMatches(hello.secret, spec.secretHash)) throw unauthenticated(`the secret in this hello does not match the Session ${ref}`);
  const created = new Date(object.metadata.creationTimestamp ?? 0).getTime();
  if (!(now - created <= SESSION_FRESH_MS)) {
    throw unauthenticated(`the Session ${ref} was created ${Math.round((now - created) / 1000)} s ago; a Session opens a session only within ${SESSION_FRESH_MS / 1000} s of its creation`);
  }
  const uid = object.metadata.uid ?? '';
  if (claimed.has(uid) || object.status?.claimedBy) {
    throw unauthenticated(`the Session ${ref} was already used${object.status?.claimedBy ? ` (by ${object.status.claimedBy})` : ''}; each opens one session`);
  }
  if (spec.node !== node) throw unauthenticated(`the Session ${ref} is for node ${spec.node}, and this agent runs on ${node}`);
  let specId: string;
  try {
    specId = normalizeContainerId(spec.target.containerId);
  } catch {
    throw unauthenticated(`the Session ${ref} names no valid container id`);
  }
  const pod = inNamespace.find((p) => p.name === spec.target.pod && p.containerId === specId);
  if (!pod) {
    const target = inNamespace[0] as PodRef;
    throw unauthenticated(`the Session ${ref} is for pod ${spec.target.pod} container ${spec.target.containerId.slice(0, 24)}…, not this session's target (pod ${target.name} container ${target.container})`);
  }
  forgetStaleClaims(now);
  claimed.set(uid, now);
  if (!(await kube.claimSession(object, `${agentName} on ${node}`))) {
    throw unauthenticated(`the Session ${ref} was claimed by another session at the same moment; each opens one session`);
  }
  return { verified: { object, spec, ref }, pod };
}

/**
 * Polls the Session while its session lives; calls `ended` once when it is gone (deleted,
 * or replaced by another object of the same name). API errors are retried: an API server
 * that cannot answer does not end sessions. The returned function, called when the session
 * ends, stops polling and deletes the Session: the CLI deletes it too, but a CLI killed
 * (SIGKILL, a lost laptop) cannot, and `kubectl get sessions.tsmirror.dev` must list only
 * live sessions.
 */
export function watchSession(kube: AgentKube, verified: VerifiedSession, ended: (why: TsmError) => void, log: (line: string) => void, pollMs = SESSION_POLL_MS): () => void {
  const { namespace, name, uid } = verified.object.metadata;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = async (): Promise<void> => {
    try {
      const now = await kube.readSession(namespace, name);
      if (stopped) return;
      if (!now || now.metadata.uid !== uid) {
        stopped = true;
        ended(new TsmError('TSM_ERR_SESSION_DELETED', `the Session object ${verified.ref} was deleted, which ends this session`,
          { hint: 'someone (or your own cleanup) deleted it: `kubectl get sessions.tsmirror.dev -n ' + namespace + '` lists live sessions' }));
        return;
      }
    } catch (err) {
      log(`session ${verified.ref}: could not check its Session object: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!stopped) timer = setTimeout(() => void tick(), pollMs);
  };
  timer = setTimeout(() => void tick(), pollMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
    kube.deleteSession(verified.object).catch((err: unknown) => log(`session ${verified.ref}: could not delete its Session object: ${err instanceof Error ? err.message : String(err)}`));
  };
}
