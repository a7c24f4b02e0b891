/**
 * Outgoing UDP (docs/ARCHITECTURE.md, "Outgoing UDP"): each (socket, destination) flow of
 * the program gets a relay socket here and a connected UDP socket in the pod (`udp.open`).
 * The shim (or the supervisor) sends the program's datagrams to the relay; what the pod
 * receives comes back from it. Only the first sender (the program's socket) is relayed.
 * Idle flows close.
 *
 * A flow to one of the pod's nameservers on port 53 goes to a DNS relay instead (when the
 * agent sends DNS messages): each datagram that is a plain query is answered through the
 * session's DNS (dns.ts: the packet cache, else the agent's `dns.query`), with no UDP
 * socket in the pod and no `udp.open` round trip; anything else (not DNS, another opcode, a
 * truncated query) goes the usual way, through a pod flow opened for its sender when the
 * first such datagram comes.
 *
 * There is one DNS relay per nameserver and family, shared by every socket of the session
 * (the reply's `sharedUid`), so the shim and the supervisor ask for it once and then connect
 * each new socket to it themselves: Go's resolver makes a socket per query, and the question
 * was a round trip to the proxy each time. Since any local process can send to a loopback
 * port, the relay serves only sockets of the session's owner: a sock_diag lookup of each
 * datagram's sender (its socket's uid), where a relay of one flow serves its first sender.
 *
 * A relay whose program socket is gone is closed, with its pod flow, at the next sweep
 * (every `sweepMs`): a sock_diag lookup asks whether a socket still receives from the relay
 * at the program's address. Programs whose resolver makes a socket per query (Go's, for one:
 * 8 for a name below ndots) would otherwise leave thousands of relays, and as many sockets
 * in the pod for other UDP, open until they idle out.
 */
import dgram from 'node:dgram';
import type net from 'node:net';
import { loadAddon } from '../../native/index.js';
import { plainQuery, type PlainQuery } from '../../common/dns-message.js';
import type { Family } from '../../protocol/messages.js';
import { podRefusal, type Destination } from './outgoing-policy.js';
import type { ProxyAgent } from './proxy-agent.js';
import type { ShimReplyOf, ShimRequestOf } from '../../protocol/shim-wire.js';

export interface UdpRelayOptions {
  /** A flow with no datagram either way for this long is closed (both ends). */
  idleMs: number;
  /** How often the relays are checked for a program socket that is gone (0: never). */
  sweepMs: number;
}

/** What a DNS relay needs of the session's DNS (dns.ts PodDns). */
export interface UdpDnsAnswerer {
  /** Whether a flow to `address`:`port` gets a DNS relay. */
  answersUdpFlow(address: string, port: number): boolean;
  /** The datagram to send back for a plain query, or undefined for none. */
  answerUdp(query: Uint8Array, q: PlainQuery): Promise<Uint8Array | undefined>;
}

/** Queries of one program socket waiting for their answers at once; more are dropped, as a busy nameserver's socket would. */
const MAX_DNS_IN_FLIGHT = 64;
/** Program sockets a shared DNS relay keeps state for (a pod flow, queries in flight); past it, the oldest is let go. */
const MAX_DNS_SENDERS = 1024;
/** Datagrams kept for a DNS relay's pod flow while it opens. */
const MAX_QUEUED = 16;

type Remote = Extract<Destination, { action: 'remote' }>;

/** What the sweep needs of an open relay: where it is, whom it serves, and how it ends. */
interface OpenRelay {
  family: Family;
  /** The relay's own loopback address and port. */
  address: string;
  port: number;
  program: { address: string; port: number } | undefined;
  /** The program socket's inode, when it was named by an `attach`. */
  programInode?: number;
  close(): void;
}

/** A shared DNS relay: its port, and the program sockets it has served (by "address|port"), oldest first. */
interface SharedDnsRelay {
  family: Family;
  address: string;
  port: number;
  socket: dgram.Socket;
  senders: Map<string, { address: string; port: number; ends: RelayEnds }>;
}

/** A relay's two ends: `fromProgram` for each datagram of the program; `toProgram` sends one back. */
interface RelayEnds {
  fromProgram(msg: Buffer): void;
  close(): void;
}

