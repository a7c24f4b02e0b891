/**
 * Incoming traffic on the agent: mirror and steal, several sessions per port.
 *
 * Per pod network namespace and subscribed port there is one hub: a listening socket in
 * the pod that the redirect rules (agent/redirect.ts) send new connections to. For each
 * connection the hub
 *   - tees the client's bytes, from the first one, to every mirroring session (a copy;
 *     their replies are dropped, and a mirror that falls behind is cut, never the client);
 *   - with an unfiltered steal: relays the connection to that session;
 *   - with filtered steals: routes each HTTP/1.1 request on its own (agent/http1.ts) to
 *     the first session whose filter matches, or to the pod's app; an Upgrade goes with
 *     its first request and then is relayed both ways; HTTP/2 with prior knowledge (h2c)
 *     is routed per stream the same way (agent/http2.ts); a connection that is neither
 *     (checked on the first bytes, waiting at most 1 s) goes to the app;
 *   - otherwise: relays it to the pod's app.
 * Connections to the app are made in the pod with SO_MARK, so the rules skip them.
 * If a session's stream closes before any byte of its answer came back (the program
 * is not listening, the CLI is gone), the request goes to the app instead.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { loadAddon } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';
import type { HttpFilter, IncomingMode, IncomingOpen } from '../protocol/messages.js';
import { Http1Parser, HttpParseError, keepAlive, looksLikeHttp1, requestPath, type HttpEvent, type MessageHead } from './http1.js';
import { H2Router, looksLikeH2 } from './http2.js';
import { NetnsRedirect, PASS_MARK, removeStaleTables } from './redirect.js';

export { removeStaleTables as removeStaleRedirects };

/** Protocol detection on a filtered port waits at most this long for the first bytes. */
export const DETECT_MS = 1000;
/** A mirror more than this far behind is cut (the client is never slowed for a copy). */
const MIRROR_BACKLOG = 16 * 1024 * 1024;
/** Request bytes kept for a retry on the app if a session fails before answering. */
const REPLAY_LIMIT = 1024 * 1024;
const MAX_FILTER_TEXT = 512;

/** What the hub needs from a session. */
export interface IncomingClient {
  readonly id: string;
  readonly user: string;
  readonly host: string;
  /** Opens a stream to the CLI for one incoming connection; undefined when the session is gone. */
  openStream(info: Omit<IncomingOpen, 'type' | 'stream'>): Duplex | undefined;
}

interface CompiledFilter {
  headers: Array<{ name: string; value: RegExp }>;
  path: RegExp | undefined;
  method: string | undefined;
  text: string;
}

interface Subscription {
  client: IncomingClient;
  port: number;
  mode: IncomingMode;
  filter: CompiledFilter | undefined;
}

function wholeMatch(source: string, what: string): RegExp {
  if (source.length > MAX_FILTER_TEXT) throw new TsmError('TSM_ERR_USAGE', `the ${what} filter is longer than ${MAX_FILTER_TEXT} characters`);
  try {
    return new RegExp(`^(?:${source})$`);
  } catch (err) {
    throw new TsmError('TSM_ERR_USAGE', `the ${what} filter "${source}" is not a valid regular expression: ${(err as Error).message}`);
  }
}

/** Validates a filter from the wire; undefined for no filter. */
export function compileFilter(value: unknown): CompiledFilter | undefined {
  if (value === undefined || value === null) return undefined;
  const f = value as Partial<HttpFilter>;
  const headers = Array.isArray(f.headers) ? f.headers : [];
  if (headers.length > 32) throw new TsmError('TSM_ERR_USAGE', 'at most 32 header filters');
  const compiled: CompiledFilter = { headers: [], path: undefined, method: undefined, text: '' };
  const parts: string[] = [];
  for (const h of headers as unknown[]) {
    const { name, value: v } = (h ?? {}) as { name?: unknown; value?: unknown };
    if (typeof name !== 'string' || typeof v !== 'string' || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) {
      throw new TsmError('TSM_ERR_USAGE', 'a header filter needs a header name and a value pattern');
    }
    compiled.headers.push({ name: name.toLowerCase(), value: wholeMatch(v, `header ${name}`) });
    parts.push(`${name}: ${v}`);
  }
  if (f.path !== undefined) {
    if (typeof f.path !== 'string') throw new TsmError('TSM_ERR_USAGE', 'the path filter must be a string');
    compiled.path = wholeMatch(f.path, 'path');
    parts.push(`path ${f.path}`);
  }
  if (f.method !== undefined) {
    if (typeof f.method !== 'string' || !/^[A-Za-z]{1,20}$/.test(f.method)) throw new TsmError('TSM_ERR_USAGE', 'the method filter must be a method name');
    compiled.method = f.method.toUpperCase();
    parts.push(`method ${compiled.method}`);
  }
  if (parts.length === 0) return undefined;
  compiled.text = parts.join(', ');
  return compiled;
}

