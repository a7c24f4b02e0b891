/**
 * A filtered steal's filter, as the agent matches it against each request (HTTP/1.1
 * heads and HTTP/2 streams alike): every header filter must match a field of that name
 * (names case-insensitive), the path (without the query) and each header value must
 * match their pattern whole, the method must be equal. What a filter may contain is
 * checked by the rules the CLI uses too (common/http-filter.ts).
 */
import { checkHeaderFilterCount, filterNarrows, isHeaderName, isMethodName, wholeMatchPattern, type WholeMatch } from '../../common/http-filter.js';
import { TsmError } from '../../protocol/errors.js';
import type { HttpFilter } from '../../protocol/messages.js';
import { requestPath, type MessageHead } from './http1.js';

export interface CompiledFilter {
  /** Names in lower case. */
  headers: Array<{ name: string; value: WholeMatch }>;
  path: WholeMatch | undefined;
  /** In upper case. */
  method: string | undefined;
  /** The filter as logs and conflict messages show it. */
  text: string;
}

/** `source` as a whole-match pattern; usage errors say "the <what> filter …". */
export function wholeMatch(source: string, what: string): WholeMatch {
  return wholeMatchPattern(source, `the ${what} filter`);
}

/**
 * Validates a filter from the wire; undefined for no filter, and for a filter that lets
 * (nearly) every request through (common/http-filter.ts filterNarrows): that is a steal of
 * all traffic, whatever the client calls it, for the policy and for port conflicts alike.
 */
export function compileFilter(value: unknown): CompiledFilter | undefined {
  if (value === undefined || value === null) return undefined;
  const f = value as Partial<HttpFilter>;
  const headers = Array.isArray(f.headers) ? f.headers : [];
  checkHeaderFilterCount(headers.length);
  const compiled: CompiledFilter = { headers: [], path: undefined, method: undefined, text: '' };
  const parts: string[] = [];
  for (const h of headers as unknown[]) {
    const { name, value: v } = (h ?? {}) as { name?: unknown; value?: unknown };
    if (typeof name !== 'string' || typeof v !== 'string' || !isHeaderName(name)) {
      throw new TsmError('TSM_ERR_USAGE', 'a header filter needs a header name and a value pattern');
    }
    compiled.headers.push({ name: name.toLowerCase(), value: wholeMatch(v, `header ${name}`) });
    parts.push(`${name}: ${v}`);
  }
  if (f.path !== undefined) {
    if (typeof f.path !== 'string') throw new TsmError('TSM_ERR_USAGE', 'the path filter must be a string');
    compiled.path = wholeMatch(f.path, 'path');
    parts.push(`path ${f.path}`);
  }
  if (f.method !== undefined) {
    if (typeof f.method !== 'string' || !isMethodName(f.method)) throw new TsmError('TSM_ERR_USAGE', 'the method filter must be a method name');
    compiled.method = f.method.toUpperCase();
    parts.push(`method ${compiled.method}`);
  }
  if (parts.length === 0) return undefined;
  if (!filterNarrows({ path: compiled.path, headerValues: compiled.headers.map((h) => h.value), method: compiled.method })) return undefined;
  compiled.text = parts.join(', ');
  return compiled;
}

export function filterMatches(f: CompiledFilter, head: MessageHead): boolean {
  if (f.method !== undefined && head.method !== f.method) return false;
  if (f.path && !f.path.test(requestPath(head))) return false;
  for (const want of f.headers) {
    if (!head.headers.some(([n, v]) => n.toLowerCase() === want.name && want.value.test(v))) return false;
  }
  return true;
}
