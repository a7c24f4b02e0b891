/**
 * The TTL checks that every name cache of a session must pass, whoever resolves: the proxy's
 * getaddrinfo cache (dns-cache.test.ts, python's glibc through the preload) and its DNS relay's
 * packet cache (seccomp-dns.test.ts, Go's own resolver under seccomp). Each test passes the
 * program runs; these bound what a cache may do in the time that actually passed, never how
 * fast anything is. The harness must log queries (`logQueries`) with TTL `ttl`.
 */
import { expect } from 'vitest';
import type { Harness } from '../harness/harness.js';
import { pollUntil, type Result } from './tsm.js';

export const FQDN = (name: string): string => `${name}.default.svc.cluster.local`;

/**
 * `lookups` looks "burst" up 20 times as fast as it can and prints
 * `{ elapsed: seconds, answers: distinct addresses }`: without a cache each lookup asks
 * the cluster DNS, with one it asks at most once per TTL that passed. Returns the run.
 */
export async function expectAskedOncePerTtl(harness: Harness, ttl: number, lookups: () => Promise<Result>): Promise<Result> {
  const burst = await harness.addPod({ name: 'burst', namespace: 'default', command: ['sleep', 'infinity'] });
  const before = harness.dnsQueries(FQDN('burst'));
  const r = await lookups();
  expect(r.code, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout) as { elapsed: number; answers: string[] };
  expect(out.answers).toEqual([burst.ip]);
  const asked = harness.dnsQueries(FQDN('burst')) - before;
  expect(asked).toBeGreaterThanOrEqual(1);
  expect(asked).toBeLessThanOrEqual(Math.floor(out.elapsed / ttl) + 1);
  expect(asked).toBeLessThan(20);
  return r;
}

/**
 * `watch` looks "mover" up, waits until "flag" exists, then looks "mover" up every 100 ms
 * until the answer changes, and prints `{ first, seen: [[seconds after first, address]] }`;
 * `lookupOnce` looks "mover" up once in another session and prints the address. The name
 * moves to a new pod while the first session holds its answer: the other session gets the
 * new address at once, and the first sees the old one only within the TTL.
 */
export async function expectNeverServedPastTtl(
  harness: Harness,
  ttl: number,
  watch: () => Promise<Result>,
  lookupOnce: () => Promise<Result>,
): Promise<void> {
  const old = await harness.addPod({ name: 'mover', namespace: 'default', command: ['sleep', 'infinity'] });
  const asked = harness.dnsQueries(FQDN('mover'));
  const watching = watch();
  // The first session has its answer (the cluster DNS was asked)...
  expect(await pollUntil(() => harness.dnsQueries(FQDN('mover')) > asked, 60_000)).toBe(true);
  // ...then the name moves.
  await harness.removePod(old);
  const moved = await harness.addPod({ name: 'mover', namespace: 'default', command: ['sleep', 'infinity'] });
  expect(moved.ip).not.toBe(old.ip);
  // A second session asks for itself: it gets the new address at once.
  const other = await lookupOnce();
  expect(other.code, other.stderr).toBe(0);
  expect(other.stdout.trim()).toBe(moved.ip);
  await harness.addPod({ name: 'flag', namespace: 'default', command: ['sleep', 'infinity'] });
  const r = await watching;
  expect(r.code, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout) as { first: string; seen: Array<[number, string]> };
  expect(out.first).toBe(old.ip);
  // The old address only within the TTL of the first answer (counted from when the
  // program had it, which is after the proxy asked), then the new one.
  for (const [t, address] of out.seen) if (address === old.ip) expect(t).toBeLessThanOrEqual(ttl + 0.05);
  expect(out.seen.at(-1)?.[1]).toBe(moved.ip);
}