export class UdpRelays {
  /** `udpFlows`: flows opened in the pod (`udp.open`); `dnsFlows`: flows given a DNS relay. */
  readonly stats = { udpFlows: 0, dnsFlows: 0 };
  readonly #agent: ProxyAgent;
  readonly #dns: UdpDnsAnswerer | undefined;
  readonly #opts: UdpRelayOptions;
  readonly #relays = new Map<dgram.Socket, OpenRelay>();
  /** The relays of flows through the pod, by their stream (what an `attach` names). */
  readonly #byStream = new Map<number, OpenRelay>();
  /** Shared DNS relays by "family|nameserver|port" (a promise while the first one binds). */
  readonly #sharedDns = new Map<string, Promise<SharedDnsRelay | undefined>>();
  /** The shared DNS relays that are open (what the sweep and close() go through). */
  readonly #sharedOpen: SharedDnsRelay[] = [];
  /** Whose sockets the shared DNS relays serve: the session's (the proxy's own uid). */
  readonly #uid = process.getuid?.();
  #sweeper: NodeJS.Timeout | undefined;

  constructor(agent: ProxyAgent, options: Partial<UdpRelayOptions> = {}, dns?: UdpDnsAnswerer) {
    this.#agent = agent;
    this.#dns = dns;
    this.#opts = { idleMs: 120000, sweepMs: 2000, ...options };
  }

  /** Relays currently open. */
  get size(): number {
    return this.#relays.size;
  }

  /**
   * Opens the pod's side of a flow to `dest` and a relay on the loopback address `proxyAddr`
   * (the program's socket family decides which one it can reach).
   */
  async open(req: ShimRequestOf<'connect'>, dest: Remote, proxyAddr: string): Promise<ShimReplyOf['connect']> {
    const family: Family = proxyAddr === '::1' ? 6 : 4;
    if (this.#dns?.answersUdpFlow(dest.address, req.port)) {
      // No socket in the pod: getsockname reports the program's own (loopback) address. A
      // socket of another owner (a program that dropped its privileges) gets a relay of its
      // own, which serves its first sender: the shared one serves the session's uid only.
      const shared = req.uid !== undefined && req.uid === this.#uid ? await this.#sharedDnsRelay(family, req, dest) : undefined;
      if (shared && req.uid !== undefined) return { ok: true, action: 'proxy', proxyAddr, proxyPort: shared.port, stream: 0, sharedUid: req.uid };
      this.stats.dnsFlows++;
      const relayPort = await this.#relay(family, (toProgram) => this.#dnsEnds(req, dest, toProgram));
      return { ok: true, action: 'proxy', proxyAddr, proxyPort: relayPort, stream: 0 };
    }
    const stream = this.#agent.allocateStream();
    try {
      const r = await this.#openInPod(stream, req, dest);
      const relayPort = await this.#relay(family, (toProgram) => this.#podEnds(stream, toProgram), stream);
      return { ok: true, action: 'proxy', proxyAddr, proxyPort: relayPort, stream, localAddr: r.localAddress, localPort: r.localPort };
    } catch (err) {
      const refusal = podRefusal(err);
      if (refusal) return refusal;
      throw err;
    }
  }

  /**
   * `attach` after the program's socket was connected to the relay of flow `stream` (it
   * comes on the session's own channel): from then on the relay serves that socket, and the
   * sweep ends the flow once no socket with that inode is there, even if it never sent (it
   * may be closed before this arrives). One for a flow already closed is dropped.
   */
  attach(n: ShimRequestOf<'attach'>): void {
    const r = this.#byStream.get(n.stream);
    if (!r || r.program) return;
    r.program = { address: r.address, port: n.port };
    r.programInode = n.inode;
  }

  close(): void {
    for (const relay of this.#relays.keys()) relay.close();
    this.#relays.clear();
    this.#byStream.clear();
    for (const shared of this.#sharedOpen) {
      shared.socket.close();
      for (const s of shared.senders.values()) s.ends.close();
      shared.senders.clear();
    }
    this.#sharedOpen.length = 0;
    this.#sharedDns.clear();
    this.#stopSweeping();
  }

  /**
   * The shared DNS relay for `dest`, opened the first time; undefined where its senders'
   * owners cannot be looked up (no sock_diag for UDP): each flow then gets a relay of its own.
   */
  #sharedDnsRelay(family: Family, req: ShimRequestOf<'connect'>, dest: Remote): Promise<SharedDnsRelay | undefined> {
    const key = `${family}|${dest.address}|${req.port}`;
    let pending = this.#sharedDns.get(key);
    if (!pending) {
      pending = this.#openSharedDns(family, req, dest);
      this.#sharedDns.set(key, pending);
    }
    return pending;
  }

