import { describe, expect, it } from 'vitest';
import { newSessionSecret, sessionSecretHash, type SessionObject } from '../common/session-object.js';
import { PROTOCOL_VERSION, type ClientHello } from '../protocol/messages.js';
import type { AgentKube, PodRef } from './kube.js';
import { verifySession, watchSession } from './session-identity.js';

const ID = 'c'.repeat(64);
const pod: PodRef = { namespace: 'shop', name: 'cart-0', container: 'cart', containerId: ID };
let n = 0;

function fixture(overrides: { created?: number; claimed?: string } = {}) {
  const secret = newSessionSecret();
  const object: SessionObject = {
    apiVersion: 'tsmirror.dev/v1alpha1', kind: 'Session',
    metadata: { name: `s${++n}`, namespace: 'shop', uid: `uid-${n}`, resourceVersion: '7', creationTimestamp: new Date(overrides.created ?? Date.now()).toISOString() },
    spec: { user: 'alice', target: { pod: 'cart-0', container: 'cart', containerId: `containerd://${ID}` }, mode: { files: 'read', incoming: 'mirror', filtered: false }, secretHash: sessionSecretHash(secret), node: 'node-1' },
    ...(overrides.claimed ? { status: { claimedBy: overrides.claimed } } : {}),
  };
  const claims: string[] = [];
  let stored: SessionObject | undefined = object;
  let conflict = false;
  const kube: AgentKube = {
    podsOfContainer: async () => [pod],
    readConfigMap: async () => undefined,
    sessionAdmissionProblem: async () => undefined,
    readSession: async (ns, name) => (stored && ns === 'shop' && name === object.metadata.name ? stored : undefined),
    claimSession: async (s, by) => {
      claims.push(`${s.metadata.resourceVersion} ${by}`);
      return !conflict;
    },
    deleteSession: async () => {
      stored = undefined;
    },
  };
  const hello = (extra: Partial<ClientHello> = {}): ClientHello => ({
    type: 'hello', protocol: PROTOCOL_VERSION, capabilities: [], target: { kind: 'container', id: ID }, client: { version: 't', user: 't', host: 't' },
    session: { namespace: 'shop', name: object.metadata.name }, secret, ...extra,
  });
  return { kube, hello, object, claims, remove: () => (stored = undefined), conflict: () => (conflict = true) };
}

describe('verifySession', () => {
  it('accepts a fresh, unused Session for this node and target with the right secret, and claims it with the version it read', async () => {
    const f = fixture();
    const { verified, pod: chosen } = await verifySession(f.kube, f.hello(), [pod], 'node-1', 'agent-x');
    expect(verified.spec.user).toBe('alice');
    expect(chosen).toEqual(pod);
    expect(f.claims).toEqual(['7 agent-x on node-1']);
    // one secret, one session
    await expect(verifySession(f.kube, f.hello(), [pod], 'node-1', 'agent-x')).rejects.toThrow(/was already used; each opens one session/);
  });

  it('refuses a stale, claimed or concurrently claimed Session, a wrong secret, node or target', async () => {
    const stale = fixture({ created: Date.now() - 61_000 });
    await expect(verifySession(stale.kube, stale.hello(), [pod], 'node-1', 'a')).rejects.toThrow(/created 61 s ago/);
    const claimed = fixture({ claimed: 'agent-y on node-1' });
    await expect(verifySession(claimed.kube, claimed.hello(), [pod], 'node-1', 'a')).rejects.toThrow(/already used \(by agent-y on node-1\)/);
    const raced = fixture();
    raced.conflict();
    await expect(verifySession(raced.kube, raced.hello(), [pod], 'node-1', 'a')).rejects.toThrow(/claimed by another session at the same moment/);
    const f = fixture();
    await expect(verifySession(f.kube, f.hello({ secret: newSessionSecret() }), [pod], 'node-1', 'a')).rejects.toThrow(/secret in this hello does not match/);
    await expect(verifySession(f.kube, f.hello(), [pod], 'node-2', 'a')).rejects.toThrow(/is for node node-1, and this agent runs on node-2/);
    await expect(verifySession(f.kube, f.hello(), [{ ...pod, name: 'other-0' }], 'node-1', 'a')).rejects.toThrow(/not this session's target/);
    await expect(verifySession(f.kube, f.hello(), [{ ...pod, containerId: 'd'.repeat(64) }], 'node-1', 'a')).rejects.toThrow(/not this session's target/);
    const { session: _dropped, ...anonymous } = f.hello();
    await expect(verifySession(f.kube, anonymous as ClientHello, [pod], 'node-1', 'a')).rejects.toThrow(/none came with this connection/);
  });
});

describe('watchSession', () => {
  it('ends the session when its Session is deleted, and deletes it when the session ends', async () => {
    const f = fixture();
    const { verified } = await verifySession(f.kube, f.hello(), [pod], 'node-1', 'a');
    const ended = await new Promise<string>((resolve) => {
      const stop = watchSession(f.kube, verified, (why) => resolve(`${why.code} ${why.message}`), () => undefined, 10);
      setTimeout(() => f.remove(), 30);
      setTimeout(() => stop(), 2000).unref();
    });
    expect(ended).toBe(`TSM_ERR_SESSION_DELETED the Session object shop/${verified.object.metadata.name} was deleted, which ends this session`);
    const g = fixture();
    const second = await verifySession(g.kube, g.hello(), [pod], 'node-1', 'a');
    watchSession(g.kube, second.verified, () => undefined, () => undefined, 10)();
    await new Promise((r) => setTimeout(r, 10));
    expect(await g.kube.readSession('shop', second.verified.object.metadata.name)).toBeUndefined();
  });
});
