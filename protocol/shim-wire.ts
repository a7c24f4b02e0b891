/**
 * The shim ↔ session proxy wire, defined once: every op the preloaded shim sends, its
 * request fields (with their bounds), whether it is a notification, and the replies the
 * proxy may send; the constants both sides must agree on; the default path rules.
 *
 * Everything else is generated from or checked against this module:
 *  - native/shim/wire.h (op and key names, constants, default rules for the C shim) by
 *    protocol/shim-wire-gen.ts (`npm run wire`), with a staleness test;
 *  - the field tables of docs/shim-ipc.md (same generator, same test);
 *  - sample reply frames of every shape, which the C fuzzers replay first
 *    (native/shim/test/run.sh), so a reply the TypeScript side may send and the C side
 *    rejects fails the shim suite.
 *
 * Framing: a 4-byte big-endian length, then one msgpack map with string keys.
 */
import { badField, packPlain, unpackMap, type FieldsOf, type Spec } from './codec.js';
import { TsmError, type ErrorCode } from './errors.js';

// The constants both sides share and the default path rules live in a module of their own
// (no msgpack), so that the CLI's start (exec --help) does not load the codec.
export * from './shim-constants.js';
import {
  SHIM_FILE_BLOCK_BYTES, SHIM_MAX_ADDRESS_TEXT, SHIM_MAX_ADDRS, SHIM_MAX_DNS_MESSAGE, SHIM_MAX_DOMAIN, SHIM_MAX_FRAME_BYTES, SHIM_MAX_KEEP,
  SHIM_MAX_NAME, SHIM_MAX_NAMESERVERS, SHIM_MAX_PATH, SHIM_MAX_RULES, SHIM_MAX_SEARCH,
} from './shim-constants.js';

// ---- field specs (protocol/codec.ts kinds with bounds)

const PATH = { kind: 'str', max: SHIM_MAX_PATH, noNul: true, example: '/data/config.json' } as const;
const PORT = { kind: 'uint', max: 65535, example: 8080 } as const;
const ADDR = { kind: 'str', max: SHIM_MAX_ADDRESS_TEXT, noNul: true, example: '10.244.1.3' } as const;
const HANDLE = { kind: 'uint', doc: "the proxy's handle of an open pod file", example: 3 } as const;
const PID = { kind: 'uint', max: 0x7fffffff, doc: "the program's pid (the memfd is /proc/<pid>/fd/<fd>)", example: 4242 } as const;
const FD = { kind: 'uint', max: 0x7fffffff, doc: "the program's memfd the proxy writes into", example: 57 } as const;
const INT = (example: number) => ({ kind: 'int', example }) as const;
/** A query for db.default.svc.cluster.local, type A (what res_mkquery builds), and an answer with one address. */
const DNS_QUESTION_HEX = '0264620764656661756c7403737663' + '07636c7573746572056c6f63616c00' + '00010001';
const DNS_QUERY_EXAMPLE = Uint8Array.from(Buffer.from(`123401000001000000000000${DNS_QUESTION_HEX}`, 'hex'));
const DNS_ANSWER_EXAMPLE = Uint8Array.from(Buffer.from(`123481800001000100000000${DNS_QUESTION_HEX}c00c000100010000001e00040af40103`, 'hex'));
const RULES = { kind: 'strlist', items: SHIM_MAX_RULES, max: SHIM_MAX_PATH, optional: true, example: ['^/srv/cache/'] } as const;

/** A pod file's metadata, flat (struct stat's fields; times in seconds and nanoseconds). */
export const SHIM_STAT_FIELDS = {
  dev: INT(2049), ino: INT(1234567), mode: INT(0o100644), nlink: INT(1), uid: INT(0), gid: INT(0), rdev: INT(0),
  size: INT(1234), blksize: INT(4096), blocks: INT(8),
  atime: INT(1700000000), atimeNs: INT(0), mtime: INT(1700000000), mtimeNs: INT(500000000), ctime: INT(1700000000), ctimeNs: INT(0),
} as const satisfies Spec;

/**
 * One op. `replies` names the success shapes: `ok` is `{ ok: true, …fields }`; any other
 * name is an action, `{ ok: true, action: name, …fields }`. A failure is a ShimErrorReply
 * whose `fails` field says what the shim reads (`errno`, or a glibc `eai` for the resolver).
 */
