/**
 * The cluster commands against the in-memory API server and a real agent: install
 * (--dry-run manifests validated against the Kubernetes schemas; server-side apply and the
 * wait for ready agents), status with live sessions, doctor's checks, targets, uninstall.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import { ValidatingAdmissionPolicy } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy';
import { ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { packageVersion } from '../../native/index.js';
import { Harness, type Pod } from '../harness/harness.js';
import { httpServerCommand } from '../harness/demo-pods.js';
import { FakeApiServer, type KubeObject } from '../k8s/apiserver.js';
import { addAgentPod, cliPath, runCli, startAgentProcess, stopAll, type AgentProcess, type RunOptions } from './tsm.js';

let harness: Harness;
let api: FakeApiServer;
let agent: AgentProcess;
let web: Pod;
let dir: string;
let kubeconfig: string;

beforeAll(async () => {
  harness = await Harness.create({ name: 'cluster' });
  web = await harness.addPod({ name: 'web', namespace: 'shop', command: httpServerCommand(8080), files: { '/data/index.html': 'web\n' }, readyPort: 8080 });
  api = await FakeApiServer.start({
    users: { 'admin-token': { username: 'admin', groups: ['system:masters'] }, 'dev-token': { username: 'dev', groups: ['dev'] }, 'intern-token': { username: 'intern', groups: ['dev'] } },
  });
  dir = mkdtempSync(join(tmpdir(), 'tsm-cluster-'));
  // A cluster agent, as installed: it verifies each session's Session object through the API.
  agent = await startAgentProcess(['--kubeconfig', api.writeKubeconfig(dir, { file: 'agent' }), '--node-name', 'node-1', '--health-listen', '127.0.0.1:0']);
  // dev may read pods everywhere but not port-forward to the agents; intern may not read deployments.
  api.authorize = (a) => !(a.user.username === 'dev' && a.subresource === 'portforward')
    && !(a.user.username === 'intern' && a.resource === 'deployments' && a.group === 'apps');
  api.addNode('node-1');
  api.addDeployment('shop', 'api', [{ pod: web }]);
  api.addWorkload('StatefulSet', 'shop', 'cache', [{ pod: web }]);
  api.addPod({ name: 'debug', namespace: 'shop', ip: web.ip, containers: [{ name: 'sh', id: web.containerId }] });
  kubeconfig = api.writeKubeconfig(dir, { namespace: 'shop' });
}, 120000);

afterAll(() => stopAll({ agent, api, harness, dirs: [dir] }));

const tsm = (args: string[], opts: RunOptions = {}) => runCli(args, { timeoutMs: 60000, ...opts });

/** Plays the DaemonSet controller: an agent pod on node-1 (backed by the real agent) once the DaemonSet exists. */
function agentPodFor(ds: KubeObject, version = packageVersion): void {
  addAgentPod(api, agent, {
    name: 'tsmirror-agent-x8k2z', namespace: ds.metadata.namespace ?? 'tsmirror-system', node: 'node-1',
    labels: { 'app.kubernetes.io/version': version },
    owner: { apiVersion: 'apps/v1', kind: 'DaemonSet', name: ds.metadata.name, uid: ds.metadata.uid ?? '' },
  });
}

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  Namespace, ServiceAccount, ConfigMap, ClusterRole, ClusterRoleBinding, Role, RoleBinding, DaemonSet,
  CustomResourceDefinition, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};

