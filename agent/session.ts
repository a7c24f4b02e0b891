/**
 * One developer's session on the agent: everything it asks for happens in the target's
 * network namespace (or the agent's own, targetless), and everything it opened goes
 * away with it.
 */
import dgram from 'node:dgram';
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { constants as osConstants } from 'node:os';
import { loadAddon } from '../native/index.js';
import { RemoteError, TsmError, isErrorCode } from '../protocol/errors.js';
import {
  FS_MAX_READ, type AgentMessage, type FilesMode, type ClientMessage, type ClientRequest, type Family, type Handlers, type ResultOf,
} from '../protocol/messages.js';
import type { Peer } from '../protocol/peer.js';
import { RelayReader } from '../protocol/mux.js';
import { PodFiles, readPodConfigFile } from './files.js';
import { AGENT_STREAM_BASE, type IncomingMode, type IncomingOpen } from '../protocol/messages.js';
import type { IncomingRegistry } from './incoming/namespaces.js';
import { SessionIncoming } from './incoming/subscriptions.js';
import { MirrorAccount } from './incoming/mirror.js';
import { compileFilter } from './incoming/filters.js';
import { streamPair } from '../common/stream-pair.js';
import type { ResolvConf } from '../common/resolv-conf.js';
import { DnsSendError, PodResolver, ResolveError, closeDatagramSocket } from './resolver.js';
import type { ResolvedTarget } from './target.js';
import { releaseTarget, targetAlive } from './target.js';

const O_PATH = 0o10000000;

/** Stolen connections that may wait for a disconnected session's resume; more go to the pod's app. */
const MAX_HELD_IN_GAP = 256;

/** Open flags that would change the file: write access, create, truncate, append. */
function opensForWriting(flags: number): boolean {
  return (flags & 3) !== fsConstants.O_RDONLY || (flags & (fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_APPEND)) !== 0;
}

const errnoOf = (code: string | undefined): number | undefined =>
  code ? (osConstants.errno as Record<string, number>)[code] : undefined;

export interface SessionInfo {
  id: string;
  user: string;
  host: string;
  target: string;
  startedAt: number;
  streams: number;
  /** From the hello: how the session takes incoming traffic (absent: not declared). */
  incoming?: { mode: 'mirror' | 'steal'; filtered: boolean };
  /** From the hello: `write` only when the session asked to change pod files; enforced here. */
  files: FilesMode;
  /** From the hello: how many sessions its CLI opened before this one for the same program (re-established). */
  reestablished?: number;
}

export class AgentSession {
  readonly #peer: Peer<ClientMessage, AgentMessage>;
  readonly #nsFd: number;
  readonly #pid: number;
  readonly #resolver: PodResolver;
  readonly #sockets = new Set<net.Socket | dgram.Socket>();
  readonly #targetWatch: NodeJS.Timeout | undefined;
  /** The target's root directory (O_PATH), for the resolver's files; -1 when targetless. */
  readonly #rootFd: number;
  /** The target's process, held by a /proc descriptor (agent/target.ts). */
  readonly #target: ResolvedTarget;
  /** The target's files (agent/files.ts), opened on first use; none when targetless. */
  #files: PodFiles | undefined;
  readonly info: SessionInfo;
  readonly #incoming: SessionIncoming;
  #nextAgentStream = 0;
  /** Mirror copies not opened because the session was disconnected (its CLI resuming). */
  mirrorDropped = 0;
  /** Its mirror copies: batched, and cut (counted) when the session falls behind. */
  readonly mirror: MirrorAccount;
  /** Stolen connections opened during the current gap (they wait for the resume), and those sent to the app instead. */
  #heldInGap = 0;
  stealsToApp = 0;

  /** `incoming`: the agent's namespaces for incoming traffic, shared by all its sessions. */
  /** The policy's check of each subscription (cluster mode; none in local mode). */
  readonly #authorizeIncoming: ((mode: IncomingMode, filtered: boolean) => void) | undefined;

