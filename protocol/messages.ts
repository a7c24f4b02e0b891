/**
 * The wire types between the CLI (client) and the agent: one discriminated union per
 * direction. Every request carries an `id` and gets exactly one `result` or `error`
 * (or the session ends with `session.error`). Streams are multiplexed by number.
 */
import type { ErrorCode } from './errors.js';

/** Bumped on any incompatible change; the hello exchange compares it. */
export const PROTOCOL_VERSION = 1;

/** Features a peer can offer; the session uses the intersection. */
/** `dns-packets`: the agent answers dns.config and dns.query (glibc's res_* functions in the program). */
export const CAPABILITIES = ['tcp', 'udp', 'dns', 'env', 'files', 'incoming', 'dns-packets'] as const;
export type Capability = (typeof CAPABILITIES)[number];

export type Family = 4 | 6;

/** What a session works against. `none` is the agent's own network (targetless). */
export type TargetRef =
  | { kind: 'pid'; pid: number }
  | { kind: 'container'; id: string }
  | { kind: 'none' };

// ---- requests: client → agent, each answered by `result` (value typed below) or `error`

/**
 * Connects from the pod. `timeoutMs` bounds the pod-side connect (0: the kernel's own).
 * With `holdMs` (a non-blocking socket), a connect still under way after that long is
 * answered `pending: true` at once; its outcome follows on the stream: `tcp.connected`,
 * or `close` with the pod's errno.
 */
export interface TcpConnect { type: 'tcp.connect'; id: number; stream: number; host: string; port: number; family: Family; timeoutMs: number; holdMs?: number }
export interface UdpOpen { type: 'udp.open'; id: number; stream: number; host: string; port: number; family: Family }
export interface DnsLookup { type: 'dns.lookup'; id: number; name: string; family: 0 | Family }
export interface DnsReverse { type: 'dns.reverse'; id: number; address: string }
/** The pod's resolver settings, read from its /etc/resolv.conf now (capability `dns-packets`). */
export interface DnsConfig { type: 'dns.config'; id: number }
/**
 * One DNS message (a query as res_mkquery builds it, at most DNS_MAX_MESSAGE bytes) sent
 * to the pod's nameservers as the pod's resolver would: each nameserver in turn, `attempts`
 * rounds, the pod's timeout per try, TCP when the UDP answer is truncated. The answer comes
 * back as the nameserver sent it (the query's id restored). No nameserver answering is
 * TSM_ERR_DNS with errno ETIMEDOUT (capability `dns-packets`).
 */
export interface DnsQuery { type: 'dns.query'; id: number; packet: Uint8Array }
/** The largest DNS message over TCP (its 2-byte length prefix). */
export const DNS_MAX_MESSAGE = 65535;
export interface EnvGet { type: 'env.get'; id: number }

// ---- pod files (capability "files"; agent/files.ts). Paths are resolved inside the
// target container's root; failures are `error` replies with code TSM_ERR_FILE and the
// pod's errno (ENOENT, EACCES, EISDIR, ENOTDIR, ELOOP, …).

/** Opens a file. `flags` are Linux open flags (O_ACCMODE, O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY, O_NOFOLLOW). Files up to `inlineMax` bytes come back whole in `data` and leave no handle open. */
export interface FsOpen { type: 'fs.open'; id: number; path: string; flags: number; mode: number; inlineMax: number }
/** Reads up to `length` (≤ FS_MAX_READ) bytes of an open handle at `offset`. */
export interface FsRead { type: 'fs.read'; id: number; handle: number; offset: number; length: number }
export interface FsWrite { type: 'fs.write'; id: number; handle: number; offset: number; data: Uint8Array }
export interface FsTruncate { type: 'fs.truncate'; id: number; handle: number; path: string; size: number }
export interface FsClose { type: 'fs.close'; id: number; handle: number }
export interface FsStat { type: 'fs.stat'; id: number; path: string; follow: boolean }
/** Lists a directory from entry `offset` on; `done` is false when more entries remain. */
export interface FsReaddir { type: 'fs.readdir'; id: number; path: string; offset: number }
export interface FsReadlink { type: 'fs.readlink'; id: number; path: string }
/** Changes the pod's tree (write mode only): mkdir (mode), unlink, rmdir, rename (to). */
export interface FsChange { type: 'fs.change'; id: number; op: 'mkdir' | 'unlink' | 'rmdir' | 'rename'; path: string; mode: number; to: string }

