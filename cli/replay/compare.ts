/**
 * How a replayed answer differs from the recorded one: the status, the headers (without
 * those that differ on every run or per hop), the trailers, and the body: JSON compared as
 * data (each differing field named by its path), other bodies byte for byte, or by sha256
 * when the recording kept only that. A recorded value that is the redaction marker matches
 * anything.
 */
import { createHash } from 'node:crypto';
import { REDACTED_MARKER } from '../../common/har.js';
import { TsmError } from '../../protocol/errors.js';
import { wholeMatchPattern, type WholeMatch } from '../../common/http-filter.js';
import { unifiedDiff } from './diff.js';
import type { RecordedBody } from './entries.js';

/** Headers never compared: they differ on every run (Date), per server, or per hop. */
export const IGNORED_HEADERS = new Set([
  'date', 'server', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te',
  'trailer', 'proxy-authenticate', 'content-length', 'http2-settings', 'alt-svc',
]);

export interface Difference {
  kind: 'status' | 'header' | 'trailer' | 'body';
  /** The header name, or the JSON path of a body field ("$.items[2].price"); absent for a status or whole body. */
  at?: string;
  /** Recorded and replayed values (JSON values for body fields); undefined when absent on that side. */
  recorded?: unknown;
  replay?: unknown;
  /** One line for people. */
  text: string;
}

export interface CompareOptions {
  ignoreHeaders: WholeMatch[];
  ignoreJsonPaths: JsonPathPattern[];
  /** At most this many field differences per body. */
  maxFieldDiffs?: number;
}

export interface Answer {
  status: number;
  headers: [string, string][];
  trailers: [string, string][];
  /** The body, decoded from its Content-Encoding; undefined when larger than kept. */
  body: Buffer | undefined;
  bodySha256: string;
  /** The sha256 of the body as it came (before Content-Encoding was undone); = bodySha256 when not encoded. */
  rawSha256: string;
  bodySize: number;
}

export interface Comparison {
  differences: Difference[];
  /** A unified diff of the bodies, when they differ and both are text. */
  bodyDiff?: string;
}

// ---------------------------------------------------------------------------- JSON paths

type Segment = { key: string } | { index: number } | { any: true } | { deep: true };
export interface JsonPathPattern {
  source: string;
  segments: Segment[];
}

/**
 * --ignore-json-path: `$.a.b`, `$.items[*].id`, `$.items[0]`, `$["odd key"]`, `$..updatedAt`
 * (at any depth), `$.*`; the leading `$` may be left out (`items[*].id`).
 */
