/**
 * Recording (`tsmirror record`): the pod's app answers every connection, as with a mirror,
 * and the agent reads both directions of each connection to cut it into HTTP exchanges
 * (request and the app's response), which it sends to the recording session on one stream
 * per connection (protocol/record-frames.ts).
 *
 * - HTTP/1.1 (`Http1Tap`): the bytes are relayed to the app untouched (RawRelay) and also
 *   parsed on the side by the router's framing code (agent/incoming/http1.ts): keep-alive,
 *   pipelining, chunked bodies with trailers, 1xx, HEAD. A parse error stops recording that
 *   connection (it goes on to the app); an upgrade (101) ends it.
 * - h2c (`H2RecordTap`): HTTP/2 cannot be read passively without both sides' HPACK state,
 *   so the connection is terminated by the h2c router (agent/incoming/http2.ts), which
 *   replays every stream on a connection to the app, and the tap watches each stream.
 * - Anything else is relayed to the app and counted as skipped.
 *
 * What a subscription keeps (its filter, its sample, its body limit) and what it redacts is
 * decided here, on the node: dropped exchanges and redacted values never leave it.
 */
import { createHash, type Hash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { wholeMatchPattern, type WholeMatch } from '../../common/http-filter.js';
import { TsmError } from '../../protocol/errors.js';
import {
  DEFAULT_REDACTED_HEADERS, RECORD_LIMITS, type RecordFrame, type RecordOptions, type RecordedBody, type RecordedExchange,
} from '../../protocol/messages.js';
import { encodeRecordFrame } from '../../protocol/record-frames.js';
import { filterMatches, type CompiledFilter } from './filters.js';
import { Http1Parser, header, type HttpEvent, type MessageHead } from './http1.js';

/** What a redacted header value or JSON body field becomes (the same string as common/har.ts REDACTED_MARKER). */
export const REDACTED = '[redacted by tsmirror]';
/** A record stream more than this far behind is cut (the client is never slowed for a recording). */
const RECORD_BACKLOG = 16 * 1024 * 1024;
/** Requests of one HTTP/1.1 connection waiting for their answers (pipelining); beyond, recording of it stops. */
const MAX_PENDING = 256;

// ---- options

type JsonSeg = { k: 'name'; name: string } | { k: 'index'; i: number } | { k: 'any' } | { k: 'deep'; name: string };

/** Parses `$.a.b`, `$.items[*].card`, `$..password`, `$['odd key']`. */
export function parseJsonPath(path: string): JsonSeg[] {
  const bad = (why: string): TsmError => new TsmError('TSM_ERR_USAGE', `--redact-json-path "${path.slice(0, 80)}": ${why} (write it like $.user.password, $.items[*].card or $..token)`);
  if (path.length > RECORD_LIMITS.jsonPathLength) throw bad(`longer than ${RECORD_LIMITS.jsonPathLength} characters`);
  if (!path.startsWith('$')) throw bad('it must start with $');
  const segs: JsonSeg[] = [];
  let i = 1;
  const name = (): string => {
    const m = /^[^.[\]]+/.exec(path.slice(i));
    if (!m) throw bad(`a name is missing at offset ${i}`);
    i += m[0].length;
    return m[0];
  };
  while (i < path.length) {
    if (path.startsWith('..', i)) {
      i += 2;
      segs.push({ k: 'deep', name: name() });
    } else if (path[i] === '.') {
      i += 1;
      if (path[i] === '*') {
        i += 1;
        segs.push({ k: 'any' });
      } else segs.push({ k: 'name', name: name() });
    } else if (path[i] === '[') {
      const m = /^\[(?:(\*)|(\d{1,9})|'([^']*)'|"([^"]*)")\]/.exec(path.slice(i));
      if (!m) throw bad(`a bracket at offset ${i} is neither [N], [*] nor ['name']`);
      i += m[0].length;
      if (m[1]) segs.push({ k: 'any' });
      else if (m[2] !== undefined) segs.push({ k: 'index', i: Number(m[2]) });
      else segs.push({ k: 'name', name: m[3] ?? m[4] ?? '' });
    } else throw bad(`unexpected "${path[i]}" at offset ${i}`);
  }
  if (segs.length === 0) throw bad('it names no field');
  return segs;
}

/** Replaces what `segs` selects in `node` by the marker; true when something was. */
function maskJson(node: unknown, segs: JsonSeg[], at: number): boolean {
  if (typeof node !== 'object' || node === null) return false;
  const seg = segs[at];
  if (!seg) return false;
  const last = at === segs.length - 1;
  const obj = node as Record<string, unknown>;
  const keys: string[] = [];
  const isArray = Array.isArray(node);
  if (seg.k === 'name' || seg.k === 'deep') {
    if (!isArray && Object.hasOwn(obj, seg.name)) keys.push(seg.name);
  } else if (seg.k === 'index') {
    if (isArray && seg.i < node.length) keys.push(String(seg.i));
  } else keys.push(...Object.keys(obj));
  let changed = false;
  for (const k of keys) {
    if (last) {
      obj[k] = REDACTED;
      changed = true;
    } else changed = maskJson(obj[k], segs, at + 1) || changed;
  }
  if (seg.k === 'deep') {
    for (const k of Object.keys(obj)) if (!(keys.includes(k) && last)) changed = maskJson(obj[k], segs, at) || changed;
  }
  return changed;
}

export interface CompiledRecord {
  sample: number;
  maxBody: number;
  redact: boolean;
  redactHeaders: WholeMatch[];
  jsonPaths: JsonSeg[][];
  filter: CompiledFilter | undefined;
}

/** Validates a subscription's record options from the wire (a usage error says what is wrong). */
export function compileRecordOptions(value: unknown, filter: CompiledFilter | undefined): CompiledRecord {
  const o = (value ?? {}) as Partial<RecordOptions>;
  if (typeof value !== 'object' || value === null) throw new TsmError('TSM_ERR_USAGE', 'a record subscription needs its options');
  const sample = o.sample;
  if (typeof sample !== 'number' || !(sample > 0 && sample <= 100)) throw new TsmError('TSM_ERR_USAGE', '--sample must be a percentage above 0 and at most 100');
  const maxBody = o.maxBody;
  if (typeof maxBody !== 'number' || !Number.isInteger(maxBody) || maxBody < 0 || maxBody > RECORD_LIMITS.maxBody) {
    throw new TsmError('TSM_ERR_USAGE', `--max-body must be between 0 and ${RECORD_LIMITS.maxBody} bytes`);
  }
  if (typeof o.redact !== 'boolean') throw new TsmError('TSM_ERR_USAGE', 'record options need redact: true or false');
  const list = (v: unknown, what: string, max: number): string[] => {
    if (!Array.isArray(v) || v.length > max || !v.every((x) => typeof x === 'string')) throw new TsmError('TSM_ERR_USAGE', `${what} must be at most ${max} strings`);
    return v as string[];
  };
  const headers = list(o.redactHeaders ?? [], '--redact-header', RECORD_LIMITS.redactHeaders);
  const paths = list(o.redactJsonPaths ?? [], '--redact-json-path', RECORD_LIMITS.redactJsonPaths);
  return {
    sample, maxBody, redact: o.redact, filter,
    // Header names are matched in lower case; a pattern is made case-insensitive.
    redactHeaders: headers.map((h) => wholeMatchPattern(`(?i:${h})`, `--redact-header "${h}"`)),
    jsonPaths: paths.map(parseJsonPath),
  };
}

// ---- exchanges

/** A body as it arrives: kept up to `max` bytes, hashed whole. */
class BodyCollector {
  readonly #max: number;
  readonly #chunks: Buffer[] = [];
  #size = 0;
  readonly #hash: Hash = createHash('sha256');

  constructor(max: number) {
    this.#max = max;
  }

  push(chunk: Buffer): void {
    this.#size += chunk.byteLength;
    this.#hash.update(chunk);
    if (this.#size <= this.#max) this.#chunks.push(chunk);
    else this.#chunks.length = 0;
  }

  get size(): number {
    return this.#size;
  }

  /** The whole body when it was kept, else undefined; and its hash. */
  finish(): { data: Buffer | undefined; size: number; sha256: string } {
    return { data: this.#size <= this.#max ? Buffer.concat(this.#chunks) : undefined, size: this.#size, sha256: this.#hash.digest('hex') };
  }
}

/** An exchange as parsed, before a subscription's choices. */
interface RawExchange {
  version: string;
  method: string;
  target: string;
  authority: string;
  requestHeaders: Array<[string, string]>;
  requestHeadSize: number;
  requestBody: { data: Buffer | undefined; size: number; sha256: string };
  status: number;
  statusText: string;
  responseHeaders: Array<[string, string]>;
  responseHeadSize: number;
  responseBody: { data: Buffer | undefined; size: number; sha256: string };
  trailers: Array<[string, string]>;
  started: number;
  requestDone: number;
  responseStarted: number;
  responseDone: number;
}

function isJson(headers: Array<[string, string]>, data: Buffer): boolean {
  const type = headers.find(([n]) => n.toLowerCase() === 'content-type')?.[1].toLowerCase() ?? '';
  if (type.includes('json')) return true;
  const first = data.find((b) => b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09);
  return !type && (first === 0x7b || first === 0x5b);
}

/** What the subscription keeps of a body: the bytes (JSON paths masked) up to its limit, else size and hash. */
function keepBody(r: CompiledRecord, headers: Array<[string, string]>, body: RawExchange['requestBody']): RecordedBody {
  if (body.data === undefined || body.size > r.maxBody) return { size: body.size, sha256: body.sha256 };
  let data = body.data;
  if (r.redact && r.jsonPaths.length > 0 && data.byteLength > 0 && isJson(headers, data)) {
    try {
      const doc: unknown = JSON.parse(data.toString('utf8'));
      let changed = false;
      for (const p of r.jsonPaths) changed = maskJson(doc, p, 0) || changed;
      if (changed) data = Buffer.from(JSON.stringify(doc), 'utf8');
    } catch {
      // not JSON after all: kept as it is
    }
  }
  return { size: body.size, data };
}

function redactFields(r: CompiledRecord, fields: Array<[string, string]>): Array<[string, string]> {
  if (!r.redact) return fields;
  return fields.map(([n, v]) => {
    const lower = n.toLowerCase();
    const hit = (DEFAULT_REDACTED_HEADERS as readonly string[]).includes(lower) || r.redactHeaders.some((p) => p.test(lower));
    return [n, hit ? REDACTED : v];
  });
}

/** What the hub gives a recorder: a stream to the recording session per subscription. */
export interface RecordSub {
  record?: CompiledRecord;
}
export interface RecordHub<S extends RecordSub> {
  openSession(sub: S, client: net.Socket): Duplex | undefined;
  logOnce(line: string): void;
  readonly port: number;
}

interface RecordTarget<S> { sub: S; r: CompiledRecord; stream: Duplex | undefined; cut: boolean }

/**
 * One client connection's recording: each exchange is matched against each recording
 * subscription (filter, then sample) and sent on that subscription's stream, opened when
 * first needed.
 */
export class ConnectionRecorder<S extends RecordSub> {
  readonly #hub: RecordHub<S>;
  readonly #client: net.Socket;
  readonly #subs: Array<RecordTarget<S>>;
  /** The largest body any subscription keeps. */
  readonly maxBody: number;
  #ended = false;

  constructor(hub: RecordHub<S>, subs: S[], client: net.Socket) {
    this.#hub = hub;
    this.#client = client;
    this.#subs = subs.filter((s) => s.record).map((sub) => ({ sub, r: sub.record as CompiledRecord, stream: undefined, cut: false }));
    this.maxBody = Math.max(0, ...this.#subs.map((s) => s.r.maxBody));
    client.once('close', () => this.end());
  }

  #send(s: RecordTarget<S>, frame: RecordFrame): void {
    if (s.cut || this.#ended) return;
    if (!s.stream) {
      s.stream = this.#hub.openSession(s.sub, this.#client);
      if (!s.stream) {
        s.cut = true;
        return;
      }
      s.stream.on('data', () => undefined); // the CLI sends nothing back
    }
    if (s.stream.destroyed) return;
    if (s.stream.writableLength > RECORD_BACKLOG) {
      this.#hub.logOnce(`recording of port ${this.#hub.port} fell ${RECORD_BACKLOG} bytes behind; a connection's recording is cut`);
      s.cut = true;
      s.stream.destroy();
      return;
    }
    s.stream.write(encodeRecordFrame(frame));
  }

  exchange(x: RawExchange): void {
    const head: MessageHead = { method: x.method, target: x.target, status: 0, version: x.version, headers: x.requestHeaders };
    for (const s of this.#subs) {
      const r = s.r;
      if ((r.filter && !filterMatches(r.filter, head)) || (r.sample < 100 && Math.random() * 100 >= r.sample)) {
        this.#send(s, { kind: 'dropped', count: 1 });
        continue;
      }
      const e: RecordedExchange = {
        kind: 'exchange',
        version: x.version, method: x.method, target: x.target, authority: x.authority,
        requestHeaders: redactFields(r, x.requestHeaders), requestHeadSize: x.requestHeadSize,
        requestBody: keepBody(r, x.requestHeaders, x.requestBody),
        status: x.status, statusText: x.statusText,
        responseHeaders: redactFields(r, x.responseHeaders), responseHeadSize: x.responseHeadSize,
        responseBody: keepBody(r, x.responseHeaders, x.responseBody),
        trailers: redactFields(r, x.trailers),
        started: x.started, requestDone: x.requestDone, responseStarted: x.responseStarted, responseDone: x.responseDone,
      };
      this.#send(s, e);
    }
  }

  skipped(reason: string): void {
    for (const s of this.#subs) this.#send(s, { kind: 'skipped', reason });
  }

  /** The connection is over: the streams end after what was written. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const s of this.#subs) if (s.stream && !s.stream.destroyed && !s.stream.writableEnded) s.stream.end();
  }
}

// ---- HTTP/1.1

interface PendingRequest {
  head: MessageHead;
  headSize: number;
  started: number;
  done: number;
  body: BodyCollector;
}

interface PendingResponse {
  head: MessageHead;
  statusText: string;
  headSize: number;
  started: number;
  body: BodyCollector;
  trailers: Array<[string, string]>;
}

function statusTextOf(raw: Buffer): string {
  const eol = raw.indexOf('\r\n');
  const m = /^HTTP\/1\.[01] \d{3} ?(.*)$/.exec(raw.toString('latin1', 0, eol < 0 ? raw.byteLength : eol));
  return m?.[1] ?? '';
}

/** Reads both directions of an HTTP/1.x connection relayed to the app and records its exchanges. */
export class Http1Tap<S extends RecordSub> {
  readonly #rec: ConnectionRecorder<S>;
  readonly #req = new Http1Parser('request');
  readonly #res = new Http1Parser('response');
  readonly #pending: PendingRequest[] = [];
  #cur: PendingRequest | undefined;
  #resp: PendingResponse | undefined;
  #stopped = false;
  #exchanges = 0;
  readonly #detach: () => void;

  constructor(client: net.Socket, app: Duplex, start: Buffer, rec: ConnectionRecorder<S>) {
    this.#rec = rec;
    const onReq = (chunk: Buffer): void => this.#run(() => this.#request(this.#req.push(chunk)));
    const onRes = (chunk: Buffer): void => this.#run(() => this.#response(this.#res.push(this.#withMethod(chunk))));
    const onResEnd = (): void => this.#run(() => this.#response(this.#res.finish()));
    client.on('data', onReq);
    app.on('data', onRes);
    app.once('end', onResEnd);
    const onClose = (): void => {
      if (this.#stopped) return;
      const unanswered = this.#pending.length + (this.#cur && !this.#pending.includes(this.#cur) ? 1 : 0);
      if (unanswered > 0) this.#rec.skipped(`${unanswered} request(s) without an answer when the connection closed`);
      this.#stop();
    };
    client.once('close', onClose);
    app.once('close', onClose);
    this.#detach = () => {
      client.off('data', onReq);
      app.off('data', onRes);
      app.off('end', onResEnd);
    };
    if (start.byteLength > 0) this.#run(() => this.#request(this.#req.push(start)));
  }

  /** The response parser needs the method of the request being answered (HEAD has no body). */
  #withMethod(chunk: Buffer): Buffer {
    this.#res.requestMethod = this.#pending[0]?.head.method ?? 'GET';
    return chunk;
  }

  #run(step: () => void): void {
    if (this.#stopped) return;
    try {
      step();
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.#rec.skipped(this.#exchanges === 0 ? `not HTTP/1.x (${why})` : `HTTP/1.x framing lost after ${this.#exchanges} exchanges (${why})`);
      this.#stop();
    }
  }

  #stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#detach();
  }

  #request(events: HttpEvent[]): void {
    for (const ev of events) {
      if (this.#stopped) return;
      if (ev.kind === 'head') {
        if (this.#pending.length >= MAX_PENDING) throw new Error(`more than ${MAX_PENDING} requests waiting for answers`);
        this.#cur = { head: ev.head, headSize: ev.raw.byteLength, started: Date.now(), done: 0, body: new BodyCollector(this.#rec.maxBody) };
        this.#pending.push(this.#cur);
      } else if (ev.kind === 'body') {
        if (ev.part === 'data') this.#cur?.body.push(ev.raw);
      } else if (this.#cur) {
        this.#cur.done = Date.now();
      }
    }
  }

  #response(events: HttpEvent[]): void {
    for (const ev of events) {
      if (this.#stopped) return;
      if (ev.kind === 'head') {
        if (this.#pending.length === 0) throw new Error('an answer without a request');
        this.#resp = { head: ev.head, statusText: statusTextOf(ev.raw), headSize: ev.raw.byteLength, started: Date.now(), body: new BodyCollector(this.#rec.maxBody), trailers: [] };
      } else if (ev.kind === 'body') {
        if (!this.#resp) continue;
        if (ev.part === 'data') this.#resp.body.push(ev.raw);
        else if (ev.part === 'trailer') {
          const line = ev.raw.toString('latin1').replace(/\r\n$/, '');
          const colon = line.indexOf(':');
          if (colon > 0) this.#resp.trailers.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
        }
      } else {
        const resp = this.#resp;
        this.#resp = undefined;
        if (!resp) continue;
        const status = resp.head.status;
        if (status >= 100 && status < 200 && status !== 101) continue; // interim answers: the final one follows
        const req = this.#pending.shift();
        if (!req) throw new Error('an answer without a request');
        if (this.#cur === req && req.done === 0) req.done = Date.now(); // answered before its body was complete
        const now = Date.now();
        this.#exchanges++;
        this.#rec.exchange({
          version: req.head.version, method: req.head.method, target: req.head.target, authority: header(req.head, 'host') ?? '',
          requestHeaders: req.head.headers, requestHeadSize: req.headSize, requestBody: req.body.finish(),
          status, statusText: resp.statusText, responseHeaders: resp.head.headers, responseHeadSize: resp.headSize,
          responseBody: resp.body.finish(), trailers: resp.trailers,
          started: req.started, requestDone: req.done || now, responseStarted: resp.started, responseDone: now,
        });
        if (ev.upgrade) {
          this.#rec.skipped('the connection switched protocols (101); what follows is not recorded');
          this.#stop();
          return;
        }
        // A request that asked to upgrade and was refused: its connection goes on as HTTP.
        if (this.#req.stopped) this.#request(this.#req.resume());
      }
    }
  }
}

// ---- HTTP/2 (through the h2c router)

/** What the h2c router (agent/incoming/http2.ts) tells a tap about each stream. */
export interface H2StreamTap {
  requestData(chunk: Buffer): void;
  requestEnd(): void;
  response(headers: IncomingHttpHeaders): void;
  responseData(chunk: Buffer): void;
  trailers(headers: IncomingHttpHeaders): void;
  responseEnd(): void;
  /** The stream closed; recorded when its response ended. */
  closed(): void;
}
export interface H2Tap {
  stream(headers: IncomingHttpHeaders): H2StreamTap;
}

function h2Fields(headers: IncomingHttpHeaders): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(':') || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) out.push([name, String(v)]);
  }
  return out;
}

/** Records each stream of an h2c connection the router terminates. */
export class H2RecordTap<S extends RecordSub> implements H2Tap {
  readonly #rec: ConnectionRecorder<S>;

  constructor(rec: ConnectionRecorder<S>) {
    this.#rec = rec;
  }

  stream(headers: IncomingHttpHeaders): H2StreamTap {
    const rec = this.#rec;
    const started = Date.now();
    const reqBody = new BodyCollector(rec.maxBody);
    const resBody = new BodyCollector(rec.maxBody);
    let requestDone = 0;
    let response: IncomingHttpHeaders | undefined;
    let responseStarted = 0;
    let trailers: IncomingHttpHeaders = {};
    let responseDone = 0;
    let recorded = false;
    return {
      requestData: (c) => reqBody.push(c),
      requestEnd: () => {
        requestDone ||= Date.now();
      },
      response: (h) => {
        response = h;
        responseStarted = Date.now();
      },
      responseData: (c) => resBody.push(c),
      trailers: (t) => (trailers = t),
      responseEnd: () => {
        responseDone ||= Date.now();
      },
      closed: () => {
        if (recorded) return;
        recorded = true;
        if (!response || !responseDone) {
          rec.skipped(`an HTTP/2 stream (${String(headers[':method'])} ${String(headers[':path']).slice(0, 200)}) was reset before its answer ended`);
          return;
        }
        rec.exchange({
          version: 'HTTP/2', method: String(headers[':method'] ?? ''), target: String(headers[':path'] ?? ''),
          authority: String(headers[':authority'] ?? headers.host ?? ''),
          requestHeaders: h2Fields(headers), requestHeadSize: -1, requestBody: reqBody.finish(),
          status: Number(response[':status'] ?? 0), statusText: '', responseHeaders: h2Fields(response), responseHeadSize: -1,
          responseBody: resBody.finish(), trailers: h2Fields(trailers),
          started, requestDone: requestDone || responseStarted, responseStarted, responseDone,
        });
      },
    };
  }
}
