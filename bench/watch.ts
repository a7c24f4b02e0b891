/**
 * `npm run bench` (as root), the inner loop: save-to-served. A small node HTTP server runs
 * under `tsmirror exec --steal --watch`; a client in another pod requests the stolen port
 * every 2 ms. Measured, median of 20: the time from writing the watched file to the first
 * request answered by the new version — against the same server's own cold start (spawn
 * to first answer, on this machine without tsmirror).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDemoNode } from '../test/harness/demo-pods.js';
import { cliPath, startAgentProcess, stopCli } from '../test/e2e/tsm.js';

const RUNS = 20;

const server = (version: number, port: number): string =>
  `require('http').createServer((q, s) => s.end('v${version}\\n')).listen(${port});\n`;

// Runs in the client pod: asks every 2 ms; for each version read on stdin, prints the
// wall-clock time (ms) of the first answer carrying it.
const CLIENT = `
import sys, time, urllib.request, threading
url = sys.argv[1]
want = [None]
def watch():
    for line in sys.stdin: want[0] = line.strip()
threading.Thread(target=watch, daemon=True).start()
while True:
    w = want[0]
    if w:
        try:
            body = urllib.request.urlopen(url, timeout=15).read().decode().strip()
        except Exception:
            body = ''
        if body == w:
            print(w, time.time() * 1000, flush=True); want[0] = None
    time.sleep(0.002)
`;
import { runBench } from './run.js';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

async function coldStart(dir: string): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const port = await new Promise<number>((r) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => r(p));
      });
    });
    const file = join(dir, `cold-${i}.js`);
    writeFileSync(file, server(i, port));
    const t0 = performance.now();
    const child = spawn(process.execPath, [file], { stdio: 'ignore' });
    for (;;) {
      const ok = await new Promise<boolean>((r) => {
        const c = net.connect(port, '127.0.0.1', () => {
          c.end('GET / HTTP/1.0\r\n\r\n');
        });
        let body = '';
        c.on('data', (d) => (body += d.toString()));
        c.on('close', () => r(body.includes(`v${i}`)));
        c.on('error', () => r(false));
      });
      if (ok) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    xs.push(performance.now() - t0);
    child.kill('SIGKILL');
  }
  return median(xs);
}

async function main(): Promise<void> {
  const { harness, api, db } = await buildDemoNode({ name: 'bwatch' });
  const agent = await startAgentProcess();
  const dir = mkdtempSync(join(tmpdir(), 'tsm-bench-watch-'));
  let cli: ChildProcess | undefined;
  let client: ChildProcess | undefined;
  try {
    const cold = await coldStart(dir);
    const src = join(dir, 'src');
    mkdirSync(src);
    const file = join(src, 'server.js');
    writeFileSync(file, server(0, 8080));
    cli = spawn(process.execPath, [cliPath, 'exec', '--agent', agent.url, '--target', `pid/${api.pid}`, '--steal', '--watch', src, '--', process.execPath, file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    cli.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const until = Date.now() + 30000;
    while (!/stealing all traffic on port 8080/.test(err) || !/watching/.test(err)) {
      if (Date.now() > until) throw new Error(`tsmirror did not start:\n${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    client = spawn('nsenter', ['-t', String(db.pid), '-n', '/usr/bin/python3', '-c', CLIENT, `http://${api.ip}:8080/`], { stdio: ['pipe', 'pipe', 'inherit'] });
    let lines = '';
    client.stdout?.on('data', (d: Buffer) => (lines += d.toString()));
    const served = async (version: number): Promise<number> => {
      const tag = `v${version}`;
      client?.stdin?.write(`${tag}\n`);
      const stop = Date.now() + 30000;
      for (;;) {
        const m = new RegExp(`^${tag} (\\d+(?:\\.\\d+)?)$`, 'm').exec(lines);
        if (m?.[1]) return Number(m[1]);
        if (Date.now() > stop) throw new Error(`version ${tag} never answered\n${err}`);
        await new Promise((r) => setTimeout(r, 2));
      }
    };
    await served(0);
    const xs: number[] = [];
    for (let i = 1; i <= RUNS; i++) {
      const t0 = Date.now();
      writeFileSync(file, server(i, 8080));
      xs.push((await served(i)) - t0);
    }
    const restarts = (err.match(/restarted in (\d+) ms/g) ?? []).map((l) => Number(/(\d+)/.exec(l)?.[1]));
    process.stdout.write('\nsave-to-served (--watch, --steal, small node HTTP server), median of 20\n');
    process.stdout.write(`  save → first stolen request answered by the new program  ${median(xs).toFixed(0).padStart(6)} ms\n`);
    process.stdout.write(`  of which tsmirror's restart (stop + spawn), as it reports  ${median(restarts).toFixed(0).padStart(6)} ms\n`);
    process.stdout.write(`  the same server's cold start without tsmirror           ${cold.toFixed(0).padStart(6)} ms\n`);
    process.stdout.write(`  ratio                                                    ${(median(xs) / cold).toFixed(1).padStart(6)}x\n`);
  } finally {
    client?.kill('SIGKILL');
    if (cli) await stopCli(cli);
    await agent.stop();
    await harness.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench(main);
