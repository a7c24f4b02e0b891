/**
 * `npm run bench` (as root), incoming traffic: at a fixed load of 2,000 requests/s from a
 * client pod (bench/load-client.mjs, open loop), the latency (p50, p99) of
 *   - requests passing through to the pod's app with a filtered steal active, against no session;
 *   - stolen requests served by the local program, against the same program hit directly
 *     (from this machine, over loopback: the pods cannot reach it otherwise);
 *   - the pod's app with a mirror active, against none;
 *   - stolen requests served by a static Go server under the seccomp supervisor (its
 *     accept4/getsockname answered by the supervisor), against it hit directly.
 * Beside each, the CPU time the agent (and the session's CLI) spent per request: unlike
 * the latencies, a figure the machine's other load hardly moves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness, type Pod } from '../test/harness/harness.js';
import { cliPath, cpuSeconds, repoRoot, run, startAgentProcess, stopAll } from '../test/e2e/tsm.js';
import { goalTable, type Goal } from './goals.js';
import { runBench } from './run.js';

const SERVER = join(repoRoot, 'test', 'e2e', 'fixtures', 'incoming-server.mjs');
const LOAD = join(repoRoot, 'bench', 'load-client.mjs');
const RATE = 2000;
const SECONDS = Number(process.env.TSM_BENCH_SECONDS ?? 5);

interface Figures {
  p50_us: number; p99_us: number; max_us: number; warmup_max_us: number; sent: number; errors: number;
  /** CPU µs per request of the agent and of the session's CLI (when there is one), over the whole run. */
  agentCpu_us?: number; cliCpu_us?: number;
}

