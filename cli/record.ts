/**
 * `tsmirror record`: the pod's HTTP exchanges on some ports, requests and the app's own
 * answers, written to a HAR file. The pod keeps serving (the mirror path: nothing is
 * stolen); the agent cuts each connection into exchanges, applies the filter, the sample,
 * the body limit and the redaction on the node (agent/incoming/record.ts), and sends them
 * on one stream per client connection (protocol/record-frames.ts). Here they become HAR
 * entries (cli/har-writer.ts) until --duration, --max-requests, Ctrl-C or the end of the
 * session; the file is whole and valid in every case.
 */
import { resolve as resolvePath } from 'node:path';
import { constants as osConstants } from 'node:os';
import { packageVersion } from '../native/index.js';
import { isHeaderName, isMethodName, wholeMatchPattern } from '../common/http-filter.js';
import { DEFAULT_REDACTED_HEADERS, RECORD_LIMITS, type AgentMessage, type HttpFilter, type IncomingOpen, type RecordOptions } from '../protocol/messages.js';
import { RecordFrameReader } from '../protocol/record-frames.js';
import { TsmError } from '../protocol/errors.js';
import { streamPair } from '../common/stream-pair.js';
import { openSession, progress, type SessionFlags } from './exec.js';
import { HarWriter, harEntry, type ConnectionInfo } from './har-writer.js';
import { EXIT } from './launch.js';

export interface RecordFlags extends SessionFlags {
  port: string[];
  output?: string;
  duration?: string;
  sample?: string;
  maxRequests?: string;
  maxBody: string;
  httpHeader: string[];
  httpPath?: string;
  httpMethod?: string;
  redactHeader: string[];
  redactJsonPath: string[];
  /** commander's --no-redact: false when given. */
  redact: boolean;
}

const usage = (message: string, hint?: string): TsmError => new TsmError('TSM_ERR_USAGE', message, hint ? { hint } : undefined);

/** "30s", "5m", "1h", "500ms"; a bare number is seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw usage(`--duration "${text}" is not a duration`, 'write it like 30s, 5m or 1h');
  const n = Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000);
  if (!(n > 0) || n > 7 * 24 * 3_600_000) throw usage(`--duration "${text}" must be above 0 and at most a week`);
  return n;
}

/** "10%", "10", "0.5%". */
export function parseSample(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*%?$/.exec(text.trim());
  const n = m ? Number(m[1]) : NaN;
  if (!(n > 0 && n <= 100)) throw usage(`--sample "${text}" is not a percentage above 0 and at most 100`, 'for example --sample 10%');
  return n;
}

/** "1MiB", "256k", "64KB", "1000" (bytes). */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(text.trim());
  if (!m) throw usage(`${what} "${text}" is not a size`, 'write it like 65536, 64KiB or 1MiB');
  const unit = (m[2] ?? 'b').toLowerCase()[0] ?? 'b';
  const n = Math.floor(Number(m[1]) * ({ b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[unit] ?? 1));
  if (n > RECORD_LIMITS.maxBody) throw usage(`${what} "${text}" is above the limit of ${RECORD_LIMITS.maxBody / 1024 / 1024} MiB`);
  return n;
}

function parsePorts(values: string[]): number[] {
  const ports = values.flatMap((v) => v.split(',')).filter((p) => p.trim() !== '').map((p) => {
    const n = Number(p);
    if (!/^\d+$/.test(p.trim()) || n < 1 || n > 65535) throw usage(`--port "${p}" is not a port (1-65535)`);
    return n;
  });
  if (ports.length === 0) throw usage('no port to record', 'name the pod\'s port(s), e.g. --port 8080 (repeatable)');
  return [...new Set(ports)];
}

function recordFilter(flags: RecordFlags): HttpFilter | undefined {
  const headers = flags.httpHeader.map((h) => {
    const colon = h.indexOf(':');
    const name = colon > 0 ? h.slice(0, colon).trim() : '';
    if (!isHeaderName(name)) throw usage(`--http-header "${h}" must be 'NAME: VALUE'`, "for example --http-header 'x-dev: alice' (VALUE is a regular expression matching the whole value)");
    const value = h.slice(colon + 1).trim();
    wholeMatchPattern(value, `--http-header ${name}`);
    return { name, value };
  });
  const filter: HttpFilter = { headers };
  if (flags.httpPath !== undefined) {
    wholeMatchPattern(flags.httpPath, '--http-path');
    filter.path = flags.httpPath;
  }
  if (flags.httpMethod !== undefined) {
    if (!isMethodName(flags.httpMethod)) throw usage(`--http-method "${flags.httpMethod}" is not a method name`);
    filter.method = flags.httpMethod.toUpperCase();
  }
  return headers.length > 0 || filter.path !== undefined || filter.method !== undefined ? filter : undefined;
}

