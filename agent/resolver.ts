/**
 * Name resolution exactly as inside the pod: the pod's /etc/hosts, then DNS to the pod's
 * nameservers with its search domains and ndots, sent from a UDP socket in the pod's
 * network namespace. NSS modules of the pod are never loaded into the agent.
 */
import type { Socket as DgramSocket } from 'node:dgram';
import { isIP, type Socket as TcpSocket } from 'node:net';
import { createRequire } from 'node:module';
import type dnsPacketTypes from 'dns-packet';
import type { Family } from '../protocol/messages.js';
import { parseResolvConf, type ResolvConf } from '../common/resolv-conf.js';
import { answers, DNS_HEADER_BYTES as HEADER_BYTES, questionEnd } from '../common/dns-message.js';

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

/** `ttl`: seconds the answer may be reused (0: not at all); see protocol/messages.ts `dns.lookup`. */
export interface LookupResult { addresses: Array<{ family: Family; address: string }>; canonname: string; ttl: number }

export class ResolveError extends Error {
  constructor(readonly eai: number, message: string) {
    super(message);
  }
}

/** A DNS message the program sent (res_send) could not be answered: no nameserver answered (ETIMEDOUT), or it is not a query (EINVAL). */
export class DnsSendError extends Error {
  constructor(readonly errno: 'ETIMEDOUT' | 'EINVAL', message: string) {
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

/** `ttl`: how long the outcome holds (seconds): the records' least TTL; for a negative answer the SOA's (RFC 2308), 0 without one. */
type Outcome = { kind: 'answer'; addresses: LookupResult['addresses']; canonname: string; ttl: number } | { kind: 'nxdomain' | 'nodata'; ttl: number } | { kind: 'fail'; ttl: 0 };

/** A record's TTL as a whole number of seconds, 0 when missing or odd. */
function recordTtl(a: { ttl?: unknown }): number {
  return typeof a.ttl === 'number' && Number.isSafeInteger(a.ttl) && a.ttl > 0 ? a.ttl : 0;
}

/** How long a negative answer holds (RFC 2308 §5): the SOA record's TTL, at most its MINIMUM field; 0 without a SOA. */
function negativeTtl(res: Reply): number {
  for (const a of res.authorities ?? []) {
    if (a.type !== 'SOA') continue;
    const minimum = (answerData(a) as { minimum?: unknown } | undefined)?.minimum;
    return Math.min(recordTtl(a), typeof minimum === 'number' && minimum >= 0 ? minimum : 0);
  }
  return 0;
}

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
  /** Queries in flight by the id they were sent with; each gets the raw answer, or undefined (timeout, closed). */
  #pending = new Map<number, (answer: Buffer | undefined) => void>();
  #nextId = Math.floor(Math.random() * 65536);
  /** Closed with its session: a query still in its retry loop opens no socket (the session's netns fd is gone, its number maybe another's). */
  #closed = false;

  /** `openTcp` (optional): an unconnected TCP socket in the pod's netns, for answers too large for UDP. */
  constructor(
    private readonly openSocket: (family: Family) => Promise<DgramSocket>,
    private readonly readPodFile: (path: string) => Promise<string>,
    private readonly openTcp?: (family: Family) => TcpSocket,
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
    // ttl 0: /etc/hosts is read for every lookup, so an edit is seen at once, as in the pod.
    if (fromHosts.length > 0) return { addresses: fromHosts.map((e) => ({ family: e.family, address: e.address })), canonname: lower, ttl: 0 };
    const conf = await this.conf();
    let sawFailure = false;
    // The answer holds only as long as every outcome it rests on: the negative answers for
    // the names tried before it too (one of them may start to exist).
    let ttl = Infinity;
    for (const candidate of candidateNames(name.toLowerCase(), conf)) {
      const types: Array<'A' | 'AAAA'> = family === 4 ? ['A'] : family === 6 ? ['AAAA'] : ['A', 'AAAA'];
      const outcomes = await Promise.all(types.map((t) => this.#query(conf, candidate, t)));
      const addresses = outcomes.flatMap((o) => (o.kind === 'answer' ? o.addresses : []));
      for (const o of outcomes) ttl = Math.min(ttl, o.ttl);
      if (addresses.length > 0) {
        const canon = outcomes.find((o): o is Extract<Outcome, { kind: 'answer' }> => o.kind === 'answer')?.canonname ?? candidate;
        return { addresses, canonname: canon, ttl: Number.isFinite(ttl) ? ttl : 0 };
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
    this.#closed = true;
    for (const socket of this.#sockets.values()) void socket.then(closeDatagramSocket, () => undefined);
    this.#sockets.clear();
    for (const done of this.#pending.values()) done(undefined);
    this.#pending.clear();
  }

  async #query(conf: ResolvConf, name: string, type: 'A' | 'AAAA'): Promise<Outcome> {
    const res = await this.#ask(conf, name, type);
    if (!res) return { kind: 'fail', ttl: 0 };
    if (res.rcode === 'NXDOMAIN') return { kind: 'nxdomain', ttl: negativeTtl(res) };
    if (res.rcode !== 'NOERROR') return { kind: 'fail', ttl: 0 };
    const addresses: LookupResult['addresses'] = [];
    let canonname = name;
    let ttl = Infinity;
    for (const a of res.answers ?? []) {
      const data = answerData(a);
      if (typeof data !== 'string') continue;
      if (a.type === 'CNAME' || a.type === 'A' || a.type === 'AAAA') ttl = Math.min(ttl, recordTtl(a));
      if (a.type === 'CNAME') canonname = data;
      if (a.type === 'A') addresses.push({ family: 4, address: data });
      if (a.type === 'AAAA') addresses.push({ family: 6, address: data });
    }
    return addresses.length > 0 ? { kind: 'answer', addresses, canonname, ttl: Number.isFinite(ttl) ? ttl : 0 } : { kind: 'nodata', ttl: negativeTtl(res) };
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
    const query = dnsPacket().encode({ type: 'query', id: 0, flags: dnsPacket().RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });
    const raw = await this.#udpExchange(server, query, timeoutMs);
    if (!raw) return undefined;
    try {
      return dnsPacket().decode(raw);
    } catch {
      return undefined; // not DNS: as no answer
    }
  }

  /**
   * Sends `query` from the pod's UDP socket under an id of the resolver's own (concurrent
   * programs may pick the same ids), and gives the answer to it with the query's id back,
   * or undefined after timeoutMs. Only a response to the same question counts.
   */
  async #udpExchange(server: string, query: Uint8Array, timeoutMs: number): Promise<Buffer | undefined> {
    if (this.#closed) return undefined;
    const socket = await this.#udp(isIP(server) === 6 ? 6 : 4);
    let id = (this.#nextId = (this.#nextId + 1) & 0xffff);
    for (let tries = 0; this.#pending.has(id) && tries < 65536; tries++) id = (this.#nextId = (this.#nextId + 1) & 0xffff);
    const sent = Buffer.from(query);
    const programId = sent.readUInt16BE(0);
    sent.writeUInt16BE(id, 0);
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const done = (answer: Buffer | undefined): void => {
        clearTimeout(timer);
        this.#pending.delete(id);
        if (answer) answer.writeUInt16BE(programId, 0);
        resolve(answer);
      };
      this.#pending.set(id, (answer) => {
        if (answer && !answers(sent, answer)) return; // a stray or forged packet: keep waiting
        done(answer);
      });
      socket.send(sent, 53, server, (err) => {
        if (err) done(undefined);
      });
    });
  }

  /** One query over TCP (RFC 1035 4.2.2: a 2-byte length before each message), or undefined. */
  async #tcpExchange(server: string, query: Uint8Array, timeoutMs: number): Promise<Buffer | undefined> {
    if (!this.openTcp || this.#closed) return undefined;
    let socket: TcpSocket;
    try {
      socket = this.openTcp(isIP(server) === 6 ? 6 : 4);
    } catch {
      return undefined;
    }
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let have = 0;
      const finish = (answer: Buffer | undefined): void => {
        clearTimeout(timer);
        socket.destroy();
        resolve(answer);
      };
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      socket.on('error', () => finish(undefined));
      socket.on('end', () => finish(undefined));
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        have += chunk.length;
        if (have > 2 + 65535) return finish(undefined);
        const all = Buffer.concat(chunks);
        if (all.length < 2) return;
        const len = all.readUInt16BE(0);
        if (all.length < 2 + len) return;
        const answer = all.subarray(2, 2 + len);
        finish(answers(query, answer) && answer.readUInt16BE(0) === Buffer.from(query).readUInt16BE(0) ? Buffer.from(answer) : undefined);
      });
      socket.connect({ host: server, port: 53 }, () => {
        const framed = Buffer.alloc(2 + query.length);
        framed.writeUInt16BE(query.length, 0);
        framed.set(query, 2);
        socket.write(framed);
      });
    });
  }