describe('install', () => {
  it('--dry-run --image X emits manifests that validate against the Kubernetes schemas, with the DaemonSet as specified', async () => {
    const r = await tsm(['install', '--dry-run', '--image', 'registry.example.com/tsmirror/agent:test']);
    expect(r.code).toBe(0);
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJSON() as KubeObject);
    expect(docs.map((d) => d.kind)).toEqual([
      'Namespace', 'CustomResourceDefinition', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ClusterRole', 'ClusterRole', 'ClusterRole',
      'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding', 'ConfigMap', 'DaemonSet',
    ]);
    for (const doc of docs) {
      const Model = MODELS[doc.kind];
      expect(Model, doc.kind).toBeDefined();
      expect(() => new (Model as NonNullable<typeof Model>)(doc as never).validate(), `${doc.kind} ${doc.metadata.name}`).not.toThrow();
    }
    // The validator really checks: a wrong type is caught.
    const broken = structuredClone(docs.find((d) => d.kind === 'DaemonSet')) as KubeObject & { spec: { template: { spec: { hostPID: unknown } } } };
    broken.spec.template.spec.hostPID = 'yes';
    expect(() => new DaemonSet(broken as never).validate()).toThrow(/hostPID must be boolean/);

    const ns = docs.find((d) => d.kind === 'Namespace') as KubeObject;
    expect(ns.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
    const ds = docs.find((d) => d.kind === 'DaemonSet') as KubeObject & { spec: { template: { spec: Record<string, any> } } };
    const pod = ds.spec.template.spec;
    expect(pod.hostPID).toBe(true);
    expect(pod.hostNetwork).toBe(false);
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    const c = pod.containers[0];
    expect(c.image).toBe('registry.example.com/tsmirror/agent:test');
    expect(c.securityContext.privileged).toBe(false);
    expect(c.securityContext.capabilities.drop).toEqual(['ALL']);
    expect(c.securityContext.capabilities.add).not.toContain('ALL');
    expect(c.resources.requests).toBeDefined();
    expect(c.resources.limits).toBeDefined();
    expect(c.readinessProbe.httpGet.path).toBe('/healthz');
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(c.args).toEqual(expect.arrayContaining(['--listen', '127.0.0.1:7777', '--in-cluster']));
    const agentRole = docs.find((d) => d.kind === 'ClusterRole' && d.metadata.name === 'tsmirror-agent') as KubeObject & { rules: Array<{ resources: string[]; verbs: string[] }> };
    expect(agentRole.rules.flatMap((rule) => rule.resources).sort()).toEqual(['pods', 'sessions', 'sessions/status', 'validatingadmissionpolicies', 'validatingadmissionpolicybindings']);
    expect(agentRole.rules.find((rule) => rule.resources.includes('pods'))?.verbs).toEqual(['get', 'list', 'watch']);
  });

  it('applies with server-side apply and waits until the agent is ready on every node, with progress', async () => {
    api.afterWrite = (obj) => {
      if (obj.kind === 'DaemonSet' && !api.get('v1', 'Pod', 'tsmirror-system', 'tsmirror-agent-x8k2z')) setTimeout(() => agentPodFor(obj), 700);
    };
    const r = await tsm(['install', '--kubeconfig', kubeconfig, '--image', 'registry.example.com/tsmirror/agent:test', '--wait', '20']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('applied DaemonSet tsmirror-system/tsmirror-agent');
    expect(r.stderr).toContain('agents ready: 0/1 node(s)');
    expect(r.stderr).toContain('the agent is ready on every node (1)');
    const applies = api.requests.filter((q) => q.method === 'PATCH');
    expect(applies.length).toBeGreaterThanOrEqual(8);
    expect(applies.every((q) => q.contentType === 'application/apply-patch+yaml' && q.query.includes('fieldManager=tsmirror') && q.query.includes('force=true'))).toBe(true);
    const ds = api.get('apps/v1', 'DaemonSet', 'tsmirror-system', 'tsmirror-agent') as KubeObject & { spec: { template: { spec: { containers: Array<{ image: string }> } } } };
    expect(ds.spec.template.spec.containers[0]?.image).toBe('registry.example.com/tsmirror/agent:test');
    // A re-install keeps the admin's policy edits.
    const cm = api.get('v1', 'ConfigMap', 'tsmirror-system', 'tsmirror-policy') as KubeObject & { data: Record<string, string> };
    cm.data['policy.yaml'] = 'protectedNamespaces: [prod]\n';
    const again = await tsm(['install', '--kubeconfig', kubeconfig, '--wait', '5']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain('kept ConfigMap tsmirror-system/tsmirror-policy (existing policy)');
    expect((api.get('v1', 'ConfigMap', 'tsmirror-system', 'tsmirror-policy') as typeof cm).data['policy.yaml']).toBe('protectedNamespaces: [prod]\n');
  });
});

describe('status', () => {
  it('lists the agent and its live sessions', async () => {
    const child = spawn(process.execPath, [cliPath, 'exec', '--quiet', '--kubeconfig', kubeconfig, '--target', 'deploy/api', '--', 'sleep', '20'], { stdio: 'ignore' });
    try {
      const started = Date.now();
      let out = '';
      while (Date.now() - started < 15000) {
        out = (await tsm(['status', '--kubeconfig', kubeconfig])).stdout;
        if (out.includes('session ')) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(out).toMatch(/NODE\s+AGENT POD\s+READY\s+VERSION\s+SESSIONS/);
      expect(out).toMatch(new RegExp(`node-1\\s+tsmirror-agent-x8k2z\\s+yes\\s+${packageVersion.replace(/\./g, '\\.')}\\s+1`));
      // The user is the one the Session names (admin here); the target names its pod.
      expect(out).toMatch(new RegExp(`node-1: session [0-9a-f]{8} admin@\\S+ → pod shop/api-\\S+ container app: container/${web.containerId.slice(0, 12)}`));
      const json = JSON.parse((await tsm(['status', '--kubeconfig', kubeconfig, '--json'])).stdout) as { agents: Array<{ node: string; ready: boolean; version: string; sessions: unknown[] }> };
      expect(json.agents).toHaveLength(1);
      expect(json.agents[0]).toMatchObject({ node: 'node-1', ready: true, version: packageVersion });
      expect(json.agents[0]?.sessions).toHaveLength(1);
    } finally {
      child.kill('SIGTERM');
    }
  });
});

describe('doctor', () => {
  it('passes on a healthy setup', async () => {
    const r = await tsm(['doctor', '--kubeconfig', kubeconfig, '--target', 'deployment/api', '/usr/bin/curl']);
    expect(r.stdout).toContain('✓ the API server');
    expect(r.stdout).toContain('✓ RBAC: you may read pods in shop and port-forward to the agents in tsmirror-system');
    expect(r.stdout).toContain('✓ the agent tsmirror-agent-x8k2z on node node-1 is ready');
    expect(r.stdout).toContain(`✓ the agent and this CLI are both tsmirror ${packageVersion}`);
    expect(r.stdout).toContain('✓ the agent on node node-1 authenticates sessions: each needs a Session object (sessions.tsmirror.dev) its user created');
    expect(r.stdout).toContain('✓ RBAC: you may steal traffic (--steal) in shop');
    expect(r.stdout).toContain('✓ the cluster serves sessions.tsmirror.dev (each session is one, created with your credentials)');
    expect(r.stdout).toContain('✓ the shim loads');
    expect(r.stdout).toContain('✓ /usr/bin/curl is dynamically linked');
    expect(r.stdout).toContain('everything tsmirror needs is in place');
    expect(r.code, r.stdout).toBe(0);
  });

  it('reports a node without an agent, with its fix', async () => {
    api.addNode('node-2');
    api.addDeployment('shop', 'far', [{ pod: web, node: 'node-2' }]);
    try {
      const r = await tsm(['doctor', '--kubeconfig', kubeconfig, '--target', 'deployment/far']);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain("✗ agent: no tsmirror agent runs on node 'node-2' (where pod far-7d9f8c6b5-x7k2p runs); agents run on: node-1");
      expect(r.stdout).toMatch(/fix: the agent DaemonSet does not cover that node: check its tolerations/);
    } finally {
      api.delete('apps/v1', 'Deployment', 'shop', 'far');
    }
  });

  it('reports RBAC denied, with its fix', async () => {
    const devConfig = api.writeKubeconfig(dir, { token: 'dev-token', namespace: 'shop', file: 'dev' });
    const r = await tsm(['doctor', '--kubeconfig', devConfig, '--target', 'deployment/api']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('✗ RBAC: you may not create pods/portforward in namespace tsmirror-system (needed to reach the agent through the API server)');
    expect(r.stdout).toContain('fix: ask a cluster admin to bind you the ClusterRole tsmirror-user in namespace tsmirror-system');
    // and exec says the same thing when it hits it
    const exec = await tsm(['exec', '--kubeconfig', devConfig, '--target', 'deployment/api', '--', 'true']);
    expect(exec.stderr).toContain('you may not create pods/portforward in namespace tsmirror-system [TSM_ERR_KUBE_FORBIDDEN]');
    const internConfig = api.writeKubeconfig(dir, { token: 'intern-token', namespace: 'shop', file: 'intern' });
    const intern = await tsm(['doctor', '--kubeconfig', internConfig, '--target', 'deployment/api']);
    expect(intern.stdout).toContain('✗ RBAC: you may not get deployments.apps in namespace shop (needed to read deployment/api)');
    const internExec = await tsm(['exec', '--kubeconfig', internConfig, '--target', 'deployment/api', '--', 'true']);
    expect(internExec.stderr).toContain('forbidden while reading deployment api in namespace shop: deployments "api" is forbidden: User "intern" cannot get resource "deployments" in API group "apps" in the namespace "shop" [TSM_ERR_KUBE_FORBIDDEN]');
  });

  it('reports version skew between the CLI and the agent, with its fix', async () => {
    const pod = api.get('v1', 'Pod', 'tsmirror-system', 'tsmirror-agent-x8k2z') as KubeObject;
    const labels = pod.metadata.labels as Record<string, string>;
    labels['app.kubernetes.io/version'] = '0.0.9';
    try {
      const r = await tsm(['doctor', '--kubeconfig', kubeconfig, '--target', 'deployment/api']);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain(`✗ version skew: the agent on node node-1 is tsmirror 0.0.9, this CLI is ${packageVersion}`);
      expect(r.stdout).toContain(`fix: run matching versions: upgrade the agent (tsmirror install --image …:${packageVersion}) or install tsmirror 0.0.9 locally`);
    } finally {
      labels['app.kubernetes.io/version'] = packageVersion;
    }
  });

  it('says how a statically linked program is intercepted (seccomp, where the kernel has user notification; issue 12 lifted the old refusal)', async () => {
    const r = await tsm(['doctor', '--kubeconfig', kubeconfig, '/bin/busybox']);
    expect(r.stdout).toContain('✓ seccomp user notification works here');
    expect(r.stdout).toContain('✓ /bin/busybox is statically linked: intercepted by the seccomp supervisor');
    expect(r.stdout).not.toContain('✗ /bin/busybox');
  });

  it('reports a missing kubeconfig and an unreachable API server, with their fixes', async () => {
    const missing = await tsm(['doctor', '--kubeconfig', join(dir, 'nope')]);
    expect(missing.stdout).toContain(`✗ kubeconfig: the kubeconfig ${join(dir, 'nope')} does not exist`);
    expect(missing.stdout).toContain('✓ the shim loads');
    const down = await FakeApiServer.start();
    const downConfig = down.writeKubeconfig(dir, { file: 'down' });
    await down.close();
    const r = await tsm(['doctor', '--kubeconfig', downConfig]);
    expect(r.stdout).toMatch(/✗ the API server: cannot reach the API server http:\/\/127\.0\.0\.1:\d+ while asking for its version: .*ECONNREFUSED/);
    expect(r.stdout).toContain('fix: check the cluster address of context "fake"');
  });
});

describe('targets', () => {
  it('lists workloads and standalone pods with their ready pods', async () => {
    const r = await tsm(['targets', '--kubeconfig', kubeconfig]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/TARGET\s+READY\s+NODES/);
    expect(r.stdout).toMatch(/deployment\/api\s+1\/1\s+node-1/);
    expect(r.stdout).toMatch(/statefulset\/cache\s+1\/1\s+node-1/);
    expect(r.stdout).toMatch(/pod\/debug\s+1\/1\s+node-1/);
    expect(r.stdout).not.toContain('pod/api-');
    const all = await tsm(['targets', '--kubeconfig', kubeconfig, '-A']);
    expect(all.stdout).toMatch(/tsmirror-system\s+daemonset\/tsmirror-agent\s+1\/1\s+node-1/);
  });
});

describe('uninstall', () => {
  it('removes what install created', async () => {
    const r = await tsm(['uninstall', '--kubeconfig', kubeconfig]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('deleted DaemonSet tsmirror-system/tsmirror-agent');
    expect(api.get('apps/v1', 'DaemonSet', 'tsmirror-system', 'tsmirror-agent')).toBeUndefined();
    expect(api.get('rbac.authorization.k8s.io/v1', 'ClusterRole', '', 'tsmirror-agent')).toBeUndefined();
    expect(api.get('v1', 'Namespace', '', 'tsmirror-system')).toBeUndefined();
    const status = await tsm(['status', '--kubeconfig', kubeconfig]);
    expect(status.stdout).toContain('no tsmirror agents in namespace tsmirror-system');
  });
});
