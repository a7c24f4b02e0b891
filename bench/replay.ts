/**
 * `npm run bench`: the replay rate against a local program. The test app
 * (test/e2e/fixtures/replay-app.mjs) answers 2,000 recorded requests (JSON GETs and POSTs
 * on 50 keep-alive connections; and 500 h2c calls with trailers on 10 sessions), recorded
 * by the test's capturing client; then `tsmirror replay --to` sends them back and compares
 * every answer. Measured: requests replayed and compared per second (from the report's
 * duration, so Node's start-up is not counted), at --concurrency 1, 8 and 32; median of 3.
 */
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliPath, repoRoot } from '../test/e2e/tsm.js';
import { runBench } from './run.js';

const FIX = join(repoRoot, 'test', 'e2e', 'fixtures');
const RUNS = 3;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitListening(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.destroy();
        r(true);
      });
      c.once('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the app did not start');
}

function plan(http2: boolean): unknown[] {
  const steps: unknown[] = [];
  if (!http2) {
    for (let i = 0; i < 2000; i++) {
      const conn = `c${i % 50}`;
      steps.push(i % 4 === 1
        ? { conn, method: 'POST', path: `/api/cart?cart=${i}`, headers: { 'content-type': 'application/json' }, body: { items: [{ qty: i % 7 }, { qty: 2 }] } }
        : { conn, method: 'GET', path: '/api/items' });
    }
  } else {
    for (let i = 0; i < 500; i++) steps.push({ conn: `h${i % 10}`, http2: true, method: 'POST', path: '/grpc.Echo/Say', headers: { 'content-type': 'application/grpc', te: 'trailers' }, body: `call ${i}` });
  }
  return steps;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** The yardstick: a plain Node client sending 2,000 GETs one at a time on `connections` keep-alive connections. */
async function plainRate(port: number, connections: number): Promise<number> {
  const agents = Array.from({ length: connections }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  const t0 = performance.now();
  await Promise.all(agents.map(async (agent) => {
    for (let i = 0; i < 2000 / connections; i++) {
      await new Promise<void>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path: '/api/items', agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        });
        req.on('error', reject);
        req.end();
      });
    }
  }));
  for (const a of agents) a.destroy();
  return 2000 / ((performance.now() - t0) / 1000);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tsm-bench-replay-'));
  const port = await freePort();
  const app = spawn(process.execPath, [join(FIX, 'replay-app.mjs'), String(port)], { stdio: 'ignore' });
  try {
    await waitListening(port);
    process.stdout.write('replay rate against a local program (tsmirror replay --to, every answer compared; median of 3)\n');
    for (const n of [1, 8]) {
      const rates: number[] = [];
      for (let run = 0; run < RUNS; run++) rates.push(await plainRate(port, n));
      process.stdout.write(`${`yardstick: a plain Node client, 2000 GETs, ${n} connection(s)`.padEnd(64)} ${String(Math.round(median(rates))).padStart(6)} requests/s\n`);
    }
    for (const http2 of [false, true]) {
      const planFile = join(dir, 'plan.json');
      writeFileSync(planFile, JSON.stringify(plan(http2)));
      const cap = spawnSync(process.execPath, [join(FIX, 'har-capture.mjs'), `http://127.0.0.1:${port}`, planFile], { maxBuffer: 256 * 1024 * 1024 });
      if (cap.status !== 0) throw new Error(`capture failed: ${cap.stderr.toString()}`);
      const har = join(dir, 'bench.har');
      writeFileSync(har, cap.stdout);
      const count = (JSON.parse(cap.stdout.toString()) as { log: { entries: unknown[] } }).log.entries.length;
      for (const concurrency of [1, 8, 32]) {
        const rates: number[] = [];
        for (let run = 0; run < RUNS; run++) {
          const report = join(dir, 'report.json');
          const r = spawnSync(process.execPath, [cliPath, 'replay', har, '--to', `http://127.0.0.1:${port}`, '--concurrency', String(concurrency), '--report', report, '--quiet'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
          if (r.status !== 0) throw new Error(`replay exited ${r.status}: ${r.stdout.slice(-2000)}${r.stderr}`);
          const rep = JSON.parse(readFileSync(report, 'utf8')) as { seconds: number; summary: { same: number } };
          if (rep.summary.same !== count) throw new Error(`only ${rep.summary.same} of ${count} the same`);
          rates.push(count / rep.seconds);
        }
        const what = `${count} ${http2 ? 'h2c calls with trailers, 10 sessions' : 'HTTP/1.1 JSON requests, 50 connections'}, --concurrency ${concurrency}`;
        process.stdout.write(`${what.padEnd(64)} ${String(Math.round(median(rates))).padStart(6)} requests/s\n`);
      }
    }
  } finally {
    app.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench(main);
