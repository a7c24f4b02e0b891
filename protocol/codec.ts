/**
 * The one msgpack codec of the project (msgpackr, set to write plain msgpack: no records,
 * no bundled strings, no extensions, `undefined` as nil), so every frame is ordinary
 * msgpack that any decoder (including the shim's native/shim/msgpack.c) can read.
 * Decoding validates the shape of each message, since frames come from the network.
 */
import { C1, Packr, Unpackr, addExtension } from 'msgpackr';
import { TsmError } from './errors.js';
import { DNS_MAX_MESSAGE, type AgentMessage, type ClientMessage } from './messages.js';
import type { Frame } from './ws-frames.js';


/** Frames larger than this end the session (`TSM_ERR_FRAME_TOO_LARGE`). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
const MAX_STRING = 64 * 1024;

/**
 * Plain msgpack both ways. `useRecords: false` and `bundleStrings: false`: msgpackr's own
 * record and string-bundle extensions are never written (the C shim and the agent wire
 * read plain maps); `encodeUndefinedAsNil`: `undefined` is nil as in @msgpack/msgpack,
 * not msgpackr's fixext 0; `mapsAsObjects`: maps decode to plain objects (keys as
 * strings, `__proto__` renamed by msgpackr), which is what the field specs check.
 * `structuredClone: false` refuses the id/pointer extensions.
 *
 * Encoding: msgpackr writes into one growing buffer and returns a view of each frame, which
 * later frames do not overwrite (it moves on, and starts a new buffer when the old one is
 * full). A view keeps its whole buffer alive, though, and frames are kept (the resumable
 * layer keeps each until it is acknowledged; a slow socket queues them). msgpackr's buffers
 * are 8 KiB until a large frame makes it allocate larger ones: a frame in a buffer over
 * 16 KiB that it fills less than half of is copied out, so a kept frame holds at most
 * 16 KiB or twice its size (Node's own small Buffers share 8 KiB slabs the same way).
 */
const VIEW_BUFFER_MAX = 16 * 1024;
const options = {
  useRecords: false, bundleStrings: false, encodeUndefinedAsNil: true, mapsAsObjects: true,
  structuredClone: false, moreTypes: false, int64AsType: 'number',
} as const;
const packr = new Packr(options);
const unpackr = new Unpackr(options);

/**
 * msgpackr decodes some extension types of its own into objects (Error, RegExp, Set, typed
 * arrays, BigInt, its string bundles and cross-references). Frames come from the network:
 * none of those is part of either wire, so each is refused, as an unknown extension is.
 * (The timestamp extension, -1, decodes to a Date as @msgpack/msgpack's did.) This changes
 * msgpackr for the whole process; the project has no other msgpackr user.
 */
class RefusedExtension { }
for (const type of [0x42, 0x62, 0x65, 0x69, 0x70, 0x73, 0x74, 0x78]) {
  addExtension({
    Class: RefusedExtension, type,
    pack: () => { throw new Error('never written'); },
    unpack: () => { throw new Error(`msgpack extension ${type} is not part of the wire`); },
  });
}

function pack(value: unknown): Buffer {
  const frame = packr.pack(value);
  if (frame.buffer.byteLength <= VIEW_BUFFER_MAX || frame.byteLength * 2 >= frame.buffer.byteLength) return frame;
  const own = Buffer.allocUnsafeSlow(frame.byteLength); // not from Node's shared pool, which a small Buffer.from would be
  frame.copy(own);
  return own;
}

/** Below this many payload bytes a `data` frame goes through msgpackr (its buffer is cheap to share). */
const DIRECT_DATA_MIN = 1024;
const DATA_HEAD = Buffer.from([0x83, 0xa4, ...Buffer.from('type'), 0xa4, ...Buffer.from('data'), 0xa6, ...Buffer.from('stream')]);
const DATA_KEY = Buffer.from([0xa4, ...Buffer.from('data')]);

/**
 * The bytes of a `data` frame before its payload: the plain msgpack map `{type: 'data',
 * stream, data}` (fixmap, fixstr keys, a uint, a bin header), the payload following as is.
 */