export function parseJsonPath(source: string): JsonPathPattern {
  const bad = (why: string): TsmError => new TsmError('TSM_ERR_USAGE', `--ignore-json-path "${source.slice(0, 100)}": ${why}`, { hint: 'write a path like $.user.updatedAt, $.items[*].id or $..requestId (any depth)' });
  if (source.length > 500) throw bad('too long');
  let s = source.trim();
  if (s.startsWith('$')) s = s.slice(1);
  else if (s !== '' && !s.startsWith('.') && !s.startsWith('[')) s = `.${s}`;
  const segments: Segment[] = [];
  let i = 0;
  while (i < s.length) {
    if (s.startsWith('..', i)) {
      segments.push({ deep: true });
      i += 2;
      if (s[i] === '[') continue;
      const m = /^(\*|[^.[\]]+)/.exec(s.slice(i));
      if (!m) throw bad(`a name must follow ".." at ${i + 1}`);
      segments.push(m[1] === '*' ? { any: true } : { key: m[1]! });
      i += m[1]!.length;
    } else if (s[i] === '.') {
      const m = /^(\*|[^.[\]]+)/.exec(s.slice(i + 1));
      if (!m) throw bad(`a name must follow "." at ${i + 1}`);
      segments.push(m[1] === '*' ? { any: true } : { key: m[1]! });
      i += 1 + m[1]!.length;
    } else if (s[i] === '[') {
      const rest = s.slice(i);
      const m = /^\[(\*|\d+|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\]/.exec(rest);
      if (!m) throw bad(`expected [N], [*] or ["name"] at ${i + 1}`);
      const inner = m[1]!;
      if (inner === '*') segments.push({ any: true });
      else if (/^\d+$/.test(inner)) segments.push({ index: Number(inner) });
      else segments.push({ key: inner.slice(1, -1).replace(/\\(.)/g, '$1') });
      i += m[0].length;
    } else {
      throw bad(`unexpected "${s[i]}" at ${i + 1}`);
    }
  }
  if (segments.length === 0) throw bad('the whole body cannot be ignored this way (use --ignore-header or --filter)');
  return { source, segments };
}

function segmentMatches(seg: Segment, step: string | number): boolean {
  if ('any' in seg) return true;
  if ('key' in seg) return typeof step === 'string' ? seg.key === step : seg.key === String(step);
  if ('index' in seg) return step === seg.index;
  return false;
}

/** Whether a concrete path (keys and indexes from the root) matches the pattern whole. */
export function jsonPathMatches(pattern: JsonPathPattern, path: (string | number)[]): boolean {
  const segs = pattern.segments;
  const memo = new Map<number, boolean>();
  const go = (si: number, pi: number): boolean => {
    const key = si * (path.length + 1) + pi;
    const had = memo.get(key);
    if (had !== undefined) return had;
    let r: boolean;
    if (si === segs.length) r = pi === path.length;
    else {
      const seg = segs[si]!;
      if ('deep' in seg) {
        r = false;
        for (let p = pi; p <= path.length && !r; p++) r = go(si + 1, p);
      } else r = pi < path.length && segmentMatches(seg, path[pi]!) && go(si + 1, pi + 1);
    }
    memo.set(key, r);
    return r;
  };
  return go(0, 0);
}

/** `$.items[2]["odd key"]` */
export function formatJsonPath(path: (string | number)[]): string {
  return `$${path.map((p) => (typeof p === 'number' ? `[${p}]` : /^[A-Za-z_$][\w$-]*$/.test(p) ? `.${p}` : `[${JSON.stringify(p)}]`)).join('')}`;
}

function short(v: unknown): string {
  if (v === undefined) return '(absent)';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 120 ? `${s.slice(0, 117)}…` : s;
}

function typeOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** The fields where two JSON values differ, in document order, at most `max`. */
export function jsonDifferences(recorded: unknown, replay: unknown, ignore: JsonPathPattern[], max = 50): Difference[] {
  const out: Difference[] = [];
  let more = 0;
  const push = (path: (string | number)[], rec: unknown, rep: unknown): void => {
    if (out.length >= max) {
      more++;
      return;
    }
    const at = formatJsonPath(path);
    const text = rec === undefined ? `body ${at}: not recorded, replay has ${short(rep)}`
      : rep === undefined ? `body ${at}: missing in the replay (recorded ${short(rec)})`
        : `body ${at}: ${short(rec)} → ${short(rep)}`;
    out.push({ kind: 'body', at, ...(rec === undefined ? {} : { recorded: rec }), ...(rep === undefined ? {} : { replay: rep }), text });
  };
  const walk = (rec: unknown, rep: unknown, path: (string | number)[], depth: number): void => {
    if (path.length > 0 && ignore.some((p) => jsonPathMatches(p, path))) return;
    if (rec === REDACTED_MARKER) return; // redacted when recorded: anything matches
    if (depth > 200) {
      if (JSON.stringify(rec) !== JSON.stringify(rep)) push(path, rec, rep);
      return;
    }
    const tr = typeOf(rec);
    if (tr !== typeOf(rep)) {
      push(path, rec, rep);
      return;
    }
    if (tr === 'array') {
      const a = rec as unknown[];
      const b = rep as unknown[];
      for (let i = 0; i < Math.max(a.length, b.length); i++) {
        if (i >= a.length) push([...path, i], undefined, b[i]);
        else if (i >= b.length) push([...path, i], a[i], undefined);
        else walk(a[i], b[i], [...path, i], depth + 1);
      }
    } else if (tr === 'object') {
      const a = rec as Record<string, unknown>;
      const b = rep as Record<string, unknown>;
      for (const k of Object.keys(a)) {
        if (!Object.hasOwn(b, k)) {
          if (!ignore.some((p) => jsonPathMatches(p, [...path, k])) && a[k] !== REDACTED_MARKER) push([...path, k], a[k], undefined);
        } else walk(a[k], b[k], [...path, k], depth + 1);
      }
      for (const k of Object.keys(b)) {
        if (!Object.hasOwn(a, k) && !ignore.some((p) => jsonPathMatches(p, [...path, k]))) push([...path, k], undefined, b[k]);
      }
    } else if (rec !== rep) {
      push(path, rec, rep);
    }
  };
  walk(recorded, replay, [], 0);
  if (more > 0) out.push({ kind: 'body', text: `body: ${more} more differing fields` });
  return out;
}

// ---------------------------------------------------------------------------- headers

/** --ignore-header REGEX: header names matching it whole (any case) are not compared. */
export function parseIgnoreHeader(source: string): WholeMatch {
  return wholeMatchPattern(`(?i)(?:${source})`, '--ignore-header');
}

function groupHeaders(headers: [string, string][], skip: (lower: string) => boolean): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const [n, v] of headers) {
    const lower = n.toLowerCase();
    if (lower.startsWith(':') || skip(lower)) continue;
    const list = m.get(lower);
    if (list) list.push(v);
    else m.set(lower, [v]);
  }
  return m;
}