const kib = (n: number): string => (n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`);

/** Records until a stop; resolves with the exit code. */
export async function runRecord(flags: RecordFlags): Promise<number> {
  if (!flags.output) throw usage('no output file', 'name it with -o FILE.har');
  if (!flags.target) throw usage('no target to record', 'name it with --target, e.g. --target deployment/api -n shop');
  const ports = parsePorts(flags.port);
  const durationMs = flags.duration === undefined ? undefined : parseDuration(flags.duration);
  const sample = flags.sample === undefined ? 100 : parseSample(flags.sample);
  const maxRequests = flags.maxRequests === undefined ? undefined : Number(flags.maxRequests);
  if (maxRequests !== undefined && !(Number.isInteger(maxRequests) && maxRequests > 0)) throw usage(`--max-requests "${flags.maxRequests}" is not a positive whole number`);
  const maxBody = parseSize(flags.maxBody, '--max-body');
  const filter = recordFilter(flags);
  for (const h of flags.redactHeader) wholeMatchPattern(h, `--redact-header "${h}"`);
  if (!flags.redact && (flags.redactHeader.length > 0 || flags.redactJsonPath.length > 0)) {
    throw usage('--no-redact keeps every value; it cannot go with --redact-header or --redact-json-path');
  }
  const options: RecordOptions = { sample, maxBody, redactHeaders: flags.redactHeader, redactJsonPaths: flags.redactJsonPath, redact: flags.redact };
  const output = resolvePath(flags.output);
  const writer = new HarWriter(output, packageVersion);

  let agent;
  try {
    agent = await openSession(flags, { mode: 'mirror', filtered: false, record: true });
  } catch (err) {
    writer.abort();
    throw err;
  }
  const stats = { seen: 0, kept: 0, skipped: new Map<string, number>(), connections: 0, lost: 0 };
  let stopping = false;
  let lastFrame = Date.now();
  let nextConnection = 1;
  let stop!: (why: string) => void;
  const stopped = new Promise<string>((r) => (stop = r));

  const onOpen = (m: IncomingOpen): void => {
    const mux = agent.peer.mux;
    if (mux.has(m.stream)) return;
    mux.open(m.stream);
    if (m.mode !== 'record' || stopping) {
      mux.close(m.stream, osConstants.errno.ECONNREFUSED);
      return;
    }
    stats.connections++;
    const conn: ConnectionInfo = { id: `c${nextConnection++}`, remoteAddress: m.remoteAddress, remotePort: m.remotePort, localAddress: m.localAddress, localPort: m.localPort };
    const [toAgent, local] = streamPair();
    mux.bindSocket(m.stream, toAgent);
    const reader = new RecordFrameReader(2 * maxBody + 4 * 1024 * 1024);
    local.on('data', (chunk: Buffer) => {
      lastFrame = Date.now();
      let frames;
      try {
        frames = reader.push(chunk);
      } catch (err) {
        stats.lost++;
        progress(flags, `a connection's recording was unreadable and is left out: ${(err as Error).message}`);
        local.destroy();
        return;
      }
      for (const f of frames) {
        if (f.kind === 'dropped') stats.seen += f.count;
        else if (f.kind === 'skipped') stats.skipped.set(f.reason.replace(/^\d+ /, 'N '), (stats.skipped.get(f.reason.replace(/^\d+ /, 'N ')) ?? 0) + 1);
        else {
          stats.seen++;
          if (maxRequests !== undefined && stats.kept >= maxRequests) continue;
          writer.add(harEntry(f, conn));
          stats.kept++;
          if (maxRequests !== undefined && stats.kept >= maxRequests) stop(`${maxRequests} exchanges recorded (--max-requests)`);
        }
      }
    });
    local.on('error', () => undefined);
  };
  const onMessage = (m: AgentMessage): void => {
    if (m.type === 'incoming.open') onOpen(m);
  };
  agent.peer.on('message', onMessage);
  agent.peer.once('closed', () => stop('the session ended'));

  const target = flags.target;
  try {
    for (const port of ports) {
      await agent.request({ type: 'port.subscribe', port, mode: 'record', ...(filter ? { filter } : {}), record: options });
    }
  } catch (err) {
    agent.close();
    writer.abort();
    throw err;
  }
  progress(flags, `recording port${ports.length > 1 ? 's' : ''} ${ports.join(', ')} of ${target} into ${flags.output}${durationMs ? ` for ${flags.duration}` : ''}${sample < 100 ? `, keeping ${sample}% of exchanges` : ''}${filter ? ', only matching exchanges' : ''}; Ctrl-C stops and writes the file`);
  if (!flags.redact) progress(flags, 'warning: --no-redact: Authorization, cookies and every other value are written as they were sent');

  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      process.stderr.write('\ntsmirror: stopped again; the recording is abandoned\n');
      writer.abort();
      process.exit(128 + (osConstants.signals[signal] ?? 2));
    }
    stop(signal === 'SIGINT' ? 'Ctrl-C' : signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const timer = durationMs === undefined ? undefined : setTimeout(() => stop(`${flags.duration} passed (--duration)`), durationMs);
  const tty = process.stderr.isTTY === true;
  let lastLine = '';
  const line = (): string => `recording: ${stats.seen} exchanges seen, ${stats.kept} kept, ${kib(writer.bytes)} written`;
  const ticker = setInterval(() => {
    if (flags.quiet) return;
    const l = line();
    if (tty) process.stderr.write(`\r${l}\x1b[K`);
    else if (l !== lastLine) process.stderr.write(`tsmirror: ${l}\n`);
    lastLine = l;
  }, tty ? 500 : 5000);

  const why = await stopped;
  stopping = true;
  clearTimeout(timer);
  clearInterval(ticker);
  if (tty && !flags.quiet) process.stderr.write('\r\x1b[K');
  let failed: TsmError | undefined = agent.closedError;
  if (!agent.peer.closed) {
    // Exchanges already on their way are written: the subscriptions end first, then the
    // streams are read until quiet (their frames were sent before the unsubscribe's answer).
    await Promise.race([
      Promise.all(ports.map((port) => agent.request({ type: 'port.unsubscribe', port }).catch(() => undefined))),
      new Promise((r) => setTimeout(r, 3000)),
    ]);
    const until = Date.now() + 3000;
    while (Date.now() < until && Date.now() - lastFrame < 300) await new Promise((r) => setTimeout(r, 50));
  }
  failed ??= agent.closedError;
  agent.peer.off('message', onMessage);
  agent.close();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  const skippedTotal = [...stats.skipped.values()].reduce((a, b) => a + b, 0);
  writer.finish({
    target, ...(flags.namespace ? { namespace: flags.namespace } : {}), ports,
    redacted: flags.redact ? [...DEFAULT_REDACTED_HEADERS, ...flags.redactHeader] : [],
    redactedJsonPaths: flags.redact ? flags.redactJsonPath : [],
    sample,
    maxBody,
    ...(filter ? { filter } : {}),
    seen: stats.seen, kept: stats.kept, connections: stats.connections,
    skipped: Object.fromEntries(stats.skipped),
    stoppedBy: why,
  });
  if (!flags.quiet) {
    process.stderr.write(`tsmirror: stopped (${why}): ${stats.kept} of ${stats.seen} exchanges written to ${flags.output} (${kib(writer.bytes)}, mode 0600) from ${stats.connections} connections\n`);
    if (skippedTotal > 0) {
      process.stderr.write(`tsmirror: skipped (not recorded): ${[...stats.skipped].map(([reason, n]) => `${n} × ${reason}`).join('; ')}\n`);
    }
    if (stats.lost > 0) process.stderr.write(`tsmirror: ${stats.lost} connections' recordings were unreadable\n`);
  }
  if (failed && why === 'the session ended') {
    process.stderr.write(`tsmirror: the session ended: ${failed.code}: ${failed.message}\n`);
    return EXIT.TSMIRROR_FAILED;
  }
  return 0;
}
