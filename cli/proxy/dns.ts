/**
 * Name lookups (docs/ARCHITECTURE.md, "DNS"): getaddrinfo and friends are answered by the
 * agent as the pod would answer them. `localhost` names stay with the real resolver, and so
 * does the reverse lookup of an address that routes locally. A pod-side DNS failure comes
 * back as the glibc EAI_* value the agent chose (EAI_NONAME when it gave none).
 *
 * glibc's res_* functions (the shim's res.c) get the pod's resolver settings (`res.config`)
 * and have each DNS message sent to the pod's nameservers by the agent (`res.send`), which
 * answers with the nameserver's own bytes.
 */
import { isIP } from 'node:net';
import { constants as osConstants } from 'node:os';
import { RemoteError } from '../../protocol/errors.js';
import { route, unmapAddress, type RoutingPolicy } from '../routing.js';
import type { ProxyAgent } from './proxy-agent.js';
import {
  SHIM_MAX_ADDRESS_TEXT, SHIM_MAX_DNS_MESSAGE, SHIM_MAX_DOMAIN, SHIM_MAX_NAMESERVERS, SHIM_MAX_SEARCH,
} from '../../protocol/shim-constants.js';
import type { ShimErrorReply, ShimReplyOf, ShimRequestOf } from '../../protocol/shim-wire.js';

export const EAI_NONAME = -2;
export const EAI_AGAIN = -3;

function dnsFailure(err: unknown): ShimErrorReply | undefined {
  if (err instanceof RemoteError && err.code === 'TSM_ERR_DNS') return { ok: false, eai: -(err.errno ?? -EAI_NONAME), message: err.message };
  return undefined;
}

const clamp = (v: unknown, min: number, max: number, fallback: number): number =>
  typeof v === 'number' && Number.isFinite(v) ? Math.min(Math.max(Math.trunc(v), min), max) : fallback;
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : []);

export class PodDns {
  readonly stats = { lookups: 0, dnsMessages: 0 };
  readonly #agent: ProxyAgent;
  readonly #routing: RoutingPolicy;

  constructor(agent: ProxyAgent, routing: RoutingPolicy) {
    this.#agent = agent;
    this.#routing = routing;
  }

  async resolve(req: ShimRequestOf<'resolve'>): Promise<ShimReplyOf['resolve']> {
    const lower = req.name.toLowerCase().replace(/\.$/, '');
    if (lower === 'localhost' || lower.endsWith('.localhost')) return { ok: true, action: 'local' };
    this.stats.lookups++;
    try {
      const r = await this.#agent.request({ type: 'dns.lookup', name: req.name, family: req.family ?? 0 });
      return { ok: true, action: 'remote', addrs: r.addresses.map((a) => ({ family: a.family, addr: a.address })), canonname: r.canonname };
    } catch (err) {
      const failure = dnsFailure(err);
      if (failure) return failure;
      throw err;
    }
  }

  async reverse(req: ShimRequestOf<'reverse'>): Promise<ShimReplyOf['reverse']> {
    if (route(this.#routing, req.addr, 0) === 'local') return { ok: true, action: 'local' };
    try {
      const r = await this.#agent.request({ type: 'dns.reverse', address: unmapAddress(req.addr).address });
      return { ok: true, action: 'remote', name: r.name };
    } catch (err) {
      const failure = dnsFailure(err);
      if (failure) return failure;
      throw err;
    }
  }

  /** The agent can send the program's DNS messages (an older one cannot: the shim then leaves res_* to glibc). */
  get #sendsPackets(): boolean {
    return this.#agent.hello.capabilities.includes('dns-packets');
  }

  /** res.config: the pod's resolv.conf, read now, within what struct __res_state holds. */
  async resConfig(): Promise<ShimReplyOf['res.config']> {
    if (!this.#sendsPackets) return { ok: true, action: 'local' };
    const c = await this.#agent.request({ type: 'dns.config' });
    return {
      ok: true, action: 'remote',
      nameservers: strings(c.nameservers).filter((a) => a.length <= SHIM_MAX_ADDRESS_TEXT && isIP(a) !== 0).slice(0, SHIM_MAX_NAMESERVERS),
      search: strings(c.search).filter((d) => d.length > 0 && d.length <= SHIM_MAX_DOMAIN && !d.includes('\0')).slice(0, SHIM_MAX_SEARCH),
      ndots: clamp(c.ndots, 0, 15, 1),
      timeoutMs: clamp(c.timeoutMs, 0, 30000, 5000),
      attempts: clamp(c.attempts, 1, 5, 2),
    };
  }

  /** res.send: one DNS message to the pod's nameservers; the answer as the nameserver sent it. */
  async resSend(req: ShimRequestOf<'res.send'>): Promise<ShimReplyOf['res.send']> {
    if (!this.#sendsPackets) {
      return { ok: false, errno: osConstants.errno.ECONNREFUSED, message: 'the agent is too old to send DNS messages for res_* functions; update it' };
    }
    this.stats.dnsMessages++;
    try {
      const r = await this.#agent.request({ type: 'dns.query', packet: req.query });
      const answer: unknown = r.packet;
      if (!(answer instanceof Uint8Array) || answer.byteLength > SHIM_MAX_DNS_MESSAGE) {
        return { ok: false, errno: osConstants.errno.EIO, message: 'the agent answered a DNS message with something else' };
      }
      return { ok: true, answer };
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'TSM_ERR_DNS' && err.errno !== undefined) return { ok: false, errno: err.errno, message: err.message };
      throw err;
    }
  }
}