function compareFields(kind: 'header' | 'trailer', recorded: [string, string][], replay: [string, string][], skip: (lower: string) => boolean): Difference[] {
  const rec = groupHeaders(recorded, skip);
  const rep = groupHeaders(replay, skip);
  const out: Difference[] = [];
  const show = (vs: string[]): string => (vs.length === 1 ? JSON.stringify(vs[0]) : JSON.stringify(vs));
  for (const [name, rv] of rec) {
    const pv = rep.get(name);
    if (!pv) {
      out.push({ kind, at: name, recorded: rv.join(', '), text: `${kind} ${name}: missing in the replay (recorded ${show(rv)})` });
      continue;
    }
    const same = rv.length === pv.length && rv.every((v, i) => v === REDACTED_MARKER || v === pv[i]);
    if (!same) out.push({ kind, at: name, recorded: rv.join(', '), replay: pv.join(', '), text: `${kind} ${name}: ${show(rv)} → ${show(pv)}` });
  }
  for (const [name, pv] of rep) {
    if (!rec.has(name)) out.push({ kind, at: name, replay: pv.join(', '), text: `${kind} ${name}: not recorded, replay sent ${show(pv)}` });
  }
  return out;
}

// ---------------------------------------------------------------------------- bodies

function headerValue(headers: [string, string][], name: string): string | undefined {
  return headers.find(([n]) => n.toLowerCase() === name)?.[1];
}

export function isJsonType(mime: string | undefined): boolean {
  return mime !== undefined && /^[^;]*[/+]json\s*(;|$)/i.test(mime.trim());
}

function parseJson(buf: Buffer): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(buf.toString('utf8')) };
  } catch {
    return { ok: false };
  }
}

