import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { detectHttp } from './detect.js';
import { startHttp1Router } from './http1-router.js';
import { startH2Router } from './http2.js';
import type { RequestRouter, RouterHub, RoutedProtocol, StartRouter } from './router.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** An upstream (the app, or a session's program) that says who answered what. */
async function upstream(protocol: RoutedProtocol, name: string): Promise<number> {
  const answer = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void => {
    const dev = req.headers['x-dev'] ?? '-';
    res.end(`${name} ${req.method} ${req.url} ${String(dev)}`);
  };
  const sockets = new Set<net.Socket>();
  const server: net.Server = protocol === 'http1' ? http.createServer(answer) : http2.createServer(answer);
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

/**
 * A front port whose hub routes requests with `x-dev: alice` to the session "alice" and
 * the rest to the app, through the router `start`. Returns the port and the routers made.
 */
async function front(protocol: RoutedProtocol, start: StartRouter, sessionGone = false): Promise<{ port: number; routers: RequestRouter[]; opened: string[] }> {
  const appPort = await upstream(protocol, 'app');
  const alicePort = await upstream(protocol, 'alice');
  const routers: RequestRouter[] = [];
  const opened: string[] = [];
  const hub: RouterHub<string> = {
    port: 0,
    route: (head) => (head.headers.some(([n, v]) => n.toLowerCase() === 'x-dev' && v === 'alice') ? 'alice' : undefined),
    connectApp: () => {
      opened.push('app');
      return net.connect(appPort, '127.0.0.1');
    },
    openSession: (sub) => {
      if (sessionGone) return undefined;
      opened.push(sub);
      return net.connect(alicePort, '127.0.0.1');
    },
    logOnce: () => undefined,
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    // As the hub does: detect, then start the router for what was found.
    detectHttp(client, (first, kind) => {
      expect(kind).toBe(protocol);
      routers.push(start(hub, client, first));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, routers, opened };
}

/** Sends the requests one after another on one connection; returns the answers. */
async function send(protocol: RoutedProtocol, port: number, requests: Array<{ path: string; dev?: string }>): Promise<string[]> {
  const answers: string[] = [];
  if (protocol === 'http1') {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (const r of requests) {
        answers.push(await new Promise<string>((resolve, reject) => {
          const req = http.request({ host: '127.0.0.1', port, path: r.path, agent, headers: r.dev ? { 'x-dev': r.dev } : {} }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (body += d));
            res.on('end', () => resolve(body));
          });
          req.on('error', reject);
          req.end();
        }));
      }
    } finally {
      agent.destroy();
    }
    return answers;
  }
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    for (const r of requests) {
      answers.push(await new Promise<string>((resolve, reject) => {
        const req = session.request({ ':path': r.path, ...(r.dev ? { 'x-dev': r.dev } : {}) });
        let body = '';
        req.setEncoding('utf8');
        req.on('data', (d: string) => (body += d));
        req.on('end', () => resolve(body));
        req.on('error', reject);
        req.end();
      }));
    }
  } finally {
    session.destroy();
  }
  return answers;
}

const routers: Array<[RoutedProtocol, StartRouter]> = [['http1', startHttp1Router], ['h2', startH2Router]];

describe.each(routers)('request router (%s)', (protocol, start) => {
  it('sends each request of one connection where the hub says: the session for a match, else the app', async () => {
    const f = await front(protocol, start);
    const answers = await send(protocol, f.port, [{ path: '/a' }, { path: '/b?q=1', dev: 'alice' }, { path: '/c', dev: 'bob' }, { path: '/d', dev: 'alice' }]);
    expect(answers).toEqual(['app GET /a -', 'alice GET /b?q=1 alice', 'app GET /c bob', 'alice GET /d alice']);
    expect(f.routers.map((r) => [r.protocol, r.requests])).toEqual([[protocol, 4]]);
    // One upstream connection each, reused for later requests of the same client connection.
    expect(f.opened.sort()).toEqual(['alice', 'app']);
  });

  it('sends a request to the app when the session it matches is gone', async () => {
    const f = await front(protocol, start, true);
    expect(await send(protocol, f.port, [{ path: '/x', dev: 'alice' }, { path: '/y' }])).toEqual(['app GET /x alice', 'app GET /y -']);
    expect(f.opened).toEqual(['app']);
  });
});