export type FsRequest = FsOpen | FsRead | FsWrite | FsTruncate | FsClose | FsStat | FsReaddir | FsReadlink | FsChange;

/** A file's metadata as the pod sees it; times are [seconds, nanoseconds]. */
export interface FsStatValue {
  dev: number; ino: number; mode: number; nlink: number; uid: number; gid: number; rdev: number;
  size: number; blksize: number; blocks: number;
  atime: [number, number]; mtime: [number, number]; ctime: [number, number];
}

/** Largest fs.read/fs.write payload (keeps every frame well under MAX_FRAME_BYTES). */
export const FS_MAX_READ = 2 * 1024 * 1024;


// ---- incoming traffic (mirror and steal): the program listens on `port`; the agent redirects the
// pod's incoming connections on it (see docs/ARCHITECTURE.md, "Incoming traffic").
// `record` (tsmirror record): the pod's app keeps serving, as with a mirror, and the agent
// parses the exchanges of each connection (HTTP/1.1, h2c) and sends them to the CLI on a
// stream of RecordFrames (below), one stream per client connection.
export type IncomingMode = 'mirror' | 'steal' | 'record';
/** HTTP request filter: every given part must match (header names case-insensitive, values/path whole-match regexes). */
export interface HttpFilter { headers: Array<{ name: string; value: string }>; path?: string; method?: string }
/**
 * `filter`: with `steal`, which requests are stolen; with `record`, which exchanges are kept.
 * `record`: how exchanges are recorded (mode `record` only).
 */
export interface PortSubscribe { type: 'port.subscribe'; id: number; port: number; mode: IncomingMode; filter?: HttpFilter; record?: RecordOptions }

/**
 * What a `record` subscription keeps, applied by the agent so that what is not kept (and
 * redacted values) never leaves the node.
 */
export interface RecordOptions {
  /** Percentage of exchanges kept, 0 < sample <= 100 (each exchange drawn on its own). */
  sample: number;
  /** Bodies above this many bytes are sent as their size and sha256 only. */
  maxBody: number;
  /** Header names whose values are replaced by the marker (whole-match RE2 patterns, case-insensitive); the defaults are added by the agent unless `redact` is false. */
  redactHeaders: string[];
  /** JSON body fields replaced by the marker: `$.a.b`, `$.items[*].card`, `$..password`. */
  redactJsonPaths: string[];
  /** false only with --no-redact: then nothing is redacted. */
  redact: boolean;
}

/** The header names redacted by default. */
export const DEFAULT_REDACTED_HEADERS = ['authorization', 'cookie', 'set-cookie', 'proxy-authorization'] as const;
/** Limits on the record options (a subscription beyond them is refused). */
export const RECORD_LIMITS = { maxBody: 64 * 1024 * 1024, redactHeaders: 64, redactJsonPaths: 64, jsonPathLength: 512 } as const;

/** One HTTP exchange as recorded by the agent. Times are epoch milliseconds. */
export interface RecordedExchange {
  kind: 'exchange';
  /** 'HTTP/1.1', 'HTTP/1.0' or 'HTTP/2'. */
  version: string;
  method: string;
  /** The request target (path and query) as sent. */
  target: string;
  /** The Host header or :authority ('' when absent). */
  authority: string;
  requestHeaders: Array<[string, string]>;
  /** The head's size in bytes (-1 for HTTP/2, whose heads are compressed). */
  requestHeadSize: number;
  requestBody: RecordedBody;
  status: number;
  statusText: string;
  responseHeaders: Array<[string, string]>;
  responseHeadSize: number;
  responseBody: RecordedBody;
  /** Trailer fields (HTTP/2, or a chunked HTTP/1.1 response). */
  trailers: Array<[string, string]>;
  /** The request's first byte, its last, the response's first and its last. */
  started: number;
  requestDone: number;
  responseStarted: number;
  responseDone: number;
}

/** A body: its bytes when up to maxBody, else only its size and sha256 (hex). */
export interface RecordedBody { size: number; data?: Uint8Array; sha256?: string }

