/**
 * `npm run bench` (as root), recording: at a fixed load of 2,000 requests/s from a client
 * pod (bench/load-client.mjs, open loop, keep-alive), the latency (p50, p99) the pod's
 * clients see with no session, with a plain mirror, and with `tsmirror record` writing
 * every exchange (and 10% of them) to a HAR file: the goal is the cost of a mirror. Also
 * the CPU time the agent and the CLI spent per 1,000 requests in each phase (less at the
 * mercy of a busy machine than latencies).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness, type Pod } from '../test/harness/harness.js';
import { cliPath, cpuSeconds, repoRoot, startAgentProcess } from '../test/e2e/tsm.js';
import { runBench } from './run.js';

const SERVER = join(repoRoot, 'test', 'e2e', 'fixtures', 'incoming-server.mjs');
const LOAD = join(repoRoot, 'bench', 'load-client.mjs');
const RATE = Number(process.env.TSM_BENCH_RATE ?? 2000);
const SECONDS = Number(process.env.TSM_BENCH_SECONDS ?? 5);

interface Figures { p50_us: number; p99_us: number; max_us: number; warmup_max_us: number; sent: number; errors: number }

async function main(): Promise<void> {
  const harness = await Harness.create({ name: 'bench-rec' });
  const agent = await startAgentProcess();
  const dir = mkdtempSync(join(tmpdir(), 'tsm-bench-record-'));
  const children: ChildProcess[] = [];
  try {
    const quietServer = ['/bin/sh', '-c', `exec /usr/bin/node ${SERVER} pod 8080 >/dev/null`];
    const app = await harness.addPod({ name: 'app', command: quietServer, readyPort: 8080 });
    const client = await harness.addPod({ name: 'client', command: ['/usr/bin/sleep', 'infinity'] });
    const cpuMs = (pid: number | undefined): number => {
      try {
        return cpuSeconds(pid ?? 0) * 1000;
      } catch {
        return 0;
      }
    };
    let cli: ChildProcess | undefined;
    const load = async (pod: Pod): Promise<Figures & { agentCpu: number; cliCpu: number }> => {
      const a0 = cpuMs(agent.child.pid);
      const c0 = cpuMs(cli?.pid);
      const r = await harness.exec(pod, ['/usr/bin/node', LOAD, `http://${app.ip}:8080/`, String(RATE), String(SECONDS), ''], { timeoutMs: 120000 });
      if (r.code !== 0) throw new Error(`load client failed: ${r.stderr}`);
      const f = JSON.parse(r.stdout) as Figures;
      const per1000 = (ms: number): number => Math.round((ms / Math.max(1, f.sent)) * 1000);
      return { ...f, agentCpu: per1000(cpuMs(agent.child.pid) - a0), cliCpu: cli ? per1000(cpuMs(cli.pid) - c0) : 0 };
    };
    /** Starts `tsmirror ARGS`, waits for `ready` on its stderr. */
    const start = async (args: string[], ready: RegExp): Promise<{ child: ChildProcess; err: () => string }> => {
      const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
      children.push(child);
      let err = '';
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      const t0 = Date.now();
      while (!ready.test(err)) {
        if (Date.now() - t0 > 15000 || child.exitCode !== null) throw new Error(`tsmirror did not start:\n${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return { child, err: () => err };
    };
    const stop = async (child: ChildProcess, signal: NodeJS.Signals): Promise<void> => {
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      process.kill(child.pid ?? 0, signal);
      await gone;
      try {
        process.kill(-(child.pid ?? 0), 'SIGKILL');
      } catch {
        // gone
      }
    };
    const record = async (flags: string[], file: string): Promise<{ figures: Figures & { agentCpu: number; cliCpu: number }; entries: number; summary: string }> => {
      const r = await start(['record', '--agent', agent.url, '--target', `pid/${app.pid}`, '--port', '8080', '-o', file, ...flags], /Ctrl-C stops/);
      cli = r.child;
      const figures = await load(client);
      cli = undefined;
      await stop(r.child, 'SIGINT');
      const har = JSON.parse(readFileSync(file, 'utf8')) as { log: { entries: unknown[] } };
      return { figures, entries: har.log.entries.length, summary: /stopped[^\n]*/.exec(r.err())?.[0] ?? '' };
    };

    const baseline = await load(client);
    const mirror = await start(['exec', '--agent', agent.url, '--target', `pid/${app.pid}`, '--mirror', '--port-map', '18482:8080', '--',
      '/bin/sh', '-c', `exec /usr/bin/node ${SERVER} local 18482 >/dev/null`], /port 8080 of the pod/);
    cli = mirror.child;
    const mirrored = await load(client);
    cli = undefined;
    await stop(mirror.child, 'SIGTERM');
    const all = await record([], join(dir, 'all.har'));
    const sampled = await record(['--sample', '10%'], join(dir, 'sampled.har'));
    const baseline2 = await load(client);

    const line = (what: string, f: Figures & { agentCpu: number; cliCpu: number }, base?: Figures): string => {
      const added = base ? `  added p50 ${String(f.p50_us - base.p50_us).padStart(5)} µs, p99 ${String(f.p99_us - base.p99_us).padStart(6)} µs` : '';
      const cpu = `  CPU per 1,000 requests: agent ${f.agentCpu} ms, CLI ${f.cliCpu} ms`;
      return `${what.padEnd(36)} p50 ${String(f.p50_us).padStart(6)} µs  p99 ${String(f.p99_us).padStart(6)} µs  errors ${f.errors}${added}${cpu}\n`;
    };
    process.stdout.write(`recording at ${RATE} requests/s, 1 s warm-up then ${SECONDS} s measured (latency from the scheduled send time)\n`);
    process.stdout.write(line('pod app, no session', baseline));
    process.stdout.write(line('pod app, mirror active', mirrored, baseline));
    process.stdout.write(line('pod app, record (every exchange)', all.figures, baseline));
    process.stdout.write(line('pod app, record --sample 10%', sampled.figures, baseline));
    process.stdout.write(line('pod app, no session (again)', baseline2));
    process.stdout.write(`  record wrote ${all.entries} entries (${all.summary}); --sample 10% wrote ${sampled.entries}\n`);
  } finally {
    for (const c of children) {
      try {
        process.kill(-(c.pid ?? 0), 'SIGKILL');
      } catch {
        // gone
      }
    }
    await agent.stop();
    await harness.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench(main);
