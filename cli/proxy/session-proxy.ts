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
import { EAI_AGAIN, PodDns } from './dns.js';
import type { FileRules } from './file-rules.js';
import type { IncomingManager } from './incoming.js';
import { destinationOf, type OutgoingPolicy } from './outgoing-policy.js';
import { OutgoingTcp, type OutgoingTcpOptions } from './outgoing-tcp.js';
import { fileFailure, FileProxy } from './pod-files.js';
import type { ProxyAgent } from './proxy-agent.js';
import { createSessionFolder } from './session-folder.js';
import { serveShimChannel, type ShimEndpoint } from './shim-channel.js';
import type { ConnectRequest, ShimCall, ShimCallHandlers, ShimNotification, ShimNotificationHandlers, ShimReply } from './shim-requests.js';
import { UdpRelays, type UdpRelayOptions } from './udp-relay.js';

export { sweepStaleSessionDirs } from './session-folder.js';

export interface ProxyStats {
  tcpConnects: number;
  /** Non-blocking connects answered before the pod's connect was done. */
  heldConnects: number;
  udpFlows: number;
  lookups: number;
  localPassThrough: number;
  failures: number;
}

export interface SessionProxyOptions extends OutgoingPolicy {
  log: (line: string) => void;
  /** Pod files (file-rules.ts); without it every file op is answered "local". */
  files?: FileRules;
  /** Incoming traffic (listen/unlisten/peer ops); without it the program's listeners stay local. */
  incoming?: IncomingManager;
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
  readonly #unix: net.Server;
  readonly #clients = new Set<net.Socket>();
  readonly #tcp: OutgoingTcp;
  readonly #udp: UdpRelays;
  readonly #dns: PodDns;
  #localPassThrough = 0;
  #failures = 0;
  readonly #calls: ShimCallHandlers;
  readonly #notifications: ShimNotificationHandlers;

  private constructor(agent: ProxyAgent, opts: SessionProxyOptions, tcp: OutgoingTcp) {
    this.#opts = opts;
    this.#tcp = tcp;
    this.#udp = new UdpRelays(agent, opts.udp);
    this.#dns = new PodDns(agent, opts.routing);
    this.#dir = createSessionFolder(opts.tmpdir);
    this.socketPath = join(this.#dir, 'proxy.sock');
    this.files = opts.files ? new FileProxy(agent, opts.files, this.#dir) : undefined;
    const files = this.files;
    const incoming = opts.incoming;
    const localFiles = (): ShimReply => ({ ok: true, mode: 'local' });
    const localListen = (): ShimReply => ({ ok: true, action: 'local' });
    this.#calls = {
      connect: (r) => this.#connect(r),
      resolve: (r) => this.#dns.resolve(r),
      reverse: (r) => this.#dns.reverse(r),
      listen: (r) => (incoming ? incoming.listen(r) : localListen()),
      peer: (r) => (incoming ? incoming.peer(r) : localListen()),
      'fs.config': (r) => (files ? files.answer(r) : localFiles()),
      'fs.open': (r) => (files ? files.answer(r) : localFiles()),
      'fs.fill': (r) => (files ? files.answer(r) : localFiles()),
      'fs.writeback': (r) => (files ? files.answer(r) : localFiles()),
      'fs.stat': (r) => (files ? files.answer(r) : localFiles()),
      'fs.access': (r) => (files ? files.answer(r) : localFiles()),
      'fs.readlink': (r) => (files ? files.answer(r) : localFiles()),
      'fs.readdir': (r) => (files ? files.answer(r) : localFiles()),
      'fs.change': (r) => (files ? files.answer(r) : localFiles()),
    };
    this.#notifications = {
      attach: (n) => this.#tcp.attach(n),
      unlisten: (n) => incoming?.unlisten(n),
      'fs.release': (n) => files?.release(n),
    };
    this.#unix = net.createServer((c) => {
      this.#clients.add(c);
      c.on('close', () => this.#clients.delete(c));
      serveShimChannel(c, this, { log: opts.log });
    });
  }

  static async start(agent: ProxyAgent, opts: SessionProxyOptions): Promise<SessionProxy> {
    const tcp = await OutgoingTcp.start(agent, opts.tcp);
    const proxy = new SessionProxy(agent, opts, tcp);
    await new Promise<void>((resolve, reject) => {
      proxy.#unix.once('error', reject);
      proxy.#unix.listen(proxy.socketPath, () => resolve());
    });
    if (!tcp.listening) throw new TsmError('TSM_ERR_INTERNAL', 'cannot listen on 127.0.0.1 for the session proxy');
    return proxy;
  }

  get stats(): ProxyStats {
    return {
      ...this.#tcp.stats, udpFlows: this.#udp.stats.udpFlows, lookups: this.#dns.stats.lookups,
      localPassThrough: this.#localPassThrough, failures: this.#failures,
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
      const handler = this.#calls[request.op] as (r: ShimCall) => Promise<ShimReply> | ShimReply;
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
    const handler = this.#notifications[notification.op] as (n: ShimNotification) => void;
    handler(notification);
  }

  /** ShimEndpoint: the reply to a request whose fields did not check. */
  refuse(op: unknown, err: TsmError): ShimReply | undefined {
    switch (op) {
      case 'attach':
      case 'unlisten':
      case 'fs.release':
        return undefined; // a malformed notification has nothing to answer
      case 'connect':
      case 'resolve':
      case 'reverse':
        this.#failures++;
        return { ok: false, errno: osConstants.errno.EINVAL, eai: EAI_AGAIN, message: err.message };
      case 'listen':
      case 'peer':
        if (!this.#opts.incoming) return { ok: true, action: 'local' };
        this.#failures++;
        return { ok: false, errno: osConstants.errno.EINVAL, eai: EAI_AGAIN, message: err.message };
      default:
        if (typeof op === 'string' && op.startsWith('fs.')) {
          if (!this.files) return { ok: true, mode: 'local' };
          return err.message.startsWith('unknown op') ? { ok: false, errno: osConstants.errno.ENOSYS, message: err.message } : fileFailure(err);
        }
        return { ok: false, errno: osConstants.errno.EINVAL, message: `unknown op ${String(op)}` };
    }
  }

  async #connect(req: ConnectRequest): Promise<ShimReply> {
    const dest = destinationOf(this.#opts, req.addr, req.port);
    if (dest.action === 'local') {
      this.#localPassThrough++;
      return { ok: true, action: 'local' };
    }
    if (req.proto === 'tcp') return this.#tcp.connect(req, dest);
    return this.#udp.open(req, dest, this.#tcp.proxyAddress(req.family));
  }
}