  /**
   * res_send for the program: `query` goes to the pod's nameservers in turn, `attempts`
   * rounds; a SERVFAIL, REFUSED or NOTIMP answer moves on to the next one (and is returned
   * when none does better), a truncated UDP answer is asked again over TCP. The answer is
   * the nameserver's bytes, with the query's id.
   */
  async send(query: Uint8Array): Promise<Buffer> {
    if (query.length < HEADER_BYTES || query.length > 65535 || (query[2]! & 0x80) !== 0 || questionEnd(query) < 0) {
      throw new DnsSendError('EINVAL', 'the message to send is not a DNS query');
    }
    const conf = await this.conf();
    let last: Buffer | undefined;
    for (let attempt = 0; attempt < conf.attempts; attempt++) {
      for (const server of conf.nameservers) {
        let answer = await this.#udpExchange(server, query, conf.timeoutMs);
        if (!answer) continue;
        if ((answer[2]! & 0x02) !== 0) answer = (await this.#tcpExchange(server, query, conf.timeoutMs)) ?? answer; // TC
        const rcode = answer[3]! & 0x0f;
        if (rcode !== 2 && rcode !== 4 && rcode !== 5) return answer; // SERVFAIL, NOTIMP, REFUSED: next
        last = answer;
      }
    }
    if (last) return last;
    throw new DnsSendError('ETIMEDOUT', `no nameserver of the pod (${conf.nameservers.join(', ')}) answered`);
  }

  #udp(family: Family): Promise<DgramSocket> {
    if (this.#closed) return Promise.reject(new Error('the session ended'));
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
      if (msg.length >= HEADER_BYTES) this.#pending.get(msg.readUInt16BE(0))?.(msg);
    });
    socket.on('error', () => undefined);
    return socket;
  }
}
