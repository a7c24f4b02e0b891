/**
 * A HAR file read for replay: checked (common/har.ts), each entry turned into what is
 * sent (method, path, headers, body) and what it is compared with (status, headers, body,
 * trailers), and the --filter expressions that select entries.
 */
import { readFile, stat } from 'node:fs/promises';
import zlib from 'node:zlib';
import { TsmError } from '../../protocol/errors.js';
import { type Har, type HarEntry, type HarTsmirrorInfo, harProblems } from '../../common/har.js';
import { isHeaderName, isMethodName, wholeMatchPattern, type WholeMatch } from '../../common/http-filter.js';

/** JSON.parse needs the file as one string; V8 strings end near 512 MiB. */
export const MAX_HAR_BYTES = 500 * 1024 * 1024;

/** A recorded body: its bytes, or only its sha256 and size (above --max-body), or unknown. */
export type RecordedBody =
  | { kind: 'bytes'; bytes: Buffer }
  | { kind: 'hash'; sha256: string; size: number }
  | { kind: 'unknown' };

export interface ReplayEntry {
  /** Position in the file (0-based); shown as #N+1. */
  index: number;
  /** Entries with the same id are replayed in order on one connection. */
  connection: string;
  /** When the recorded request started (ms since the epoch; NaN if unreadable). */
  started: number;
  method: string;
  /** Path and query, as sent. */
  target: string;
  /** The path without the query (what --filter path= matches). */
  path: string;
  /** The Host header (HTTP/1.1) or :authority (HTTP/2) to send. */
  authority: string;
  http2: boolean;
  /** Request headers as recorded, without pseudo-headers (names as recorded). */
  headers: [string, string][];
  /** The request body; undefined when none. */
  body: Buffer | undefined;
  /** Why this entry cannot be sent (its body was kept only as a hash, its URL is unreadable). */
  unsendable?: string;
  /** The pod port it was recorded on, if known (entry._port, or the URL's explicit port). */
  port: number | undefined;
  recorded: {
    status: number;
    headers: [string, string][];
    trailers: [string, string][] | undefined;
    body: RecordedBody;
    mimeType: string;
    /** Recorded duration in ms (entry.time). */
    ms: number;
  };
}

export interface LoadedHar {
  entries: ReplayEntry[];
  info: HarTsmirrorInfo | undefined;
  creator: string;
}

function decodeBody(text: string | undefined, encoding: string | undefined): Buffer | undefined {
  if (text === undefined) return undefined;
  return encoding === 'base64' ? Buffer.from(text, 'base64') : Buffer.from(text, 'utf8');
}

/** Past this, a recorded compressed body is compared as it is (a bomb in the file costs nothing). */
const MAX_DECODED_BODY = 256 * 1024 * 1024;

/**
 * A recorded body under its Content-Encoding, decoded (tsmirror record keeps bodies as on
 * the wire; browsers keep them decoded: what does not decode is taken as already decoded).
 */
function contentDecoded(body: Buffer | undefined, encoding: string | undefined): Buffer | undefined {
  const enc = encoding?.trim().toLowerCase();
  if (body === undefined || body.length === 0 || !enc || enc === 'identity') return body;
  const opts = { maxOutputLength: MAX_DECODED_BODY };
  try {
    if (enc === 'gzip' || enc === 'x-gzip') return zlib.gunzipSync(body, opts);
    if (enc === 'deflate') return zlib.inflateSync(body, opts);
    if (enc === 'br') return zlib.brotliDecompressSync(body, opts);
  } catch {
    // not compressed after all (or cut): compared as recorded
  }
  return body;
}

function isHttp2(version: string): boolean {
  return /^(HTTP\/2(\.0)?|h2c?)$/i.test(version.trim());
}

