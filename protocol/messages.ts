/**
 * The wire types between the CLI (client) and the agent: one discriminated union per
 * direction. Every request carries an `id` and gets exactly one `result` or `error`
 * (or the session ends with `session.error`). Streams are multiplexed by number.
 */
import type { ErrorCode } from './errors.js';

/** Bumped on any incompatible change; the hello exchange compares it. */
export const PROTOCOL_VERSION = 1;

/** Features a peer can offer; the session uses the intersection. */
export const CAPABILITIES = ['tcp', 'udp', 'dns', 'env'] as const;
export type Capability = (typeof CAPABILITIES)[number];

export type Family = 4 | 6;

/** What a session works against. `none` is the agent's own network (targetless). */
export type TargetRef =
  | { kind: 'pid'; pid: number }
  | { kind: 'container'; id: string }
  | { kind: 'none' };

// ---- requests: client → agent, each answered by `result` (value typed below) or `error`

export interface TcpConnect { type: 'tcp.connect'; id: number; stream: number; host: string; port: number; family: Family; timeoutMs: number }
export interface UdpOpen { type: 'udp.open'; id: number; stream: number; host: string; port: number; family: Family }
export interface DnsLookup { type: 'dns.lookup'; id: number; name: string; family: 0 | Family }
export interface DnsReverse { type: 'dns.reverse'; id: number; address: string }
export interface EnvGet { type: 'env.get'; id: number }

export type ClientRequest = TcpConnect | UdpOpen | DnsLookup | DnsReverse | EnvGet;

/** The value of a successful `result` for each request type. */
export interface ResultOf {
  'tcp.connect': { localAddress: string; localPort: number };
  'udp.open': { localAddress: string; localPort: number };
  'dns.lookup': { addresses: Array<{ family: Family; address: string }>; canonname: string };
  'dns.reverse': { name: string };
  'env.get': { env: Record<string, string> };
}

// ---- stream and session messages, the same in both directions

export interface StreamData { type: 'data'; stream: number; data: Uint8Array }
/** Flow control: the receiver has consumed `bytes` more of the stream. */
export interface StreamWindow { type: 'window'; stream: number; bytes: number }
/** Half-close: the sender will send no more data on the stream. */
export interface StreamEnd { type: 'end'; stream: number }
/** The stream is gone; `errno` when it failed. */
export interface StreamClose { type: 'close'; stream: number; errno?: number }
/** One UDP datagram (no flow control: datagrams may be dropped under pressure). */
export interface Datagram { type: 'dgram'; stream: number; data: Uint8Array }
export interface Ping { type: 'ping'; t: number }
export interface Pong { type: 'pong'; t: number }

export type StreamMessage = StreamData | StreamWindow | StreamEnd | StreamClose | Datagram;

export interface ClientHello {
  type: 'hello';
  protocol: number;
  capabilities: string[];
  target: TargetRef;
  client: { version: string; user: string; host: string };
  /** The incoming traffic the session will ask for (checked against the agent's policy at open). */
  incoming?: { mode: 'mirror' | 'steal'; filtered: boolean };
  /** The user's bearer token from their kubeconfig, for the agent's TokenReview/SubjectAccessReview. */
  token?: string;
}

export type ClientMessage = ClientHello | ClientRequest | StreamMessage | Ping | Pong;

// ---- agent → client

export interface AgentHello {
  type: 'hello';
  protocol: number;
  capabilities: string[];
  session: string;
  agent: { version: string; node: string };
  /**
   * The resolved target: its PID on the node (0 when targetless), and the DNS settings
   * of its /etc/resolv.conf (DNS packets the program sends to this machine's nameserver
   * go to the pod's).
   */
  target: { pid: number; description: string; nameservers: string[]; search: string[] };
}

export interface Result<K extends keyof ResultOf = keyof ResultOf> { type: 'result'; id: number; value: ResultOf[K] }
export interface ErrorReply { type: 'error'; id: number; code: ErrorCode; message: string; errno?: number }
/** The session is over; the sender closes the connection after it. */
export interface SessionError { type: 'session.error'; code: ErrorCode; message: string }

export type AgentMessage = AgentHello | Result | ErrorReply | SessionError | StreamMessage | Ping | Pong;

/** Handlers over a union: a new message type fails to compile until it is handled. */
export type Handlers<U extends { type: string }, R = void> = {
  [K in U['type']]: (message: Extract<U, { type: K }>) => R;
};
