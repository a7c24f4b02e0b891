/**
 * The CLI's side of incoming traffic. The shim reports the program's listen() and close()
 * of listening sockets (ops `listen`, `unlisten`) and asks who an accepted connection
 * really comes from (`peer`); see docs/shim-ipc.md. A listen on port P subscribes the
 * pod's port (P, or what --port-map says) on the agent; for every connection the agent
 * then opens a stream (`incoming.open`), which is relayed to the program's listener
 * through a loopback connection of our own. The program's accept() is told the real
 * client (the pod's peer) by matching that connection's local port.
 */
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import { RemoteError, TsmError } from '../protocol/errors.js';
import type { AgentMessage, HttpFilter, IncomingMode, IncomingOpen } from '../protocol/messages.js';
import { PORT_CONFLICT_HINT, checkHeaderFilterCount, filterNarrows, isHeaderName, isMethodName, wholeMatchPattern } from '../common/http-filter.js';
import { streamPair } from '../common/stream-pair.js';
import type { AgentConnection } from './agent-client.js';

/**
 * Debugger ports stay on this machine unless --ports names them: node --inspect (9229),
 * debugpy (5678), dlv (2345), the JVM's JDWP (5005) and Ruby's debug (12345).
 */
export const DEBUGGER_PORTS = new Set([9229, 9230, 5678, 2345, 5005, 12345]);

export interface IncomingOptions {
  mode: IncomingMode;
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
  holdMs?: number;
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
  const mode: IncomingMode = flags.steal || filtered ? 'steal' : 'mirror';
  const portMap = new Map<number, number>();
  for (const m of flags.portMap) {
    const parts = m.split(':');
    if (parts.length !== 2) throw new TsmError('TSM_ERR_USAGE', `--port-map "${m}" must be LOCAL:REMOTE`, { hint: 'e.g. --port-map 3000:8080 when the program listens on 3000 and the pod on 8080' });
    portMap.set(port(parts[0] ?? '', '--port-map'), port(parts[1] ?? '', '--port-map'));
  }
  const ports = flags.ports === undefined ? undefined : new Set(flags.ports.split(',').filter((p) => p.trim() !== '').map((p) => port(p, '--ports')));
  return { mode, filter: filtered ? filter : undefined, portMap, ports };
}

type ShimRequest = Record<string, unknown>;
type ShimResponse = Record<string, unknown> & { ok: boolean };

interface Listener {
  remotePort: number;
  localPort: number;
  host: string;
  count: number;
  /** The program is not listening (restarting): connections wait here. */
  down: { timer: NodeJS.Timeout; waiting: IncomingOpen[] } | undefined;
}

interface Relayed {
  info: IncomingOpen;
  socket: net.Socket;
}

function uint(v: unknown, field: string, max = 65535): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new TsmError('TSM_ERR_BAD_FRAME', `shim request has a bad "${field}"`);
  return v;
}

export class IncomingManager {
  readonly #agent: AgentConnection;
  readonly #opts: IncomingOptions;
  readonly #log: (line: string) => void;
  /** By pod port. */
  readonly #listeners = new Map<number, Listener>();
  /** Our loopback connections to the program, by their local port once known. */
  readonly #relayed = new Set<Relayed>();
  readonly #byPort = new Map<number, Relayed>();
  #closed = false;
  /** Counters for --verbose. */
  readonly stats = { connections: 0, refused: 0 };

  constructor(agent: AgentConnection, opts: IncomingOptions, log: (line: string) => void) {
    this.#agent = agent;
    this.#opts = opts;
    this.#log = log;
    agent.peer.on('message', (m: AgentMessage) => {
      if (m.type === 'incoming.open') this.#open(m);
    });
  }

  #describe(): string {
    if (this.#opts.mode === 'mirror') return 'mirroring';
    const f = this.#opts.filter;
    if (!f) return 'stealing all traffic on';
    const parts = [...f.headers.map((h) => `${h.name}: ${h.value}`), ...(f.path ? [`path ${f.path}`] : []), ...(f.method ? [`method ${f.method}`] : [])];
    return `stealing requests matching ${parts.join(', ')} on`;
  }

