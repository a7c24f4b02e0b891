/**
 * The shim's requests as the proxy's modules see them: one interface per op of
 * docs/shim-ipc.md, and the one validator that turns a decoded frame into one of them.
 * Handlers receive checked, typed requests and never look at raw fields.
 */
import { TsmError } from '../../protocol/errors.js';

export interface ConnectRequest {
  op: 'connect';
  proto: 'tcp' | 'udp';
  /** The program's socket family: which loopback listener it can reach. */
  family: 4 | 6;
  addr: string;
  port: number;
  /** SO_SNDTIMEO of a blocking socket; 0: none. */
  timeoutMs: number;
  nonblock: boolean;
}
export interface ResolveRequest { op: 'resolve'; name: string; family: 0 | 4 | 6 }
export interface ReverseRequest { op: 'reverse'; addr: string }
export interface AttachNotification { op: 'attach'; stream: number; port: number }
export interface ListenRequest { op: 'listen'; port: number; localPort: number; addr: string }
export interface UnlistenNotification { op: 'unlisten'; port: number }
export interface PeerRequest { op: 'peer'; port: number }
export interface FsConfigRequest { op: 'fs.config' }
export interface FsOpenRequest { op: 'fs.open'; path: string; flags: number; mode: number; pid: number; fd: number; eager: boolean }
export interface FsFillRequest { op: 'fs.fill'; handle: number; offset: number; length: number }
export interface FsWritebackRequest { op: 'fs.writeback'; handle: number }
export interface FsReleaseNotification { op: 'fs.release'; handle: number }
export interface FsStatRequest { op: 'fs.stat'; path: string; follow: boolean }
export interface FsAccessRequest { op: 'fs.access'; path: string; mode: number }
export interface FsReadlinkRequest { op: 'fs.readlink'; path: string }
export interface FsReaddirRequest { op: 'fs.readdir'; path: string; pid: number; fd: number }
export type FsChangeRequest =
  | { op: 'fs.change'; what: 'truncate'; path: string; size: number }
  | { op: 'fs.change'; what: 'mkdir' | 'unlink' | 'rmdir' | 'rename'; path: string; mode: number; to: string };

/** Requests: each gets exactly one reply, in order, on its connection. */
export type ShimCall =
  | ConnectRequest | ResolveRequest | ReverseRequest | ListenRequest | PeerRequest
  | FsConfigRequest | FsOpenRequest | FsFillRequest | FsWritebackRequest | FsStatRequest
  | FsAccessRequest | FsReadlinkRequest | FsReaddirRequest | FsChangeRequest;
/** Notifications: no reply. */
export type ShimNotification = AttachNotification | UnlistenNotification | FsReleaseNotification;
export type ShimRequest = ShimCall | ShimNotification;
export type FsRequest = Extract<ShimCall, { op: `fs.${string}` }>;

/** Every reply has `ok`; failures carry `errno` or `eai` and a `message`. */
export type ShimReply = { ok: boolean } & Record<string, unknown>;

/** One handler per request op: a new op fails to compile until it is handled. */
export type ShimCallHandlers<U extends ShimCall = ShimCall> = { [K in U['op']]: (r: Extract<U, { op: K }>) => Promise<ShimReply> | ShimReply };
export type ShimNotificationHandlers = { [K in ShimNotification['op']]: (n: Extract<ShimNotification, { op: K }>) => void };

const NOTIFICATIONS: ReadonlySet<string> = new Set<ShimNotification['op']>(['attach', 'unlisten', 'fs.release']);

export function isShimNotification(r: ShimRequest): r is ShimNotification {
  return NOTIFICATIONS.has(r.op);
}

function bad(field: string): TsmError {
  return new TsmError('TSM_ERR_BAD_FRAME', `shim request has a bad "${field}"`);
}

/** Network names and addresses (connect, resolve, reverse). */
function text(m: Record<string, unknown>, field: string): string {
  const v = m[field];
  if (typeof v !== 'string' || v.length > 1024) throw bad(field);
  return v;
}

