import { describe, expect, it } from 'vitest';
import { packPlain } from './codec.js';
import type { RecordedExchange } from './messages.js';
import { RecordFrameReader, encodeRecordFrame } from './record-frames.js';

const exchange: RecordedExchange = {
  kind: 'exchange', version: 'HTTP/1.1', method: 'GET', target: '/a?b=1', authority: 'api:8080',
  requestHeaders: [['Host', 'api:8080']], requestHeadSize: 40, requestBody: { size: 0, data: Buffer.from('hi') },
  status: 200, statusText: 'OK', responseHeaders: [['content-type', 'text/plain']], responseHeadSize: 60,
  responseBody: { size: 5 * 1024 * 1024, sha256: 'a'.repeat(64) }, trailers: [],
  started: 1, requestDone: 2, responseStarted: 3, responseDone: 4,
};

const framed = (value: unknown): Buffer => {
  const body = packPlain(value);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.byteLength);
  return Buffer.concat([head, body]);
};

describe('record frames', () => {
  it('round-trip, split at every byte', () => {
    const bytes = Buffer.concat([encodeRecordFrame(exchange), encodeRecordFrame({ kind: 'dropped', count: 3 }), encodeRecordFrame({ kind: 'skipped', reason: 'not HTTP' })]);
    const reader = new RecordFrameReader(1 << 20);
    const got = [];
    for (let i = 0; i < bytes.byteLength; i++) got.push(...reader.push(bytes.subarray(i, i + 1)));
    expect(got).toEqual([exchange, { kind: 'dropped', count: 3 }, { kind: 'skipped', reason: 'not HTTP' }]);
    expect(reader.buffered).toBe(0);
  });

  it('a hostile frame is refused, saying what is wrong', () => {
    const read = (b: Buffer): unknown => new RecordFrameReader(1024).push(b);
    expect(() => read(Buffer.from([0xff, 0xff, 0xff, 0xff]))).toThrow('larger than 1024');
    expect(() => read(Buffer.from([0, 0, 0, 1, 0xc1]))).toThrow('not valid msgpack');
    expect(() => read(framed([1, 2]))).toThrow('not a map');
    expect(() => read(framed({ kind: 'nope' }))).toThrow('unknown kind');
    expect(() => read(framed({ ...exchange, status: 'x' }))).toThrow('status is not a number');
    expect(() => read(framed({ ...exchange, requestHeaders: [['a']] }))).toThrow('requestHeaders[0] is not [name, value]');
    expect(() => read(framed({ ...exchange, responseBody: { size: 1, sha256: 'zz' } }))).toThrow('responseBody.sha256');
    expect(() => read(framed({ ...exchange, method: 'x'.repeat(100) }))).toThrow('method is not a string');
  });
});