export function filterMatches(f: CompiledFilter, head: MessageHead): boolean {
  if (f.method !== undefined && head.method !== f.method) return false;
  if (f.path && !f.path.test(requestPath(head))) return false;
  for (const want of f.headers) {
    if (!head.headers.some(([n, v]) => n.toLowerCase() === want.name && want.value.test(v))) return false;
  }
  return true;
}

const plain = (address: string | undefined): string => (address ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');

// ---- relaying between two duplexes

/** Relays a and b both ways with backpressure and half-close; returns a function that unlinks them. */
function link(a: Duplex, b: Duplex): () => void {
  const onA = (chunk: Buffer): void => {
    if (!b.write(chunk)) a.pause();
  };
  const onB = (chunk: Buffer): void => {
    if (!a.write(chunk)) b.pause();
  };
  const drainA = (): void => void b.resume();
  const drainB = (): void => void a.resume();
  const endA = (): void => void b.end();
  const endB = (): void => void a.end();
  a.on('data', onA);
  b.on('data', onB);
  a.on('drain', drainA);
  b.on('drain', drainB);
  a.on('end', endA);
  b.on('end', endB);
  a.resume();
  b.resume();
  return () => {
    a.off('data', onA);
    b.off('data', onB);
    a.off('drain', drainA);
    b.off('drain', drainB);
    a.off('end', endA);
    b.off('end', endB);
  };
}

function destroyQuietly(d: Duplex | undefined): void {
  if (d && !d.destroyed) d.destroy();
}

// ---- one hub per (namespace, port)

class PortHub {
  readonly port: number;
  readonly subs: Subscription[] = [];
  readonly #ns: NamespaceIncoming;
  readonly #server: net.Server;
  readonly listenPort: number;
  readonly #connections = new Set<net.Socket>();
  readonly #logged = new Set<string>();

  constructor(ns: NamespaceIncoming, port: number) {
    this.#ns = ns;
    this.port = port;
    const { fd, port: listenPort } = loadAddon().netnsListen(ns.redirect.nsFd);
    this.listenPort = listenPort;
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (c) => this.#accepted(c));
    this.#server.on('error', (err) => ns.log(`listener for port ${port} failed: ${err.message}`));
    this.#server.listen({ fd });
  }

  /** Logs a line once (per distinct text), not once per connection. */
  logOnce(line: string): void {
    if (this.#logged.has(line)) return;
    if (this.#logged.size > 100) this.#logged.clear();
    this.#logged.add(line);
    this.#ns.log(line);
  }

  close(): void {
    this.#server.close();
    // Connections already relayed to the app keep going; stolen ones end with their session.
  }

  /** An HTTP/1.1 request or raw connection to the pod's app, from inside the pod, marked. */
  connectApp(client: net.Socket): net.Socket {
    const address = plain(client.localAddress) || '127.0.0.1';
    const family = net.isIP(address) === 6 ? 6 : 4;
    const addon = loadAddon();
    let fd: number;
    try {
      fd = addon.netnsSocket(this.#ns.redirect.nsFd, family, 'tcp');
      addon.setMark(fd, PASS_MARK);
    } catch (err) {
      // Cannot reach the app: this connection fails, the agent goes on.
      this.logOnce(`port ${this.port}: cannot open a connection to the pod's app: ${(err as Error).message}`);
      const dead = new net.Socket();
      dead.on('error', () => undefined);
      dead.destroy();
      return dead;
    }
    const socket = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.connect({ port: this.port, host: address, family });
    return socket;
  }

  /** The first filtered steal whose filter matches the request; undefined: the app. */
  route(head: MessageHead): Subscription | undefined {
    for (const s of this.subs) {
      if (s.mode === 'steal' && s.filter && filterMatches(s.filter, head)) return s;
    }
    return undefined;
  }

  openSession(sub: Subscription, client: net.Socket): Duplex | undefined {
    const stream = sub.client.openStream({
      port: this.port, mode: sub.mode,
      remoteAddress: plain(client.remoteAddress), remotePort: client.remotePort ?? 0,
      localAddress: plain(client.localAddress), localPort: this.port,
    });
    stream?.on('error', () => undefined);
    return stream;
  }

  #accepted(client: net.Socket): void {
    this.#connections.add(client);
    this.#ns.connections++;
    client.once('close', () => {
      this.#connections.delete(client);
      this.#ns.connections--;
      this.#ns.maybeRelease();
    });
    client.on('error', () => undefined);
    client.setNoDelay(true);
    try {
      this.#route(client);
    } catch (err) {
      this.logOnce(`port ${this.port}: could not relay a connection: ${(err as Error).message}`);
      client.destroy();
    }
  }

  #route(client: net.Socket): void {
    const mirrors = this.subs.filter((s) => s.mode === 'mirror');
    for (const m of mirrors) this.#tee(client, m);
    const steals = this.subs.filter((s) => s.mode === 'steal');
    const all = steals.find((s) => !s.filter);
    if (all) {
      new RawRelay(this, client, () => this.openSession(all, client), true);
    } else if (steals.length > 0) {
      detectHttp(client, (start, kind) => {
        if (kind === 'http1') new HttpRouter(this, client, start);
        else if (kind === 'h2') new H2Router(this, client, start);
        else new RawRelay(this, client, () => this.connectApp(client), false, start);
      });
    } else {
      new RawRelay(this, client, () => this.connectApp(client), false);
    }
  }

  /** Sends a copy of the client's bytes to a mirroring session; its replies are dropped. */
  #tee(client: net.Socket, sub: Subscription): void {
    const copy = this.openSession(sub, client);
    if (!copy) return;
    copy.on('data', () => undefined); // the program's replies go nowhere
    const onData = (chunk: Buffer): void => {
      if (copy.destroyed) return;
      if (copy.writableLength > MIRROR_BACKLOG) {
        this.#ns.log(`mirror of port ${this.port} for session ${sub.client.id} fell ${MIRROR_BACKLOG} bytes behind; its copy of this connection is cut`);
        copy.destroy();
        return;
      }
      copy.write(chunk);
    };
    client.on('data', onData);
    client.once('end', () => copy.end());
    client.once('close', () => {
      client.off('data', onData);
      if (!copy.writableEnded) copy.end();
    });
  }
}

/** Waits for the first bytes of a connection (at most DETECT_MS) and says whether they are HTTP/1.x, h2c or other. */
function detectHttp(client: net.Socket, decide: (start: Buffer, kind: 'http1' | 'h2' | 'other') => void): void {
  let start = Buffer.alloc(0);
  let done = false;
  const finish = (kind: 'http1' | 'h2' | 'other'): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    client.off('data', onData);
    client.off('end', onEnd);
    client.pause();
    decide(start, kind);
  };
  const onData = (chunk: Buffer): void => {
    start = Buffer.concat([start, chunk]);
    const h2 = looksLikeH2(start);
    if (h2 === 'yes') return finish('h2');
    if (h2 === 'maybe') return undefined; // "PRI * HTTP/2.0…" so far: wait for the whole preface
    const v = looksLikeHttp1(start);
    if (v !== 'maybe') finish(v === 'yes' ? 'http1' : 'other');
    return undefined;
  };
  const onEnd = (): void => finish('other');
  // Server-speaks-first protocols send nothing: after DETECT_MS they go to the app.
  const timer = setTimeout(() => finish('other'), DETECT_MS);
  client.on('data', onData);
  client.once('end', onEnd);
  client.resume();
}

