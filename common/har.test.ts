import { describe, expect, it } from 'vitest';
import { type Har, REDACTED_MARKER, harProblems } from './har.js';

function minimal(): Har {
  return {
    log: {
      version: '1.2',
      creator: { name: 'tsmirror', version: '0.1.0' },
      _tsmirror: { target: 'deployment/api', namespace: 'shop', ports: [8080], redacted: ['authorization'], sample: 100 },
      entries: [
        {
          startedDateTime: '2026-01-01T00:00:00.000Z',
          time: 3,
          connection: 'c1',
          _clientAddress: '10.0.0.2:40000',
          request: { method: 'GET', url: 'http://api/x', httpVersion: 'HTTP/1.1', cookies: [], headers: [{ name: 'authorization', value: REDACTED_MARKER }], queryString: [], headersSize: -1, bodySize: 0 },
          response: { status: 200, statusText: 'OK', httpVersion: 'HTTP/1.1', cookies: [], headers: [], content: { size: 2, mimeType: 'application/json', text: '{}' }, redirectURL: '', headersSize: -1, bodySize: 2 },
          cache: {},
          timings: { send: 0, wait: 3, receive: 0 },
        },
      ],
    },
  };
}

describe('HAR shape check', () => {
  it('accepts a tsmirror file and a file without the tsmirror fields', () => {
    expect(harProblems(minimal())).toEqual([]);
    const plain = minimal();
    delete plain.log._tsmirror;
    delete plain.log.entries[0]!.connection;
    expect(harProblems(plain)).toEqual([]);
  });

  it('names where a file is wrong', () => {
    expect(harProblems(null)).toEqual(['the top level is not {"log": {...}}']);
    expect(harProblems({ log: { version: '1.2', creator: { name: 'x' }, entries: {} } })).toEqual(['log.entries is not an array']);
    const bad = minimal() as unknown as { log: { entries: Record<string, any>[] } };
    bad.log.entries[0]!.request.url = 7;
    bad.log.entries[0]!.response.content._sha256 = 'zz';
    bad.log.entries[0]!.connection = 5;
    expect(harProblems(bad)).toEqual([
      'log.entries[0].connection is not a string',
      'log.entries[0].request.url is not a string',
      'log.entries[0].response.content._sha256 is not 64 hex digits',
    ]);
  });

  it('stops at the limit', () => {
    const many = { log: { version: '1.2', creator: { name: 'x' }, entries: Array.from({ length: 100 }, () => 1) } };
    expect(harProblems(many, 5)).toHaveLength(5);
  });
});
