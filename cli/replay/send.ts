/**
 * Sending recorded requests: one client connection per recorded connection (HTTP/1.1
 * keep-alive through an http.Agent limited to one socket, or one HTTP/2 session with prior
 * knowledge), so a connection's requests arrive in order on one connection, as recorded.
 * Answers are read whole (decoded from their Content-Encoding), up to a limit past which
 * only their sha256 and size are kept.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import type { Answer } from './compare.js';
import type { ReplayEntry } from './entries.js';

/** Request headers not replayed: per hop, or recomputed for the replayed body. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'content-length', 'expect', 'http2-settings', 'host']);

export interface Endpoint {
  host: string;
  port: number;
}

export interface SendOptions {
  /** Per request: from sending to the end of the answer. */
  timeoutMs: number;
  /** Answers larger than this (decoded) are kept as sha256 and size only. */
  maxBody: number;
  /** Header name (lower case) → the value to send instead of the recorded one (--header). */
  headerValues: Map<string, string>;
}

/** What replaces the recorded headers: --header values, in the recorded names' place. */
export function requestHeaders(e: ReplayEntry, values: Map<string, string>): [string, string][] {
  const out: [string, string][] = [];
  for (const [n, v] of e.headers) {
    const lower = n.toLowerCase();
    if (HOP_HEADERS.has(lower)) continue;
    if (lower === 'te' && v.trim().toLowerCase() !== 'trailers') continue;
    out.push([n, values.get(lower) ?? v]);
  }
  return out;
}

/** Collects a body: decoded, hashed, kept up to maxBody. */
async function readBody(stream: Readable, encoding: string | undefined, maxBody: number): Promise<{ body: Buffer | undefined; sha256: string; rawSha256: string; size: number }> {
  const hash = createHash('sha256');
  const rawHash = createHash('sha256');
  const chunks: Buffer[] = [];
  let size = 0;
  let kept = true;
  const enc = encoding?.trim().toLowerCase();
  let source: Readable = stream;
  if (enc === 'gzip' || enc === 'x-gzip') source = stream.pipe(zlib.createGunzip());
  else if (enc === 'deflate') source = stream.pipe(zlib.createInflate());
  else if (enc === 'br') source = stream.pipe(zlib.createBrotliDecompress());
  if (source !== stream) {
    stream.on('error', (err) => source.destroy(err));
    stream.on('data', (chunk: Buffer) => rawHash.update(chunk)); // as on the wire: what a recording hashes
  }
  for await (const chunk of source as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
    if (kept) {
      if (size > maxBody) {
        kept = false;
        chunks.length = 0;
      } else chunks.push(chunk);
    }
  }
  const sha256 = hash.digest('hex');
  return { body: kept ? Buffer.concat(chunks) : undefined, sha256, rawSha256: source === stream ? sha256 : rawHash.digest('hex'), size };
}

