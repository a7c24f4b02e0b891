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
import { RemoteError, TsmError } from '../../protocol/errors.js';
import type { AgentMessage, IncomingOpen } from '../../protocol/messages.js';
import { PORT_CONFLICT_HINT } from '../../common/http-filter.js';
import { streamPair } from '../../common/stream-pair.js';
import { DEBUGGER_PORTS, type IncomingOptions } from './incoming-flags.js';
import type { ProxyAgent } from './proxy-agent.js';
import type { ShimReplyOf, ShimRequestOf } from '../../protocol/shim-wire.js';

interface Listener {
  remotePort: number;
  localPort: number;
  host: string;
  count: number;
  /** The program is not listening (--watch restarts it): connections wait here for it to listen again. */
  awaitingRelisten: { timer: NodeJS.Timeout; waiting: IncomingOpen[] } | undefined;
}

interface Relayed {
  info: IncomingOpen;
  socket: net.Socket;
  /** The program's listener port it connects to. */
  listenerPort: number;
}

export class IncomingManager {
  readonly #agent: ProxyAgent;
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

  constructor(agent: ProxyAgent, opts: IncomingOptions, log: (line: string) => void) {
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
  async listen(req: ShimRequestOf<'listen'>): Promise<ShimReplyOf['listen']> {
    const { port: asked, localPort } = req;
    const addr = req.addr ?? '';
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
      if (have.awaitingRelisten) {
        // Back after a restart: the connections that waited go to the new listener.
        clearTimeout(have.awaitingRelisten.timer);
        const waiting = have.awaitingRelisten.waiting;
        have.awaitingRelisten = undefined;
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
    this.#listeners.set(remotePort, { remotePort, localPort, host, count: 1, awaitingRelisten: undefined });
    this.#log(`${this.#describe()} port ${remotePort} of the pod → local port ${localPort}${localPort !== asked ? ` (the program asked for ${asked}, which is taken here)` : ''}`);
    return { ok: true, action: 'remote' };
  }

  /**
   * The session was re-established (a new session on the agent): every port the program
   * listens on is subscribed again; connections that waited for a restart were reset with
   * the old session's streams.
   */
  async resubscribe(): Promise<void> {
    for (const l of [...this.#listeners.values()]) {
      if (l.awaitingRelisten) l.awaitingRelisten.waiting = [];
      try {
        await this.#agent.request({ type: 'port.subscribe', port: l.remotePort, mode: this.#opts.mode, ...(this.#opts.filter ? { filter: this.#opts.filter } : {}) });
        this.#log(`port ${l.remotePort} of the pod subscribed again (${this.#describe()} it)`);
      } catch (err) {
        const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_INTERNAL', String(err));
        process.stderr.write(`tsmirror: cannot take port ${l.remotePort} of the pod again after the new session: ${e.message} [${e.code}]\n`);
      }
    }
  }

  /** op unlisten (notification): { port: what the program asked } */
  unlisten(req: ShimRequestOf<'unlisten'>): void {
    const asked = req.port;
    const remotePort = this.#opts.portMap.get(asked) ?? asked;
    const l = this.#listeners.get(remotePort);
    if (!l || l.awaitingRelisten) return;
    if (--l.count > 0) return;
    if (this.#opts.relistenWaitMs) this.#awaitRelisten(l);
    else this.#unsubscribe(l);
  }

  /** The program stopped (--watch restarts it): every port waits for it to listen again. */
  programStopped(): void {
    if (!this.#opts.relistenWaitMs) return;
    for (const l of this.#listeners.values()) this.#awaitRelisten(l);
  }

  /** Keeps the port subscribed for a while: its connections wait for the program to listen again. */
  #awaitRelisten(l: Listener): void {
    if (l.awaitingRelisten || this.#closed) return;
    l.count = 0;
    l.awaitingRelisten = { timer: setTimeout(() => this.#unsubscribe(l), this.#opts.relistenWaitMs ?? 0).unref(), waiting: [] };
  }

  /** Unsubscribes; connections still waiting go to the pod's app. */
  #unsubscribe(l: Listener): void {
    if (this.#listeners.get(l.remotePort) !== l) return;
    this.#listeners.delete(l.remotePort);
    if (l.awaitingRelisten) {
      clearTimeout(l.awaitingRelisten.timer);
      for (const m of l.awaitingRelisten.waiting) this.#agent.peer.mux.close(m.stream, osConstants.errno.ECONNREFUSED);
      l.awaitingRelisten = undefined;
    }
    const remotePort = l.remotePort;
    this.#agent.request({ type: 'port.unsubscribe', port: remotePort }).then(
      () => this.#log(`port ${remotePort} of the pod is back to the pod's app alone`),
      () => undefined,
    );
  }

  /**
   * op peer: { port, addr: the peer of a connection the program accepted on loopback,
   * localPort: the connection's own port }. Any local user can connect to the program's
   * listener, from any loopback address and port: only a connection whose four-tuple is
   * one of ours (a live connection's is unique) stands for a pod client.
   */
  peer(req: ShimRequestOf<'peer'>): ShimReplyOf['peer'] {
    const p = req.port;
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
    if (!r || !isOurConnection(r, req)) return { ok: true, action: 'local' };
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
    if (l.awaitingRelisten) {
      l.awaitingRelisten.waiting.push(m); // the program is restarting; its bytes wait in the stream's window
      return;
    }
    this.#connectLocal(m, l);
  }

  #connectLocal(m: IncomingOpen, l: Listener): void {
    const mux = this.#agent.peer.mux;
    this.stats.connections++;
    const socket = net.connect({ port: l.localPort, host: l.host, allowHalfOpen: true, noDelay: true });
    const r: Relayed = { info: m, socket, listenerPort: l.localPort };
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
      if (refused && this.#opts.relistenWaitMs && !this.#closed && this.#listeners.get(l.remotePort) === l) {
        // The program died without closing its listener (SIGKILL): wait for it to return.
        this.#awaitRelisten(l);
        l.awaitingRelisten?.waiting.push(m);
        return;
      }
      // Never connected (the program stopped listening): the agent hands the request to the pod's app.
      mux.close(m.stream, osConstants.errno.ECONNREFUSED);
    });
  }

  close(): void {
    this.#closed = true;
    for (const l of this.#listeners.values()) if (l.awaitingRelisten) clearTimeout(l.awaitingRelisten.timer);
    for (const r of this.#relayed) r.socket.destroy();
    this.#relayed.clear();
    this.#byPort.clear();
  }
}

/** Whether the program's accepted connection (its peer `addr`:`port`, its own `localPort`) is the other end of `r`'s. */
function isOurConnection(r: Relayed, accepted: { addr: string; port: number; localPort: number }): boolean {
  // Its own address (getsockname) is there while node still reports it connecting; its peer's is not.
  const ours = r.socket.address();
  if (r.socket.destroyed || !('port' in ours) || ours.port !== accepted.port || r.listenerPort !== accepted.localPort) return false;
  return unmapped(ours.address) === unmapped(accepted.addr);
}

function unmapped(address: string): string {
  return address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}
