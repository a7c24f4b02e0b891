/**
 * Incremental HTTP/1.x message framing for the agent's request router: where each
 * request and response starts and ends on a keep-alive connection (Content-Length,
 * chunked with trailers, close-delimited responses, HEAD/1xx/204/304, Upgrade). It hands
 * back the *raw* bytes it was given, sliced at message boundaries, so the router forwards
 * exactly what the client sent; only heads are parsed into fields.
 *
 * Hand-written rather than a dependency: Node's llhttp is not public API, and the npm
 * parsers (http-parser-js and kin) decode bodies and rebuild messages through callbacks,
 * while the router needs raw byte ranges. Framing is the small, well-specified part of
 * RFC 9112; anything it does not understand is an error the router answers by passing
 * the connection through to the pod's app untouched.
 */

/** Heads larger than this are refused (the router then passes the connection through). */
export const MAX_HEAD_BYTES = 64 * 1024;
const MAX_CHUNK_LINE = 4096;

export interface MessageHead {
  /** Request: method; response: '' */
  method: string;
  /** Request target as sent (path and query). */
  target: string;
  /** Response status; 0 for requests. */
  status: number;
  /** 'HTTP/1.1' or 'HTTP/1.0'. */
  version: string;
  /** Header fields in order, names as sent. */
  headers: Array<[string, string]>;
}

export type HttpEvent =
  | { kind: 'head'; head: MessageHead; raw: Buffer }
  /** `part`: payload bytes (`data`), chunk framing (`framing`), or trailer lines (`trailer`, the last one empty). */
  | { kind: 'body'; raw: Buffer; part: 'data' | 'framing' | 'trailer' }
  /** The message is complete. `upgrade`: what follows is another protocol (after a 101, or a request asking to upgrade). */
  | { kind: 'end'; upgrade: boolean };

export class HttpParseError extends Error {}

/** The value of a header (first occurrence), case-insensitively. */
export function header(head: MessageHead, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const [n, v] of head.headers) if (n.toLowerCase() === lower) return v;
  return undefined;
}

function hasToken(value: string | undefined, token: string): boolean {
  if (!value) return false;
  return value.split(',').some((t) => t.trim().toLowerCase() === token);
}

/** Whether the connection stays open after this message (RFC 9112 §9.3). */
export function keepAlive(head: MessageHead): boolean {
  const conn = header(head, 'connection');
  if (hasToken(conn, 'close')) return false;
  if (head.version === 'HTTP/1.0') return hasToken(conn, 'keep-alive');
  return true;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function parseHead(text: string, kind: 'request' | 'response'): MessageHead {
  const lines = text.split('\r\n');
  const start = lines.shift() ?? '';
  const head: MessageHead = { method: '', target: '', status: 0, version: '', headers: [] };
  if (kind === 'request') {
    const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) (HTTP\/1\.[01])$/.exec(start);
    if (!m) throw new HttpParseError('not an HTTP/1.x request line');
    head.method = m[1] ?? '';
    head.target = m[2] ?? '';
    head.version = m[3] ?? '';
  } else {
    const m = /^(HTTP\/1\.[01]) (\d{3})(?: .*)?$/.exec(start);
    if (!m) throw new HttpParseError('not an HTTP/1.x status line');
    head.version = m[1] ?? '';
    head.status = Number(m[2]);
  }
  for (const line of lines) {
    if (line === '') continue;
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name)) throw new HttpParseError('malformed header line');
    head.headers.push([name, line.slice(colon + 1).trim()]);
  }
  return head;
}

type BodyState =
  | { kind: 'none' }
  | { kind: 'length'; left: number }
  | { kind: 'chunk-size' }
  | { kind: 'chunk-data'; left: number }
  | { kind: 'chunk-crlf'; left: number }
  | { kind: 'trailers' }
  | { kind: 'until-close' };

/**
 * Frames one direction of a connection. `push` returns the events the bytes complete;
 * after an `end` with `upgrade: true`, or while `paused`, bytes are kept, not parsed,
 * until `resume()` (go on with HTTP) or `takeRest()` (the caller relays them raw).
 */
export class Http1Parser {
  readonly kind: 'request' | 'response';
  #buf: Buffer = Buffer.alloc(0);
  #state: 'head' | 'body' | 'stopped' = 'head';
  #body: BodyState = { kind: 'none' };
  #upgradeAfterBody = false;
  /** Response parsing: the method of the request it answers (HEAD has no body). */
  requestMethod = 'GET';

