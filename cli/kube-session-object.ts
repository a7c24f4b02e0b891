/**
 * The CLI's side of a cluster session's identity: before the hello, the Session object
 * (common/session-object.ts) is created with the user's own credentials, whatever their
 * kubeconfig holds (client certificate, token, exec plugin, OIDC): the API server
 * authenticates the user, RBAC and the admission policy (cli/manifests.ts) decide whether
 * they may open this session in this namespace with this mode. The agent gets only the
 * object's name and a one-time secret; the object is deleted when the session ends.
 */
import { AuthenticationV1Api } from '@kubernetes/client-node';
import {
  newSessionSecret, sessionSecretHash, SESSION_API_VERSION, SESSION_GROUP, SESSION_KIND, SESSION_PLURAL, SESSION_VERSION,
  type SessionIncomingMode, type SessionObject,
} from '../common/session-object.js';
import type { FilesMode } from '../protocol/messages.js';
import { TsmError } from '../protocol/errors.js';
import { httpStatus, kubeError, statusMessage, type Kube } from './kube.js';
import type { ResolvedKubeTarget } from './kube-target.js';

export interface SessionIdentity {
  session: { namespace: string; name: string };
  secret: string;
  /** Deletes the Session object (best effort: a failure is reported through `note`, never thrown). */
  remove(): Promise<void>;
}

/** Who the API server says this kubeconfig's user is (SelfSubjectReview, Kubernetes 1.28+). */
export async function whoAmI(kube: Kube): Promise<string> {
  try {
    const review = await kube.kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' } });
    const name = review.status?.userInfo?.username;
    if (!name) throw new TsmError('TSM_ERR_KUBE_API', 'the API server did not say who you are (SelfSubjectReview has no user name)');
    return name;
  } catch (err) {
    if (httpStatus(err) === 404) {
      throw new TsmError('TSM_ERR_KUBE_API', `the API server ${kube.server} does not serve SelfSubjectReview (Kubernetes 1.28+), which tsmirror needs to name you in the session`, { cause: err, hint: 'tsmirror sessions need Kubernetes 1.30 or later (docs/install.md)' });
    }
    throw kubeError(err, 'asking the API server who you are (SelfSubjectReview)', kube);
  }
}

/** The Session's name: random, so that a name says nothing an observer could reuse. */
function sessionName(): string {
  return `tsm-${newSessionSecret().slice(0, 10)}`;
}

export async function createSessionObject(
  kube: Kube,
  target: ResolvedKubeTarget,
  modes: { incoming: { mode: 'mirror' | 'steal'; filtered: boolean } | undefined; files: FilesMode },
  note: (line: string) => void,
  /** --agent ws://…: the agent may be a local one that needs no Session, on a cluster without tsmirror. */
  optional = false,
): Promise<SessionIdentity | undefined> {
  let user: string;
  try {
    user = await whoAmI(kube);
  } catch (err) {
    if (optional && err instanceof TsmError && httpStatus(err.cause) === 404) {
      note('the API server does not serve SelfSubjectReview: no Session object for this session (enough for an agent started by hand)');
      return undefined;
    }
    throw err;
  }
  const secret = newSessionSecret();
  const incoming: SessionIncomingMode = modes.incoming?.mode ?? 'none';
  const containerId = (target.pod.status?.containerStatuses ?? []).concat(target.pod.status?.initContainerStatuses ?? [])
    .find((s) => s.name === target.container)?.containerID ?? target.containerId;
  const body: SessionObject = {
    apiVersion: SESSION_API_VERSION, kind: SESSION_KIND,
    metadata: { name: sessionName(), namespace: target.namespace, labels: { 'app.kubernetes.io/part-of': 'tsmirror', 'tsmirror.dev/pod': target.podName } },
    spec: {
      user,
      target: { pod: target.podName, container: target.container, containerId },
      mode: { files: modes.files, incoming, filtered: modes.incoming?.filtered ?? false },
      secretHash: sessionSecretHash(secret),
      node: target.node,
    },
  };
  const address = { group: SESSION_GROUP, version: SESSION_VERSION, plural: SESSION_PLURAL, namespace: target.namespace };
  try {
    await kube.custom.createNamespacedCustomObject({ ...address, body });
  } catch (err) {
    const code = httpStatus(err);
    const what = `creating the session's Session object in namespace ${target.namespace} (as ${user})`;
    if (code === 404 && optional) {
      note(`the cluster does not serve ${SESSION_PLURAL}.${SESSION_GROUP}: no Session object for this session (enough for an agent started by hand; a cluster agent will refuse it)`);
      return undefined;
    }
    if (code === 404) {
      throw new TsmError('TSM_ERR_KUBE_API', `the cluster does not serve ${SESSION_PLURAL}.${SESSION_GROUP} (${statusMessage(err)}): the tsmirror installed there predates Session objects`,
        { cause: err, hint: 'a cluster admin runs `tsmirror install` with this version (docs/install.md)' });
    }
    if (code === 403) {
      const message = statusMessage(err);
      const grant = /bind ClusterRole (\S+) in namespace (\S+)/.exec(message);
      throw new TsmError('TSM_ERR_KUBE_FORBIDDEN', `forbidden while ${what}: ${message}`, {
        cause: err,
        hint: grant ? `ask your cluster admin to bind ClusterRole ${grant[1]} in namespace ${grant[2]} (docs/install.md)`
          : `ask your cluster admin to bind ClusterRole tsmirror-user in namespace ${target.namespace} (docs/install.md); \`tsmirror doctor --target …\` lists what is missing`,
      });
    }
    throw kubeError(err, what, kube);
  }
  const name = body.metadata.name;
  note(`session object sessions.tsmirror.dev ${target.namespace}/${name} created as ${user} (${incoming === 'none' ? 'no incoming traffic' : incoming}, files ${modes.files})`);
  let removed: Promise<void> | undefined;
  return {
    session: { namespace: target.namespace, name },
    secret,
    remove: () => removed ??= kube.custom.deleteNamespacedCustomObject({ ...address, name }).then(() => undefined, (err: unknown) => {
      if (httpStatus(err) !== 404) note(`could not delete the Session ${target.namespace}/${name} (${statusMessage(err)}); delete it with kubectl delete sessions.tsmirror.dev -n ${target.namespace} ${name}`);
    }),
  };
}
