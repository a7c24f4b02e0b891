import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ReplayEntry } from './entries.js';
import { openConnection } from './send.js';

let server: net.Server | undefined;
afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

function entry(target: string): ReplayEntry {
  return {
    index: 0, connection: 'c', started: 0, method: 'GET', target, path: target, authority: 'app', http2: false, headers: [], body: undefined, port: undefined,
    recorded: { status: 200, headers: [], trailers: undefined, body: { kind: 'unknown' }, mimeType: '', ms: 1 },
  };
}

describe('HTTP/1.1 replay connections', () => {
  it('send the next request again on a new connection when the server closed the kept-alive one as it went out', async () => {
    // The first connection answers one request, then resets on the next (a keep-alive
    // timeout racing the request); later connections answer everything.
    let connections = 0;
    server = net.createServer((s) => {
      const n = ++connections;
      let requests = 0;
      s.on('data', () => {
        requests++;
        if (n === 1 && requests === 2) {
          s.resetAndDestroy();
          return;
        }
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nc${n}`);
      });
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const conn = openConnection(false, { host: '127.0.0.1', port }, { timeoutMs: 5000, maxBody: 1024, headerValues: new Map() });
    try {
      expect((await conn.send(entry('/1'))).body?.toString()).toBe('c1');
      expect((await conn.send(entry('/2'))).body?.toString()).toBe('c2');
      expect(connections).toBe(2);
    } finally {
      conn.close();
    }
  });

  it('fail a request the server resets on a new connection (no retry: it was not a stale connection)', async () => {
    server = net.createServer((s) => {
      s.on('data', () => s.resetAndDestroy());
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const conn = openConnection(false, { host: '127.0.0.1', port }, { timeoutMs: 5000, maxBody: 1024, headerValues: new Map() });
    try {
      await expect(conn.send(entry('/x'))).rejects.toMatchObject({ code: 'ECONNRESET' });
    } finally {
      conn.close();
    }
  });
});
