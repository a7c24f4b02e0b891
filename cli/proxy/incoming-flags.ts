/**
 * Incoming traffic's command-line flags (--mirror, --steal, --http-*, --port-map, --ports)
 * turned into the options of the CLI's incoming side (incoming.ts).
 */
import { TsmError } from '../../protocol/errors.js';
import { checkHeaderFilterCount, filterNarrows, isHeaderName, isMethodName, wholeMatchPattern } from '../../common/http-filter.js';
import type { HttpFilter, IncomingMode } from '../../protocol/messages.js';

/**
 * Debugger ports stay on this machine unless --ports names them: node --inspect (9229),
 * debugpy (5678), dlv (2345), the JVM's JDWP (5005) and Ruby's debug (12345).
 */
export const DEBUGGER_PORTS = new Set([9229, 9230, 5678, 2345, 5005, 12345]);

export interface IncomingOptions {
  mode: 'mirror' | 'steal';
  filter: HttpFilter | undefined;
  /** Program port → pod port. */
  portMap: Map<number, number>;
  /** Pod ports that subscribe; undefined: every port the program listens on. */
  ports: Set<number> | undefined;
  /**
   * --watch: when the program stops listening (a restart), the port stays subscribed this
   * long, and connections that arrive meanwhile wait for the program to listen again; only
   * after it do they go to the pod's app. 0: unsubscribe at once.
   */
  relistenWaitMs?: number;
}

export interface IncomingFlags {
  mirror?: boolean;
  steal?: boolean;
  httpHeader: string[];
  httpPath?: string;
  httpMethod?: string;
  portMap: string[];
  ports?: string;
}

function checkRegex(source: string, what: string): string {
  wholeMatchPattern(source, what);
  return source;
}

function port(text: string, what: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n < 1 || n > 65535) throw new TsmError('TSM_ERR_USAGE', `${what}: "${text}" is not a port (1-65535)`);
  return n;
}

/** The incoming options from exec's flags; throws TSM_ERR_USAGE with what to fix. */
export function parseIncomingFlags(flags: IncomingFlags): IncomingOptions {
  checkHeaderFilterCount(flags.httpHeader.length);
  const headers = flags.httpHeader.map((h) => {
    const colon = h.indexOf(':');
    const name = colon > 0 ? h.slice(0, colon).trim() : '';
    if (!isHeaderName(name)) {
      throw new TsmError('TSM_ERR_USAGE', `--http-header "${h}" must be 'NAME: VALUE'`, { hint: "for example --http-header 'x-dev: alice' (VALUE is a regular expression matching the whole value)" });
    }
    return { name, value: checkRegex(h.slice(colon + 1).trim(), `--http-header ${name}`) };
  });
  const filter: HttpFilter = { headers };
  if (flags.httpPath !== undefined) filter.path = checkRegex(flags.httpPath, '--http-path');
  if (flags.httpMethod !== undefined) {
    if (!isMethodName(flags.httpMethod)) throw new TsmError('TSM_ERR_USAGE', `--http-method "${flags.httpMethod}" is not a method name`);
    filter.method = flags.httpMethod.toUpperCase();
  }
  const filtered = headers.length > 0 || filter.path !== undefined || filter.method !== undefined;
  // The agent counts a filter that lets every request through as a steal of all traffic;
  // say so here rather than let the subscription be refused later.
  if (filtered && !filterNarrows({
    path: filter.path === undefined ? undefined : wholeMatchPattern(filter.path, '--http-path'),
    headerValues: headers.map((h) => wholeMatchPattern(h.value, `--http-header ${h.name}`)),
    method: filter.method,
  })) {
    throw new TsmError('TSM_ERR_USAGE', 'these HTTP filters match (nearly) every request, so they would steal all traffic',
      { hint: "narrow them (for example --http-header 'x-dev: alice'), or drop them and use --steal to take every connection" });
  }
  if (flags.mirror && flags.steal) throw new TsmError('TSM_ERR_USAGE', '--mirror and --steal exclude each other');
  if (flags.mirror && filtered) {
    throw new TsmError('TSM_ERR_USAGE', 'HTTP filters (--http-header, --http-path, --http-method) select requests to steal; a mirror copies every connection',
      { hint: 'add --steal (filters apply to stolen requests), or drop the filters' });
  }
  const mode: 'mirror' | 'steal' = flags.steal || filtered ? 'steal' : 'mirror';
  const portMap = new Map<number, number>();
  for (const m of flags.portMap) {
    const parts = m.split(':');
    if (parts.length !== 2) throw new TsmError('TSM_ERR_USAGE', `--port-map "${m}" must be LOCAL:REMOTE`, { hint: 'e.g. --port-map 3000:8080 when the program listens on 3000 and the pod on 8080' });
    portMap.set(port(parts[0] ?? '', '--port-map'), port(parts[1] ?? '', '--port-map'));
  }
  const ports = flags.ports === undefined ? undefined : new Set(flags.ports.split(',').filter((p) => p.trim() !== '').map((p) => port(p, '--ports')));
  return { mode, filter: filtered ? filter : undefined, portMap, ports };
}