function dataHead(stream: number, n: number): Buffer {
  const streamBytes = stream < 0x80 ? 1 : stream < 0x100 ? 2 : stream < 0x10000 ? 3 : 5;
  const binHead = n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
  const head = Buffer.allocUnsafe(DATA_HEAD.length + streamBytes + DATA_KEY.length + binHead);
  let at = DATA_HEAD.copy(head, 0);
  if (streamBytes === 1) head[at++] = stream;
  else if (streamBytes === 2) { head[at++] = 0xcc; head[at++] = stream; }
  else if (streamBytes === 3) { head[at++] = 0xcd; at = head.writeUInt16BE(stream, at); }
  else { head[at++] = 0xce; at = head.writeUInt32BE(stream, at); }
  at += DATA_KEY.copy(head, at);
  if (binHead === 2) { head[at++] = 0xc4; head[at++] = n; }
  else if (binHead === 3) { head[at++] = 0xc5; head.writeUInt16BE(n, at); }
  else { head[at++] = 0xc6; head.writeUInt32BE(n, at); }
  return head;
}

function isDirectData(message: ClientMessage | AgentMessage): message is Extract<ClientMessage, { type: 'data' }> {
  return message.type === 'data' && message.data instanceof Uint8Array && message.data.byteLength >= DIRECT_DATA_MIN &&
    Number.isInteger(message.stream) && message.stream >= 0 && message.stream <= 0xffffffff && Object.keys(message).length === 3;
}

/**
 * A frame as the session writes it (protocol/ws-frames.ts): a `data` frame of 1 KiB or more
 * is its msgpack head and the payload itself, never copied (a view of the payload is kept
 * for a resume, as the copy was); any other frame is msgpackr's encoding.
 */
export function encodeFrame(message: ClientMessage | AgentMessage): Frame {
  if (isDirectData(message)) return { head: dataHead(message.stream, message.data.byteLength), body: message.data };
  return pack(message);
}

/** A frame as one buffer (the same bytes as encodeFrame's, joined). */
export function encode(message: ClientMessage | AgentMessage): Buffer {
  if (isDirectData(message)) {
    const head = dataHead(message.stream, message.data.byteLength);
    const frame = Buffer.allocUnsafeSlow(head.byteLength + message.data.byteLength); // one allocation of the exact size
    head.copy(frame, 0);
    frame.set(message.data, head.byteLength);
    return frame;
  }
  return pack(message);
}

/**
 * The field specs both wires are checked against (this agent wire, and the shim's in
 * protocol/shim-wire.ts). A field is a kind, written as a string (`'uint'`, `'str?'` when
 * optional) or as an object that adds bounds: `{ kind: 'uint', max: 65535 }`,
 * `{ kind: 'enum', values: ['tcp', 'udp'] }`, `{ kind: 'str', max: 4096, noNul: true }`,
 * `{ kind: 'list', of: { family: 'family', addr: 'str' } }` (a list of maps).
 */
export type FieldKind = 'uint' | 'int' | 'str' | 'bytes' | 'family' | 'family0' | 'strlist' | 'object' | 'any' | 'bool' | 'enum' | 'list';
/** The kinds a field can name as a plain string (enum and list need their values). */
export type SimpleKind = Exclude<FieldKind, 'enum' | 'list'>;
export interface FieldSpec {
  readonly kind: FieldKind;
  readonly optional?: boolean;
  /** uint/int: the largest value; str: the longest string; strlist: the longest item; bytes: the most bytes. */
  readonly max?: number;
  /** uint/int: the smallest value. */
  readonly min?: number;
  /** enum: the values allowed. */
  readonly values?: readonly (string | number)[];
  /** strlist/list: the most items. */
  readonly items?: number;
  /** str/strlist: no NUL character (it would cut a C string short). */
  readonly noNul?: boolean;
  /** list: the fields of each item (a map). */
  readonly of?: Spec;
  /** What the field means, for generated documentation. */
  readonly doc?: string;
  /** A typical value, for generated documentation and sample frames. */
  readonly example?: unknown;
}
export type Field = SimpleKind | `${SimpleKind}?` | FieldSpec;
export type Spec = { readonly [field: string]: Field };

/** Default bounds of the plain kinds (the agent wire's). */
const MAX_STRLIST_ITEMS = 64;
const MAX_STRLIST_ITEM = 256;
const MAX_LIST_ITEMS = 1024;

