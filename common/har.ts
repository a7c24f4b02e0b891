/**
 * The HAR file shared by `tsmirror record` (writes it) and `tsmirror replay` (reads it):
 * standard HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) plus a few fields
 * prefixed `_` (allowed by the spec for custom data). Files from browsers and other tools
 * lack the tsmirror fields; readers treat each such entry as its own connection.
 *
 * tsmirror conventions:
 * - `log.creator = { name: "tsmirror", version }`, `log._tsmirror` describes the recording.
 * - `entry.connection` is a string id unique per client connection (replay keeps the order
 *   of the entries of one connection); `entry._clientAddress` is the client's "ip:port";
 *   `entry.serverIPAddress` is the pod's address.
 * - `request.url` is `http://<Host header, or pod ip:port><path>`; `httpVersion` is
 *   "HTTP/1.1" or "HTTP/2".
 * - A body that is not UTF-8 is base64 (`encoding: "base64"`). A body above --max-body has
 *   no `text`, but `_sha256` (hex of the whole body) and its size.
 * - `response._trailers` holds HTTP trailers (gRPC status) as name/value pairs.
 * - Redacted header values and JSON body fields are replaced by REDACTED_MARKER.
 */

/** What a redacted header value or JSON body field is replaced by. */
export const REDACTED_MARKER = '[redacted by tsmirror]';
/** `log.creator.name` of files written by tsmirror. */
export const HAR_CREATOR_NAME = 'tsmirror';
/** `log.version`. */
export const HAR_VERSION = '1.2';

export interface HarNameValue {
  name: string;
  value: string;
  comment?: string;
}

export interface HarPostData {
  mimeType: string;
  text?: string;
  /** "base64" when `text` is base64 (a body that is not UTF-8). */
  encoding?: string;
  params?: HarNameValue[];
  comment?: string;
  /** Hex sha256 of the whole body when it was above --max-body (then no `text`). */
  _sha256?: string;
  /** The body's size in bytes (always set by tsmirror; `request.bodySize` too). */
  _size?: number;
}

export interface HarRequest {
  method: string;
  url: string;
  httpVersion: string;
  cookies: HarNameValue[];
  headers: HarNameValue[];
  queryString: HarNameValue[];
  postData?: HarPostData;
  headersSize: number;
  bodySize: number;
  comment?: string;
}

export interface HarContent {
  /** Bytes of the (decoded) body. */
  size: number;
  compression?: number;
  mimeType: string;
  text?: string;
  encoding?: string;
  comment?: string;
  /** Hex sha256 of the whole body when it was above --max-body (then no `text`). */
  _sha256?: string;
}

export interface HarResponse {
  status: number;
  statusText: string;
  httpVersion: string;
  cookies: HarNameValue[];
  headers: HarNameValue[];
  content: HarContent;
  redirectURL: string;
  headersSize: number;
  bodySize: number;
  comment?: string;
  /** HTTP trailers (e.g. grpc-status), in order. */
  _trailers?: HarNameValue[];
}

export interface HarTimings {
  blocked?: number;
  dns?: number;
  connect?: number;
  send: number;
  wait: number;
  receive: number;
  ssl?: number;
  comment?: string;
}

export interface HarEntry {
  pageref?: string;
  startedDateTime: string;
  /** Milliseconds from the request's first byte to the response's last. */
  time: number;
  request: HarRequest;
  response: HarResponse;
  cache: Record<string, unknown>;
  timings: HarTimings;
  serverIPAddress?: string;
  /** Unique per client connection; entries sharing it are replayed in order on one connection. */
  connection?: string;
  comment?: string;
  /** "ip:port" of the client. */
  _clientAddress?: string;
  /**
   * The pod port the exchange was recorded on (the URL names the Host header, which may
   * not carry it). Replay with `-- command` sends the entry to 127.0.0.1:<_port>; without
   * it, the URL's explicit port if it is a recorded port, else log._tsmirror.ports[0].
   */
  _port?: number;
}

/** `log._tsmirror`: what was recorded, and how. */
export interface HarTsmirrorInfo {
  /** The target as given ("deployment/api", "pod/x"); replay starts a command with it. */
  target?: string;
  namespace?: string;
  /** The recorded ports (the program listens on these locally when replayed with `-- cmd`). */
  ports?: number[];
  /** Names of the headers whose values were replaced by REDACTED_MARKER. */
  redacted?: string[];
  /** JSON paths masked in bodies. */
  redactedJsonPaths?: string[];
  /** The --sample percentage (100 when every exchange was kept). */
  sample?: number;
  [key: string]: unknown;
}

