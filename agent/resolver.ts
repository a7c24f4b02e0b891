/**
 * Name resolution exactly as inside the pod: the pod's /etc/hosts, then DNS to the pod's
 * nameservers with its search domains and ndots, sent from a UDP socket in the pod's
 * network namespace. NSS modules of the pod are never loaded into the agent.
 */
import type { Socket as DgramSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { createRequire } from 'node:module';
import type dnsPacketTypes from 'dns-packet';
import type { Family } from '../protocol/messages.js';
import { parseResolvConf, type ResolvConf } from '../common/resolv-conf.js';

/** Closes a UDP socket that may already be closed (a session's teardown closes it too). */
export function closeDatagramSocket(socket: DgramSocket): void {
  try {
    socket.close();
  } catch {
    // already closed
  }
}

export const EAI_NONAME = -2;
export const EAI_AGAIN = -3;
export const EAI_FAIL = -4;

export interface HostsEntry { address: string; family: Family; names: string[] }

export function parseHosts(text: string): HostsEntry[] {
  const out: HostsEntry[] = [];
  for (const raw of text.split('\n')) {
    const [address, ...names] = raw.replace(/#.*$/, '').trim().split(/\s+/);
    if (!address || names.length === 0) continue;
    const family = isIP(address);
    if (family === 4 || family === 6) out.push({ address, family, names: names.map((n) => n.toLowerCase()) });
  }
  return out;
}

/** The names glibc would try, in order, for `name` under `conf` (search list and ndots). */
export function candidateNames(name: string, conf: Pick<ResolvConf, 'search' | 'ndots'>): string[] {
  if (name.endsWith('.')) return [name.slice(0, -1)];
  const dots = name.split('.').length - 1;
  const searched = conf.search.map((s) => `${name}.${s.replace(/\.$/, '')}`);
  return dots >= conf.ndots ? [name, ...searched] : [...searched, name];
}

export interface LookupResult { addresses: Array<{ family: Family; address: string }>; canonname: string }

export class ResolveError extends Error {
  constructor(readonly eai: number, message: string) {
    super(message);
  }
}

/** dns-packet decodes `rcode` but its types leave it out. */
// Loaded on first use: a session that never looks a name up does not pay for loading
// dns-packet.
let dnsPacketModule: typeof dnsPacketTypes | undefined;
const dnsPacket = (): typeof dnsPacketTypes => (dnsPacketModule ??= createRequire(import.meta.url)('dns-packet') as typeof dnsPacketTypes);

type Reply = dnsPacketTypes.DecodedPacket & { rcode?: string };

function answerData(a: dnsPacketTypes.Answer): unknown {
  return (a as { data?: unknown }).data;
}

type Outcome = { kind: 'answer'; addresses: LookupResult['addresses']; canonname: string } | { kind: 'nxdomain' | 'nodata' | 'fail' };

function ptrName(address: string): string {
  if (isIP(address) === 4) return `${address.split('.').reverse().join('.')}.in-addr.arpa`;
  // expand the IPv6 address to 32 nibbles
  const [head = '', tail = ''] = address.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = address.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  const nibbles = groups.map((g) => g.padStart(4, '0')).join('');
  return `${nibbles.split('').reverse().join('.')}.ip6.arpa`;
}

/**
 * A resolver bound to one pod. `openSocket` gives a UDP socket inside the pod's network
 * namespace; `readPodFile` reads a file from the pod's root (resolv.conf, hosts) each
 * time, so a changed file is seen as the pod sees it.
 */
export class PodResolver {
  #sockets = new Map<Family, Promise<DgramSocket>>();
  #pending = new Map<number, (p: Reply | undefined) => void>();
  #nextId = Math.floor(Math.random() * 65536);

  constructor(
    private readonly openSocket: (family: Family) => Promise<DgramSocket>,
    private readonly readPodFile: (path: string) => Promise<string>,
  ) {}

  async conf(): Promise<ResolvConf> {
    return parseResolvConf(await this.readPodFile('/etc/resolv.conf').catch(() => ''));
  }

  async hosts(): Promise<HostsEntry[]> {
    return parseHosts(await this.readPodFile('/etc/hosts').catch(() => ''));
  }

  async lookup(name: string, family: 0 | Family): Promise<LookupResult> {
    const lower = name.toLowerCase().replace(/\.$/, '');
    if (lower.length === 0 || lower.length > 253) throw new ResolveError(EAI_NONAME, `"${name}" is not a valid name`);
    const fromHosts = (await this.hosts()).filter((e) => e.names.includes(lower) && (family === 0 || e.family === family));
    if (fromHosts.length > 0) return { addresses: fromHosts.map((e) => ({ family: e.family, address: e.address })), canonname: lower };
    const conf = await this.conf();
    let sawFailure = false;
    for (const candidate of candidateNames(name.toLowerCase(), conf)) {
      const types: Array<'A' | 'AAAA'> = family === 4 ? ['A'] : family === 6 ? ['AAAA'] : ['A', 'AAAA'];
      const outcomes = await Promise.all(types.map((t) => this.#query(conf, candidate, t)));
      const addresses = outcomes.flatMap((o) => (o.kind === 'answer' ? o.addresses : []));
      if (addresses.length > 0) {
        const canon = outcomes.find((o): o is Extract<Outcome, { kind: 'answer' }> => o.kind === 'answer')?.canonname ?? candidate;
        return { addresses, canonname: canon };
      }
      if (outcomes.some((o) => o.kind === 'fail')) sawFailure = true;
    }
    if (sawFailure) throw new ResolveError(EAI_AGAIN, `the pod's nameservers did not answer for "${name}"`);
    throw new ResolveError(EAI_NONAME, `"${name}" is not known in the pod`);
  }

  async reverse(address: string): Promise<string> {
    const fromHosts = (await this.hosts()).find((e) => e.address === address);
    if (fromHosts?.names[0]) return fromHosts.names[0];
    const conf = await this.conf();
    const res = await this.#ask(conf, ptrName(address), 'PTR');
    const ptr = res?.answers?.map(answerData).find((d): d is string => typeof d === 'string');
    if (ptr) return ptr;
    if (!res || res.rcode === 'SERVFAIL' || res.rcode === 'REFUSED') throw new ResolveError(EAI_AGAIN, `reverse lookup of ${address} failed in the pod`);
    throw new ResolveError(EAI_NONAME, `${address} has no name in the pod`);
  }

  close(): void {
    for (const socket of this.#sockets.values()) void socket.then(closeDatagramSocket, () => undefined);
    this.#sockets.clear();
    for (const done of this.#pending.values()) done(undefined);
    this.#pending.clear();
  }

  async #query(conf: ResolvConf, name: string, type: 'A' | 'AAAA'): Promise<Outcome> {
    const res = await this.#ask(conf, name, type);
    if (!res) return { kind: 'fail' };
    if (res.rcode === 'NXDOMAIN') return { kind: 'nxdomain' };
    if (res.rcode !== 'NOERROR') return { kind: 'fail' };
    const addresses: LookupResult['addresses'] = [];
    let canonname = name;
    for (const a of res.answers ?? []) {
      const data = answerData(a);
      if (typeof data !== 'string') continue;
      if (a.type === 'CNAME') canonname = data;
      if (a.type === 'A') addresses.push({ family: 4, address: data });
      if (a.type === 'AAAA') addresses.push({ family: 6, address: data });
    }
    return addresses.length > 0 ? { kind: 'answer', addresses, canonname } : { kind: 'nodata' };
  }

  async #ask(conf: ResolvConf, name: string, type: 'A' | 'AAAA' | 'PTR'): Promise<Reply | undefined> {
    for (let attempt = 0; attempt < conf.attempts; attempt++) {
      for (const server of conf.nameservers) {
        const res = await this.#exchange(server, name, type, conf.timeoutMs);
        if (res && res.rcode !== 'SERVFAIL' && res.rcode !== 'REFUSED') return res;
        if (res && attempt === conf.attempts - 1 && server === conf.nameservers.at(-1)) return res;
      }
    }
    return undefined;
  }

  async #exchange(server: string, name: string, type: 'A' | 'AAAA' | 'PTR', timeoutMs: number): Promise<Reply | undefined> {
    const socket = await this.#udp(isIP(server) === 6 ? 6 : 4);
    const id = (this.#nextId = (this.#nextId + 1) & 0xffff);
    const query = dnsPacket().encode({ type: 'query', id, flags: dnsPacket().RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.#pending.set(id, (p) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        resolve(p);
      });
      socket.send(query, 53, server, (err) => {
        if (err) this.#pending.get(id)?.(undefined);
      });
    });
  }

  #udp(family: Family): Promise<DgramSocket> {
    // One socket per family per session, opened on first use.
    let socket = this.#sockets.get(family);
    if (!socket) {
      socket = this.openSocket(family).then((s) => this.#listen(s));
      this.#sockets.set(family, socket);
    }
    return socket;
  }

  #listen(socket: DgramSocket): DgramSocket {
    socket.on('message', (msg) => {
      let p: Reply;
      try {
        p = dnsPacket().decode(msg);
      } catch {
        return; // not DNS; ignore
      }
      if (p.id !== undefined) this.#pending.get(p.id)?.(p);
    });
    socket.on('error', () => undefined);
    return socket;
  }
}
