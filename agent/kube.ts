/**
 * What the agent asks the Kubernetes API: the pod that owns a container on its node (so a
 * session's namespace comes from the cluster, not from the client's word), its policy
 * ConfigMap, and TokenReview / SubjectAccessReview for the user behind a session.
 */
import {
  AuthenticationV1Api, AuthorizationV1Api, CoreV1Api, KubeConfig, type V1Pod,
} from '@kubernetes/client-node';
import { TsmError } from '../protocol/errors.js';

export interface AgentKubeOptions {
  /** A kubeconfig file; without it the in-cluster service account is used. */
  kubeconfig?: string | undefined;
}

export interface PodRef { namespace: string; name: string; container: string }
export interface ReviewedUser { username: string; groups: string[]; uid: string; extra: Record<string, string[]> }
export interface AccessQuestion { namespace: string; verb: string; resource: string; subresource?: string }

/** The agent's view of the API, injectable so the policy can be tested on its own. */
export interface AgentKube {
  /** The pod (on `node`) one of whose containers has one of these ids. */
  podOfContainer(node: string, containerIds: string[]): Promise<PodRef | undefined>;
  /** The ConfigMap's data and version, or undefined when it does not exist. */
  readConfigMap(namespace: string, name: string): Promise<{ data: Record<string, string>; version: string } | undefined>;
  reviewToken(token: string): Promise<{ user: ReviewedUser } | { error: string }>;
  canUser(user: ReviewedUser, question: AccessQuestion): Promise<boolean>;
}

function code(err: unknown): number {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'number' ? c : 0;
}

function apiFailure(err: unknown, doing: string): TsmError {
  const c = code(err);
  const why = c === 0 ? (err instanceof Error ? err.message.split('\n')[0] : String(err)) : `HTTP ${c}`;
  return new TsmError('TSM_ERR_KUBE_API', `the agent could not ${doing}: ${why}`, { cause: err, hint: "check the agent's RBAC (daemonset/ manifests) and the API server" });
}

export function loadAgentKube(options: AgentKubeOptions): AgentKube {
  const kc = new KubeConfig();
  if (options.kubeconfig) kc.loadFromFile(options.kubeconfig);
  else kc.loadFromCluster();
  const core = kc.makeApiClient(CoreV1Api);
  const authn = kc.makeApiClient(AuthenticationV1Api);
  const authz = kc.makeApiClient(AuthorizationV1Api);
  return {
    async podOfContainer(node, ids) {
      let pods: V1Pod[];
      try {
        pods = (await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` })).items;
      } catch (err) {
        throw apiFailure(err, `list the pods on node ${node}`);
      }
      for (const pod of pods) {
        for (const s of [...(pod.status?.containerStatuses ?? []), ...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.ephemeralContainerStatuses ?? [])]) {
          const id = (s.containerID ?? '').replace(/^[a-z-]+:\/\//, '');
          if (id && ids.some((want) => id.startsWith(want) || want.startsWith(id))) {
            return { namespace: pod.metadata?.namespace ?? '', name: pod.metadata?.name ?? '', container: s.name };
          }
        }
      }
      return undefined;
    },
    async readConfigMap(namespace, name) {
      try {
        const cm = await core.readNamespacedConfigMap({ namespace, name });
        return { data: cm.data ?? {}, version: cm.metadata?.resourceVersion ?? '' };
      } catch (err) {
        if (code(err) === 404) return undefined;
        throw apiFailure(err, `read the ConfigMap ${namespace}/${name}`);
      }
    },
    async reviewToken(token) {
      try {
        const review = await authn.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } } });
        const s = review.status;
        if (!s?.authenticated || !s.user?.username) return { error: s?.error ?? 'the token is not valid' };
        return { user: { username: s.user.username, groups: s.user.groups ?? [], uid: s.user.uid ?? '', extra: s.user.extra ?? {} } };
      } catch (err) {
        throw apiFailure(err, 'review the user\'s token (TokenReview)');
      }
    },
    async canUser(user, q) {
      try {
        const review = await authz.createSubjectAccessReview({
          body: {
            apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
            spec: {
              user: user.username, groups: user.groups, uid: user.uid, extra: user.extra,
              resourceAttributes: { namespace: q.namespace, verb: q.verb, resource: q.resource, ...(q.subresource ? { subresource: q.subresource } : {}) },
            },
          },
        });
        return review.status?.allowed === true;
      } catch (err) {
        throw apiFailure(err, 'check the user\'s permissions (SubjectAccessReview)');
      }
    },
  };
}
