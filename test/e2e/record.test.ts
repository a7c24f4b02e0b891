/**
 * `tsmirror record` end to end, on the local node harness, with real programs: the pod
 * `app` (node: HTTP/1.1 on 8080, h2c on 50051) answers a `client` pod (node: GET, JSON
 * POSTs, chunked uploads over keep-alive connections, one gRPC-style h2c stream with
 * trailers, one connection that is not HTTP) while `tsmirror record` writes what passes to
 * a HAR file, which must validate against the HAR 1.2 schema (test/e2e/fixtures) and hold
 * exactly the exchanges sent. Sampling, filters, redaction, the file's mode, Ctrl-C.
 * (The policy refusal is in test/e2e/policy.test.ts, which has the cluster agent.)
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { repoRoot, startAgentProcess, startCli, stopAll, type AgentProcess, type RunningCli } from './tsm.js';
import type { Har, HarEntry } from '../../common/har.js';

const FIX = join(repoRoot, 'test', 'e2e', 'fixtures');
const MARKER = '[redacted by tsmirror]';

let harness: Harness;
let app: Pod;
let client: Pod;
let agent: AgentProcess;
let dir: string;
const validate = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(readFileSync(join(FIX, 'har-1.2.schema.json'), 'utf8')) as object);

beforeAll(async () => {
  harness = await Harness.create({ name: 'record' });
  [app, client] = await Promise.all([
    harness.addPod({ name: 'app', command: ['/usr/bin/node', join(FIX, 'record-app.mjs'), '8080', '50051'], readyPort: 8080 }),
    harness.addPod({ name: 'client', command: ['/usr/bin/sleep', 'infinity'] }),
  ]);
  agent = await startAgentProcess();
  dir = mkdtempSync(join(tmpdir(), 'tsm-record-'));
});

afterAll(() => stopAll({ agent, harness, dirs: [dir] }));

interface Sent { i: number; method: string; path: string; status: number; body: string; kind: string; grpcStatus?: string }
interface ClientRun { sent: Sent[]; raw: string }

async function runClient(n: number, extra: string[] = []): Promise<ClientRun> {
  const r = await harness.exec(client, ['/usr/bin/node', join(FIX, 'record-client.mjs'), app.ip, '8080', '50051', String(n), ...extra], { timeoutMs: 120000 });
  expect(r.stderr, agent.log().slice(-3000)).toBe('');
  return JSON.parse(r.stdout) as ClientRun;
}

let files = 0;
/** Starts `tsmirror record` on the app and waits until it records. */
async function startRecord(flags: string[], ports = ['8080']): Promise<{ cli: RunningCli; file: string }> {
  const file = join(dir, `r${++files}.har`);
  const cli = startCli(['record', '--agent', agent.url, '--target', `pid/${app.pid}`, ...ports.flatMap((p) => ['--port', p]), '-o', file, ...flags]);
  await cli.waitFor(/recording ports? .* Ctrl-C stops/);
  return { cli, file };
}

/** Ctrl-C, as a user stops it; resolves with the exit code. */
async function interrupt(cli: RunningCli): Promise<number | null> {
  const exited = new Promise<number | null>((r) => cli.child.once('exit', (code) => r(code)));
  cli.child.kill('SIGINT');
  const t = setTimeout(() => cli.child.kill('SIGKILL'), 15000);
  const code = await exited;
  clearTimeout(t);
  return code;
}

function readHar(file: string): Har {
  const har = JSON.parse(readFileSync(file, 'utf8')) as Har;
  const ok = validate(har);
  expect(ok ? [] : validate.errors?.slice(0, 5)).toEqual([]);
  return har;
}

const idOf = (e: HarEntry): string => `${e.request.method} ${new URL(e.request.url).pathname}${new URL(e.request.url).search}`;
const header = (fields: Array<{ name: string; value: string }>, name: string): string | undefined => fields.find((h) => h.name.toLowerCase() === name)?.value;