/** The object form of a field, whichever way it was written. */
export function fieldSpec(field: Field): FieldSpec {
  if (typeof field !== 'string') return field;
  return field.endsWith('?') ? { kind: field.slice(0, -1) as SimpleKind, optional: true } : { kind: field as SimpleKind };
}

// ---- the TypeScript type a spec describes

interface KindTypes {
  uint: number; int: number; str: string; bytes: Uint8Array; family: 4 | 6; family0: 0 | 4 | 6;
  strlist: string[]; object: Record<string, unknown>; any: unknown; bool: boolean;
}
/** The value type of one field. */
export type FieldType<F> =
  F extends { kind: 'enum'; values: readonly (infer V)[] } ? V
    : F extends { kind: 'list'; of: infer O } ? Array<FieldsOf<O>>
      : F extends { kind: infer K extends keyof KindTypes } ? KindTypes[K]
        : F extends `${infer K extends keyof KindTypes}?` ? KindTypes[K]
          : F extends keyof KindTypes ? KindTypes[F] : never;
type IsOptional<F> = F extends { optional: true } ? true : F extends `${string}?` ? true : false;
type Flatten<T> = { [K in keyof T]: T[K] };
/** The object type a spec describes (optional fields optional). */
export type FieldsOf<S> = Flatten<
  { -readonly [K in keyof S as IsOptional<S[K]> extends true ? never : K]: FieldType<S[K]> } &
  { -readonly [K in keyof S as IsOptional<S[K]> extends true ? K : never]?: FieldType<S[K]> }
>;

function stringOk(f: FieldSpec, v: unknown, max: number): boolean {
  return typeof v === 'string' && v.length <= max && !(f.noNul === true && v.includes('\0'));
}

function intOk(f: FieldSpec, v: unknown, min: number): boolean {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= (f.min ?? min) && (f.max === undefined || v <= f.max);
}

/** Whether `v` is a valid value of the field (its presence aside). */
export function fieldOk(field: Field, v: unknown): boolean {
  const f = fieldSpec(field);
  switch (f.kind) {
    case 'uint': return intOk(f, v, 0);
    case 'int': return intOk(f, v, Number.MIN_SAFE_INTEGER);
    case 'str': return stringOk(f, v, f.max ?? MAX_STRING);
    case 'bytes': return v instanceof Uint8Array && (f.max === undefined || v.byteLength <= f.max);
    case 'family': return v === 4 || v === 6;
    case 'family0': return v === 0 || v === 4 || v === 6;
    case 'strlist': return Array.isArray(v) && v.length <= (f.items ?? MAX_STRLIST_ITEMS) && v.every((s) => stringOk(f, s, f.max ?? MAX_STRLIST_ITEM));
    case 'object': return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
    case 'any': return true;
    case 'bool': return typeof v === 'boolean';
    case 'enum': return (typeof v === 'string' || typeof v === 'number') && (f.values ?? []).includes(v);
    case 'list': return Array.isArray(v) && v.length <= (f.items ?? MAX_LIST_ITEMS) && v.every((item) => isMap(item) && badField(f.of ?? {}, item) === undefined);
  }
}

export function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** Each spec's fields in object form, made once (every frame is checked against one). */
const compiledSpecs = new WeakMap<Spec, ReadonlyArray<readonly [string, FieldSpec]>>();
function specEntries(spec: Spec): ReadonlyArray<readonly [string, FieldSpec]> {
  let entries = compiledSpecs.get(spec);
  if (entries === undefined) {
    entries = Object.entries(spec).map(([name, field]) => [name, fieldSpec(field)] as const);
    compiledSpecs.set(spec, entries);
  }
  return entries;
}

/** The first field of `spec` that `value` lacks or has wrong, or undefined when all are good. */
export function badField(spec: Spec, value: Record<string, unknown>): string | undefined {
  for (const [name, field] of specEntries(spec)) {
    const v = value[name];
    if (v === undefined && field.optional === true) continue;
    if (!fieldOk(field, v)) return name;
  }
  return undefined;
}

/** Unpacks a msgpack frame that must be a map (TSM_ERR_BAD_FRAME otherwise). */
export function unpackMap(frame: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = unpackr.unpack(frame);
  } catch (cause) {
    throw new TsmError('TSM_ERR_BAD_FRAME', 'frame is not valid msgpack', { cause });
  }
  if (value === C1) throw new TsmError('TSM_ERR_BAD_FRAME', 'frame is not valid msgpack (0xc1, which msgpack never uses)');
  if (!isMap(value)) throw new TsmError('TSM_ERR_BAD_FRAME', 'frame is not a msgpack map');
  return value;
}

