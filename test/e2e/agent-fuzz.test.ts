/**
 * Fuzzing the agent's session handler: random and mutated valid transcripts, each in a
 * session of its own, against a real agent process. Whatever a client sends, the agent
 * process survives and a concurrent well-behaved session keeps answering within 1 s.
 *
 * The target is a process in a network namespace and a root of its own (unshare + chroot,
 * a static busybox), so nothing a transcript asks for reaches this machine's network or
 * files: connects, DNS and redirect rules stay inside that namespace, paths inside that root.
 *
 * TSM_FUZZ_CASES sets the number of frames (default 4000; `npm run fuzz:agent` runs more).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connectAgent, type AgentConnection } from '../../cli/agent-client.js';
import { readAgentKey } from '../../common/local-agent-key.js';
import { encode, packPlain } from '../../protocol/codec.js';
import { AGENT_STREAM_BASE, PROTOCOL_VERSION, type ClientMessage } from '../../protocol/messages.js';
import { startAgentProcess, type AgentProcess } from './tsm.js';

const BUSYBOX = '/bin/busybox';
const CASES = Number(process.env.TSM_FUZZ_CASES ?? 4000);
const FRAMES_PER_SESSION = 40;
const work = mkdtempSync(join(tmpdir(), 'tsm-fuzz-'));
let agent: AgentProcess;
let sandbox: ChildProcess;
let pid = 0;
let bystander: AgentConnection;

/** A small deterministic PRNG, so a failing seed can be replayed (TSM_FUZZ_SEED). */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 0x100000000;
  };
}

beforeAll(async () => {
  const root = join(work, 'root');
  for (const d of ['bin', 'etc', 'data']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'bin', 'busybox'));
  writeFileSync(join(root, 'etc', 'resolv.conf'), 'nameserver 127.0.0.1\nsearch fuzz.svc.cluster.local\noptions timeout:1 attempts:1\n');
  writeFileSync(join(root, 'etc', 'hosts'), '127.0.0.1 localhost\n10.9.9.9 db\n');
  writeFileSync(join(root, 'data', 'file'), 'pod data\n');
  sandbox = spawn('unshare', ['--net', '--fork', '--kill-child', '/usr/sbin/chroot', root, '/bin/busybox', 'sleep', '600'], { stdio: 'ignore' });
  const started = Date.now();
  while (pid === 0 && Date.now() - started < 5000) {
    const children = existsSync(`/proc/${sandbox.pid}/task/${sandbox.pid}/children`) ? readFileSync(`/proc/${sandbox.pid}/task/${sandbox.pid}/children`, 'utf8').trim() : '';
    pid = Number(children.split(' ')[0] ?? 0);
    if (pid === 0) await new Promise((r) => setTimeout(r, 20));
  }
  agent = await startAgentProcess();
  bystander = await connectAgent({ url: agent.url, target: { kind: 'pid', pid } });
});

