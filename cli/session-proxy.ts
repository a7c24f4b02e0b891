/**
 * The session proxy: answers the shim's questions (docs/shim-ipc.md) on a private unix
 * socket, and relays the program's remote connections through the agent session.
 *
 * For a remote TCP connect it opens the connection in the pod first (so the program sees
 * the pod's error, e.g. ECONNREFUSED), then lets the program's own socket connect to a
 * loopback listener here and pairs the two by the program's local port. Bytes never pass
 * through a hook. UDP flows get a relay socket each.
 *
 * A non-blocking connect that the pod has not finished within HOLD_MS is answered at once:
 * the program's socket connects to a held listener (native/addon: its SYN is dropped, so
 * the socket stays "connecting" to poll and epoll), and is connected by a TCP
 * simultaneous open when the pod's connection is made, or refused when it fails. The
 * program's own connect timeout therefore works, and its event loop never waits for the pod.
 */
import dgram from 'node:dgram';
import { chmodSync, closeSync, lstatSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { packPlain, unpackPlain } from '../protocol/codec.js';
import { RemoteError, TsmError } from '../protocol/errors.js';
import { SHIM_MAX_FRAME_BYTES } from '../protocol/shim-wire.js';
import type { AgentMessage, Family } from '../protocol/messages.js';
import { loadAddon } from '../native/index.js';
import type { AgentConnection } from './agent-client.js';
import { FileProxy, type FileRules } from './files.js';
import type { IncomingManager } from './incoming.js';
import { route, unmapAddress, type RoutingPolicy } from './routing.js';

const MAX_SHIM_FRAME = SHIM_MAX_FRAME_BYTES;
const EAI_AGAIN = -3;
const EAI_NONAME = -2;
const PAIR_TIMEOUT_MS = 10000;
/**
 * How long the pod may take on a non-blocking connect before the program's connect()
 * returns (EINPROGRESS) and the connection completes on its own. Refusals and in-cluster
 * connects are far quicker, so they stay exact; only slow or silent hosts are held.
 */
export const HOLD_MS = 100;
/** Held connects at once (each keeps three fds here); beyond it a connect waits, as blocking ones do. */
const MAX_HOLDS = 256;
/**
 * A held connect's pairing waits for the pod's connect, which the pod's kernel gives up
 * on after about 127 s (six SYN retries); released, it completes at once.
 */
const HELD_PAIR_TIMEOUT_MS = 150000;
const UDP_IDLE_MS = 120000;
/** The private folder of a session: its unix socket and pod-file scratch space. */
const DIR_PREFIX = 'tsmirror-';

/**
 * Removes the private folders that sessions killed without a chance to clean up (SIGKILL,
 * a crash) left in the temporary folder: those of this user whose CLI pid is gone.
 * Returns how many it removed. Cheap enough to run once per session, off its start path.
 */
export function sweepStaleSessionDirs(dir = tmpdir()): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  const uid = process.getuid?.() ?? -1;
  const pattern = new RegExp(`^${DIR_PREFIX}(\\d+)-[A-Za-z0-9]{6}$`);
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue; // alive (or a pid reused by another process): leave it
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    const path = join(dir, name);
    try {
      const st = lstatSync(path);
      if (!st.isDirectory() || st.uid !== uid) continue;
      rmSync(path, { recursive: true, force: true });
      removed++;
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  return removed;
}


export interface ProxyStats {
  tcpConnects: number;
  /** Non-blocking connects answered before the pod's connect was done. */
  heldConnects: number;
  udpFlows: number;
  lookups: number;
  localPassThrough: number;
  failures: number;
}

export interface SessionProxyOptions {
  routing: RoutingPolicy;
  /** Nameservers of this machine: DNS packets sent to them go to the pod's nameserver. */
  localNameservers: string[];
  podNameservers: string[];
  log: (line: string) => void;
  /** Pod files (cli/files.ts); without it every file op is answered "local". */
  files?: FileRules;
  /** Incoming traffic (listen/unlisten/peer ops); without it the program's listeners stay local. */
  incoming?: IncomingManager;
}

type ShimRequest = Record<string, unknown> & { op?: unknown };
type ShimResponse = Record<string, unknown> & { ok: boolean };

interface PendingPair {
  stream: number | undefined;
  socket: net.Socket | undefined;
  timer: NodeJS.Timeout;
}

/** A non-blocking connect answered before the pod's connect finished (see the top). */
interface Hold {
  family: Family;
  listenFd: number;
  port: number;
  fillers: number[];
  /** The program's local port, once its attach arrived. */
  clientPort: number | undefined;
  /** The pod's connection is made (tcp.connected arrived). */
  connected: boolean;
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.length > 1024) throw new TsmError('TSM_ERR_BAD_FRAME', `shim request has a bad "${field}"`);
  return v;
}