  /** op listen: { port: what the program asked, localPort: where it really listens, addr } */
  async listen(req: ShimRequest): Promise<ShimResponse> {
    const asked = uint(req.port, 'port');
    const localPort = uint(req.localPort, 'localPort');
    const addr = typeof req.addr === 'string' ? req.addr : '';
    const remotePort = this.#opts.portMap.get(asked) ?? asked;
    if (asked === 0 || (this.#opts.ports && !this.#opts.ports.has(remotePort))) return { ok: true, action: 'local' };
    if (!this.#opts.ports && DEBUGGER_PORTS.has(asked)) {
      this.#log(`port ${asked} stays local: it is a debugger port (name it in --ports to give it the pod's traffic)`);
      return { ok: true, action: 'local' };
    }
    if (this.#agent.hello.target.pid === 0 || !this.#agent.hello.capabilities.includes('incoming')) {
      this.#log(`port ${asked} stays local: ${this.#agent.hello.target.pid === 0 ? 'a targetless session has no pod traffic' : 'the agent does not offer incoming traffic'}`);
      return { ok: true, action: 'local' };
    }
    const host = addr === '::1' ? '::1' : '127.0.0.1';
    const have = this.#listeners.get(remotePort);
    if (have) {
      have.count++;
      have.localPort = localPort;
      have.host = host;
      if (have.down) {
        // Back after a restart: the connections that waited go to the new listener.
        clearTimeout(have.down.timer);
        const waiting = have.down.waiting;
        have.down = undefined;
        if (waiting.length > 0) this.#log(`port ${remotePort}: ${waiting.length} connection(s) waited for the restart`);
        for (const m of waiting) this.#connectLocal(m, have);
      }
      return { ok: true, action: 'remote' };
    }
    try {
      await this.#agent.request({ type: 'port.subscribe', port: remotePort, mode: this.#opts.mode, ...(this.#opts.filter ? { filter: this.#opts.filter } : {}) });
    } catch (err) {
      const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_INTERNAL', String(err));
      process.stderr.write(`tsmirror: cannot take port ${remotePort} of the pod: ${e.message} [${e.code}]\n`);
      if (e.hint) process.stderr.write(`  → ${e.hint}\n`);
      else if (e.code === 'TSM_ERR_PORT_CONFLICT') process.stderr.write(`  → ${PORT_CONFLICT_HINT}\n`);
      const errno = err instanceof RemoteError && err.code === 'TSM_ERR_PORT_CONFLICT' ? osConstants.errno.EADDRINUSE : osConstants.errno.EACCES;
      return { ok: false, errno, message: e.message };
    }
    this.#listeners.set(remotePort, { remotePort, localPort, host, count: 1, down: undefined });
    this.#log(`${this.#describe()} port ${remotePort} of the pod → local port ${localPort}${localPort !== asked ? ` (the program asked for ${asked}, which is taken here)` : ''}`);
    return { ok: true, action: 'remote' };
  }

  /** op unlisten (notification): { port: what the program asked } */
  unlisten(req: ShimRequest): void {
    let asked: number;
    try {
      asked = uint(req.port, 'port');
    } catch {
      return;
    }
    const remotePort = this.#opts.portMap.get(asked) ?? asked;
    const l = this.#listeners.get(remotePort);
    if (!l || l.down) return;
    if (--l.count > 0) return;
    if (this.#opts.holdMs) this.#markDown(l);
    else this.#release(l);
  }

  /** The program stopped (--watch restarts it): every port waits for it to listen again. */
  programStopped(): void {
    if (!this.#opts.holdMs) return;
    for (const l of this.#listeners.values()) this.#markDown(l);
  }

  #markDown(l: Listener): void {
    if (l.down || this.#closed) return;
    l.count = 0;
    l.down = { timer: setTimeout(() => this.#release(l), this.#opts.holdMs ?? 0).unref(), waiting: [] };
  }

  /** Unsubscribes; connections still waiting go to the pod's app. */
  #release(l: Listener): void {
    if (this.#listeners.get(l.remotePort) !== l) return;
    this.#listeners.delete(l.remotePort);
    if (l.down) {
      clearTimeout(l.down.timer);
      for (const m of l.down.waiting) this.#agent.peer.mux.close(m.stream, osConstants.errno.ECONNREFUSED);
      l.down = undefined;
    }
    const remotePort = l.remotePort;
    this.#agent.request({ type: 'port.unsubscribe', port: remotePort }).then(
      () => this.#log(`port ${remotePort} of the pod is back to the pod's app alone`),
      () => undefined,
    );
  }

  /** op peer: { port: the peer port of a connection the program accepted on loopback } */
  peer(req: ShimRequest): ShimResponse {
    const p = uint(req.port, 'port');
    let r = this.#byPort.get(p);
    if (!r) {
      // Our connect may not have reported yet: ask the sockets themselves.
      for (const c of this.#relayed) {
        const a = c.socket.address();
        if ('port' in a && a.port === p) {
          r = c;
          this.#byPort.set(p, c);
          break;
        }
      }
    }
    if (!r) return { ok: true, action: 'local' };
    const i = r.info;
    return { ok: true, action: 'remote', addr: i.remoteAddress, port: i.remotePort, localAddr: i.localAddress, localPort: i.localPort };
  }

  #open(m: IncomingOpen): void {
    const mux = this.#agent.peer.mux;
    if (mux.has(m.stream)) return;
    mux.open(m.stream);
    const l = this.#listeners.get(m.port);
    if (!l || this.#closed) {
      this.stats.refused++;
      mux.close(m.stream, osConstants.errno.ECONNREFUSED);
      return;
    }
    if (l.down) {
      l.down.waiting.push(m); // the program is restarting; its bytes wait in the stream's window
      return;
    }
    this.#connectLocal(m, l);
  }

  #connectLocal(m: IncomingOpen, l: Listener): void {
    const mux = this.#agent.peer.mux;
    this.stats.connections++;
    const socket = net.connect({ port: l.localPort, host: l.host, allowHalfOpen: true, noDelay: true });
    const r: Relayed = { info: m, socket };
    this.#relayed.add(r);
    let bound = false;
    socket.once('connect', () => {
      if (socket.localPort !== undefined) this.#byPort.set(socket.localPort, r);
      bound = true;
      if (m.mode === 'steal') {
        mux.bindSocket(m.stream, socket);
        return;
      }
      // A mirror's replies go nowhere: drop them here rather than send them to the agent.
      const [toAgent, local] = streamPair();
      mux.bindSocket(m.stream, toAgent);
      local.pipe(socket);
      socket.on('data', () => undefined);
      socket.once('close', () => local.destroy());
    });
    let refused = false;
    socket.on('error', (err: Error & { code?: string }) => {
      refused = err.code === 'ECONNREFUSED';
    });
    socket.once('close', () => {
      this.#relayed.delete(r);
      for (const [k, v] of this.#byPort) if (v === r) this.#byPort.delete(k);
      if (bound) return;
      if (refused && this.#opts.holdMs && !this.#closed && this.#listeners.get(l.remotePort) === l) {
        // The program died without closing its listener (SIGKILL): wait for it to return.
        this.#markDown(l);
        l.down?.waiting.push(m);
        return;
      }
      // Never connected (the program stopped listening): the agent hands the request to the pod's app.
      mux.close(m.stream, osConstants.errno.ECONNREFUSED);
    });
  }

  close(): void {
    this.#closed = true;
    for (const l of this.#listeners.values()) if (l.down) clearTimeout(l.down.timer);
    for (const r of this.#relayed) r.socket.destroy();
    this.#relayed.clear();
    this.#byPort.clear();
  }
}
