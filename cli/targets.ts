/**
 * `tsmirror targets [-n NS] [-A]`: what can be targeted — workloads and the pods that no
 * controller owns — with how many of their pods are ready.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { kubeError, loadKube, type Kube, type KubeFlags } from './kube.js';
import { isPodReady } from './kube-target.js';
import { table } from './status.js';

export interface TargetRow { namespace: string; target: string; ready: string; nodes: string }

async function rolloutsServed(kube: Kube): Promise<boolean> {
  try {
    const groups = await kube.apis.getAPIVersions();
    return groups.groups.some((g) => g.name === 'argoproj.io');
  } catch {
    return false;
  }
}

export async function listTargets(kube: Kube, namespace: string | undefined): Promise<TargetRow[]> {
  const ns = namespace === undefined ? {} : { namespace };
  const rows: TargetRow[] = [];
  const nsOf = (m: { metadata?: { namespace?: string } }): string => m.metadata?.namespace ?? '';
  const pods: V1Pod[] = namespace === undefined ? (await kube.core.listPodForAllNamespaces()).items : (await kube.core.listNamespacedPod({ namespace })).items;
  // Which pods each owner (by uid) has, following ReplicaSet → Deployment/Rollout.
  const rsOwner = new Map<string, string>();
  const replicaSets = namespace === undefined ? (await kube.apps.listReplicaSetForAllNamespaces()).items : (await kube.apps.listNamespacedReplicaSet({ namespace })).items;
  for (const rs of replicaSets) {
    const owner = rs.metadata?.ownerReferences?.find((o) => o.controller);
    if (owner) rsOwner.set(rs.metadata?.uid ?? '', owner.uid);
  }
  const podsOf = new Map<string, V1Pod[]>();
  for (const p of pods) {
    const owner = p.metadata?.ownerReferences?.find((o) => o.controller);
    if (!owner) continue;
    for (const uid of [owner.uid, rsOwner.get(owner.uid)]) {
      if (uid) podsOf.set(uid, [...(podsOf.get(uid) ?? []), p]);
    }
  }
  const add = (kind: string, items: Array<{ metadata?: { name?: string; namespace?: string; uid?: string } }>): void => {
    for (const w of items) {
      const owned = podsOf.get(w.metadata?.uid ?? '') ?? [];
      rows.push({
        namespace: nsOf(w), target: `${kind}/${w.metadata?.name ?? '?'}`,
        ready: `${owned.filter(isPodReady).length}/${owned.length}`,
        nodes: [...new Set(owned.map((p) => p.spec?.nodeName ?? '?'))].join(','),
      });
    }
  };
  add('deployment', (await (namespace === undefined ? kube.apps.listDeploymentForAllNamespaces() : kube.apps.listNamespacedDeployment(ns as { namespace: string }))).items);
  add('statefulset', (await (namespace === undefined ? kube.apps.listStatefulSetForAllNamespaces() : kube.apps.listNamespacedStatefulSet(ns as { namespace: string }))).items);
  add('daemonset', (await (namespace === undefined ? kube.apps.listDaemonSetForAllNamespaces() : kube.apps.listNamespacedDaemonSet(ns as { namespace: string }))).items);
  add('job', (await (namespace === undefined ? kube.batch.listJobForAllNamespaces() : kube.batch.listNamespacedJob(ns as { namespace: string }))).items);
  if (await rolloutsServed(kube)) {
    const list = (namespace === undefined
      ? await kube.custom.listClusterCustomObject({ group: 'argoproj.io', version: 'v1alpha1', plural: 'rollouts' })
      : await kube.custom.listNamespacedCustomObject({ group: 'argoproj.io', version: 'v1alpha1', namespace, plural: 'rollouts' })) as { items?: Array<{ metadata?: { name?: string; namespace?: string; uid?: string } }> };
    add('rollout', list.items ?? []);
  }
  // ReplicaSets and pods that no workload owns are targets of their own.
  add('replicaset', replicaSets.filter((rs) => !rs.metadata?.ownerReferences?.some((o) => o.controller)));
  for (const p of pods.filter((x) => !x.metadata?.ownerReferences?.some((o) => o.controller))) {
    rows.push({ namespace: nsOf(p), target: `pod/${p.metadata?.name ?? '?'}`, ready: isPodReady(p) ? '1/1' : '0/1', nodes: p.spec?.nodeName ?? '?' });
  }
  return rows;
}

export async function runTargets(flags: KubeFlags & { allNamespaces?: boolean; json?: boolean }): Promise<void> {
  const kube = loadKube(flags);
  const namespace = flags.allNamespaces ? undefined : kube.namespace;
  let rows: TargetRow[];
  try {
    rows = await listTargets(kube, namespace);
  } catch (err) {
    throw kubeError(err, `listing what can be targeted in ${namespace === undefined ? 'all namespaces' : `namespace ${namespace}`}`, kube);
  }
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  if (rows.length === 0) {
    process.stdout.write(`nothing to target in namespace ${namespace ?? '(all)'}\n`);
    return;
  }
  const header = namespace === undefined ? [['NAMESPACE', 'TARGET', 'READY', 'NODES']] : [['TARGET', 'READY', 'NODES']];
  process.stdout.write(table([...header, ...rows.map((r) => (namespace === undefined ? [r.namespace, r.target, r.ready, r.nodes] : [r.target, r.ready, r.nodes]))]));
  process.stdout.write(`use one with: tsmirror exec ${namespace === undefined ? '-n NAMESPACE ' : `-n ${namespace} `}--target ${rows[0]?.target ?? 'deployment/NAME'} -- COMMAND\n`);
}
