/**
 * Outgoing UDP (docs/ARCHITECTURE.md, "Outgoing UDP"): each (socket, destination) flow of
 * the program gets a relay socket here and a connected UDP socket in the pod (`udp.open`).
 * The shim sends the program's datagrams to the relay; what the pod receives comes back
 * from it. Only the first sender (the program's socket) is relayed. Idle flows close.
 */
import dgram from 'node:dgram';
import type net from 'node:net';
import type { Family } from '../../protocol/messages.js';
import { podRefusal, type Destination } from './outgoing-policy.js';
import type { ProxyAgent } from './proxy-agent.js';
import type { ShimReplyOf, ShimRequestOf } from '../../protocol/shim-wire.js';

export interface UdpRelayOptions {
  /** A flow with no datagram either way for this long is closed (both ends). */
  idleMs: number;
}

export class UdpRelays {
  readonly stats = { udpFlows: 0 };
  readonly #agent: ProxyAgent;
  readonly #opts: UdpRelayOptions;
  readonly #relays = new Set<dgram.Socket>();

  constructor(agent: ProxyAgent, options: Partial<UdpRelayOptions> = {}) {
    this.#agent = agent;
    this.#opts = { idleMs: 120000, ...options };
  }

  /** Relays currently open. */
  get size(): number {
    return this.#relays.size;
  }

  /**
   * Opens the pod's side of a flow to `dest` and a relay on the loopback address `proxyAddr`
   * (the program's socket family decides which one it can reach).
   */
  async open(req: ShimRequestOf<'connect'>, dest: Extract<Destination, { action: 'remote' }>, proxyAddr: string): Promise<ShimReplyOf['connect']> {
    const stream = this.#agent.allocateStream();
    this.#agent.peer.mux.open(stream);
    try {
      this.stats.udpFlows++;
      const r = await this.#agent.request({ type: 'udp.open', stream, host: dest.address, port: req.port, family: dest.family });
      const relayPort = await this.#relay(proxyAddr === '::1' ? 6 : 4, stream);
      return { ok: true, action: 'proxy', proxyAddr, proxyPort: relayPort, stream, localAddr: r.localAddress, localPort: r.localPort };
    } catch (err) {
      this.#agent.peer.mux.close(stream);
      const refusal = podRefusal(err);
      if (refusal) return refusal;
      throw err;
    }
  }

  close(): void {
    for (const relay of this.#relays) relay.close();
    this.#relays.clear();
  }

  async #relay(family: Family, stream: number): Promise<number> {
    const relay = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
    this.#relays.add(relay);
    await new Promise<void>((resolve) => relay.bind(0, family === 4 ? '127.0.0.1' : '::1', resolve));
    let program: { address: string; port: number } | undefined;
    // Idle timers never keep the CLI alive after the program has exited.
    let idle = setTimeout(() => close(), this.#opts.idleMs).unref();
    const touch = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => close(), this.#opts.idleMs).unref();
    };
    const close = (): void => {
      clearTimeout(idle);
      if (this.#relays.delete(relay)) relay.close();
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
