/**
 * `tsmirror replay` end to end, with real programs: the app (fixtures/replay-app.mjs:
 * HTTP/1.1 and h2c with trailers on one port) answers a client that records the exchanges
 * as a HAR file (fixtures/har-capture.mjs, the format `tsmirror record` writes); then the
 * recording is replayed against a copy of the app, a copy with one JSON field changed, and
 * nothing. On the harness: the app runs in a pod, the client in another, and replay starts
 * the local program under tsmirror with the pod as its target.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDACTED_MARKER, type Har } from '../../common/har.js';
import { Harness, type Pod } from '../harness/harness.js';
import { pollUntil, repoRoot, run, runCli, startAgentProcess, startCli, stopAll, stopCli, type AgentProcess } from './tsm.js';

const FIX = join(repoRoot, 'test', 'e2e', 'fixtures');
const APP = join(FIX, 'replay-app.mjs');
const CAPTURE = join(FIX, 'har-capture.mjs');

const dir = mkdtempSync(join(tmpdir(), 'tsm-replay-'));
const apps = new Set<ChildProcess>();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port }, () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Starts the app on a free port (mode "same" or "changed"); resolves with its port. */
async function startApp(mode: 'same' | 'changed' = 'same'): Promise<number> {
  const port = await freePort();
  const child = spawn(process.execPath, [APP, String(port), mode], { stdio: 'ignore' });
  apps.add(child);
  child.once('exit', () => apps.delete(child));
  if (!(await pollUntil(() => listening(port), 10_000))) throw new Error('the app did not start');
  return port;
}

interface Step { conn: string; http2?: boolean; method: string; path: string; headers?: Record<string, string>; body?: unknown }

/** The exchanges of the tests: keep-alive connections, JSON posts, text, binary, h2c with trailers, a bearer token. */
function mixedPlan(): Step[] {
  const steps: Step[] = [];
  for (let round = 0; round < 3; round++) {
    steps.push({ conn: `a${round}`, method: 'GET', path: '/api/items' });
    steps.push({ conn: `a${round}`, method: 'POST', path: `/api/cart?cart=${round}`, headers: { 'content-type': 'application/json' }, body: { items: [{ qty: round + 1 }, { qty: 2 }] } });
    steps.push({ conn: `s${round}`, method: 'GET', path: `/seq/${round * 10 + 1}` });
    steps.push({ conn: `a${round}`, method: 'GET', path: '/text' });
    steps.push({ conn: `s${round}`, method: 'GET', path: `/seq/${round * 10 + 2}` });
    steps.push({ conn: `a${round}`, method: 'GET', path: '/bin' });
    steps.push({ conn: `u${round}`, method: 'GET', path: '/api/user', headers: { authorization: 'Bearer s3cret' } });
    steps.push({ conn: `h${round}`, http2: true, method: 'POST', path: '/grpc.Echo/Say', headers: { 'content-type': 'application/grpc', te: 'trailers' }, body: `hello ${round}` });
    steps.push({ conn: `h${round}`, http2: true, method: 'GET', path: '/api/items' });
  }
  return steps;
}

/** Runs the capturing client against http://HOST:PORT; the HAR, with Authorization redacted as record does. */
async function capture(base: string, plan: Step[], name: string, inPod?: { harness: Harness; pod: Pod; planPath: string }): Promise<{ file: string; har: Har }> {
  let r: { code: number | null; stdout: string; stderr: string };
  if (inPod) {
    r = await inPod.harness.exec(inPod.pod, ['/usr/bin/node', CAPTURE, base, inPod.planPath], { timeoutMs: 30_000 });
  } else {
    const planFile = join(dir, `${name}.plan.json`);
    writeFileSync(planFile, JSON.stringify(plan));
    r = await run(process.execPath, [CAPTURE, base, planFile]);
  }
  expect(r.code, r.stderr).toBe(0);
  const har = JSON.parse(r.stdout) as Har;
  for (const e of har.log.entries) {
    for (const h of e.request.headers) if (h.name.toLowerCase() === 'authorization') h.value = REDACTED_MARKER;
  }
  har.log._tsmirror = { ...har.log._tsmirror, redacted: ['authorization'] };
  const file = join(dir, `${name}.har`);
  writeFileSync(file, JSON.stringify(har));
  return { file, har };
}