  constructor(kind: 'request' | 'response') {
    this.kind = kind;
  }

  get stopped(): boolean {
    return this.#state === 'stopped';
  }

  /** Unparsed bytes held (while stopped, or an incomplete head). */
  get buffered(): number {
    return this.#buf.byteLength;
  }

  push(chunk: Buffer): HttpEvent[] {
    this.#buf = this.#buf.byteLength === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    return this.#run();
  }

  /** Goes on parsing HTTP after a stop (the upgrade was refused). */
  resume(): HttpEvent[] {
    if (this.#state === 'stopped') this.#state = 'head';
    return this.#run();
  }

  /** The bytes held after a stop; the parser is done. */
  takeRest(): Buffer {
    const rest = this.#buf;
    this.#buf = Buffer.alloc(0);
    this.#state = 'stopped';
    return rest;
  }

  /** The connection's read side ended: completes a close-delimited body. */
  finish(): HttpEvent[] {
    if (this.#state === 'body' && this.#body.kind === 'until-close') {
      this.#state = 'head';
      this.#body = { kind: 'none' };
      return [{ kind: 'end', upgrade: false }];
    }
    return [];
  }

  /** True between messages (nothing of a next message seen yet). */
  get idle(): boolean {
    return this.#state === 'head' && this.#buf.byteLength === 0;
  }

  #run(): HttpEvent[] {
    const out: HttpEvent[] = [];
    for (;;) {
      if (this.#state === 'stopped') return out;
      if (this.#state === 'head') {
        if (this.#buf.byteLength === 0) return out;
        // Tolerate empty lines between messages (RFC 9112 §2.2).
        while (this.#buf.byteLength >= 2 && this.#buf[0] === 13 && this.#buf[1] === 10) this.#buf = this.#buf.subarray(2);
        const end = this.#buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (this.#buf.byteLength > MAX_HEAD_BYTES) throw new HttpParseError(`head larger than ${MAX_HEAD_BYTES} bytes`);
          return out;
        }
        if (end + 4 > MAX_HEAD_BYTES) throw new HttpParseError(`head larger than ${MAX_HEAD_BYTES} bytes`);
        const raw = this.#buf.subarray(0, end + 4);
        this.#buf = this.#buf.subarray(end + 4);
        const head = parseHead(raw.toString('latin1', 0, end), this.kind);
        out.push({ kind: 'head', head, raw });
        this.#startBody(head, out);
        continue;
      }
      // body
      if (this.#buf.byteLength === 0) return out;
      if (!this.#stepBody(out)) return out;
    }
  }

  #startBody(head: MessageHead, out: HttpEvent[]): void {
    const te = header(head, 'transfer-encoding');
    const cl = header(head, 'content-length');
    let body: BodyState;
    let upgrade = false;
    if (this.kind === 'response') {
      const s = head.status;
      if (s === 101) {
        out.push({ kind: 'end', upgrade: true });
        this.#state = 'stopped';
        return;
      }
      if ((s >= 100 && s < 200) || s === 204 || s === 304 || this.requestMethod === 'HEAD') body = { kind: 'none' };
      else if (te !== undefined) {
        if (!hasToken(te.split(',').pop(), 'chunked')) body = { kind: 'until-close' };
        else body = { kind: 'chunk-size' };
      } else if (cl !== undefined) body = { kind: 'length', left: this.#length(cl) };
      else body = { kind: 'until-close' };
    } else {
      if (te !== undefined) {
        if (!hasToken(te.split(',').pop(), 'chunked')) throw new HttpParseError('request body without chunked framing');
        body = { kind: 'chunk-size' };
      } else if (cl !== undefined) body = { kind: 'length', left: this.#length(cl) };
      else body = { kind: 'none' };
      upgrade = header(head, 'upgrade') !== undefined && hasToken(header(head, 'connection'), 'upgrade');
      if (head.method === 'CONNECT') upgrade = true;
    }
    this.#upgradeAfterBody = upgrade;
    if (body.kind === 'none' || (body.kind === 'length' && body.left === 0)) {
      this.#endMessage(out);
    } else {
      this.#body = body;
      this.#state = 'body';
    }
  }

  #length(value: string): number {
    const parts = value.split(',').map((p) => p.trim());
    if (!parts.every((p) => /^\d{1,15}$/.test(p) && p === parts[0])) throw new HttpParseError('bad Content-Length');
    return Number(parts[0]);
  }

  #endMessage(out: HttpEvent[]): void {
    this.#body = { kind: 'none' };
    out.push({ kind: 'end', upgrade: this.#upgradeAfterBody });
    // After a request asking to upgrade, the next bytes may be another protocol: hold
    // them until the router has seen the response.
    this.#state = this.#upgradeAfterBody ? 'stopped' : 'head';
    this.#upgradeAfterBody = false;
  }

  /** Consumes part of the buffer; false when it needs more bytes. */
  #stepBody(out: HttpEvent[]): boolean {
    const b = this.#body;
    const emit = (n: number, part: 'data' | 'framing' | 'trailer' = 'data'): void => {
      out.push({ kind: 'body', raw: this.#buf.subarray(0, n), part });
      this.#buf = this.#buf.subarray(n);
    };
    switch (b.kind) {
      case 'until-close':
        emit(this.#buf.byteLength);
        return false;
      case 'length': {
        const n = Math.min(b.left, this.#buf.byteLength);
        emit(n);
        b.left -= n;
        if (b.left === 0) this.#endMessage(out);
        return true;
      }
      case 'chunk-size': {
        const eol = this.#buf.indexOf('\r\n');
        if (eol < 0) {
          if (this.#buf.byteLength > MAX_CHUNK_LINE) throw new HttpParseError('chunk size line too long');
          return false;
        }
        const m = /^([0-9a-fA-F]{1,12})(?:[ \t]*;.*)?$/.exec(this.#buf.toString('latin1', 0, eol));
        if (!m) throw new HttpParseError('bad chunk size');
        const size = parseInt(m[1] ?? '', 16);
        emit(eol + 2, 'framing');
        this.#body = size === 0 ? { kind: 'trailers' } : { kind: 'chunk-data', left: size };
        return true;
      }
      case 'chunk-data': {
        const n = Math.min(b.left, this.#buf.byteLength);
        emit(n);
        b.left -= n;
        if (b.left === 0) this.#body = { kind: 'chunk-crlf', left: 2 };
        return true;
      }
      case 'chunk-crlf': {
        const n = Math.min(b.left, this.#buf.byteLength);
        for (let i = 0; i < n; i++) {
          if (this.#buf[i] !== (b.left - i === 2 ? 13 : 10)) throw new HttpParseError('chunk not followed by CRLF');
        }
        emit(n, 'framing');
        b.left -= n;
        if (b.left === 0) this.#body = { kind: 'chunk-size' };
        return true;
      }
      case 'trailers': {
        const eol = this.#buf.indexOf('\r\n');
        if (eol < 0) {
          if (this.#buf.byteLength > MAX_HEAD_BYTES) throw new HttpParseError('trailers too long');
          return false;
        }
        emit(eol + 2, 'trailer');
        if (eol === 0) this.#endMessage(out);
        return true;
      }
      case 'none':
        this.#endMessage(out);
        return true;
    }
  }
}

/** What a request filter needs from a head: method, path without the query, headers. */
export function requestPath(head: MessageHead): string {
  let t = head.target;
  if (/^https?:\/\//i.test(t)) t = t.replace(/^https?:\/\/[^/]*/i, '') || '/';
  const q = t.indexOf('?');
  return q >= 0 ? t.slice(0, q) : t;
}

/** Does the start of a connection look like HTTP/1.x? 'yes', 'no', or 'maybe' (need more bytes). */
export function looksLikeHttp1(start: Buffer): 'yes' | 'no' | 'maybe' {
  const n = Math.min(start.byteLength, 24);
  let i = 0;
  for (; i < n; i++) {
    const c = start[i] ?? 0;
    if (c === 0x20) break;
    if (c < 0x21 || c > 0x7e) return 'no';
  }
  if (i === n) return start.byteLength >= 24 ? 'no' : 'maybe';
  if (i === 0) return 'no';
  // h2c with prior knowledge starts "PRI * HTTP/2.0": not ours to route.
  if (start.subarray(0, 3).toString('latin1') === 'PRI') return 'no';
  return 'yes';
}
