/**
 * The Session admission policy's CEL (cli/manifests.ts, SESSION_VALIDATIONS) run by a real
 * CEL implementation (@bufbuild/cel), with the small part of Kubernetes' `authorizer`
 * library the expressions use: `authorizer.group(g).resource(r).subresource(s).namespace(ns)
 * .name(n).check(verb)` → a decision with `allowed()` and `reason()`. Used by the unit test
 * of the policy and by the fake API server (test/k8s/apiserver.ts), so the policy text that
 * ships is the one the tests exercise: a typo in it fails them.
 */
import { CelScalar, celMethod, isCelError, mapType, run, type CelFunc, type CelMap } from '@bufbuild/cel';
import { SESSION_VALIDATIONS, type CelValidation } from '../../cli/manifests.js';

/** One authorization question, as the authorizer library builds it. */
export interface AuthorizerQuestion { group: string; resource: string; subresource: string; namespace: string; name: string; verb: string }

/** The authorizer library over maps: each builder step returns a new map; `check` decides. */
function authorizerFunctions(decide: (q: AuthorizerQuestion) => boolean): CelFunc[] {
  const M = mapType(CelScalar.STRING, CelScalar.DYN);
  const fields = (m: CelMap): Record<string, unknown> => Object.fromEntries([...m.entries()].map(([k, v]) => [String(k), v]));
  const step = (name: keyof AuthorizerQuestion): CelFunc => celMethod(name, M, [CelScalar.STRING], M, function (this: CelMap, value: string) {
    return { ...fields(this), [name]: value } as never;
  });
  return [
    step('group'), step('resource'), step('subresource'), step('namespace'), step('name'),
    celMethod('check', M, [CelScalar.STRING], M, function (this: CelMap, verb: string) {
      const f = fields(this) as Partial<AuthorizerQuestion>;
      const allowed = decide({ group: f.group ?? '', resource: f.resource ?? '', subresource: f.subresource ?? '', namespace: f.namespace ?? '', name: f.name ?? '', verb });
      return { decided: true, allowed, reason: allowed ? '' : 'denied' } as never;
    }),
    celMethod('allowed', M, [], CelScalar.BOOL, function (this: CelMap) {
      if (this.get('decided') !== true) throw new Error('allowed() on something that is not a decision');
      return this.get('allowed') === true;
    }),
    celMethod('reason', M, [], CelScalar.STRING, function (this: CelMap) {
      return String(this.get('reason') ?? '');
    }),
  ];
}

export interface AdmissionInput {
  object: unknown;
  oldObject?: unknown;
  request: { operation: 'CREATE' | 'UPDATE'; userInfo: { username: string; groups: string[] } };
  /** Answers the `authorizer` for the requesting user. */
  authorize: (q: AuthorizerQuestion) => boolean;
}

/** The first failing validation's message, or undefined when the object is admitted. Throws when an expression does not evaluate (a typo). */
export function evaluateValidations(input: AdmissionInput, validations: CelValidation[] = SESSION_VALIDATIONS): string | undefined {
  const bindings = { object: input.object as never, oldObject: (input.oldObject ?? null) as never, request: input.request as never, authorizer: { kind: 'authorizer' } };
  const funcs = authorizerFunctions(input.authorize);
  for (const v of validations) {
    const result = run(v.expression, bindings, { funcs });
    if (isCelError(result)) throw new Error(`CEL error in "${v.expression}": ${result.message}`);
    if (typeof result !== 'boolean') throw new Error(`"${v.expression}" is not a boolean (${typeof result})`);
    if (result) continue;
    const message = run(v.messageExpression, bindings, { funcs });
    if (isCelError(message)) throw new Error(`CEL error in "${v.messageExpression}": ${message.message}`);
    if (typeof message !== 'string') throw new Error(`"${v.messageExpression}" is not a string`);
    return message;
  }
  return undefined;
}
