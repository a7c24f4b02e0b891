import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { REDACTED_MARKER } from '../../common/har.js';
import { type Answer, compareAnswer, formatJsonPath, jsonDifferences, jsonPathMatches, parseIgnoreHeader, parseJsonPath, sha256 } from './compare.js';
import type { RecordedBody } from './entries.js';

function answer(status: number, headers: [string, string][], body: string | Buffer, trailers: [string, string][] = [], raw?: Buffer): Answer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return { status, headers, trailers, body: b, bodySha256: sha256(b), rawSha256: sha256(raw ?? b), bodySize: b.length };
}

function recorded(status: number, headers: [string, string][], body: RecordedBody, trailers?: [string, string][]) {
  return { status, headers, trailers, body, mimeType: headers.find(([n]) => n.toLowerCase() === 'content-type')?.[1] ?? '' };
}

const bytes = (s: string | Buffer): RecordedBody => ({ kind: 'bytes', bytes: Buffer.isBuffer(s) ? s : Buffer.from(s) });
const none = { ignoreHeaders: [], ignoreJsonPaths: [] };

describe('JSON paths', () => {
  it('parse and match the forms --ignore-json-path takes', () => {
    const m = (p: string, path: (string | number)[]): boolean => jsonPathMatches(parseJsonPath(p), path);
    expect(m('$.a.b', ['a', 'b'])).toBe(true);
    expect(m('a.b', ['a', 'b'])).toBe(true);
    expect(m('$.a.b', ['a', 'b', 'c'])).toBe(false);
    expect(m('$.items[*].id', ['items', 3, 'id'])).toBe(true);
    expect(m('$.items[1].id', ['items', 3, 'id'])).toBe(false);
    expect(m('$..updatedAt', ['x', 0, 'y', 'updatedAt'])).toBe(true);
    expect(m('$..updatedAt', ['updatedAt'])).toBe(true);
    expect(m('$["odd key"].x', ['odd key', 'x'])).toBe(true);
    expect(m('$.*', ['anything'])).toBe(true);
    for (const bad of ['$', '$.', '$[x]', '$.a[', '$..', 'a b[']) expect(() => parseJsonPath(bad)).toThrow(/--ignore-json-path/);
  });

  it('name fields as paths', () => {
    expect(formatJsonPath(['items', 2, 'price'])).toBe('$.items[2].price');
    expect(formatJsonPath(['a b', 'c'])).toBe('$["a b"].c');
  });
});

describe('JSON bodies compared as data', () => {
  it('ignore key order and formatting, name each differing field', () => {
    expect(jsonDifferences({ a: 1, b: [1, { c: 2 }] }, { b: [1, { c: 2 }], a: 1 }, [])).toEqual([]);
    const d = jsonDifferences({ a: 1, b: [1, { c: 2 }], gone: true }, { a: '1', b: [1, { c: 3 }, 9], added: null }, []);
    expect(d.map((x) => x.text)).toEqual([
      'body $.a: 1 → "1"',
      'body $.b[1].c: 2 → 3',
      'body $.b[2]: not recorded, replay has 9',
      'body $.gone: missing in the replay (recorded true)',
      'body $.added: not recorded, replay has null',
    ]);
    expect(d[1]).toMatchObject({ kind: 'body', at: '$.b[1].c', recorded: 2, replay: 3 });
  });

  it('skip ignored paths and redacted fields', () => {
    const ignore = [parseJsonPath('$..updatedAt'), parseJsonPath('$.items[*].id')];
    expect(jsonDifferences({ updatedAt: 1, items: [{ id: 1, n: 'a' }], token: REDACTED_MARKER }, { updatedAt: 2, items: [{ id: 7, n: 'a' }], token: 'abc' }, ignore)).toEqual([]);
    expect(jsonDifferences({ items: [{ id: 1, n: 'a' }] }, { items: [{ id: 7, n: 'b' }] }, ignore).map((x) => x.at)).toEqual(['$.items[0].n']);
  });

  it('stop after the limit, saying how many more', () => {
    const a = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`k${i}`, i]));
    const b = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`k${i}`, -i - 1]));
    const d = jsonDifferences(a, b, [], 50);
    expect(d).toHaveLength(51);
    expect(d[50]!.text).toBe('body: 10 more differing fields');
  });
});

