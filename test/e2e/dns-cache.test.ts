/**
 * The proxy's per-session cache of name lookups (cli/proxy/dns.ts): a repeated
 * getaddrinfo within the answer's TTL costs no hop to the agent, an answer is never served
 * past its TTL, and one session's answers are not another's. The cluster DNS (dnsmasq)
 * answers with a TTL of 5 s here, and logs each query it gets, so the test counts what
 * reached it. The assertions allow for any slowness of the machine: they bound what a
 * cache may do in the time that actually passed, never how fast anything is.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { pollUntil, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

const PY = '/usr/bin/python3';
const TTL = 5;
const FQDN = (name: string): string => `${name}.default.svc.cluster.local`;

// 20 lookups of one name as fast as they go; prints the seconds they took and the answers.
const BURST = String.raw`
import socket, time, json
t = time.monotonic(); got = [socket.gethostbyname('burst') for _ in range(20)]
print(json.dumps({'elapsed': time.monotonic() - t, 'answers': sorted(set(got))}))
`;

// Looks "mover" up, then waits (asking for "flag", which is not cached while it does not
// exist) until the test has moved it, then looks it up every 100 ms until the answer
// changes. Times are seconds after the first lookup had its answer.
const WATCH = String.raw`
import socket, time, json
first = socket.gethostbyname('mover'); t0 = time.monotonic(); seen = []
deadline = t0 + 60
while time.monotonic() < deadline:
    try:
        socket.gethostbyname('flag'); break
    except socket.gaierror:
        time.sleep(0.05)
while time.monotonic() < deadline:
    t = time.monotonic() - t0; a = socket.gethostbyname('mover'); seen.append([t, a])
    if a != first: break
    time.sleep(0.1)
print(json.dumps({'first': first, 'seen': seen}))
`;

describe.skipIf(process.getuid?.() !== 0)('per-session DNS cache in the proxy', () => {
  let harness: Harness;
  let agent: AgentProcess;
  let client: Pod;

  beforeAll(async () => {
    harness = await Harness.create({ name: 'dns-cache', dnsTtl: TTL, logQueries: true });
    agent = await startAgentProcess();
    client = await harness.addPod({ name: 'client', namespace: 'default', command: ['sleep', 'infinity'] });
  }, 120_000);

  afterAll(async () => {
    await stopAll({ agent, harness });
  });

  it('repeated lookups within the TTL reach the cluster DNS at most once per TTL', async () => {
    const burst = await harness.addPod({ name: 'burst', namespace: 'default', command: ['sleep', 'infinity'] });
    const before = harness.dnsQueries(FQDN('burst'));
    const r = await tsmExec(agent.url, `pid/${client.pid}`, [PY, '-c', BURST], [], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { elapsed: number; answers: string[] };
    expect(out.answers).toEqual([burst.ip]);
    const asked = harness.dnsQueries(FQDN('burst')) - before;
    expect(asked).toBeGreaterThanOrEqual(1);
    // Without the cache each of the 20 lookups asks; with it, one per TTL that passed.
    expect(asked).toBeLessThanOrEqual(Math.floor(out.elapsed / TTL) + 1);
    expect(asked).toBeLessThan(20);
  }, 120_000);

  it('an answer is never served past its TTL, and another session does not get it', async () => {
    const old = await harness.addPod({ name: 'mover', namespace: 'default', command: ['sleep', 'infinity'] });
    const asked = harness.dnsQueries(FQDN('mover'));
    const watching = tsmExec(agent.url, `pid/${client.pid}`, [PY, '-c', WATCH], [], { timeoutMs: 120_000 });
    // The first session has its answer (the cluster DNS was asked)...
    expect(await pollUntil(() => harness.dnsQueries(FQDN('mover')) > asked, 60_000)).toBe(true);
    // ...then the name moves.
    await harness.removePod(old);
    const moved = await harness.addPod({ name: 'mover', namespace: 'default', command: ['sleep', 'infinity'] });
    expect(moved.ip).not.toBe(old.ip);
    // A second session asks for itself: it gets the new address at once.
    const other = await tsmExec(agent.url, `pid/${client.pid}`, [PY, '-c', "import socket; print(socket.gethostbyname('mover'))"], [], { timeoutMs: 60_000 });
    expect(other.code, other.stderr).toBe(0);
    expect(other.stdout.trim()).toBe(moved.ip);
    await harness.addPod({ name: 'flag', namespace: 'default', command: ['sleep', 'infinity'] });
    const r = await watching;
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { first: string; seen: Array<[number, string]> };
    expect(out.first).toBe(old.ip);
    // The old address only within the TTL of the first answer (counted from when the
    // program had it, which is after the proxy asked), then the new one.
    for (const [t, address] of out.seen) if (address === old.ip) expect(t).toBeLessThanOrEqual(TTL + 0.05);
    expect(out.seen.at(-1)?.[1]).toBe(moved.ip);
  }, 240_000);
});
