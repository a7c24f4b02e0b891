/**
 * Name lookups (docs/ARCHITECTURE.md, "DNS"): getaddrinfo and friends are answered by the
 * agent as the pod would answer them. `localhost` names stay with the real resolver, and so
 * does the reverse lookup of an address that routes locally. A pod-side DNS failure comes
 * back as the glibc EAI_* value the agent chose (EAI_NONAME when it gave none).
 */
import { RemoteError } from '../../protocol/errors.js';
import { route, unmapAddress, type RoutingPolicy } from '../routing.js';
import type { ProxyAgent } from './proxy-agent.js';
import type { ShimErrorReply, ShimReplyOf, ShimRequestOf } from '../../protocol/shim-wire.js';

export const EAI_NONAME = -2;
export const EAI_AGAIN = -3;

function dnsFailure(err: unknown): ShimErrorReply | undefined {
  if (err instanceof RemoteError && err.code === 'TSM_ERR_DNS') return { ok: false, eai: -(err.errno ?? -EAI_NONAME), message: err.message };
  return undefined;
}

export class PodDns {
  readonly stats = { lookups: 0 };
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
}
