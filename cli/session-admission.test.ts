/**
 * The Session admission policy as shipped (cli/manifests.ts), its CEL evaluated by a real
 * CEL implementation against request and object fixtures: a typo in an expression, a
 * missing grant or a wrong message fails here.
 */
import { describe, expect, it } from 'vitest';
import { allManifests, SESSION_VALIDATIONS } from './manifests.js';
import { evaluateValidations, type AuthorizerQuestion } from '../test/k8s/session-admission.js';

const session = (mode: { files?: string; incoming?: string } = {}, user = 'alice') => ({
  apiVersion: 'tsmirror.dev/v1alpha1', kind: 'Session', metadata: { name: 'tsm-1', namespace: 'shop' },
  spec: {
    user, target: { pod: 'cart-0', container: 'cart', containerId: 'containerd://' + 'a'.repeat(64) },
    mode: { files: mode.files ?? 'read', incoming: mode.incoming ?? 'none', filtered: false }, secretHash: 'b'.repeat(64), node: 'node-1',
  },
});

/** alice in shop: the base grants, plus what `extra` names (e.g. 'sessions/steal'). */
function rbac(extra: string[] = [], base = ['pods:get', 'pods/portforward:create']) {
  const asked: AuthorizerQuestion[] = [];
  const authorize = (q: AuthorizerQuestion): boolean => {
    asked.push(q);
    const what = `${q.resource}${q.subresource ? `/${q.subresource}` : ''}`;
    if (q.namespace !== 'shop') return false;
    if (q.group === '' && base.includes(`${what}:${q.verb}`)) return true;
    return q.group === 'tsmirror.dev' && q.verb === 'create' && extra.includes(what);
  };
  return { authorize, asked };
}
const alice = { operation: 'CREATE' as const, userInfo: { username: 'alice', groups: ['dev'] } };

describe('the Session admission policy (CEL)', () => {
  it('admits a session of its creator with the base grants', () => {
    const { authorize, asked } = rbac();
    expect(evaluateValidations({ object: session({ incoming: 'mirror' }), request: alice, authorize })).toBeUndefined();
    expect(asked.map((q) => `${q.verb} ${q.group}/${q.resource}/${q.subresource} ${q.namespace}`)).toEqual(['get /pods/ shop', 'create /pods/portforward shop']);
  });

  it('refuses a Session naming another user', () => {
    expect(evaluateValidations({ object: session({}, 'bob'), request: alice, authorize: rbac().authorize }))
      .toBe('spec.user must be the name you authenticate as (alice), not bob');
  });

  it('refuses without the base grants, naming the missing one', () => {
    expect(evaluateValidations({ object: session(), request: alice, authorize: rbac([], ['pods/portforward:create']).authorize }))
      .toBe('a tsmirror session needs get pods in namespace shop, which alice is not allowed: ask your cluster admin to bind ClusterRole tsmirror-user in namespace shop');
    expect(evaluateValidations({ object: session(), request: alice, authorize: rbac([], ['pods:get']).authorize }))
      .toContain('needs create pods/portforward in namespace shop');
  });

  it('steal needs create sessions/steal; write files needs create sessions/writefiles', () => {
    expect(evaluateValidations({ object: session({ incoming: 'steal' }), request: alice, authorize: rbac().authorize }))
      .toBe('stealing traffic needs create sessions/steal (group tsmirror.dev) in namespace shop, which alice is not allowed: ask your cluster admin to bind ClusterRole tsmirror-steal in namespace shop');
    expect(evaluateValidations({ object: session({ incoming: 'steal' }), request: alice, authorize: rbac(['sessions/steal']).authorize })).toBeUndefined();
    expect(evaluateValidations({ object: session({ files: 'write' }), request: alice, authorize: rbac(['sessions/steal']).authorize }))
      .toBe('writing pod files needs create sessions/writefiles (group tsmirror.dev) in namespace shop, which alice is not allowed: ask your cluster admin to bind ClusterRole tsmirror-write-files in namespace shop');
    expect(evaluateValidations({ object: session({ files: 'write', incoming: 'steal' }), request: alice, authorize: rbac(['sessions/writefiles', 'sessions/steal']).authorize })).toBeUndefined();
  });

  it('the shipped manifests carry exactly these validations, and the roles grant what they check', () => {
    const objects = allManifests({ namespace: 'tsmirror-system', image: 'x', version: '0' });
    const vap = objects.find((o) => o.kind === 'ValidatingAdmissionPolicy') as unknown as { spec: { validations: unknown; matchConstraints: { resourceRules: Array<{ resources: string[]; operations: string[] }> } } };
    expect(vap.spec.validations).toEqual(SESSION_VALIDATIONS);
    expect(vap.spec.matchConstraints.resourceRules[0]).toMatchObject({ resources: ['sessions'], operations: ['CREATE', 'UPDATE'] });
    const role = (name: string) => (objects.find((o) => o.kind === 'ClusterRole' && o.metadata.name === name) as unknown as { rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }> }).rules;
    expect(role('tsmirror-steal')).toEqual([{ apiGroups: ['tsmirror.dev'], resources: ['sessions/steal'], verbs: ['create'] }]);
    expect(role('tsmirror-write-files')).toEqual([{ apiGroups: ['tsmirror.dev'], resources: ['sessions/writefiles'], verbs: ['create'] }]);
    expect(role('tsmirror-user')).toContainEqual({ apiGroups: ['tsmirror.dev'], resources: ['sessions'], verbs: ['create', 'get', 'list', 'watch', 'delete'] });
    expect(role('tsmirror-agent')).toContainEqual({ apiGroups: ['tsmirror.dev'], resources: ['sessions'], verbs: ['get', 'list', 'watch', 'delete'] });
    const crd = objects.find((o) => o.kind === 'CustomResourceDefinition') as unknown as { spec: { versions: Array<{ additionalPrinterColumns: Array<{ name: string }> }> } };
    expect(crd.spec.versions[0]?.additionalPrinterColumns.map((c) => c.name)).toEqual(['User', 'Pod', 'Container', 'Incoming', 'Files', 'Node', 'Age']);
  });

  it('an expression that does not evaluate is an error, not a refusal', () => {
    expect(() => evaluateValidations({ object: session(), request: alice, authorize: rbac().authorize }, [{ expression: 'object.spec.usr == 1', messageExpression: "'x'", reason: 'Forbidden' }])).toThrow(/CEL error/);
  });
});