afterAll(async () => {
  bystander?.close();
  sandbox?.kill('SIGKILL');
  await agent?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** Valid requests of every kind, as a client would send them. */
function templates(id: number, stream: number): ClientMessage[] {
  return [
    { type: 'tcp.connect', id, stream, host: '127.0.0.1', port: 1 + (id % 1000), family: 4, timeoutMs: 200 },
    { type: 'tcp.connect', id, stream, host: '10.9.9.9', port: 80, family: 4, timeoutMs: 100, holdMs: 10 },
    { type: 'udp.open', id, stream, host: '127.0.0.1', port: 53, family: 4 },
    { type: 'dns.lookup', id, name: 'db', family: 0 },
    { type: 'dns.reverse', id, address: '127.0.0.1' },
    { type: 'dns.config', id },
    // db A IN, as res_mkquery builds it
    { type: 'dns.query', id, packet: Uint8Array.from([id & 0xff, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0x64, 0x62, 0, 0, 1, 0, 1]) },
    { type: 'env.get', id },
    { type: 'fs.open', id, path: '/data/file', flags: 0, mode: 0, inlineMax: 65536 },
    { type: 'fs.open', id, path: '/data/../../../etc/passwd', flags: 0, mode: 0, inlineMax: 0 },
    { type: 'fs.read', id, handle: 1, offset: 0, length: 4096 },
    { type: 'fs.write', id, handle: 1, offset: 0, data: new Uint8Array(8) },
    { type: 'fs.truncate', id, handle: 0, path: '/data/file', size: 0 },
    { type: 'fs.close', id, handle: 1 },
    { type: 'fs.stat', id, path: '/data', follow: true },
    { type: 'fs.readdir', id, path: '/', offset: 0 },
    { type: 'fs.readlink', id, path: '/bin/busybox' },
    { type: 'fs.change', id, op: 'mkdir', path: '/data/d', mode: 0o755, to: '' },
    { type: 'port.subscribe', id, port: 8080, mode: 'steal', filter: { headers: [{ name: 'x-dev', value: 'fuzz' }] } },
    { type: 'port.subscribe', id, port: 8081, mode: 'mirror' },
    { type: 'port.unsubscribe', id, port: 8080 },
    { type: 'data', stream, data: new Uint8Array(64) },
    { type: 'window', stream, bytes: 1024 },
    { type: 'end', stream },
    { type: 'close', stream, errno: 104 },
    { type: 'dgram', stream, data: new Uint8Array(16) },
    { type: 'ping', t: 1 },
    { type: 'pong', t: 1 },
  ];
}

const ODD_VALUES: unknown[] = [-1, 0, 1, 2 ** 31, 2 ** 32, 2 ** 53, 1.5, Number.NaN, '', 'x'.repeat(70000), '\u0000', [], {}, null, true, new Uint8Array(0)];

function mutate(m: Record<string, unknown>, rnd: () => number): Record<string, unknown> {
  const out: Record<string, unknown> = { ...m };
  const keys = Object.keys(out);
  const times = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < times; i++) {
    const key = keys[Math.floor(rnd() * keys.length)] ?? 'type';
    const choice = rnd();
    if (choice < 0.5) out[key] = ODD_VALUES[Math.floor(rnd() * ODD_VALUES.length)];
    else if (choice < 0.65) delete out[key];
    else if (choice < 0.8) out[`extra${i}`] = ODD_VALUES[Math.floor(rnd() * ODD_VALUES.length)];
    else if (typeof out[key] === 'number') out[key] = Math.floor(rnd() * 2 ** 32) * (rnd() < 0.1 ? -1 : 1);
    else out.type = ['hello', 'result', 'session.error', 'incoming.open', 'tcp.connected', 'nope'][Math.floor(rnd() * 6)];
  }
  return out;
}

/** One frame: a valid request, a mutated one, or bytes that are not a message at all. */
function frame(rnd: () => number, n: number): Buffer {
  const ids = [n, n, 1, 0, 2 ** 31];
  const streams = [n + 1, 1, 1, AGENT_STREAM_BASE, AGENT_STREAM_BASE + 1, 0];
  const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)] as T;
  const base = pick(templates(pick(ids), pick(streams))) as unknown as Record<string, unknown>;
  const r = rnd();
  if (r < 0.45) return encode(base as unknown as ClientMessage);
  if (r < 0.9) return packPlain(mutate(base, rnd));
  const bytes = Buffer.alloc(Math.floor(rnd() * 64));
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(rnd() * 256);
  return bytes;
}

async function transcript(rnd: () => number, count: number): Promise<void> {
  const ws = new WebSocket(agent.url);
  ws.on('error', () => undefined);
  const closed = new Promise<void>((r) => ws.once('close', () => r()));
  await new Promise<void>((r) => { ws.once('open', () => r()); ws.once('close', () => r()); });
  if (ws.readyState !== WebSocket.OPEN) return;
  ws.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, capabilities: ['tcp', 'udp', 'dns', 'env', 'files', 'incoming'], target: { kind: 'pid', pid }, client: { version: 'fuzz', user: 'fuzz', host: 'fuzz' }, key: readAgentKey(agent.url) ?? '' }));
  await new Promise((r) => setTimeout(r, 5));
  for (let i = 0; i < count && ws.readyState === WebSocket.OPEN; i++) ws.send(frame(rnd, i + 1));
  await Promise.race([closed, new Promise((r) => setTimeout(r, 50))]);
  ws.terminate();
  await closed;
}

describe.skipIf(!existsSync(BUSYBOX))('agent session fuzzing', () => {
  it(`survives ${CASES} random and mutated frames; a concurrent session keeps answering within 1 s`, async () => {
    const seed = Number(process.env.TSM_FUZZ_SEED ?? 0x7531);
    const rnd = prng(seed);
    for (let sent = 0; sent < CASES; sent += FRAMES_PER_SESSION) {
      await transcript(rnd, Math.min(FRAMES_PER_SESSION, CASES - sent));
      if ((sent / FRAMES_PER_SESSION) % 10 === 0) {
        const t = Date.now();
        const env = await bystander.request({ type: 'env.get' });
        expect(typeof env.env, `seed ${seed}, after ${sent} frames`).toBe('object');
        expect(Date.now() - t, `seed ${seed}, after ${sent} frames`).toBeLessThan(1000);
      }
      expect(agent.child.exitCode, `agent died (seed ${seed}, after ${sent} frames):\n${agent.log().slice(-2000)}`).toBeNull();
    }
    const t = Date.now();
    await bystander.request({ type: 'dns.lookup', name: 'db', family: 0 });
    expect(Date.now() - t).toBeLessThan(1000);
    expect(agent.log()).not.toMatch(/Uncaught|TypeError|RangeError|at .*\(node:/);
  }, 300_000);
});
