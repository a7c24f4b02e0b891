/**
 * Resolving a Kubernetes target (`pod/NAME[/container/C]`, `deployment/NAME`, …) to one
 * Running and Ready pod, one of its containers, that container's id and the pod's node.
 * Errors name what exists, so a misspelt name is fixed at once.
 */
import type { V1Container, V1ObjectMeta, V1Pod } from '@kubernetes/client-node';
import { TsmError } from '../protocol/errors.js';
import { normalizeContainerId } from '../common/container-id.js';
import { httpStatus, kubeError, type Kube } from './kube.js';

export interface KubeTargetRequest {
  resource: string;
  name: string;
  /** From `pod/NAME/container/C` or --container. */
  container?: string | undefined;
  /** For daemonsets: the node whose pod to use. */
  node?: string | undefined;
}

export interface ResolvedKubeTarget {
  namespace: string;
  podName: string;
  pod: V1Pod;
  container: string;
  /** The bare container id (hex), as the agent looks it up in /proc/PID/cgroup. */
  containerId: string;
  node: string;
  /** Lines worth telling the user (which container was chosen and why). */
  notes: string[];
  /** `deployment/api → pod api-7d9f… (container app)` */
  description: string;
}

/** Containers that are known not to be the application: never chosen by default. */
export const KNOWN_SIDECARS = [
  'istio-proxy', 'istio-init', 'linkerd-proxy', 'linkerd-init', 'envoy', 'envoy-sidecar', 'consul-connect-envoy-sidecar',
  'cloudsql-proxy', 'cloud-sql-proxy', 'vault-agent', 'vault-agent-init', 'datadog-agent', 'fluent-bit', 'fluentd',
  'oauth2-proxy', 'kuma-sidecar', 'aws-xray-daemon', 'otel-collector', 'opentelemetry-collector',
];

const WORKLOADS: Record<string, { kind: string; plural: string }> = {
  deployment: { kind: 'Deployment', plural: 'deployments' },
  statefulset: { kind: 'StatefulSet', plural: 'statefulsets' },
  replicaset: { kind: 'ReplicaSet', plural: 'replicasets' },
  daemonset: { kind: 'DaemonSet', plural: 'daemonsets' },
  job: { kind: 'Job', plural: 'jobs' },
  rollout: { kind: 'Rollout', plural: 'rollouts' },
};

interface Selector { matchLabels?: Record<string, string>; matchExpressions?: Array<{ key: string; operator: string; values?: string[] }> }
interface Workload { metadata?: V1ObjectMeta; spec?: { selector?: Selector } }

function listed(names: string[]): string {
  if (names.length === 0) return '(none)';
  return names.length > 12 ? `${names.slice(0, 12).join(', ')}, … (${names.length} in all)` : names.join(', ');
}

/** A label selector in the query-string syntax, from a workload's spec.selector. */
export function selectorString(sel: Selector | undefined): string {
  const parts = Object.entries(sel?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of sel?.matchExpressions ?? []) {
    const values = (e.values ?? []).join(',');
    if (e.operator === 'In') parts.push(`${e.key} in (${values})`);
    else if (e.operator === 'NotIn') parts.push(`${e.key} notin (${values})`);
    else if (e.operator === 'Exists') parts.push(e.key);
    else if (e.operator === 'DoesNotExist') parts.push(`!${e.key}`);
  }
  return parts.join(',');
}

