import { describe, expect, it } from 'vitest';
import { H2_PREFACE, h2Head, looksLikeH2 } from './http2.js';
import { compileFilter, filterMatches } from './filters.js';

describe('h2c detection and routing heads', () => {
  it('recognises the client preface, byte by byte, and nothing else', () => {
    for (let n = 1; n < H2_PREFACE.byteLength; n++) expect(looksLikeH2(H2_PREFACE.subarray(0, n))).toBe('maybe');
    expect(looksLikeH2(H2_PREFACE)).toBe('yes');
    expect(looksLikeH2(Buffer.concat([H2_PREFACE, Buffer.from([0, 0, 0, 4])]))).toBe('yes');
    expect(looksLikeH2(Buffer.from('GET / HTTP/1.1\r\n'))).toBe('no');
    expect(looksLikeH2(Buffer.from('PRI * HTTP/1.1\r\n'))).toBe('no');
  });

  it('turns request headers into what the filters match: method, path with query, fields', () => {
    const head = h2Head({ ':method': 'POST', ':path': '/api/pay?x=1', ':scheme': 'http', ':authority': 'pay', 'x-dev': 'alice', 'x-multi': ['a=1', 'b=2'] });
    expect(head).toMatchObject({ method: 'POST', target: '/api/pay?x=1', headers: [['x-dev', 'alice'], ['x-multi', 'a=1'], ['x-multi', 'b=2']] });
    const f = compileFilter({ headers: [{ name: 'X-Dev', value: 'ali.e' }], path: '/api/.*', method: 'post' });
    expect(f && filterMatches(f, head)).toBe(true);
    const other = compileFilter({ headers: [{ name: 'x-dev', value: 'bob' }] });
    expect(other && filterMatches(other, head)).toBe(false);
  });
});