function flatHeaders(raw: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

/** A client connection of the replay: sends one request at a time. */
export interface ReplayConnection {
  send(e: ReplayEntry): Promise<Answer>;
  close(): void;
}

class Http1Connection implements ReplayConnection {
  readonly #agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  constructor(private readonly endpoint: Endpoint, private readonly opts: SendOptions) {}

  async send(e: ReplayEntry): Promise<Answer> {
    try {
      return await this.#attempt(e);
    } catch (err) {
      // A kept-alive connection the server closed just as the request went out: once more,
      // on a new connection (Node's documented pattern for reused sockets).
      if ((err as { reusedSocket?: boolean }).reusedSocket && (err as NodeJS.ErrnoException).code === 'ECONNRESET') return this.#attempt(e);
      throw err;
    }
  }

  #attempt(e: ReplayEntry): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const headers: Record<string, string | string[]> = {};
      const names = new Map<string, string>();
      for (const [n, v] of requestHeaders(e, this.opts.headerValues)) {
        const key = names.get(n.toLowerCase()) ?? n;
        names.set(n.toLowerCase(), key);
        const had = headers[key];
        headers[key] = had === undefined ? v : Array.isArray(had) ? [...had, v] : [had, v];
      }
      headers.Host = e.authority || `${this.endpoint.host}:${this.endpoint.port}`;
      if (e.body !== undefined && (e.body.length > 0 || !['GET', 'HEAD', 'DELETE', 'OPTIONS'].includes(e.method.toUpperCase()))) headers['Content-Length'] = String(e.body.length);
      let req: http.ClientRequest;
      try {
        req = http.request({ host: this.endpoint.host, port: this.endpoint.port, method: e.method, path: e.target, headers, agent: this.#agent, setHost: false });
      } catch (err) {
        reject(err as Error);
        return;
      }
      const timer = setTimeout(() => req.destroy(new Error(`no complete answer within ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
      req.once('error', (err) => {
        clearTimeout(timer);
        reject(Object.assign(err, { reusedSocket: req.reusedSocket && !gotResponse }));
      });
      let gotResponse = false;
      req.once('response', (res) => {
        gotResponse = true;
        readBody(res, res.headers['content-encoding'] as string | undefined, this.opts.maxBody).then((b) => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: flatHeaders(res.rawHeaders), trailers: flatHeaders(res.rawTrailers), body: b.body, bodySha256: b.sha256, rawSha256: b.rawSha256, bodySize: b.size });
        }, (err: Error) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      req.end(e.body);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

class Http2Connection implements ReplayConnection {
  #session: http2.ClientHttp2Session | undefined;
  constructor(private readonly endpoint: Endpoint, private readonly opts: SendOptions) {}

  #open(): http2.ClientHttp2Session {
    if (this.#session && !this.#session.closed && !this.#session.destroyed) return this.#session;
    const host = this.endpoint.host.includes(':') ? `[${this.endpoint.host}]` : this.endpoint.host;
    const session = http2.connect(`http://${host}:${this.endpoint.port}`);
    session.on('error', () => undefined); // reported through the stream
    this.#session = session;
    return session;
  }

  send(e: ReplayEntry): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const headers: http2.OutgoingHttpHeaders = {
        ':method': e.method,
        ':path': e.target,
        ':scheme': 'http',
        ':authority': e.authority || `${this.endpoint.host}:${this.endpoint.port}`,
      };
      for (const [n, v] of requestHeaders(e, this.opts.headerValues)) {
        const lower = n.toLowerCase();
        const had = headers[lower];
        headers[lower] = had === undefined ? v : Array.isArray(had) ? [...had, v] : [String(had), v];
      }
      if (e.body !== undefined && e.body.length > 0) headers['content-length'] = String(e.body.length);
      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.#open().request(headers, { endStream: e.body === undefined || e.body.length === 0 });
      } catch (err) {
        reject(err as Error);
        return;
      }
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }, this.opts.timeoutMs);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        reject(timedOut ? new Error(`no complete answer within ${this.opts.timeoutMs} ms`) : err);
      };
      stream.once('error', fail);
      let trailers: [string, string][] = [];
      stream.once('trailers', (t: http2.IncomingHttpHeaders) => {
        trailers = Object.entries(t).flatMap(([n, v]) => (Array.isArray(v) ? v.map((x): [string, string] => [n, x]) : v === undefined ? [] : [[n, String(v)] as [string, string]]));
      });
      stream.once('response', (h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader, _flags: number, raw?: string[]) => {
        const status = Number(h[':status'] ?? 0);
        const headerList = raw ? flatHeaders(raw) : Object.entries(h).flatMap(([n, v]) => (Array.isArray(v) ? v.map((x): [string, string] => [n, x]) : v === undefined ? [] : [[n, String(v)] as [string, string]]));
        readBody(stream, h['content-encoding'] as string | undefined, this.opts.maxBody).then((b) => {
          clearTimeout(timer);
          resolve({ status, headers: headerList.filter(([n]) => !n.startsWith(':')), trailers, body: b.body, bodySha256: b.sha256, rawSha256: b.rawSha256, bodySize: b.size });
        }, fail);
      });
      stream.once('close', () => {
        if (stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) fail(new Error(`the stream was reset (HTTP/2 error code ${stream.rstCode})`));
      });
      if (e.body !== undefined && e.body.length > 0) stream.end(e.body);
    });
  }

  close(): void {
    this.#session?.close();
  }
}

/** A connection for one recorded connection's entries (HTTP/2 when its first entry is). */
export function openConnection(http2: boolean, endpoint: Endpoint, opts: SendOptions): ReplayConnection {
  return http2 ? new Http2Connection(endpoint, opts) : new Http1Connection(endpoint, opts);
}

