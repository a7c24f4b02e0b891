/**
 * `tsmirror replay FILE.har`: sends the recorded requests to a program (at --to URL, or
 * started under tsmirror with the recording's target when a command follows --), compares
 * each answer with the recorded one, prints the differences and a summary, writes
 * --report, and exits 0 only when nothing differs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { REDACTED_MARKER } from '../../common/har.js';
import { isHeaderName } from '../../common/http-filter.js';
import { TsmError } from '../../protocol/errors.js';
import { compareAnswer, parseIgnoreHeader, parseJsonPath, type CompareOptions, type Difference } from './compare.js';
import { loadHar, parseFilter, selectEntries, type LoadedHar, type ReplayEntry } from './entries.js';
import { openConnection, type Endpoint, type ReplayConnection, type SendOptions } from './send.js';

/** At most this many client connections stay open at once (see replayEntries). */
export const MAX_OPEN_CONNECTIONS = 256;

/** Exit codes of replay (125: tsmirror itself failed, as for every command). */
export const REPLAY_EXIT = { SAME: 0, DIFFERENT: 1, FAILED: 2 } as const;

export interface ReplayFlags {
  to?: string;
  concurrency: string;
  filter: string[];
  ignoreHeader: string[];
  ignoreJsonPath: string[];
  header: string[];
  report?: string;
  timeout: string;
  maxBody: string;
  port?: string;
  startTimeout: string;
  diff: boolean;
  quiet?: boolean;
  verbose?: boolean;
  // session flags, passed to `tsmirror exec` in command mode
  agent?: string;
  target?: string;
  namespace?: string;
  context?: string;
  kubeconfig?: string;
  container?: string;
  node?: string;
  agentNamespace?: string;
  envInclude?: string[];
  envExclude?: string[];
  env?: string[];
  config?: string;
}

export interface EntryResult {
  entry: ReplayEntry;
  outcome: 'same' | 'different' | 'failed';
  status?: number;
  ms?: number;
  differences: Difference[];
  bodyDiff?: string;
  error?: string;
}

function progress(flags: { quiet?: boolean }, line: string): void {
  if (!flags.quiet) process.stderr.write(`tsmirror: ${line}\n`);
}

function positiveInt(text: string, flag: string, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n < 1 || n > max) throw new TsmError('TSM_ERR_USAGE', `${flag} "${text}" must be a whole number from 1 to ${max}`);
  return n;
}

/** 10k, 16M, 1G, or bytes. */
export function parseSize(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?$/i.exec(text.trim());
  if (!m) throw new TsmError('TSM_ERR_USAGE', `${flag} "${text}" is not a size (like 512k, 16M or 1G)`);
  const unit = (m[2] ?? 'b')[0]!.toLowerCase();
  const n = Math.floor(Number(m[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1));
  if (n < 1 || n > 2 * 1024 ** 3) throw new TsmError('TSM_ERR_USAGE', `${flag} "${text}" must be between 1 byte and 2G`);
  return n;
}

/** --header 'NAME: VALUE' → lower-case name → value. */
export function parseHeaderValues(list: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const h of list) {
    const colon = h.indexOf(':');
    const name = colon > 0 ? h.slice(0, colon).trim() : '';
    const value = colon > 0 ? h.slice(colon + 1).trim() : '';
    if (!isHeaderName(name)) throw new TsmError('TSM_ERR_USAGE', `--header "${h.slice(0, 100)}" must be 'NAME: VALUE'`, { hint: "for example --header 'authorization: Bearer eyJ…' (replaces the recorded, redacted value)" });
    if (/[\r\n\0]/.test(value)) throw new TsmError('TSM_ERR_USAGE', `--header ${name}: the value holds a line break or NUL`);
    out.set(name.toLowerCase(), value);
  }
  return out;
}

/** --to URL: http://HOST:PORT (the scheme's port if none). */
export function parseTo(to: string): Endpoint {
  let url: URL;
  try {
    url = new URL(to);
  } catch {
    throw new TsmError('TSM_ERR_USAGE', `--to "${to}" is not a URL`, { hint: 'for example --to http://127.0.0.1:3000' });
  }
  if (url.protocol !== 'http:') throw new TsmError('TSM_ERR_USAGE', `--to ${to}: replay speaks http:// (HTTP/1.1 and HTTP/2 without TLS) only`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.username) throw new TsmError('TSM_ERR_USAGE', `--to ${to}: give only the scheme, host and port (the recorded paths are sent as they are)`);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return { host, port: url.port === '' ? 80 : Number(url.port) };
}

