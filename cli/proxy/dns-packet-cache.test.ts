import dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { plainQuery } from '../../common/dns-message.js';
import { DnsPacketCache } from './dns-packet-cache.js';

const NAME = 'db.default.svc.cluster.local';
const query = (id: number, name = NAME, type: 'A' | 'AAAA' = 'A'): Uint8Array =>
  Uint8Array.from(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] }));
const answer = (q: Uint8Array, ttl: number, rcode = 0, soa?: { ttl: number; minimum: number }): Uint8Array => {
  const d = dnsPacket.decode(Buffer.from(q));
  return Uint8Array.from(dnsPacket.encode({
    type: 'response', id: d.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | rcode, questions: d.questions,
    answers: rcode === 0 && !soa ? [{ type: 'A', name: NAME, ttl, data: '10.0.0.7' }] : [],
    authorities: soa ? [{ type: 'SOA', name: 'cluster.local', ttl: soa.ttl, data: { mname: 'ns', rname: 'host', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: soa.minimum } }] : [],
  }));
};

/** A cache on a clock the test moves, and a "nameserver" that counts what it was sent. */
function setup(ttl = 5, rcode = 0, soa?: { ttl: number; minimum: number }) {
  let now = 1000;
  const cache = new DnsPacketCache({ now: () => now, maxEntries: 3 });
  const sent: number[] = [];
  const send = async (q: Uint8Array): Promise<Uint8Array> => {
    sent.push((q[0]! << 8) | q[1]!);
    return answer(q, ttl, rcode, soa);
  };
  const ask = async (id: number, name = NAME) => {
    const q = query(id, name);
    const r = await cache.answer(q, plainQuery(q)!, send);
    const d = dnsPacket.decode(Buffer.from(r.answer));
    return { ...r, id: d.id, ttls: [...(d.answers ?? []), ...(d.authorities ?? [])].map((a) => (a as { ttl: number }).ttl), name: d.questions?.[0]?.name };
  };
  return { cache, sent, ask, advance: (ms: number) => void (now += ms) };
}

describe('the DNS packet cache', () => {
  it("answers a repeated query from the cache within the TTL, with the asker's id and the TTLs aged", async () => {
    const { sent, ask, advance } = setup(5);
    expect(await ask(1)).toMatchObject({ hit: false, id: 1, ttls: [5] });
    advance(2500);
    expect(await ask(2)).toMatchObject({ hit: true, id: 2, ttls: [3] });
    expect(await ask(3, NAME.toUpperCase())).toMatchObject({ hit: true, id: 3, ttls: [3], name: NAME.toUpperCase() });
    expect(sent).toEqual([1]);
  });

  it('never serves an answer past its TTL: it is asked for again', async () => {
    const { sent, ask, advance } = setup(5);
    await ask(1);
    advance(4999);
    expect(await ask(2)).toMatchObject({ hit: true, ttls: [1] });
    advance(1);
    expect(await ask(3)).toMatchObject({ hit: false, id: 3, ttls: [5] });
    expect(sent).toEqual([1, 3]);
  });

  it('keeps nothing with a TTL of 0, and a negative answer only as its SOA allows', async () => {
    const zero = setup(0);
    await zero.ask(1);
    await zero.ask(2);
    expect(zero.sent).toEqual([1, 2]);
    const noSoa = setup(30, 3);
    await noSoa.ask(1);
    await noSoa.ask(2);
    expect(noSoa.sent).toEqual([1, 2]);
    const soa = setup(30, 3, { ttl: 60, minimum: 2 });
    expect(await soa.ask(1)).toMatchObject({ ttls: [60] });
    soa.advance(1500);
    expect(await soa.ask(2)).toMatchObject({ hit: true, ttls: [59] });
    soa.advance(600);
    expect(await soa.ask(3)).toMatchObject({ hit: false });
    expect(soa.sent).toEqual([1, 3]);
  });

  it('keeps no failure: the error reaches every query that waited for it, and the next one asks again', async () => {
    const cache = new DnsPacketCache();
    let calls = 0;
    const failing = async (): Promise<Uint8Array> => {
      calls++;
      await new Promise((r) => setTimeout(r, 5));
      throw new Error('no nameserver answered');
    };
    const q = query(1);
    const both = [cache.answer(q, plainQuery(q)!, failing), cache.answer(query(2), plainQuery(q)!, failing)];
    for (const p of both) await expect(p).rejects.toThrow('no nameserver answered');
    expect(calls).toBe(1);
    await expect(cache.answer(q, plainQuery(q)!, failing)).rejects.toThrow();
    expect(calls).toBe(2);
    expect(cache.size).toBe(0);
  });

  it('sends identical queries in flight at once only once, each answered with its own id', async () => {
    const cache = new DnsPacketCache();
    let calls = 0;
    const slow = async (q: Uint8Array): Promise<Uint8Array> => {
      calls++;
      await new Promise((r) => setTimeout(r, 10));
      return answer(q, 0); // not even kept: the waiters share it all the same
    };
    const ids = await Promise.all([7, 8, 9].map(async (id) => {
      const q = query(id);
      const r = await cache.answer(q, plainQuery(q)!, slow);
      return dnsPacket.decode(Buffer.from(r.answer)).id;
    }));
    expect(ids).toEqual([7, 8, 9]);
    expect(calls).toBe(1);
  });

  it('keeps each question apart and at most maxEntries answers, the oldest going first', async () => {
    const { cache, sent, ask } = setup(60);
    for (const [i, name] of ['a', 'b', 'c', 'd'].entries()) await ask(i + 1, `${name}.cluster.local`);
    expect(cache.size).toBe(3);
    await ask(10, 'd.cluster.local');
    await ask(11, 'a.cluster.local');
    expect(sent).toEqual([1, 2, 3, 4, 11]);
  });
});
