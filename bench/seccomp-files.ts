/**
 * `npm run bench` (as root): pod files for programs under the seccomp supervisor, beside
 * the preload path and the same work run inside the pod, in one run:
 * - open+read+close of a 4 KiB pod file (µs per operation): a CGO_ENABLED=0 Go program
 *   under `--intercept seccomp`, python under the preload, each also run in the pod, and
 *   one C program (test/e2e/fixtures/files-bench.c) linked statically under seccomp and
 *   dynamically under the preload: the same program both ways, so their difference is
 *   the interceptors' (Go against python also compares the runtimes: a Go thread blocked
 *   in a slow call hands its P to another thread, which costs wake-ups of its own);
 * - open+close of a local file (µs): what a notified call that stays local costs the Go
 *   program (the supervisor reads the path, applies the rules, answers CONTINUE).
 * - how often the supervisor's threads went to sleep per notified call
 *   (test/e2e/fixtures/seccomp-wakeups.c: their voluntary context switches, a count the
 *   machine's load does not move, unlike the times above);
 * - the floor of the kernel interface on this machine, with no tsmirror and no proxy
 *   (test/e2e/fixtures/seccomp-floor.c): what a notified call answered CONTINUE costs, and
 *   what the answer of a pod-file open costs beyond the memfd the preload creates too, so
 *   the supervisor's own share of the difference above can be told from the kernel's.
 * The Go program is test/e2e/fixtures/go-files, built here with Debian's Go.
 */
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness } from '../test/harness/harness.js';
import { repoRoot, run, startAgentProcess, stopAll, tsmExec } from '../test/e2e/tsm.js';
import { probeFigures } from './net-probe.js';

const PY = '/usr/bin/python3';
const LOCAL_FILE = '/etc/passwd';
const C_ROUNDS = 6;
const FLOOR_RUNS = 3;
const PY_PROBE = `
import os, time, json
n = 2000
t = time.perf_counter()
for _ in range(n):
    fd = os.open('/data/small.bin', os.O_RDONLY); os.read(fd, 4096); os.close(fd)
remote = (time.perf_counter() - t) / n * 1e6
t = time.perf_counter()
for _ in range(n):
    fd = os.open('${LOCAL_FILE}', os.O_RDONLY); os.close(fd)
print(json.dumps({'open_read_close_4k_us': remote, 'open_close_local_us': (time.perf_counter() - t) / n * 1e6}))
`;
import { median, pairedRounds, runBench } from './run.js';

type Figures = Record<'open_read_close_4k_us' | 'open_close_local_us', number>;