function percentile(sorted: number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export interface LatencySummary {
  recorded: { p50: number | undefined; p99: number | undefined };
  replay: { p50: number | undefined; p99: number | undefined };
}

function latency(results: EntryResult[]): LatencySummary {
  const answered = results.filter((r) => r.outcome !== 'failed');
  const rec = answered.map((r) => r.entry.recorded.ms).filter((n) => Number.isFinite(n) && n >= 0).sort((a, b) => a - b);
  const rep = answered.map((r) => r.ms ?? 0).sort((a, b) => a - b);
  return { recorded: { p50: percentile(rec, 50), p99: percentile(rec, 99) }, replay: { p50: percentile(rep, 50), p99: percentile(rep, 99) } };
}

/**
 * Replays entries against endpoints: a recorded connection's entries in order on one
 * connection; up to `concurrency` requests at once (1: one at a time, in recorded order).
 * The next request to start is always the earliest recorded one whose connection is idle.
 */
export async function replayEntries(
  entries: ReplayEntry[],
  endpointOf: (e: ReplayEntry) => Endpoint,
  concurrency: number,
  send: SendOptions,
  compare: CompareOptions,
  onResult?: (r: EntryResult) => void,
): Promise<EntryResult[]> {
  const order = entries.map((e, i) => ({ e, i })).sort((a, b) => (Number.isNaN(a.e.started) || Number.isNaN(b.e.started) ? 0 : a.e.started - b.e.started) || a.e.index - b.e.index);
  interface Group { queue: ReplayEntry[]; rank: number[]; pos: number; conn?: ReplayConnection | undefined }
  const groups = new Map<string, Group>();
  order.forEach(({ e }, rank) => {
    let g = groups.get(e.connection);
    if (!g) groups.set(e.connection, (g = { queue: [], rank: [], pos: 0 }));
    g.queue.push(e);
    g.rank.push(rank);
  });
  // Idle groups with entries left, as a min-heap on their next entry's rank.
  const heap: Group[] = [];
  const key = (g: Group): number => g.rank[g.pos]!;
  const pushHeap = (g: Group): void => {
    heap.push(g);
    let i = heap.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (key(heap[p]!) <= key(heap[i]!)) break;
      [heap[p], heap[i]] = [heap[i]!, heap[p]!];
      i = p;
    }
  };
  const popHeap = (): Group | undefined => {
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && key(heap[l]!) < key(heap[m]!)) m = l;
        if (r < heap.length && key(heap[r]!) < key(heap[m]!)) m = r;
        if (m === i) break;
        [heap[m], heap[i]] = [heap[i]!, heap[m]!];
        i = m;
      }
    }
    return top;
  };
  for (const g of groups.values()) pushHeap(g);

  const results: EntryResult[] = [];
  // Open client connections, least recently used first: past MAX_OPEN_CONNECTIONS (a
  // recording with thousands of overlapping connections) the oldest idle one is closed,
  // and its next request opens a new one.
  const open = new Map<Group, true>();
  const busy = new Set<Group>();
  const connectionFor = (g: Group, e: ReplayEntry): ReplayConnection => {
    open.delete(g);
    open.set(g, true);
    if (g.conn) return g.conn;
    if (open.size > MAX_OPEN_CONNECTIONS) {
      for (const old of open.keys()) {
        if (old === g || busy.has(old)) continue;
        old.conn?.close();
        old.conn = undefined;
        open.delete(old);
        break;
      }
    }
    return (g.conn = openConnection(e.http2, endpointOf(e), send));
  };
  const one = async (g: Group): Promise<void> => {
    const e = g.queue[g.pos]!;
    let r: EntryResult;
    busy.add(g);
    if (e.unsendable) {
      r = { entry: e, outcome: 'failed', differences: [], error: `not sent: ${e.unsendable}` };
    } else {
      const started = performance.now();
      try {
        const answer = await connectionFor(g, e).send(e);
        const ms = performance.now() - started;
        const c = compareAnswer(e.recorded, answer, compare, { from: `recorded #${e.index + 1}`, to: `replay #${e.index + 1}` });
        r = { entry: e, outcome: c.differences.length > 0 ? 'different' : 'same', status: answer.status, ms, differences: c.differences, ...(c.bodyDiff ? { bodyDiff: c.bodyDiff } : {}) };
      } catch (err) {
        const ne = err as NodeJS.ErrnoException;
        r = { entry: e, outcome: 'failed', differences: [], ms: performance.now() - started, error: `${ne.message}${ne.code && !ne.message.includes(ne.code) ? ` (${ne.code})` : ''}` };
      }
    }
    results.push(r);
    onResult?.(r);
    busy.delete(g);
    g.pos++;
    if (g.pos < g.queue.length) pushHeap(g);
    else {
      g.conn?.close();
      g.conn = undefined;
      open.delete(g);
    }
  };
  await new Promise<void>((resolve) => {
    let active = 0;
    const pump = (): void => {
      while (active < concurrency && heap.length > 0) {
        const g = popHeap()!;
        active++;
        void one(g).finally(() => {
          active--;
          pump();
        });
      }
      if (active === 0 && heap.length === 0) resolve();
    };
    pump();
  });
  return results.sort((a, b) => a.entry.index - b.entry.index);
}

