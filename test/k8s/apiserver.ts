/**
 * An in-memory Kubernetes API server: a TEST FIXTURE. Real HTTP on 127.0.0.1, the JSON
 * shapes of the real API (v1 Pod with containerStatuses, apps/v1 workloads owning pods,
 * batch/v1 Job, argoproj.io Rollout when registered), discovery, list with label and field
 * selectors, server-side apply, SelfSubjectAccessReview / TokenReview /
 * SubjectAccessReview with answers a test sets, and the WebSocket port-forward
 * subprotocol (`v4.channel.k8s.io`: per port a data and an error channel, the first frame
 * of each carrying the port as 2 bytes little-endian), so @kubernetes/client-node talks to
 * it exactly as to a cluster.
 *
 * It serves the harness's real pods (their IPs and container ids) and agent pods whose
 * port-forward reaches a real `tsmirror agent` listening on 127.0.0.1.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import type { Pod as HarnessPod } from '../harness/harness.js';
import { evaluateValidations } from './session-admission.js';

type Obj = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string>; ownerReferences?: OwnerRef[]; resourceVersion?: string; [k: string]: unknown };
};
interface OwnerRef { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }

interface ResourceType { group: string; version: string; kind: string; plural: string; namespaced: boolean; verbs: string[]; optional?: boolean }

const CRUD = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];
const RESOURCE_TYPES: ResourceType[] = [
  { group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true, verbs: CRUD },
  { group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false, verbs: CRUD },
  { group: '', version: 'v1', kind: 'Node', plural: 'nodes', namespaced: false, verbs: CRUD },
  { group: '', version: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true, verbs: CRUD },
  { group: '', version: 'v1', kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true, verbs: CRUD },
  { group: 'apps', version: 'v1', kind: 'Deployment', plural: 'deployments', namespaced: true, verbs: CRUD },
  { group: 'apps', version: 'v1', kind: 'ReplicaSet', plural: 'replicasets', namespaced: true, verbs: CRUD },
  { group: 'apps', version: 'v1', kind: 'StatefulSet', plural: 'statefulsets', namespaced: true, verbs: CRUD },
  { group: 'apps', version: 'v1', kind: 'DaemonSet', plural: 'daemonsets', namespaced: true, verbs: CRUD },
  { group: 'batch', version: 'v1', kind: 'Job', plural: 'jobs', namespaced: true, verbs: CRUD },
  { group: 'rbac.authorization.k8s.io', version: 'v1', kind: 'ClusterRole', plural: 'clusterroles', namespaced: false, verbs: CRUD },
  { group: 'rbac.authorization.k8s.io', version: 'v1', kind: 'ClusterRoleBinding', plural: 'clusterrolebindings', namespaced: false, verbs: CRUD },
  { group: 'rbac.authorization.k8s.io', version: 'v1', kind: 'Role', plural: 'roles', namespaced: true, verbs: CRUD },
  { group: 'rbac.authorization.k8s.io', version: 'v1', kind: 'RoleBinding', plural: 'rolebindings', namespaced: true, verbs: CRUD },
  { group: 'authorization.k8s.io', version: 'v1', kind: 'SelfSubjectAccessReview', plural: 'selfsubjectaccessreviews', namespaced: false, verbs: ['create'] },
  { group: 'authorization.k8s.io', version: 'v1', kind: 'SubjectAccessReview', plural: 'subjectaccessreviews', namespaced: false, verbs: ['create'] },
  { group: 'authentication.k8s.io', version: 'v1', kind: 'TokenReview', plural: 'tokenreviews', namespaced: false, verbs: ['create'] },
  { group: 'authentication.k8s.io', version: 'v1', kind: 'SelfSubjectReview', plural: 'selfsubjectreviews', namespaced: false, verbs: ['create'] },
  { group: 'argoproj.io', version: 'v1alpha1', kind: 'Rollout', plural: 'rollouts', namespaced: true, verbs: CRUD, optional: true },
  { group: 'apiextensions.k8s.io', version: 'v1', kind: 'CustomResourceDefinition', plural: 'customresourcedefinitions', namespaced: false, verbs: CRUD },
  { group: 'admissionregistration.k8s.io', version: 'v1', kind: 'ValidatingAdmissionPolicy', plural: 'validatingadmissionpolicies', namespaced: false, verbs: CRUD },
  { group: 'admissionregistration.k8s.io', version: 'v1', kind: 'ValidatingAdmissionPolicyBinding', plural: 'validatingadmissionpolicybindings', namespaced: false, verbs: CRUD },
  // Served as if its CRD were installed; creates and updates go through the shipped admission policy.
  { group: 'tsmirror.dev', version: 'v1alpha1', kind: 'Session', plural: 'sessions', namespaced: true, verbs: CRUD },
];

export interface User { username: string; groups: string[]; uid?: string }
/** What a request (or an access review) asks to do. */
export interface Access { user: User; verb: string; resource: string; subresource: string; namespace: string; group: string; name: string }