  async #openSharedDns(family: Family, req: ShimRequestOf<'connect'>, dest: Remote): Promise<SharedDnsRelay | undefined> {
    if (this.#uid === undefined) return undefined;
    const socket = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
    const address = family === 4 ? '127.0.0.1' : '::1';
    const bound = await new Promise<boolean>((resolve) => {
      socket.once('error', () => resolve(false));
      socket.bind(0, address, () => resolve(true));
    });
    socket.on('error', () => undefined);
    if (!bound) {
      socket.close();
      return undefined; // no loopback port for it: each flow gets a relay of its own
    }
    const port = (socket.address() as net.AddressInfo).port;
    const shared: SharedDnsRelay = { family, address, port, socket, senders: new Map() };
    // Our own socket, "sending" to itself: a lookup that must find it, or this kernel has no
    // UDP sock_diag and no sender could be checked.
    if (this.#owner(shared, address, port)?.uid !== this.#uid) {
      socket.close();
      return undefined;
    }
    socket.on('message', (msg, rinfo) => {
      // Every datagram's sender is checked: its port may have been given up and taken again.
      if (this.#owner(shared, rinfo.address, rinfo.port)?.uid !== this.#uid) return;
      const key = `${rinfo.address}|${rinfo.port}`;
      let sender = shared.senders.get(key);
      if (!sender) {
        if (shared.senders.size >= MAX_DNS_SENDERS) this.#letGoOldest(shared);
        const to = { address: rinfo.address, port: rinfo.port };
        sender = { ...to, ends: this.#dnsEnds(req, dest, (data) => socket.send(data, to.port, to.address)) };
        shared.senders.set(key, sender);
        this.stats.dnsFlows++;
      }
      sender.ends.fromProgram(msg);
    });
    this.#sharedOpen.push(shared);
    if (this.#opts.sweepMs > 0) this.#sweeper ??= setInterval(() => this.#sweep(), this.#opts.sweepMs).unref();
    return shared;
  }

  #letGoOldest(shared: SharedDnsRelay): void {
    const [key, oldest] = shared.senders.entries().next().value ?? [];
    if (key === undefined || !oldest) return;
    oldest.ends.close();
    shared.senders.delete(key);
  }

  /**
   * The socket that receives from `relay` at `address`:`port` (its inode and uid), null for
   * none, undefined where sock_diag cannot look UDP up.
   */
  #owner(relay: { family: Family; address: string; port: number }, address: string, port: number): { inode: number; uid: number } | null | undefined {
    try {
      return loadAddon().udpReceiverOwner(relay.family, address, port, relay.address, relay.port);
    } catch {
      return undefined;
    }
  }

  /** Closes the relays, and lets go of the shared DNS relays' senders, whose program socket no longer exists. */
  #sweep(): void {
    // True when the program's socket (with `inode`, if known) is gone; undefined: no lookup here.
    const gone = (relay: { family: Family; address: string; port: number }, program: { address: string; port: number }, inode?: number): boolean | undefined => {
      const owner = this.#owner(relay, program.address, program.port);
      return owner === undefined ? undefined : !owner || (inode !== undefined && owner.inode !== inode);
    };
    const stop = (): void => {
      this.#opts.sweepMs = 0; // no sock_diag for UDP here: the idle timers alone end relays
      this.#stopSweeping();
    };
    for (const r of [...this.#relays.values()]) {
      if (!r.program) continue; // nothing sent nor attached yet: the idle timer ends it
      const g = gone(r, r.program, r.programInode);
      if (g === undefined) return stop();
      if (g) r.close();
    }
    for (const shared of this.#sharedOpen) {
      for (const [key, s] of [...shared.senders]) {
        const g = gone(shared, s);
        if (g === undefined) return stop();
        if (g) {
          s.ends.close();
          shared.senders.delete(key);
        }
      }
    }
  }

  #stopSweeping(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  /** `udp.open`: a connected UDP socket in the pod for stream `stream` (closed again when it fails). */
  async #openInPod(stream: number, req: ShimRequestOf<'connect'>, dest: Remote): Promise<{ localAddress: string; localPort: number }> {
    this.#agent.peer.mux.open(stream);
    try {
      this.stats.udpFlows++;
      return await this.#agent.request({ type: 'udp.open', stream, host: dest.address, port: req.port, family: dest.family });
    } catch (err) {
      this.#agent.peer.mux.close(stream);
      throw err;
    }
  }

