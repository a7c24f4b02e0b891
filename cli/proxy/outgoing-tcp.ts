/**
 * Outgoing TCP (docs/ARCHITECTURE.md, "Outgoing TCP"). The proxy opens the connection in
 * the pod first (so the program sees the pod's error, e.g. ECONNREFUSED), then lets the
 * program's own socket connect to a loopback listener here and pairs the two: the shim's
 * attach (on the unix socket) names the program's socket (port and inode), the accept (on
 * the listener) is paired only when its peer is that socket (program-socket.ts), and
 * whichever of the two comes second completes the pair. Bytes never pass a hook.
 *
 * A non-blocking connect that the pod has not finished within HOLD_MS is answered at once
 * and completes on its own later: see held-connect.ts.
 */
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import type { AgentMessage, Family } from '../../protocol/messages.js';
import { loadAddon } from '../../native/index.js';
import { HeldConnect, type HeldListener } from './held-connect.js';
import { podRefusal, type Destination } from './outgoing-policy.js';
import { isProgramPeer, lookupPeerOwner, type PeerOwner, type PeerOwnerLookup, type ProgramSocketClaim } from './program-socket.js';
import type { ProxyAgent } from './proxy-agent.js';
import type { ShimReplyOf, ShimRequestOf } from '../../protocol/shim-wire.js';

/**
 * How long the pod may take on a non-blocking connect before the program's connect()
 * returns (EINPROGRESS) and the connection completes on its own. Refusals and in-cluster
 * connects are far quicker, so they stay exact; only slow or silent hosts are held.
 */
export const HOLD_MS = 100;

export interface OutgoingTcpOptions {
  /** An unpaired half (attach without accept, or the reverse) is dropped after this long. */
  pairTimeoutMs: number;
  /**
   * A held connect's pairing waits for the pod's connect, which the pod's kernel gives up
   * on after about 127 s (six SYN retries); released, it completes at once.
   */
  heldPairTimeoutMs: number;
  holdMs: number;
  /** Held connects at once (each keeps three fds here); beyond it a connect waits, as blocking ones do. */
  maxHeld: number;
  /** The held listener and its release (native/addon). */
  holdListen: (family: Family) => HeldListener;
  holdRelease: (family: Family, listenPort: number, clientPort: number) => number;
  /** Who owns the peer of an accepted (or released) connection. */
  peerOwner: PeerOwnerLookup;
}

export const DEFAULT_OUTGOING_TCP_OPTIONS: OutgoingTcpOptions = {
  pairTimeoutMs: 10000,
  heldPairTimeoutMs: 150000,
  holdMs: HOLD_MS,
  maxHeld: 256,
  holdListen: (family) => loadAddon().holdListen(family),
  holdRelease: (family, port, clientPort) => loadAddon().holdRelease(family, port, clientPort),
  peerOwner: lookupPeerOwner,
};

export interface OutgoingTcpStats {
  tcpConnects: number;
  /** Non-blocking connects answered before the pod's connect was done. */
  heldConnects: number;
}

/** An attach waiting for its connection. */
interface PendingClaim {
  stream: number;
  claim: ProgramSocketClaim;
  timer: NodeJS.Timeout;
}

/** An accepted connection waiting for the attach that claims it. */
interface PendingAccept {
  socket: net.Socket;
  owner: PeerOwner;
  timer: NodeJS.Timeout;
}

export class OutgoingTcp {
  readonly stats: OutgoingTcpStats = { tcpConnects: 0, heldConnects: 0 };
  readonly #agent: ProxyAgent;
  readonly #opts: OutgoingTcpOptions;
  readonly #listeners = new Map<Family, { server: net.Server; port: number }>();
  /** Attaches waiting for their connection, by the program's local port. */
  readonly #claims = new Map<number, PendingClaim>();
  /** Accepted connections waiting for their attach, by their peer's port (another user's may share it). */
  readonly #accepts = new Map<number, PendingAccept[]>();
  /** Held connects still waiting, by stream. */
  readonly #held = new Map<number, HeldConnect>();
  /**
   * What the pod said about a stream whose tcp.connect reply is not handled yet. The agent
   * sends its `pending` answer and then, as soon as the pod's connect is done, tcp.connected
   * (or the stream's close); both can arrive in one read, and the message is handled before
   * the reply's continuation has made the HeldConnect. Lost, the held connect would never be
   * released and the program's connect would hang (issue 12's flaky 64 x 50 test).
   */
  readonly #early = new Map<number, { connected: boolean; closed: boolean; errno?: number }>();
  /** Every loopback connection of the program, paired or not: they end with the session. */
  readonly #connections = new Set<net.Socket>();