/**
 * A whole connection relayed to one upstream. With `replayToApp`, the client's bytes are
 * kept until the upstream answers; if it closes first, they go to the pod's app instead.
 */
class RawRelay {
  constructor(hub: PortHub, client: net.Socket, open: () => Duplex | undefined, replayToApp: boolean, start?: Buffer) {
    let upstream = open();
    if (!upstream) {
      upstream = hub.connectApp(client);
      replayToApp = false;
    }
    let replay: Buffer[] | undefined = replayToApp ? [] : undefined;
    let replayBytes = 0;
    if (start && start.byteLength > 0) {
      upstream.write(start);
      replay?.push(start);
      replayBytes += start.byteLength;
    }
    let unlink = link(client, upstream);
    const keep = (chunk: Buffer): void => {
      if (!replay) return;
      replayBytes += chunk.byteLength;
      if (replayBytes > REPLAY_LIMIT) replay = undefined;
      else replay.push(chunk);
    };
    client.on('data', keep);
    const answered = (): void => {
      replay = undefined;
      client.off('data', keep);
    };
    const watch = (up: Duplex): void => {
      up.once('data', answered);
      up.once('close', () => {
        if (replay && !client.destroyed) {
          // The session went away before answering: the app serves this connection.
          unlink();
          const saved = replay;
          answered();
          const app = hub.connectApp(client);
          for (const b of saved) app.write(b);
          if (client.readableEnded) app.end();
          unlink = link(client, app);
          upstream = app;
          watch(app);
          return;
        }
        if (!client.writableEnded) client.destroy();
      });
    };
    watch(upstream);
    client.once('close', () => destroyQuietly(upstream));
  }
}