describe('tsmirror record', () => {
  it('records 200 mixed exchanges (keep-alive GETs, JSON POSTs, chunked uploads, an h2c stream with trailers) exactly, as valid HAR 1.2, redacted, 0600; the clients get the app\'s answers', async () => {
    const { cli, file } = await startRecord(['--max-body', '16KiB', '--redact-json-path', '$.password', '--redact-header', 'x-.*-token'], ['8080', '50051']);
    const run = await runClient(199, ['h2', 'raw']);
    expect(run.sent).toHaveLength(200);
    // The clients saw only the app's answers.
    for (const s of run.sent.filter((x) => x.kind !== 'h2')) expect(JSON.parse(s.body)).toMatchObject({ servedBy: 'app' });
    expect(run.sent.find((s) => s.kind === 'h2')).toMatchObject({ body: '/shop.Cart/Add:item=42', grpcStatus: '0' });
    expect(await interrupt(cli)).toBe(0);

    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const har = readHar(file);
    const entries = har.log.entries;
    expect(har.log.creator.name).toBe('tsmirror');
    expect(har.log._tsmirror).toMatchObject({ target: `pid/${app.pid}`, ports: [8080, 50051], sample: 100, redacted: expect.arrayContaining(['authorization', 'cookie', 'set-cookie']) });
    // Exactly the exchanges sent: each once, nothing else.
    expect(entries.map(idOf).sort()).toEqual(run.sent.map((s) => `${s.method} ${s.path}`).sort());
    const byId = new Map(entries.map((e) => [idOf(e), e]));
    for (const s of run.sent) {
      const e = byId.get(`${s.method} ${s.path}`);
      expect(e?.response.status, s.path).toBe(s.status);
      if (s.kind === 'upload') {
        // 20 KiB > --max-body 16 KiB: its size and sha256 only; the answer in full.
        expect(e?.request.postData).toMatchObject({ _sha256: createHash('sha256').update(Buffer.alloc(20 * 1024, `chunk-${s.i}-`)).digest('hex') });
        expect(e?.request.postData?.text).toBeUndefined();
        expect(e?.request.bodySize).toBe(20 * 1024);
        expect(e?.response.content.text).toBe(s.body);
      } else if (s.kind === 'h2') {
        expect(e?.request.httpVersion).toBe('HTTP/2');
        expect(e?.request.postData?.text).toBe('item=42');
        expect(Buffer.from(e?.response.content.text ?? '', e?.response.content.encoding === 'base64' ? 'base64' : 'utf8').toString()).toBe(s.body);
        expect(e?.response._trailers).toEqual([{ name: 'grpc-status', value: '0' }, { name: 'grpc-message', value: 'ok' }]);
        expect(header(e?.request.headers ?? [], 'authorization')).toBe(MARKER);
      } else {
        expect(e?.request.httpVersion).toBe('HTTP/1.1');
        expect(e?.response.content.text).toBe(s.body);
        expect(e?.request.url).toBe(`http://${app.ip}:8080${s.path}`);
      }
      if (s.kind === 'get') {
        expect(header(e?.request.headers ?? [], 'authorization')).toBe(MARKER);
        expect(header(e?.request.headers ?? [], 'cookie')).toBe(MARKER);
        expect(e?.request.queryString).toEqual([{ name: 'i', value: String(s.i) }]);
      }
      if (s.kind === 'post') {
        expect(JSON.parse(e?.request.postData?.text ?? '')).toEqual({ user: `u${s.i}`, password: MARKER, n: s.i });
        expect(header(e?.response.headers ?? [], 'set-cookie')).toBe(MARKER);
        // $.password names the top level only: the answer's echo (got.password) is kept.
        expect(JSON.parse(e?.response.content.text ?? '')).toMatchObject({ got: { user: `u${s.i}`, password: 'hunter' + String(s.i) }, servedBy: 'app' });
      }
    }
    // Keep-alive: at most 4 HTTP/1.1 connections carried the 199 requests, in order on each.
    const h1 = entries.filter((e) => e.request.httpVersion === 'HTTP/1.1');
    expect(new Set(h1.map((e) => e.connection)).size).toBeLessThanOrEqual(4);
    for (const e of entries) {
      expect(e._clientAddress).toMatch(new RegExp(`^${client.ip.replace(/\./g, '\\.')}:\\d+$`));
      expect(e.serverIPAddress).toBe(app.ip);
      expect(e.time).toBeGreaterThanOrEqual(0);
    }
    // The connection that was not HTTP is counted and named in the summary.
    expect(har.log._tsmirror?.skipped).toEqual({ 'not HTTP': 1 });
    expect(cli.err()).toMatch(/200 of 200 exchanges written/);
    expect(cli.err()).toMatch(/skipped \(not recorded\): 1 × not HTTP/);
  });

  it('--sample 10% keeps between 5% and 15% of 1,000 exchanges; every one seen is counted', async () => {
    const { cli, file } = await startRecord(['--sample', '10%']);
    const run = await runClient(1000);
    expect(run.sent).toHaveLength(1000);
    expect(await interrupt(cli)).toBe(0);
    const har = readHar(file);
    expect(har.log.entries.length).toBeGreaterThanOrEqual(50);
    expect(har.log.entries.length).toBeLessThanOrEqual(150);
    expect(har.log._tsmirror).toMatchObject({ sample: 10, seen: 1000, kept: har.log.entries.length });
    const sent = new Set(run.sent.map((s) => `${s.method} ${s.path}`));
    for (const e of har.log.entries) expect(sent.has(idOf(e))).toBe(true);
  });

  it('with a filter only matching exchanges are kept; --no-redact keeps the credentials; --max-requests stops', async () => {
    const { cli, file } = await startRecord(['--http-method', 'GET', '--http-path', '/items/[0-3]', '--no-redact']);
    const run = await runClient(100);
    expect(await interrupt(cli)).toBe(0);
    const har = readHar(file);
    const want = run.sent.filter((s) => s.method === 'GET' && /^\/items\/[0-3]\?/.test(s.path)).map((s) => `${s.method} ${s.path}`).sort();
    expect(want.length).toBeGreaterThan(10);
    expect(har.log.entries.map(idOf).sort()).toEqual(want);
    for (const e of har.log.entries) expect(header(e.request.headers, 'authorization')).toMatch(/^Bearer token-\d+$/);
    expect(har.log._tsmirror).toMatchObject({ redacted: [], seen: 100 });

    const capped = await startRecord(['--max-requests', '25']);
    await runClient(100);
    await capped.cli.waitFor(/stopped \(25 exchanges recorded \(--max-requests\)\)/, 20000);
    await new Promise((r) => capped.cli.child.exitCode !== null ? r(undefined) : capped.cli.child.once('exit', r));
    expect(capped.cli.child.exitCode).toBe(0);
    expect(readHar(capped.file).log.entries).toHaveLength(25);
  });

  it('Ctrl-C in the middle of traffic leaves a valid file of complete exchanges', async () => {
    const { cli, file } = await startRecord([]);
    // About 4 s of traffic (4 connections, 2 ms between requests); Ctrl-C after 1.5 s.
    const load = runClient(2000, ['pace=2']);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await interrupt(cli)).toBe(0);
    const run = await load;
    expect(run.sent).toHaveLength(2000); // the app answered every request, before and after the recording stopped
    const har = readHar(file);
    expect(har.log.entries.length).toBeGreaterThan(0);
    expect(har.log.entries.length).toBeLessThan(2000);
    const answers = new Map(run.sent.map((s) => [`${s.method} ${s.path}`, s.body]));
    // Each entry is a whole exchange: its answer is the one the client got.
    for (const e of har.log.entries) expect(e.response.content.text).toBe(answers.get(idOf(e)));
    expect(existsSync(`${file}.tmp`)).toBe(false);
  });

  it('tsmirror replay of the recording against the app finds no difference (the HAR is what replay reads)', async () => {
    // Written into the client pod's /data, where replay runs (the pods reach each other, not this machine).
    const file = join(client.dataDir, 'roundtrip.har');
    const cli = startCli(['record', '--agent', agent.url, '--target', `pid/${app.pid}`, '--port', '8080', '-o', file]);
    await cli.waitFor(/Ctrl-C stops/);
    const run = await runClient(9); // GETs and JSON POSTs (uploads start at the 10th)
    expect(await interrupt(cli)).toBe(0);
    expect(readHar(file).log.entries).toHaveLength(run.sent.length);
    const replay = await harness.exec(client, ['/usr/bin/node', join(repoRoot, 'bin', 'tsmirror.js'), 'replay', '/data/roundtrip.har', '--to', `http://${app.ip}:8080`], { timeoutMs: 60000 });
    expect(replay.code, replay.stdout + replay.stderr).toBe(0);
    expect(replay.stdout + replay.stderr).toMatch(/9 same/);
  });

  it('refuses bad options before connecting, saying what to write', async () => {
    const bad = startCli(['record', '--agent', agent.url, '--target', `pid/${app.pid}`, '--port', '8080', '-o', join(dir, 'x.har'), '--sample', '150%']);
    await new Promise((r) => bad.child.once('exit', r));
    expect(bad.child.exitCode).toBe(125);
    expect(bad.err()).toContain('--sample "150%" is not a percentage above 0 and at most 100');
    const path = startCli(['record', '--agent', agent.url, '--target', `pid/${app.pid}`, '--port', '8080', '-o', join(dir, 'y.har'), '--redact-json-path', 'password']);
    await new Promise((r) => path.child.once('exit', r));
    expect(path.err()).toContain('--redact-json-path "password": it must start with $');
    expect(existsSync(join(dir, 'y.har'))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});