function entryOf(e: HarEntry, index: number): ReplayEntry {
  const rq = e.request;
  const rs = e.response;
  const headers = rq.headers.filter((h) => !h.name.startsWith(':')).map((h): [string, string] => [h.name, h.value]);
  const pseudo = new Map(rq.headers.filter((h) => h.name.startsWith(':')).map((h) => [h.name.toLowerCase(), h.value]));
  let target = '/';
  let path = '/';
  let urlHost = '';
  let urlPort: number | undefined;
  let unsendable: string | undefined;
  try {
    const url = new URL(rq.url);
    target = `${url.pathname}${url.search}`;
    path = url.pathname;
    urlHost = url.host;
    if (url.port !== '') urlPort = Number(url.port);
  } catch {
    unsendable = `its URL "${rq.url.slice(0, 200)}" is not a valid URL`;
  }
  const hostHeader = headers.find(([n]) => n.toLowerCase() === 'host')?.[1];
  const authority = pseudo.get(':authority') ?? hostHeader ?? urlHost;
  let body: Buffer | undefined;
  const pd = rq.postData;
  if (pd) {
    body = decodeBody(pd.text, pd.encoding);
    if (body === undefined && Array.isArray(pd.params) && pd.params.length > 0) {
      body = Buffer.from(new URLSearchParams(pd.params.map((p): [string, string] => [String(p?.name), String(p?.value)])).toString());
    }
    if (body === undefined && pd._sha256) unsendable ??= `its request body (${rq.bodySize} bytes) was recorded only as its sha256 (above --max-body)`;
  }
  const c = rs.content;
  const contentEncoding = rs.headers.find((h) => h.name.toLowerCase() === 'content-encoding')?.value;
  const recordedBytes = contentDecoded(decodeBody(c.text, c.encoding), contentEncoding);
  const recordedBody: RecordedBody = recordedBytes !== undefined
    ? { kind: 'bytes', bytes: recordedBytes }
    : c._sha256 ? { kind: 'hash', sha256: c._sha256, size: c.size }
      : c.size === 0 ? { kind: 'bytes', bytes: Buffer.alloc(0) } : { kind: 'unknown' };
  const port = e._port ?? urlPort;
  return {
    index,
    connection: e.connection ?? `#entry-${index}`,
    started: Date.parse(e.startedDateTime),
    method: rq.method,
    target,
    path,
    authority,
    http2: isHttp2(rq.httpVersion),
    headers,
    body,
    ...(unsendable ? { unsendable } : {}),
    port,
    recorded: {
      status: rs.status,
      headers: rs.headers.filter((h) => !h.name.startsWith(':')).map((h): [string, string] => [h.name, h.value]),
      trailers: rs._trailers?.map((h): [string, string] => [h.name, h.value]),
      body: recordedBody,
      mimeType: c.mimeType,
      ms: e.time,
    },
  };
}

/** Reads and checks FILE; a usage error saying what is wrong and where. */
export async function loadHar(file: string): Promise<LoadedHar> {
  let size: number;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new TsmError('TSM_ERR_USAGE', `${file} is not a file`);
    size = st.size;
  } catch (err) {
    if (err instanceof TsmError) throw err;
    throw new TsmError('TSM_ERR_USAGE', `cannot read ${file}: ${(err as Error).message}`);
  }
  if (size > MAX_HAR_BYTES) {
    throw new TsmError('TSM_ERR_USAGE', `${file} is ${Math.round(size / 1048576)} MiB; replay reads files up to ${MAX_HAR_BYTES / 1048576} MiB`, { hint: 'record less (--duration, --max-requests, --sample, --max-body) or split the file' });
  }
  let har: unknown;
  try {
    har = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new TsmError('TSM_ERR_USAGE', `${file} is not JSON: ${(err as Error).message}`, { hint: 'give a HAR file, as written by tsmirror record or saved from a browser' });
  }
  const problems = harProblems(har, 5);
  if (problems.length > 0) {
    throw new TsmError('TSM_ERR_USAGE', `${file} is not a usable HAR 1.2 file: ${problems.join('; ')}`);
  }
  const log = (har as Har).log;
  return { entries: log.entries.map(entryOf), info: log._tsmirror, creator: log.creator.name };
}

