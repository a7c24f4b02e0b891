/**
 * `npm run bench` (as root): outgoing traffic of programs under the seccomp supervisor,
 * beside the preload path and the same work run directly in the pod, in one run:
 * connect latency (median, p99), small-request round trip, getaddrinfo / LookupHost of a
 * cluster name, and a 1 GiB transfer, for
 * - a CGO_ENABLED=0 Go program (test/e2e/fixtures/go-net `bench`, built here): in the
 *   pod, and under seccomp (the preload does not apply: Go's connects never reach it);
 * - a C program (python3, bench/outgoing.ts's probe): in the pod, under the preload, and
 *   under `--intercept seccomp`: the same work both ways, so the difference is what
 *   seccomp adds per notified call.
 * Goal: seccomp adds at most 30 µs per notified call over the preload; a call that is not
 * notified (the round trip's reads and writes) costs nothing measurable.
 */
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness } from '../test/harness/harness.js';
import { repoRoot, run, startAgentProcess, stopAll, tsmExec } from '../test/e2e/tsm.js';
import { ECHO, NET_PROBE as PY_PROBE, PY, probeFigures } from './net-probe.js';
import { median, pairedRounds, runBench } from './run.js';

const PAIRED_ROUNDS = 6;

type Figures = Record<'connect_median_us' | 'connect_p99_us' | 'rtt_median_us' | 'getaddrinfo_median_us' | 'gib_transfer_us', number>;

const figures = (what: string, r: { code: number | null; stdout: string; stderr: string }): Figures => probeFigures<Figures>(what, r);

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'tsm-bench-seccomp-'));
  const harness = await Harness.create({ name: 'benchsc' });
  const agent = await startAgentProcess();
  try {
    const goBin = join(work, 'gonet');
    const env = { ...process.env, GOCACHE: join(tmpdir(), 'tsmirror-test-gocache'), GOPATH: join(work, 'gopath'), GOFLAGS: '', GOPROXY: 'off', CGO_ENABLED: '0' };
    const built = await run('go', ['build', '-o', goBin, '.'], { env, cwd: join(repoRoot, 'test/e2e/fixtures/go-net'), timeoutMs: 300000 });
    if (built.code !== 0) throw new Error(`go build failed: ${built.stderr}`);
    await harness.addPod({ name: 'echo', namespace: 'default', command: [PY, '-c', ECHO], readyPort: 9001 });
    const client = await harness.addPod({ name: 'client', namespace: 'default', command: ['sleep', 'infinity'] });
    copyFileSync(goBin, join(client.dataDir, 'gonet'));
    const target = `pid/${client.pid}`;
    const opts = { timeoutMs: 300000 };

    const columns: [string, Figures][] = [
      ['Go: pod', figures('Go in the pod', await harness.exec(client, ['/data/gonet', 'bench', 'echo'], opts))],
      ['Go: seccomp', figures('Go under seccomp', await tsmExec(agent.url, target, [goBin, 'bench', 'echo'], [], opts))],
      ['C: pod', figures('python in the pod', await harness.exec(client, [PY, '-c', PY_PROBE], opts))],
      ['C: preload', figures('python under the preload', await tsmExec(agent.url, target, [PY, '-c', PY_PROBE], ['--intercept', 'preload'], opts))],
      ['C: seccomp', figures('python under seccomp', await tsmExec(agent.url, target, [PY, '-c', PY_PROBE], ['--intercept', 'seccomp'], opts))],
    ];
    const mbps = (us: number): number => (1 << 30) / 1e6 / (us / 1e6);
    process.stdout.write(`seccomp outgoing (µs)     ${columns.map(([name]) => name.padStart(12)).join('')}\n`);
    const rows: [string, (f: Figures) => number][] = [
      ['connect median', (f) => f.connect_median_us],
      ['connect p99', (f) => f.connect_p99_us],
      ['small-request RTT', (f) => f.rtt_median_us],
      ['getaddrinfo/LookupHost', (f) => f.getaddrinfo_median_us],
      ['1 GiB (MB/s)', (f) => mbps(f.gib_transfer_us)],
    ];
    for (const [label, pick] of rows) process.stdout.write(`${label.padEnd(26)}${columns.map(([, f]) => pick(f).toFixed(0).padStart(12)).join('')}\n`);
    // The goal's comparison: the same python probe both ways, in paired rounds (one run of
    // each, as in the table, moves by 100-200 µs with which ran first and the JIT's state).
    const pairs = await pairedRounds(PAIRED_ROUNDS,
      async () => figures('python under seccomp', await tsmExec(agent.url, target, [PY, '-c', PY_PROBE], ['--intercept', 'seccomp'], opts)),
      async () => figures('python under the preload', await tsmExec(agent.url, target, [PY, '-c', PY_PROBE], ['--intercept', 'preload'], opts)));
    const delta = (pick: (f: Figures) => number): { median: number; rounds: string } => {
      const ds = pairs.map(([sec, pre]) => pick(sec) - pick(pre));
      return { median: median(ds), rounds: ds.map((d) => `${d >= 0 ? '+' : ''}${d.toFixed(0)}`).join(', ') };
    };
    const connect = delta((f) => f.connect_median_us);
    const rtt = delta((f) => f.rtt_median_us);
    const sign = (x: number): string => `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;
    process.stdout.write(`goal: seccomp adds at most 30 µs per notified call over preload; non-notified calls cost nothing (python, median of ${PAIRED_ROUNDS} paired rounds after a warm-up pair)\n`);
    process.stdout.write(`  connect (notified): seccomp ${sign(connect.median)} µs over preload ${connect.median <= 30 ? '(met)' : '(NOT met)'} (rounds: ${connect.rounds})\n`);
    process.stdout.write(`  round trip (not notified): seccomp ${sign(rtt.median)} µs over preload (rounds: ${rtt.rounds})\n`);
    const gib = pairs.map(([sec, pre]) => mbps(sec.gib_transfer_us) / mbps(pre.gib_transfer_us));
    process.stdout.write(`  1 GiB (not notified): seccomp at ${(median(gib) * 100).toFixed(0)}% of the preload's MB/s (rounds: ${gib.map((x) => `${(x * 100).toFixed(0)}%`).join(', ')})\n`);
  } finally {
    await stopAll({ agent, harness, dirs: [work] });
  }
}

runBench(main);
