/**
 * The agent's policy, from its ConfigMap read through the (in-memory) API server:
 * protected and denied namespaces, TokenReview and SubjectAccessReview of the user, and
 * requireUserAuth. Steal itself is not needed: the session-level check runs on the hello's
 * `incoming` request.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { stringify as toYaml } from 'yaml';
import { decodeAgentMessage, encode } from '../../protocol/codec.js';
import { PROTOCOL_VERSION, type AgentMessage, type ClientHello, type TargetRef } from '../../protocol/messages.js';
import { Harness, type Pod } from '../harness/harness.js';
import { httpServerCommand } from '../harness/demo-pods.js';
import { FakeApiServer } from '../k8s/apiserver.js';
import { addAgentPod, pollUntil, runCli, startAgentProcess, stopAll, type AgentProcess } from './tsm.js';

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
    },
  });
  // bob may not port-forward in shop; everything else is allowed.
  api.authorize = (a) => !(a.user.username === 'bob' && a.namespace === 'shop' && a.subresource === 'portforward');
  api.addNode('node-1');
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
async function openRaw(target: TargetRef, extra: Partial<ClientHello> = {}): Promise<{ request: (m: Record<string, unknown>) => Promise<AgentMessage>; close: () => void }> {
  const ws = new WebSocket(agent.url);
  const messages: AgentMessage[] = [];
  ws.on('message', (d: Buffer) => messages.push(decodeAgentMessage(d)));
  await new Promise((r) => ws.once('open', r));
  ws.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, capabilities: ['tcp', 'incoming'], target, client: { version: 'test', user: 'test', host: 'test' }, ...extra }));
  const waitFor = async (pick: (m: AgentMessage) => boolean): Promise<AgentMessage> => {
    const started = Date.now();
    for (;;) {
      const m = messages.find(pick);
      if (m) return m;
      if (Date.now() - started > 10000) throw new Error(`no answer; got ${JSON.stringify(messages.map((x) => x.type))}`);
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
    const steal = await hello(inPay(), { incoming: { mode: 'steal', filtered: false }, token: 'alice-token' });
    expect(refusal(steal)).toBe('TSM_ERR_POLICY: refused by policy rule protectedNamespaces "prod-.*" (ConfigMap tsmirror-system/tsmirror-policy): unfiltered steal is not allowed in namespace prod-eu; steal with an HTTP filter, or mirror');
    expect((await hello(inPay(), { incoming: { mode: 'steal', filtered: true }, token: 'alice-token' })).type).toBe('hello');
    // only an explicit `filtered: true` counts as filtered
    expect(refusal(await hello(inPay(), { incoming: { mode: 'steal', filtered: 'yes' as never } }))).toContain('protectedNamespaces "prod-.*"');
    expect((await hello(inPay(), { incoming: { mode: 'mirror', filtered: false }, token: 'alice-token' })).type).toBe('hello');
    expect((await hello(inPay(), { token: 'alice-token' })).type).toBe('hello');
    // The namespace is the pod's, from the API: an unprotected one allows unfiltered steal.
    expect((await hello(inCart(), { incoming: { mode: 'steal', filtered: false } })).type).toBe('hello');
  });

  it('the policy holds for what a session subscribes, whatever its hello declared (a later subscribe, a match-all filter)', async () => {
    // A client that declares no incoming traffic at all, then steals: refused at the subscribe.
    const s = await openRaw(inPay(), { token: 'alice-token' });
    try {
      const unfiltered = await s.request({ type: 'port.subscribe', port: 8080, mode: 'steal' });
      expect(unfiltered).toMatchObject({ type: 'error', code: 'TSM_ERR_POLICY', message: expect.stringContaining('protectedNamespaces "prod-.*"') });
      // Filters that let every request through count as none.
      for (const filter of [{ headers: [] }, { headers: [], path: '.*' }, { headers: [], path: '/.*' }, { headers: [{ name: 'host', value: '.*' }] }, { headers: [], path: '/[^Q]*' }]) {
        const r = await s.request({ type: 'port.subscribe', port: 8080, mode: 'steal', filter });
        expect(r, JSON.stringify(filter)).toMatchObject({ type: 'error', code: 'TSM_ERR_POLICY' });
      }
    } finally {
      s.close();
    }
    // Declared filtered, subscribing with an empty filter: refused too.
    const declared = await openRaw(inPay(), { token: 'alice-token', incoming: { mode: 'steal', filtered: true } });
    try {
      const r = await declared.request({ type: 'port.subscribe', port: 8080, mode: 'steal', filter: { headers: [] } });
      expect(r).toMatchObject({ type: 'error', code: 'TSM_ERR_POLICY' });
      // A filter that selects some requests is allowed, as before.
      const ok = await declared.request({ type: 'port.subscribe', port: 8080, mode: 'steal', filter: { headers: [{ name: 'x-dev', value: 'alice' }] } });
      expect(ok).toMatchObject({ type: 'result' });
    } finally {
      declared.close();
    }
  });

  it('a denied namespace refuses every session; the ConfigMap is re-read when it changes', async () => {
    expect((await hello(inCart())).type).toBe('hello');
    setPolicy({ ...BASE_POLICY, deniedNamespaces: ['vault', 'sh.p'] });
    await waitForPolicy('denied ["vault","sh.p"]');
    expect(refusal(await hello(inCart(), { incoming: { mode: 'mirror', filtered: false } })))
      .toBe('TSM_ERR_POLICY: refused by policy rule deniedNamespaces "sh.p" (ConfigMap tsmirror-system/tsmirror-policy): no session may target namespace shop');
    setPolicy(BASE_POLICY);
    await waitForPolicy('denied ["vault"]');
    expect((await hello(inCart())).type).toBe('hello');
  });

  it('a token the TokenReview rejects is refused', async () => {
    const r = await hello(inCart(), { token: 'forged-token' });
    expect(refusal(r)).toBe('TSM_ERR_UNAUTHENTICATED: the API server did not accept your token (TokenReview: token not recognised)');
  });

  it('a user the SubjectAccessReview denies pods/portforward in the target namespace is refused', async () => {
    const r = await hello(inCart(), { token: 'bob-token' });
    expect(refusal(r)).toContain('user bob may not create pods/portforward in namespace shop (SubjectAccessReview)');
    expect((await hello(inPay(), { token: 'bob-token' })).type).toBe('hello');
  });

  it('requireUserAuth refuses sessions without a token', async () => {
    setPolicy({ ...BASE_POLICY, requireUserAuth: true });
    await waitForPolicy('requireUserAuth true');
    try {
      expect(refusal(await hello(inCart()))).toContain('TSM_ERR_POLICY: refused by policy rule requireUserAuth: true (ConfigMap tsmirror-system/tsmirror-policy): the session carries no bearer token');
      expect((await hello(inCart(), { token: 'alice-token' })).type).toBe('hello');
    } finally {
      setPolicy(BASE_POLICY);
      await waitForPolicy('requireUserAuth false');
    }
  });

  it('targets that are not a pod on the node are refused; an invalid policy refuses everything until fixed', async () => {
    expect(refusal(await hello({ kind: 'pid', pid: process.pid }))).toContain('refused by policy rule "targets are pods"');
    expect(refusal(await hello({ kind: 'none' }))).toContain('(targetless) is not a container of a pod on node node-1');
    logMark = agent.log().length;
    api.put({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'tsmirror-policy', namespace: 'tsmirror-system' }, data: { 'policy.yaml': 'protectedNamespaces: ["(unclosed"]\n' } });
    await waitForPolicy('is invalid, refusing sessions');
    expect(refusal(await hello(inCart()))).toContain('TSM_ERR_POLICY: the policy in ConfigMap tsmirror-system/tsmirror-policy is invalid');
    setPolicy(BASE_POLICY);
    await waitForPolicy('policy: loaded');
    expect((await hello(inCart())).type).toBe('hello');
  });

  it('the health listener (for the kubelet probes) answers /healthz and nothing else', async () => {
    const ok = await fetch(`http://127.0.0.1:${healthPort}/healthz`);
    expect(ok.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${healthPort}/status`)).status).toBe(404);
  });

  it('the CLI sends its kubeconfig token: alice gets a session, bob is refused naming the rule', async () => {
    const aliceConfig = api.writeKubeconfig(dir, { token: 'alice-token', file: 'alice' });
    const bobConfig = api.writeKubeconfig(dir, { token: 'bob-token', file: 'bob' });
    const alice = await runCli(['exec', '--quiet', '--kubeconfig', aliceConfig, '-n', 'shop', '--target', 'pod/cart-0', '--', 'curl', '-sS', 'http://cart:8080/'], { timeoutMs: 60000 });
    expect(alice.stdout, alice.stderr).toBe('cart\n');
    // bob may port-forward to the agent (tsmirror-system) but not in shop: the agent says no.
    const bob = await runCli(['exec', '--kubeconfig', bobConfig, '-n', 'shop', '--target', 'pod/cart-0', '--', 'true'], { timeoutMs: 60000 });
    expect(bob.code).toBe(125);
    expect(bob.stderr).toContain('user bob may not create pods/portforward in namespace shop (SubjectAccessReview) [TSM_ERR_POLICY]');
  });
});
