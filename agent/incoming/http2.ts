/**
 * HTTP/2 with prior knowledge (h2c) on a filtered port: each request (an HTTP/2 stream) is
 * routed on its own, as HTTP/1.1 requests are (agent/incoming/http1-router.ts), to the first session
 * whose filter matches or to the pod's app. gRPC services are the common case.
 *
 * Unlike HTTP/1.1, where the client's bytes are forwarded as they came, HTTP/2 is
 * terminated here: Node's http2 serves the client's connection and replays each request
 * on an HTTP/2 connection of this agent to its upstream (one to the app, one per
 * stealing session, opened when first needed, each over a stream like any stolen
 * connection). Headers, bodies and trailers pass through with flow control; stream ids,
 * SETTINGS and priorities are per hop. Request trailers are not forwarded (no common
 * protocol sends them); a request whose session fails goes nowhere else (the client
 * gets the stream reset), where HTTP/1.1 retries it on the app.
 */
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import { Duplex } from 'node:stream';
import type { MessageHead } from './http1.js';
import type { H2Tap } from './record.js';
import type { RequestRouter, RouterHub, StartRouter } from './router.js';

/** The client connection preface of HTTP/2 (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Whether a connection's first bytes are (so far) the HTTP/2 preface. */
export function looksLikeH2(start: Buffer): 'yes' | 'no' | 'maybe' {
  const n = Math.min(start.byteLength, H2_PREFACE.byteLength);
  if (!start.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return 'no';
  return n === H2_PREFACE.byteLength ? 'yes' : 'maybe';
}

/** The request as the filters see it: the method, the path with its query, the fields. */
export function h2Head(headers: IncomingHttpHeaders): MessageHead {
  const fields: Array<[string, string]> = [];
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(':') || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) fields.push([name, String(v)]);
  }
  return { method: String(headers[':method'] ?? ''), target: String(headers[':path'] ?? ''), status: 0, version: 'HTTP/2', headers: fields };
}

/** Received header fields as fields to send (pseudo-headers too unless `fieldsOnly`). */
function outgoing(headers: IncomingHttpHeaders, fieldsOnly = false): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !(fieldsOnly && name.startsWith(':'))) out[name] = value;
  return out;
}

/** The client socket as a plain Duplex that first yields `start` (bytes already read). */
function withStart(client: net.Socket, start: Buffer): Duplex {
  const d = new Duplex({
    read() {
      client.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      client.write(chunk, cb);
    },
    final(cb) {
      client.end();
      cb();
    },
    destroy(err, cb) {
      client.destroy();
      cb(err);
    },
  });
  d.push(start);
  client.on('data', (chunk: Buffer) => {
    if (!d.push(chunk)) client.pause();
  });
  client.once('end', () => d.push(null));
  client.once('close', () => d.destroy());
  return d;
}

/** Routes each HTTP/2 stream of one h2c connection to a session or the pod's app. */
export class H2Router<S> implements RequestRouter {
  readonly protocol = 'h2';
  readonly #hub: RouterHub<S>;
  readonly #client: net.Socket;
  readonly #upstreams = new Map<S | 'app', ClientHttp2Session>();
  #requests = 0;
  /** Recording (agent/incoming/record.ts): told about every stream and its answer. */
  readonly #tap: H2Tap | undefined;

  constructor(hub: RouterHub<S>, client: net.Socket, start: Buffer, tap?: H2Tap) {
    this.#hub = hub;
    this.#client = client;
    this.#tap = tap;
    const server = http2.createServer();
    server.on('stream', (stream, headers) => this.#forward(stream, headers));
    server.on('session', (session) => {
      session.on('error', () => undefined);
      session.once('close', () => this.#closeUpstreams());
    });
    server.emit('connection', withStart(client, start));
    client.once('close', () => this.#closeUpstreams());
  }

  get requests(): number {
    return this.#requests;
  }

  #closeUpstreams(): void {
    for (const s of this.#upstreams.values()) s.destroy();
    this.#upstreams.clear();
  }

  #upstream(sub: S | undefined): ClientHttp2Session {
    const key = sub ?? 'app';
    const have = this.#upstreams.get(key);
    if (have && !have.closed && !have.destroyed) return have;
    let duplex = sub === undefined ? undefined : this.#hub.openSession(sub, this.#client);
    const target: S | 'app' = duplex ? key : 'app';
    if (!duplex) {
      const app = this.#upstreams.get('app');
      if (app && !app.closed && !app.destroyed) return app;
      duplex = this.#hub.connectApp(this.#client);
    }
    const transport = duplex;
    const session = http2.connect('http://pod', { createConnection: () => transport });
    session.on('error', (err) => this.#hub.logOnce(`h2c upstream failed: ${err.message}`));
    session.once('close', () => {
      if (this.#upstreams.get(target) === session) this.#upstreams.delete(target);
    });
    this.#upstreams.set(target, session);
    return session;
  }

  #forward(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    let out: http2.ClientHttp2Stream;
    try {
      const upstream = this.#upstream(this.#hub.route(h2Head(headers)));
      out = upstream.request(outgoing(headers), { endStream: stream.endAfterHeaders });
      this.#requests++;
    } catch (err) {
      this.#hub.logOnce(`h2c request could not be forwarded: ${(err as Error).message}`);
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    out.on('error', () => undefined);
    const tap = this.#tap?.stream(headers);
    if (tap) {
      stream.on('data', (c: Buffer) => tap.requestData(c));
      stream.once('end', () => tap.requestEnd());
      if (stream.endAfterHeaders) tap.requestEnd();
      out.once('response', (h) => tap.response(h));
      out.on('data', (c: Buffer) => tap.responseData(c));
      out.once('trailers', (t) => tap.trailers(t));
      out.once('end', () => tap.responseEnd());
      out.once('close', () => tap.closed());
    }
    if (!stream.endAfterHeaders) stream.pipe(out);
    let trailers: http2.IncomingHttpHeaders | undefined;
    out.on('response', (response) => {
      if (stream.destroyed) return;
      // Trailers (gRPC's status) are known only at the end: always wait for them.
      stream.respond(outgoing(response), { waitForTrailers: true });
      out.pipe(stream);
    });
    out.on('trailers', (t) => (trailers = t));
    stream.on('wantTrailers', () => stream.sendTrailers(outgoing(trailers ?? {}, true)));
    // A reset on either side resets the other.
    out.once('close', () => {
      if (!stream.destroyed && !stream.headersSent) stream.close(out.rstCode || http2.constants.NGHTTP2_INTERNAL_ERROR);
      else if (!stream.destroyed && out.rstCode && out.rstCode !== http2.constants.NGHTTP2_NO_ERROR) stream.close(out.rstCode);
    });
    stream.once('close', () => {
      if (!out.destroyed && !out.closed) out.close(stream.rstCode || http2.constants.NGHTTP2_CANCEL);
    });
  }
}

export const startH2Router: StartRouter = (hub, client, start) => new H2Router(hub, client, start);