  /** Not listening yet: see listen() (or start()). */
  constructor(agent: ProxyAgent, options: Partial<OutgoingTcpOptions> = {}) {
    this.#agent = agent;
    this.#opts = { ...DEFAULT_OUTGOING_TCP_OPTIONS, ...options };
    agent.peer.on('message', (m: AgentMessage) => {
      if (m.type !== 'tcp.connected') return;
      const held = this.#held.get(m.stream);
      if (held) held.podConnected();
      else {
        const early = this.#early.get(m.stream);
        if (early) early.connected = true;
      }
    });
  }

  static async start(agent: ProxyAgent, options: Partial<OutgoingTcpOptions> = {}): Promise<OutgoingTcp> {
    const tcp = new OutgoingTcp(agent, options);
    await tcp.listen();
    return tcp;
  }

  /** Listens on 127.0.0.1 and, where there is one, ::1. */
  async listen(): Promise<void> {
    for (const [family, host] of [[4, '127.0.0.1'], [6, '::1']] as const) {
      const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.#accepted(s));
      const port = await new Promise<number>((resolve) => {
        server.once('error', () => resolve(0)); // no IPv6 loopback here: IPv6 sockets use ::ffff:127.0.0.1
        server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
      });
      if (port > 0) this.#listeners.set(family, { server, port });
    }
  }

  get listening(): boolean {
    return this.#listeners.has(4);
  }

  /** Whether ::1 exists here: IPv6 program sockets reach the proxy there, else at ::ffff:127.0.0.1. */
  get hasIpv6Loopback(): boolean {
    return this.#listeners.has(6);
  }

  /** The loopback address a program socket of `family` reaches the proxy at. */
  proxyAddress(family: Family): string {
    if (family === 4) return '127.0.0.1';
    return this.hasIpv6Loopback ? '::1' : '::ffff:127.0.0.1';
  }

  /** Held connects still waiting (for tests and --verbose). */
  get heldCount(): number {
    return this.#held.size;
  }