export interface FakeContainer {
  name: string;
  /** 64-hex container id (a harness pod's), or a made-up one for containers without a process. */
  id?: string;
  runtime?: 'containerd' | 'cri-o' | 'docker';
  ready?: boolean;
}

export interface FakePodSpec {
  name: string;
  namespace: string;
  node?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  containers: FakeContainer[];
  ip?: string;
  phase?: 'Running' | 'Pending' | 'Succeeded' | 'Failed';
  ready?: boolean;
  owner?: OwnerRef;
  /** Where a port-forward to a port of this pod connects (a real process on loopback). */
  forwards?: Record<number, { host: string; port: number }>;
}

export interface WorkloadPod {
  /** The harness pod backing this Kubernetes pod (its IP and container id). */
  pod?: HarnessPod;
  name?: string;
  ready?: boolean;
  node?: string;
  containers?: FakeContainer[];
  annotations?: Record<string, string>;
}

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/** Kubernetes label selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`. */
export function matchesLabelSelector(selector: string, labels: Record<string, string>): boolean {
  const terms = selector.match(/[^,(]+(\([^)]*\))?/g) ?? [];
  return terms.every((raw) => {
    const term = raw.trim();
    if (term === '') return true;
    let m = /^(\S+?)\s+(in|notin)\s+\((.*)\)$/.exec(term);
    if (m) {
      const values = (m[3] ?? '').split(',').map((v) => v.trim());
      const has = Object.hasOwn(labels, m[1] ?? '') && values.includes(labels[m[1] ?? ''] ?? '');
      return m[2] === 'in' ? has : !has;
    }
    m = /^([^!=]+?)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (m) {
      const v = labels[(m[1] ?? '').trim()];
      return m[2] === '!=' ? v !== m[3] : v === m[3];
    }
    if (term.startsWith('!')) return !Object.hasOwn(labels, term.slice(1));
    return Object.hasOwn(labels, term);
  });
}

function fieldValue(obj: Obj, path: string): string | undefined {
  let v: unknown = obj;
  for (const part of path.split('.')) v = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[part] : undefined;
  return v === undefined ? undefined : String(v);
}

export function matchesFieldSelector(selector: string, obj: Obj): boolean {
  return selector.split(',').filter(Boolean).every((term) => {
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(term);
    if (!m) return false;
    const v = fieldValue(obj, m[1] ?? '') ?? '';
    return m[2] === '!=' ? v !== m[3] : v === m[3];
  });
}

export interface FakeApiServerOptions {
  /** Tokens the server accepts, and whose they are. */
  users?: Record<string, User>;
}

export class FakeApiServer {
  readonly server: Server;
  url = '';
  /** token → user; requests with another token get 401. */
  readonly users: Map<string, User>;
  /** Decides every request and every access review. Default: everything allowed. */
  authorize: (a: Access) => boolean = () => true;
  /** Answers TokenReviews. Default: the users map. */
  reviewToken: (token: string) => User | undefined = (t) => this.users.get(t);
  /** Every request: method, path (without query), user. */
  readonly requests: Array<{ method: string; path: string; query: string; user: string; contentType: string }> = [];
  /** Called after every write through the API (create, apply, update): a test plays controller here. */
  afterWrite: (obj: Obj) => void = () => undefined;
  readonly #objects = new Map<string, Obj>();
  readonly #nodes = new Set<string>();
  readonly #wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has('v4.channel.k8s.io') ? 'v4.channel.k8s.io' : protocols.has('channel.k8s.io') ? 'channel.k8s.io' : false) });
  readonly #forwards = new Set<{ ws: WebSocket; sockets: net.Socket[] }>();
  #rolloutsRegistered = false;
  #version = 1;