/** Pod paths: longer, and never with a NUL. */
function path(m: Record<string, unknown>, field: string): string {
  const v = m[field];
  if (typeof v !== 'string' || v.length > 4096 || v.includes('\0')) throw bad(field);
  return v;
}

function uint(m: Record<string, unknown>, field: string, max = Number.MAX_SAFE_INTEGER, missing?: number): number {
  const v = m[field] ?? missing;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) throw bad(field);
  return v;
}

const PORT = 65535;
const U32 = 0xffffffff;

/**
 * Checks every field of a decoded frame (a msgpack map) and returns the typed request.
 * Throws TSM_ERR_BAD_FRAME naming the field; an unknown op says so.
 */
export function decodeShimRequest(m: Record<string, unknown>): ShimRequest {
  const op = m.op;
  switch (op) {
    case 'connect': {
      const proto = text(m, 'proto');
      if (proto !== 'tcp' && proto !== 'udp') throw new TsmError('TSM_ERR_BAD_FRAME', `unknown proto "${proto}"`);
      const addr = text(m, 'addr');
      const port = uint(m, 'port', PORT);
      const family = uint(m, 'family', 6) === 6 ? 6 : 4;
      return { op, proto, family, addr, port, timeoutMs: uint(m, 'timeoutMs', U32, 0), nonblock: m.nonblock === true };
    }
    case 'resolve': {
      const name = text(m, 'name');
      const family = uint(m, 'family', 6, 0);
      return { op, name, family: family === 4 ? 4 : family === 6 ? 6 : 0 };
    }
    case 'reverse':
      return { op, addr: text(m, 'addr') };
    case 'attach':
      return { op, port: uint(m, 'port', PORT), stream: uint(m, 'stream', U32) };
    case 'listen':
      return { op, port: uint(m, 'port', PORT), localPort: uint(m, 'localPort', PORT), addr: typeof m.addr === 'string' ? m.addr : '' };
    case 'unlisten':
    case 'peer':
      return { op, port: uint(m, 'port', PORT) };
    case 'fs.config':
      return { op };
    case 'fs.open':
      return { op, path: path(m, 'path'), flags: uint(m, 'flags'), mode: uint(m, 'mode', undefined, 0), pid: uint(m, 'pid'), fd: uint(m, 'fd'), eager: m.eager === true };
    case 'fs.fill':
      return { op, handle: uint(m, 'handle'), offset: uint(m, 'offset'), length: uint(m, 'length') };
    case 'fs.writeback':
      return { op, handle: uint(m, 'handle') };
    case 'fs.release':
      // A handle the proxy never gave is ignored there; only its type matters here.
      if (typeof m.handle !== 'number') throw bad('handle');
      return { op, handle: m.handle };
    case 'fs.stat':
      return { op, path: path(m, 'path'), follow: m.follow !== false };
    case 'fs.access':
      return { op, path: path(m, 'path'), mode: uint(m, 'mode', undefined, 0) };
    case 'fs.readlink':
      return { op, path: path(m, 'path') };
    case 'fs.readdir':
      return { op, path: path(m, 'path'), pid: uint(m, 'pid'), fd: uint(m, 'fd') };
    case 'fs.change': {
      const what = path(m, 'what');
      const p = path(m, 'path');
      if (what === 'truncate') return { op, what, path: p, size: uint(m, 'size') };
      if (what !== 'mkdir' && what !== 'unlink' && what !== 'rmdir' && what !== 'rename') throw new TsmError('TSM_ERR_BAD_FRAME', `unknown change "${what}"`);
      return { op, what, path: p, mode: uint(m, 'mode', undefined, 0), to: what === 'rename' ? path(m, 'to') : '' };
    }
    default:
      throw new TsmError('TSM_ERR_BAD_FRAME', `unknown op ${String(op).slice(0, 32)}`);
  }
}