const common: Record<string, Spec> = {
  data: { stream: 'uint', data: 'bytes' },
  dgram: { stream: 'uint', data: 'bytes' },
  window: { stream: 'uint', bytes: 'uint', ack: 'uint?' },
  end: { stream: 'uint' },
  close: { stream: 'uint', errno: 'uint?' },
  ping: { t: 'int', ack: 'uint?' },
  pong: { t: 'int', ack: 'uint?' },
  ack: { n: 'uint' },
};

const clientSpecs: Record<ClientMessage['type'], Spec> = {
  ...(common as Record<'data' | 'dgram' | 'window' | 'end' | 'close' | 'ping' | 'pong' | 'ack', Spec>),
  hello: { protocol: 'uint', capabilities: 'strlist', target: 'object', client: 'object', incoming: 'object?', token: 'str?', files: 'object?', key: 'str?', session: 'object?', secret: 'str?', reconnectGraceMs: 'uint?', replaces: 'object?' },
  resume: { protocol: 'uint', session: { kind: 'str', max: 64 }, token: { kind: 'str', max: 256 }, received: 'uint', key: 'str?' },
  'tcp.connect': { id: 'uint', stream: 'uint', host: 'str', port: 'uint', family: 'family', timeoutMs: 'uint', holdMs: 'uint?' },
  'udp.open': { id: 'uint', stream: 'uint', host: 'str', port: 'uint', family: 'family' },
  'dns.lookup': { id: 'uint', name: 'str', family: 'family0' },
  'dns.reverse': { id: 'uint', address: 'str' },
  'dns.config': { id: 'uint' },
  'dns.query': { id: 'uint', packet: { kind: 'bytes', max: DNS_MAX_MESSAGE } },
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
  'port.subscribe': { id: 'uint', port: 'uint', mode: 'str', filter: 'object?', record: 'object?' },
  'port.unsubscribe': { id: 'uint', port: 'uint' },
};

const agentSpecs: Record<AgentMessage['type'], Spec> = {
  ...(common as Record<'data' | 'dgram' | 'window' | 'end' | 'close' | 'ping' | 'pong' | 'ack', Spec>),
  hello: { protocol: 'uint', capabilities: 'strlist', session: 'str', agent: 'object', target: 'object', resume: 'object?' },
  resumed: { received: 'uint' },
  result: { id: 'uint', value: 'any' },
  error: { id: 'uint', code: 'str', message: 'str', errno: 'uint?' },
  'session.error': { code: 'str', message: 'str' },
  'incoming.open': { stream: 'uint', port: 'uint', mode: 'str', remoteAddress: 'str', remotePort: 'uint', localAddress: 'str', localPort: 'uint' },
  'tcp.connected': { stream: 'uint', localAddress: 'str', localPort: 'uint' },
};

function decodeWith<T>(frame: Uint8Array, specs: Record<string, Spec>): T {
  if (frame.byteLength > MAX_FRAME_BYTES) {
    throw new TsmError('TSM_ERR_FRAME_TOO_LARGE', `frame of ${frame.byteLength} bytes exceeds the ${MAX_FRAME_BYTES}-byte limit`);
  }
  const value = unpackMap(frame);
  const type = value.type;
  if (typeof type !== 'string') throw new TsmError('TSM_ERR_BAD_FRAME', 'frame has no string "type"');
  const spec = Object.hasOwn(specs, type) ? specs[type] : undefined;
  if (!spec) throw new TsmError('TSM_ERR_UNKNOWN_MESSAGE', `unknown message type "${type.slice(0, 64)}"`);
  const bad = badField(spec, value);
  if (bad !== undefined) throw new TsmError('TSM_ERR_BAD_FRAME', `message "${type}" has a bad "${bad}"`);
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
  const value: unknown = unpackr.unpack(frame);
  // msgpackr decodes the never-used byte 0xc1 into a marker object of its own, where
  // @msgpack/msgpack threw: a frame that is only that byte is not msgpack.
  if (value === C1) throw new Error('0xc1 is never used in msgpack');
  return value;
}
