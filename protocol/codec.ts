/**
 * The one msgpack codec of the project (@msgpack/msgpack: plain maps, no extensions), so
 * every frame is ordinary msgpack that any decoder (including the shim's) can read.
 * Decoding validates the shape of each message, since frames come from the network.
 */
import { Encoder, decode as unpack } from '@msgpack/msgpack';
import { TsmError } from './errors.js';
import type { AgentMessage, ClientMessage } from './messages.js';


/** Frames larger than this end the session (`TSM_ERR_FRAME_TOO_LARGE`). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
const MAX_STRING = 64 * 1024;

/**
 * One encoder for the process: the library's encode() makes a new one per call with a
 * 2 KiB buffer, which a 64 KiB data frame then regrows six times (a third of the agent's
 * time on a bulk transfer). This one keeps its buffer; each frame is copied out of it once.
 */
const encoder = new Encoder({ initialBufferSize: 256 * 1024 });

function pack(value: unknown): Buffer {
  const bytes = encoder.encode(value);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function encode(message: ClientMessage | AgentMessage): Buffer {
  return pack(message);
}

type FieldKind = 'uint' | 'int' | 'str' | 'bytes' | 'family' | 'family0' | 'strlist' | 'object' | 'any' | 'bool';
type Spec = Record<string, FieldKind | `${FieldKind}?`>;

const common: Record<string, Spec> = {
  data: { stream: 'uint', data: 'bytes' },
  dgram: { stream: 'uint', data: 'bytes' },
  window: { stream: 'uint', bytes: 'uint' },
  end: { stream: 'uint' },
  close: { stream: 'uint', errno: 'uint?' },
  ping: { t: 'int' },
  pong: { t: 'int' },
};

const clientSpecs: Record<ClientMessage['type'], Spec> = {
  ...(common as Record<'data' | 'dgram' | 'window' | 'end' | 'close' | 'ping' | 'pong', Spec>),
  hello: { protocol: 'uint', capabilities: 'strlist', target: 'object', client: 'object', incoming: 'object?', token: 'str?', files: 'object?', key: 'str?' },
  'tcp.connect': { id: 'uint', stream: 'uint', host: 'str', port: 'uint', family: 'family', timeoutMs: 'uint', holdMs: 'uint?' },
  'udp.open': { id: 'uint', stream: 'uint', host: 'str', port: 'uint', family: 'family' },
  'dns.lookup': { id: 'uint', name: 'str', family: 'family0' },
  'dns.reverse': { id: 'uint', address: 'str' },
  'env.get': { id: 'uint' },
  // pod files (agent/files.ts)
  'fs.open': { id: 'uint', path: 'str', flags: 'uint', mode: 'uint', inlineMax: 'uint' },
  'fs.read': { id: 'uint', handle: 'uint', offset: 'uint', length: 'uint' },
  'fs.write': { id: 'uint', handle: 'uint', offset: 'uint', data: 'bytes' },
  'fs.truncate': { id: 'uint', handle: 'uint', path: 'str', size: 'uint' },
  'fs.close': { id: 'uint', handle: 'uint' },
  'fs.stat': { id: 'uint', path: 'str', follow: 'bool' },
  'fs.readdir': { id: 'uint', path: 'str', offset: 'uint' },
  'fs.readlink': { id: 'uint', path: 'str' },
  'fs.change': { id: 'uint', op: 'str', path: 'str', mode: 'uint', to: 'str' },
  'port.subscribe': { id: 'uint', port: 'uint', mode: 'str', filter: 'object?' },
  'port.unsubscribe': { id: 'uint', port: 'uint' },
};

const agentSpecs: Record<AgentMessage['type'], Spec> = {
  ...(common as Record<'data' | 'dgram' | 'window' | 'end' | 'close' | 'ping' | 'pong', Spec>),
  hello: { protocol: 'uint', capabilities: 'strlist', session: 'str', agent: 'object', target: 'object' },
  result: { id: 'uint', value: 'any' },
  error: { id: 'uint', code: 'str', message: 'str', errno: 'uint?' },
  'session.error': { code: 'str', message: 'str' },
  'incoming.open': { stream: 'uint', port: 'uint', mode: 'str', remoteAddress: 'str', remotePort: 'uint', localAddress: 'str', localPort: 'uint' },
  'tcp.connected': { stream: 'uint', localAddress: 'str', localPort: 'uint' },
};

function fieldOk(kind: FieldKind, v: unknown): boolean {
  switch (kind) {
    case 'uint': return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
    case 'int': return typeof v === 'number' && Number.isSafeInteger(v);
    case 'str': return typeof v === 'string' && v.length <= MAX_STRING;
    case 'bytes': return v instanceof Uint8Array;
    case 'family': return v === 4 || v === 6;
    case 'family0': return v === 0 || v === 4 || v === 6;
    case 'strlist': return Array.isArray(v) && v.length <= 64 && v.every((s) => typeof s === 'string' && s.length <= 256);
    case 'object': return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
    case 'any': return true;
    case 'bool': return typeof v === 'boolean';
  }
}

function decodeWith<T>(frame: Uint8Array, specs: Record<string, Spec>): T {
  if (frame.byteLength > MAX_FRAME_BYTES) {
    throw new TsmError('TSM_ERR_FRAME_TOO_LARGE', `frame of ${frame.byteLength} bytes exceeds the ${MAX_FRAME_BYTES}-byte limit`);
  }
  let value: unknown;
  try {
    value = unpack(frame);
  } catch (cause) {
    throw new TsmError('TSM_ERR_BAD_FRAME', 'frame is not valid msgpack', { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TsmError('TSM_ERR_BAD_FRAME', 'frame is not a msgpack map');
  }
  const type = (value as { type?: unknown }).type;
  if (typeof type !== 'string') throw new TsmError('TSM_ERR_BAD_FRAME', 'frame has no string "type"');
  const spec = Object.hasOwn(specs, type) ? specs[type] : undefined;
  if (!spec) throw new TsmError('TSM_ERR_UNKNOWN_MESSAGE', `unknown message type "${type.slice(0, 64)}"`);
  for (const [field, want] of Object.entries(spec)) {
    const optional = want.endsWith('?');
    const kind = (optional ? want.slice(0, -1) : want) as FieldKind;
    const v = (value as Record<string, unknown>)[field];
    if (v === undefined && optional) continue;
    if (!fieldOk(kind, v)) throw new TsmError('TSM_ERR_BAD_FRAME', `message "${type}" has a bad "${field}"`);
  }
  return value as T;
}

/** Decodes and validates a frame the agent received. Throws TsmError on any defect. */
export function decodeClientMessage(frame: Uint8Array): ClientMessage {
  return decodeWith<ClientMessage>(frame, clientSpecs);
}

/** Decodes and validates a frame the CLI received. Throws TsmError on any defect. */
export function decodeAgentMessage(frame: Uint8Array): AgentMessage {
  return decodeWith<AgentMessage>(frame, agentSpecs);
}

/** Plain msgpack for the shim's channel (docs/shim-ipc.md), with the same settings. */
export function packPlain(value: unknown): Buffer {
  return pack(value);
}

export function unpackPlain(frame: Uint8Array): unknown {
  return unpack(frame);
}
