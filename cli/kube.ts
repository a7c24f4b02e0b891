/**
 * The CLI's Kubernetes connection: the kubeconfig (file, context, default namespace) and
 * the typed API clients of @kubernetes/client-node, plus the translation of its errors
 * into TsmErrors that say what failed and what to do.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import {
  ApisApi, AppsV1Api, AuthorizationV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, KubernetesObjectApi, VersionApi,
} from '@kubernetes/client-node';
import { TsmError } from '../protocol/errors.js';

export interface KubeFlags {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
}

export interface Kube {
  kc: KubeConfig;
  /** The namespace to use: -n, else the context's, else `default`. */
  namespace: string;
  context: string;
  server: string;
  /** Where the configuration came from (a file path, or "in-cluster"). */
  source: string;
  core: CoreV1Api;
  apps: AppsV1Api;
  batch: BatchV1Api;
  custom: CustomObjectsApi;
  authz: AuthorizationV1Api;
  version: VersionApi;
  apis: ApisApi;
  objects: KubernetesObjectApi;
}

/** Loads the kubeconfig the way kubectl does: --kubeconfig, else $KUBECONFIG, else ~/.kube/config. */
export function loadKube(flags: KubeFlags = {}): Kube {
  const kc = new KubeConfig();
  let source: string;
  if (flags.kubeconfig) {
    if (!existsSync(flags.kubeconfig)) throw new TsmError('TSM_ERR_KUBE_CONFIG', `the kubeconfig ${flags.kubeconfig} does not exist`, { hint: 'pass the path of an existing kubeconfig to --kubeconfig' });
    source = flags.kubeconfig;
    wrapLoad(() => kc.loadFromFile(flags.kubeconfig as string), source);
  } else if (process.env.KUBECONFIG) {
    const files = process.env.KUBECONFIG.split(delimiter).filter((f) => f && existsSync(f));
    if (files.length === 0) throw new TsmError('TSM_ERR_KUBE_CONFIG', `KUBECONFIG names no existing file (${process.env.KUBECONFIG})`, { hint: 'fix KUBECONFIG or pass --kubeconfig' });
    source = files.join(delimiter);
    wrapLoad(() => kc.loadFromDefault(), source);
  } else if (existsSync(join(homedir(), '.kube', 'config'))) {
    source = join(homedir(), '.kube', 'config');
    wrapLoad(() => kc.loadFromFile(source), source);
  } else if (process.env.KUBERNETES_SERVICE_HOST) {
    source = 'in-cluster';
    kc.loadFromCluster();
  } else {
    throw new TsmError('TSM_ERR_KUBE_CONFIG', 'no kubeconfig found (no --kubeconfig, no KUBECONFIG, no ~/.kube/config)',
      { hint: 'point tsmirror at your cluster with --kubeconfig PATH (or use --agent ws://HOST:PORT with a pid/ or container/ target)' });
  }
  if (flags.context) {
    const names = kc.getContexts().map((c) => c.name);
    if (!names.includes(flags.context)) {
      throw new TsmError('TSM_ERR_KUBE_CONFIG', `context "${flags.context}" is not in ${source}; contexts there: ${names.join(', ') || '(none)'}`, { hint: 'pick one of those with --context' });
    }
    kc.setCurrentContext(flags.context);
  }
  const context = kc.getContextObject(kc.getCurrentContext());
  const cluster = kc.getCurrentCluster();
  if (!context || !cluster) {
    throw new TsmError('TSM_ERR_KUBE_CONFIG', `the kubeconfig ${source} has no current context`, { hint: 'select one with --context NAME (or `kubectl config use-context NAME`)' });
  }
  return {
    kc,
    namespace: flags.namespace ?? context.namespace ?? 'default',
    context: context.name,
    server: cluster.server,
    source,
    core: kc.makeApiClient(CoreV1Api),
    apps: kc.makeApiClient(AppsV1Api),
    batch: kc.makeApiClient(BatchV1Api),
    custom: kc.makeApiClient(CustomObjectsApi),
    authz: kc.makeApiClient(AuthorizationV1Api),
    version: kc.makeApiClient(VersionApi),
    apis: kc.makeApiClient(ApisApi),
    objects: KubernetesObjectApi.makeApiClient(kc),
  };
}

function wrapLoad(load: () => void, source: string): void {
  try {
    load();
  } catch (err) {
    throw new TsmError('TSM_ERR_KUBE_CONFIG', `cannot read the kubeconfig ${source}: ${err instanceof Error ? err.message : String(err)}`, { cause: err, hint: 'check that the file is a valid kubeconfig (`kubectl config view`)' });
  }
}

/** The HTTP status of a client-node error (0 when the request never got an answer). */
export function httpStatus(err: unknown): number {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : 0;
}

/** The message a Kubernetes Status body carries. */
export function statusMessage(err: unknown): string {
  let body = (err as { body?: unknown } | null)?.body;
  if (typeof body === 'string') {
    const text = body;
    try {
      body = JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  }
  const message = (body as { message?: unknown } | null)?.message;
  if (typeof message === 'string') return message;
  return err instanceof Error ? err.message.split('\n')[0] ?? err.message : String(err);
}

/** Turns a client-node failure into a TsmError naming what was being done. */
export function kubeError(err: unknown, doing: string, kube: Kube): TsmError {
  if (err instanceof TsmError) return err;
  const code = httpStatus(err);
  if (code === 401) {
    return new TsmError('TSM_ERR_KUBE_API', `the API server ${kube.server} rejected your credentials while ${doing}`, { cause: err, hint: `refresh your login for context "${kube.context}" (kubectl get pods should work)` });
  }
  if (code === 403) {
    return new TsmError('TSM_ERR_KUBE_FORBIDDEN', `forbidden while ${doing}: ${statusMessage(err)}`, { cause: err, hint: 'ask a cluster admin for the RBAC tsmirror needs (see docs/install.md, ClusterRole tsmirror-user), or check with `tsmirror doctor`' });
  }
  if (code === 0) {
    const causeCode = (err as { cause?: { code?: unknown } } | null)?.cause?.code;
    const why = typeof causeCode === 'string' ? causeCode : err instanceof Error ? err.message : String(err);
    return new TsmError('TSM_ERR_KUBE_API', `cannot reach the API server ${kube.server} while ${doing}: ${why}`, { cause: err, hint: `check the cluster address of context "${kube.context}" and your network (kubectl cluster-info)` });
  }
  return new TsmError('TSM_ERR_KUBE_API', `the API server answered ${code} while ${doing}: ${statusMessage(err)}`, { cause: err });
}
