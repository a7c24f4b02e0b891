/**
 * The in-memory API server answers @kubernetes/client-node as a cluster would: selectors,
 * ownership, discovery, reviews, and 401/403/404 in Kubernetes' Status shape.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthorizationV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeApiServer, matchesLabelSelector } from './apiserver.js';

let api: FakeApiServer;
let dir: string;
let core: CoreV1Api;

beforeAll(async () => {
  api = await FakeApiServer.start({ users: { 'admin-token': { username: 'admin', groups: [] }, 'eve-token': { username: 'eve', groups: [] } } });
  api.authorize = (a) => !(a.user.username === 'eve' && a.namespace === 'secret');
  dir = mkdtempSync(join(tmpdir(), 'tsm-fakeapi-'));
  const kc = new KubeConfig();
  kc.loadFromFile(api.writeKubeconfig(dir));
  core = kc.makeApiClient(CoreV1Api);
  api.addNode('node-1');
  api.addDeployment('shop', 'api', [{ ready: true }, { ready: false, node: 'node-2' }]);
  api.addPod({ name: 'lone', namespace: 'shop', labels: { tier: 'db', app: 'x' }, containers: [{ name: 'c' }] });
});

afterAll(async () => {
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the fake API server', () => {
  it('implements label selector syntax', () => {
    const labels = { app: 'api', tier: 'web' };
    expect(matchesLabelSelector('app=api,tier in (web,db)', labels)).toBe(true);
    expect(matchesLabelSelector('app==api,!missing', labels)).toBe(true);
    expect(matchesLabelSelector('tier notin (web)', labels)).toBe(false);
    expect(matchesLabelSelector('app!=api', labels)).toBe(false);
    expect(matchesLabelSelector('tier', labels)).toBe(true);
  });

  it('lists pods through client-node with label and field selectors, with kubelet-shaped status', async () => {
    const byLabel = await core.listNamespacedPod({ namespace: 'shop', labelSelector: 'app=api' });
    expect(byLabel.items.map((p) => p.metadata?.name)).toEqual(['api-7d9f8c6b5-q9m4z', 'api-7d9f8c6b5-x7k2p']);
    const onNode = await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-2' });
    expect(onNode.items.map((p) => p.metadata?.name)).toEqual(['api-7d9f8c6b5-q9m4z']);
    const pod = byLabel.items[1];
    expect(pod?.status?.containerStatuses?.[0]?.containerID).toMatch(/^containerd:\/\/[0-9a-f]{64}$/);
    expect(pod?.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(pod?.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'ReplicaSet', name: 'api-7d9f8c6b5', controller: true });
  });

  it('answers 404 and 403 as Kubernetes Status objects, and SelfSubjectAccessReview from the same rules', async () => {
    await expect(core.readNamespacedPod({ name: 'nope', namespace: 'shop' })).rejects.toMatchObject({ code: 404 });
    const eve = new KubeConfig();
    eve.loadFromFile(api.writeKubeconfig(dir, { token: 'eve-token', file: 'eve' }));
    await expect(eve.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: 'secret' })).rejects.toMatchObject({ code: 403 });
    const review = await eve.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({
      body: { spec: { resourceAttributes: { namespace: 'secret', verb: 'get', resource: 'pods' } } },
    });
    expect(review.status?.allowed).toBe(false);
    const forged = new KubeConfig();
    forged.loadFromFile(api.writeKubeconfig(dir, { token: 'forged', file: 'forged' }));
    await expect(forged.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: 'shop' })).rejects.toMatchObject({ code: 401 });
  });

  it('replaces a workload pod as the controllers do: the old one gone, the new one Pending, then Ready with its container id', async () => {
    api.addDeployment('roll', 'web', [{ ready: true }]);
    const [old] = (await core.listNamespacedPod({ namespace: 'roll', labelSelector: 'app=web' })).items;
    const oldName = old?.metadata?.name ?? '';
    api.replacePod('roll', oldName, { name: 'web-7d9f8c6b5-n3w9p' });
    const pending = (await core.listNamespacedPod({ namespace: 'roll', labelSelector: 'app=web' })).items;
    expect(pending.map((p) => p.metadata?.name)).toEqual(['web-7d9f8c6b5-n3w9p']);
    expect(pending[0]?.status?.phase).toBe('Pending');
    expect(pending[0]?.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('False');
    expect(pending[0]?.status?.containerStatuses?.[0]?.containerID).toBeUndefined();
    expect(pending[0]?.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'ReplicaSet', name: old?.metadata?.ownerReferences?.[0]?.name });
    expect(pending[0]?.spec?.nodeName).toBe(old?.spec?.nodeName);
    api.setPodReady('roll', 'web-7d9f8c6b5-n3w9p', true);
    const ready = await core.readNamespacedPod({ namespace: 'roll', name: 'web-7d9f8c6b5-n3w9p' });
    expect(ready.status?.phase).toBe('Running');
    expect(ready.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(ready.status?.containerStatuses?.[0]?.containerID).toMatch(/^containerd:\/\/[0-9a-f]{64}$/);
    expect(ready.status?.containerStatuses?.[0]?.containerID).not.toBe(old?.status?.containerStatuses?.[0]?.containerID);
    await expect(core.readNamespacedPod({ namespace: 'roll', name: oldName })).rejects.toMatchObject({ code: 404 });
  });
});