interface OpSpec {
  readonly doc: string;
  readonly request: Spec;
  /** No reply: the shim does not wait. */
  readonly notification?: true;
  readonly replies?: { readonly [shape: string]: Spec };
  readonly fails?: 'errno' | 'eai';
}

export const SHIM_OPS = {
  connect: {
    doc: 'the program calls connect() (TCP), or connect()/sendto()/sendmsg() (UDP)',
    request: {
      proto: { kind: 'enum', values: ['tcp', 'udp'] },
      family: { kind: 'family', doc: "the program's socket family", example: 4 },
      addr: ADDR,
      port: PORT,
      timeoutMs: { kind: 'uint', max: 0xffffffff, optional: true, doc: 'SO_SNDTIMEO of a blocking socket, 0: none', example: 0 },
      nonblock: { kind: 'bool', optional: true, doc: 'present (true) for a non-blocking socket', example: true },
      uid: { kind: 'uint', max: 0xffffffff, optional: true, doc: "UDP: the socket's owner (fstat st_uid); a socket of the proxy's own uid may be given a shared relay (sharedUid)", example: 1000 },
    },
    replies: {
      local: {},
      proxy: {
        proxyAddr: { ...ADDR, doc: 'the loopback address to connect to', example: '127.0.0.1' },
        proxyPort: { ...PORT, min: 1, example: 40123 },
        stream: { kind: 'uint', max: 0xffffffff, doc: 'the remote stream, named by the attach that follows (TCP)', example: 7 },
        localAddr: { ...ADDR, optional: true, doc: "the remote connection's address in the pod (getsockname)", example: '10.244.1.5' },
        localPort: { ...PORT, optional: true, example: 40312 },
        sharedUid: { kind: 'uint', max: 0xffffffff, optional: true, doc: "UDP: the relay serves every socket of the session owned by this uid (its owner is checked per datagram), so a later connect of such a socket to the same destination may use it without asking", example: 1000 },
      },
    },
    fails: 'errno',
  },
  attach: {
    doc: "the program's socket is connected to proxyAddr:proxyPort from local port `port`: pair it with `stream` (TCP), or let the UDP flow `stream` serve it and end with it",
    request: {
      stream: { kind: 'uint', max: 0xffffffff, example: 7 },
      port: { ...PORT, example: 40312 },
      inode: { kind: 'uint', max: 0xffffffff, doc: "the program socket's inode (fstat st_ino): the proxy pairs only the connection whose peer is this socket", example: 995270 },
      uid: { kind: 'uint', max: 0xffffffff, doc: "the program socket's owner (fstat st_uid): a peer the program already closed is matched by it", example: 1000 },
      proto: { kind: 'enum', values: ['tcp', 'udp'], optional: true, doc: 'the stream\'s protocol (absent: tcp)', example: 'udp' },
    },
    notification: true,
  },
  resolve: {
    doc: 'getaddrinfo, gethostbyname*, gethostbyname*_r',
    request: {
      name: { kind: 'str', max: SHIM_MAX_NAME, noNul: true, example: 'db' },
      family: { kind: 'family0', optional: true, doc: '0: any', example: 0 },
    },
    replies: {
      local: {},
      remote: {
        addrs: { kind: 'list', of: { family: 'family', addr: ADDR }, doc: `the shim keeps the first ${SHIM_MAX_ADDRS}`, example: [{ family: 4, addr: '10.244.1.3' }, { family: 6, addr: 'fd00::3' }] },
        canonname: { kind: 'str', max: SHIM_MAX_NAME, noNul: true, example: 'db.default.svc.cluster.local' },
      },
    },
    fails: 'eai',
  },
  reverse: {
    doc: 'getnameinfo (without NI_NUMERICHOST), gethostbyaddr',
    request: { family: { kind: 'family', example: 4 }, addr: ADDR },
    replies: { local: {}, remote: { name: { kind: 'str', max: SHIM_MAX_NAME, noNul: true, example: 'db.default.svc.cluster.local' } } },
    fails: 'eai',
  },
  listen: {
    doc: 'the program calls listen() on an AF_INET/AF_INET6 TCP socket',
    request: {
      port: { ...PORT, doc: 'the port the program asked for' },
      localPort: { ...PORT, doc: 'where the socket really listens', example: 41877 },
      family: { kind: 'family', example: 4 },
      addr: { ...ADDR, optional: true, example: '0.0.0.0' },
    },
    replies: { local: {}, remote: {} },
    fails: 'errno',
  },
  unlisten: {
    doc: 'close()/close_range() of a subscribed listener, by the process that subscribed',
    request: { port: { ...PORT, doc: 'the port the program asked for' } },
    notification: true,
  },
  peer: {
    doc: 'accept()/accept4() on a subscribed listener returned a loopback connection',
    request: {
      port: { ...PORT, doc: "the accepted connection's peer port", example: 51234 },
      addr: { ...ADDR, doc: "the accepted connection's peer address (loopback)", example: '127.0.0.1' },
      localPort: { ...PORT, doc: "the accepted connection's own port (the program's listener)", example: 8080 },
    },
    replies: {
      local: {},
      remote: {
        addr: { ...ADDR, doc: 'the pod client (accept, getpeername)', example: '10.244.1.7' },
        port: { ...PORT, example: 40112 },
        localAddr: { ...ADDR, doc: 'the pod address it connected to (getsockname)', example: '10.244.1.5' },
        localPort: PORT,
      },
    },
  },
  notice: {
    doc: 'the program used a way the preload cannot follow (io_uring; connect or open through syscall()); sent once per kind and process',
    request: { what: { kind: 'enum', values: ['io_uring', 'raw-connect', 'raw-open'], doc: 'which way', example: 'io_uring' } },
    notification: true,
  },
  'res.config': {
    doc: "res_init, res_ninit, or a res_* call on a resolver state not set up yet: the pod's resolver settings",
    request: {},
    replies: {
      local: {},
      remote: {
        nameservers: { kind: 'strlist', items: SHIM_MAX_NAMESERVERS, max: SHIM_MAX_ADDRESS_TEXT, noNul: true, doc: "the pod's nameservers (literal addresses)", example: ['10.96.0.10'] },
        search: { kind: 'strlist', items: SHIM_MAX_SEARCH, max: SHIM_MAX_DOMAIN, noNul: true, doc: "the pod's search list", example: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'] },
        ndots: { kind: 'uint', max: 15, example: 5 },
        timeoutMs: { kind: 'uint', max: 30000, doc: 'per try', example: 5000 },
        attempts: { kind: 'uint', min: 1, max: 5, example: 2 },
      },
    },
    fails: 'errno',
  },
  'res.send': {
    doc: "res_send, res_nsend, and each query res_query, res_search, res_querydomain (and their res_n* forms) make: one DNS message to the pod's nameservers",
    request: { query: { kind: 'bytes', max: SHIM_MAX_DNS_MESSAGE, doc: 'the DNS message', example: DNS_QUERY_EXAMPLE } },
    replies: { ok: { answer: { kind: 'bytes', max: SHIM_MAX_DNS_MESSAGE, doc: "the nameserver's answer as it came, with the query's id", example: DNS_ANSWER_EXAMPLE } } },
    fails: 'errno',
  },
  'fs.config': {
    doc: "once per process, on its first file call: the path rules",
    request: {},
    replies: {
      ok: {
        mode: { kind: 'enum', values: ['read', 'write', 'local'] },
        local: { ...RULES, doc: '--fs-local' },
        remote: { ...RULES, doc: '--fs-remote' },
        notFound: { ...RULES, doc: '--fs-not-found' },
        keep: { kind: 'strlist', items: SHIM_MAX_KEEP, max: SHIM_MAX_PATH, optional: true, doc: 'local trees: working directory, program directory, home', example: ['/home/dev/app'] },
        emptyDir: { ...PATH, optional: true, doc: 'an empty 0500 directory standing for pod directories', example: '/tmp/tsmirror-1-x/empty-dir' },
      },
    },
    fails: 'errno',
  },
  'fs.open': {
    doc: 'open a pod file into the memfd pid/fd',
    request: {
      path: PATH,
      flags: { kind: 'uint', max: 0xffffffff, doc: 'open flags without O_CLOEXEC/O_NONBLOCK/O_NOCTTY', example: 0 },
      mode: { kind: 'uint', max: 0xffffffff, optional: true, example: 0o644 },
      pid: PID,
      fd: FD,
      eager: { kind: 'bool', optional: true, doc: 'never lazy (stdio streams)', example: false },
    },
    replies: {
      ok: {
        kind: { kind: 'enum', values: ['file', 'dir'] },
        handle: { ...HANDLE, doc: '0: none' },
        lazy: { kind: 'bool', optional: true, doc: 'sparse: fill ranges with fs.fill before reading', example: true },
        writeback: { kind: 'bool', optional: true, doc: 'write mode: send fs.writeback on close and fsync', example: false },
        ...SHIM_STAT_FIELDS,
      },
    },
    fails: 'errno',
  },
  'fs.fill': {
    doc: 'fill a range of a lazily filled file',
    request: { handle: HANDLE, offset: { kind: 'uint', example: 0 }, length: { kind: 'uint', example: SHIM_FILE_BLOCK_BYTES } },
    replies: { ok: { filled: { kind: 'uint', doc: 'bytes made present', example: SHIM_FILE_BLOCK_BYTES } } },
    fails: 'errno',
  },
  'fs.writeback': {
    doc: "write the memfd's whole content and size to the pod (close, fsync, fdatasync)",
    request: { handle: HANDLE },
    replies: { ok: { size: { kind: 'uint', doc: 'the size written', example: 1234 } } },
    fails: 'errno',
  },
  'fs.release': {
    doc: 'the program closed a file that has a handle',
    request: { handle: HANDLE },
    notification: true,
  },
  'fs.stat': {
    doc: 'stat, lstat, fstatat, statx of a pod path',
    request: { path: PATH, follow: { kind: 'bool', optional: true, doc: 'follow a final symlink (default true)', example: true } },
    replies: { ok: SHIM_STAT_FIELDS },
    fails: 'errno',
  },
  'fs.access': {
    doc: 'access, faccessat',
    request: { path: PATH, mode: { kind: 'uint', max: 0xffffffff, optional: true, doc: 'R_OK|W_OK|X_OK', example: 4 } },
    replies: { ok: {} },
    fails: 'errno',
  },
  'fs.readlink': {
    doc: 'readlink, readlinkat, realpath of a pod path',
    request: { path: PATH },
    replies: { ok: { target: { ...PATH, example: '../shared/config.json' } } },
    fails: 'errno',
  },
  'fs.readdir': {
    doc: 'list a pod directory into the memfd pid/fd',
    request: { path: PATH, pid: PID, fd: FD },
    replies: { ok: { count: { kind: 'uint', doc: 'entries', example: 12 }, bytes: { kind: 'uint', doc: 'bytes written into the memfd', example: 180 } } },
    fails: 'errno',
  },
  'fs.change': {
    doc: 'mkdir, unlink, rmdir, rename of a pod path (write mode; else EROFS)',
    request: {
      change: { kind: 'enum', values: ['mkdir', 'unlink', 'rmdir', 'rename'] },
      path: PATH,
      mode: { kind: 'uint', max: 0xffffffff, optional: true, doc: 'mkdir', example: 0o755 },
      to: { ...PATH, optional: true, doc: 'rename: the new path', example: '/data/new.json' },
    },
    replies: { ok: {} },
    fails: 'errno',
  },
  'fs.truncate': {
    doc: 'truncate a pod path (write mode; else EROFS)',
    request: { path: PATH, size: { kind: 'uint', example: 0 } },
    replies: { ok: {} },
    fails: 'errno',
  },
} as const satisfies Record<string, OpSpec>;

type Ops = typeof SHIM_OPS;
export type ShimOp = keyof Ops;
export type ShimNotificationOp = { [K in ShimOp]: Ops[K] extends { notification: true } ? K : never }[ShimOp];
/** Ops the shim waits for a reply to. */
export type ShimCallOp = Exclude<ShimOp, ShimNotificationOp>;

type Flatten<T> = { [K in keyof T]: T[K] };
export type ShimRequestOf<K extends ShimOp> = Flatten<{ op: K } & FieldsOf<Ops[K]['request']>>;
/** Every request the shim sends, by `op`. */
export type ShimRequest = { [K in ShimOp]: ShimRequestOf<K> }[ShimOp];

/** A failed call: `errno` (Linux) or `eai` (glibc EAI_*, negative), whichever the op reads. */
export interface ShimErrorReply { ok: false; errno?: number; eai?: number; message: string }

type Shape<Name, S> = Name extends 'ok' ? Flatten<{ ok: true } & FieldsOf<S>> : Flatten<{ ok: true; action: Name } & FieldsOf<S>>;
type SuccessOf<R> = { [N in keyof R]: Shape<N, R[N]> }[keyof R];
/** The reply to each op the shim waits for. */
export type ShimReplyOf = { [K in ShimCallOp]: SuccessOf<Ops[K] extends { replies: infer R } ? R : never> | ShimErrorReply };
export type ShimReply = ShimReplyOf[ShimCallOp];

/** Handlers over every op: a new op fails to compile until it is handled. */
export type ShimHandlers = {
  [K in ShimOp]: K extends ShimNotificationOp
    ? (request: ShimRequestOf<K>) => void
    : (request: ShimRequestOf<K>) => ShimReplyOf[K & ShimCallOp] | Promise<ShimReplyOf[K & ShimCallOp]>;
};

/** The error replies' common field names (the success shapes' are in SHIM_OPS). */
export const SHIM_REPLY_KEYS = { ok: 'ok', action: 'action', errno: 'errno', eai: 'eai', message: 'message' } as const;

/** A shim frame that could not be decoded; `op` when the frame named a known one. */
export class ShimFrameError extends TsmError {
  readonly op: ShimOp | undefined;

  constructor(code: ErrorCode, message: string, op?: ShimOp) {
    super(code, message);
    this.name = 'ShimFrameError';
    this.op = op;
  }
}

export function isShimOp(op: unknown): op is ShimOp {
  return typeof op === 'string' && Object.hasOwn(SHIM_OPS, op);
}

export function isShimNotification(op: ShimOp): op is ShimNotificationOp {
  return (SHIM_OPS[op] as OpSpec).notification === true;
}

/**
 * Decodes and validates one frame body from the shim. Throws ShimFrameError:
 * TSM_ERR_FRAME_TOO_LARGE, TSM_ERR_BAD_FRAME (not a map, no op, a bad field: the message
 * names the op and the field), TSM_ERR_UNKNOWN_MESSAGE (an op not in SHIM_OPS).
 */
export function decodeShimRequest(frame: Uint8Array): ShimRequest {
  if (frame.byteLength > SHIM_MAX_FRAME_BYTES) {
    throw new ShimFrameError('TSM_ERR_FRAME_TOO_LARGE', `shim frame of ${frame.byteLength} bytes exceeds the ${SHIM_MAX_FRAME_BYTES}-byte limit`);
  }
  let value: Record<string, unknown>;
  try {
    value = unpackMap(frame);
  } catch (err) {
    throw new ShimFrameError('TSM_ERR_BAD_FRAME', `shim ${(err as Error).message}`);
  }
  const op = value.op;
  if (typeof op !== 'string') throw new ShimFrameError('TSM_ERR_BAD_FRAME', 'shim request has no string "op"');
  if (!isShimOp(op)) throw new ShimFrameError('TSM_ERR_UNKNOWN_MESSAGE', `unknown shim op "${op.slice(0, 32)}"`);
  const bad = badField(SHIM_OPS[op].request, value);
  if (bad !== undefined) throw new ShimFrameError('TSM_ERR_BAD_FRAME', `shim request "${op}" has a bad "${bad}"`, op);
  return value as ShimRequest;
}

/**
 * The first thing wrong with `reply` as an answer to `op` (a missing or bad field, an
 * unknown shape), or undefined when it is a valid reply. For tests and generated samples.
 */
export function shimReplyProblem(op: ShimCallOp, reply: Record<string, unknown>): string | undefined {
  if (reply.ok === false) {
    const bad = badField({ errno: 'int?', eai: 'int?', message: 'str' }, reply);
    return bad === undefined ? undefined : `error reply has a bad "${bad}"`;
  }
  if (reply.ok !== true) return 'reply has no boolean "ok"';
  const replies: { readonly [shape: string]: Spec } = SHIM_OPS[op].replies;
  const shape = 'ok' in replies ? 'ok' : reply.action;
  if (typeof shape !== 'string' || !Object.hasOwn(replies, shape)) return `reply has an unknown action "${String(reply.action)}"`;
  const bad = badField(replies[shape] ?? {}, reply);
  return bad === undefined ? undefined : `"${shape}" reply has a bad "${bad}"`;
}

/** The msgpack body of a reply (without the length prefix: see shimFrame). */
export function encodeShimReply<K extends ShimCallOp>(reply: ShimReplyOf[K]): Buffer {
  return packPlain(reply);
}

/** The msgpack body of a request, as the shim sends it (tests and tools that play the shim). */
export function encodeShimRequest(request: ShimRequest): Buffer {
  return packPlain(request);
}

/** A body with its 4-byte big-endian length prefix. */
export function shimFrame(body: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(4 + body.byteLength);
  frame.writeUInt32BE(body.byteLength, 0);
  frame.set(body, 4);
  return frame;
}