  private constructor(options: FakeApiServerOptions) {
    this.users = new Map(Object.entries(options.users ?? { 'admin-token': { username: 'admin', groups: ['system:masters', 'system:authenticated'] } }));
    this.server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => this.#send(res, 500, status(500, 'InternalError', String(err))));
    });
    this.server.on('upgrade', (req, socket, head) => this.#upgrade(req, socket as net.Socket, head));
  }

  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const api = new FakeApiServer(options);
    await new Promise<void>((resolve) => api.server.listen(0, '127.0.0.1', resolve));
    const addr = api.server.address() as net.AddressInfo;
    api.url = `http://127.0.0.1:${addr.port}`;
    return api;
  }

  async close(): Promise<void> {
    this.dropPortForwards();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Writes a kubeconfig pointing at this server; returns its path. */
  writeKubeconfig(dir: string, opts: { token?: string; namespace?: string; file?: string; context?: string } = {}): string {
    const context = opts.context ?? 'fake';
    const config = {
      apiVersion: 'v1', kind: 'Config', 'current-context': context,
      // client-node refuses plain HTTP unless TLS verification is (nominally) skipped.
      clusters: [{ name: 'fake-cluster', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'fake-user', user: { token: opts.token ?? 'admin-token' } }],
      contexts: [{ name: context, context: { cluster: 'fake-cluster', user: 'fake-user', ...(opts.namespace ? { namespace: opts.namespace } : {}) } }],
    };
    const path = join(dir, opts.file ?? 'kubeconfig');
    writeFileSync(path, toYaml(config), { mode: 0o600 });
    return path;
  }

  /** Makes `argoproj.io/v1alpha1` rollouts appear in discovery. */
  registerRollouts(): void {
    this.#rolloutsRegistered = true;
  }

  addNode(name: string): void {
    this.#nodes.add(name);
    this.put({ apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'kubernetes.io/hostname': name } }, status: { conditions: [{ type: 'Ready', status: 'True' }] } });
  }

  /** Stores (or replaces) an object as-is, filling uid, resourceVersion and timestamps. */
  put(obj: Obj): Obj {
    const type = this.#typeOf(obj.apiVersion, obj.kind);
    if (!type) throw new Error(`fixture: unknown kind ${obj.apiVersion} ${obj.kind}`);
    const key = this.#key(type, obj.metadata.namespace ?? '', obj.metadata.name);
    const old = this.#objects.get(key);
    obj.metadata.uid ??= old?.metadata.uid ?? randomUUID();
    obj.metadata.resourceVersion = String(++this.#version);
    obj.metadata.creationTimestamp ??= old?.metadata.creationTimestamp ?? new Date().toISOString();
    if (type.kind === 'Namespace' || !type.namespaced) delete obj.metadata.namespace;
    this.#objects.set(key, obj);
    return obj;
  }

  get(apiVersion: string, kind: string, namespace: string, name: string): Obj | undefined {
    const type = this.#typeOf(apiVersion, kind);
    return type ? this.#objects.get(this.#key(type, namespace, name)) : undefined;
  }

  /** Every stored object of a kind, in all namespaces. */
  list(apiVersion: string, kind: string): Obj[] {
    const type = this.#typeOf(apiVersion, kind);
    return [...this.#objects.values()].filter((o) => type !== undefined && this.#typeOf(o.apiVersion, o.kind) === type);
  }

  delete(apiVersion: string, kind: string, namespace: string, name: string): void {
    const type = this.#typeOf(apiVersion, kind);
    if (type) this.#objects.delete(this.#key(type, namespace, name));
  }

  namespace(name: string): void {
    if (!this.get('v1', 'Namespace', '', name)) this.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name }, status: { phase: 'Active' } });
  }

  /** A v1 Pod as the kubelet reports it. */
  addPod(spec: FakePodSpec): Obj {
    this.namespace(spec.namespace);
    const ready = spec.ready ?? true;
    const phase = spec.phase ?? 'Running';
    const started = new Date(Date.now() - 60000).toISOString();
    const pod: Obj = {
      apiVersion: 'v1', kind: 'Pod',
      metadata: {
        name: spec.name, namespace: spec.namespace, labels: spec.labels ?? {}, annotations: spec.annotations ?? {},
        ...(spec.owner ? { ownerReferences: [{ ...spec.owner, controller: true, blockOwnerDeletion: true }] } : {}),
      },
      spec: {
        nodeName: spec.node ?? 'node-1',
        containers: spec.containers.map((c) => ({ name: c.name, image: `registry.example/${c.name}:1` })),
      },
      status: {
        phase,
        podIP: spec.ip ?? '10.244.99.1',
        podIPs: [{ ip: spec.ip ?? '10.244.99.1' }],
        hostIP: '192.0.2.1',
        startTime: started,
        conditions: [
          { type: 'Initialized', status: 'True', lastTransitionTime: started },
          { type: 'Ready', status: ready && phase === 'Running' ? 'True' : 'False', lastTransitionTime: started },
          { type: 'ContainersReady', status: ready && phase === 'Running' ? 'True' : 'False', lastTransitionTime: started },
          { type: 'PodScheduled', status: 'True', lastTransitionTime: started },
        ],
        containerStatuses: spec.containers.map((c) => ({
          name: c.name, image: `registry.example/${c.name}:1`, imageID: '', restartCount: 0,
          ready: (c.ready ?? ready) && phase === 'Running', started: phase === 'Running',
          state: phase === 'Running' ? { running: { startedAt: started } } : { waiting: { reason: 'ContainerCreating' } },
          ...(c.id && phase === 'Running' ? { containerID: `${c.runtime ?? 'containerd'}://${c.id}` } : {}),
        })),
      },
    };
    if (spec.forwards) this.#podForwards.set(`${spec.namespace}/${spec.name}`, spec.forwards);
    if (phase !== 'Running') this.#pendingIds.set(`${spec.namespace}/${spec.name}`, spec.containers.map((c) => c.id ?? ''));
    return this.put(pod);
  }

  readonly #podForwards = new Map<string, Record<number, { host: string; port: number }>>();

  /** A pod backed by a harness pod: its IP, and its container id for the main container. */
  addHarnessPod(hp: HarnessPod, extra: Partial<FakePodSpec> & { container?: string } = {}): Obj {
    const { container, ...rest } = extra;
    return this.addPod({
      name: hp.name, namespace: hp.namespace, ip: hp.ip,
      containers: [{ name: container ?? hp.name, id: hp.containerId }],
      ...rest,
    });
  }

  #workloadPods(owner: OwnerRef, namespace: string, labels: Record<string, string>, pods: WorkloadPod[]): void {
    pods.forEach((p, i) => {
      const name = p.name ?? `${owner.name}-${i === 0 ? 'x7k2p' : `q${i}m4z`}`;
      this.addPod({
        name, namespace, labels: { ...labels }, owner,
        containers: p.containers ?? [{ name: 'app', ...(p.pod ? { id: p.pod.containerId } : { id: randomHex() }) }],
        ...(p.pod ? { ip: p.pod.ip } : {}),
        ...(p.ready === undefined ? {} : { ready: p.ready }),
        ...(p.node ? { node: p.node } : {}),
        ...(p.annotations ? { annotations: p.annotations } : {}),
      });
    });
  }

  #template(labels: Record<string, string>): Record<string, unknown> {
    return { metadata: { labels }, spec: { containers: [{ name: 'app', image: 'registry.example/app:1' }] } };
  }

  /** A Deployment owning a ReplicaSet owning the pods (as the controllers make them). */
  addDeployment(namespace: string, name: string, pods: WorkloadPod[], kind: 'Deployment' | 'Rollout' = 'Deployment'): Obj {
    this.namespace(namespace);
    const labels = { app: name };
    const apiVersion = kind === 'Rollout' ? 'argoproj.io/v1alpha1' : 'apps/v1';
    const dep = this.put({
      apiVersion, kind, metadata: { name, namespace, labels },
      spec: { replicas: pods.length, selector: { matchLabels: labels }, template: this.#template(labels) },
      status: { replicas: pods.length, readyReplicas: pods.filter((p) => p.ready !== false).length },
    });
    const rsName = `${name}-7d9f8c6b5`;
    const rs = this.put({
      apiVersion: 'apps/v1', kind: 'ReplicaSet',
      metadata: { name: rsName, namespace, labels: { ...labels, 'pod-template-hash': '7d9f8c6b5' }, ownerReferences: [{ apiVersion, kind, name, uid: dep.metadata.uid ?? '', controller: true }] },
      spec: { replicas: pods.length, selector: { matchLabels: { ...labels, 'pod-template-hash': '7d9f8c6b5' } }, template: this.#template(labels) },
      status: { replicas: pods.length },
    });
    this.#workloadPods({ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: rsName, uid: rs.metadata.uid ?? '' }, namespace, { ...labels, 'pod-template-hash': '7d9f8c6b5' },
      pods.map((p, i) => ({ ...p, name: p.name ?? `${rsName}-${['x7k2p', 'q9m4z', 'b2c8d'][i] ?? `p${i}`}` })));
    return dep;
  }

  /** A StatefulSet, DaemonSet, Job or bare ReplicaSet owning its pods directly. */
  addWorkload(kind: 'StatefulSet' | 'DaemonSet' | 'Job' | 'ReplicaSet', namespace: string, name: string, pods: WorkloadPod[]): Obj {
    this.namespace(namespace);
    const labels = { app: name };
    const apiVersion = kind === 'Job' ? 'batch/v1' : 'apps/v1';
    const spec: Record<string, unknown> = { selector: { matchLabels: labels }, template: this.#template(labels) };
    if (kind === 'StatefulSet' || kind === 'ReplicaSet') spec.replicas = pods.length;
    if (kind === 'StatefulSet') spec.serviceName = name;
    const obj = this.put({ apiVersion, kind, metadata: { name, namespace, labels }, spec, status: {} });
    const owner = { apiVersion, kind, name, uid: obj.metadata.uid ?? '' };
    this.#workloadPods(owner, namespace, labels, pods.map((p, i) => ({
      ...p,
      name: p.name ?? (kind === 'StatefulSet' ? `${name}-${i}` : `${name}-${['h5j8k', 'w3e6r', 'z1x4c'][i] ?? `p${i}`}`),
    })));
    return obj;
  }

  /**
   * Plays the ReplicaSet controller and the kubelet when a workload's pod is replaced
   * (rollout, eviction, crash): the old pod is deleted and a new one of the same owner,
   * labels and node appears, Pending (no container id) unless `ready` is given; make it
   * ready later with {@link setPodReady}. `pod` backs it (its IP and container id).
   */
  replacePod(namespace: string, oldName: string, next: { name: string; pod?: HarnessPod; ready?: boolean; node?: string }): Obj {
    const old = this.get('v1', 'Pod', namespace, oldName);
    if (!old) throw new Error(`fixture: no pod ${namespace}/${oldName} to replace`);
    this.delete('v1', 'Pod', namespace, oldName);
    this.#podForwards.delete(`${namespace}/${oldName}`);
    const owner = old.metadata.ownerReferences?.[0];
    const spec = old.spec as { nodeName?: string; containers?: Array<{ name: string }> } | undefined;
    const ready = next.ready ?? false;
    const added = this.addPod({
      name: next.name, namespace, labels: { ...old.metadata.labels }, annotations: { ...old.metadata.annotations },
      ...(owner ? { owner: { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid } } : {}),
      node: next.node ?? spec?.nodeName ?? 'node-1',
      containers: (spec?.containers ?? [{ name: 'app' }]).map((c, i) => ({ name: c.name, ...(i === 0 && next.pod ? { id: next.pod.containerId } : { id: randomHex() }) })),
      ...(next.pod ? { ip: next.pod.ip } : {}),
      ...(ready ? {} : { phase: 'Pending' as const }),
    });
    return added;
  }

  /** The kubelet's report that a pod's containers started and passed their readiness probe (or not). */
  setPodReady(namespace: string, name: string, ready: boolean): Obj {
    const pod = this.get('v1', 'Pod', namespace, name);
    if (!pod) throw new Error(`fixture: no pod ${namespace}/${name}`);
    const status = pod.status as {
      phase: string; startTime?: string;
      conditions: Array<{ type: string; status: string; lastTransitionTime?: string }>;
      containerStatuses: Array<{ ready: boolean; started: boolean; state: unknown; containerID?: string }>;
    };
    const now = new Date().toISOString();
    status.phase = 'Running';
    for (const c of status.conditions) {
      if (c.type === 'Ready' || c.type === 'ContainersReady') Object.assign(c, { status: ready ? 'True' : 'False', lastTransitionTime: now });
    }
    const ids = this.#pendingIds.get(`${namespace}/${name}`) ?? [];
    status.containerStatuses.forEach((c, i) => {
      c.ready = ready;
      c.started = true;
      c.state = { running: { startedAt: now } };
      const id = ids[i];
      if (id && !c.containerID) c.containerID = `containerd://${id}`;
    });
    return this.put(pod);
  }

  /** Container ids of pods added Pending: they appear in the status once the pod runs. */
  readonly #pendingIds = new Map<string, string[]>();

  /** Closes every port-forward in progress, as an API server restart or a network drop would. */
  dropPortForwards(): void {
    for (const f of this.#forwards) {
      for (const s of f.sockets) s.destroy();
      f.ws.terminate();
    }
    this.#forwards.clear();
  }

  get activePortForwards(): number {
    return this.#forwards.size;
  }

  // ---- HTTP

  #typeOf(apiVersion: string, kind: string): ResourceType | undefined {
    const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') as [string, string] : ['', apiVersion];
    return RESOURCE_TYPES.find((t) => t.group === group && t.version === version && t.kind === kind && (!t.optional || this.#rolloutsRegistered));
  }

  #key(type: ResourceType, namespace: string, name: string): string {
    return `${type.group}/${type.kind}/${type.namespaced ? namespace : ''}/${name}`;
  }

  #send(res: ServerResponse, code: number, body: unknown): void {
    if (res.headersSent) return;
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  }

  #user(req: IncomingMessage): User | undefined {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    return m ? this.users.get(m[1] ?? '') : undefined;
  }

  async #body(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    if (text === '') return {};
    return (req.headers['content-type'] ?? '').includes('yaml') ? parseYaml(text) : JSON.parse(text);
  }

  #types(group: string, version: string): ResourceType[] {
    return RESOURCE_TYPES.filter((t) => t.group === group && t.version === version && (!t.optional || this.#rolloutsRegistered));
  }

  #withStatus(obj: Obj): Obj {
    if (obj.kind !== 'DaemonSet') return obj;
    // The DaemonSet controller's view: one pod per node, counted from the pods it owns.
    const owned = [...this.#objects.values()].filter((o) => o.kind === 'Pod' && o.metadata.namespace === obj.metadata.namespace
      && matchesLabelSelector(selectorString(obj), o.metadata.labels ?? {}));
    const ready = owned.filter(isPodReady).length;
    return { ...obj, status: { desiredNumberScheduled: this.#nodes.size, currentNumberScheduled: owned.length, numberReady: ready, numberAvailable: ready, updatedNumberScheduled: owned.length, numberMisscheduled: 0, observedGeneration: 1 } };
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    const user = this.#user(req);
    this.requests.push({ method: req.method ?? '', path, query: url.search, user: user?.username ?? '', contentType: req.headers['content-type'] ?? '' });
    if (!user) return this.#send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
    if (path === '/version') return this.#send(res, 200, { major: '1', minor: '30', gitVersion: 'v1.30.0-fake', platform: 'linux/amd64' });
    if (path === '/api') return this.#send(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] });
    if (path === '/apis') {
      const groups = [...new Set(RESOURCE_TYPES.filter((t) => t.group && (!t.optional || this.#rolloutsRegistered)).map((t) => `${t.group}/${t.version}`))];
      return this.#send(res, 200, {
        kind: 'APIGroupList', apiVersion: 'v1',
        groups: groups.map((gv) => {
          const [name, version] = gv.split('/') as [string, string];
          return { name, versions: [{ groupVersion: gv, version }], preferredVersion: { groupVersion: gv, version } };
        }),
      });
    }
    const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))(?:\/(.*))?$/.exec(path);
    if (!m) return this.#send(res, 404, status(404, 'NotFound', `the server could not find the requested resource (${path})`));
    const group = m[2] ?? '';
    const version = m[1] ?? m[3] ?? '';
    const rest = (m[4] ?? '').split('/').filter(Boolean).map(decodeURIComponent);
    const types = this.#types(group, version);
    if (types.length === 0) return this.#send(res, 404, status(404, 'NotFound', `the server could not find the requested resource (${path})`));
    const apiVersion = group ? `${group}/${version}` : version;
    if (rest.length === 0) {
      return this.#send(res, 200, {
        kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersion,
        resources: types.map((t) => ({ name: t.plural, singularName: t.kind.toLowerCase(), namespaced: t.namespaced, kind: t.kind, verbs: t.verbs })),
      });
    }
    let namespace = '';
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1] ?? '';
      rest.splice(0, 2);
    }
    const [plural = '', name = '', subresource = ''] = rest;
    const type = types.find((t) => t.plural === plural);
    if (!type) return this.#send(res, 404, status(404, 'NotFound', `the server could not find the requested resource (${path})`));
    const method = req.method ?? 'GET';
    const verb = method === 'GET' ? (name ? 'get' : 'list') : method === 'POST' ? 'create' : method === 'PATCH' ? 'patch' : method === 'PUT' ? 'update' : method === 'DELETE' ? 'delete' : method.toLowerCase();
    const access: Access = { user, verb, resource: type.plural, subresource, namespace, group, name };
    if (!this.authorize(access)) {
      return this.#send(res, 403, status(403, 'Forbidden', `${type.plural}${subresource ? `/${subresource}` : ''}${name ? ` "${name}"` : ''} is forbidden: User "${user.username}" cannot ${verb} resource "${type.plural}${subresource ? `/${subresource}` : ''}" in API group "${group}"${namespace ? ` in the namespace "${namespace}"` : ' at the cluster scope'}`));
    }

    // Reviews
    if (type.kind === 'SelfSubjectAccessReview' || type.kind === 'SubjectAccessReview') {
      const body = await this.#body(req) as { spec?: { resourceAttributes?: Record<string, string>; user?: string; groups?: string[] } };
      const ra = body.spec?.resourceAttributes ?? {};
      const subject: User = type.kind === 'SubjectAccessReview' ? { username: body.spec?.user ?? '', groups: body.spec?.groups ?? [] } : user;
      const allowed = this.authorize({ user: subject, verb: ra.verb ?? '', resource: ra.resource ?? '', subresource: ra.subresource ?? '', namespace: ra.namespace ?? '', group: ra.group ?? '', name: ra.name ?? '' });
      return this.#send(res, 201, { apiVersion: 'authorization.k8s.io/v1', kind: type.kind, metadata: {}, spec: body.spec ?? {}, status: { allowed, ...(allowed ? {} : { reason: 'denied by the fixture' }) } });
    }
    if (type.kind === 'SelfSubjectReview') {
      return this.#send(res, 201, { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview', metadata: {}, status: { userInfo: { username: user.username, groups: user.groups, uid: user.uid ?? '' } } });
    }
    if (type.kind === 'TokenReview') {
      const body = await this.#body(req) as { spec?: { token?: string } };
      const reviewed = this.reviewToken(body.spec?.token ?? '');
      return this.#send(res, 201, {
        apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', metadata: {}, spec: {},
        status: reviewed ? { authenticated: true, user: { username: reviewed.username, groups: reviewed.groups, uid: reviewed.uid ?? '' } } : { authenticated: false, error: 'token not recognised' },
      });
    }

    if (!name) {
      if (method === 'GET') {
        const labelSelector = url.searchParams.get('labelSelector') ?? '';
        const fieldSelector = url.searchParams.get('fieldSelector') ?? '';
        const items = [...this.#objects.values()].filter((o) => this.#typeOf(o.apiVersion, o.kind) === type
          && (!type.namespaced || !namespace || o.metadata.namespace === namespace)
          && matchesLabelSelector(labelSelector, o.metadata.labels ?? {})
          && matchesFieldSelector(fieldSelector, o)).map((o) => this.#withStatus(o));
        items.sort((a, b) => `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace ?? ''}/${b.metadata.name}`));
        return this.#send(res, 200, { apiVersion, kind: `${type.kind}List`, metadata: { resourceVersion: String(this.#version) }, items });
      }
      if (method === 'POST') {
        const obj = await this.#body(req) as Obj;
        if (type.namespaced) obj.metadata.namespace = namespace;
        if (this.get(apiVersion, type.kind, namespace, obj.metadata.name)) return this.#send(res, 409, status(409, 'AlreadyExists', `${type.plural} "${obj.metadata.name}" already exists`));
        const refused = this.#admit(type, { ...obj, apiVersion, kind: type.kind }, undefined, user);
        if (refused) return this.#send(res, 403, status(403, 'Forbidden', refused));
        const created = this.put({ ...obj, apiVersion, kind: type.kind });
        this.afterWrite(created);
        return this.#send(res, 201, created);
      }
      return this.#send(res, 405, status(405, 'MethodNotAllowed', method));
    }
    const existing = this.get(apiVersion, type.kind, namespace, name);
    const notFound = (): void => this.#send(res, 404, status(404, 'NotFound', `${type.plural}${group ? `.${group}` : ''} "${name}" not found`));
    switch (method) {
      case 'GET':
        return existing ? this.#send(res, 200, this.#withStatus(existing)) : notFound();
      case 'DELETE':
        if (!existing) return notFound();
        {
          const options = await this.#body(req) as { preconditions?: { uid?: string } };
          if (options.preconditions?.uid && options.preconditions.uid !== existing.metadata.uid) {
            return this.#send(res, 409, status(409, 'Conflict', `Precondition failed: UID in precondition: ${options.preconditions.uid}, UID in object meta: ${existing.metadata.uid}`));
          }
        }
        this.#objects.delete(this.#key(type, namespace, name));
        if (type.kind === 'Namespace') {
          for (const [k, o] of this.#objects) if (o.metadata.namespace === name) this.#objects.delete(k);
        }
        return this.#send(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, kind: type.plural } });
      case 'PUT':
      case 'PATCH': {
        const body = await this.#body(req) as Obj;
        const ct = req.headers['content-type'] ?? '';
        if (method === 'PATCH' && ct.startsWith('application/apply-patch') && !url.searchParams.get('fieldManager')) {
          return this.#send(res, 400, status(400, 'BadRequest', 'PATCH with apply requires fieldManager'));
        }
        if (!existing && !(method === 'PATCH' && ct.startsWith('application/apply-patch'))) return notFound();
        // Optimistic concurrency: a write naming a resourceVersion must name the current one.
        if (existing && body.metadata?.resourceVersion && body.metadata.resourceVersion !== existing.metadata.resourceVersion) {
          return this.#send(res, 409, status(409, 'Conflict', `Operation cannot be fulfilled on ${type.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`));
        }
        if (subresource === 'status' && existing) {
          const written = this.put({ ...existing, status: body.status });
          this.afterWrite(written);
          return this.#send(res, 200, written);
        }
        // Server-side apply here replaces the applied fields wholesale (enough for one manager).
        const merged: Obj = { ...(existing ?? {}), ...body, apiVersion, kind: type.kind, metadata: { ...(existing?.metadata ?? {}), ...body.metadata, name, ...(type.namespaced ? { namespace } : {}) } };
        if (existing && existing.status !== undefined && body.status === undefined) merged.status = existing.status;
        const refused = this.#admit(type, merged, existing, user);
        if (refused) return this.#send(res, 403, status(403, 'Forbidden', refused));
        const written = this.put(merged);
        this.afterWrite(written);
        return this.#send(res, existing ? 200 : 201, this.#withStatus(written));
      }
      default:
        return this.#send(res, 405, status(405, 'MethodNotAllowed', method));
    }
  }

  /**
   * Admission: Sessions go through the shipped ValidatingAdmissionPolicy's CEL, its
   * authorizer answered by `authorize` for the requesting user (as the real API server's
   * is by RBAC). Returns the refusal message, as a real server words it (403: the validations' reason is Forbidden).
   */
  #admit(type: ResourceType, obj: Obj, old: Obj | undefined, user: User): string | undefined {
    if (type.kind !== 'Session') return undefined;
    const message = evaluateValidations({
      object: obj, oldObject: old, request: { operation: old ? 'UPDATE' : 'CREATE', userInfo: { username: user.username, groups: user.groups } },
      authorize: (q) => this.authorize({ user, verb: q.verb, resource: q.resource, subresource: q.subresource, namespace: q.namespace, group: q.group, name: q.name }),
    });
    return message === undefined ? undefined
      : `${type.plural}.${type.group} "${obj.metadata.name}" is forbidden: ValidatingAdmissionPolicy 'tsmirror-sessions' with binding 'tsmirror-sessions' denied request: ${message}`;
  }

  // ---- port-forward

  #upgrade(req: IncomingMessage, socket: net.Socket, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/.exec(url.pathname);
    const user = this.#user(req);
    this.requests.push({ method: 'UPGRADE', path: url.pathname, query: url.search, user: user?.username ?? '', contentType: '' });
    const refuse = (code: number, body: unknown): void => {
      const text = JSON.stringify(body);
      socket.end(`HTTP/1.1 ${code} ${code === 403 ? 'Forbidden' : code === 401 ? 'Unauthorized' : 'Not Found'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
    };
    if (!user) return refuse(401, status(401, 'Unauthorized', 'Unauthorized'));
    if (!m) return refuse(404, status(404, 'NotFound', 'not found'));
    const namespace = decodeURIComponent(m[1] ?? '');
    const name = decodeURIComponent(m[2] ?? '');
    if (!this.authorize({ user, verb: 'create', resource: 'pods', subresource: 'portforward', namespace, group: '', name })) {
      return refuse(403, status(403, 'Forbidden', `pods "${name}" is forbidden: User "${user.username}" cannot create resource "pods/portforward" in API group "" in the namespace "${namespace}"`));
    }
    const pod = this.get('v1', 'Pod', namespace, name);
    if (!pod) return refuse(404, status(404, 'NotFound', `pods "${name}" not found`));
    const ports = (url.searchParams.getAll('ports').join(',')).split(',').filter(Boolean).map(Number);
    const forwards = this.#podForwards.get(`${namespace}/${name}`) ?? {};
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      const entry = { ws, sockets: [] as net.Socket[] };
      this.#forwards.add(entry);
      ws.once('close', () => {
        this.#forwards.delete(entry);
        for (const s of entry.sockets) s.destroy();
      });
      ports.forEach((port, index) => {
        const data = index * 2;
        const error = data + 1;
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16LE(port);
        ws.send(Buffer.concat([Buffer.from([data]), prefix]));
        ws.send(Buffer.concat([Buffer.from([error]), prefix]));
        const to = forwards[port];
        const fail = (why: string): void => {
          ws.send(Buffer.concat([Buffer.from([error]), Buffer.from(`error forwarding port ${port} to pod ${name}: ${why}`)]));
          ws.close();
        };
        if (!to) return fail('connection refused (nothing listens there)');
        const tcp = net.connect(to.port, to.host);
        entry.sockets.push(tcp);
        const pending: Buffer[] = [];
        let connected = false;
        tcp.once('connect', () => {
          connected = true;
          for (const b of pending.splice(0)) tcp.write(b);
        });
        tcp.on('data', (d: Buffer) => {
          ws.send(Buffer.concat([Buffer.from([data]), d]));
          if (ws.bufferedAmount > 1 << 20) {
            tcp.pause();
            const t = setInterval(() => {
              if (ws.bufferedAmount < 1 << 18 || ws.readyState !== ws.OPEN) {
                clearInterval(t);
                tcp.resume();
              }
            }, 5);
          }
        });
        tcp.once('error', (err) => (connected ? ws.close() : fail(err.message)));
        tcp.once('close', () => ws.close());
        ws.on('message', (msg: Buffer) => {
          if (msg[0] !== data) return;
          const payload = msg.subarray(1);
          if (!connected) pending.push(payload);
          else if (!tcp.write(payload)) {
            ws.pause();
            tcp.once('drain', () => ws.resume());
          }
        });
      });
    });
  }
}

function randomHex(): string {
  return randomUUID().replace(/-/g, '') + randomUUID().replace(/-/g, '');
}

function selectorString(obj: Obj): string {
  const sel = (obj.spec as { selector?: { matchLabels?: Record<string, string> } } | undefined)?.selector?.matchLabels ?? {};
  return Object.entries(sel).map(([k, v]) => `${k}=${v}`).join(',');
}

function isPodReady(pod: Obj): boolean {
  const conditions = (pod.status as { conditions?: Array<{ type: string; status: string }> } | undefined)?.conditions ?? [];
  return conditions.some((c) => c.type === 'Ready' && c.status === 'True');
}

export { randomHex };
export type { Obj as KubeObject };
