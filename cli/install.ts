/**
 * `tsmirror install` and `tsmirror uninstall`: the agent DaemonSet and what it needs,
 * applied with server-side apply (field manager `tsmirror`), then a wait until an agent
 * is ready on every node, with progress.
 */
import { PatchStrategy, type KubernetesObject } from '@kubernetes/client-node';
import { packageVersion } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';
import { httpStatus, kubeError, loadKube, type Kube, type KubeFlags } from './kube.js';
import { AGENT_NAMESPACE, listAgentPods } from './agent-pod.js';
import { POLICY_CONFIGMAP, allManifests, defaultImage, toYamlDocuments, type Manifest } from './manifests.js';

export interface InstallFlags extends KubeFlags {
  image?: string;
  dryRun?: boolean;
  wait: string;
  quiet?: boolean;
}

function say(flags: { quiet?: boolean }, line: string): void {
  if (!flags.quiet) process.stderr.write(`tsmirror: ${line}\n`);
}

const describe = (m: Manifest): string => `${m.kind} ${m.metadata.namespace ? `${m.metadata.namespace}/` : ''}${m.metadata.name}`;

export async function runInstall(flags: InstallFlags): Promise<void> {
  const namespace = flags.namespace ?? AGENT_NAMESPACE;
  const objects = allManifests({ namespace, image: flags.image ?? defaultImage(), version: packageVersion });
  if (flags.dryRun) {
    process.stdout.write(toYamlDocuments(objects));
    return;
  }
  const waitSeconds = Number(flags.wait);
  if (!Number.isFinite(waitSeconds) || waitSeconds < 0) throw new TsmError('TSM_ERR_USAGE', `--wait must be a number of seconds, not "${flags.wait}"`);
  const kube = loadKube({ ...flags, namespace });
  say(flags, `installing the tsmirror agent ${packageVersion} (image ${flags.image ?? defaultImage()}) into namespace ${namespace} of ${kube.server} (context ${kube.context})`);
  for (const object of objects) {
    const spec = object as unknown as KubernetesObject;
    try {
      if (object.kind === 'ConfigMap' && object.metadata.name === POLICY_CONFIGMAP) {
        // The policy is the admin's to edit: created once, never overwritten by a re-install.
        try {
          await kube.objects.read({ apiVersion: object.apiVersion, kind: object.kind, metadata: { name: object.metadata.name, namespace } });
          say(flags, `kept ${describe(object)} (existing policy)`);
          continue;
        } catch (err) {
          if (httpStatus(err) !== 404) throw err;
        }
      }
      await kube.objects.patch(spec, undefined, undefined, 'tsmirror', true, PatchStrategy.ServerSideApply);
      say(flags, `applied ${describe(object)}`);
    } catch (err) {
      throw kubeError(err, `applying ${describe(object)}`, kube);
    }
  }
  if (waitSeconds === 0) return;
  await waitForAgents(kube, namespace, waitSeconds * 1000, flags);
}

async function waitForAgents(kube: Kube, namespace: string, timeoutMs: number, flags: { quiet?: boolean }): Promise<void> {
  const started = Date.now();
  let last = '';
  for (;;) {
    const ds = await kube.apps.readNamespacedDaemonSet({ name: 'tsmirror-agent', namespace }).catch((err: unknown) => {
      throw kubeError(err, 'reading the agent DaemonSet', kube);
    });
    const desired = ds.status?.desiredNumberScheduled ?? 0;
    const ready = ds.status?.numberReady ?? 0;
    const updated = ds.status?.updatedNumberScheduled ?? 0;
    const line = `agents ready: ${ready}/${desired} node(s)${updated < desired ? `, ${updated} updated` : ''}`;
    if (line !== last) say(flags, line);
    last = line;
    if (desired > 0 && ready >= desired && updated >= desired) {
      say(flags, `the agent is ready on every node (${desired}); developers can now run \`tsmirror exec --target …\``);
      return;
    }
    if (Date.now() - started > timeoutMs) {
      const pods = await listAgentPods(kube, namespace).catch(() => []);
      const notReady = pods.filter((p) => !p.ready).map((p) => `${p.name} on ${p.node}: ${p.pod.status?.phase ?? 'Unknown'}`);
      throw new TsmError('TSM_ERR_NO_AGENT', `the agent is not ready on every node after ${Math.round(timeoutMs / 1000)} s (${ready}/${desired} ready${notReady.length ? `; not ready: ${notReady.join(', ')}` : ''})`,
        { hint: `look at the agent pods: kubectl -n ${namespace} get pods -l app.kubernetes.io/name=tsmirror-agent; kubectl describe them for image pull or probe failures` });
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

export async function runUninstall(flags: KubeFlags & { quiet?: boolean }): Promise<void> {
  const namespace = flags.namespace ?? AGENT_NAMESPACE;
  const kube = loadKube({ ...flags, namespace });
  const objects = allManifests({ namespace, image: defaultImage(), version: packageVersion }).reverse();
  for (const object of objects) {
    try {
      await kube.objects.delete({ apiVersion: object.apiVersion, kind: object.kind, metadata: { name: object.metadata.name, ...(object.metadata.namespace ? { namespace } : {}) } } as KubernetesObject);
      say(flags, `deleted ${describe(object)}`);
    } catch (err) {
      if (httpStatus(err) === 404) continue;
      throw kubeError(err, `deleting ${describe(object)}`, kube);
    }
  }
  say(flags, `the tsmirror agent is uninstalled from ${kube.server}`);
}
