import { describe, expect, it } from 'vitest';
import { Http1Parser, HttpParseError, keepAlive, looksLikeHttp1, requestPath, type HttpEvent } from './http1.js';

/** Feeds bytes in pieces of `step` and returns the events, body bytes joined per message. */
function feed(p: Http1Parser, text: string | Buffer, step = Infinity): HttpEvent[] {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'latin1') : text;
  const out: HttpEvent[] = [];
  for (let i = 0; i < bytes.length; i += Math.min(step, bytes.length)) out.push(...p.push(bytes.subarray(i, i + Math.min(step, bytes.length))));
  return out;
}

function summary(events: HttpEvent[]): string[] {
  const out: string[] = [];
  let body = '';
  for (const e of events) {
    if (e.kind === 'head') out.push(`head ${e.head.method || e.head.status} ${e.head.target}`);
    else if (e.kind === 'body') body += e.raw.toString('latin1');
    else {
      if (body) out.push(`body ${JSON.stringify(body)}`);
      body = '';
      out.push(e.upgrade ? 'end upgrade' : 'end');
    }
  }
  return out;
}

describe('Http1Parser: requests', () => {
  const two = 'GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b?q=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n\r\n';

  it('frames keep-alive requests with and without bodies, whatever the chunking of the bytes', () => {
    for (const step of [Infinity, 1, 3, 7]) {
      expect(summary(feed(new Http1Parser('request'), two, step))).toEqual([
        'head GET /a', 'end', 'head POST /b?q=1', 'body "hello"', 'end', 'head GET /c', 'end',
      ]);
    }
  });

  it('hands back the exact raw bytes', () => {
    const events = feed(new Http1Parser('request'), two, 5);
    const raw = Buffer.concat(events.flatMap((e) => (e.kind === 'end' ? [] : [e.raw])));
    expect(raw.toString('latin1')).toBe(two);
  });

  it('frames chunked bodies with extensions and trailers', () => {
    const msg = 'POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n';
    for (const step of [Infinity, 1, 4]) {
      expect(summary(feed(new Http1Parser('request'), msg, step))).toEqual([
        'head POST /up', `body ${JSON.stringify('5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n')}`, 'end', 'head GET /next', 'end',
      ]);
    }
  });

  it('stops after a request asking to upgrade, until told what the answer was', () => {
    const p = new Http1Parser('request');
    const events = feed(p, 'GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n\x81\x05hello');
    expect(summary(events)).toEqual(['head GET /ws', 'end upgrade']);
    expect(p.stopped).toBe(true);
    expect(p.takeRest().toString('latin1')).toBe('\x81\x05hello');
  });

  it('goes back to HTTP when the upgrade is refused', () => {
    const p = new Http1Parser('request');
    feed(p, 'GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /b HTTP/1.1\r\n\r\n');
    expect(summary(p.resume())).toEqual(['head GET /b', 'end']);
  });

  it('refuses what it cannot frame', () => {
    expect(() => feed(new Http1Parser('request'), 'GET / HTTP/2.0\r\n\r\n')).toThrow(HttpParseError);
    expect(() => feed(new Http1Parser('request'), 'POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n')).toThrow(/Content-Length/);
    expect(() => feed(new Http1Parser('request'), 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n')).toThrow(/chunked/);
    expect(() => feed(new Http1Parser('request'), `GET / HTTP/1.1\r\nX: ${'a'.repeat(70000)}`)).toThrow(/head larger/);
    expect(() => feed(new Http1Parser('request'), 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n')).toThrow(/chunk size/);
  });
});

describe('Http1Parser: responses', () => {
  it('knows which responses have no body: HEAD, 1xx, 204, 304', () => {
    const p = new Http1Parser('response');
    p.requestMethod = 'HEAD';
    expect(summary(feed(p, 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n'))).toEqual(['head 200 ', 'end']);
    const q = new Http1Parser('response');
    expect(summary(feed(q, 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n'))).toEqual([
      'head 100 ', 'end', 'head 204 ', 'end', 'head 304 ', 'end',
    ]);
  });

  it('reads a close-delimited body until the connection ends', () => {
    const p = new Http1Parser('response');
    expect(summary(feed(p, 'HTTP/1.0 200 OK\r\n\r\npart one, '))).toEqual(['head 200 ']);
    expect(summary([...p.push(Buffer.from('part two')), ...p.finish()])).toEqual(['body "part two"', 'end']);
  });

  it('a 101 ends HTTP on the connection', () => {
    const p = new Http1Parser('response');
    expect(summary(feed(p, 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x01x'))).toEqual(['head 101 ', 'end upgrade']);
    expect(p.takeRest().toString('latin1')).toBe('\x81\x01x');
  });
});

describe('helpers', () => {
  it('keep-alive by version and Connection', () => {
    const head = (version: string, connection?: string) => ({ method: 'GET', target: '/', status: 0, version, headers: connection ? [['Connection', connection] as [string, string]] : [] });
    expect(keepAlive(head('HTTP/1.1'))).toBe(true);
    expect(keepAlive(head('HTTP/1.1', 'close'))).toBe(false);
    expect(keepAlive(head('HTTP/1.0'))).toBe(false);
    expect(keepAlive(head('HTTP/1.0', 'Keep-Alive'))).toBe(true);
  });

  it('detects HTTP/1.x from the first bytes; h2c and binary protocols are not', () => {
    expect(looksLikeHttp1(Buffer.from('GET / HTTP/1.1\r\n'))).toBe('yes');
    expect(looksLikeHttp1(Buffer.from('GE'))).toBe('maybe');
    expect(looksLikeHttp1(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'))).toBe('no');
    expect(looksLikeHttp1(Buffer.from([0x16, 0x03, 0x01, 0x02]))).toBe('no');
    expect(looksLikeHttp1(Buffer.from('\0\0\0\x08\x04\xd2\x16\x2f'))).toBe('no'); // PostgreSQL SSLRequest
  });

  it('request path drops the query and an absolute-form prefix', () => {
    const head = (target: string) => ({ method: 'GET', target, status: 0, version: 'HTTP/1.1', headers: [] });
    expect(requestPath(head('/api/x?q=1'))).toBe('/api/x');
    expect(requestPath(head('http://svc:8080/api/x?q=1'))).toBe('/api/x');
  });
});
