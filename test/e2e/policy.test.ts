/**
 * The cluster agent's admission of sessions, through the (in-memory) API server: its
 * policy ConfigMap (protected and denied namespaces) and the session's identity, a Session
 * object (sessions.tsmirror.dev) that the user created (the fake API server runs the
 * shipped admission policy's CEL on it) and the agent verifies: fresh, unused, for this
 * node and target, with the hello's secret. Steal itself is not needed: the session-level
 * checks run on the Session's declared mode and on each port.subscribe.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { stringify as toYaml } from 'yaml';
import { decodeAgentMessage, encode } from '../../protocol/codec.js';
import { newSessionSecret, sessionSecretHash, type SessionSpec } from '../../common/session-object.js';
import { PROTOCOL_VERSION, type AgentMessage, type ClientHello, type TargetRef } from '../../protocol/messages.js';
import { Harness, type Pod } from '../harness/harness.js';
import { httpServerCommand } from '../harness/demo-pods.js';
import { FakeApiServer } from '../k8s/apiserver.js';
import { addAgentPod, addSessionAdmission, pollUntil, runCli, startAgentProcess, startCli, stopAll, stopCli, type AgentProcess } from './tsm.js';

let harness: Harness;
let api: FakeApiServer;
let agent: AgentProcess;
let pay: Pod;
let cart: Pod;
let dir: string;
let healthPort: number;

/** Where the agent's log stood at the last policy change: waits look only after it. */
let logMark = 0;

function setPolicy(policy: Record<string, unknown>): void {
  logMark = agent ? agent.log().length : 0;
  api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'tsmirror-policy', namespace: 'tsmirror-system' }, data: { 'policy.yaml': toYaml(policy) } });
}
const BASE_POLICY = { protectedNamespaces: ['prod-.*'], deniedNamespaces: ['vault'] };

beforeAll(async () => {
  harness = await Harness.create({ name: 'policy' });
  [pay, cart] = await Promise.all([
    harness.addPod({ name: 'pay', namespace: 'prod-eu', command: httpServerCommand(8080), readyPort: 8080 }),
    harness.addPod({ name: 'cart', namespace: 'shop', command: httpServerCommand(8080), files: { '/data/index.html': 'cart\n' }, readyPort: 8080 }),
  ]);
  api = await FakeApiServer.start({
    users: {
      'admin-token': { username: 'admin', groups: ['system:masters'] },
      'agent-token': { username: 'system:serviceaccount:tsmirror-system:tsmirror-agent', groups: ['system:serviceaccounts'] },
      'alice-token': { username: 'alice', groups: ['dev'] },
      'bob-token': { username: 'bob', groups: ['dev'] },
      'carol-token': { username: 'carol', groups: ['dev'] },
    },
  });
  // bob may not port-forward in shop; only alice may steal or write pod files (the mode
  // grants, ClusterRoles tsmirror-steal and tsmirror-write-files); everything else is allowed.
  api.authorize = (a) => {
    if (a.group === 'tsmirror.dev' && (a.subresource === 'steal' || a.subresource === 'writefiles')) return a.user.username === 'alice';
    return !(a.user.username === 'bob' && a.namespace === 'shop' && a.subresource === 'portforward');
  };
  api.addNode('node-1');
  addSessionAdmission(api);
  api.namespace('tsmirror-system');
  setPolicy(BASE_POLICY);
  api.addHarnessPod(pay, { name: 'pay-0' });
  api.addHarnessPod(cart, { name: 'cart-0' });
  dir = mkdtempSync(join(tmpdir(), 'tsm-policy-'));
  const agentConfig = api.writeKubeconfig(dir, { token: 'agent-token', file: 'agent' });
  // Port 0: the agent takes a free port and says which (a fixed guess once collided in CI).
  agent = await startAgentProcess(['--kubeconfig', agentConfig, '--policy-configmap', 'tsmirror-system/tsmirror-policy', '--policy-poll', '100', '--node-name', 'node-1', '--health-listen', '127.0.0.1:0']);
  healthPort = Number(/health endpoint on http:\/\/127\.0\.0\.1:(\d+)\/healthz/.exec(agent.log())?.[1]);
  addAgentPod(api, agent, { name: 'tsmirror-agent-n1' });
}, 120000);

afterAll(() => stopAll({ agent, api, harness, dirs: [dir] }));