async function main(): Promise<void> {
  const harness = await Harness.create({ name: 'bench-in' });
  const agent = await startAgentProcess();
  const children: ChildProcess[] = [];
  const work = mkdtempSync(join(tmpdir(), 'tsm-bench-in-'));
  try {
    // The server's request log goes nowhere: at 2,000 req/s it would only measure the terminal.
    const quietServer = ['/bin/sh', '-c', `exec /usr/bin/node ${SERVER} pod 8080 >/dev/null`];
    const app = await harness.addPod({ name: 'app', command: quietServer, readyPort: 8080 });
    const client = await harness.addPod({ name: 'client', command: ['/usr/bin/sleep', 'infinity'] });
    const agentPid = agent.child.pid ?? 0;
    const load = async (pod: Pod | undefined, url: string, header = '', cli?: ChildProcess): Promise<Figures> => {
      const argv = ['/usr/bin/node', LOAD, url, String(RATE), String(SECONDS), header];
      const cpu = (): number[] => [cpuSeconds(agentPid), cli ? cpuSeconds(cli.pid ?? 0) : 0];
      const before = cpu();
      const r = pod ? await harness.exec(pod, argv, { timeoutMs: 120000 }) : await run(argv[0] ?? '', argv.slice(1), { timeoutMs: 120000 });
      if (r.code !== 0) throw new Error(`load client failed: ${r.stderr}`);
      const f = JSON.parse(r.stdout) as Figures;
      const after = cpu();
      const perRequest = (i: number): number => Math.round((((after[i] ?? 0) - (before[i] ?? 0)) * 1e6) / f.sent);
      return { ...f, agentCpu_us: perRequest(0), ...(cli ? { cliCpu_us: perRequest(1) } : {}) };
    };
    const localPort = new Map<ChildProcess, number>();
    const session = async (flags: string[], port: number, command = ['/bin/sh', '-c', `exec /usr/bin/node ${SERVER} local ${port} >/dev/null`]): Promise<ChildProcess> => {
      const child = spawn(process.execPath, [cliPath, 'exec', '--agent', agent.url, '--target', `pid/${app.pid}`, ...flags, '--', ...command],
        { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
      children.push(child);
      let err = '';
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      const t0 = Date.now();
      while (!/port 8080 of the pod/.test(err)) {
        if (Date.now() - t0 > 15000 || child.exitCode !== null) throw new Error(`session did not start:\n${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // Where the program really listens: another program may hold the port it asked for.
      localPort.set(child, Number(/port 8080 of the pod → local port (\d+)/.exec(err)?.[1] ?? port));
      return child;
    };
    const stop = async (child: ChildProcess): Promise<void> => {
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      process.kill(child.pid ?? 0, 'SIGTERM');
      await gone;
      try {
        process.kill(-(child.pid ?? 0), 'SIGKILL');
      } catch {
        // gone
      }
    };
    const appUrl = `http://${app.ip}:8080/`;

    const baseline = await load(client, appUrl);
    const steal = await session(['--steal', '--http-header', 'x-dev: alice', '--port-map', '18480:8080'], 18480);
    const passThrough = await load(client, appUrl, '', steal);
    const stolen = await load(client, appUrl, 'x-dev: alice', steal);
    const direct = await load(undefined, `http://127.0.0.1:${localPort.get(steal) ?? 0}/`, 'x-dev: alice');
    await stop(steal);
    const mirror = await session(['--mirror', '--port-map', '18481:8080'], 18481);
    const mirrored = await load(client, appUrl, '', mirror);
    await stop(mirror);
    // A static Go server (CGO_ENABLED=0): tsmirror runs it under the seccomp supervisor.
    const goBin = join(work, 'go-server');
    const env = { ...process.env, GOCACHE: join(tmpdir(), 'tsmirror-test-gocache'), GOPATH: join(work, 'gopath'), GOFLAGS: '', GOPROXY: 'off', CGO_ENABLED: '0' };
    const built = await run('go', ['build', '-o', goBin, '.'], { env, cwd: join(repoRoot, 'test/e2e/fixtures/go-server'), timeoutMs: 300000 });
    if (built.code !== 0) throw new Error(`go build failed: ${built.stderr}`);
    const goSteal = await session(['--steal', '--http-header', 'x-dev: alice', '--port-map', '18483:8080'], 18483, [goBin, 'local', '18483']);
    const goStolen = await load(client, appUrl, 'x-dev: alice', goSteal);
    const goDirect = await load(undefined, `http://127.0.0.1:${localPort.get(goSteal) ?? 0}/`, 'x-dev: alice');
    await stop(goSteal);

    const line = (what: string, f: Figures, base?: Figures): string => {
      const ratio = base ? `  p50 ${(f.p50_us / base.p50_us).toFixed(2)}x, p99 ${(f.p99_us / base.p99_us).toFixed(2)}x` : '';
      const warm = `warm-up max ${(f.warmup_max_us / 1000).toFixed(1).padStart(5)} ms`;
      const cpu = f.agentCpu_us !== undefined ? `  CPU/request: agent ${f.agentCpu_us} µs${f.cliCpu_us !== undefined ? `, CLI ${f.cliCpu_us} µs` : ''}` : '';
      return `${what.padEnd(46)} p50 ${String(f.p50_us).padStart(6)} µs  p99 ${String(f.p99_us).padStart(6)} µs  max ${(f.max_us / 1000).toFixed(1).padStart(5)} ms  ${warm}  errors ${f.errors}${ratio}${cpu}\n`;
    };
    process.stdout.write(`incoming traffic at ${RATE} requests/s, 1 s warm-up (connections opening) then ${SECONDS} s measured (latency from the scheduled send time)\n`);
    process.stdout.write(line('pod app, no session', baseline));
    process.stdout.write(line('pod app, filtered steal active (pass-through)', passThrough, baseline));
    process.stdout.write(line('pod app, mirror active', mirrored, baseline));
    process.stdout.write(line('local program, hit directly (loopback)', direct));
    process.stdout.write(line('local program, stolen requests from the pod', stolen, direct));
    process.stdout.write(line('static Go program (seccomp), hit directly', goDirect));
    process.stdout.write(line('static Go program (seccomp), stolen requests', goStolen, goDirect));
    const added = (what: string, f: Figures): Goal =>
      ({ what, value: f.p99_us - baseline.p99_us, unit: 'µs', limit: 300, kind: 'atMost', rule: `p99 over the pod app's ${baseline.p99_us} µs` });
    process.stdout.write(goalTable(`incoming at ${RATE} requests/s`, [added('pass-through adds at p99', passThrough), added('mirror adds at p99', mirrored)]));
  } finally {
    for (const c of children) {
      try {
        process.kill(-(c.pid ?? 0), 'SIGKILL');
      } catch {
        // gone
      }
    }
    await stopAll({ agent, harness, dirs: [work] });
  }
}

runBench(main);