  /** Opens the pod's connection for a `connect` to a remote destination, and tells the shim where to connect. */
  async connect(req: ShimRequestOf<'connect'>, dest: Extract<Destination, { action: 'remote' }>): Promise<ShimReplyOf['connect']> {
    const proxyAddr = this.proxyAddress(req.family);
    const stream = this.#agent.allocateStream();
    // A held connect's failure arrives as the stream's close: its listener goes with it.
    const early: { connected: boolean; closed: boolean; errno?: number } = { connected: false, closed: false };
    this.#early.set(stream, early);
    this.#agent.peer.mux.open(stream, (errno) => {
      const held = this.#held.get(stream);
      if (held) held.podFailed();
      else {
        early.closed = true;
        if (errno !== undefined) early.errno = errno;
      }
    });
    try {
      this.stats.tcpConnects++;
      const holdMs = req.nonblock === true && this.#held.size < this.#opts.maxHeld ? this.#opts.holdMs : 0;
      const r = await this.#agent.request({
        type: 'tcp.connect', stream, host: dest.address, port: req.port, family: dest.family, timeoutMs: req.timeoutMs ?? 0, ...(holdMs > 0 ? { holdMs } : {}),
      });
      if (r.pending === true) {
        if (early.closed) {
          // The pod's connect failed before its `pending` answer was handled: the program gets the error now.
          const errno = early.errno ?? osConstants.errno.ECONNREFUSED;
          return { ok: false, errno, message: `connect to ${dest.address}:${req.port} from the pod failed (errno ${errno})` };
        }
        const held = this.#hold(stream, proxyAddr === '::1' ? 6 : 4);
        // What happened to the pod's connect between the answer and now.
        if (!this.#agent.peer.mux.has(stream)) held.podFailed();
        this.stats.heldConnects++;
        if (early.connected) held.podConnected();
        return { ok: true, action: 'proxy', proxyAddr, proxyPort: held.listenPort, stream };
      }
      const listener = this.#listeners.get(req.family) ?? this.#listeners.get(4);
      return { ok: true, action: 'proxy', proxyAddr, proxyPort: listener?.port ?? 0, stream, localAddr: r.localAddress, localPort: r.localPort };
    } catch (err) {
      this.#agent.peer.mux.close(stream);
      const refusal = podRefusal(err);
      if (refusal) return refusal;
      throw err;
    } finally {
      this.#early.delete(stream);
    }
  }

  /** The shim's attach: the program's socket for `stream` has local port `port` and inode `inode`. */
  attach(n: ShimRequestOf<'attach'>): void {
    const claim: ProgramSocketClaim = { port: n.port, inode: n.inode, uid: n.uid };
    const held = this.#held.get(n.stream);
    if (held) {
      held.attached(claim);
      return;
    }
    const accepted = this.#accepts.get(n.port)?.find((a) => isProgramPeer(claim, n.port, a.owner));
    if (accepted) {
      this.#unqueue(n.port, accepted);
      this.#agent.peer.mux.bindSocket(n.stream, accepted.socket);
      return;
    }
    const replaced = this.#claims.get(n.port);
    if (replaced) clearTimeout(replaced.timer);
    const pending: PendingClaim = {
      stream: n.stream,
      claim,
      timer: setTimeout(() => {
        if (this.#claims.get(n.port) === pending) this.#claims.delete(n.port);
        this.#agent.peer.mux.close(n.stream);
      }, this.#opts.pairTimeoutMs),
    };
    this.#claims.set(n.port, pending);
  }

  async close(): Promise<void> {
    // A program that has exited leaves half-closed connections whose pod side may never
    // close (a server that keeps the connection open); they must not keep tsmirror alive.
    for (const c of this.#connections) c.destroy();
    for (const c of this.#claims.values()) clearTimeout(c.timer);
    this.#claims.clear();
    for (const a of [...this.#accepts.values()].flat()) {
      clearTimeout(a.timer);
      a.socket.destroy();
    }
    this.#accepts.clear();
    for (const held of [...this.#held.values()]) held.drop();
    const servers = [...this.#listeners.values()].map((l) => l.server);
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  #hold(stream: number, family: Family): HeldConnect {
    const held = new HeldConnect({
      family,
      listener: this.#opts.holdListen(family),
      release: this.#opts.holdRelease,
      peerOwner: this.#opts.peerOwner,
      onReleased: (socket) => {
        this.#track(socket);
        this.#agent.peer.mux.bindSocket(stream, socket);
      },
      closeStream: () => this.#agent.peer.mux.close(stream),
      onSettled: () => {
        if (this.#held.get(stream) === held) this.#held.delete(stream);
      },
      heldPairTimeoutMs: this.#opts.heldPairTimeoutMs,
      attachTimeoutMs: this.#opts.pairTimeoutMs,
    });
    this.#held.set(stream, held);
    return held;
  }

  #unqueue(port: number, accepted: PendingAccept): void {
    clearTimeout(accepted.timer);
    const rest = (this.#accepts.get(port) ?? []).filter((a) => a !== accepted);
    if (rest.length > 0) this.#accepts.set(port, rest);
    else this.#accepts.delete(port);
  }

  #track(socket: net.Socket): void {
    this.#connections.add(socket);
    socket.once('close', () => this.#connections.delete(socket));
    socket.on('error', () => undefined);
  }

  #accepted(socket: net.Socket): void {
    const port = socket.remotePort;
    // Asked at once: the peer's socket keeps its inode only while its owner has it open.
    const owner = port === undefined ? undefined : this.#opts.peerOwner(socket);
    if (port === undefined || !owner) {
      socket.destroy();
      return;
    }
    this.#track(socket);
    const claim = this.#claims.get(port);
    if (claim && isProgramPeer(claim.claim, port, owner)) {
      clearTimeout(claim.timer);
      this.#claims.delete(port);
      this.#agent.peer.mux.bindSocket(claim.stream, socket);
      return;
    }
    // Unclaimed (the attach is still on its way) or not the claimed socket (someone else's).
    const pending: PendingAccept = {
      socket,
      owner,
      timer: setTimeout(() => {
        this.#unqueue(port, pending);
        socket.destroy();
      }, this.#opts.pairTimeoutMs),
    };
    this.#accepts.set(port, [...(this.#accepts.get(port) ?? []), pending]);
  }
}
