import dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { agedAnswer, answers, cacheSeconds, fitForUdp, plainQuery, questionEnd } from './dns-message.js';

type Packet = Parameters<typeof dnsPacket.encode>[0];
const bytes = (p: Packet): Uint8Array => Uint8Array.from(dnsPacket.encode(p));
const query = (name: string, type: 'A' | 'AAAA' | 'SRV' = 'A', extra: Partial<Packet> = {}): Uint8Array =>
  bytes({ type: 'query', id: 0x1234, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }], ...extra });
const OPT = (udpPayloadSize: number, flags = 0): dnsPacket.Answer => ({ type: 'OPT', name: '.', udpPayloadSize, flags } as unknown as dnsPacket.Answer);
const SOA = (name: string, ttl: number, minimum: number): dnsPacket.Answer =>
  ({ type: 'SOA', name, ttl, data: { mname: 'ns.dns.cluster.local', rname: 'hostmaster.cluster.local', serial: 1, refresh: 7200, retry: 1800, expire: 86400, minimum } });
const response = (q: string, flags: number, records: Partial<Packet>): Uint8Array =>
  bytes({ type: 'response', id: 0x4321, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | flags, questions: [{ type: 'A', name: q, class: 'IN' }], ...records });
const NXDOMAIN = 3;

describe('DNS messages sent for the program (res_send)', () => {
  const question = [2, 0x64, 0x62, 0, 0, 1, 0, 1]; // db A IN
  const query = Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...question]);

  it('finds where the questions end, and refuses what does not parse', () => {
    expect(questionEnd(query)).toBe(query.length);
    expect(questionEnd(query.subarray(0, 11))).toBe(-1);
    expect(questionEnd(query.subarray(0, query.length - 1))).toBe(-1);
    expect(questionEnd(Uint8Array.from([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 1, 0, 1]))).toBe(-1); // a reserved label type
    const loop = Uint8Array.from([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...Array<number>(300).fill(1).map((_, i) => (i % 2 === 0 ? 1 : 0x61))]);
    expect(questionEnd(loop)).toBe(-1); // more than 127 labels, or past the end
  });

  it('takes only a response to the same question (names compared case-insensitively)', () => {
    const reply = (flags: number, q: number[]) => Uint8Array.from([0x56, 0x78, flags, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, ...q]);
    expect(answers(query, reply(0x81, question))).toBe(true);
    expect(answers(query, reply(0x81, [2, 0x44, 0x42, 0, 0, 1, 0, 1]))).toBe(true);
    expect(answers(query, reply(0x01, question))).toBe(false); // a query, not a response
    expect(answers(query, reply(0x81, [2, 0x64, 0x63, 0, 0, 1, 0, 1]))).toBe(false);
    expect(answers(query, reply(0x81, [2, 0x64, 0x62, 0, 0, 28, 0, 1]))).toBe(false); // another type
    expect(answers(query, reply(0x81, question).subarray(0, 14))).toBe(false);
  });
});

