/**
 * DNS messages as bytes (RFC 1035 §4), for the two places that handle a program's own DNS
 * messages without decoding them whole: the agent's resolver (agent/resolver.ts, which
 * sends them to the pod's nameservers for glibc's res_* functions) and the session proxy's
 * packet cache (cli/proxy/dns-packet-cache.ts, answering a program's UDP queries to the
 * pod's nameserver). Every message may be hostile: each read is bounds-checked, names are
 * at most 255 bytes of at most 127 labels, and anything that does not parse is refused
 * (-1 or undefined), never thrown.
 */

export const DNS_HEADER_BYTES = 12;
/** A UDP answer's size limit without EDNS (RFC 1035 §4.2.1). */
export const DNS_CLASSIC_UDP_LIMIT = 512;
const TYPE_SOA = 6;
const TYPE_OPT = 41;
const MAX_NAME = 255;

const u16 = (m: Uint8Array, at: number): number => (m[at]! << 8) | m[at + 1]!;
const u32 = (m: Uint8Array, at: number): number => ((m[at]! << 24) | (m[at + 1]! << 16) | (m[at + 2]! << 8) | m[at + 3]!) >>> 0;

/**
 * Where the name at `at` ends (after its terminating zero label, or after its compression
 * pointer when `pointers` allows one), or -1. A pointer is not followed: the name's own
 * bytes are all that is checked.
 */
function nameEnd(msg: Uint8Array, at: number, pointers: boolean): number {
  let length = 1;
  for (let labels = 0; ; labels++) {
    if (at >= msg.length || labels > 127) return -1;
    const len = msg[at]!;
    if (len === 0) return at + 1;
    if ((len & 0xc0) === 0xc0) return pointers && at + 2 <= msg.length ? at + 2 : -1;
    if ((len & 0xc0) !== 0) return -1;
    length += 1 + len;
    if (length > MAX_NAME) return -1;
    at += 1 + len;
  }
}

/** Where the question section of a DNS message ends (after qdcount questions), or -1. */
export function questionEnd(msg: Uint8Array): number {
  if (msg.length < DNS_HEADER_BYTES) return -1;
  const count = u16(msg, 4);
  let at = DNS_HEADER_BYTES;
  for (let q = 0; q < count; q++) {
    at = nameEnd(msg, at, true);
    if (at < 0) return -1;
    at += 4; // type, class
    if (at > msg.length) return -1;
  }
  return at;
}

const lowerAscii = (b: number): number => (b >= 0x41 && b <= 0x5a ? b + 32 : b);

/** Whether `answer` answers `query`: a response (QR) with the same questions (names compared case-insensitively). */
export function answers(query: Uint8Array, answer: Uint8Array): boolean {
  if (answer.length < DNS_HEADER_BYTES || (answer[2]! & 0x80) === 0) return false;
  const qEnd = questionEnd(query);
  if (qEnd < 0 || answer.length < qEnd || answer[4] !== query[4] || answer[5] !== query[5]) return false;
  // A truncated answer may carry no question section; its header still names the count.
  for (let i = DNS_HEADER_BYTES; i < qEnd; i++) if (lowerAscii(answer[i]!) !== lowerAscii(query[i]!)) return false;
  return true;
}

/** A query that a cache may answer: one question, nothing else but an optional EDNS OPT record. */
export interface PlainQuery {
  /**
   * What an answer depends on: the question (name lowercased), the flags the server
   * heeds (RD, AD, CD and the reserved Z bit), and EDNS: present or not, its DO bit, its
   * version and its options' bytes (a cookie or a client subnet changes the answer).
   */
  key: string;
  /** Where the question ends: bytes 12..questionEnd are the question as the program wrote it. */
  questionEnd: number;
  /** The largest UDP answer the program takes: 512 without EDNS, else its EDNS size (at least 512). */
  udpLimit: number;
  /** The query has an EDNS OPT record. */
  edns: boolean;
}

