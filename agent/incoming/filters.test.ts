import { describe, expect, it } from 'vitest';
import { compileFilter, filterMatches } from './filters.js';

describe('request filters', () => {
  const req = (method: string, target: string, headers: Array<[string, string]>) => ({ method, target, status: 0, version: 'HTTP/1.1', headers });

  it('header names are case-insensitive, values match whole as regular expressions, all must match', () => {
    const f = compileFilter({ headers: [{ name: 'X-Dev', value: 'alice|bob' }, { name: 'x-team', value: 'core' }] });
    if (!f) throw new Error('no filter');
    expect(filterMatches(f, req('GET', '/', [['x-dev', 'alice'], ['X-TEAM', 'core']]))).toBe(true);
    expect(filterMatches(f, req('GET', '/', [['x-dev', 'bob'], ['x-team', 'core']]))).toBe(true);
    expect(filterMatches(f, req('GET', '/', [['x-dev', 'alicex'], ['x-team', 'core']]))).toBe(false);
    expect(filterMatches(f, req('GET', '/', [['x-dev', 'alice']]))).toBe(false);
  });

  it('path (without the query) and method', () => {
    const f = compileFilter({ headers: [], path: '/api/.*', method: 'post' });
    if (!f) throw new Error('no filter');
    expect(filterMatches(f, req('POST', '/api/v1?x=1', []))).toBe(true);
    expect(filterMatches(f, req('GET', '/api/v1', []))).toBe(false);
    expect(filterMatches(f, req('POST', '/apix', []))).toBe(false);
  });

  it('no parts is no filter; bad patterns are usage errors', () => {
    expect(compileFilter({ headers: [] })).toBeUndefined();
    expect(() => compileFilter({ headers: [{ name: 'x', value: '(' }] })).toThrow(/not a valid regular expression/);
    expect(() => compileFilter({ headers: [{ name: 'bad name', value: 'x' }] })).toThrow(/header name/);
    expect(() => compileFilter({ headers: [], method: 'G E T' })).toThrow(/method/);
  });
});

describe('request filters: what a match is', () => {
  const req = (method: string, target: string, headers: Array<[string, string]>) => ({ method, target, status: 0, version: 'HTTP/1.1', headers });
  const compiled = (value: unknown) => {
    const f = compileFilter(value);
    if (!f) throw new Error('no filter');
    return f;
  };

  it('patterns match the whole value, never a part of it', () => {
    const path = compiled({ headers: [], path: '/api' });
    expect(filterMatches(path, req('GET', '/api', []))).toBe(true);
    expect(filterMatches(path, req('GET', '/api/v1', []))).toBe(false);
    expect(filterMatches(path, req('GET', '/v1/api', []))).toBe(false);
    // An alternation is whole too: "a|b" is ^(?:a|b)$, not ^a or b$.
    const alt = compiled({ headers: [{ name: 'x-dev', value: 'alice|bob' }] });
    expect(filterMatches(alt, req('GET', '/', [['x-dev', 'alice-2']]))).toBe(false);
    expect(filterMatches(alt, req('GET', '/', [['x-dev', 'my-bob']]))).toBe(false);
  });

  it('header names match in any case, on the wire and in the filter; values keep their case', () => {
    const f = compiled({ headers: [{ name: 'X-DEV', value: 'Alice' }] });
    expect(f.headers[0]?.name).toBe('x-dev');
    for (const name of ['x-dev', 'X-Dev', 'X-DEV']) expect(filterMatches(f, req('GET', '/', [[name, 'Alice']]))).toBe(true);
    expect(filterMatches(f, req('GET', '/', [['x-dev', 'alice']]))).toBe(false);
  });

  it('a header filter matches when any field of that name matches (repeated fields)', () => {
    const f = compiled({ headers: [{ name: 'x-dev', value: 'bob' }] });
    expect(filterMatches(f, req('GET', '/', [['x-dev', 'alice'], ['x-dev', 'bob']]))).toBe(true);
  });

  it('the path is matched without its query', () => {
    const f = compiled({ headers: [], path: '/search' });
    expect(filterMatches(f, req('GET', '/search?q=a', []))).toBe(true);
    const withQuery = compiled({ headers: [], path: '/search\\?q=a' });
    expect(filterMatches(withQuery, req('GET', '/search?q=a', []))).toBe(false);
  });

  it('describes itself for logs and conflict messages', () => {
    expect(compiled({ headers: [{ name: 'X-Dev', value: 'alice' }], path: '/api/.*', method: 'post' }).text).toBe('X-Dev: alice, path /api/.*, method POST');
  });

  it('refuses what the CLI refuses: long patterns, too many headers, non-string parts', () => {
    expect(() => compileFilter({ headers: [], path: 'a'.repeat(513) })).toThrow('the path filter is longer than 512 characters');
    expect(compileFilter({ headers: [], path: 'a'.repeat(512) })?.path?.test('a'.repeat(512))).toBe(true);
    const headers = Array.from({ length: 33 }, (_, i) => ({ name: `x-${i}`, value: 'v' }));
    expect(() => compileFilter({ headers })).toThrow('at most 32 header filters');
    expect(() => compileFilter({ headers: [], path: 42 })).toThrow('the path filter must be a string');
    expect(() => compileFilter({ headers: [{ name: 'x' }] })).toThrow(/header name and a value pattern/);
    expect(() => compileFilter({ headers: [{ name: 'x-dev', value: '[' }] })).toThrow('the header x-dev filter "[" is not a valid regular expression');
  });
});