/** What one record stream carries, each frame a 4-byte big-endian length and a msgpack map. */
export type RecordFrame =
  | RecordedExchange
  /** Exchanges seen but not kept (filter, sample); counted for the summary. */
  | { kind: 'dropped'; count: number }
  /** A connection (or the rest of one) that could not be recorded: not HTTP, unparseable, upgraded. */
  | { kind: 'skipped'; reason: string };
/** A record frame larger than this ends the stream (two bodies of maxBody and their heads fit). */
export const MAX_RECORD_FRAME = 2 * RECORD_LIMITS.maxBody + 4 * 1024 * 1024;
export interface PortUnsubscribe { type: 'port.unsubscribe'; id: number; port: number }
// ---- end incoming

export type ClientRequest = TcpConnect | UdpOpen | DnsLookup | DnsReverse | DnsConfig | DnsQuery | EnvGet | FsRequest | PortSubscribe | PortUnsubscribe;

/** The value of a successful `result` for each request type. */
export interface ResultOf {
  'tcp.connect': { localAddress: string; localPort: number; pending?: boolean };
  'udp.open': { localAddress: string; localPort: number };
  /**
   * `ttl`: for how many seconds the answer may be reused (the least TTL of the DNS records,
   * and of the negative answers to the search-list names tried before it); 0 or absent
   * (an answer from /etc/hosts, or an older agent): ask again every time.
   */
  'dns.lookup': { addresses: Array<{ family: Family; address: string }>; canonname: string; ttl?: number };
  'dns.reverse': { name: string };
  'dns.config': { nameservers: string[]; search: string[]; ndots: number; timeoutMs: number; attempts: number };
  'dns.query': { packet: Uint8Array };
  'env.get': { env: Record<string, string> };
  'fs.open': { handle: number; stat: FsStatValue; data?: Uint8Array };
  'fs.read': { data: Uint8Array };
  'fs.write': { written: number };
  'fs.truncate': Record<string, never>;
  'fs.close': Record<string, never>;
  'fs.stat': { stat: FsStatValue };
  /** Entry names joined by NUL, and their d_type (DT_* of dirent.h) one byte each, in the same order. */
  'fs.readdir': { names: string; types: Uint8Array; done: boolean };
  'fs.readlink': { target: string };
  'fs.change': Record<string, never>;
  'port.subscribe': { port: number };
  'port.unsubscribe': { port: number };
}

// ---- stream and session messages, the same in both directions

export interface StreamData { type: 'data'; stream: number; data: Uint8Array }
/** Flow control: the receiver has consumed `bytes` more of the stream. */
export interface StreamWindow { type: 'window'; stream: number; bytes: number; ack?: number }
/** Half-close: the sender will send no more data on the stream. */
export interface StreamEnd { type: 'end'; stream: number }
/** The stream is gone; `errno` when it failed. */
export interface StreamClose { type: 'close'; stream: number; errno?: number }
/** One UDP datagram (no flow control: datagrams may be dropped under pressure). */
export interface Datagram { type: 'dgram'; stream: number; data: Uint8Array }
/** Heartbeats; `ack` (resumable sessions) acknowledges every frame received so far (see Ack). */
export interface Ping { type: 'ping'; t: number; ack?: number }
export interface Pong { type: 'pong'; t: number; ack?: number }

/**
 * Resumable sessions (protocol/peer.ts, "Sessions that survive" in docs/ARCHITECTURE.md):
 * every frame after the hellos but heartbeats, datagrams and acks is numbered 1, 2, 3 …
 * implicitly (no number on the wire) in each direction; `n` says how many the sender has
 * received. Acks ride on `window`, `ping` and `pong`; this frame is sent only when many
 * frames arrived without any of those going out.
 */
export interface Ack { type: 'ack'; n: number }

export type StreamMessage = StreamData | StreamWindow | StreamEnd | StreamClose | Datagram;

/** Frames that are never numbered nor replayed: the transport's own, and datagrams (UDP may drop). */
export const UNSEQUENCED_TYPES: ReadonlySet<string> = new Set(['ping', 'pong', 'ack', 'dgram', 'hello', 'resume', 'resumed', 'session.error']);

