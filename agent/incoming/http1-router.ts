/**
 * HTTP/1.1 on a port with filtered steals: each request of a keep-alive connection is
 * routed on its own, to the session the hub picks or to the pod's app, and forwarded as
 * the client's raw bytes (agent/incoming/http1.ts frames them). The next request waits
 * for the answer, so answers keep their order. A request with `Upgrade` goes like any
 * other; on `101` the connection becomes a two-way relay with that upstream. A request
 * whose session closes before any byte of its answer is replayed to the app.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { Http1Parser, HttpParseError, keepAlive, type HttpEvent, type MessageHead } from './http1.js';
import { RawRelay, REPLAY_LIMIT, destroyQuietly, link } from './raw-relay.js';
import type { RequestRouter, RouterHub, StartRouter } from './router.js';

/** Where requests go: a session's stream (`sub`) or a connection to the app (`sub` undefined). */
interface Upstream<S> {
  duplex: Duplex;
  sub: S | undefined;
  answered: boolean;
}

/** One request and its answer, from the request's head until both have gone through. */
interface Exchange<S> {
  up: Upstream<S>;
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

/**
 * Where the connection is:
 * - `first-request`: nothing routed yet; the bytes are kept, so that a connection that
 *   turns out not to be HTTP goes to the app exactly as it came;
 * - `requests`: requests are routed; `exchange` is the one being forwarded or answered;
 * - `tunnel`: a `101` made it a two-way relay; HTTP is over.
 */
type Http1Phase<S> =
  | { kind: 'first-request'; seen: Buffer[] }
  | { kind: 'requests'; exchange: Exchange<S> | undefined }
  | { kind: 'tunnel' };

/** Parsed request events not forwarded yet, and their size (the client pauses beyond REPLAY_LIMIT). */
class PendingEvents {
  readonly events: HttpEvent[] = [];
  bytes = 0;

  push(e: HttpEvent): void {
    this.events.push(e);
    if (e.kind !== 'end') this.bytes += e.raw.byteLength;
  }

  shift(): HttpEvent | undefined {
    const e = this.events.shift();
    if (e && e.kind !== 'end') this.bytes -= e.raw.byteLength;
    return e;
  }
}

/** Routes each HTTP/1.1 request of one connection to a session or the pod's app. */
export class Http1Router<S> implements RequestRouter {
  readonly protocol = 'http1';
  readonly #hub: RouterHub<S>;
  readonly #client: net.Socket;
  readonly #parser = new Http1Parser('request');
  readonly #pending = new PendingEvents();
  readonly #upstreams = new Map<S | 'app', Upstream<S>>();
  #phase: Http1Phase<S> = { kind: 'first-request', seen: [] };
  #clientEnded = false;
  #requests = 0;

  constructor(hub: RouterHub<S>, client: net.Socket, start: Buffer) {
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

  get requests(): number {
    return this.#requests;
  }

  /** The exchange under way, if any. */
  get #exchange(): Exchange<S> | undefined {
    return this.#phase.kind === 'requests' ? this.#phase.exchange : undefined;
  }