interface SessionOptions {
  incoming?: SessionSpec['mode']['incoming'];
  filtered?: boolean;
  files?: SessionSpec['mode']['files'];
  node?: string;
  /** Age at creation, in ms (the agent accepts only fresh Sessions). */
  age?: number;
  /** Put in another namespace, or naming another target. */
  namespace?: string;
  for?: Pod;
}
let sessions = 0;

/**
 * A Session object as the API server would hold it after admitting alice's create (stored
 * directly: these tests are about what the agent accepts), and the hello fields naming it.
 */
function sessionFor(pod: Pod, o: SessionOptions = {}): { session: { namespace: string; name: string }; secret: string } {
  const secret = newSessionSecret();
  const target = o.for ?? pod;
  const namespace = o.namespace ?? pod.namespace;
  const name = `s-${++sessions}`;
  api.put({
    apiVersion: 'tsmirror.dev/v1alpha1', kind: 'Session',
    metadata: { name, namespace, creationTimestamp: new Date(Date.now() - (o.age ?? 0)).toISOString() },
    spec: {
      user: 'alice', target: { pod: `${target.name}-0`, container: target.name, containerId: `containerd://${target.containerId}` },
      mode: { files: o.files ?? 'read', incoming: o.incoming ?? 'none', filtered: o.filtered ?? false }, secretHash: sessionSecretHash(secret), node: o.node ?? 'node-1',
    },
  });
  return { session: { namespace, name }, secret };
}

/** Says hello by hand; resolves with the agent's answer (hello or session.error). */
async function hello(target: TargetRef, extra: Partial<ClientHello> = {}): Promise<AgentMessage> {
  const ws = new WebSocket(agent.url);
  const messages: AgentMessage[] = [];
  ws.on('message', (d: Buffer) => messages.push(decodeAgentMessage(d)));
  await new Promise((r) => ws.once('open', r));
  ws.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, capabilities: ['tcp'], target, client: { version: 'test', user: 'test', host: 'test' }, ...extra }));
  await pollUntil(() => messages.some((m) => m.type === 'hello' || m.type === 'session.error'), 10000, 10);
  ws.terminate();
  const answer = messages.find((m) => m.type === 'hello' || m.type === 'session.error');
  if (!answer) throw new Error('no answer to the hello');
  return answer;
}

