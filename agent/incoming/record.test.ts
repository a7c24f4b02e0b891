import { describe, expect, it } from 'vitest';
import { compileRecordOptions, parseJsonPath, REDACTED } from './record.js';
import { REDACTED_MARKER } from '../../common/har.js';

describe('record options', () => {
  it('JSON paths: names, indexes, wildcards, quoted keys, any depth; bad ones say how to write them', () => {
    expect(parseJsonPath('$.a.b')).toEqual([{ k: 'name', name: 'a' }, { k: 'name', name: 'b' }]);
    expect(parseJsonPath("$.items[*].card['x y'][2]")).toEqual([{ k: 'name', name: 'items' }, { k: 'any' }, { k: 'name', name: 'card' }, { k: 'name', name: 'x y' }, { k: 'index', i: 2 }]);
    expect(parseJsonPath('$..password')).toEqual([{ k: 'deep', name: 'password' }]);
    expect(parseJsonPath('$.*')).toEqual([{ k: 'any' }]);
    expect(() => parseJsonPath('password')).toThrow('it must start with $');
    expect(() => parseJsonPath('$')).toThrow('it names no field');
    expect(() => parseJsonPath('$.a[x]')).toThrow("neither [N], [*] nor ['name']");
    expect(() => parseJsonPath(`$.${'a'.repeat(600)}`)).toThrow('longer than 512');
  });

  it('refuses options out of bounds; the agent and the HAR agree on the marker', () => {
    const ok = { sample: 10, maxBody: 1024, redactHeaders: ['x-.*-key'], redactJsonPaths: ['$..token'], redact: true };
    const r = compileRecordOptions(ok, undefined);
    expect(r.redactHeaders[0]?.test('x-api-key')).toBe(true);
    expect(r.redactHeaders[0]?.test('X-API-KEY'.toLowerCase())).toBe(true);
    expect(r.redactHeaders[0]?.test('x-api-keys')).toBe(false); // whole name
    expect(() => compileRecordOptions({ ...ok, sample: 0 }, undefined)).toThrow('--sample');
    expect(() => compileRecordOptions({ ...ok, sample: 101 }, undefined)).toThrow('--sample');
    expect(() => compileRecordOptions({ ...ok, maxBody: -1 }, undefined)).toThrow('--max-body');
    expect(() => compileRecordOptions({ ...ok, maxBody: 2 ** 40 }, undefined)).toThrow('--max-body');
    expect(() => compileRecordOptions({ ...ok, redact: 'yes' }, undefined)).toThrow('redact');
    expect(() => compileRecordOptions({ ...ok, redactHeaders: Array(65).fill('a') }, undefined)).toThrow('at most 64');
    expect(() => compileRecordOptions({ ...ok, redactHeaders: ['(a'] }, undefined)).toThrow('not a valid regular expression');
    expect(() => compileRecordOptions(undefined, undefined)).toThrow('needs its options');
    expect(REDACTED).toBe(REDACTED_MARKER);
  });
});