const figures = (what: string, r: { code: number | null; stdout: string; stderr: string }): Figures => probeFigures<Figures>(what, r);

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'tsm-bench-seccomp-files-'));
  const harness = await Harness.create({ name: 'benchscf' });
  const agent = await startAgentProcess();
  try {
    const goBin = join(work, 'gofiles');
    const env = { ...process.env, GOCACHE: join(work, 'gocache'), GOPATH: join(work, 'gopath'), GOFLAGS: '', GO111MODULE: 'on', GOPROXY: 'off', GOTOOLCHAIN: 'local', CGO_ENABLED: '0' };
    const built = await run('go', ['build', '-o', goBin, '.'], { env, cwd: join(repoRoot, 'test/e2e/fixtures/go-files'), timeoutMs: 300000 });
    if (built.code !== 0) throw new Error(`go build failed: ${built.stderr}`);
    const cSource = join(repoRoot, 'test/e2e/fixtures/files-bench.c');
    const cStatic = join(work, 'files-bench-static');
    const cDynamic = join(work, 'files-bench');
    const wakeups = join(work, 'seccomp-wakeups');
    const floorBin = join(work, 'seccomp-floor');
    for (const [out, extra, source] of [[cStatic, ['-static'], cSource], [cDynamic, [], cSource], [wakeups, ['-static'], join(repoRoot, 'test/e2e/fixtures/seccomp-wakeups.c')], [floorBin, [], join(repoRoot, 'test/e2e/fixtures/seccomp-floor.c')]] as const) {
      const cc = await run('gcc', [...extra, '-O2', '-Wall', '-o', out, source]);
      if (cc.code !== 0) throw new Error(`gcc failed: ${cc.stderr}`);
    }
    const pod = await harness.addPod({ name: 'files', namespace: 'default', command: ['sleep', 'infinity'] });
    writeFileSync(join(pod.dataDir, 'small.bin'), randomBytes(4096));
    copyFileSync(goBin, join(pod.dataDir, 'gofiles'));
    copyFileSync(cStatic, join(pod.dataDir, 'files-bench'));

    const target = `pid/${pod.pid}`;
    const opts = { timeoutMs: 300000 };
    const goArgs = ['bench', '/data/small.bin', LOCAL_FILE];
    const goPod = figures('Go in the pod', await harness.exec(pod, ['/data/gofiles', ...goArgs], opts));
    const goSeccomp = figures('Go under seccomp', await tsmExec(agent.url, target, [goBin, ...goArgs], ['--intercept', 'seccomp'], opts));
    const pyPod = figures('python in the pod', await harness.exec(pod, [PY, '-c', PY_PROBE], opts));
    const pyPreload = figures('python under the preload', await tsmExec(agent.url, target, [PY, '-c', PY_PROBE], [], opts));
    const cArgs = ['/data/small.bin', LOCAL_FILE];
    const cPod = figures('C in the pod', await harness.exec(pod, ['/data/files-bench', ...cArgs], opts));
    // The same C program both ways, in paired rounds (the first pair alone reads 100-400 µs
    // apart); medians.
    const pairs = await pairedRounds(C_ROUNDS,
      async () => figures('C (static) under seccomp', await tsmExec(agent.url, target, [cStatic, ...cArgs], ['--intercept', 'seccomp'], opts)),
      async () => figures('C (dynamic) under the preload', await tsmExec(agent.url, target, [cDynamic, ...cArgs], [], opts)));
    const medianFigures = (which: 0 | 1): Figures => ({
      open_read_close_4k_us: median(pairs.map((p) => p[which].open_read_close_4k_us)),
      open_close_local_us: median(pairs.map((p) => p[which].open_close_local_us)),
    });
    const cSeccomp = medianFigures(0);
    const cPreload = medianFigures(1);
    const overPreloadRounds = pairs.map(([sec, pre]) => sec.open_read_close_4k_us - pre.open_read_close_4k_us);
    type Floor = Record<'none_us' | 'continue_us' | 'addfd_us' | 'memfd_us', number>;
    const floorRuns = async (cmd: string, args: string[], what: string): Promise<Floor[]> => {
      const runs: Floor[] = [];
      for (let i = 0; i < FLOOR_RUNS; i++) runs.push(probeFigures<Floor>(what, await run(cmd, args, opts)));
      return runs;
    };
    const floorAll = await floorRuns(floorBin, [LOCAL_FILE, '20000'], 'the interface\'s floor');
    const floorOneCpuAll = await floorRuns('taskset', ['-c', '0', floorBin, LOCAL_FILE, '20000'], 'the interface\'s floor on one CPU');
    const continueCost = median(floorAll.map((f) => f.continue_us - f.none_us));
    const answerFloorRuns = floorAll.map((f) => f.addfd_us - f.memfd_us);
    const answerFloorOneCpu = median(floorOneCpuAll.map((f) => f.addfd_us - f.memfd_us));
    const sleeps = probeFigures<Record<'local_sleeps_per_call' | 'pod_sleeps_per_open', number>>('the supervisor\'s sleeps',
      await tsmExec(agent.url, target, [wakeups, LOCAL_FILE, '/data/small.bin', '2000'], ['--intercept', 'seccomp'], opts));

    const row = (label: string, key: keyof Figures): string =>
      `${label.padEnd(34)} ${[goPod, goSeccomp, pyPod, pyPreload, cPod, cSeccomp, cPreload].map((f) => f[key].toFixed(1).padStart(9)).join(' ')}\n`;
    process.stdout.write('seccomp files (µs/op)                Go: pod   seccomp   py: pod   preload    C: pod   seccomp   preload\n');
    process.stdout.write(row('open+read+close 4 KiB pod file', 'open_read_close_4k_us'));
    process.stdout.write(row('open+close local file', 'open_close_local_us'));
    const notified = goSeccomp.open_close_local_us - goPod.open_close_local_us;
    process.stdout.write(`a notified call that stays local costs ${notified.toFixed(1)} µs more under seccomp (open and close: only open is notified)\n`);
    const overPreload = median(overPreloadRounds);
    process.stdout.write(`the supervisor's threads sleep ${sleeps.local_sleeps_per_call.toFixed(2)} times per local open and ${sleeps.pod_sleeps_per_open.toFixed(2)} per pod-file open (voluntary context switches; 1 and 3 are the least: waiting for the call, the proxy, the program's thread)\n`);
    const spread = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(', ');
    process.stdout.write(`the same C program: seccomp adds ${overPreload.toFixed(1)} µs per pod-file open over the preload, median of ${C_ROUNDS} paired rounds after a warm-up pair (rounds: ${spread(overPreloadRounds)}; goal: at most 30 µs; wall clock, so a loaded machine moves it)\n`);
    const answerFloor = median(answerFloorRuns);
    process.stdout.write(`the kernel interface alone here (seccomp-floor.c, no tsmirror, no proxy; median of ${FLOOR_RUNS} runs): a call answered CONTINUE costs ${continueCost.toFixed(1)} µs; the answer of a pod-file open (path read, ID_VALID, read-only reopen of a memfd, ADDFD|SEND) costs ${answerFloor.toFixed(1)} µs beyond the memfd the preload creates too (runs: ${spread(answerFloorRuns)}; ${answerFloorOneCpu.toFixed(1)} µs with both on one CPU), so no supervisor can add less here; the other ${(overPreload - answerFloor).toFixed(1)} µs are the supervisor's own work and where the scheduler runs the extra wake-ups (docs/ARCHITECTURE.md, "Pod files under seccomp")\n`);
  } finally {
    await stopAll({ agent, harness, dirs: [work] });
  }
}

runBench(main);