/**
 * The query as a cache sees it, or undefined for anything else: a response, another
 * opcode (NOTIFY, UPDATE), a truncated query, more than one question, answer or authority
 * records, additional records other than one OPT, a compressed question name, or trailing
 * bytes. Those are not answered from a cache.
 */
export function plainQuery(msg: Uint8Array): PlainQuery | undefined {
  if (msg.length < DNS_HEADER_BYTES + 5 || msg.length > 0xffff) return undefined;
  const flags = u16(msg, 2);
  // QR=0, opcode QUERY, TC=0, RCODE 0.
  if ((flags & 0xfa0f) !== 0 || u16(msg, 4) !== 1 || u16(msg, 6) !== 0 || u16(msg, 8) !== 0) return undefined;
  const arcount = u16(msg, 10);
  if (arcount > 1) return undefined;
  const nameStop = nameEnd(msg, DNS_HEADER_BYTES, false);
  if (nameStop < 0) return undefined;
  const qEnd = nameStop + 4;
  if (qEnd > msg.length) return undefined;
  let name = '';
  for (let i = DNS_HEADER_BYTES; i < qEnd; i++) name += String.fromCharCode(lowerAscii(msg[i]!));
  // RD, and RA/Z/AD/CD as the query set them (RA is 0 in a query; Z must be; AD and CD ask for something).
  const heeded = flags & 0x01f0;
  if (arcount === 0) {
    if (qEnd !== msg.length) return undefined;
    return { key: `${name}|${heeded}|-`, questionEnd: qEnd, udpLimit: DNS_CLASSIC_UDP_LIMIT, edns: false };
  }
  // The OPT pseudo-record (RFC 6891): root name, type 41, class = UDP size, TTL = extended RCODE, version, DO and Z flags.
  const opt = qEnd;
  if (opt + 11 > msg.length || msg[opt] !== 0 || u16(msg, opt + 1) !== TYPE_OPT) return undefined;
  const rdlength = u16(msg, opt + 9);
  if (opt + 11 + rdlength !== msg.length) return undefined;
  const udpSize = u16(msg, opt + 3);
  const extRcode = msg[opt + 5]!;
  const version = msg[opt + 6]!;
  if (extRcode !== 0 || version !== 0) return undefined; // BADVERS and the like: the server's to answer
  const ednsFlags = u16(msg, opt + 7);
  let options = '';
  for (let i = opt + 11; i < msg.length; i++) options += msg[i]!.toString(16).padStart(2, '0');
  return { key: `${name}|${heeded}|e${ednsFlags}|${options}`, questionEnd: qEnd, udpLimit: Math.max(DNS_CLASSIC_UDP_LIMIT, udpSize), edns: true };
}

/** A resource record of a message: where its TTL field is, its type, and its rdata. */
interface RecordAt { type: number; section: 'answer' | 'authority' | 'additional'; ttlAt: number; start: number; rdataAt: number; end: number }

/** Every record of a message after its questions, or undefined when the counts and the bytes do not agree. */
function records(msg: Uint8Array): RecordAt[] | undefined {
  let at = questionEnd(msg);
  if (at < 0) return undefined;
  const out: RecordAt[] = [];
  const sections = [['answer', u16(msg, 6)], ['authority', u16(msg, 8)], ['additional', u16(msg, 10)]] as const;
  for (const [section, count] of sections) {
    for (let i = 0; i < count; i++) {
      const start = at;
      at = nameEnd(msg, at, true);
      if (at < 0 || at + 10 > msg.length) return undefined;
      const rdataAt = at + 10;
      const end = rdataAt + u16(msg, at + 8);
      if (end > msg.length) return undefined;
      out.push({ type: u16(msg, at), section, ttlAt: at + 4, start, rdataAt, end });
      at = end;
    }
  }
  return at === msg.length ? out : undefined;
}

/** A TTL field as RFC 2181 §8 reads it: a value with the top bit set counts as 0. */
const ttlAt = (msg: Uint8Array, at: number): number => {
  const v = u32(msg, at);
  return v > 0x7fffffff ? 0 : v;
};