  #onClientData(chunk: Buffer): void {
    if (this.#phase.kind === 'tunnel' || chunk.byteLength === 0) return;
    if (this.#phase.kind === 'first-request') this.#phase.seen.push(chunk);
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
    for (const e of events) this.#pending.push(e);
    if (this.#pending.bytes > REPLAY_LIMIT) this.#client.pause();
    this.#pump();
  }

  #parseFailed(err: unknown): void {
    const why = err instanceof HttpParseError ? err.message : String(err);
    if (this.#phase.kind === 'first-request') {
      // Not HTTP after all: the whole connection goes to the app, bytes as they came.
      const start = Buffer.concat(this.#phase.seen);
      this.#client.removeAllListeners('data');
      this.#client.removeAllListeners('end');
      this.#client.pause();
      new RawRelay(this.#hub, this.#client, () => this.#hub.connectApp(this.#client), false, start);
      return;
    }
    this.#hub.logOnce(`port ${this.#hub.port}: dropping a connection whose HTTP could not be framed (${why})`);
    this.#client.destroy();
  }

  #upstreamFor(sub: S | undefined): Upstream<S> {
    const key = sub ?? 'app';
    const have = this.#upstreams.get(key);
    if (have && !have.duplex.destroyed && !have.duplex.writableEnded) return have;
    let duplex = sub !== undefined ? this.#hub.openSession(sub, this.#client) : undefined;
    let target = sub;
    if (!duplex) {
      target = undefined;
      const existing = this.#upstreams.get('app');
      if (existing && !existing.duplex.destroyed && !existing.duplex.writableEnded) return existing;
      duplex = this.#hub.connectApp(this.#client);
    }
    const up: Upstream<S> = { duplex, sub: target, answered: false };
    this.#upstreams.set(target ?? 'app', up);
    duplex.on('data', (chunk: Buffer) => this.#onUpstreamData(up, chunk));
    duplex.once('end', () => this.#onUpstreamGone(up));
    duplex.once('close', () => this.#onUpstreamGone(up));
    return up;
  }

  #route(head: MessageHead): S | undefined {
    return this.#hub.route(head);
  }

  #pump(): void {
    // A request's head and body go to its upstream in one write (see #onResponseEvents).
    const corked: Duplex[] = [];
    try {
      this.#pumpEvents(corked);
    } finally {
      for (const d of corked) d.uncork();
    }
  }

  #pumpEvents(corked: Duplex[]): void {
    const cork = (d: Duplex): Duplex => {
      if (!corked.includes(d)) {
        d.cork();
        corked.push(d);
      }
      return d;
    };
    while (this.#pending.events.length > 0 && this.#phase.kind !== 'tunnel') {
      const cur = this.#exchange;
      if (cur?.requestDone) return; // wait for the answer before the next request
      const e = this.#pending.shift() as HttpEvent;
      if (!cur) {
        if (e.kind !== 'head') continue; // cannot happen: a message starts with its head
        const up = this.#upstreamFor(this.#route(e.head));
        const resp = new Http1Parser('response');
        resp.requestMethod = e.head.method;
        this.#phase = {
          kind: 'requests',
          exchange: {
            up, resp, requestDone: false, closeAfter: !keepAlive(e.head),
            replay: up.sub !== undefined ? [e.raw] : undefined, replayBytes: e.raw.byteLength, lastStatus: 0, responseDone: false,
          },
        };
        this.#requests++;
        cork(up.duplex).write(e.raw);
        continue;
      }
      if (e.kind === 'body') {
        this.#keep(cur, e.raw);
        cork(cur.up.duplex).write(e.raw);
      } else if (e.kind === 'end') {
        cur.requestDone = true;
        if (cur.responseDone) {
          this.#answered(cur);
          return;
        }
      }
    }
    if (this.#pending.bytes <= REPLAY_LIMIT && this.#phase.kind !== 'tunnel') this.#client.resume();
    this.#maybeFinish();
  }

  #keep(cur: Exchange<S>, raw: Buffer): void {
    if (!cur.replay) return;
    cur.replayBytes += raw.byteLength;
    if (cur.replayBytes > REPLAY_LIMIT) cur.replay = undefined;
    else cur.replay.push(raw);
  }

  #onUpstreamData(up: Upstream<S>, chunk: Buffer): void {
    if (this.#phase.kind === 'tunnel') return;
    const cur = this.#exchange;
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

  #onResponseEvents(cur: Exchange<S>, events: HttpEvent[]): void {
    // An answer's head and body (sliced apart by the parser) leave in one write, not one
    // system call and one TCP segment each.
    const client = this.#client;
    client.cork();
    try {
      this.#forwardResponse(cur, events);
    } finally {
      client.uncork();
    }
  }

  #forwardResponse(cur: Exchange<S>, events: HttpEvent[]): void {
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

  #answered(cur: Exchange<S>): void {
    // The next request waits until this one has gone out whole (#pump calls back).
    cur.responseDone = true;
    if (!cur.requestDone) return;
    this.#phase = { kind: 'requests', exchange: undefined };
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

  #startTunnel(cur: Exchange<S>): void {
    this.#phase = { kind: 'tunnel' };
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

  #onUpstreamGone(up: Upstream<S>): void {
    if (this.#phase.kind === 'tunnel') return;
    const key = up.sub ?? 'app';
    if (this.#upstreams.get(key) === up) this.#upstreams.delete(key);
    const cur = this.#exchange;
    if (!cur || cur.up !== up) return;
    if (!up.answered && cur.replay && up.sub !== undefined) {
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
    if (!this.#clientEnded || this.#exchange || this.#pending.events.length > 0 || this.#phase.kind === 'tunnel') return;
    for (const u of this.#upstreams.values()) u.duplex.end();
    this.#client.end();
  }
}

export const startHttp1Router: StartRouter = (hub, client, start) => new Http1Router(hub, client, start);
