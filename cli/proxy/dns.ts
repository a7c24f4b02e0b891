/**
 * Name lookups (docs/ARCHITECTURE.md, "DNS"): getaddrinfo and friends are answered by the
 * agent as the pod would answer them. `localhost` names stay with the real resolver, and so
 * does the reverse lookup of an address that routes locally. A pod-side DNS failure comes
 * back as the glibc EAI_* value the agent chose (EAI_NONAME when it gave none).
 *
 * Answers are kept for the session (`PodDns` is made per session) for as long as the agent
 * says they hold: the least TTL of the DNS records the answer rests on (agent/resolver.ts),
 * never longer; an answer from the pod's /etc/hosts, a failure, or one from an agent that
 * sends no TTL is not kept. A repeated getaddrinfo within the TTL then costs no hop.
 *
 * glibc's res_* functions (the shim's res.c) get the pod's resolver settings (`res.config`)
 * and have each DNS message sent to the pod's nameservers by the agent (`res.send`), which
 * answers with the nameserver's own bytes. The UDP queries a program's own resolver sends
 * to the pod's nameserver (udp-relay.ts's DNS relays) are answered the same way, without a
 * UDP flow in the pod. Both go through the session's packet cache (dns-packet-cache.ts).
 */
import { BlockList, isIP } from 'node:net';
import { constants as osConstants } from 'node:os';
import { RemoteError } from '../../protocol/errors.js';
import { route, unmapAddress, type RoutingPolicy } from '../routing.js';
import type { ProxyAgent } from './proxy-agent.js';
import { DnsPacketCache } from './dns-packet-cache.js';
import { fitForUdp, plainQuery, type PlainQuery } from '../../common/dns-message.js';
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

/** The most answers a session keeps (the oldest goes first). */
const MAX_CACHED = 1024;
/** The longest any answer is kept, whatever its TTL (an hour, nscd's default for positive answers). */
const MAX_TTL_S = 3600;

/** The agent answered a DNS message with something that is not one. */
class NotAnAnswer extends Error {}

export class PodDns {
  /**
   * `lookups`: name lookups the program made (not localhost); `cached`: of those, answered
   * from the session's cache. `dnsMessages`: res_* messages; `udpQueries`: UDP queries to
   * the pod's nameserver answered by a DNS relay; `cachedMessages`: of both, answered from
   * the packet cache (or by an identical query's answer).
   */
  readonly stats = { lookups: 0, cached: 0, dnsMessages: 0, udpQueries: 0, cachedMessages: 0 };
  readonly #cache = new Map<string, { reply: ShimReplyOf['resolve']; expires: number }>();
  readonly #packets: DnsPacketCache;
  readonly #agent: ProxyAgent;
  readonly #routing: RoutingPolicy;
  readonly #podNameservers = new BlockList();

  /** `podNameservers`: the pod's (the hello's); UDP flows to them on port 53 may get a DNS relay. */
  constructor(agent: ProxyAgent, routing: RoutingPolicy, podNameservers: readonly string[] = [], packets = new DnsPacketCache()) {
    this.#agent = agent;
    this.#routing = routing;
    this.#packets = packets;
    for (const a of podNameservers) {
      const family = isIP(a);
      if (family !== 0) this.#podNameservers.addAddress(a, family === 6 ? 'ipv6' : 'ipv4');
    }
  }

  async resolve(req: ShimRequestOf<'resolve'>): Promise<ShimReplyOf['resolve']> {
    const lower = req.name.toLowerCase().replace(/\.$/, '');
    if (lower === 'localhost' || lower.endsWith('.localhost')) return { ok: true, action: 'local' };
    this.stats.lookups++;
    const family = req.family ?? 0;
    // Keyed by the name as asked (lowercased): "db." (no search list) is not "db".
    const key = `${family} ${req.name.toLowerCase()}`;
    const hit = this.#cache.get(key);
    if (hit !== undefined) {
      if (performance.now() < hit.expires) {
        this.stats.cached++;
        return hit.reply;
      }
      this.#cache.delete(key);
    }
    try {
      const asked = performance.now();
      const r = await this.#agent.request({ type: 'dns.lookup', name: req.name, family });
      const reply: ShimReplyOf['resolve'] = { ok: true, action: 'remote', addrs: r.addresses.map((a) => ({ family: a.family, addr: a.address })), canonname: r.canonname };
      const ttl = typeof r.ttl === 'number' && Number.isFinite(r.ttl) ? Math.min(r.ttl, MAX_TTL_S) : 0;
      // Counted from when the question was sent: the answer may have been as old as that.
      if (ttl > 0) {
        if (this.#cache.size >= MAX_CACHED) this.#cache.delete(this.#cache.keys().next().value as string);
        this.#cache.set(key, { reply, expires: asked + ttl * 1000 });
      }
      return reply;
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

  /**
   * res.send: one DNS message to the pod's nameservers; the answer as the nameserver sent
   * it (from the packet cache, TTLs aged, when the message is a plain query).
   */
  async resSend(req: ShimRequestOf<'res.send'>): Promise<ShimReplyOf['res.send']> {
    if (!this.#sendsPackets) {
      return { ok: false, errno: osConstants.errno.ECONNREFUSED, message: 'the agent is too old to send DNS messages for res_* functions; update it' };
    }
    this.stats.dnsMessages++;
    try {
      const q = plainQuery(req.query);
      return { ok: true, answer: q ? await this.#cached(req.query, q) : await this.#send(req.query) };
    } catch (err) {
      if (err instanceof NotAnAnswer) return { ok: false, errno: osConstants.errno.EIO, message: err.message };
      if (err instanceof RemoteError && err.code === 'TSM_ERR_DNS' && err.errno !== undefined) return { ok: false, errno: err.errno, message: err.message };
      throw err;
    }
  }

  /**
   * Whether a UDP flow to `address`:`port` is DNS to one of the pod's nameservers that a
   * DNS relay can answer (udp-relay.ts): port 53, and an agent that sends DNS messages.
   */
  answersUdpFlow(address: string, port: number): boolean {
    if (port !== 53 || !this.#sendsPackets) return false;
    const family = isIP(address);
    return family !== 0 && this.#podNameservers.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }

  /**
   * A DNS relay's query (it parsed as `q`): the answer to send back over UDP (truncated
   * with TC when larger than the program takes, so it asks again over TCP), or undefined
   * when there is none to send (no nameserver answered, the session ended): the program
   * waits and asks again, as it would for a lost datagram.
   */
  async answerUdp(query: Uint8Array, q: PlainQuery): Promise<Uint8Array | undefined> {
    this.stats.udpQueries++;
    try {
      return fitForUdp(await this.#cached(query, q), q);
    } catch {
      return undefined;
    }
  }

  async #cached(query: Uint8Array, q: PlainQuery): Promise<Uint8Array> {
    const { answer, hit } = await this.#packets.answer(query, q, (m) => this.#send(m));
    if (hit) this.stats.cachedMessages++;
    return answer;
  }

  /** One message to the pod's nameservers through the agent (`dns.query`). */
  async #send(packet: Uint8Array): Promise<Uint8Array> {
    const r = await this.#agent.request({ type: 'dns.query', packet });
    const answer: unknown = r.packet;
    if (!(answer instanceof Uint8Array) || answer.byteLength > SHIM_MAX_DNS_MESSAGE) throw new NotAnAnswer('the agent answered a DNS message with something else');
    return answer;
  }
}
