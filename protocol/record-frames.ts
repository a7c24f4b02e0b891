/**
 * The byte format of a record stream (protocol/messages.ts, RecordFrame): each frame is a
 * 4-byte big-endian length and a msgpack map. The agent writes them; the CLI reads them
 * with a RecordFrameReader, which checks every field (a frame comes from the network).
 */
import { packPlain, unpackPlain, isMap } from './codec.js';
import { TsmError } from './errors.js';
import type { RecordFrame, RecordedBody, RecordedExchange } from './messages.js';

/** A frame as bytes on the stream. */
export function encodeRecordFrame(frame: RecordFrame): Buffer {
  const body = packPlain(frame);
  const out = Buffer.allocUnsafe(4 + body.byteLength);
  out.writeUInt32BE(body.byteLength, 0);
  body.copy(out, 4);
  return out;
}

const bad = (what: string): TsmError => new TsmError('TSM_ERR_BAD_FRAME', `record frame: ${what}`);

function str(v: unknown, what: string, max = 64 * 1024): string {
  if (typeof v !== 'string' || v.length > max) throw bad(`${what} is not a string of at most ${max} characters`);
  return v;
}

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${what} is not a number`);
  return v;
}

function fields(v: unknown, what: string): Array<[string, string]> {
  if (!Array.isArray(v) || v.length > 10_000) throw bad(`${what} is not a list of fields`);
  return v.map((f, i) => {
    if (!Array.isArray(f) || f.length !== 2) throw bad(`${what}[${i}] is not [name, value]`);
    return [str(f[0], `${what}[${i}] name`), str(f[1], `${what}[${i}] value`)];
  });
}

function body(v: unknown, what: string): RecordedBody {
  if (!isMap(v)) throw bad(`${what} is not a map`);
  const out: RecordedBody = { size: num(v.size, `${what}.size`) };
  if (v.data !== undefined) {
    if (!(v.data instanceof Uint8Array)) throw bad(`${what}.data is not bytes`);
    out.data = v.data;
  }
  if (v.sha256 !== undefined) {
    if (typeof v.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(v.sha256)) throw bad(`${what}.sha256 is not 64 hex digits`);
    out.sha256 = v.sha256;
  }
  return out;
}

/** Checks a decoded frame field by field. */
export function checkRecordFrame(v: unknown): RecordFrame {
  if (!isMap(v)) throw bad('not a map');
  switch (v.kind) {
    case 'dropped':
      return { kind: 'dropped', count: num(v.count, 'count') };
    case 'skipped':
      return { kind: 'skipped', reason: str(v.reason, 'reason', 1024) };
    case 'exchange': {
      const x: RecordedExchange = {
        kind: 'exchange',
        version: str(v.version, 'version', 16),
        method: str(v.method, 'method', 64),
        target: str(v.target, 'target'),
        authority: str(v.authority, 'authority', 1024),
        requestHeaders: fields(v.requestHeaders, 'requestHeaders'),
        requestHeadSize: num(v.requestHeadSize, 'requestHeadSize'),
        requestBody: body(v.requestBody, 'requestBody'),
        status: num(v.status, 'status'),
        statusText: str(v.statusText, 'statusText', 1024),
        responseHeaders: fields(v.responseHeaders, 'responseHeaders'),
        responseHeadSize: num(v.responseHeadSize, 'responseHeadSize'),
        responseBody: body(v.responseBody, 'responseBody'),
        trailers: fields(v.trailers, 'trailers'),
        started: num(v.started, 'started'),
        requestDone: num(v.requestDone, 'requestDone'),
        responseStarted: num(v.responseStarted, 'responseStarted'),
        responseDone: num(v.responseDone, 'responseDone'),
      };
      return x;
    }
    default:
      throw bad(`unknown kind ${JSON.stringify(String(v.kind).slice(0, 32))}`);
  }
}

/** Splits a record stream's bytes into checked frames. */
export class RecordFrameReader {
  readonly #max: number;
  #buf: Buffer = Buffer.alloc(0);

  constructor(maxFrame: number) {
    this.#max = maxFrame;
  }

  /** The frames `chunk` completes; throws a TsmError on a malformed or oversized frame. */
  push(chunk: Buffer): RecordFrame[] {
    this.#buf = this.#buf.byteLength === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: RecordFrame[] = [];
    while (this.#buf.byteLength >= 4) {
      const n = this.#buf.readUInt32BE(0);
      if (n > this.#max) throw bad(`a frame of ${n} bytes is larger than ${this.#max}`);
      if (this.#buf.byteLength < 4 + n) break;
      const frame = this.#buf.subarray(4, 4 + n);
      this.#buf = this.#buf.subarray(4 + n);
      let value: unknown;
      try {
        value = unpackPlain(frame);
      } catch (cause) {
        throw new TsmError('TSM_ERR_BAD_FRAME', 'record frame: not valid msgpack', { cause });
      }
      out.push(checkRecordFrame(value));
    }
    return out;
  }

  /** Bytes of an incomplete frame held. */
  get buffered(): number {
    return this.#buf.byteLength;
  }
}