/** Text worth diffing line by line: valid UTF-8 without NULs. */
function asText(buf: Buffer): string | undefined {
  if (buf.includes(0)) return undefined;
  const s = buf.toString('utf8');
  return s.includes('\uFFFD') && !buf.includes(Buffer.from('\uFFFD')) ? undefined : s;
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

function compareBodies(recorded: RecordedBody, recordedMime: string, recordedHeaders: [string, string][], answer: Answer, opts: CompareOptions, label: { from: string; to: string }): Comparison {
  if (recorded.kind === 'unknown') return { differences: [] }; // not in the file (browsers may leave it out)
  if (recorded.kind === 'hash') {
    // A recording hashes the body as on the wire (compressed, if it was).
    if (recorded.sha256 === answer.bodySha256 || recorded.sha256 === answer.rawSha256) return { differences: [] };
    return { differences: [{ kind: 'body', recorded: `sha256:${recorded.sha256}`, replay: `sha256:${answer.bodySha256}`, text: `body: sha256 differs (recorded ${recorded.size} bytes, kept only as its hash; replay ${answer.bodySize} bytes)` }] };
  }
  const rec = recorded.bytes;
  if (answer.body === undefined) {
    if (sha256(rec) === answer.bodySha256) return { differences: [] };
    return { differences: [{ kind: 'body', text: `body differs (recorded ${rec.length} bytes, replay ${answer.bodySize} bytes, too large to compare in detail)` }] };
  }
  const rep = answer.body;
  const json = isJsonType(recordedMime) || isJsonType(headerValue(recordedHeaders, 'content-type')) || isJsonType(headerValue(answer.headers, 'content-type'));
  if (json) {
    const a = parseJson(rec);
    const b = parseJson(rep);
    if (a.ok && b.ok) {
      const differences = jsonDifferences(a.value, b.value, opts.ignoreJsonPaths, opts.maxFieldDiffs);
      if (differences.length === 0) return { differences };
      const bodyDiff = unifiedDiff(`${JSON.stringify(a.value, null, 2)}\n`, `${JSON.stringify(b.value, null, 2)}\n`, label);
      return { differences, bodyDiff };
    }
    if (a.ok && !b.ok) {
      const t = asText(rep);
      return { differences: [{ kind: 'body', text: `body: recorded JSON, the replay's is not JSON (${rep.length} bytes)` }], ...(t === undefined ? {} : { bodyDiff: unifiedDiff(rec.toString('utf8'), t, label) }) };
    }
  }
  if (rec.equals(rep)) return { differences: [] };
  const ta = asText(rec);
  const tb = asText(rep);
  if (ta !== undefined && tb !== undefined) {
    return { differences: [{ kind: 'body', text: `body differs (recorded ${rec.length} bytes, replay ${rep.length} bytes)` }], bodyDiff: unifiedDiff(ta, tb, label) };
  }
  return { differences: [{ kind: 'body', text: `body differs (binary; recorded ${rec.length} bytes, replay ${rep.length} bytes, first difference at byte ${firstDifference(rec, rep)})` }] };
}

/** Everything that differs between the recorded answer and the replayed one. */
export function compareAnswer(
  recorded: { status: number; headers: [string, string][]; trailers: [string, string][] | undefined; body: RecordedBody; mimeType: string },
  answer: Answer,
  opts: CompareOptions,
  label = { from: 'recorded', to: 'replay' },
): Comparison {
  const differences: Difference[] = [];
  if (recorded.status !== answer.status) differences.push({ kind: 'status', recorded: recorded.status, replay: answer.status, text: `status ${recorded.status} → ${answer.status}` });
  const skip = (lower: string): boolean => IGNORED_HEADERS.has(lower) || opts.ignoreHeaders.some((p) => p.test(lower));
  differences.push(...compareFields('header', recorded.headers, answer.headers, skip));
  // Trailers: compared when the recording has them (a file from another tool may not).
  if (recorded.trailers !== undefined) differences.push(...compareFields('trailer', recorded.trailers, answer.trailers, skip));
  const body = compareBodies(recorded.body, recorded.mimeType, recorded.headers, answer, opts, label);
  differences.push(...body.differences);
  return { differences, ...(body.bodyDiff ? { bodyDiff: body.bodyDiff } : {}) };
}