describe('answers', () => {
  const json: [string, string] = ['Content-Type', 'application/json'];

  it('are the same when only Date, Server, Content-Length and per-hop headers differ', () => {
    const c = compareAnswer(
      recorded(200, [json, ['Date', 'Mon'], ['Server', 'a'], ['Content-Length', '7'], ['Connection', 'keep-alive'], ['X-A', '1']], bytes('{"a":1}')),
      answer(200, [['content-type', 'application/json'], ['date', 'Tue'], ['server', 'b'], ['transfer-encoding', 'chunked'], ['x-a', '1']], '{ "a": 1 }'),
      none,
    );
    expect(c).toEqual({ differences: [] });
  });

  it('report status, header and trailer differences, with --ignore-header applied', () => {
    const c = compareAnswer(
      recorded(200, [json, ['X-A', '1'], ['X-Gone', 'g'], ['X-Request-Id', 'r1']], bytes('{}'), [['grpc-status', '0']]),
      answer(500, [json, ['X-A', '2'], ['X-New', 'n'], ['x-request-id', 'r2']], '{}', [['grpc-status', '13']]),
      { ignoreHeaders: [parseIgnoreHeader('x-request-.*')], ignoreJsonPaths: [] },
    );
    expect(c.differences.map((d) => d.text)).toEqual([
      'status 200 → 500',
      'header x-a: "1" → "2"',
      'header x-gone: missing in the replay (recorded "g")',
      'header x-new: not recorded, replay sent "n"',
      'trailer grpc-status: "0" → "13"',
    ]);
  });

  it('let a redacted header value match any value', () => {
    expect(compareAnswer(recorded(200, [['Set-Cookie', REDACTED_MARKER]], bytes('')), answer(200, [['set-cookie', 'sid=42']], ''), none).differences).toEqual([]);
    expect(compareAnswer(recorded(200, [['Set-Cookie', REDACTED_MARKER]], bytes('')), answer(200, [], ''), none).differences[0]!.text).toBe(`header set-cookie: missing in the replay (recorded "${REDACTED_MARKER}")`);
  });

  it('diff text bodies, and name where binary bodies first differ', () => {
    const t = compareAnswer(recorded(200, [['content-type', 'text/plain']], bytes('a\nb\nc\n')), answer(200, [['content-type', 'text/plain']], 'a\nB\nc\n'), none);
    expect(t.differences.map((d) => d.text)).toEqual(['body differs (recorded 6 bytes, replay 6 bytes)']);
    expect(t.bodyDiff).toBe('--- recorded\n+++ replay\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n');
    const bin = Buffer.from([0, 1, 2, 3, 4]);
    const b = compareAnswer(recorded(200, [], bytes(bin)), answer(200, [], Buffer.from([0, 1, 9, 3])), none);
    expect(b.differences.map((d) => d.text)).toEqual(['body differs (binary; recorded 5 bytes, replay 4 bytes, first difference at byte 2)']);
    expect(b.bodyDiff).toBeUndefined();
  });

  it('compare by sha256 when the recording kept only that', () => {
    const body = Buffer.alloc(100_000, 7);
    const rec = recorded(200, [], { kind: 'hash', sha256: sha256(body), size: body.length });
    expect(compareAnswer(rec, answer(200, [], body), none).differences).toEqual([]);
    const other = Buffer.alloc(100_000, 8);
    expect(compareAnswer(rec, answer(200, [], other), none).differences.map((d) => d.text)).toEqual(['body: sha256 differs (recorded 100000 bytes, kept only as its hash; replay 100000 bytes)']);
    // A recording hashes a compressed body as it was on the wire.
    const gz = gzipSync(body);
    const recGz = recorded(200, [['content-encoding', 'gzip']], { kind: 'hash', sha256: sha256(gz), size: gz.length });
    expect(compareAnswer(recGz, answer(200, [['content-encoding', 'gzip']], body, [], gz), none).differences).toEqual([]);
  });

  it('say when the replay is not JSON where JSON was recorded', () => {
    const c = compareAnswer(recorded(200, [json], bytes('{"a":1}')), answer(200, [['content-type', 'text/html']], '<html>'), none);
    expect(c.differences.map((d) => d.text)).toEqual(['header content-type: "application/json" → "text/html"', 'body: recorded JSON, the replay\'s is not JSON (6 bytes)']);
  });
});
