/**
 * One hub per pod network namespace and subscribed port: a listening socket in the pod
 * that the redirect rules (agent/incoming/redirect.ts) send new connections to, and the
 * subscriptions of every session on that port. For each connection the hub
 *   - tees the client's bytes, from the first one, to every mirroring session (a copy;
 *     their replies are dropped; copies leave in batches and a session that falls behind
 *     loses its copies, counted, the client never waits: agent/incoming/mirror.ts);
 *   - with an unfiltered steal: relays the connection to that session;
 *   - with filtered steals: detects the protocol (agent/incoming/detect.ts) and starts a
 *     request router for it (agent/incoming/router.ts), which sends each request to the
 *     first session whose filter matches or to the pod's app; a connection that is
 *     neither HTTP/1.1 nor h2c goes to the app;
 *   - with recording sessions (and no steal): relays it to the pod's app and records its
 *     HTTP exchanges for them (agent/incoming/record.ts);
 *   - otherwise: relays it to the pod's app.
 * Connections to the app are made in the pod with SO_MARK, so the rules skip them.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { loadAddon } from '../../native/index.js';
import type { IncomingMode, IncomingOpen } from '../../protocol/messages.js';
import { detectHttp } from './detect.js';
import { filterMatches, type CompiledFilter } from './filters.js';
import type { MessageHead } from './http1.js';
import { MirrorCopy, type MirrorAccount } from './mirror.js';
import { startHttp1Router } from './http1-router.js';
import { H2Router, startH2Router } from './http2.js';
import type { NamespaceIncoming } from './namespaces.js';
import { RawRelay } from './raw-relay.js';
import { ConnectionRecorder, H2RecordTap, Http1Tap, type CompiledRecord } from './record.js';
import { PASS_MARK } from './redirect.js';
import type { RouterHub, RoutedProtocol, StartRouter } from './router.js';

/** The request router for each protocol detection can find. */
const ROUTERS: Record<RoutedProtocol, StartRouter> = { http1: startHttp1Router, h2: startH2Router };

/** What the hub needs from a session. */
export interface IncomingClient {
  readonly id: string;
  readonly user: string;
  readonly host: string;
  /** Opens a stream to the CLI for one incoming connection; undefined when the session is gone. */
  openStream(info: Omit<IncomingOpen, 'type' | 'stream'>): Duplex | undefined;
  /** The session's mirror copies: batches, backlog, and what was cut. */
  readonly mirror: MirrorAccount;
}

export interface Subscription {
  client: IncomingClient;
  port: number;
  mode: IncomingMode;
  filter: CompiledFilter | undefined;
  /** Mode `record`: what it keeps and redacts. */
  record?: CompiledRecord;
}

const plain = (address: string | undefined): string => (address ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');

export class PortHub implements RouterHub<Subscription> {
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
        if (kind === 'other') new RawRelay(this, client, () => this.connectApp(client), false, start);
        else ROUTERS[kind](this, client, start);
      });
    } else {
      const records = this.subs.filter((s) => s.mode === 'record');
      if (records.length > 0) this.#record(client, records);
      else new RawRelay(this, client, () => this.connectApp(client), false);
    }
  }

  /** The app answers; the connection's exchanges are recorded for `records`. */
  #record(client: net.Socket, records: Subscription[]): void {
    const rec = new ConnectionRecorder(this, records, client);
    detectHttp(client, (start, kind) => {
      if (kind === 'h2') {
        new H2Router(this, client, start, new H2RecordTap(rec));
        return;
      }
      const app = this.connectApp(client);
      new RawRelay(this, client, () => app, false, start);
      if (kind === 'http1') new Http1Tap(client, app, start, rec);
      else rec.skipped(start.byteLength === 0 ? 'not HTTP (the client sent nothing first)' : 'not HTTP');
    });
  }

  /** Sends a copy of the client's bytes to a mirroring session; its replies are dropped. */
  #tee(client: net.Socket, sub: Subscription): void {
    const stream = this.openSession(sub, client);
    if (!stream) return;
    const copy = new MirrorCopy(sub.client.mirror, stream,
      (why) => this.logOnce(`mirror of port ${this.port} for session ${sub.client.id}: ${why.replace(/\d+ bytes/, 'too many bytes')}; copies are cut while it is behind (counted in the agent's /status)`));
    const onData = (chunk: Buffer): void => copy.push(chunk);
    client.on('data', onData);
    client.once('end', () => copy.end());
    client.once('close', () => {
      client.off('data', onData);
      copy.end();
    });
  }
}
