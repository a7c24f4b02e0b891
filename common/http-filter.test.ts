import { describe, expect, it } from 'vitest';
import { TsmError } from '../protocol/errors.js';
import { MAX_FILTER_PATTERN, checkHeaderFilterCount, filterNarrows, isHeaderName, isMethodName, matchesNearlyEverything, wholeMatchPattern } from './http-filter.js';

describe('HTTP filter rules', () => {
  it('header names are RFC 9110 tokens', () => {
    for (const ok of ['x-dev', 'X-Request-Id', "a!#$%&'*+-.^_`|~9"]) expect(isHeaderName(ok)).toBe(true);
    for (const bad of ['', 'x dev', 'x:dev', 'x/dev', 'é', '(x)']) expect(isHeaderName(bad)).toBe(false);
  });

  it('methods are 1 to 20 letters, any case', () => {
    for (const ok of ['GET', 'post', 'PropFind', 'A'.repeat(20)]) expect(isMethodName(ok)).toBe(true);
    for (const bad of ['', 'G E T', 'GET1', 'M-SEARCH', 'A'.repeat(21)]) expect(isMethodName(bad)).toBe(false);
  });

  it('patterns are anchored whole and limited in length, with usage errors naming the label', () => {
    const re = wholeMatchPattern('a|b', '--http-path');
    expect(re.test('a')).toBe(true);
    expect(re.test('ab')).toBe(false);
    expect(wholeMatchPattern('x'.repeat(MAX_FILTER_PATTERN), 'p').test('x'.repeat(MAX_FILTER_PATTERN))).toBe(true);
    expect(() => wholeMatchPattern('x'.repeat(MAX_FILTER_PATTERN + 1), '--http-path')).toThrow('--http-path is longer than 512 characters');
    let err: unknown;
    try {
      wholeMatchPattern('(', '--http-header x-dev');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TsmError);
    expect(err).toMatchObject({ code: 'TSM_ERR_USAGE', message: expect.stringMatching(/^--http-header x-dev "\(" is not a valid regular expression: /) });
  });

  it('at most 32 header filters', () => {
    expect(() => checkHeaderFilterCount(32)).not.toThrow();
    expect(() => checkHeaderFilterCount(33)).toThrow('at most 32 header filters');
  });
});

describe('filter patterns (RE2)', () => {
  it('match in linear time: a pattern that backtracks exponentially in JavaScript answers at once', () => {
    // With RegExp, /^(?:\/(a+)+)$/ against 60 a's and a "!" takes longer than the universe has.
    const evil = wholeMatchPattern('/(a+)+', 'the path filter');
    expect(evil.test(`/${'a'.repeat(60)}!`)).toBe(false);
    expect(evil.test(`/${'a'.repeat(100_000)}!`)).toBe(false);
    expect(evil.test(`/${'a'.repeat(60)}`)).toBe(true);
  });

  it('refuse what RE2 cannot match in linear time (backreferences, lookaround), saying so', () => {
    expect(() => wholeMatchPattern('(a)\\1', '--http-path')).toThrow(/RE2 syntax: no backreferences or lookaround/);
    expect(() => wholeMatchPattern('(?=a)a', '--http-path')).toThrow(TsmError);
  });

  it('a filter that lets (nearly) every request through does not narrow', () => {
    const p = (s: string) => wholeMatchPattern(s, 'p');
    for (const broad of ['.*', '/.*', '/[^Q]*', '(?:/|/.+)', '.{0,}']) expect(matchesNearlyEverything(p(broad), 'path'), broad).toBe(true);
    for (const narrow of ['/api/.*', '/health', '/v[12]/orders/.*']) expect(matchesNearlyEverything(p(narrow), 'path'), narrow).toBe(false);
    for (const broad of ['.*', '[^!]*', '(?s).*']) expect(matchesNearlyEverything(p(broad), 'value'), broad).toBe(true);
    for (const narrow of ['alice', '.*alice.*', '', 'bob|carol']) expect(matchesNearlyEverything(p(narrow), 'value'), narrow).toBe(false);
    expect(filterNarrows({ path: undefined, headerValues: [], method: undefined })).toBe(false);
    expect(filterNarrows({ path: p('/.*'), headerValues: [p('.*')], method: undefined })).toBe(false);
    expect(filterNarrows({ path: p('/.*'), headerValues: [p('.*'), p('alice')], method: undefined })).toBe(true);
    expect(filterNarrows({ path: undefined, headerValues: [], method: 'POST' })).toBe(true);
  });
});