export function isPodReady(pod: V1Pod): boolean {
  return pod.status?.phase === 'Running' && (pod.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

function podState(pod: V1Pod): string {
  const phase = pod.status?.phase ?? 'Unknown';
  return phase === 'Running' && !isPodReady(pod) ? 'Running, not ready' : phase;
}

/**
 * Which container to work against: the one asked for; else the pod's
 * `kubectl.kubernetes.io/default-container`; else the only one; else the first that is not
 * a known sidecar (with a note).
 */
export function chooseContainer(pod: V1Pod, asked: string | undefined): { name: string; note: string | undefined } {
  const containers: V1Container[] = pod.spec?.containers ?? [];
  const names = containers.map((c) => c.name);
  const podName = pod.metadata?.name ?? '?';
  if (asked !== undefined) {
    if (!names.includes(asked)) {
      throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', `pod '${podName}' has no container '${asked}'; its containers: ${listed(names)}`, { hint: 'pick one of those with --container' });
    }
    return { name: asked, note: undefined };
  }
  const annotated = pod.metadata?.annotations?.['kubectl.kubernetes.io/default-container'];
  if (annotated && names.includes(annotated)) return { name: annotated, note: names.length > 1 ? `using container '${annotated}' of pod ${podName} (its kubectl.kubernetes.io/default-container annotation)` : undefined };
  if (names.length === 1) return { name: names[0] as string, note: undefined };
  const app = names.find((n) => !KNOWN_SIDECARS.includes(n)) ?? names[0];
  if (app === undefined) throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', `pod '${podName}' has no containers`);
  const others = names.filter((n) => n !== app);
  return { name: app, note: `pod ${podName} has ${names.length} containers; using '${app}' (others: ${others.join(', ')}; choose with --container)` };
}

async function listNames(kube: Kube, resource: string, namespace: string): Promise<string[]> {
  try {
    switch (resource) {
      case 'pod': return (await kube.core.listNamespacedPod({ namespace })).items.map((p) => p.metadata?.name ?? '');
      case 'deployment': return (await kube.apps.listNamespacedDeployment({ namespace })).items.map((p) => p.metadata?.name ?? '');
      case 'statefulset': return (await kube.apps.listNamespacedStatefulSet({ namespace })).items.map((p) => p.metadata?.name ?? '');
      case 'replicaset': return (await kube.apps.listNamespacedReplicaSet({ namespace })).items.map((p) => p.metadata?.name ?? '');
      case 'daemonset': return (await kube.apps.listNamespacedDaemonSet({ namespace })).items.map((p) => p.metadata?.name ?? '');
      case 'job': return (await kube.batch.listNamespacedJob({ namespace })).items.map((p) => p.metadata?.name ?? '');
      case 'rollout': {
        const list = await kube.custom.listNamespacedCustomObject({ group: 'argoproj.io', version: 'v1alpha1', namespace, plural: 'rollouts' }) as { items?: Workload[] };
        return (list.items ?? []).map((p) => p.metadata?.name ?? '');
      }
      default: return [];
    }
  } catch {
    return [];
  }
}

async function readWorkload(kube: Kube, resource: string, name: string, namespace: string): Promise<Workload> {
  switch (resource) {
    case 'deployment': return kube.apps.readNamespacedDeployment({ name, namespace });
    case 'statefulset': return kube.apps.readNamespacedStatefulSet({ name, namespace });
    case 'replicaset': return kube.apps.readNamespacedReplicaSet({ name, namespace });
    case 'daemonset': return kube.apps.readNamespacedDaemonSet({ name, namespace });
    case 'job': return kube.batch.readNamespacedJob({ name, namespace });
    case 'rollout': return kube.custom.getNamespacedCustomObject({ group: 'argoproj.io', version: 'v1alpha1', namespace, plural: 'rollouts', name }) as Promise<Workload>;
    default: throw new TsmError('TSM_ERR_USAGE', `unknown target kind "${resource}"`);
  }
}

/** Whether the cluster serves argoproj.io/v1alpha1 rollouts (Argo Rollouts installed). */
async function rolloutsServed(kube: Kube): Promise<boolean> {
  try {
    const groups = await kube.apis.getAPIVersions();
    return groups.groups.some((g) => g.name === 'argoproj.io' && g.versions.some((v) => v.version === 'v1alpha1'));
  } catch (err) {
    if (httpStatus(err) === 404) return false;
    throw kubeError(err, 'looking up the Argo Rollouts API', kube);
  }
}

/** The pods a workload owns (following Deployment/Rollout → ReplicaSet → Pod). */
async function ownedPods(kube: Kube, resource: string, workload: Workload, namespace: string): Promise<V1Pod[]> {
  const uid = workload.metadata?.uid ?? '';
  const labelSelector = selectorString(workload.spec?.selector);
  let owners = new Set([uid]);
  if (resource === 'deployment' || resource === 'rollout') {
    const sets = await kube.apps.listNamespacedReplicaSet({ namespace, labelSelector });
    owners = new Set(sets.items.filter((rs) => (rs.metadata?.ownerReferences ?? []).some((o) => o.uid === uid)).map((rs) => rs.metadata?.uid ?? ''));
  }
  const pods = await kube.core.listNamespacedPod({ namespace, labelSelector });
  return pods.items
    .filter((p) => (p.metadata?.ownerReferences ?? []).some((o) => owners.has(o.uid)))
    .sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''));
}

