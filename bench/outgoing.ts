/**
 * `npm run bench` (as root): the outgoing path under tsmirror against the same operation
 * run directly inside the pod's network namespace (nsenter). Prints absolute figures
 * and ratios: TCP connect latency (median, p99), small-request round trip, throughput
 * of a 1 GiB transfer, getaddrinfo of a cluster name, and `exec -- /bin/true` wall time.
 */
import { Harness } from '../test/harness/harness.js';
import { run, startAgentProcess, tsmExec } from '../test/e2e/tsm.js';
import { goalTable, type Goal } from './goals.js';
import { ECHO, NET_PROBE, PY } from './net-probe.js';
import { runBench } from './run.js';


async function main(): Promise<void> {
  // The cluster DNS answers with a TTL of 5 s, as CoreDNS's kubernetes plugin does (dnsmasq's
  // default is 0): within it, tsmirror's proxy may answer a repeated lookup itself
  // (cli/proxy/dns.ts); the pod's glibc asks the cluster DNS every time. dnsmasq's negative
  // answers carry no SOA, so they may not be kept (RFC 2308): neither the AAAA NODATA of an
  // IPv4-only name nor the NXDOMAINs of the search-list names tried before a name with
  // fewer than ndots (5) dots, like the FQDN below. So that row asks every time here
  // (CoreDNS sends a SOA with its TTL); the row of the short name asked for IPv4 only,
  // answered by the first search-list name, shows what the cache does.
  const harness = await Harness.create({ name: 'bench', dnsTtl: 5 });
  const agent = await startAgentProcess();
  try {
    const echo = await harness.addPod({ name: 'echo', namespace: 'default', command: [PY, '-c', ECHO], readyPort: 9001 });
    const client = await harness.addPod({ name: 'client', namespace: 'default', command: ['sleep', 'infinity'] });
    const direct = JSON.parse((await harness.exec(client, [PY, '-c', NET_PROBE], { timeoutMs: 120000 })).stdout) as Record<string, number>;
    const tsmRun = await tsmExec(agent.url, `pid/${client.pid}`, [PY, '-c', NET_PROBE], ['--verbose'], { timeoutMs: 120000 });
    const viaTsm = JSON.parse(tsmRun.stdout) as Record<string, number>;
    const times = async (f: () => Promise<unknown>): Promise<number> => {
      const xs: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t = performance.now();
        await f();
        xs.push(performance.now() - t);
      }
      return xs.sort((a, b) => a - b)[5] ?? 0;
    };
    const trueDirect = await times(() => run('/bin/true', []));
    const trueTsm = await times(() => tsmExec(agent.url, `pid/${client.pid}`, ['/bin/true']));
    const nodeStart = await times(() => run(process.execPath, ['-e', '0']));
    process.stdout.write('metric                      direct(nsenter)   tsmirror   ratio\n');
    for (const key of Object.keys(direct).filter((k) => k !== 'gib_transfer_us')) {
      const d = direct[key] ?? 0;
      const m = viaTsm[key] ?? 0;
      process.stdout.write(`${key.padEnd(26)} ${d.toFixed(0).padStart(12)} µs ${m.toFixed(0).padStart(9)} µs ${(m / d).toFixed(1).padStart(6)}x\n`);
    }
    const mbps = (us: number): number => (1 << 30) / 1e6 / (us / 1e6);
    const gd = mbps(direct.gib_transfer_us ?? 0);
    const gm = mbps(viaTsm.gib_transfer_us ?? 0);
    process.stdout.write(`${'1 GiB throughput (MB/s)'.padEnd(26)} ${gd.toFixed(0).padStart(9)} MB/s ${gm.toFixed(0).padStart(6)} MB/s ${(gd / gm).toFixed(1).padStart(6)}x slower\n`);
    process.stdout.write(`${'exec /bin/true (ms)'.padEnd(26)} ${trueDirect.toFixed(1).padStart(12)} ms ${trueTsm.toFixed(1).padStart(9)} ms ${(trueTsm / trueDirect).toFixed(1).padStart(6)}x\n`);
    const counters = /tsmirror: (\d+ TCP connections.*)/.exec(tsmRun.stderr)?.[1];
    if (counters) process.stdout.write(`(tsmirror: ${counters})\n`);
    process.stdout.write(`${'node -e 0 (ms)'.padEnd(26)} ${nodeStart.toFixed(1).padStart(12)} ms\n`);
    const d = (k: string): number => direct[k] ?? 0;
    const m = (k: string): number => viaTsm[k] ?? 0;
    const plus = (what: string, key: string, extra: number): Goal =>
      ({ what, value: m(key), unit: 'µs', limit: d(key) + extra, kind: 'atMost', rule: `pod ${d(key).toFixed(0)} µs + ${extra} µs` });
    const goals: Goal[] = [
      plus('TCP connect, median', 'connect_median_us', 150),
      plus('TCP connect, p99', 'connect_p99_us', 500),
      plus('small-request round trip, median', 'rtt_median_us', 60),
      plus('getaddrinfo of a cluster name, median', 'getaddrinfo_median_us', 150),
      plus('getaddrinfo("echo", AF_INET), median', 'getaddrinfo_short_v4_median_us', 150),
      { what: '1 GiB throughput', value: gm, unit: 'MB/s', limit: 0.7 * gd, kind: 'atLeast', rule: `0.7 x pod ${gd.toFixed(0)} MB/s` },
      { what: 'exec -- /bin/true', value: trueTsm, unit: 'ms', limit: nodeStart + 60, kind: 'atMost', rule: `node -e 0 ${nodeStart.toFixed(0)} ms + 60 ms` },
    ];
    process.stdout.write(goalTable('outgoing', goals));
  } finally {
    await agent.stop();
    await harness.destroy();
  }
}

runBench(main);
