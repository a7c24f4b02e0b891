/**
 * The rules of an HTTP filter (the flags --http-header, --http-path, --http-method; the
 * `filter` of `port.subscribe`), one definition for both sides: the CLI checks the flags
 * before a session opens, the agent checks what comes over the wire. Each side words its
 * own messages (flag names there, "the … filter" here); what is allowed is decided here.
 */
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

/**
 * `source` as a regular expression that matches a whole value (`^(?:source)$`: "alice"
 * does not match "alicex"). A usage error naming `label` when it is too long or does not
 * compile.
 */
export function wholeMatchPattern(source: string, label: string): RegExp {
  if (source.length > MAX_FILTER_PATTERN) throw new TsmError('TSM_ERR_USAGE', `${label} is longer than ${MAX_FILTER_PATTERN} characters`);
  try {
    return new RegExp(`^(?:${source})$`);
  } catch (err) {
    throw new TsmError('TSM_ERR_USAGE', `${label} "${source}" is not a valid regular expression: ${(err as Error).message}`);
  }
}