describe('plain queries: what a cache may answer', () => {
  it('keys a query by its question (name case-insensitively), the flags a server heeds and its EDNS', () => {
    const q = plainQuery(query('db.default.svc.cluster.local'))!;
    expect(q).toMatchObject({ questionEnd: query('db.default.svc.cluster.local').length, udpLimit: 512, edns: false });
    expect(plainQuery(query('DB.Default.svc.cluster.local'))!.key).toBe(q.key);
    expect(plainQuery(query('db.default.svc.cluster.local', 'AAAA'))!.key).not.toBe(q.key);
    expect(plainQuery(query('db.default.svc.cluster.local', 'A', { flags: 0 }))!.key).not.toBe(q.key); // no RD
    expect(plainQuery(query('db.default.svc.cluster.local', 'A', { flags: dnsPacket.RECURSION_DESIRED | dnsPacket.CHECKING_DISABLED }))!.key).not.toBe(q.key);
    const edns = plainQuery(query('db.default.svc.cluster.local', 'A', { additionals: [OPT(1232)] }))!;
    expect(edns).toMatchObject({ udpLimit: 1232, edns: true });
    expect(edns.key).not.toBe(q.key);
    const dnssec = plainQuery(query('db.default.svc.cluster.local', 'A', { additionals: [OPT(1232, dnsPacket.DNSSEC_OK)] }))!;
    expect(dnssec.key).not.toBe(edns.key);
    expect(plainQuery(query('db.default.svc.cluster.local', 'A', { additionals: [OPT(4096)] }))!.key).toBe(edns.key); // the size is not part of the answer
    expect(plainQuery(query('x', 'A', { additionals: [OPT(100)] }))!.udpLimit).toBe(512);
  });

  it('refuses responses, other opcodes, truncated or compound queries, compressed names and stray bytes', () => {
    const good = query('db');
    const flip = (at: number, value: number): Uint8Array => {
      const m = Uint8Array.from(good);
      m[at] = value;
      return m;
    };
    expect(plainQuery(good)).toBeDefined();
    expect(plainQuery(flip(2, 0x81))).toBeUndefined(); // QR
    expect(plainQuery(flip(2, 0x21))).toBeUndefined(); // opcode NOTIFY
    expect(plainQuery(flip(2, 0x03))).toBeUndefined(); // TC
    expect(plainQuery(flip(3, 0x01))).toBeUndefined(); // an RCODE
    expect(plainQuery(flip(5, 2))).toBeUndefined(); // two questions
    expect(plainQuery(flip(7, 1))).toBeUndefined(); // an answer record
    expect(plainQuery(flip(11, 1))).toBeUndefined(); // an additional record that is not there
    expect(plainQuery(Uint8Array.from([...good, 0]))).toBeUndefined();
    expect(plainQuery(good.subarray(0, good.length - 1))).toBeUndefined();
    expect(plainQuery(Uint8Array.from([...good.subarray(0, 12), 0xc0, 12, 0, 1, 0, 1]))).toBeUndefined(); // a pointer
    expect(plainQuery(query('db', 'A', { additionals: [{ ...OPT(1232), ednsVersion: 1 } as dnsPacket.Answer] }))).toBeUndefined(); // BADVERS is the server's
    expect(plainQuery(query('db', 'A', { additionals: [{ type: 'A', name: 'x', ttl: 1, data: '1.2.3.4' }] }))).toBeUndefined();
    const long = Uint8Array.from([...good.subarray(0, 12), ...Array<number>(130).fill(0).flatMap(() => [1, 0x61]), 0, 0, 1, 0, 1]);
    expect(plainQuery(long)).toBeUndefined(); // a name of more than 255 bytes
  });
});

