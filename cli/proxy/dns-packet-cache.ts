/**
 * The session's cache of DNS answers to the program's own DNS messages (docs/ARCHITECTURE.md,
 * "DNS"): the UDP queries a program's resolver sends to the pod's nameserver (Go's, musl's,
 * busybox's, glibc's inside a static binary, c-ares) and glibc's res_* messages. It works
 * as a caching resolver does: an answer is kept under its question (name case-insensitively,
 * type, class), the query flags a server heeds and the query's EDNS (common/dns-message.ts
 * `plainQuery`), for as long as its records' least TTL, or for a negative answer its SOA's
 * (RFC 2308; without a SOA it is not kept), at most an hour; it is served with the asking
 * query's id and question bytes and every TTL less the seconds since it was asked for.
 * Identical queries in flight at once are sent once. Failures are never kept.
 */
import { agedAnswer, cacheSeconds, type PlainQuery } from '../../common/dns-message.js';

export interface DnsPacketCacheOptions {
  /** The most answers kept (the oldest goes first). */
  maxEntries: number;
  /** The most answer bytes kept. */
  maxBytes: number;
  /** The longest any answer is kept, whatever its TTL (seconds). */
  maxSeconds: number;
  /** Milliseconds on a monotonic clock (tests pass their own). */
  now: () => number;
}

interface Asked { answer: Uint8Array; asked: number }

/** A copy of `answer` with the id of `query` (a query that waited for another's answer gets its own id back). */
function withId(answer: Uint8Array, query: Uint8Array): Uint8Array {
  const out = Uint8Array.from(answer);
  if (out.length >= 2) out.set(query.subarray(0, 2), 0);
  return out;
}

export class DnsPacketCache {
  /** `hits`: answered from the cache (or from an identical query already in flight); `misses`: sent on. */
  readonly stats = { hits: 0, misses: 0 };
  readonly #opts: DnsPacketCacheOptions;
  readonly #entries = new Map<string, Asked & { expires: number }>();
  readonly #inflight = new Map<string, Promise<Asked>>();
  #bytes = 0;

  constructor(options: Partial<DnsPacketCacheOptions> = {}) {
    this.#opts = { maxEntries: 1024, maxBytes: 4 << 20, maxSeconds: 3600, now: () => performance.now(), ...options };
  }

  /** Answers kept now. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The answer to `query` (which parsed as `q`): a kept one while it holds, else `send`'s
   * (kept for as long as it may be). It carries the query's id and question bytes, TTLs
   * aged; `hit`: it was not sent for this query. `send`'s failure is thrown, to every
   * query that waited for it.
   */
  async answer(query: Uint8Array, q: PlainQuery, send: (query: Uint8Array) => Promise<Uint8Array>): Promise<{ answer: Uint8Array; hit: boolean }> {
    const now = this.#opts.now();
    const kept = this.#entries.get(q.key);
    if (kept && now < kept.expires) {
      const served = agedAnswer(kept.answer, query, q, Math.floor((now - kept.asked) / 1000));
      if (served) {
        this.stats.hits++;
        return { answer: served, hit: true };
      }
    }
    if (kept) this.#forget(q.key);
    const waiting = this.#inflight.get(q.key);
    const hit = waiting !== undefined;
    let pending: Promise<Asked>;
    if (waiting) {
      this.stats.hits++;
      pending = waiting;
    } else {
      this.stats.misses++;
      const sent = this.#send(query, q, send);
      pending = sent;
      this.#inflight.set(q.key, sent);
      const done = (): void => {
        if (this.#inflight.get(q.key) === sent) this.#inflight.delete(q.key);
      };
      sent.then(done, done);
    }
    const { answer } = await pending;
    // The answer as it came (ids and question bytes made this query's) when it parses; the
    // nameserver's bytes as they are when it does not, as the pod would have got them.
    return { answer: agedAnswer(answer, query, q, 0) ?? withId(answer, query), hit };
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  async #send(query: Uint8Array, q: PlainQuery, send: (query: Uint8Array) => Promise<Uint8Array>): Promise<Asked> {
    // Counted from when the question went out: the answer may have been as old as that.
    const asked = this.#opts.now();
    const answer = await send(query);
    const seconds = Math.min(cacheSeconds(answer), this.#opts.maxSeconds);
    if (seconds > 0 && answer.byteLength <= this.#opts.maxBytes) {
      this.#forget(q.key);
      this.#entries.set(q.key, { answer, asked, expires: asked + seconds * 1000 });
      this.#bytes += answer.byteLength;
      while (this.#entries.size > this.#opts.maxEntries || this.#bytes > this.#opts.maxBytes) {
        this.#forget(this.#entries.keys().next().value as string);
      }
    }
    return { answer, asked };
  }

  #forget(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key);
    this.#bytes -= e.answer.byteLength;
  }
}
