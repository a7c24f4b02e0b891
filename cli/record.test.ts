import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { harProblems } from '../common/har.js';
import type { RecordedExchange } from '../protocol/messages.js';
import { HarWriter, harEntry } from './har-writer.js';
import { parseDuration, parseSample, parseSize } from './record.js';

const dir = mkdtempSync(join(tmpdir(), 'tsm-har-writer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const x = (o: Partial<RecordedExchange> = {}): RecordedExchange => ({
  kind: 'exchange', version: 'HTTP/1.1', method: 'POST', target: '/p?a=1&b=two%20words', authority: '',
  requestHeaders: [['content-type', 'application/json']], requestHeadSize: 80, requestBody: { size: 2, data: Buffer.from('{}') },
  status: 201, statusText: 'Created', responseHeaders: [['content-type', 'application/octet-stream']], responseHeadSize: 70,
  responseBody: { size: 3, data: Buffer.from([0xff, 0x00, 0x80]) }, trailers: [],
  started: 1_700_000_000_000, requestDone: 1_700_000_000_002.5, responseStarted: 1_700_000_000_010, responseDone: 1_700_000_000_011,
  ...o,
});
const conn = { id: 'c1', remoteAddress: 'fd00::5', remotePort: 40000, localAddress: '10.0.0.7', localPort: 8080 };

describe('record options', () => {
  it('durations, percentages and sizes as people write them', () => {
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('2')).toBe(2000);
    expect(() => parseDuration('5 minutes')).toThrow('is not a duration');
    expect(parseSample('10%')).toBe(10);
    expect(parseSample('0.5')).toBe(0.5);
    expect(() => parseSample('0%')).toThrow('above 0 and at most 100');
    expect(parseSize('1MiB', '--max-body')).toBe(1024 * 1024);
    expect(parseSize('64k', '--max-body')).toBe(65536);
    expect(parseSize('100', '--max-body')).toBe(100);
    expect(() => parseSize('1 GiB', '--max-body')).toThrow('above the limit');
    expect(() => parseSize('lots', '--max-body')).toThrow('is not a size');
  });
});

describe('HAR entries and the file', () => {
  it('an exchange as a HAR 1.2 entry: URL from the pod address without a Host, query, base64 for bytes, timings', () => {
    const e = harEntry(x(), conn);
    expect(e.request.url).toBe('http://10.0.0.7:8080/p?a=1&b=two%20words');
    expect(e.request.queryString).toEqual([{ name: 'a', value: '1' }, { name: 'b', value: 'two words' }]);
    expect(e.request.postData).toEqual({ mimeType: 'application/json', text: '{}', _size: 2 });
    expect(e.response.content).toEqual({ size: 3, mimeType: 'application/octet-stream', text: Buffer.from([0xff, 0, 0x80]).toString('base64'), encoding: 'base64' });
    expect(e.timings).toMatchObject({ send: 2.5, wait: 7.5, receive: 1 });
    expect(e.time).toBe(11);
    expect(e.startedDateTime).toBe(new Date(1_700_000_000_000).toISOString());
    expect(e._clientAddress).toBe('[fd00::5]:40000');
    expect(e._port).toBe(8080);
    const big = harEntry(x({ authority: 'api.shop', requestBody: { size: 9_000_000, sha256: 'b'.repeat(64) } }), conn);
    expect(big.request.url).toBe('http://api.shop/p?a=1&b=two%20words');
    expect(big.request.postData).toEqual({ mimeType: 'application/json', _sha256: 'b'.repeat(64), _size: 9_000_000 });
  });

  it('the file is 0600, absent until finished, then whole; an aborted one leaves nothing', () => {
    const path = join(dir, 'out.har');
    const w = new HarWriter(path, '9.9.9');
    w.add(harEntry(x(), conn));
    w.add(harEntry(x({ version: 'HTTP/2', trailers: [['grpc-status', '0']] }), conn));
    expect(readdirSync(dir)).toEqual([`.out.har.${process.pid}.tmp`]);
    expect(statSync(join(dir, `.out.har.${process.pid}.tmp`)).mode & 0o777).toBe(0o600);
    w.finish({ target: 'pod/x', ports: [8080] });
    expect(readdirSync(dir)).toEqual(['out.har']);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const har = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    expect(harProblems(har)).toEqual([]);
    expect(har).toMatchObject({ log: { version: '1.2', creator: { name: 'tsmirror', version: '9.9.9' }, _tsmirror: { target: 'pod/x' }, entries: [{}, { response: { _trailers: [{ name: 'grpc-status', value: '0' }] } }] } });
    const empty = new HarWriter(join(dir, 'none.har'), '1');
    empty.abort();
    expect(readdirSync(dir)).toEqual(['out.har']);
    expect(() => new HarWriter(join(dir, 'no-such-dir', 'x.har'), '1')).toThrow('cannot write the recording next to');
  });
});