  /** A flow through the pod: datagrams both ways on stream `stream`. */
  #podEnds(stream: number, toProgram: (data: Uint8Array) => void): RelayEnds {
    const send = this.#agent.peer.mux.bindDatagrams(stream, toProgram);
    return { fromProgram: send, close: () => this.#agent.peer.mux.close(stream) };
  }

  /**
   * A DNS relay: plain queries answered by the session's DNS, the rest through a pod flow
   * opened for the first of them (and kept for the relay's life).
   */
  #dnsEnds(req: ShimRequestOf<'connect'>, dest: Remote, toProgram: (data: Uint8Array) => void): RelayEnds {
    const dns = this.#dns!;
    let inFlight = 0;
    let closed = false;
    let pod: RelayEnds | undefined;
    let queued: Buffer[] | undefined;
    const throughPod = (msg: Buffer): void => {
      if (pod) return pod.fromProgram(msg);
      if (queued) {
        if (queued.length < MAX_QUEUED) queued.push(msg);
        return;
      }
      queued = [msg];
      const stream = this.#agent.allocateStream();
      this.#openInPod(stream, req, dest).then(() => {
        if (closed) return this.#agent.peer.mux.close(stream);
        pod = this.#podEnds(stream, (data) => toProgram(data));
        for (const m of queued ?? []) pod.fromProgram(m);
        queued = undefined;
      }, () => {
        queued = undefined; // refused in the pod: those datagrams are lost, as UDP may lose them; the next one tries again
      });
    };
    return {
      fromProgram: (msg) => {
        const q = plainQuery(msg);
        if (!q) return throughPod(msg);
        if (inFlight >= MAX_DNS_IN_FLIGHT) return;
        inFlight++;
        void dns.answerUdp(msg, q).then((answer) => {
          inFlight--;
          if (answer) toProgram(answer);
        }).catch(() => undefined);
      },
      close: () => {
        closed = true;
        pod?.close();
      },
    };
  }

  /**
   * A relay socket on loopback for one flow: the first sender is the program, whose
   * datagrams go to `ends`; what `ends` sends back goes to it. Closed when idle.
   */
  async #relay(family: Family, makeEnds: (toProgram: (data: Uint8Array) => void) => RelayEnds, stream?: number): Promise<number> {
    const relay = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
    const open: OpenRelay = { family, address: family === 4 ? '127.0.0.1' : '::1', port: 0, program: undefined, close: () => close() };
    this.#relays.set(relay, open);
    if (stream !== undefined) this.#byStream.set(stream, open);
    await new Promise<void>((resolve) => relay.bind(0, open.address, resolve));
    open.port = (relay.address() as net.AddressInfo).port;
    if (this.#opts.sweepMs > 0) this.#sweeper ??= setInterval(() => this.#sweep(), this.#opts.sweepMs).unref();
    // Idle timers never keep the CLI alive after the program has exited.
    let idle = setTimeout(() => close(), this.#opts.idleMs).unref();
    const touch = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => close(), this.#opts.idleMs).unref();
    };
    let alive = true;
    const ends = makeEnds((data) => {
      if (!alive) return; // an answer that came after the relay closed
      touch();
      if (open.program) relay.send(data, open.program.port, open.program.address);
    });
    const close = (): void => {
      clearTimeout(idle);
      if (this.#relays.delete(relay)) relay.close();
      if (stream !== undefined && this.#byStream.get(stream) === open) this.#byStream.delete(stream);
      if (this.#relays.size === 0 && this.#sharedOpen.length === 0) this.#stopSweeping();
      ends.close();
    };
    relay.on('message', (msg, rinfo) => {
      touch();
      const program = open.program ??= { address: rinfo.address, port: rinfo.port };
      if (rinfo.port === program.port && rinfo.address === program.address) ends.fromProgram(msg);
    });
    relay.on('error', () => undefined);
    relay.once('close', () => {
      alive = false;
      clearTimeout(idle);
    });
    return open.port;
  }
}