export async function resolveKubeTarget(kube: Kube, req: KubeTargetRequest): Promise<ResolvedKubeTarget> {
  const namespace = kube.namespace;
  const { resource, name } = req;
  const notes: string[] = [];
  let pod: V1Pod;
  if (resource === 'pod') {
    try {
      pod = await kube.core.readNamespacedPod({ name, namespace });
    } catch (err) {
      if (httpStatus(err) !== 404) throw kubeError(err, `reading pod ${name} in namespace ${namespace}`, kube);
      throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', `pod '${name}' not found in namespace '${namespace}'; pods there: ${listed(await listNames(kube, 'pod', namespace))}`,
        { hint: 'check the name and the namespace (-n); `tsmirror targets -n NAMESPACE` lists what can be targeted' });
    }
    if (!isPodReady(pod)) {
      throw new TsmError('TSM_ERR_NO_READY_POD', `pod '${name}' in namespace '${namespace}' is not running and ready (${podState(pod)})`, { hint: 'wait until it is ready (kubectl get pod), or target its workload' });
    }
  } else {
    const w = WORKLOADS[resource];
    if (!w) throw new TsmError('TSM_ERR_USAGE', `unknown target kind "${resource}"`);
    if (resource === 'rollout' && !(await rolloutsServed(kube))) {
      throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', 'this cluster has no Argo Rollouts (the argoproj.io/v1alpha1 rollouts resource does not exist)', { hint: 'target the rollout\'s pods with pod/NAME, or its ReplicaSet with rs/NAME' });
    }
    let workload: Workload;
    try {
      workload = await readWorkload(kube, resource, name, namespace);
    } catch (err) {
      if (httpStatus(err) !== 404) throw kubeError(err, `reading ${resource} ${name} in namespace ${namespace}`, kube);
      throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', `${resource} '${name}' not found in namespace '${namespace}'; ${w.plural} there: ${listed(await listNames(kube, resource, namespace))}`,
        { hint: 'check the name and the namespace (-n); `tsmirror targets -n NAMESPACE` lists what can be targeted' });
    }
    let pods = await ownedPods(kube, resource, workload, namespace).catch((err: unknown) => {
      throw kubeError(err, `listing the pods of ${resource} ${name}`, kube);
    });
    if (req.node !== undefined) {
      const onNode = pods.filter((p) => p.spec?.nodeName === req.node);
      if (onNode.length === 0) {
        throw new TsmError('TSM_ERR_NO_READY_POD', `${resource} '${name}' in namespace '${namespace}' has no pod on node '${req.node}'; its pods run on: ${listed([...new Set(pods.map((p) => p.spec?.nodeName ?? '?'))])}`, { hint: 'pick one of those nodes with --node' });
      }
      pods = onNode;
    }
    const ready = pods.filter(isPodReady);
    const chosen = ready[0];
    if (!chosen) {
      const states = pods.map((p) => `${p.metadata?.name ?? '?'}: ${podState(p)}`);
      throw new TsmError('TSM_ERR_NO_READY_POD', `${resource} '${name}' in namespace '${namespace}' has no running and ready pod (${pods.length === 0 ? 'it has no pods' : states.join('; ')})`,
        { hint: `wait until a pod is ready (kubectl get pods -n ${namespace}), or target a pod directly with pod/NAME` });
    }
    if (resource === 'daemonset' && req.node === undefined && ready.length > 1) notes.push(`daemonset ${name} has ${ready.length} ready pods; using the one on node ${chosen.spec?.nodeName ?? '?'} (choose with --node)`);
    pod = chosen;
  }
  const podName = pod.metadata?.name ?? name;
  const { name: container, note } = chooseContainer(pod, req.container);
  if (note) notes.push(note);
  const status = (pod.status?.containerStatuses ?? []).find((s) => s.name === container);
  if (!status?.containerID) {
    throw new TsmError('TSM_ERR_NO_READY_POD', `container '${container}' of pod '${podName}' has no container id yet (it has not started)`, { hint: 'wait until the container runs (kubectl describe pod)' });
  }
  const node = pod.spec?.nodeName;
  if (!node) throw new TsmError('TSM_ERR_NO_READY_POD', `pod '${podName}' is not scheduled on a node yet`);
  return {
    namespace, podName, pod, container, node, notes,
    containerId: normalizeContainerId(status.containerID),
    description: `${resource === 'pod' ? '' : `${resource}/${name} → `}pod ${podName} (container ${container}, node ${node})`,
  };
}