function uint(v: unknown, field: string, max = 0xffffffff): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new TsmError('TSM_ERR_BAD_FRAME', `shim request has a bad "${field}"`);
  return v;
}

export class SessionProxy {
  readonly socketPath: string;
  readonly stats: ProxyStats = { tcpConnects: 0, heldConnects: 0, udpFlows: 0, lookups: 0, localPassThrough: 0, failures: 0 };
  readonly #dir: string;
  readonly #agent: AgentConnection;
  readonly #opts: SessionProxyOptions;
  readonly #unix: net.Server;
  readonly #tcp = new Map<Family, { server: net.Server; port: number }>();
  readonly #pairs = new Map<number, PendingPair>();
  /** Held connects by stream. */
  readonly #holds = new Map<number, Hold>();
  readonly #udp = new Set<dgram.Socket>();
  readonly #clients = new Set<net.Socket>();
  /** Every loopback connection of the program, paired or not: they end with the session. */
  readonly #connections = new Set<net.Socket>();
  /** Pod files (cli/files.ts). */
  readonly files: FileProxy | undefined;

  private constructor(agent: AgentConnection, opts: SessionProxyOptions) {
    this.#agent = agent;
    this.#opts = opts;
    // The CLI's pid in the name lets a later session remove it if this one is SIGKILLed.
    this.#dir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-`));
    chmodSync(this.#dir, 0o700);
    this.socketPath = join(this.#dir, 'proxy.sock');
    this.#unix = net.createServer((c) => this.#serveShim(c));
    this.files = opts.files ? new FileProxy(agent, opts.files, this.#dir) : undefined;
    agent.peer.on('message', (m: AgentMessage) => {
      if (m.type === 'tcp.connected') this.#podConnected(m.stream);
    });
  }

  static async start(agent: AgentConnection, opts: SessionProxyOptions): Promise<SessionProxy> {
    const proxy = new SessionProxy(agent, opts);
    await new Promise<void>((resolve, reject) => {
      proxy.#unix.once('error', reject);
      proxy.#unix.listen(proxy.socketPath, () => resolve());
    });
    for (const [family, host] of [[4, '127.0.0.1'], [6, '::1']] as const) {
      const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => proxy.#accepted(s));
      const port = await new Promise<number>((resolve) => {
        server.once('error', () => resolve(0)); // no IPv6 loopback here: IPv6 sockets use ::ffff:127.0.0.1
        server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
      });
      if (port > 0) proxy.#tcp.set(family, { server, port });
    }
    if (!proxy.#tcp.has(4)) throw new TsmError('TSM_ERR_INTERNAL', 'cannot listen on 127.0.0.1 for the session proxy');
    return proxy;
  }

  async close(): Promise<void> {
    for (const c of this.#clients) c.destroy();
    // A program that has exited leaves half-closed connections whose pod side may never
    // close (a server that keeps the connection open); they must not keep tsmirror alive.
    for (const c of this.#connections) c.destroy();
    for (const p of this.#pairs.values()) {
      clearTimeout(p.timer);
      p.socket?.destroy();
    }
    this.#pairs.clear();
    for (const stream of [...this.#holds.keys()]) this.#dropHold(stream);
    for (const u of this.#udp) u.close();
    this.#udp.clear();
    this.files?.close();
    const servers = [this.#unix, ...[...this.#tcp.values()].map((t) => t.server)];
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    rmSync(this.#dir, { recursive: true, force: true });
  }

  #serveShim(conn: net.Socket): void {
    this.#clients.add(conn);
    conn.on('close', () => this.#clients.delete(conn));
    conn.on('error', () => undefined);
    let buffer: Buffer = Buffer.alloc(0);
    // Requests on one connection are answered in order: the shim waits for each answer.
    let chain = Promise.resolve();
    conn.on('data', (chunk: Buffer) => {
      buffer = buffer.byteLength === 0 ? chunk : Buffer.concat([buffer, chunk]);
      while (buffer.byteLength >= 4) {
        const length = buffer.readUInt32BE(0);
        if (length > MAX_SHIM_FRAME) {
          this.#opts.log(`shim sent a ${length}-byte frame; dropping its channel`);
          conn.destroy();
          return;
        }
        if (buffer.byteLength < 4 + length) break;
        const frame = buffer.subarray(4, 4 + length);
        buffer = buffer.subarray(4 + length);
        let request: ShimRequest;
        try {
          request = unpackPlain(frame) as ShimRequest;
          if (typeof request !== 'object' || request === null) throw new Error('not a map');
        } catch {
          this.#opts.log('shim sent a malformed frame; dropping its channel');
          conn.destroy();
          return;
        }
        if (request.op === 'attach') {
          this.#attach(request);
          continue;
        }
        if (request.op === 'fs.release') {
          this.files?.release(request);
          continue;
        }
        if (request.op === 'unlisten') {
          this.#opts.incoming?.unlisten(request);
          continue;
        }
        chain = chain.then(async () => {
          const response = await this.#answer(request);
          if (conn.destroyed) return;
          const body = packPlain(response);
          const header = Buffer.alloc(4);
          header.writeUInt32BE(body.byteLength);
          conn.write(Buffer.concat([header, body]));
        });
      }
    });
  }

  async #answer(request: ShimRequest): Promise<ShimResponse> {
    try {
      switch (request.op) {
        case 'connect':
          return await this.#connect(request);
        case 'resolve':
          return await this.#resolve(request);
        case 'reverse':
          return await this.#reverse(request);
        case 'listen':
          return this.#opts.incoming ? await this.#opts.incoming.listen(request) : { ok: true, action: 'local' };
        case 'peer':
          return this.#opts.incoming ? this.#opts.incoming.peer(request) : { ok: true, action: 'local' };
        default:
          if (typeof request.op === 'string' && request.op.startsWith('fs.')) {
            return this.files ? await this.files.answer(request) : { ok: true, mode: 'local' };
          }
          return { ok: false, errno: osConstants.errno.EINVAL, message: `unknown op ${String(request.op)}` };
      }
    } catch (err) {
      this.stats.failures++;
      if (err instanceof TsmError && err.code === 'TSM_ERR_BAD_FRAME') {
        return { ok: false, errno: osConstants.errno.EINVAL, eai: EAI_AGAIN, message: err.message };
      }
      const message = err instanceof Error ? err.message : String(err);
      return { ok: false, errno: osConstants.errno.ENETDOWN, eai: EAI_AGAIN, message };
    }
  }

  async #connect(req: ShimRequest): Promise<ShimResponse> {
    const proto = str(req.proto, 'proto');
    let { family, address } = unmapAddress(str(req.addr, 'addr'));
    if (net.isIP(address) === 0) throw new TsmError('TSM_ERR_BAD_FRAME', 'connect needs a literal address');
    const port = uint(req.port, 'port', 65535);
    const requestedFamily = uint(req.family, 'family', 6) === 6 ? 6 : 4;
    if (route(this.#opts.routing, address, port) === 'local') {
      // A DNS packet to this machine's nameserver is meant for the cluster's.
      const pod = this.#opts.podNameservers[0];
      if (port === 53 && pod && this.#opts.localNameservers.includes(address)) {
        address = pod;
        family = net.isIP(pod) === 6 ? 6 : 4;
      } else {
        this.stats.localPassThrough++;
        return { ok: true, action: 'local' };
      }
    } else if (port === 53 && this.#opts.localNameservers.includes(address) && this.#opts.podNameservers[0]) {
      address = this.#opts.podNameservers[0];
      family = net.isIP(address) === 6 ? 6 : 4;
    }
    // The program's socket family decides which loopback listener it can reach.
    const listener = this.#tcp.get(requestedFamily) ?? this.#tcp.get(4);
    const proxyAddr = requestedFamily === 6 ? (this.#tcp.has(6) ? '::1' : '::ffff:127.0.0.1') : '127.0.0.1';
    const stream = this.#agent.allocateStream();
    // A held connect's failure arrives as the stream's close: its listener goes with it.
    this.#agent.peer.mux.open(stream, () => this.#dropHold(stream));
    try {
      if (proto === 'tcp') {
        this.stats.tcpConnects++;
        const timeoutMs = uint(req.timeoutMs ?? 0, 'timeoutMs');
        const holdMs = req.nonblock === true && this.#holds.size < MAX_HOLDS ? HOLD_MS : 0;
        const r = await this.#agent.request({ type: 'tcp.connect', stream, host: address, port, family, timeoutMs, ...(holdMs > 0 ? { holdMs } : {}) });
        if (r.pending === true) {
          const holdFamily: Family = proxyAddr === '::1' ? 6 : 4;
          const held = loadAddon().holdListen(holdFamily);
          this.#holds.set(stream, { family: holdFamily, listenFd: held.fd, port: held.port, fillers: held.fillers, clientPort: undefined, connected: false });
          this.stats.heldConnects++;
          return { ok: true, action: 'proxy', proxyAddr, proxyPort: held.port, stream };
        }
        return { ok: true, action: 'proxy', proxyAddr, proxyPort: listener?.port ?? 0, stream, localAddr: r.localAddress, localPort: r.localPort };
      }
      if (proto === 'udp') {
        this.stats.udpFlows++;
        const r = await this.#agent.request({ type: 'udp.open', stream, host: address, port, family });
        const relayPort = await this.#udpRelay(requestedFamily === 6 && this.#tcp.has(6) ? 6 : 4, stream);
        return { ok: true, action: 'proxy', proxyAddr, proxyPort: relayPort, stream, localAddr: r.localAddress, localPort: r.localPort };
      }
      throw new TsmError('TSM_ERR_BAD_FRAME', `unknown proto "${proto}"`);
    } catch (err) {
      this.#agent.peer.mux.close(stream);
      if (err instanceof RemoteError && err.errno !== undefined) return { ok: false, errno: err.errno, message: err.message };
      throw err;
    }
  }

  async #resolve(req: ShimRequest): Promise<ShimResponse> {
    const name = str(req.name, 'name');
    const family = uint(req.family ?? 0, 'family', 6);
    const lower = name.toLowerCase().replace(/\.$/, '');
    if (lower === 'localhost' || lower.endsWith('.localhost')) return { ok: true, action: 'local' };
    this.stats.lookups++;
    try {
      const r = await this.#agent.request({ type: 'dns.lookup', name, family: family === 4 ? 4 : family === 6 ? 6 : 0 });
      return { ok: true, action: 'remote', addrs: r.addresses.map((a) => ({ family: a.family, addr: a.address })), canonname: r.canonname };
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'TSM_ERR_DNS') return { ok: false, eai: -(err.errno ?? -EAI_NONAME), message: err.message };
      throw err;
    }
  }

  async #reverse(req: ShimRequest): Promise<ShimResponse> {
    const addr = str(req.addr, 'addr');
    if (route(this.#opts.routing, addr, 0) === 'local') return { ok: true, action: 'local' };
    try {
      const r = await this.#agent.request({ type: 'dns.reverse', address: unmapAddress(addr).address });
      return { ok: true, action: 'remote', name: r.name };
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'TSM_ERR_DNS') return { ok: false, eai: -(err.errno ?? -EAI_NONAME), message: err.message };
      throw err;
    }
  }

  // ---- pairing the program's loopback connection with its remote stream, by its port.
  // The attach (on the unix socket) and the accept (on the TCP listener) race; whichever
  // comes second completes the pair. An unpaired half is dropped after PAIR_TIMEOUT_MS.

  #pair(port: number, timeoutMs = PAIR_TIMEOUT_MS): PendingPair {
    let pair = this.#pairs.get(port);
    if (!pair) {
      const created: PendingPair = {
        stream: undefined, socket: undefined,
        timer: setTimeout(() => {
          this.#pairs.delete(port);
          created.socket?.destroy();
          if (created.stream !== undefined) this.#agent.peer.mux.close(created.stream);
        }, timeoutMs),
      };
      this.#pairs.set(port, created);
      pair = created;
    }
    return pair;
  }

  #complete(port: number, pair: PendingPair): void {
    if (pair.stream === undefined || !pair.socket) return;
    clearTimeout(pair.timer);
    this.#pairs.delete(port);
    this.#agent.peer.mux.bindSocket(pair.stream, pair.socket);
  }

  #attach(req: ShimRequest): void {
    try {
      const port = uint(req.port, 'port', 65535);
      const stream = uint(req.stream, 'stream');
      const hold = this.#holds.get(stream);
      const pair = this.#pair(port, hold ? HELD_PAIR_TIMEOUT_MS : PAIR_TIMEOUT_MS);
      pair.stream = stream;
      if (hold) {
        hold.clientPort = port;
        if (hold.connected) this.#release(stream, hold);
        return;
      }
      this.#complete(port, pair);
    } catch {
      // a malformed notification has nothing to answer
    }
  }

  #podConnected(stream: number): void {
    const hold = this.#holds.get(stream);
    if (!hold) return;
    hold.connected = true;
    if (hold.clientPort !== undefined) {
      this.#release(stream, hold);
      return;
    }
    // The shim attaches right after its connect returns; a program that died in between
    // never will, and its stream and listener must not live as long as the session.
    setTimeout(() => {
      if (this.#holds.get(stream) !== hold || hold.clientPort !== undefined) return;
      this.#dropHold(stream);
      this.#agent.peer.mux.close(stream);
    }, PAIR_TIMEOUT_MS).unref();
  }

  /** The pod's connection is made: connect the held program socket (simultaneous open). */
  #release(stream: number, hold: Hold): void {
    const clientPort = hold.clientPort ?? 0;
    let fd: number;
    try {
      fd = loadAddon().holdRelease(hold.family, hold.port, clientPort);
    } catch {
      // The program closed its socket meanwhile (nothing answers on its port).
      this.#dropHold(stream);
      this.#agent.peer.mux.close(stream);
      return;
    }
    this.#dropHold(stream, false);
    const socket = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
    socket.setNoDelay(true);
    this.#accepted(socket);
  }

  /**
   * Closes a held connect's listener and fillers: a program socket still waiting is
   * refused. Unless it was released, its pairing goes too (the program may reuse the port).
   */
  #dropHold(stream: number, forgetPair = true): void {
    const hold = this.#holds.get(stream);
    if (!hold) return;
    this.#holds.delete(stream);
    const pair = hold.clientPort === undefined ? undefined : this.#pairs.get(hold.clientPort);
    if (forgetPair && pair?.stream === stream && !pair.socket && hold.clientPort !== undefined) {
      clearTimeout(pair.timer);
      this.#pairs.delete(hold.clientPort);
    }
    for (const fd of [hold.listenFd, ...hold.fillers]) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
  }

  #accepted(socket: net.Socket): void {
    const port = socket.remotePort;
    if (port === undefined) {
      socket.destroy();
      return;
    }
    this.#connections.add(socket);
    socket.once('close', () => this.#connections.delete(socket));
    socket.on('error', () => undefined);
    const pair = this.#pair(port);
    pair.socket = socket;
    this.#complete(port, pair);
  }

  async #udpRelay(family: Family, stream: number): Promise<number> {
    const relay = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
    this.#udp.add(relay);
    await new Promise<void>((resolve) => relay.bind(0, family === 4 ? '127.0.0.1' : '::1', resolve));
    let program: { address: string; port: number } | undefined;
    // Idle timers never keep the CLI alive after the program has exited.
    let idle = setTimeout(() => close(), UDP_IDLE_MS).unref();
    const touch = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => close(), UDP_IDLE_MS).unref();
    };
    const close = (): void => {
      clearTimeout(idle);
      if (this.#udp.delete(relay)) relay.close();
      this.#agent.peer.mux.close(stream);
    };
    const send = this.#agent.peer.mux.bindDatagrams(stream, (data) => {
      touch();
      if (program) relay.send(data, program.port, program.address);
    });
    relay.on('message', (msg, rinfo) => {
      touch();
      program ??= { address: rinfo.address, port: rinfo.port };
      if (rinfo.port === program.port && rinfo.address === program.address) send(msg);
    });
    relay.on('error', () => undefined);
    relay.once('close', () => clearTimeout(idle));
    return (relay.address() as net.AddressInfo).port;
  }
}
