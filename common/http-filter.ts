/**
 * The rules of an HTTP filter (the flags --http-header, --http-path, --http-method; the
 * `filter` of `port.subscribe`), one definition for both sides: the CLI checks the flags
 * before a session opens, the agent checks what comes over the wire. Each side words its
 * own messages (flag names there, "the … filter" here); what is allowed is decided here.
 */
import { createRequire } from 'node:module';
import { TsmError } from '../protocol/errors.js';

/** A pattern (a header value or the path) longer than this is refused. */
export const MAX_FILTER_PATTERN = 512;
/** At most this many header filters in one filter. */
export const MAX_HEADER_FILTERS = 32;

/** What to do when a port is already stolen (TSM_ERR_PORT_CONFLICT). */
export const PORT_CONFLICT_HINT = 'steal a filtered slice (--http-header, --http-path, --http-method), use --mirror, or ask that developer to stop';

/** A header name is an RFC 9110 token. */
export function isHeaderName(name: string): boolean {
  return /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name);
}

/** A method filter is letters only (compared in upper case). */
export function isMethodName(method: string): boolean {
  return /^[A-Za-z]{1,20}$/.test(method);
}

/** Refuses more header filters than an agent matches per request. */
export function checkHeaderFilterCount(count: number): void {
  if (count > MAX_HEADER_FILTERS) throw new TsmError('TSM_ERR_USAGE', `at most ${MAX_HEADER_FILTERS} header filters`);
}

/** A compiled filter pattern: `test` says whether a whole value matches. */
export interface WholeMatch {
  readonly source: string;
  test(value: string): boolean;
}

type Re2 = typeof import('re2js').RE2JS;
let re2: Re2 | undefined;
/**
 * RE2 (re2js, pure JavaScript): matching takes time linear in the input, so no pattern a
 * client sends can stall the agent's event loop (a backtracking engine takes hours on
 * `/(a+)+` against `/aaaa…a!`). Loaded on first use: most sessions have no filter.
 */
function engine(): Re2 {
  re2 ??= (createRequire(import.meta.url)('re2js') as typeof import('re2js')).RE2JS;
  return re2;
}

/**
 * `source` as a pattern that matches a whole value ("alice" does not match "alicex"), in
 * RE2 syntax (no backreferences or lookaround). A usage error naming `label` when it is
 * too long or does not compile.
 */
export function wholeMatchPattern(source: string, label: string): WholeMatch {
  if (source.length > MAX_FILTER_PATTERN) throw new TsmError('TSM_ERR_USAGE', `${label} is longer than ${MAX_FILTER_PATTERN} characters`);
  const RE2JS = engine();
  try {
    const pattern = RE2JS.compile(source);
    return { source, test: (value) => pattern.matches(value) };
  } catch (err) {
    throw new TsmError('TSM_ERR_USAGE', `${label} "${source}" is not a valid regular expression: ${(err as Error).message} (RE2 syntax: no backreferences or lookaround)`);
  }
}

/** Deterministic pseudo-random probes (the same on both sides and on every run). */
function probes(seed: number, count: number, alphabet: string, prefix: string): string[] {
  let x = seed;
  const next = (): number => {
    x = (x * 1103515245 + 12345) >>> 0;
    return x >>> 8;
  };
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let s = prefix;
    for (let n = 1 + (next() % 40); n > 0; n--) s += alphabet[next() % alphabet.length];
    out.push(s);
  }
  return out;
}
const PRINTABLE = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&\'()*+,;=:@/% ';
const PATH_PROBES = ['/', '/index.html', '/api/v1/items/42', '/healthz', ...probes(7, 64, PRINTABLE, '/')];
const VALUE_PROBES = ['', 'alice', '1', 'application/json', 'Mozilla/5.0 (X11; Linux x86_64)', ...probes(11, 64, PRINTABLE, '')];

/**
 * True when a pattern lets through most of what a client could send: it matches half or
 * more of a fixed set of realistic and random probes (`.*`, `/.*`, `[^Q]*`…). Such a part
 * does not narrow a filter; a filter none of whose parts narrows is a steal of everything.
 */
export function matchesNearlyEverything(pattern: WholeMatch, kind: 'path' | 'value'): boolean {
  const sample = kind === 'path' ? PATH_PROBES : VALUE_PROBES;
  let hits = 0;
  for (const p of sample) if (pattern.test(p)) hits++;
  return hits * 2 >= sample.length;
}

/**
 * Whether a filter selects a slice of the traffic: a method, a path pattern or a header
 * value pattern that does not match nearly everything. An empty filter, `--http-path '.*'`
 * or `--http-header 'x-dev: .*'` does not: it counts as a steal of all traffic (policy,
 * port conflicts) wherever it is checked.
 */
export function filterNarrows(parts: { path: WholeMatch | undefined; headerValues: WholeMatch[]; method: string | undefined }): boolean {
  if (parts.method !== undefined) return true;
  if (parts.path && !matchesNearlyEverything(parts.path, 'path')) return true;
  return parts.headerValues.some((v) => !matchesNearlyEverything(v, 'value'));
}