interface Report {
  summary: { entries: number; replayed: number; filteredOut: number; same: number; different: number; failed: number };
  latencyMs: { recorded: { p50: number; p99: number }; replay: { p50: number; p99: number } };
  entries: { index: number; method: string; target: string; outcome: string; status?: number; error?: string; differences: { kind: string; at?: string; recorded?: unknown; replay?: unknown; text: string }[] }[];
}

function readReport(file: string): Report {
  return JSON.parse(readFileSync(file, 'utf8')) as Report;
}

afterAll(() => {
  for (const a of apps) a.kill('SIGKILL');
  void stopAll({ dirs: [dir] });
});

describe('replay against a program at --to', () => {
  let recording: { file: string; har: Har };
  const AUTH = ['--header', 'Authorization: Bearer s3cret'];

  beforeAll(async () => {
    const recorded = await startApp();
    recording = await capture(`http://127.0.0.1:${recorded}`, mixedPlan(), 'mixed');
  });

  it('reports no difference and exits 0 against a program that behaves like the app (HTTP/1.1, h2c with trailers, JSON, text, binary)', async () => {
    const port = await startApp();
    const report = join(dir, 'same.json');
    const r = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, ...AUTH, '--report', report]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/DIFF|FAILED/);
    expect(r.stdout).toMatch(/replayed 27 of 27 entries against http:\/\/127\.0\.0\.1:\d+ in [\d.]+ s: 27 same, 0 different, 0 failed\nlatency {4}recorded {4}replay\n {2}p50 .* ms .* ms\n {2}p99 .* ms .* ms\n$/);
    const rep = readReport(report);
    expect(rep.summary).toEqual({ entries: 27, replayed: 27, filteredOut: 0, same: 27, different: 0, failed: 0 });
    expect(rep.latencyMs.replay.p50).toBeGreaterThan(0);
    expect(rep.latencyMs.recorded.p99).toBeGreaterThanOrEqual(rep.latencyMs.recorded.p50);
    expect(statSync(report).mode & 0o777).toBe(0o600);
    // The h2c entries were replayed over HTTP/2 and their trailers compared (recorded: grpc-status 0).
    expect(recording.har.log.entries.filter((e) => e.response._trailers?.some((t) => t.name === 'grpc-status'))).toHaveLength(3);
  });

  it('against one that changes one JSON field in one endpoint: exactly those entries are reported, with the field named, exit 1', async () => {
    const port = await startApp('changed');
    const report = join(dir, 'changed.json');
    const r = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, ...AUTH, '--report', report, '--concurrency', '4']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const items = recording.har.log.entries.flatMap((e, i) => (new URL(e.request.url).pathname === '/api/items' ? [i] : []));
    expect(items).toHaveLength(6); // 3 over HTTP/1.1, 3 over HTTP/2
    const diffLines = r.stdout.split('\n').filter((l) => l.startsWith('DIFF '));
    expect(diffLines).toEqual(items.map((i) => `DIFF #${i + 1} GET /api/items: body $.items[1].price: 4 → 5`));
    expect(r.stdout).toContain('-      "price": 4\n+      "price": 5\n'); // the unified diff of the body
    expect(r.stdout).toMatch(/: 21 same, 6 different, 0 failed\n/);
    const rep = readReport(report);
    expect(rep.entries.filter((e) => e.outcome === 'different').map((e) => e.index)).toEqual(items);
    expect(rep.entries.find((e) => e.outcome === 'different')?.differences).toEqual([{ kind: 'body', at: '$.items[1].price', recorded: 4, replay: 5, text: 'body $.items[1].price: 4 → 5' }]);
    // --ignore-json-path: the same replay with that field left out is clean.
    const ignored = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, ...AUTH, '--ignore-json-path', '$.items[*].price', '--no-diff']);
    expect(ignored.code, ignored.stdout).toBe(0);
  });

  it('sends redacted headers as the marker unless --header supplies them', async () => {
    const port = await startApp();
    const r = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, '--filter', 'path=/api/user']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`3 request(s) carry a redacted authorization header; sent as the marker "${REDACTED_MARKER}" (give --header 'authorization: VALUE' to send a real value)`);
    expect(r.stdout.split('\n').filter((l) => l.startsWith('DIFF '))).toEqual(
      recording.har.log.entries.flatMap((e, i) => (e.request.url.endsWith('/api/user') ? [`DIFF #${i + 1} GET /api/user: status 200 → 401`, `DIFF #${i + 1} GET /api/user: body $.user: missing in the replay (recorded "alice")`, `DIFF #${i + 1} GET /api/user: body $.error: not recorded, replay has "unauthorized"`] : [])),
    );
    const supplied = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, '--filter', 'path=/api/user', '--header', 'authorization: Bearer s3cret']);
    expect(supplied.code, supplied.stdout).toBe(0);
    expect(supplied.stdout).toMatch(/replayed 3 of 27 entries \(24 filtered out\) .*: 3 same, 0 different, 0 failed/);
  });

  it('--filter selects by method, path and header; all must match', async () => {
    const port = await startApp();
    const report = join(dir, 'filter.json');
    const r = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, '--filter', 'method=POST', '--filter', 'path!=/grpc.*', '--report', report]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rep = readReport(report);
    expect(rep.entries.map((e) => `${e.method} ${e.target}`)).toEqual(['POST /api/cart?cart=0', 'POST /api/cart?cart=1', 'POST /api/cart?cart=2']);
    const byHeader = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, '--filter', 'header:content-type=application/grpc', ...AUTH]);
    expect(byHeader.stdout).toMatch(/replayed 3 of 27 entries .*: 3 same/);
    const none = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, '--filter', 'method=PATCH']);
    expect(none.code).toBe(125);
    expect(none.stderr).toContain('no entry of');
  });

  it('--concurrency keeps each recorded connection in order on one connection', async () => {
    // 8 connections × 6 requests, interleaved; each answer names the previous request on its connection.
    const plan: Step[] = [];
    for (let i = 0; i < 6; i++) for (let c = 0; c < 8; c++) plan.push({ conn: `c${c}`, method: 'GET', path: `/seq/${c * 100 + i}` });
    const rec = await capture(`http://127.0.0.1:${await startApp()}`, plan, 'seq');
    expect(rec.har.log.entries.map((e) => JSON.parse(e.response.content.text!).prev).slice(8, 16)).toEqual([0, 100, 200, 300, 400, 500, 600, 700]);
    const port = await startApp();
    for (const n of ['8', '3', '1']) {
      const r = await runCli(['replay', rec.file, '--to', `http://127.0.0.1:${port}`, '--concurrency', n]);
      expect(r.code, `--concurrency ${n}\n${r.stdout}`).toBe(0);
      expect(r.stdout).toMatch(/48 same, 0 different/);
    }
    // Without connection ids (a browser's file), each entry goes on its own connection: the
    // app sees no previous request, which the comparison catches.
    const flat = structuredClone(rec.har);
    for (const e of flat.log.entries) delete e.connection;
    const flatFile = join(dir, 'seq-flat.har');
    writeFileSync(flatFile, JSON.stringify(flat));
    const r = await runCli(['replay', flatFile, '--to', `http://127.0.0.1:${port}`, '--concurrency', '8', '--no-diff']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/: 8 same, 40 different, 0 failed/);
    expect(r.stdout).toContain('DIFF #9 GET /seq/1: body $.prev: 0 → null');
  });

  it('reports requests that get no answer as failed, with exit code 2', async () => {
    const port = await freePort();
    const r = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${port}`, '--filter', 'path=/text', '--filter', 'header:host']);
    expect(r.code).toBe(2);
    expect(r.stdout.split('\n').filter((l) => l.startsWith('FAILED'))).toEqual(
      recording.har.log.entries.flatMap((e, i) => (e.request.url.endsWith('/text') ? [`FAILED #${i + 1} GET /text: connect ECONNREFUSED 127.0.0.1:${port}`] : [])),
    );
    expect(r.stdout).toMatch(/0 same, 0 different, 3 failed/);
  });

  it('refuses what it cannot do, saying what to do instead', async () => {
    const both = await runCli(['replay', recording.file, '--to', 'http://127.0.0.1:1', '--', 'true']);
    expect(both.code).toBe(125);
    expect(both.stderr).toContain('give either --to URL or a command after --, not both');
    const neither = await runCli(['replay', recording.file]);
    expect(neither.stderr).toContain('nothing to replay against');
    const noTarget = await runCli(['replay', recording.file, '--port', String(await freePort()), '--', 'true']);
    expect(noTarget.code).toBe(125);
    expect(noTarget.stderr).toContain('names no target to run the program with');
    const https = await runCli(['replay', recording.file, '--to', 'https://127.0.0.1:1']);
    expect(https.stderr).toContain('replay speaks http://');
    const taken = await startApp();
    const busy = await runCli(['replay', recording.file, '--target', 'pid/1', '--agent', 'ws://127.0.0.1:1', '--port', String(taken), '--', 'true']);
    expect(busy.code).toBe(125);
    expect(busy.stderr).toContain(`something on this machine already listens on port ${taken}`);
  });
});