/** One --filter expression, compiled. */
export interface EntryFilter {
  source: string;
  test(e: ReplayEntry): boolean;
}

/** A shell-style glob (`*` any characters, `?` one) as a whole-match RE2 pattern. */
function globPattern(glob: string, label: string): WholeMatch {
  const re = glob.replace(/[\\^$.|+()[\]{}]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return wholeMatchPattern(re, label);
}

export const FILTER_SYNTAX = `FIELD=VALUE, FIELD!=VALUE (VALUE a glob: * any characters, ? one; commas separate alternatives),
FIELD~REGEX, FIELD!~REGEX (RE2, matching the whole value); FIELD is method, path (without the query),
status (the recorded status; 5xx style allowed) or header:NAME; header:NAME alone: the header is present`;

/**
 * Parses --filter EXPR: `method=POST`, `method=GET,HEAD`, `path=/api/*`, `path~/v[12]/.*`,
 * `header:x-dev=alice`, `header:x-dev` (present), `status=5??` (the recorded status),
 * negated with `!=` / `!~`.
 */
export function parseFilter(source: string): EntryFilter {
  const usage = (why: string): TsmError => new TsmError('TSM_ERR_USAGE', `--filter "${source.slice(0, 100)}": ${why}`, { hint: `write ${FILTER_SYNTAX}; e.g. --filter method=POST --filter 'path=/api/*' --filter header:x-dev=alice` });
  if (source.length > 600) throw usage('too long');
  const m = /^(method|path|status|header:([^=!~]+))(?:(!?=|!?~)(.*))?$/s.exec(source.trim());
  if (!m) throw usage('not FIELD=VALUE, FIELD~REGEX or header:NAME');
  const field = m[1]!;
  const headerName = m[2]?.trim();
  const op = m[3];
  const value = m[4] ?? '';
  if (headerName !== undefined && !isHeaderName(headerName)) throw usage(`"${headerName}" is not a header name`);
  if (op === undefined) {
    if (headerName === undefined) throw usage(`${field} needs =VALUE or ~REGEX`);
    const lower = headerName.toLowerCase();
    return { source, test: (e) => e.headers.some(([n]) => n.toLowerCase() === lower) };
  }
  const negate = op.startsWith('!');
  let match: WholeMatch;
  if (op.endsWith('~')) {
    match = wholeMatchPattern(value, `--filter ${field}`);
  } else {
    const alternatives = value.split(',').map((v) => v.trim());
    if (field === 'method') {
      for (const a of alternatives) if (!isMethodName(a)) throw usage(`"${a}" is not a method`);
    }
    if (field === 'status') {
      for (const a of alternatives) if (!/^[1-5][0-9x?]{2}$/i.test(a)) throw usage(`"${a}" is not a status (like 404 or 5xx)`);
    }
    const parts = alternatives.map((a) => (field === 'status' ? a.toLowerCase().replace(/x/g, '?') : a));
    const pattern = parts.map((p) => globPattern(p, `--filter ${field}`).source).join('|');
    match = wholeMatchPattern(field === 'method' ? `(?i)(?:${pattern})` : `(?:${pattern})`, `--filter ${field}`);
  }
  const valuesOf = (e: ReplayEntry): string[] => {
    if (field === 'method') return [e.method];
    if (field === 'path') return [e.path];
    if (field === 'status') return [String(e.recorded.status)];
    const lower = headerName!.toLowerCase();
    return e.headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
  };
  return {
    source,
    test: (e) => {
      const hit = valuesOf(e).some((v) => match.test(v));
      return negate ? !hit : hit;
    },
  };
}

/** Entries passing every filter (all must match). */
export function selectEntries(entries: ReplayEntry[], filters: EntryFilter[]): ReplayEntry[] {
  return entries.filter((e) => filters.every((f) => f.test(e)));
}