export interface HarLog {
  version: string;
  creator: { name: string; version: string; comment?: string };
  browser?: { name: string; version: string; comment?: string };
  pages?: unknown[];
  entries: HarEntry[];
  comment?: string;
  _tsmirror?: HarTsmirrorInfo;
}

export interface Har {
  log: HarLog;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkNameValues(v: unknown, where: string, problems: string[]): void {
  if (!Array.isArray(v)) {
    problems.push(`${where} is not an array`);
    return;
  }
  v.forEach((nv, i) => {
    if (!isObj(nv) || typeof nv.name !== 'string' || typeof nv.value !== 'string') problems.push(`${where}[${i}] is not {name, value} strings`);
  });
}

function checkBody(v: unknown, where: string, problems: string[]): void {
  if (!isObj(v)) {
    problems.push(`${where} is not an object`);
    return;
  }
  if (typeof v.mimeType !== 'string') problems.push(`${where}.mimeType is not a string`);
  if (v.text !== undefined && typeof v.text !== 'string') problems.push(`${where}.text is not a string`);
  if (v.encoding !== undefined && typeof v.encoding !== 'string') problems.push(`${where}.encoding is not a string`);
  if (v._sha256 !== undefined && (typeof v._sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(v._sha256))) problems.push(`${where}._sha256 is not 64 hex digits`);
}

/**
 * Checks the shape a reader relies on (the HAR 1.2 required fields of log, entries, request
 * and response, and the types of the tsmirror fields). Returns the problems found (at most
 * `limit`), each naming where ("log.entries[3].request.url is not a string"); empty when
 * the file is usable. Lenient on what the spec requires but readers do not use (cookies,
 * cache, headersSize), so files from other tools pass.
 */
export function harProblems(har: unknown, limit = 20): string[] {
  const problems: string[] = [];
  if (!isObj(har) || !isObj(har.log)) return ['the top level is not {"log": {...}}'];
  const log = har.log;
  if (typeof log.version !== 'string') problems.push('log.version is not a string');
  if (!isObj(log.creator) || typeof log.creator.name !== 'string') problems.push('log.creator.name is not a string');
  if (log._tsmirror !== undefined && !isObj(log._tsmirror)) problems.push('log._tsmirror is not an object');
  if (!Array.isArray(log.entries)) {
    problems.push('log.entries is not an array');
    return problems;
  }
  for (let i = 0; i < log.entries.length && problems.length < limit; i++) {
    const e: unknown = log.entries[i];
    const at = `log.entries[${i}]`;
    if (!isObj(e)) {
      problems.push(`${at} is not an object`);
      continue;
    }
    if (typeof e.startedDateTime !== 'string') problems.push(`${at}.startedDateTime is not a string`);
    if (typeof e.time !== 'number' || !Number.isFinite(e.time)) problems.push(`${at}.time is not a number`);
    if (e.connection !== undefined && typeof e.connection !== 'string') problems.push(`${at}.connection is not a string`);
    if (e._port !== undefined && !(Number.isInteger(e._port) && (e._port as number) >= 1 && (e._port as number) <= 65535)) problems.push(`${at}._port is not a port`);
    const rq = e.request;
    if (!isObj(rq)) {
      problems.push(`${at}.request is not an object`);
    } else {
      if (typeof rq.method !== 'string') problems.push(`${at}.request.method is not a string`);
      if (typeof rq.url !== 'string') problems.push(`${at}.request.url is not a string`);
      if (typeof rq.httpVersion !== 'string') problems.push(`${at}.request.httpVersion is not a string`);
      checkNameValues(rq.headers, `${at}.request.headers`, problems);
      if (rq.postData !== undefined) checkBody(rq.postData, `${at}.request.postData`, problems);
    }
    const rs = e.response;
    if (!isObj(rs)) {
      problems.push(`${at}.response is not an object`);
    } else {
      if (typeof rs.status !== 'number' || !Number.isInteger(rs.status)) problems.push(`${at}.response.status is not an integer`);
      checkNameValues(rs.headers, `${at}.response.headers`, problems);
      checkBody(rs.content, `${at}.response.content`, problems);
      if (rs._trailers !== undefined) checkNameValues(rs._trailers, `${at}.response._trailers`, problems);
    }
  }
  return problems.slice(0, limit);
}
