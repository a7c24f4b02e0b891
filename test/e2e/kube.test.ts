/**
 * The CLI's Kubernetes path end to end: `tsmirror exec --target deployment/api -n shop`
 * goes CLI → @kubernetes/client-node → the in-memory API server → port-forward WebSocket
 * → a real agent → the harness pod's network namespace.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { httpServerCommand } from '../harness/demo-pods.js';
import { FakeApiServer, randomHex } from '../k8s/apiserver.js';
import { addAgentPod, addSessionAdmission, cliPath, pollUntil, runCli, startAgentProcess, stopAll, type AgentProcess, type RunOptions } from './tsm.js';

let harness: Harness;
let api: FakeApiServer;
let agent: AgentProcess;
let web: Pod;
let kubeconfig: string;
let dir: string;
const BIG = randomBytes(24 << 20);

beforeAll(async () => {
  harness = await Harness.create({ name: 'kube' });
  let db: Pod;
  [db, web] = await Promise.all([
    harness.addPod({ name: 'db', namespace: 'shop', command: httpServerCommand(8080), files: { '/data/index.html': 'hello from db\n', '/data/big.bin': BIG }, readyPort: 8080 }),
    harness.addPod({ name: 'web', namespace: 'shop', command: httpServerCommand(8080), env: { SHOP_MODE: 'k8s' }, files: { '/data/index.html': 'web\n' }, readyPort: 8080 }),
  ]);
  api = await FakeApiServer.start();
  dir = mkdtempSync(join(tmpdir(), 'tsm-kube-'));
  kubeconfig = api.writeKubeconfig(dir, { namespace: 'default' });
  // A cluster agent, as installed: it verifies each session's Session object through the API.
  agent = await startAgentProcess(['--kubeconfig', api.writeKubeconfig(dir, { file: 'agent' }), '--node-name', 'node-1', '--health-listen', '127.0.0.1:0']);
  api.addNode('node-1');
  addSessionAdmission(api);
  api.addNode('node-2');
  addAgentPod(api, agent, { name: 'tsmirror-agent-n1', node: 'node-1' });
  api.addHarnessPod(db, { name: 'db-0' });
  api.addDeployment('shop', 'api', [{ pod: web }]);
  api.addDeployment('shop', 'worker', [{ pod: web, ready: false }]);
  api.addDeployment('shop', 'far', [{ pod: web, node: 'node-2' }]);
  // node-3's agent pod exists but nothing listens on its session port.
  api.addNode('node-3');
  addAgentPod(api, undefined, { name: 'tsmirror-agent-n3', node: 'node-3' });
  api.addDeployment('shop', 'deaf', [{ pod: web, node: 'node-3' }]);
  api.addWorkload('StatefulSet', 'shop', 'cache', [{ pod: web }]);
  api.addWorkload('Job', 'shop', 'migrate', [{ pod: web }]);
  api.addWorkload('ReplicaSet', 'shop', 'legacy', [{ pod: web, ready: false }, { pod: web }]);
  api.addWorkload('DaemonSet', 'shop', 'logger', [{ pod: web, node: 'node-2' }, { pod: web, node: 'node-1' }]);
  api.addPod({ name: 'meshed', namespace: 'shop', ip: web.ip, containers: [{ name: 'istio-proxy', id: randomHex() }, { name: 'app', id: web.containerId }] });
  api.addPod({
    name: 'annotated', namespace: 'shop', ip: web.ip, annotations: { 'kubectl.kubernetes.io/default-container': 'main' },
    containers: [{ name: 'helper', id: randomHex() }, { name: 'main', id: web.containerId, runtime: 'cri-o' }],
  });
}, 120000);

afterAll(() => stopAll({ agent, api, harness, dirs: [dir] }));

function tsm(args: string[], opts: RunOptions = {}) {
  return runCli(args, { timeoutMs: 60000, ...opts });
}
const exec = (target: string, command: string[], flags: string[] = []) =>
  tsm(['exec', '--kubeconfig', kubeconfig, '--target', target, ...flags, '--', ...command]);
const CURL_DB = ['curl', '-sS', '--max-time', '10', 'http://db:8080/'];

describe('Kubernetes targets through the API server and the port-forward', () => {
  it('deployment/api -n shop: curl reaches db by its short name', async () => {
    const r = await exec('deployment/api', CURL_DB, ['-n', 'shop']);
    expect(r.stdout).toBe('hello from db\n');
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('deployment/api → pod api-7d9f8c6b5-x7k2p');
    expect(r.stderr).toContain("through the API server's port-forward");
    expect(api.requests.some((q) => q.method === 'UPGRADE' && q.path === '/api/v1/namespaces/tsmirror-system/pods/tsmirror-agent-n1/portforward')).toBe(true);
    // the pod's environment came along
    const env = await exec('deploy/api', ['printenv', 'SHOP_MODE'], ['-n', 'shop', '--quiet']);
    expect(env.stdout).toBe('k8s\n');
  });

  it('a 24 MiB download arrives intact through the port-forward', async () => {
    const r = await exec('deployment/api', ['/bin/sh', '-c', 'curl -sS --max-time 60 http://db:8080/big.bin | sha256sum'], ['-n', 'shop', '--quiet']);
    expect(r.stdout.split(' ')[0]).toBe(createHash('sha256').update(BIG).digest('hex'));
  });

  it('the namespace defaults to the kubeconfig context', async () => {
    const shopConfig = api.writeKubeconfig(dir, { namespace: 'shop', file: 'shop-config' });
    const r = await tsm(['exec', '--quiet', '--kubeconfig', shopConfig, '--target', 'sts/cache', '--', ...CURL_DB]);
    expect(r.stdout).toBe('hello from db\n');
  });

  it('pod, pod/container, statefulset, daemonset, job and replicaset targets', async () => {
    for (const [target, extra] of [
      ['pod/meshed', []], ['pod/meshed/container/app', []], ['statefulset/cache', []], ['daemonset/logger', ['--node', 'node-1']], ['ds/logger', ['--node', 'node-1']],
      ['job/migrate', []], ['rs/legacy', []],
    ] as Array<[string, string[]]>) {
      const r = await exec(target, CURL_DB, ['-n', 'shop', ...extra]);
      expect(r.stdout, `${target}: ${r.stderr}`).toBe('hello from db\n');
    }
  });

  it('container choice: default-container annotation, the first non-sidecar with a note, --container', async () => {
    const meshed = await exec('pod/meshed', CURL_DB, ['-n', 'shop']);
    expect(meshed.stderr).toContain("pod meshed has 2 containers; using 'app' (others: istio-proxy; choose with --container)");
    const annotated = await exec('pod/annotated', CURL_DB, ['-n', 'shop']);
    expect(annotated.stdout).toBe('hello from db\n');
    expect(annotated.stderr).toContain("using container 'main' of pod annotated (its kubectl.kubernetes.io/default-container annotation)");
    // Asking for the sidecar is honoured: its (made-up) container has no process on the node.
    const sidecar = await exec('pod/meshed', CURL_DB, ['-n', 'shop', '--container', 'istio-proxy']);
    expect(sidecar.code).toBe(125);
    expect(sidecar.stderr).toMatch(/no process on this node belongs to container [0-9a-f]{12}.*TSM_ERR_TARGET_NOT_FOUND/);
    const wrong = await exec('pod/meshed', CURL_DB, ['-n', 'shop', '--container', 'nope']);
    expect(wrong.stderr).toContain("pod 'meshed' has no container 'nope'; its containers: istio-proxy, app");
  });

  it('misspelt names, a workload without a ready pod and a node without an agent give helpful errors', async () => {
    const misspelt = await exec('deployment/apii', CURL_DB, ['-n', 'shop']);
    expect(misspelt.code).toBe(125);
    expect(misspelt.stderr).toContain("deployment 'apii' not found in namespace 'shop'; deployments there: api, deaf, far, worker");
    const pod = await exec('pod/nope', CURL_DB, ['-n', 'shop']);
    expect(pod.stderr).toContain("pod 'nope' not found in namespace 'shop'; pods there: annotated, api-7d9f8c6b5-x7k2p");
    // the ReplicaSet's first pod is not ready: its ready one is used
    const legacy = await exec('rs/legacy', CURL_DB, ['-n', 'shop']);
    expect(legacy.stderr).toContain('replicaset/legacy → pod legacy-w3e6r');
    const notReady = await exec('deployment/worker', CURL_DB, ['-n', 'shop']);
    expect(notReady.stderr).toContain("deployment 'worker' in namespace 'shop' has no running and ready pod (worker-7d9f8c6b5-x7k2p: Running, not ready)");
    expect(notReady.stderr).toContain('TSM_ERR_NO_READY_POD');
    const far = await exec('deployment/far', CURL_DB, ['-n', 'shop']);
    expect(far.stderr).toContain("no tsmirror agent runs on node 'node-2' (where pod far-7d9f8c6b5-x7k2p runs); agents run on: node-1");
    expect(far.stderr).toContain('TSM_ERR_NO_AGENT');
    const dsNode = await exec('ds/logger', CURL_DB, ['-n', 'shop', '--node', 'node-9']);
    expect(dsNode.stderr).toContain("daemonset 'logger' in namespace 'shop' has no pod on node 'node-9'; its pods run on: node-2, node-1");
    const deaf = await exec('deployment/deaf', CURL_DB, ['-n', 'shop']);
    expect(deaf.code).toBe(125);
    expect(deaf.stderr).toContain('the port-forward to agent tsmirror-system/tsmirror-agent-n3 through the API server dropped: error forwarding port 7777 to pod tsmirror-agent-n3');
    expect(deaf.stderr).toContain('TSM_ERR_PORT_FORWARD');
    const rollout = await exec('rollout/api', CURL_DB, ['-n', 'shop']);
    expect(rollout.stderr).toContain('this cluster has no Argo Rollouts');
    const context = await tsm(['exec', '--kubeconfig', kubeconfig, '--context', 'prod', '--target', 'deploy/api', '--', 'true']);
    expect(context.stderr).toContain('context "prod" is not in');
    expect(context.stderr).toContain('contexts there: fake');
    const { KUBECONFIG: _drop, ...env } = process.env;
    const none = await tsm(['exec', '--target', 'deploy/api', '--', 'true'], { env: { ...env, HOME: dir } });
    expect(none.stderr).toContain('no kubeconfig found (no --kubeconfig, no KUBECONFIG, no ~/.kube/config) [TSM_ERR_KUBE_CONFIG]');
  });

  it('an Argo rollout target, once the custom resource exists', async () => {
    api.registerRollouts();
    api.addDeployment('shop', 'canary', [{ pod: web }], 'Rollout');
    const r = await exec('rollout/canary', CURL_DB, ['-n', 'shop']);
    expect(r.stdout, r.stderr).toBe('hello from db\n');
  });

  it('--agent ws://… bypasses the port-forward', async () => {
    const before = api.requests.filter((q) => q.method === 'UPGRADE').length;
    const r = await exec('deployment/api', CURL_DB, ['-n', 'shop', '--agent', agent.url]);
    expect(r.stdout).toBe('hello from db\n');
    expect(api.requests.filter((q) => q.method === 'UPGRADE').length).toBe(before);
  });

  it('with --reconnect-grace 0, a dropped port-forward ends the session with a clear message and the program\'s remote sockets fail', async () => {
    const script = [
      'import socket, time, sys',
      "ip = socket.gethostbyname('db')",
      "s = socket.create_connection((ip, 8080)); print('ready', flush=True)",
      'for _ in range(100):',
      '    time.sleep(0.1)',
      '    try:',
      '        socket.create_connection((ip, 8080), timeout=5).close()',
      '    except OSError as e:',
      "        print('failed', e.errno, flush=True); sys.exit(3)",
    ].join('\n');
    const child = spawn(process.execPath, [cliPath, 'exec', '--kubeconfig', kubeconfig, '-n', 'shop', '--target', 'deploy/api', '--reconnect-grace', '0', '--', '/usr/bin/python3', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const started = Date.now();
    await pollUntil(() => stdout.includes('ready'), 20000);
    expect(stdout).toContain('ready');
    api.dropPortForwards();
    const code = await exited;
    expect(stdout).toMatch(/failed (100|104|111)/); // ENETDOWN from the session proxy
    expect(code).toBe(3);
    expect(stderr).toContain('the port-forward to agent tsmirror-system/tsmirror-agent-n1 through the API server dropped');
    expect(Date.now() - started).toBeLessThan(20000);
  });
});
