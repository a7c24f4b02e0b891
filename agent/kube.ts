/**
 * What the agent asks the Kubernetes API: the pod that owns a container on its node (so a
 * session's namespace comes from the cluster, not from the client's word), its policy
 * ConfigMap, and the Session objects users create (read, claimed through their status).
 * The agent asks with its own service account only; it never holds a user's credentials.
 */
import { AdmissionregistrationV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import {
  SESSION_ADMISSION_POLICY, SESSION_GROUP, SESSION_PLURAL, SESSION_VALIDATIONS, SESSION_VERSION, type SessionObject,
} from '../common/session-object.js';
import { TsmError } from '../protocol/errors.js';

export interface AgentKubeOptions {
  /** A kubeconfig file; without it the in-cluster service account is used. */
  kubeconfig?: string | undefined;
}

export interface PodRef {
  namespace: string;
  name: string;
  container: string;
  /** The container's id as the pod's status reports it, normalized (common/container-id.ts). */
  containerId: string;
}

/** The agent's view of the API, injectable so the policy can be tested on its own. */
export interface AgentKube {
  /**
   * The pods (on `node`) one of whose containers has one of these ids: one in a real cluster
   * (a container belongs to one pod); test fixtures may back several pods with one process.
   */
  podsOfContainer(node: string, containerIds: string[]): Promise<PodRef[]>;
  /** The ConfigMap's data and version, or undefined when it does not exist. */
  readConfigMap(namespace: string, name: string): Promise<{ data: Record<string, string>; version: string } | undefined>;
  /** The Session object, or undefined when it does not exist. */
  readSession(namespace: string, name: string): Promise<SessionObject | undefined>;
  /**
   * Marks the Session used (its status names this agent), on the condition that it is still
   * the version read: false when someone else changed it first.
   */
  claimSession(session: SessionObject, by: string): Promise<boolean>;
  /**
   * What is wrong with the cluster's Session admission policy (missing, not bound to deny,
   * not checking what tsmirror ships), or undefined when it is in force. Without it a
   * Session's user and mode would be whatever its creator wrote.
   */
  sessionAdmissionProblem(): Promise<string | undefined>;
  /** Deletes this Session (that uid only: a new object of the same name is left alone); gone already is fine. */
  deleteSession(session: SessionObject): Promise<void>;
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
  const custom = kc.makeApiClient(CustomObjectsApi);
  const admission = kc.makeApiClient(AdmissionregistrationV1Api);
  const sessionAddress = (namespace: string, name: string) => ({ group: SESSION_GROUP, version: SESSION_VERSION, plural: SESSION_PLURAL, namespace, name });
  return {
    async podsOfContainer(node, ids) {
      let pods: V1Pod[];
      try {
        pods = (await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` })).items;
      } catch (err) {
        throw apiFailure(err, `list the pods on node ${node}`);
      }
      const found: PodRef[] = [];
      for (const pod of pods) {
        for (const s of [...(pod.status?.containerStatuses ?? []), ...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.ephemeralContainerStatuses ?? [])]) {
          const id = (s.containerID ?? '').replace(/^[a-z-]+:\/\//, '');
          if (id && ids.some((want) => id.startsWith(want) || want.startsWith(id))) {
            found.push({ namespace: pod.metadata?.namespace ?? '', name: pod.metadata?.name ?? '', container: s.name, containerId: id.toLowerCase() });
            break;
          }
        }
      }
      return found;
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
    async readSession(namespace, name) {
      try {
        return await custom.getNamespacedCustomObject(sessionAddress(namespace, name)) as SessionObject;
      } catch (err) {
        if (code(err) === 404) return undefined;
        throw apiFailure(err, `read the Session ${namespace}/${name}`);
      }
    },
    async sessionAdmissionProblem() {
      const name = SESSION_ADMISSION_POLICY;
      try {
        const policy = await admission.readValidatingAdmissionPolicy({ name });
        const installed = new Set((policy.spec?.validations ?? []).map((v) => v.expression));
        const missing = SESSION_VALIDATIONS.filter((v) => !installed.has(v.expression));
        if (missing.length) return `the ValidatingAdmissionPolicy ${name} does not check ${missing.map((v) => `"${v.expression}"`).join(', ')}`;
        if (policy.spec?.failurePolicy === 'Ignore') return `the ValidatingAdmissionPolicy ${name} has failurePolicy Ignore`;
      } catch (err) {
        if (code(err) === 404) return `there is no ValidatingAdmissionPolicy ${name} (Kubernetes 1.30+)`;
        throw apiFailure(err, `read the ValidatingAdmissionPolicy ${name}`);
      }
      try {
        const binding = await admission.readValidatingAdmissionPolicyBinding({ name });
        if (binding.spec?.policyName !== name || !(binding.spec.validationActions ?? []).includes('Deny')) return `the ValidatingAdmissionPolicyBinding ${name} does not deny with policy ${name}`;
        if (binding.spec.matchResources?.namespaceSelector?.matchExpressions?.length || binding.spec.matchResources?.namespaceSelector?.matchLabels) return `the ValidatingAdmissionPolicyBinding ${name} applies to some namespaces only`;
      } catch (err) {
        if (code(err) === 404) return `there is no ValidatingAdmissionPolicyBinding ${name}`;
        throw apiFailure(err, `read the ValidatingAdmissionPolicyBinding ${name}`);
      }
      return undefined;
    },
    async deleteSession(session) {
      const { namespace, name, uid } = session.metadata;
      try {
        await custom.deleteNamespacedCustomObject({ ...sessionAddress(namespace, name), ...(uid ? { body: { preconditions: { uid } } } : {}) });
      } catch (err) {
        if (code(err) === 404 || code(err) === 409) return;
        throw apiFailure(err, `delete the Session ${namespace}/${name}`);
      }
    },
    async claimSession(session, by) {
      const { namespace, name } = session.metadata;
      try {
        // PUT with the resourceVersion read: the API server refuses it (409) if the object changed.
        await custom.replaceNamespacedCustomObjectStatus({
          ...sessionAddress(namespace, name),
          body: { ...session, status: { claimedBy: by, claimedAt: new Date().toISOString() } },
        });
        return true;
      } catch (err) {
        if (code(err) === 409) return false;
        throw apiFailure(err, `mark the Session ${namespace}/${name} used`);
      }
    },
  };
}