describe('answers a cache keeps', () => {
  const q = 'db.default.svc.cluster.local';
  it('keeps a positive answer for its least TTL, the OPT record aside', () => {
    expect(cacheSeconds(response(q, 0, {
      answers: [{ type: 'CNAME', name: q, ttl: 10, data: 'x.default.svc.cluster.local' }, { type: 'A', name: 'x.default.svc.cluster.local', ttl: 30, data: '10.0.0.1' }],
      additionals: [OPT(1232)],
    }))).toBe(10);
    expect(cacheSeconds(response(q, 0, { answers: [{ type: 'A', name: q, ttl: 0, data: '10.0.0.1' }] }))).toBe(0);
    expect(cacheSeconds(response(q, 0, { answers: [{ type: 'A', name: q, ttl: 0x80000001, data: '10.0.0.1' }] }))).toBe(0); // RFC 2181 §8
  });

  it('keeps a negative answer as its SOA says (at most the MINIMUM field), and without a SOA not at all', () => {
    expect(cacheSeconds(response(q, NXDOMAIN, { authorities: [SOA('cluster.local', 30, 5)] }))).toBe(5);
    expect(cacheSeconds(response(q, NXDOMAIN, { authorities: [SOA('cluster.local', 3, 5)] }))).toBe(3);
    expect(cacheSeconds(response(q, 0, { authorities: [SOA('cluster.local', 30, 7)] }))).toBe(7); // NODATA
    expect(cacheSeconds(response(q, NXDOMAIN, {}))).toBe(0);
    expect(cacheSeconds(response(q, 0, {}))).toBe(0);
  });

  it('keeps no failure, no truncated answer, no query and nothing that does not parse', () => {
    const a: Partial<Packet> = { answers: [{ type: 'A', name: q, ttl: 30, data: '10.0.0.1' }] };
    expect(cacheSeconds(response(q, 2, a))).toBe(0); // SERVFAIL
    expect(cacheSeconds(response(q, 5, a))).toBe(0); // REFUSED
    expect(cacheSeconds(response(q, dnsPacket.TRUNCATED_RESPONSE, a))).toBe(0);
    expect(cacheSeconds(query(q))).toBe(0);
    const good = response(q, 0, a);
    expect(cacheSeconds(good.subarray(0, good.length - 1))).toBe(0);
    expect(cacheSeconds(Uint8Array.from([...good, 0]))).toBe(0);
  });

  it("serves a kept answer with the query's id and question bytes, every TTL less its age (never below 0)", () => {
    const kept = response(q, 0, {
      answers: [{ type: 'A', name: q, ttl: 30, data: '10.0.0.1' }, { type: 'A', name: q, ttl: 3, data: '10.0.0.2' }],
      authorities: [SOA('cluster.local', 20, 5)], additionals: [OPT(1232)],
    });
    const asked = query('DB.default.svc.cluster.local', 'A', { id: 0xbeef, additionals: [OPT(1232)] });
    const served = agedAnswer(kept, asked, plainQuery(asked)!, 5)!;
    const d = dnsPacket.decode(Buffer.from(served));
    expect(d.id).toBe(0xbeef);
    expect(d.questions?.[0]?.name).toBe('DB.default.svc.cluster.local');
    expect(d.answers?.map((a) => (a as { ttl: number }).ttl)).toEqual([25, 0]);
    expect((d.authorities?.[0] as { ttl: number }).ttl).toBe(15);
    expect((d.additionals?.[0] as { udpPayloadSize: number }).udpPayloadSize).toBe(1232); // the OPT record as it was
    expect(served.length).toBe(kept.length);
    expect(dnsPacket.decode(Buffer.from(kept)).id).toBe(0x4321); // the kept copy is untouched
    expect(agedAnswer(kept.subarray(0, kept.length - 2), asked, plainQuery(asked)!, 0)).toBeUndefined();
  });

  it('truncates an answer larger than the program takes, as a server does: TC, the question, the OPT record', () => {
    const many = Array.from({ length: 40 }, (_, i) => ({ type: 'A' as const, name: q, ttl: 30, data: `10.0.1.${i}` }));
    const plain = query(q);
    const big = agedAnswer(response(q, 0, { answers: many }), plain, plainQuery(plain)!, 0)!;
    expect(big.length).toBeGreaterThan(512);
    const cut = fitForUdp(big, plainQuery(plain)!);
    expect(cut.length).toBeLessThanOrEqual(512);
    const d = dnsPacket.decode(Buffer.from(cut));
    expect(d.flag_tc).toBe(true);
    expect(d.id).toBe(0x1234);
    expect(d.questions).toEqual([{ name: q, type: 'A', class: 'IN' }]);
    expect(d.answers).toEqual([]);
    const ednsQuery = query(q, 'A', { additionals: [OPT(1232)] });
    const ednsAnswer = agedAnswer(response(q, 0, { answers: many.slice(0, 20), additionals: [OPT(1232)] }), ednsQuery, plainQuery(ednsQuery)!, 0)!;
    expect(ednsAnswer.length).toBeGreaterThan(512);
    expect(fitForUdp(ednsAnswer, plainQuery(ednsQuery)!)).toBe(ednsAnswer); // fits 1232
    const tiny = query(q, 'A', { additionals: [OPT(512)] });
    const cutEdns = dnsPacket.decode(Buffer.from(fitForUdp(agedAnswer(ednsAnswer, tiny, plainQuery(tiny)!, 0)!, plainQuery(tiny)!)));
    expect(cutEdns.flag_tc).toBe(true);
    expect(cutEdns.additionals?.map((a) => a.type)).toEqual(['OPT']);
  });

  it('never throws on hostile bytes: random and mutated messages are refused or read within bounds', () => {
    const seeds = [query('db.default.svc.cluster.local', 'A', { additionals: [OPT(1232)] }), response(q, NXDOMAIN, { authorities: [SOA('cluster.local', 30, 5)], additionals: [OPT(1232)] })];
    let state = 12345;
    const rand = (n: number): number => ((state = (state * 1103515245 + 12345) >>> 0) % n);
    for (let i = 0; i < 20000; i++) {
      const seed = seeds[i % 2]!;
      const m = i % 5 === 0 ? Uint8Array.from({ length: rand(80) }, () => rand(256)) : Uint8Array.from(seed.subarray(0, seed.length - rand(4)));
      for (let k = rand(4); k >= 0; k--) if (m.length > 0) m[rand(m.length)] = rand(256);
      const pq = plainQuery(m);
      const seconds = cacheSeconds(m);
      expect(seconds).toBeGreaterThanOrEqual(0);
      if (pq) {
        expect(pq.questionEnd).toBeLessThanOrEqual(m.length);
        fitForUdp(agedAnswer(seeds[1]!, m, pq, rand(100)) ?? m, pq);
      }
      agedAnswer(m, seeds[0]!, plainQuery(seeds[0]!)!, rand(100));
    }
  });
});
