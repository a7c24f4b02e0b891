/**
 * The session proxy: answers the shim's questions (docs/shim-ipc.md) on a private unix
 * socket, and relays the program's remote connections through the agent session.
 *
 * This file only wires the parts together and sends each op to its handler:
 * shim-channel.ts (framing), outgoing-policy.ts (local or through the pod),
 * outgoing-tcp.ts + held-connect.ts (TCP), udp-relay.ts, dns.ts, pod-files.ts (files),
 * incoming.ts (the program's listeners), session-folder.ts (the private folder).
 */
import net from 'node:net';
import { rmSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { TsmError } from '../../protocol/errors.js';
import type { ShimErrorReply, ShimFrameError, ShimHandlers, ShimReply, ShimReplyOf, ShimRequestOf } from '../../protocol/shim-wire.js';
import { EAI_AGAIN, PodDns } from './dns.js';
import type { FileRules } from './file-rules.js';
import type { IncomingManager } from './incoming.js';
import { destinationOf, type OutgoingPolicy } from './outgoing-policy.js';
import { OutgoingTcp, type OutgoingTcpOptions } from './outgoing-tcp.js';
import { FileProxy, fileFailure, type FileHandlers } from './pod-files.js';
import type { ProxyAgent } from './proxy-agent.js';
import { createSessionFolder } from './session-folder.js';
import { serveShimChannel, type ShimCall, type ShimEndpoint, type ShimNotification } from './shim-channel.js';
import { UdpRelays, type UdpRelayOptions } from './udp-relay.js';

export { sweepStaleSessionDirs } from './session-folder.js';

/** Without pod files, fs.config says "local" and the shim asks nothing else. */
const NO_POD_FILES: ShimErrorReply = { ok: false, errno: osConstants.errno.ENOSYS, message: 'this session has no pod files' };
const WITHOUT_POD_FILES: FileHandlers = {
  'fs.config': () => ({ ok: true, mode: 'local' }),
  'fs.open': () => NO_POD_FILES,
  'fs.fill': () => NO_POD_FILES,
  'fs.writeback': () => NO_POD_FILES,
  'fs.release': () => undefined,
  'fs.stat': () => NO_POD_FILES,
  'fs.access': () => NO_POD_FILES,
  'fs.readlink': () => NO_POD_FILES,
  'fs.readdir': () => NO_POD_FILES,
  'fs.change': () => NO_POD_FILES,
  'fs.truncate': () => NO_POD_FILES,
};

/** What the shim saw the program do past the preload (a `notice`), as the user is told once per kind. */
export const UNSEEN_WARNINGS: Record<ShimRequestOf<'notice'>['what'], string> = {
  io_uring: 'the program uses io_uring, which the preload cannot see: its connects and opens through io_uring go to this machine, not the pod',
  'raw-connect': 'the program connects through syscall(SYS_connect), which the preload cannot redirect: those connections go to this machine, not the pod',
  'raw-open': 'the program opens files through syscall(SYS_open/SYS_openat), which the preload cannot redirect: those files are read on this machine, not in the pod',
};

export interface ProxyStats {
  tcpConnects: number;
  /** Non-blocking connects answered before the pod's connect was done. */
  heldConnects: number;
  /** UDP flows opened in the pod (`udp.open`). */
  udpFlows: number;
  /** UDP flows to the pod's nameserver answered by a DNS relay (no flow in the pod). */
  dnsFlows: number;
  /** UDP DNS queries those relays answered (`udpQueries`). */
  udpDnsQueries: number;
  lookups: number;
  /** Of `lookups`, those answered from the session's DNS cache (cli/proxy/dns.ts). */
  cachedLookups: number;
  /** DNS messages of glibc's res_* functions sent to the pod's nameservers. */
  dnsMessages: number;
  /** Of `dnsMessages` and `udpDnsQueries`, those answered from the session's packet cache (cli/proxy/dns-packet-cache.ts). */
  cachedDnsMessages: number;
  localPassThrough: number;
  failures: number;
  /** The shim's notices: the program did something the preload cannot see (kinds, once each per process). */
  unseen: number;
}

export interface SessionProxyOptions extends OutgoingPolicy {
  log: (line: string) => void;
  /** Pod files (file-rules.ts); without it fs.config answers "local" (and the shim asks nothing else). */
  files?: FileRules;
  /** Incoming traffic (listen/unlisten/peer ops); without it the program's listeners stay local. */
  incoming?: IncomingManager;
  /** One line for the user (default: stderr, `tsmirror: warning: …`). */
  warn?: (line: string) => void;
  /** Where the private folder goes (default: the temporary folder). */
  tmpdir?: string;
  /** Timeouts and the held listener, for tests. */
  tcp?: Partial<OutgoingTcpOptions>;
  udp?: Partial<UdpRelayOptions>;
}

export class SessionProxy implements ShimEndpoint {
  readonly socketPath: string;
  /** Pod files (pod-files.ts). */
  readonly files: FileProxy | undefined;
  readonly #dir: string;
  readonly #opts: SessionProxyOptions;
  readonly #agent: ProxyAgent;
  readonly #unix: net.Server;
  readonly #clients = new Set<net.Socket>();
  readonly #tcp: OutgoingTcp;
  readonly #udp: UdpRelays;
  readonly #dns: PodDns;
  #localPassThrough = 0;
  #failures = 0;
  #unseen = 0;
  readonly #warned = new Set<ShimRequestOf<'notice'>['what']>();
  /** One handler per op (a new op in protocol/shim-wire.ts fails to compile until it is here). */
  readonly #handlers: ShimHandlers;

  private constructor(agent: ProxyAgent, opts: SessionProxyOptions) {
    this.#opts = opts;
    this.#agent = agent;
    this.#tcp = new OutgoingTcp(agent, opts.tcp);
    this.#dns = new PodDns(agent, opts.routing, opts.podNameservers);
    this.#udp = new UdpRelays(agent, opts.udp, this.#dns);
    this.#dir = createSessionFolder(opts.tmpdir);
    this.socketPath = join(this.#dir, 'proxy.sock');
    this.files = opts.files ? new FileProxy(agent, opts.files, this.#dir) : undefined;
    const incoming = opts.incoming;
    const localListen = { ok: true, action: 'local' } as const;
    this.#handlers = {
      connect: (r) => this.#connect(r),
      attach: (n) => (n.proto === 'udp' ? this.#udp.attach(n) : this.#tcp.attach(n)),
      resolve: (r) => this.#dns.resolve(r),
      reverse: (r) => this.#dns.reverse(r),
      'res.config': () => this.#dns.resConfig(),
      'res.send': (r) => this.#dns.resSend(r),
      listen: (r) => (incoming ? incoming.listen(r) : localListen),
      unlisten: (n) => incoming?.unlisten(n),
      peer: (r) => (incoming ? incoming.peer(r) : localListen),
      notice: (n) => this.#notice(n.what),
      ...(this.files?.handlers ?? WITHOUT_POD_FILES),
    };
    this.#unix = net.createServer((c) => {
      this.#clients.add(c);
      c.on('close', () => this.#clients.delete(c));
      serveShimChannel(c, this, { log: opts.log });
    });
  }

  static async start(agent: ProxyAgent, opts: SessionProxyOptions): Promise<SessionProxy> {
    const proxy = new SessionProxy(agent, opts);
    await new Promise<void>((resolve, reject) => {
      proxy.#unix.once('error', reject);
      proxy.#unix.listen(proxy.socketPath, () => resolve());
    });
    await proxy.#tcp.listen();
    if (!proxy.#tcp.listening) throw new TsmError('TSM_ERR_INTERNAL', 'cannot listen on 127.0.0.1 for the session proxy');
    return proxy;
  }

  get stats(): ProxyStats {
    return {
      ...this.#tcp.stats, udpFlows: this.#udp.stats.udpFlows, dnsFlows: this.#udp.stats.dnsFlows, udpDnsQueries: this.#dns.stats.udpQueries,
      lookups: this.#dns.stats.lookups, cachedLookups: this.#dns.stats.cached, dnsMessages: this.#dns.stats.dnsMessages, cachedDnsMessages: this.#dns.stats.cachedMessages,
      localPassThrough: this.#localPassThrough, failures: this.#failures, unseen: this.#unseen,
    };
  }

  async close(): Promise<void> {
    for (const c of this.#clients) c.destroy();
    const tcpClosed = this.#tcp.close();
    this.#udp.close();
    this.files?.close();
    await Promise.all([tcpClosed, new Promise<void>((resolve) => this.#unix.close(() => resolve()))]);
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /** ShimEndpoint: a request's reply; never throws. */
  async answer(request: ShimCall): Promise<ShimReply> {
    try {
      const handler = this.#handlers[request.op] as (r: ShimCall) => Promise<ShimReply> | ShimReply;
      return await handler(request);
    } catch (err) {
      this.#failures++;
      if (err instanceof TsmError && err.code === 'TSM_ERR_BAD_FRAME') {
        return { ok: false, errno: osConstants.errno.EINVAL, eai: EAI_AGAIN, message: err.message };
      }
      const message = err instanceof Error ? err.message : String(err);
      return { ok: false, errno: osConstants.errno.ENETDOWN, eai: EAI_AGAIN, message };
    }
  }

  /** ShimEndpoint: a notification (no reply). */
  notify(notification: ShimNotification): void {
    const handler = this.#handlers[notification.op] as (n: ShimNotification) => void;
    handler(notification);
  }

  /** ShimEndpoint: the reply to a request that did not check (a malformed notification gets none). */
  refuse(err: ShimFrameError): ShimReply | undefined {
    switch (err.op) {
      case undefined:
        return { ok: false, errno: osConstants.errno.EINVAL, message: err.message }; // an op this proxy does not know
      case 'attach':
      case 'unlisten':
      case 'fs.release':
        return undefined;
      case 'listen':
      case 'peer':
        if (!this.#opts.incoming) return { ok: true, action: 'local' };
        this.#failures++;
        return { ok: false, errno: osConstants.errno.EINVAL, eai: EAI_AGAIN, message: err.message };
      case 'connect':
      case 'resolve':
      case 'reverse':
      case 'res.config':
      case 'res.send':
        this.#failures++;
        return { ok: false, errno: osConstants.errno.EINVAL, eai: EAI_AGAIN, message: err.message };
      default:
        return fileFailure(err); // EINVAL, as docs/shim-ipc.md says for the file ops
    }
  }

  /**
   * ShimEndpoint: the shim closed its channel before this answer went out (a signal
   * interrupted the program's blocking connect). A pod connection nobody will attach to
   * is closed now rather than at the end of the session.
   */
  undelivered(request: ShimCall, reply: ShimReply): void {
    if (request.op !== 'connect' || request.proto !== 'tcp' || !reply.ok || !('stream' in reply)) return;
    const stream = reply.stream;
    if (typeof stream === 'number' && stream > 0) this.#agent.peer.mux.close(stream);
  }

  /** One warning per kind and session, however many processes report it. */
  #notice(what: ShimRequestOf<'notice'>['what']): void {
    this.#unseen++;
    if (this.#warned.has(what)) return;
    this.#warned.add(what);
    const warn = this.#opts.warn ?? ((line: string) => void process.stderr.write(`tsmirror: warning: ${line}\n`));
    warn(UNSEEN_WARNINGS[what]);
  }

  async #connect(req: ShimRequestOf<'connect'>): Promise<ShimReplyOf['connect']> {
    const dest = destinationOf(this.#opts, req.addr, req.port);
    if (dest.action === 'local') {
      this.#localPassThrough++;
      return { ok: true, action: 'local' };
    }
    if (req.proto === 'tcp') return this.#tcp.connect(req, dest);
    return this.#udp.open(req, dest, this.#tcp.proxyAddress(req.family));
  }
}