interface Current {
  up: Upstream;
  resp: Http1Parser;
  requestDone: boolean;
  closeAfter: boolean;
  /** The request's bytes, kept until a session answers (for a retry on the app). */
  replay: Buffer[] | undefined;
  replayBytes: number;
  lastStatus: number;
  /** The final response went out (the request may still be sending its body). */
  responseDone: boolean;
}

interface Upstream {
  duplex: Duplex;
  sub: Subscription | undefined; // undefined: the pod's app
  answered: boolean;
}

/** Routes each HTTP/1.1 request of one connection to a session or the pod's app. */
class HttpRouter {
  readonly #hub: PortHub;
  readonly #client: net.Socket;
  readonly #parser = new Http1Parser('request');
  readonly #queue: HttpEvent[] = [];
  #queued = 0;
  readonly #upstreams = new Map<Subscription | 'app', Upstream>();
  /** The request being forwarded or answered. */
  #current: Current | undefined;
  #clientEnded = false;
  #routedAny = false;
  #seen: Buffer[] | undefined = [];
  #tunnel = false;

  constructor(hub: PortHub, client: net.Socket, start: Buffer) {
    this.#hub = hub;
    this.#client = client;
    client.on('data', (chunk: Buffer) => this.#onClientData(chunk));
    client.once('end', () => {
      this.#clientEnded = true;
      this.#maybeFinish();
    });
    client.once('close', () => {
      for (const u of this.#upstreams.values()) destroyQuietly(u.duplex);
    });
    this.#onClientData(start);
    client.resume();
  }

  #onClientData(chunk: Buffer): void {
    if (this.#tunnel || chunk.byteLength === 0) return;
    this.#seen?.push(chunk);
    let events: HttpEvent[];
    try {
      events = this.#parser.push(chunk);
    } catch (err) {
      this.#parseFailed(err);
      return;
    }
    this.#enqueue(events);
  }

  #enqueue(events: HttpEvent[]): void {
    for (const e of events) {
      this.#queue.push(e);
      if (e.kind !== 'end') this.#queued += e.raw.byteLength;
    }
    if (this.#queued > REPLAY_LIMIT) this.#client.pause();
    this.#pump();
  }

  #parseFailed(err: unknown): void {
    const why = err instanceof HttpParseError ? err.message : String(err);
    if (!this.#routedAny && this.#seen) {
      // Not HTTP after all: the whole connection goes to the app, bytes as they came.
      const start = Buffer.concat(this.#seen);
      this.#client.removeAllListeners('data');
      this.#client.removeAllListeners('end');
      this.#client.pause();
      new RawRelay(this.#hub, this.#client, () => this.#hub.connectApp(this.#client), false, start);
      return;
    }
    this.#hub.logOnce(`port ${this.#hub.port}: dropping a connection whose HTTP could not be framed (${why})`);
    this.#client.destroy();
  }

  #upstreamFor(sub: Subscription | undefined): Upstream {
    const key = sub ?? 'app';
    const have = this.#upstreams.get(key);
    if (have && !have.duplex.destroyed && !have.duplex.writableEnded) return have;
    let duplex = sub ? this.#hub.openSession(sub, this.#client) : undefined;
    let target = sub;
    if (!duplex) {
      target = undefined;
      const existing = this.#upstreams.get('app');
      if (existing && !existing.duplex.destroyed && !existing.duplex.writableEnded) return existing;
      duplex = this.#hub.connectApp(this.#client);
    }
    const up: Upstream = { duplex, sub: target, answered: false };
    this.#upstreams.set(target ?? 'app', up);
    duplex.on('data', (chunk: Buffer) => this.#onUpstreamData(up, chunk));
    duplex.once('end', () => this.#onUpstreamGone(up));
    duplex.once('close', () => this.#onUpstreamGone(up));
    return up;
  }

  #route(head: MessageHead): Subscription | undefined {
    return this.#hub.route(head);
  }

  #pump(): void {
    while (this.#queue.length > 0 && !this.#tunnel) {
      const cur = this.#current;
      if (cur?.requestDone) return; // wait for the answer before the next request
      const e = this.#queue.shift() as HttpEvent;
      if (e.kind !== 'end') this.#queued -= e.raw.byteLength;
      if (!cur) {
        if (e.kind !== 'head') continue; // cannot happen: a message starts with its head
        this.#routedAny = true;
        this.#seen = undefined;
        const up = this.#upstreamFor(this.#route(e.head));
        const resp = new Http1Parser('response');
        resp.requestMethod = e.head.method;
        this.#current = {
          up, resp, requestDone: false, closeAfter: !keepAlive(e.head),
          replay: up.sub ? [e.raw] : undefined, replayBytes: e.raw.byteLength, lastStatus: 0, responseDone: false,
        };
        up.duplex.write(e.raw);
        continue;
      }
      if (e.kind === 'body') {
        this.#keep(cur, e.raw);
        cur.up.duplex.write(e.raw);
      } else if (e.kind === 'end') {
        cur.requestDone = true;
        if (cur.responseDone) {
          this.#answered(cur);
          return;
        }
      }
    }
    if (this.#queued <= REPLAY_LIMIT && !this.#tunnel) this.#client.resume();
    this.#maybeFinish();
  }

  #keep(cur: Current, raw: Buffer): void {
    if (!cur.replay) return;
    cur.replayBytes += raw.byteLength;
    if (cur.replayBytes > REPLAY_LIMIT) cur.replay = undefined;
    else cur.replay.push(raw);
  }

  #onUpstreamData(up: Upstream, chunk: Buffer): void {
    if (this.#tunnel) return;
    const cur = this.#current;
    if (!cur || cur.up !== up) return; // nothing asked: stray bytes are dropped
    up.answered = true;
    cur.replay = undefined;
    let events: HttpEvent[];
    try {
      events = cur.resp.push(chunk);
    } catch {
      this.#client.destroy();
      return;
    }
    this.#onResponseEvents(cur, events);
  }

  #onResponseEvents(cur: Current, events: HttpEvent[]): void {
    for (const e of events) {
      if (e.kind === 'head') {
        cur.lastStatus = e.head.status;
        if (e.head.status >= 200 && !keepAlive(e.head)) cur.closeAfter = true;
        this.#client.write(e.raw);
      } else if (e.kind === 'body') {
        if (!this.#client.write(e.raw)) {
          cur.up.duplex.pause();
          this.#client.once('drain', () => cur.up.duplex.resume());
        }
      } else if (e.upgrade && cur.lastStatus === 101) {
        this.#startTunnel(cur);
        return;
      } else if (cur.lastStatus >= 100 && cur.lastStatus < 200) {
        // 100 Continue and friends: the final answer follows.
      } else {
        this.#answered(cur);
        return;
      }
    }
  }

  #answered(cur: Current): void {
    // The next request waits until this one has gone out whole (#pump calls back).
    cur.responseDone = true;
    if (!cur.requestDone) return;
    this.#current = undefined;
    if (cur.closeAfter) {
      this.#client.end();
      for (const u of this.#upstreams.values()) u.duplex.end();
      return;
    }
    if (this.#parser.stopped) {
      // The request asked to upgrade and was answered without 101: back to HTTP.
      try {
        this.#enqueue(this.#parser.resume());
      } catch (err) {
        this.#parseFailed(err);
      }
      return;
    }
    this.#pump();
  }

  #startTunnel(cur: Current): void {
    this.#tunnel = true;
    this.#current = undefined;
    const up = cur.up.duplex;
    const fromClient = this.#parser.takeRest();
    const fromUp = cur.resp.takeRest();
    if (fromClient.byteLength > 0) up.write(fromClient);
    if (fromUp.byteLength > 0) this.#client.write(fromUp);
    this.#client.removeAllListeners('data');
    this.#client.removeAllListeners('end');
    up.removeAllListeners('data');
    up.removeAllListeners('end');
    up.removeAllListeners('close');
    for (const [k, u] of this.#upstreams) if (u.duplex !== up) {
      u.duplex.end();
      this.#upstreams.delete(k);
    }
    link(this.#client, up);
    up.once('close', () => {
      if (!this.#client.writableEnded) this.#client.destroy();
    });
    if (this.#clientEnded) up.end();
  }

  #onUpstreamGone(up: Upstream): void {
    if (this.#tunnel) return;
    const key = up.sub ?? 'app';
    if (this.#upstreams.get(key) === up) this.#upstreams.delete(key);
    const cur = this.#current;
    if (!cur || cur.up !== up) return;
    if (!up.answered && cur.replay && up.sub) {
      // The session went away before answering: the app answers this request.
      const app = this.#upstreamFor(undefined);
      cur.up = app;
      const saved = cur.replay;
      cur.replay = undefined;
      for (const b of saved) app.duplex.write(b);
      return;
    }
    const events = cur.resp.finish();
    if (events.length > 0) {
      cur.closeAfter = true;
      this.#onResponseEvents(cur, events);
      return;
    }
    this.#client.destroy();
  }

  #maybeFinish(): void {
    if (!this.#clientEnded || this.#current || this.#queue.length > 0 || this.#tunnel) return;
    for (const u of this.#upstreams.values()) u.duplex.end();
    this.#client.end();
  }
}

// ---- per namespace

class NamespaceIncoming {
  readonly key: string;
  readonly redirect: NetnsRedirect;
  readonly hubs = new Map<number, PortHub>();
  readonly log: (line: string) => void;
  /** Client connections still relayed: they need the namespace fd for app connections. */
  connections = 0;
  #released = false;

  constructor(key: string, pid: number, log: (line: string) => void) {
    this.key = key;
    this.log = log;
    this.redirect = new NetnsRedirect(pid, log);
  }

  /** Closes the namespace fd once no port is subscribed and no connection is relayed. */
  maybeRelease(): void {
    if (this.#released || this.hubs.size > 0 || this.connections > 0) return;
    this.#released = true;
    if (namespaces.get(this.key) === this) namespaces.delete(this.key);
    void this.redirect.close();
  }
}

const namespaces = new Map<string, NamespaceIncoming>();


function describe(s: Subscription): string {
  const what = s.mode === 'mirror' ? 'mirror' : s.filter ? `filtered steal (${s.filter.text})` : 'steal of all traffic';
  return `${s.client.user}@${s.client.host} (session ${s.client.id}, ${what})`;
}

/**
 * A session's view of incoming traffic: its subscriptions, across the namespace's hubs.
 * `nsKey` identifies the pod's network namespace (device:inode of /proc/PID/ns/net).
 */
export class SessionIncoming {
  readonly #client: IncomingClient;
  readonly #pid: number;
  readonly #nsKey: string;
  readonly #log: (line: string) => void;
  readonly #mine = new Map<number, Subscription>();
  /** Subscribe/unsubscribe run one at a time per session. */
  #chain: Promise<unknown> = Promise.resolve();

  constructor(client: IncomingClient, pid: number, nsKey: string, log: (line: string) => void) {
    this.#client = client;
    this.#pid = pid;
    this.#nsKey = nsKey;
    this.#log = log;
  }

  subscribe(port: number, mode: IncomingMode, filterValue: unknown): Promise<{ port: number }> {
    return this.#serial(async () => {
      if (this.#pid <= 0) throw new TsmError('TSM_ERR_USAGE', 'incoming traffic needs a target pod (this session is targetless)');
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TsmError('TSM_ERR_USAGE', `port ${port} is not a TCP port`);
      if (mode !== 'mirror' && mode !== 'steal') throw new TsmError('TSM_ERR_USAGE', `mode must be mirror or steal, not "${String(mode)}"`);
      const filter = mode === 'steal' ? compileFilter(filterValue) : undefined;
      if (this.#mine.has(port)) return { port };
      let ns = namespaces.get(this.#nsKey);
      if (!ns) {
        ns = new NamespaceIncoming(this.#nsKey, this.#pid, this.#log);
        namespaces.set(this.#nsKey, ns);
      }
      const hub = ns.hubs.get(port);
      if (hub && mode === 'steal') {
        const holder = hub.subs.find((s) => s.mode === 'steal' && (!s.filter || !filter));
        if (holder) {
          throw new TsmError('TSM_ERR_PORT_CONFLICT',
            `port ${port} of the pod is already stolen by ${describe(holder)}; ${filter ? 'a filtered steal cannot share a port with a steal of all traffic' : 'a steal of all traffic needs the port to itself'}`,
            { hint: 'steal a filtered slice (--http-header, --http-path, --http-method) that does not overlap, use --mirror, or ask that developer to stop' });
        }
      }
      const sub: Subscription = { client: this.#client, port, mode, filter };
      let created = false;
      let h = hub;
      if (!h) {
        h = new PortHub(ns, port);
        ns.hubs.set(port, h);
        created = true;
      }
      h.subs.push(sub);
      this.#mine.set(port, sub);
      if (created) {
        try {
          await ns.redirect.set(port, h.listenPort);
        } catch (err) {
          this.#drop(port);
          throw err;
        }
      }
      this.#log(`session ${this.#client.id}: ${describe(sub)} on port ${port}`);
      return { port };
    });
  }

  unsubscribe(port: number): Promise<{ port: number }> {
    return this.#serial(async () => {
      await this.#drop(port);
      return { port };
    });
  }

  /** Drops every subscription (the session ended); the last one out removes the rules. */
  dispose(): Promise<void> {
    return this.#serial(async () => {
      await Promise.all([...this.#mine.keys()].map((p) => this.#drop(p)));
    });
  }

  #serial<T>(step: () => Promise<T>): Promise<T> {
    const next = this.#chain.then(step);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  async #drop(port: number): Promise<void> {
    const sub = this.#mine.get(port);
    if (!sub) return;
    this.#mine.delete(port);
    const ns = namespaces.get(this.#nsKey);
    const hub = ns?.hubs.get(port);
    if (!ns || !hub) return;
    const i = hub.subs.indexOf(sub);
    if (i >= 0) hub.subs.splice(i, 1);
    if (hub.subs.length > 0) return;
    ns.hubs.delete(port);
    hub.close();
    await ns.redirect.remove(port).catch((err: Error) => this.#log(`removing the redirect of port ${port}: ${err.message}`));
    ns.maybeRelease();
  }
}

/** Lifts every redirect this agent holds (graceful shutdown). */
export async function releaseAllRedirects(): Promise<void> {
  await Promise.all([...namespaces.values()].map(async (ns) => {
    for (const [port, hub] of ns.hubs) {
      hub.close();
      await ns.redirect.remove(port).catch(() => undefined);
    }
    ns.hubs.clear();
    namespaces.delete(ns.key);
  }));
}