/**
 * For how many seconds an answer to a plain query may be served again (0: not at all):
 * the least TTL of its records (the OPT pseudo-record aside). A negative answer (NXDOMAIN,
 * or NOERROR with no answer records) holds as long as its SOA record, at most the SOA's
 * MINIMUM field (RFC 2308 §5), and without a SOA not at all. Other RCODEs, a truncated
 * answer and anything that does not parse: 0.
 */
export function cacheSeconds(answer: Uint8Array): number {
  if (answer.length < DNS_HEADER_BYTES) return 0;
  const flags = u16(answer, 2);
  const rcode = flags & 0x0f;
  if ((flags & 0x8000) === 0 || (flags & 0x0200) !== 0 || (rcode !== 0 && rcode !== 3)) return 0;
  const all = records(answer);
  if (!all) return 0;
  let ttl = Infinity;
  let soaMinimum: number | undefined;
  for (const r of all) {
    if (r.type === TYPE_OPT) continue;
    ttl = Math.min(ttl, ttlAt(answer, r.ttlAt));
    if (r.type === TYPE_SOA && r.section === 'authority' && r.end - r.rdataAt >= 22) {
      soaMinimum = Math.min(soaMinimum ?? Infinity, ttlAt(answer, r.end - 4));
    }
  }
  const negative = rcode === 3 || u16(answer, 6) === 0;
  if (negative && soaMinimum === undefined) return 0;
  if (soaMinimum !== undefined) ttl = Math.min(ttl, soaMinimum);
  return Number.isFinite(ttl) ? ttl : 0;
}

/**
 * A copy of a cached `answer` for `query`: the query's id and question bytes (as the
 * program wrote them, case included), and every record's TTL less `ageSeconds` (never
 * below 0), as a caching resolver serves it. Undefined when the answer does not parse or
 * its question section is not the query's size.
 */
export function agedAnswer(answer: Uint8Array, query: Uint8Array, q: PlainQuery, ageSeconds: number): Uint8Array | undefined {
  if (questionEnd(answer) !== q.questionEnd || u16(answer, 4) !== 1) return undefined;
  const all = records(answer);
  if (!all) return undefined;
  const out = Uint8Array.from(answer);
  out.set(query.subarray(0, 2), 0);
  out.set(query.subarray(DNS_HEADER_BYTES, q.questionEnd), DNS_HEADER_BYTES);
  if (ageSeconds > 0) {
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    for (const r of all) {
      if (r.type === TYPE_OPT) continue;
      view.setUint32(r.ttlAt, Math.max(0, ttlAt(out, r.ttlAt) - ageSeconds));
    }
  }
  return out;
}

/**
 * `answer` (the query's question already in it, as agedAnswer leaves it) as a UDP answer
 * to `q` may carry it: as is when it fits the program's limit, else truncated as a server
 * truncates (RFC 2181 §9): the header with TC set, the question, no records but the
 * answer's OPT record when the query had EDNS. The program then asks again over TCP.
 */
export function fitForUdp(answer: Uint8Array, q: PlainQuery): Uint8Array {
  if (answer.length <= q.udpLimit) return answer;
  const qEnd = q.questionEnd;
  const opt = q.edns ? records(answer)?.find((r) => r.type === TYPE_OPT) : undefined;
  const optBytes = opt ? answer.subarray(opt.start, opt.end) : new Uint8Array(0);
  const out = new Uint8Array(qEnd + (optBytes.length + qEnd <= q.udpLimit ? optBytes.length : 0));
  out.set(answer.subarray(0, qEnd), 0);
  out[2] = out[2]! | 0x02; // TC
  out.fill(0, 6, 12); // no answer, authority or additional records...
  if (out.length > qEnd) {
    out.set(optBytes, qEnd);
    out[11] = 1; // ...but the OPT record
  }
  return out;
}