function label(e: ReplayEntry): string {
  const t = e.target.length > 100 ? `${e.target.slice(0, 97)}…` : e.target;
  return `#${e.index + 1} ${e.method} ${t}`;
}

function ms(n: number | undefined): string {
  return n === undefined ? '-' : `${n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : Math.round(n)} ms`;
}

/**
 * Text from the file or from the program made safe for a terminal: control characters
 * (escape sequences could rewrite the screen) shown as \xNN; newlines and tabs kept.
 */
export function printable(text: string): string {
  return text.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** The lines printed for the results: one per difference or failure, body diffs, the summary. */
export function formatResults(results: EntryResult[], context: { total: number; against: string; seconds: number; diff: boolean }): string {
  const out: string[] = [];
  for (const r of results) {
    if (r.outcome === 'failed') out.push(`FAILED ${label(r.entry)}: ${r.error}`);
    if (r.outcome !== 'different') continue;
    for (const d of r.differences) out.push(`DIFF ${label(r.entry)}: ${d.text}`);
    if (context.diff && r.bodyDiff) out.push(r.bodyDiff.replace(/\n$/, ''));
  }
  const count = (o: EntryResult['outcome']): number => results.filter((r) => r.outcome === o).length;
  const filtered = context.total - results.length;
  out.push(`replayed ${results.length} of ${context.total} entries${filtered > 0 ? ` (${filtered} filtered out)` : ''} against ${context.against} in ${context.seconds.toFixed(1)} s: ${count('same')} same, ${count('different')} different, ${count('failed')} failed`);
  const l = latency(results);
  out.push(`latency    recorded    replay`);
  out.push(`  p50  ${ms(l.recorded.p50).padStart(10)} ${ms(l.replay.p50).padStart(9)}`);
  out.push(`  p99  ${ms(l.recorded.p99).padStart(10)} ${ms(l.replay.p99).padStart(9)}`);
  return `${printable(out.join('\n'))}\n`;
}

/** The --report file: the summary, and every entry with its outcome and differences. */
export function reportOf(file: string, against: string, total: number, seconds: number, results: EntryResult[]): unknown {
  const count = (o: EntryResult['outcome']): number => results.filter((r) => r.outcome === o).length;
  return {
    file,
    against,
    seconds,
    summary: { entries: total, replayed: results.length, filteredOut: total - results.length, same: count('same'), different: count('different'), failed: count('failed') },
    latencyMs: latency(results),
    entries: results.map((r) => ({
      index: r.entry.index,
      connection: r.entry.connection,
      method: r.entry.method,
      target: r.entry.target,
      outcome: r.outcome,
      recordedStatus: r.entry.recorded.status,
      ...(r.status === undefined ? {} : { status: r.status }),
      recordedMs: r.entry.recorded.ms,
      ...(r.ms === undefined ? {} : { ms: Math.round(r.ms * 1000) / 1000 }),
      ...(r.error ? { error: r.error } : {}),
      differences: r.differences.map(({ kind, at, recorded, replay, text }) => ({ kind, ...(at === undefined ? {} : { at }), ...(recorded === undefined ? {} : { recorded }), ...(replay === undefined ? {} : { replay }), text })),
      ...(r.bodyDiff ? { bodyDiff: r.bodyDiff } : {}),
    })),
  };
}

/** The pod port an entry goes to when the program runs locally. */
function portResolver(loaded: LoadedHar, flags: ReplayFlags): (e: ReplayEntry) => number | undefined {
  if (flags.port !== undefined) {
    const p = positiveInt(flags.port, '--port', 65535);
    return () => p;
  }
  const ports = loaded.info?.ports?.filter((p) => Number.isInteger(p) && p >= 1 && p <= 65535) ?? [];
  return (e) => (e.port !== undefined && (ports.length === 0 || ports.includes(e.port)) ? e.port : ports[0] ?? e.port);
}

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.setTimeout(1000, () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** The session flags given to replay, as `tsmirror exec` flags. */
function execArgs(flags: ReplayFlags, loaded: LoadedHar): string[] {
  const args: string[] = [];
  const target = flags.target ?? loaded.info?.target;
  const namespace = flags.namespace ?? (flags.target === undefined ? loaded.info?.namespace : undefined);
  const single: [string, string | undefined][] = [
    ['--agent', flags.agent], ['--target', target], ['--namespace', namespace], ['--context', flags.context],
    ['--kubeconfig', flags.kubeconfig], ['--container', flags.container], ['--node', flags.node],
    ['--agent-namespace', flags.agentNamespace], ['--config', flags.config],
  ];
  for (const [name, value] of single) if (value !== undefined) args.push(name, value);
  for (const v of flags.envInclude ?? []) args.push('--env-include', v);
  for (const v of flags.envExclude ?? []) args.push('--env-exclude', v);
  for (const v of flags.env ?? []) args.push('--env', v);
  if (flags.quiet) args.push('--quiet');
  if (flags.verbose) args.push('--verbose');
  return args;
}

interface Started {
  child: ChildProcess;
  exited: Promise<number>;
  stop: () => Promise<void>;
}

/**
 * Starts `tsmirror exec … -- command` (the program runs under tsmirror with the target's
 * network, files and environment; its listeners stay local: no live pod traffic mixes with
 * the replay), with the program's output on stderr.
 */
function startProgram(command: string[], flags: ReplayFlags, loaded: LoadedHar): Started {
  const cli = process.argv[1];
  if (!cli) throw new TsmError('TSM_ERR_INTERNAL', 'cannot tell how tsmirror was started (no script path)');
  const args = [...process.execArgv, cli, 'exec', ...execArgs(flags, loaded), '--ports', '', '--', ...command];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 2, 2] });
  const exited = new Promise<number>((resolve) => {
    child.once('error', () => resolve(125));
    child.once('exit', (code, signal) => resolve(code ?? (signal === 'SIGTERM' ? 143 : 137)));
  });
  return {
    child,
    exited,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM'); // exec relays it to the program, then ends the session
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Waits until every port accepts connections on 127.0.0.1, or the program exits, or time runs out. */
async function waitListening(ports: number[], started: Started, timeoutMs: number, flags: ReplayFlags): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | undefined;
  void started.exited.then((c) => (exitCode = c));
  const waiting = new Set(ports);
  let announced = Date.now();
  while (waiting.size > 0) {
    for (const p of [...waiting]) if (await acceptsConnections(p)) waiting.delete(p);
    if (waiting.size === 0) break;
    if (exitCode !== undefined) {
      throw new TsmError('TSM_ERR_USAGE', `the program exited (code ${exitCode}) before it listened on port ${[...waiting].join(', ')}`, { hint: 'see its output above; it must listen on the recorded port (or give --port)' });
    }
    if (Date.now() > deadline) {
      throw new TsmError('TSM_ERR_USAGE', `the program did not listen on 127.0.0.1:${[...waiting].join(', ')} within ${Math.round(timeoutMs / 1000)} s`, { hint: 'it must listen on the recorded port on this machine (give --port if it uses another, --start-timeout if it starts slowly)' });
    }
    if (Date.now() - announced > 5000) {
      progress(flags, `waiting for the program to listen on port ${[...waiting].join(', ')}…`);
      announced = Date.now();
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function runReplay(file: string, command: string[], flags: ReplayFlags): Promise<number> {
  // Everything that can be refused is refused before sending anything.
  const concurrency = positiveInt(flags.concurrency, '--concurrency', 1000);
  const timeoutMs = positiveInt(flags.timeout, '--timeout', 3_600_000);
  const startTimeoutMs = positiveInt(flags.startTimeout, '--start-timeout', 3_600_000);
  const maxBody = parseSize(flags.maxBody, '--max-body');
  const filters = flags.filter.map(parseFilter);
  const compare: CompareOptions = { ignoreHeaders: flags.ignoreHeader.map(parseIgnoreHeader), ignoreJsonPaths: flags.ignoreJsonPath.map(parseJsonPath) };
  const headerValues = parseHeaderValues(flags.header);
  if (flags.to !== undefined && command.length > 0) throw new TsmError('TSM_ERR_USAGE', 'give either --to URL or a command after --, not both');
  if (flags.to === undefined && command.length === 0) {
    throw new TsmError('TSM_ERR_USAGE', 'nothing to replay against', { hint: 'give --to http://127.0.0.1:PORT (a program already running) or the program after --, e.g. tsmirror replay checkout.har -- node server.js' });
  }
  const to = flags.to === undefined ? undefined : parseTo(flags.to);
  const loaded = await loadHar(file);
  const entries = selectEntries(loaded.entries, filters);
  if (entries.length === 0) {
    throw new TsmError('TSM_ERR_USAGE', loaded.entries.length === 0 ? `${file} holds no entries` : `no entry of ${file} matches the filters (${loaded.entries.length} entries)`, loaded.entries.length === 0 ? {} : { hint: 'check --filter (see tsmirror replay --help)' });
  }
  // Redacted values that no --header supplies are sent as recorded (the marker).
  const unsupplied = new Map<string, number>();
  for (const e of entries) {
    for (const [n, v] of e.headers) if (v === REDACTED_MARKER && !headerValues.has(n.toLowerCase())) unsupplied.set(n.toLowerCase(), (unsupplied.get(n.toLowerCase()) ?? 0) + 1);
  }
  for (const [name, n] of unsupplied) progress(flags, `${n} request(s) carry a redacted ${name} header; sent as the marker "${REDACTED_MARKER}" (give --header '${name}: VALUE' to send a real value)`);

  let endpointOf: (e: ReplayEntry) => Endpoint;
  let against: string;
  let started: Started | undefined;
  if (to) {
    endpointOf = () => to;
    against = flags.to!;
  } else {
    const portOf = portResolver(loaded, flags);
    const missing = entries.find((e) => portOf(e) === undefined);
    if (missing) throw new TsmError('TSM_ERR_USAGE', `the recording does not say which port ${label(missing)} was sent to`, { hint: 'give --port N (where the program listens), or use --to URL' });
    const ports = [...new Set(entries.map((e) => portOf(e)!))];
    for (const p of ports) {
      if (await acceptsConnections(p)) {
        throw new TsmError('TSM_ERR_USAGE', `something on this machine already listens on port ${p}; the replay would reach it instead of the program`, { hint: 'stop it first, or run your program yourself and use --to http://127.0.0.1:PORT' });
      }
    }
    if (!flags.target && !loaded.info?.target && !flags.agent) {
      throw new TsmError('TSM_ERR_USAGE', `${file} names no target to run the program with`, { hint: 'give --target (and -n), or run the program yourself and use --to URL' });
    }
    endpointOf = (e) => ({ host: '127.0.0.1', port: portOf(e)! });
    against = `${command.join(' ')} (port ${ports.join(', ')})`;
    progress(flags, `starting ${command.join(' ')} under tsmirror${flags.target ?? loaded.info?.target ? ` as ${flags.target ?? loaded.info?.target}` : ''}…`);
    started = startProgram(command, flags, loaded);
  }
  const stopOnSignal = (): void => {
    void started?.stop().finally(() => process.exit(130));
    if (!started) process.exit(130);
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    if (started) await waitListening([...new Set(entries.map((e) => endpointOf(e).port))], started, startTimeoutMs, flags);
    progress(flags, `replaying ${entries.length} request(s) to ${to ? flags.to : '127.0.0.1'}${concurrency > 1 ? `, ${concurrency} at a time` : ''}…`);
    const t0 = performance.now();
    let done = 0;
    const ticker = setInterval(() => progress(flags, `${done}/${entries.length} replayed`), 2000);
    let results: EntryResult[];
    try {
      results = await replayEntries(entries, endpointOf, concurrency, { timeoutMs, maxBody, headerValues }, compare, () => done++);
    } finally {
      clearInterval(ticker);
    }
    const seconds = (performance.now() - t0) / 1000;
    process.stdout.write(formatResults(results, { total: loaded.entries.length, against, seconds, diff: flags.diff }));
    if (flags.report) {
      await writeFile(flags.report, `${JSON.stringify(reportOf(file, against, loaded.entries.length, seconds, results), null, 2)}\n`, { mode: 0o600 });
      await chmod(flags.report, 0o600); // an existing file keeps its mode otherwise: the report holds recorded data
      progress(flags, `report written to ${flags.report}`);
    }
    if (started && started.child.exitCode !== null) progress(flags, `the program exited during the replay (code ${started.child.exitCode})`);
    if (results.some((r) => r.outcome === 'failed')) return REPLAY_EXIT.FAILED;
    return results.some((r) => r.outcome === 'different') ? REPLAY_EXIT.DIFFERENT : REPLAY_EXIT.SAME;
  } finally {
    process.off('SIGINT', stopOnSignal);
    process.off('SIGTERM', stopOnSignal);
    await started?.stop();
  }
}
