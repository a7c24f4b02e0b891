import { describe, expect, it } from 'vitest';
import { matchingRule, parsePolicy } from './policy.js';

describe('policy.yaml', () => {
  it('parses the three rules, with defaults', () => {
    expect(parsePolicy('')).toEqual({ protectedNamespaces: [], deniedNamespaces: [], recordDeniedNamespaces: [], requireUserAuth: false });
    expect(parsePolicy('protectedNamespaces: ["prod-.*", "payments"]\ndeniedNamespaces: [kube-system]\nrequireUserAuth: true\n'))
      .toEqual({ protectedNamespaces: ['prod-.*', 'payments'], deniedNamespaces: ['kube-system'], recordDeniedNamespaces: [], requireUserAuth: true });
  });

  it('says what is wrong with a bad policy', () => {
    expect(() => parsePolicy('protectedNamespaces: "prod"')).toThrow('protectedNamespaces must be a list of regular expressions');
    expect(() => parsePolicy('deniedNamespaces: ["(x"]')).toThrow('deniedNamespaces: "(x" is not a valid regular expression');
    expect(() => parsePolicy('requireUserAuth: yes please')).toThrow('requireUserAuth must be true or false');
    expect(() => parsePolicy('protectedNamespace: [prod]')).toThrow('unknown field(s) protectedNamespace');
  });

  it('a rule matches whole namespace names', () => {
    expect(matchingRule(['prod-.*'], 'prod-eu')).toBe('prod-.*');
    expect(matchingRule(['prod-.*'], 'preprod-eu')).toBeUndefined();
    expect(matchingRule(['prod'], 'production')).toBeUndefined();
    expect(matchingRule(['a', 'prod|payments'], 'payments')).toBe('prod|payments');
  });
});
