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
import { expectAskedOncePerTtl, expectNeverServedPastTtl } from './dns-ttl.js';
import { startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

const PY = '/usr/bin/python3';
const TTL = 5;

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
    await expectAskedOncePerTtl(harness, TTL, () => tsmExec(agent.url, `pid/${client.pid}`, [PY, '-c', BURST], [], { timeoutMs: 60_000 }));
  }, 120_000);

  it('an answer is never served past its TTL, and another session does not get it', async () => {
    await expectNeverServedPastTtl(
      harness,
      TTL,
      () => tsmExec(agent.url, `pid/${client.pid}`, [PY, '-c', WATCH], [], { timeoutMs: 120_000 }),
      () => tsmExec(agent.url, `pid/${client.pid}`, [PY, '-c', "import socket; print(socket.gethostbyname('mover'))"], [], { timeoutMs: 60_000 }),
    );
  }, 240_000);
});