export interface ClientHello {
  type: 'hello';
  protocol: number;
  capabilities: string[];
  target: TargetRef;
  client: { version: string; user: string; host: string };
  /** The incoming traffic the session will ask for (checked against the agent's policy at open). */
  incoming?: { mode: 'mirror' | 'steal'; filtered: boolean; record?: boolean };
  /**
   * Sent by CLIs older than Session objects (the user's bearer token). Still decoded so that a
   * cluster agent can refuse such a client by name; never sent, and never used.
   */
  token?: string;
  /**
   * Cluster mode: the Session object (sessions.tsmirror.dev, common/session-object.ts) the
   * user created for this session, and the one-time secret whose sha256 it carries. The
   * agent reads the object itself; no user credential reaches it.
   */
  session?: { namespace: string; name: string };
  secret?: string;
  /**
   * How the session may use the pod's files: `write` lets it change them; anything else
   * (or absent) is read-only, and the agent refuses every write with EROFS.
   */
  files?: { mode: FilesMode };
  /** An agent started by hand (local mode) serves only whoever can read its key file (common/local-agent-key.ts). */
  key?: string;
  /**
   * How long the agent should keep the session when its connection drops (--reconnect-grace):
   * the CLI may resume it within that time. Absent or 0: the session ends with its connection.
   */
  reconnectGraceMs?: number;
  /**
   * A re-established session names the one it replaces (id and resume token): the agent
   * ends that one first, should it still hold it (its subscriptions would be in the way).
   */
  replaces?: { session: string; token: string };
}

/**
 * Sent instead of a hello on a new connection to take over a session whose connection
 * dropped: its id and resume token (from the agent's hello), and how many numbered frames
 * this side received. The agent answers `resumed` and replays what the CLI lacks, or
 * `session.error` TSM_ERR_RESUME_REFUSED (no such session: the agent restarted, or the
 * grace ran out).
 */
export interface ClientResume {
  type: 'resume'; protocol: number; session: string; token: string; received: number;
  /** Local mode: the agent's key, as in the hello. */
  key?: string;
}

/** `read`: pod files are never changed (writes go to the program's private copy); `write`: they are. */
export type FilesMode = 'read' | 'write';

export type ClientMessage = ClientHello | ClientResume | ClientRequest | StreamMessage | Ping | Pong | Ack;

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
  /**
   * When the hello asked for a grace: the unguessable token that resumes this session (only
   * the connection that opened it ever sees it) and the grace the agent grants.
   */
  resume?: { token: string; graceMs: number };
}

/** The agent took the new connection for the session: `received` numbered frames had come from the CLI. */
export interface AgentResumed { type: 'resumed'; received: number }

export interface Result<K extends keyof ResultOf = keyof ResultOf> { type: 'result'; id: number; value: ResultOf[K] }
export interface ErrorReply { type: 'error'; id: number; code: ErrorCode; message: string; errno?: number }
/** The session is over; the sender closes the connection after it. */
export interface SessionError { type: 'session.error'; code: ErrorCode; message: string }

/**
 * The agent opened stream `stream` (agent-allocated, >= AGENT_STREAM_BASE) for a connection
 * that arrived on the pod's `port`: a mirror copy, a stolen connection, or the stolen
 * requests of one connection. `remote*` is the client (what accept() reports), `local*`
 * the pod address it connected to.
 */
export interface IncomingOpen {
  type: 'incoming.open'; stream: number; port: number; mode: IncomingMode;
  remoteAddress: string; remotePort: number; localAddress: string; localPort: number;
}
/** A connect answered `pending` is made: its stream now carries the connection. */
export interface TcpConnected { type: 'tcp.connected'; stream: number; localAddress: string; localPort: number }

/** Streams the agent opens are numbered from here; the CLI allocates below it. */
export const AGENT_STREAM_BASE = 0x80000000;

export type AgentMessage = AgentHello | AgentResumed | Result | ErrorReply | SessionError | StreamMessage | Ping | Pong | Ack | IncomingOpen | TcpConnected;

/** Handlers over a union: a new message type fails to compile until it is handled. */
export type Handlers<U extends { type: string }, R = void> = {
  [K in U['type']]: (message: Extract<U, { type: K }>) => R;
};