/** A raw session kept open for requests: each resolves with the agent's result or error message. */
async function openRaw(target: TargetRef, extra: Partial<ClientHello> = {}): Promise<{ request: (m: Record<string, unknown>) => Promise<AgentMessage>; next: (pick: (m: AgentMessage) => boolean, ms?: number) => Promise<AgentMessage>; close: () => void }> {
  const ws = new WebSocket(agent.url);
  const messages: AgentMessage[] = [];
  ws.on('message', (d: Buffer) => messages.push(decodeAgentMessage(d)));
  await new Promise((r) => ws.once('open', r));
  ws.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, capabilities: ['tcp', 'incoming'], target, client: { version: 'test', user: 'test', host: 'test' }, ...extra }));
  const waitFor = async (pick: (m: AgentMessage) => boolean, ms = 10000): Promise<AgentMessage> => {
    const started = Date.now();
    for (;;) {
      const m = messages.find(pick);
      if (m) return m;
      if (Date.now() - started > ms) throw new Error(`no answer; got ${JSON.stringify(messages.map((x) => x.type))}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const first = await waitFor((m) => m.type === 'hello' || m.type === 'session.error');
  if (first.type !== 'hello') throw new Error(refusal(first));
  let id = 0;
  return {
    request: async (m) => {
      const mine = ++id;
      ws.send(encode({ ...m, id: mine } as never));
      return waitFor((x) => (x.type === 'result' || x.type === 'error') && x.id === mine);
    },
    next: waitFor,
    close: () => ws.close(),
  };
}

const inPay = (): TargetRef => ({ kind: 'container', id: pay.containerId });
const inCart = (): TargetRef => ({ kind: 'container', id: cart.containerId });
const refusal = (m: AgentMessage): string => (m.type === 'session.error' ? `${m.code}: ${m.message}` : `accepted (${m.type})`);

async function waitForPolicy(marker: string): Promise<void> {
  const since = (): string => agent.log().slice(logMark);
  await pollUntil(() => since().includes(marker), 5000, 20);
  expect(since()).toContain(marker);
}

describe('policy', () => {
  it('unfiltered steal into a protected namespace is refused, naming the rule; filtered steal and mirror are allowed', async () => {
    const steal = await hello(inPay(), { incoming: { mode: 'steal', filtered: false }, ...sessionFor(pay, { incoming: 'steal' }) });
    expect(refusal(steal)).toBe('TSM_ERR_POLICY: refused by policy rule protectedNamespaces "prod-.*" (ConfigMap tsmirror-system/tsmirror-policy): unfiltered steal is not allowed in namespace prod-eu; steal with an HTTP filter, or mirror');
    // The Session's declared mode is judged too, whatever the hello says.
    expect(refusal(await hello(inPay(), sessionFor(pay, { incoming: 'steal' })))).toContain('protectedNamespaces "prod-.*"');
    expect((await hello(inPay(), { incoming: { mode: 'steal', filtered: true }, ...sessionFor(pay, { incoming: 'steal', filtered: true }) })).type).toBe('hello');
    // only an explicit `filtered: true` counts as filtered
    expect(refusal(await hello(inPay(), { incoming: { mode: 'steal', filtered: 'yes' as never }, ...sessionFor(pay, { incoming: 'steal', filtered: true }) }))).toContain('protectedNamespaces "prod-.*"');
    expect((await hello(inPay(), { incoming: { mode: 'mirror', filtered: false }, ...sessionFor(pay, { incoming: 'mirror' }) })).type).toBe('hello');
    expect((await hello(inPay(), sessionFor(pay))).type).toBe('hello');
    // The namespace is the pod's, from the API: an unprotected one allows unfiltered steal.
    expect((await hello(inCart(), { incoming: { mode: 'steal', filtered: false }, ...sessionFor(cart, { incoming: 'steal' }) })).type).toBe('hello');
  });

  it('what a session subscribes is held to its Session\'s mode and the policy, whatever its hello declared (a later subscribe, a match-all filter)', async () => {
    // A Session that declared no incoming traffic, then a steal: refused at the subscribe.
    const s = await openRaw(inPay(), sessionFor(pay));
    try {
      for (const mode of ['steal', 'mirror']) {
        const r = await s.request({ type: 'port.subscribe', port: 8080, mode });
        expect(r).toMatchObject({ type: 'error', code: 'TSM_ERR_POLICY', message: expect.stringContaining('declared no incoming traffic, so this session may not') });
      }
    } finally {
      s.close();
    }
    // A mirroring Session may not steal.
    const mirror = await openRaw(inCart(), sessionFor(cart, { incoming: 'mirror' }));
    try {
      expect(await mirror.request({ type: 'port.subscribe', port: 8080, mode: 'steal', filter: { headers: [{ name: 'x-dev', value: 'alice' }] } }))
        .toMatchObject({ type: 'error', code: 'TSM_ERR_POLICY', message: expect.stringContaining('declared mirror, so this session may not steal') });
    } finally {
      mirror.close();
    }
    // Declared filtered steal, subscribing without a filter or with one that lets every request through: refused.
    const declared = await openRaw(inPay(), { incoming: { mode: 'steal', filtered: true }, ...sessionFor(pay, { incoming: 'steal', filtered: true }) });
    try {
      for (const filter of [undefined, { headers: [] }, { headers: [], path: '.*' }, { headers: [], path: '/.*' }, { headers: [{ name: 'host', value: '.*' }] }, { headers: [], path: '/[^Q]*' }]) {
        const r = await declared.request({ type: 'port.subscribe', port: 8080, mode: 'steal', ...(filter ? { filter } : {}) });
        expect(r, JSON.stringify(filter)).toMatchObject({ type: 'error', code: 'TSM_ERR_POLICY' });
      }
      // A filter that selects some requests is allowed, as before.
      const ok = await declared.request({ type: 'port.subscribe', port: 8080, mode: 'steal', filter: { headers: [{ name: 'x-dev', value: 'alice' }] } });
      expect(ok).toMatchObject({ type: 'result' });
    } finally {
      declared.close();
    }
  });

  it('a denied namespace refuses every session; the ConfigMap is re-read when it changes', async () => {
    expect((await hello(inCart(), sessionFor(cart))).type).toBe('hello');
    setPolicy({ ...BASE_POLICY, deniedNamespaces: ['vault', 'sh.p'] });
    await waitForPolicy('denied ["vault","sh.p"]');
    expect(refusal(await hello(inCart(), { incoming: { mode: 'mirror', filtered: false }, ...sessionFor(cart, { incoming: 'mirror' }) })))
      .toBe('TSM_ERR_POLICY: refused by policy rule deniedNamespaces "sh.p" (ConfigMap tsmirror-system/tsmirror-policy): no session may target namespace shop');
    setPolicy(BASE_POLICY);
    await waitForPolicy('denied ["vault"]');
    expect((await hello(inCart(), sessionFor(cart))).type).toBe('hello');
  });

  it('targets that are not a pod on the node are refused; an invalid policy refuses everything until fixed', async () => {
    expect(refusal(await hello({ kind: 'pid', pid: process.pid }))).toContain('refused by policy rule "targets are pods"');
    expect(refusal(await hello({ kind: 'none' }))).toContain('(targetless) is not a container of a pod on node node-1');
    logMark = agent.log().length;
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'tsmirror-policy', namespace: 'tsmirror-system' }, data: { 'policy.yaml': 'protectedNamespaces: ["(unclosed"]\n' } });
    await waitForPolicy('is invalid, refusing sessions');
    expect(refusal(await hello(inCart(), sessionFor(cart)))).toContain('TSM_ERR_POLICY: the policy in ConfigMap tsmirror-system/tsmirror-policy is invalid');
    setPolicy(BASE_POLICY);
    await waitForPolicy('policy: loaded');
    expect((await hello(inCart(), sessionFor(cart))).type).toBe('hello');
  });

  it('the health listener (for the kubelet probes) answers /healthz and nothing else', async () => {
    const ok = await fetch(`http://127.0.0.1:${healthPort}/healthz`);
    expect(ok.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${healthPort}/status`)).status).toBe(404);
  });
});

describe('session identity (Session objects)', () => {
  it('a raw client with only port-forward access (no Session object) is refused; so is an old CLI that sends a bearer token', async () => {
    expect(refusal(await hello(inCart()))).toBe('TSM_ERR_UNAUTHENTICATED: this agent (cluster mode) serves only sessions backed by a Session object (sessions.tsmirror.dev) that their user created; none came with this connection');
    expect(refusal(await hello(inCart(), { token: 'alice-token' }))).toContain('TSM_ERR_UNAUTHENTICATED: this CLI sent a bearer token, as tsmirror did before Session objects');
    expect(refusal(await hello(inCart(), { session: { namespace: 'shop', name: 'nope' }, secret: 'x' }))).toBe('TSM_ERR_UNAUTHENTICATED: there is no Session shop/nope; it must exist while the session opens');
  });

  it('every session is refused while the cluster does not run the Session admission policy (it is what ties a Session to its creator)', async () => {
    const binding = api.get('admissionregistration.k8s.io/v1', 'ValidatingAdmissionPolicyBinding', '', 'tsmirror-sessions');
    // The agent trusts a check for 10 s: wait that out once (the first sessions above were checked).
    api.delete('admissionregistration.k8s.io/v1', 'ValidatingAdmissionPolicyBinding', '', 'tsmirror-sessions');
    try {
      await new Promise((r) => setTimeout(r, 10_500));
      expect(refusal(await hello(inCart(), sessionFor(cart)))).toBe('TSM_ERR_POLICY: this agent refuses sessions until the cluster checks Session objects: there is no ValidatingAdmissionPolicyBinding tsmirror-sessions');
    } finally {
      if (binding) api.put(binding);
    }
    expect((await hello(inCart(), sessionFor(cart))).type).toBe('hello');
  });

  it('a wrong, reused or expired secret is refused; so is a Session for another target, node or namespace', async () => {
    const good = sessionFor(cart);
    expect(refusal(await hello(inCart(), { ...good, secret: newSessionSecret() }))).toBe(`TSM_ERR_UNAUTHENTICATED: the secret in this hello does not match the Session shop/${good.session.name}`);
    expect(refusal(await hello(inCart(), { session: good.session }))).toContain('the secret in this hello does not match');
    const first = await openRaw(inCart(), good);
    try {
      // Claimed once: the status says by which agent, and a second hello with it is refused.
      const claimed = api.get('tsmirror.dev/v1alpha1', 'Session', 'shop', good.session.name) as { status?: { claimedBy?: string } };
      expect(claimed.status?.claimedBy).toMatch(/ on node-1$/);
      expect(refusal(await hello(inCart(), good))).toContain(`the Session shop/${good.session.name} was already used (by `);
      // Even when the claim in its status is lost (the agent remembers the uids it claimed).
      delete (api.get('tsmirror.dev/v1alpha1', 'Session', 'shop', good.session.name) as { status?: unknown }).status;
      expect(refusal(await hello(inCart(), good))).toBe(`TSM_ERR_UNAUTHENTICATED: the Session shop/${good.session.name} was already used; each opens one session`);
    } finally {
      first.close();
    }
    // When its session ends, the agent deletes it.
    expect(await pollUntil(() => api.get('tsmirror.dev/v1alpha1', 'Session', 'shop', good.session.name) === undefined, 5000, 20)).toBe(true);
    expect(refusal(await hello(inCart(), sessionFor(cart, { age: 61_000 })))).toMatch(/was created 61 s ago; a Session opens a session only within 60 s of its creation/);
    expect(refusal(await hello(inCart(), sessionFor(cart, { node: 'node-2' })))).toContain('is for node node-2, and this agent runs on node-1');
    // In cart's namespace but naming pay's container: not this target.
    expect(refusal(await hello(inCart(), sessionFor(cart, { for: pay })))).toMatch(/is for pod pay-0 container containerd:\/\/[0-9a-f]+…, not this session's target \(pod cart-0 container cart\)/);
    // A Session of pay's namespace presented for cart.
    expect(refusal(await hello(inCart(), sessionFor(pay)))).toContain("is in namespace prod-eu, but the target pod shop/cart-0 is in shop; a Session must live in its target's namespace");
  });

  it('the Session\'s files mode is enforced: a read Session may not write, whatever the hello declared', async () => {
    const s = await openRaw(inCart(), { files: { mode: 'write' }, ...sessionFor(cart), capabilities: ['tcp', 'files'] });
    try {
      const r = await s.request({ type: 'fs.change', op: 'mkdir', path: '/data/new-dir', mode: 0o755, to: '' });
      expect(r).toMatchObject({ type: 'error', code: 'TSM_ERR_FILE', message: expect.stringContaining('may only read') });
    } finally {
      s.close();
    }
  });

  it('deleting the Session object ends the running session', async () => {
    const made = sessionFor(cart);
    const s = await openRaw(inCart(), made);
    try {
      api.delete('tsmirror.dev/v1alpha1', 'Session', 'shop', made.session.name);
      const ended = await s.next((m) => m.type === 'session.error', 5000);
      expect(refusal(ended)).toBe(`TSM_ERR_SESSION_DELETED: the Session object shop/${made.session.name} was deleted, which ends this session`);
    } finally {
      s.close();
    }
  });

  it('the CLI creates the Session with the user\'s credentials: alice\'s is listed while it runs and deleted at exit; bob and carol are refused naming the missing grant', async () => {
    const aliceConfig = api.writeKubeconfig(dir, { token: 'alice-token', file: 'alice' });
    const bobConfig = api.writeKubeconfig(dir, { token: 'bob-token', file: 'bob' });
    const carolConfig = api.writeKubeconfig(dir, { token: 'carol-token', file: 'carol' });
    const listSessions = () => (api.list('tsmirror.dev/v1alpha1', 'Session') as unknown as Array<{ metadata: { namespace?: string; name: string }; spec: SessionSpec; status?: { claimedBy?: string } }>)
      .filter((o) => !/^s-\d+$/.test(o.metadata.name));
    // A CLI stopped before it has set up its signal handling dies at once: its agent keeps the
    // session (and the Session) for the reconnect grace, kept short here.
    const running = startCli(['exec', '--quiet', '--kubeconfig', aliceConfig, '-n', 'shop', '--target', 'pod/cart-0', '--steal', '--reconnect-grace', '1', '--', 'sleep', '30']);
    try {
      expect(await pollUntil(() => listSessions().some((o) => o.status?.claimedBy), 20000, 50), running.err()).toBe(true);
      const [live] = listSessions();
      expect(live?.metadata.namespace).toBe('shop');
      expect(live?.spec).toMatchObject({ user: 'alice', target: { pod: 'cart-0', container: 'cart' }, mode: { files: 'read', incoming: 'steal', filtered: false }, node: 'node-1' });
      // The agent's /status names the user from the Session, and says how sessions are authenticated.
      const status = await (await fetch(`${agent.url.replace('ws:', 'http:')}/status`)).json() as { auth: string; sessions: Array<{ user: string }> };
      expect(status.auth).toBe('cluster');
      expect(status.sessions.map((x) => x.user)).toContain('alice');
      // Created by alice herself; the agent only read it (and claimed it through its status).
      const posts = api.requests.filter((q) => q.path === '/apis/tsmirror.dev/v1alpha1/namespaces/shop/sessions' && q.method === 'POST');
      expect(posts.map((q) => q.user)).toEqual(['alice']);
      expect(new Set(api.requests.filter((q) => q.path.startsWith(`/apis/tsmirror.dev/v1alpha1/namespaces/shop/sessions/${live?.metadata.name}`) && q.method !== 'DELETE').map((q) => q.user)))
        .toEqual(new Set(['system:serviceaccount:tsmirror-system:tsmirror-agent']));
    } finally {
      await stopCli(running.child);
    }
    expect(await pollUntil(() => listSessions().length === 0, 10000, 50), JSON.stringify(api.requests.filter((q) => q.method === 'DELETE')) + running.err()).toBe(true);
    const alice = await runCli(['exec', '--quiet', '--kubeconfig', aliceConfig, '-n', 'shop', '--target', 'pod/cart-0', '--', 'curl', '-sS', 'http://cart:8080/'], { timeoutMs: 60000 });
    expect(alice.stdout, alice.stderr).toBe('cart\n');
    expect(listSessions()).toEqual([]);
    // `kubectl delete` of a running session's Session ends it, and the CLI says so.
    const doomed = startCli(['exec', '--quiet', '--kubeconfig', aliceConfig, '-n', 'shop', '--target', 'pod/cart-0', '--', 'sleep', '30']);
    try {
      expect(await pollUntil(() => listSessions().some((o) => o.status?.claimedBy), 20000, 50), doomed.err()).toBe(true);
      const [victim] = listSessions();
      api.delete('tsmirror.dev/v1alpha1', 'Session', 'shop', victim?.metadata.name ?? '');
      await doomed.waitFor(new RegExp(`the session ended: TSM_ERR_SESSION_DELETED: the Session object shop/${victim?.metadata.name} was deleted, which ends this session`), 10000);
    } finally {
      await stopCli(doomed.child);
    }
    // bob may port-forward to the agent (tsmirror-system) but not in shop: the API server's admission says no.
    const bob = await runCli(['exec', '--kubeconfig', bobConfig, '-n', 'shop', '--target', 'pod/cart-0', '--', 'true'], { timeoutMs: 60000 });
    expect(bob.code).toBe(125);
    expect(bob.stderr).toContain('a tsmirror session needs create pods/portforward in namespace shop, which bob is not allowed: ask your cluster admin to bind ClusterRole tsmirror-user in namespace shop [TSM_ERR_KUBE_FORBIDDEN]');
    // carol may mirror, not steal nor write pod files.
    const carolMirror = await runCli(['exec', '--quiet', '--kubeconfig', carolConfig, '-n', 'shop', '--target', 'pod/cart-0', '--mirror', '--', 'true'], { timeoutMs: 60000 });
    expect(carolMirror.code, carolMirror.stderr).toBe(0);
    const carol = await runCli(['exec', '--kubeconfig', carolConfig, '-n', 'shop', '--target', 'pod/cart-0', '--steal', '--', 'true'], { timeoutMs: 60000 });
    expect(carol.code).toBe(125);
    expect(carol.stderr).toContain('stealing traffic needs create sessions/steal (group tsmirror.dev) in namespace shop, which carol is not allowed: ask your cluster admin to bind ClusterRole tsmirror-steal in namespace shop [TSM_ERR_KUBE_FORBIDDEN]');
    const carolWrite = await runCli(['exec', '--kubeconfig', carolConfig, '-n', 'shop', '--target', 'pod/cart-0', '--fs-mode', 'write', '--', 'true'], { timeoutMs: 60000 });
    expect(carolWrite.stderr).toContain('writing pod files needs create sessions/writefiles (group tsmirror.dev) in namespace shop, which carol is not allowed');
    expect(listSessions()).toEqual([]);
  });
});