  constructor(peer: Peer<ClientMessage, AgentMessage>, target: ResolvedTarget, info: Omit<SessionInfo, 'streams'>, incoming: IncomingRegistry,
    authorizeIncoming?: (mode: IncomingMode, filtered: boolean) => void) {
    this.#authorizeIncoming = authorizeIncoming;
    this.#peer = peer;
    this.info = { ...info, streams: 0 };
    this.#pid = target.pid;
    this.#target = target;
    // Holding the namespace open keeps it usable for this session's lifetime.
    this.#nsFd = target.pid > 0 ? openSync(`${target.proc}/ns/net`, 'r') : -1;
    this.#rootFd = target.pid > 0 ? openSync(`${target.proc}/root`, O_PATH | fsConstants.O_DIRECTORY) : -1;
    // resolv.conf and hosts are re-read on every lookup (the pod may change them), and
    // synchronously: both are small local files kubelet writes, and a synchronous read
    // costs microseconds where fs.promises.readFile costs four thread-pool round trips.
    // They are pod files like any other: confined to the pod's root, never blocking.
    const rootFd = this.#rootFd;
    this.#resolver = new PodResolver((family) => this.#udpSocket(family), async (path) => rootFd >= 0 ? readPodConfigFile(rootFd, path) : readFileSync(path, 'utf8'),
      (family) => this.#tcpSocket(family));
    if (target.pid > 0) {
      this.#targetWatch = setInterval(() => {
        // Not #targetGone(): a throw from a timer would end the agent, not the session.
        if (!targetAlive(target)) this.#endTargetGone();
      }, 2000);
      this.#targetWatch.unref();
    }
    const ns = this.#nsFd >= 0 ? fstatSync(this.#nsFd) : undefined;
    this.mirror = new MirrorAccount(() => this.#peer.ws?.bufferedAmount ?? 0);
    this.#incoming = new SessionIncoming(incoming,
      { id: info.id, user: info.user, host: info.host, openStream: (o) => this.#openIncomingStream(o), mirror: this.mirror },
      target.pid, ns ? `${ns.dev}:${ns.ino}` : '', (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`));
    peer.on('message', (m: ClientMessage) => void this.#dispatch(m));
  }

  /** A stream the agent opens toward the CLI for one incoming connection (incoming.open). */
  #openIncomingStream(o: Omit<IncomingOpen, 'type' | 'stream'>): Duplex | undefined {
    if (this.#peer.closed) return undefined;
    // While the CLI reconnects, stolen connections wait (their frames are kept for the
    // resume); mirror copies are not worth holding: dropped, and counted.
    if (!this.#peer.disconnected) {
      this.#heldInGap = 0;
    } else if (o.mode === 'mirror') {
      this.mirrorDropped++;
      return undefined;
    } else if (++this.#heldInGap > MAX_HELD_IN_GAP) {
      // Each waiting connection may hold a window of data: beyond this many, the app serves them.
      this.stealsToApp++;
      return undefined;
    }
    // Ids wrap after 2^31 streams; skip any still in use.
    let stream: number;
    do stream = AGENT_STREAM_BASE + (this.#nextAgentStream++ % AGENT_STREAM_BASE);
    while (!this.#peer.mux.isFree(stream));
    this.#peer.send({ type: 'incoming.open', stream, ...o });
    const [mine, theirs] = streamPair();
    this.#peer.mux.open(stream);
    this.#peer.mux.bindSocket(stream, mine);
    return theirs;
  }

  /** The DNS settings the target's processes use. */
  resolvConf(): Promise<ResolvConf> {
    return this.#resolver.conf();
  }

  get streams(): number {
    return this.#peer.mux.size;
  }

  /** Releases everything the session holds. Called once, when its peer is closed. */
  dispose(): void {
    clearInterval(this.#targetWatch);
    // Stolen and mirrored ports go back to the pod's app; the last session out removes the rules.
    void this.#incoming.dispose();
    this.mirror.dispose();
    this.#resolver.close();
    for (const s of this.#sockets) {
      if (s instanceof net.Socket) s.destroy();
      else closeDatagramSocket(s);
    }
    this.#sockets.clear();
    this.#files?.dispose();
    if (this.#nsFd >= 0) closeSync(this.#nsFd);
    if (this.#rootFd >= 0) closeSync(this.#rootFd);
    releaseTarget(this.#target);
  }

  /** Ends the session: its process is gone, and its PID may already name another one. */
  #targetGone(): never {
    throw new TsmError('TSM_ERR_TARGET_GONE', this.#endTargetGone());
  }

  /** Ends the session because its target exited; returns what it told the CLI. */
  #endTargetGone(): string {
    const message = `the target process ${this.#pid} exited (its PID may now belong to another process, which this session will not serve)`;
    this.#peer.fail('TSM_ERR_TARGET_GONE', message);
    return message;
  }

  readonly #handlers: Handlers<ClientRequest, Promise<ResultOf[keyof ResultOf]>> = {
    'tcp.connect': (m) => this.#withPeerStream(m.stream, () => this.#tcpConnect(m.stream, m.host, m.port, m.family, m.timeoutMs, m.holdMs ?? 0)),
    'udp.open': (m) => this.#withPeerStream(m.stream, () => this.#udpOpen(m.stream, m.host, m.port, m.family)),
    'dns.lookup': async (m) => {
      try {
        return await this.#resolver.lookup(m.name, m.family);
      } catch (err) {
        if (err instanceof ResolveError) throw new RemoteError('TSM_ERR_DNS', err.message, -err.eai);
        throw err;
      }
    },
    'dns.reverse': async (m) => {
      try {
        return { name: await this.#resolver.reverse(m.address) };
      } catch (err) {
        if (err instanceof ResolveError) throw new RemoteError('TSM_ERR_DNS', err.message, -err.eai);
        throw err;
      }
    },
    'dns.config': async () => {
      const conf = await this.#resolver.conf();
      return { nameservers: conf.nameservers, search: conf.search, ndots: conf.ndots, timeoutMs: conf.timeoutMs, attempts: conf.attempts };
    },
    'dns.query': async (m) => {
      try {
        return { packet: await this.#resolver.send(m.packet) };
      } catch (err) {
        if (err instanceof DnsSendError) throw new RemoteError('TSM_ERR_DNS', err.message, osConstants.errno[err.errno]);
        throw err;
      }
    },
    'env.get': async () => ({ env: await this.#environment() }),
    // pod files (agent/files.ts)
    'fs.open': async (m) => {
      if (opensForWriting(m.flags)) this.#mayWrite(m.path);
      return this.#podFiles().open(m.path, m.flags, m.mode, Math.min(m.inlineMax, FS_MAX_READ));
    },
    'fs.read': (m) => this.#podFiles().read(m.handle, m.offset, m.length),
    'fs.write': (m) => {
      this.#mayWrite(`handle ${m.handle}`);
      return this.#podFiles().write(m.handle, m.offset, m.data);
    },
    'fs.truncate': async (m) => {
      this.#mayWrite(m.path || `handle ${m.handle}`);
      return this.#podFiles().truncate(m.handle, m.path, m.size);
    },
    'fs.close': async (m) => this.#podFiles().close(m.handle),
    'fs.stat': async (m) => this.#podFiles().stat(m.path, m.follow),
    'fs.readdir': async (m) => this.#podFiles().readdir(m.path, m.offset),
    'fs.readlink': async (m) => this.#podFiles().readlink(m.path),
    'fs.change': async (m) => {
      if (!['mkdir', 'unlink', 'rmdir', 'rename'].includes(m.op)) throw new TsmError('TSM_ERR_BAD_FRAME', `unknown fs.change op "${m.op.slice(0, 32)}"`);
      this.#mayWrite(m.path);
      return this.#podFiles().change(m);
    },
    'port.subscribe': (m) => {
      // What the subscription really is decides, not what the client calls it: a filter
      // that lets every request through is a steal of everything (agent/incoming/filters.ts).
      const filtered = m.mode === 'steal' && compileFilter(m.filter) !== undefined;
      this.#authorizeIncoming?.(m.mode, filtered);
      const declared = this.info.incoming;
      // A recording is a mirror for what a session declares (the app answers; nothing is taken).
      const asDeclared = m.mode === 'record' ? 'mirror' : m.mode;
      if (declared && (declared.mode !== asDeclared || (m.mode === 'steal' && declared.filtered !== filtered))) {
        throw new TsmError('TSM_ERR_USAGE', `this session was opened for ${declared.filtered ? 'filtered ' : ''}${declared.mode} and cannot subscribe port ${m.port} for ${filtered ? 'filtered ' : ''}${m.mode}`);
      }
      return this.#incoming.subscribe(m.port, m.mode, m.filter, m.record);
    },
    'port.unsubscribe': (m) => this.#incoming.unsubscribe(m.port),
  };

  /**
   * Runs a request that opens the client-chosen stream `stream`: the id is claimed first
   * (a duplicate or an id in the agent's range ends the session), and given back if the
   * request fails before the stream opened.
   */
  async #withPeerStream<T>(stream: number, open: () => Promise<T>): Promise<T> {
    try {
      this.#peer.mux.claimPeerStream(stream);
    } catch (err) {
      const e = err as TsmError;
      this.#peer.fail(e.code, e.message);
      throw e;
    }
    try {
      return await open();
    } finally {
      this.#peer.mux.releaseClaim(stream);
    }
  }

  /** Writes to pod files need a session opened with files mode `write`: the agent decides, not the CLI. */
  #mayWrite(what: string): void {
    if (this.info.files === 'write') return;
    throw new RemoteError('TSM_ERR_FILE', `this session may only read the pod's files (${what}): it was opened with --fs-mode read`, osConstants.errno.EROFS);
  }

  #podFiles(): PodFiles {
    if (this.#pid === 0) throw new RemoteError('TSM_ERR_FILE', 'a targetless session has no pod files', osConstants.errno.ENOENT);
    this.#files ??= new PodFiles(this.#target.proc, this.#pid);
    return this.#files;
  }

  async #dispatch(m: ClientMessage): Promise<void> {
    if (m.type === 'hello') {
      this.#peer.fail('TSM_ERR_BAD_FRAME', 'hello sent twice');
      return;
    }
    const handler = this.#handlers[m.type as ClientRequest['type']] as ((r: ClientRequest) => Promise<ResultOf[keyof ResultOf]>) | undefined;
    if (!handler) {
      this.#peer.fail('TSM_ERR_UNKNOWN_MESSAGE', `unexpected message "${m.type}"`);
      return;
    }
    const request = m as ClientRequest;
    try {
      const value = await handler(request);
      this.#peer.send({ type: 'result', id: request.id, value });
    } catch (err) {
      const code = err instanceof TsmError && isErrorCode(err.code) ? err.code : 'TSM_ERR_INTERNAL';
      const errno = err instanceof RemoteError ? err.errno : undefined;
      const message = err instanceof Error ? err.message : String(err);
      this.#peer.send(errno === undefined ? { type: 'error', id: request.id, code, message } : { type: 'error', id: request.id, code, message, errno });
    }
  }

  /** An unconnected TCP socket in the pod's netns, closed with the session. */
  #tcpSocket(family: Family): net.Socket {
    const fd = loadAddon().netnsSocket(this.#nsFd, family, 'tcp');
    const socket = new net.Socket({ fd, readable: true, writable: true });
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    return socket;
  }

  async #tcpConnect(stream: number, host: string, port: number, family: Family, timeoutMs: number, holdMs: number): Promise<ResultOf['tcp.connect']> {
    if (net.isIP(host) !== family) throw new TsmError('TSM_ERR_USAGE', `tcp.connect needs a literal IPv${family} address, got "${host}"`);
    const fd = loadAddon().netnsSocket(this.#nsFd, family, 'tcp');
    // Read in chunks of up to 256 KiB, not 'data' events of 64 KiB: fewer frames (protocol/mux.ts).
    const reader = new RelayReader();
    // (`onread` is a constructor option too, though @types/node lists it for connect only.)
    const socket = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true, onread: reader.onread } as net.SocketConstructorOpts);
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      // Answered `pending` (a non-blocking connect still under way after holdMs): the
      // outcome goes on the stream, which the CLI may close first (the program gave up).
      let pending = false;
      let hold: NodeJS.Timeout | undefined;
      if (holdMs > 0) {
        hold = setTimeout(() => {
          pending = true;
          this.#peer.mux.open(stream, () => socket.destroy());
          resolve({ localAddress: '', localPort: 0, pending: true });
        }, holdMs);
      }
      const fail = (err: Error & { code?: string }): void => {
        clearTimeout(timer);
        clearTimeout(hold);
        socket.destroy();
        const failure = new RemoteError('TSM_ERR_CONNECT', `connect to ${host}:${port} from the pod failed: ${err.code ?? err.message}`, errnoOf(err.code) ?? osConstants.errno.ECONNREFUSED);
        if (pending) this.#peer.mux.close(stream, failure.errno);
        else reject(failure);
      };
      if (timeoutMs > 0) {
        timer = setTimeout(() => fail(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })), timeoutMs);
      }
      socket.once('error', fail);
      socket.connect({ host, port, family }, () => {
        clearTimeout(timer);
        clearTimeout(hold);
        socket.off('error', fail);
        if (this.#peer.closed || (pending && !this.#peer.mux.has(stream))) {
          socket.destroy();
          reject(new TsmError('TSM_ERR_SESSION_CLOSED', 'session ended'));
          return;
        }
        // Each chunk the program wrote leaves at once, as on the proxy's loopback side (whose
        // listeners are noDelay too): Nagle would hold a small request behind the last one's ACK.
        socket.setNoDelay(true);
        const local = { localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0 };
        if (pending) {
          this.#peer.send({ type: 'tcp.connected', stream, ...local });
        } else {
          this.#peer.mux.open(stream);
        }
        this.#peer.mux.bindSocket(stream, socket, reader);
        resolve(local);
      });
    });
  }

  async #udpOpen(stream: number, host: string, port: number, family: Family): Promise<ResultOf['udp.open']> {
    if (net.isIP(host) !== family) throw new TsmError('TSM_ERR_USAGE', `udp.open needs a literal IPv${family} address, got "${host}"`);
    const socket = await this.#udpSocket(family);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(port, host, () => {
        socket.off('error', reject);
        resolve();
      });
    }).catch((err: Error & { code?: string }) => {
      closeDatagramSocket(socket);
      throw new RemoteError('TSM_ERR_CONNECT', `UDP to ${host}:${port} from the pod failed: ${err.code ?? err.message}`, errnoOf(err.code) ?? osConstants.errno.ENETUNREACH);
    });
    this.#peer.mux.open(stream, () => closeDatagramSocket(socket));
    const send = this.#peer.mux.bindDatagrams(stream, (data) => socket.send(data));
    socket.on('message', (msg) => send(msg));
    socket.on('error', () => undefined); // ICMP errors on a connected UDP socket: drop, as UDP does
    const address = socket.address();
    return { localAddress: address.address, localPort: address.port };
  }

  async #udpSocket(family: Family): Promise<dgram.Socket> {
    const fd = loadAddon().netnsSocket(this.#nsFd, family, 'udp');
    const socket = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    await new Promise<void>((resolve) => socket.bind({ fd }, resolve));
    return socket;
  }

  async #environment(): Promise<Record<string, string>> {
    const pid = this.#pid;
    if (pid === 0) return {}; // targetless: no pod environment
    const raw = await readFile(`${this.#target.proc}/environ`, 'latin1').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ESRCH' || !targetAlive(this.#target)) this.#targetGone();
      throw new TsmError('TSM_ERR_PERMISSION', `cannot read the environment of process ${pid}`);
    });
    const env: Record<string, string> = {};
    for (const entry of Buffer.from(raw, 'latin1').toString('utf8').split('\0')) {
      const eq = entry.indexOf('=');
      if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
    }
    return env;
  }
}
