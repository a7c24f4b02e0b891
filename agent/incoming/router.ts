/**
 * What the port's hub and a per-connection request router know of each other. On a port
 * with filtered steals, the hub detects the protocol of a new connection
 * (agent/incoming/detect.ts) and starts the router for it: HTTP/1.1
 * (agent/incoming/http1-router.ts) or HTTP/2 with prior knowledge (agent/incoming/http2.ts).
 * A router sends each request of its connection to the session the hub picks for it, or
 * to the pod's app, until the connection ends; the hub does not know which protocol it
 * started.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { MessageHead } from './http1.js';

/** Opens connections to the pod's app (marked: the redirect skips them). */
export interface AppConnector {
  connectApp(client: net.Socket): Duplex;
}

/** What a router needs of the port's hub; `S` is a subscription. */
export interface RouterHub<S> extends AppConnector {
  /** The pod's port the hub serves (for log lines). */
  readonly port: number;
  /** The session whose filter matches the request, or undefined for the app. */
  route(head: MessageHead): S | undefined;
  /** A stream to the session's program; undefined when the session is gone. */
  openSession(sub: S, client: net.Socket): Duplex | undefined;
  /** Logs a line once per distinct text, not once per connection. */
  logOnce(line: string): void;
}

/** The protocols a router exists for. */
export type RoutedProtocol = 'http1' | 'h2';

/** One client connection whose requests are routed one by one. */
export interface RequestRouter {
  readonly protocol: RoutedProtocol;
  /** Requests routed so far (each sent to a session or the app). */
  readonly requests: number;
}

/**
 * Starts routing the requests of `client`, whose first bytes (`start`, already read)
 * showed the router's protocol. The client is paused; the router resumes it.
 */
export type StartRouter = <S>(hub: RouterHub<S>, client: net.Socket, start: Buffer) => RequestRouter;