describe('replay -- command: the program under tsmirror with the recording\'s target (harness)', () => {
  let harness: Harness;
  let app: Pod;
  let client: Pod;
  let agent: AgentProcess;
  let recording: { file: string; har: Har };

  beforeAll(async () => {
    harness = await Harness.create({ name: 'replay' });
    const plan: Step[] = [
      { conn: 'a', method: 'GET', path: '/env' },
      { conn: 'a', method: 'GET', path: '/api/items' },
      { conn: 'b', method: 'POST', path: '/api/cart', headers: { 'content-type': 'application/json' }, body: { items: [{ qty: 4 }] } },
      { conn: 'h', http2: true, method: 'POST', path: '/grpc.Echo/Say', headers: { 'content-type': 'application/grpc', te: 'trailers' }, body: 'hi' },
      { conn: 'h', http2: true, method: 'GET', path: '/env' },
      { conn: 's', method: 'GET', path: '/seq/1' },
      { conn: 's', method: 'GET', path: '/seq/2' },
      { conn: 'u', method: 'GET', path: '/api/user', headers: { authorization: 'Bearer s3cret' } },
      { conn: 'a', method: 'GET', path: '/gz', headers: { 'accept-encoding': 'gzip' } },
    ];
    [app, client] = await Promise.all([
      harness.addPod({ name: 'app', command: ['/usr/bin/node', APP, '8080'], readyPort: 8080, env: { GREETING: 'hello from the pod' }, files: { '/data/replay-motd': 'motd of the pod\n' } }),
      harness.addPod({ name: 'client', command: ['/usr/bin/sleep', 'infinity'], files: { '/data/plan.json': JSON.stringify(plan) } }),
    ]);
    agent = await startAgentProcess();
    // The client pod talks to the app pod; the HAR it writes names the pod's port 8080.
    recording = await capture(`http://${app.ip}:8080`, plan, 'pod', { harness, pod: client, planPath: '/data/plan.json' });
    recording.har.log._tsmirror = { ...recording.har.log._tsmirror, target: `pid/${app.pid}` };
    writeFileSync(recording.file, JSON.stringify(recording.har));
  }, 180_000);

  afterAll(async () => {
    await stopAll({ agent, harness });
  });

  it('starts the program with the pod\'s environment and files, replays, finds no difference, stops it, exits 0', async () => {
    expect(JSON.parse(recording.har.log.entries[0]!.response.content.text!)).toEqual({ greeting: 'hello from the pod', motd: 'motd of the pod' });
    const port = await freePort(); // the pod's 8080 may be taken on this machine: --port says where the program listens
    const r = await runCli(['replay', recording.file, '--agent', agent.url, '--port', String(port), '--header', 'authorization: Bearer s3cret', '--', process.execPath, APP, String(port)], { timeoutMs: 90_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/replayed 9 of 9 entries against .*replay-app\.mjs \d+ \(port \d+\) in [\d.]+ s: 9 same, 0 different, 0 failed/);
    expect(r.stderr).toContain(`starting ${process.execPath} ${APP} ${port} under tsmirror as pid/${app.pid}`);
    expect(r.stderr).not.toMatch(/mirroring port|stealing/); // its listener stayed local: no live pod traffic
    expect(await listening(port)).toBe(false); // the program was stopped
    // The same program run without the pod answers /env differently: the replay would say so.
    const plain = await startApp();
    const without = await runCli(['replay', recording.file, '--to', `http://127.0.0.1:${plain}`, '--no-diff']);
    expect(without.code).toBe(1);
    expect(without.stdout).toContain('DIFF #1 GET /env: body $.greeting: "hello from the pod" → null');
    expect(without.stdout).toContain('DIFF #5 GET /env: body $.motd: "motd of the pod" → null');
  });

  it('reports the changed field of a changed program, exit 1, and stops it', async () => {
    const port = await freePort();
    const r = await runCli(['replay', recording.file, '--agent', agent.url, '--port', String(port), '--quiet', '--header', 'authorization: Bearer s3cret', '--', process.execPath, APP, String(port), 'changed'], { timeoutMs: 90_000 });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout.split('\n').filter((l) => l.startsWith('DIFF '))).toEqual(['DIFF #2 GET /api/items: body $.items[1].price: 4 → 5', 'DIFF #9 GET /gz: body $.version: 1 → 2']);
    expect(await listening(port)).toBe(false);
  });

  it('replays what tsmirror record recorded (HTTP/1.1 keep-alive, h2c with trailers, redacted Authorization): the same program matches, a changed one is caught', async () => {
    const file = join(dir, 'recorded.har');
    const rec = startCli(['record', '--agent', agent.url, '--target', `pid/${app.pid}`, '--port', '8080', '-o', file]);
    try {
      await rec.waitFor(/recording ports? .* Ctrl-C stops/, 30_000);
      const sent = await harness.exec(client, ['/usr/bin/node', CAPTURE, `http://${app.ip}:8080`, '/data/plan.json'], { timeoutMs: 30_000 });
      expect(sent.code, sent.stderr).toBe(0);
      await pollUntil(() => /\b9 kept\b/.test(rec.err()), 15_000);
    } finally {
      await stopCli(rec.child, 15_000);
    }
    const har = JSON.parse(readFileSync(file, 'utf8')) as Har;
    expect(har.log.entries.map((e) => `${e.request.method} ${new URL(e.request.url).pathname}`).sort()).toEqual(['GET /api/items', 'GET /api/user', 'GET /env', 'GET /env', 'GET /gz', 'GET /seq/1', 'GET /seq/2', 'POST /api/cart', 'POST /grpc.Echo/Say'].sort());
    // Kept as on the wire (gzip, base64); replay decodes both sides.
    expect(har.log.entries.find((e) => e.request.url.endsWith('/gz'))?.response.content.encoding).toBe('base64');
    expect(har.log.entries.find((e) => e.request.url.endsWith('/api/user'))?.request.headers.find((h) => h.name.toLowerCase() === 'authorization')?.value).toBe(REDACTED_MARKER);
    const port = await freePort();
    const same = await runCli(['replay', file, '--agent', agent.url, '--port', String(port), '--header', 'authorization: Bearer s3cret', '--', process.execPath, APP, String(port)], { timeoutMs: 90_000 });
    expect(same.code, same.stdout + same.stderr).toBe(0);
    expect(same.stdout).toMatch(/replayed 9 of 9 entries .*: 9 same, 0 different, 0 failed/);
    const changed = await runCli(['replay', file, '--agent', agent.url, '--port', String(port), '--quiet', '--header', 'authorization: Bearer s3cret', '--', process.execPath, APP, String(port), 'changed'], { timeoutMs: 90_000 });
    expect(changed.code, changed.stdout + changed.stderr).toBe(1);
    const items = har.log.entries.findIndex((e) => e.request.url.endsWith('/api/items'));
    const gz = har.log.entries.findIndex((e) => e.request.url.endsWith('/gz'));
    expect(changed.stdout.split('\n').filter((l) => l.startsWith('DIFF '))).toEqual([`DIFF #${items + 1} GET /api/items: body $.items[1].price: 4 → 5`, `DIFF #${gz + 1} GET /gz: body $.version: 1 → 2`].sort((a, b) => Number(/#(\d+)/.exec(a)![1]) - Number(/#(\d+)/.exec(b)![1])));
  });

  it('Ctrl-C during a replay stops the program it started, and exits 130', async () => {
    const port = await freePort();
    const hang = `require('http').createServer(() => {}).listen(${port})`; // never answers
    const cli = startCli(['replay', recording.file, '--agent', agent.url, '--port', String(port), '--timeout', '120000', '--', process.execPath, '-e', hang]);
    await cli.waitFor(/replaying 9 request/, 60_000);
    expect(await listening(port)).toBe(true);
    const exited = new Promise<number | null>((r) => cli.child.once('exit', (code) => r(code)));
    cli.child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(await listening(port)).toBe(false);
  });

  it('says so when the program exits before it listens', async () => {
    const port = await freePort();
    const r = await runCli(['replay', recording.file, '--agent', agent.url, '--port', String(port), '--', '/bin/sh', '-c', 'echo bye; exit 3'], { timeoutMs: 60_000 });
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`the program exited (code 3) before it listened on port ${port}`);
  });
});
