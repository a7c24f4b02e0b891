import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { loadHar, parseFilter, selectEntries, type ReplayEntry } from './entries.js';

const dir = mkdtempSync(join(tmpdir(), 'tsm-entries-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function entry(method: string, url: string, headers: Record<string, string> = {}, status = 200, extra: Record<string, unknown> = {}) {
  return {
    startedDateTime: '2026-01-01T00:00:00.000Z', time: 1,
    request: { method, url, httpVersion: 'HTTP/1.1', cookies: [], headers: Object.entries(headers).map(([name, value]) => ({ name, value })), queryString: [], headersSize: -1, bodySize: 0, ...extra },
    response: { status, statusText: '', httpVersion: 'HTTP/1.1', cookies: [], headers: [], content: { size: 0, mimeType: '' }, redirectURL: '', headersSize: -1, bodySize: 0 },
    cache: {}, timings: { send: 0, wait: 1, receive: 0 },
  };
}

async function load(entries: unknown[]): Promise<ReplayEntry[]> {
  const file = join(dir, `${Math.random()}.har`);
  writeFileSync(file, JSON.stringify({ log: { version: '1.2', creator: { name: 'Firefox', version: '1' }, entries } }));
  return (await loadHar(file)).entries;
}

describe('HAR entries for replay', () => {
  it('read files from other tools: each entry its own connection, pseudo-headers dropped, bodies decoded', async () => {
    const es = await load([
      { ...entry('POST', 'https://shop.example:8443/api/cart?x=1', { ':authority': 'shop.example', 'content-type': 'application/json' }), request: { ...entry('POST', 'https://shop.example:8443/api/cart?x=1').request, headers: [{ name: ':authority', value: 'shop.example' }], httpVersion: 'h2', postData: { mimeType: 'application/octet-stream', text: Buffer.from([0xff, 0]).toString('base64'), encoding: 'base64' } } },
      entry('GET', 'http://a/b', { Host: 'api.shop' }),
    ]);
    expect(es.map((e) => e.connection)).toEqual(['#entry-0', '#entry-1']);
    expect(es[0]).toMatchObject({ method: 'POST', target: '/api/cart?x=1', path: '/api/cart', authority: 'shop.example', http2: true, headers: [], port: 8443 });
    expect(es[0]!.body).toEqual(Buffer.from([0xff, 0]));
    expect(es[1]).toMatchObject({ authority: 'api.shop', http2: false, port: undefined });
  });

  it('decode recorded bodies kept compressed (as record does), and take ones kept decoded (as browsers do) as they are', async () => {
    const json = '{"a":1}';
    const withBody = (text: string, encoding?: string) => {
      const e = entry('GET', 'http://a/x');
      return { ...e, response: { ...e.response, headers: [{ name: 'Content-Encoding', value: 'gzip' }], content: { size: 7, mimeType: 'application/json', text, ...(encoding ? { encoding } : {}) } } };
    };
    const es = await load([withBody(gzipSync(json).toString('base64'), 'base64'), withBody(json)]);
    expect(es.map((e) => (e.recorded.body.kind === 'bytes' ? e.recorded.body.bytes.toString() : e.recorded.body.kind))).toEqual([json, json]);
  });

  it('mark what cannot be sent, and refuse files that are not HAR, naming where', async () => {
    const es = await load([entry('POST', 'http://a/x', {}, 200, { postData: { mimeType: 'x', _sha256: 'a'.repeat(64) }, bodySize: 99 }), entry('GET', 'not a url')]);
    expect(es[0]!.unsendable).toBe('its request body (99 bytes) was recorded only as its sha256 (above --max-body)');
    expect(es[1]!.unsendable).toBe('its URL "not a url" is not a valid URL');
    const file = join(dir, 'bad.har');
    writeFileSync(file, JSON.stringify({ log: { version: '1.2', creator: { name: 'x' }, entries: [{ request: {} }] } }));
    await expect(loadHar(file)).rejects.toThrow(/bad\.har is not a usable HAR 1\.2 file: log\.entries\[0\]\.startedDateTime is not a string/);
    writeFileSync(file, '{');
    await expect(loadHar(file)).rejects.toThrow(/is not JSON/);
    await expect(loadHar(join(dir, 'missing.har'))).rejects.toThrow(/cannot read .*missing\.har/);
  });
});

describe('--filter', () => {
  const sample = async (): Promise<ReplayEntry[]> => load([
    entry('GET', 'http://a/api/items'),
    entry('POST', 'http://a/api/cart?x=1', { 'x-dev': 'alice' }),
    entry('DELETE', 'http://a/admin/x', { 'X-Dev': 'bob' }, 503),
    entry('get', 'http://a/health'),
  ]);
  const pick = async (...f: string[]): Promise<number[]> => selectEntries(await sample(), f.map(parseFilter)).map((e) => e.index);

  it('select by method, path, header and recorded status; all filters must match', async () => {
    expect(await pick('method=POST')).toEqual([1]);
    expect(await pick('method=get,delete')).toEqual([0, 2, 3]);
    expect(await pick('method!=GET')).toEqual([1, 2]);
    expect(await pick('path=/api/*')).toEqual([0, 1]);
    expect(await pick('path~/(api|admin)/.*', 'method=DELETE')).toEqual([2]);
    expect(await pick('path!~/api/.*')).toEqual([2, 3]);
    expect(await pick('header:x-dev')).toEqual([1, 2]);
    expect(await pick('header:x-dev=alice')).toEqual([1]);
    expect(await pick('header:X-DEV~b.b')).toEqual([2]);
    expect(await pick('status=5xx')).toEqual([2]);
    expect(await pick('status=200')).toEqual([0, 1, 3]);
  });

  it('refuse what they cannot mean, saying the syntax', () => {
    for (const bad of ['verb=GET', 'method', 'method=G T', 'status=99', 'header:bad name=x', 'path~(']) {
      expect(() => parseFilter(bad)).toThrow(/--filter/);
    }
    expect(() => parseFilter('verb=GET')).toThrow(expect.objectContaining({ hint: expect.stringContaining('method=POST') }));
  });
});
