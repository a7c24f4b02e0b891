/**
 * A Zig program under the seccomp supervisor (issue 12: "a static Rust/musl or Zig binary").
 * Zig's standard library links no libc and makes every system call itself, and its name
 * lookups are its own (a port of musl's: /etc/hosts, /etc/resolv.conf, then UDP queries
 * sent with sendto to each nameserver, answers taken with recvfrom only from them), so no
 * preload reaches it. test/e2e/fixtures/zig-net.zig is built here from source with the
 * Zig compiler `.ci/setup` installs (Debian 12 packages none); without it this file is
 * skipped. The build cache is kept under the system's temp folder, like the Go tests'.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode } from '../harness/demo-pods.js';
import { cliPath, repoRoot, run, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

/** Where .ci/setup puts the compiler; TSM_ZIG names another. */
const ZIG = [process.env.TSM_ZIG, '/opt/tsmirror-zig-0.12.0-dev.1286/zig'].find((p): p is string => !!p && existsSync(p));
const ENTRIES = 2000;

let harness: Harness;
let db: Pod;
let api: Pod;
let agent: AgentProcess;
let work: string;
let zigBin: string;

beforeAll(async () => {
  if (!ZIG) return;
  work = mkdtempSync(join(tmpdir(), 'tsm-seccomp-zig-'));
  zigBin = join(work, 'zig-net');
  const cache = join(tmpdir(), 'tsmirror-test-zigcache');
  const built = await run(ZIG, ['build-exe', '-O', 'ReleaseSafe', '--cache-dir', cache, '--global-cache-dir', cache, `-femit-bin=${zigBin}`, join(repoRoot, 'test/e2e/fixtures/zig-net.zig')], { cwd: work, timeoutMs: 540_000 });
  if (built.code !== 0) throw new Error(`zig build-exe failed (${built.code}):\n${built.stderr}`);
  const file = await run('file', [zigBin]);
  expect(file.stdout).toMatch(/statically linked/);
  ({ harness, db, api } = await buildDemoNode({ name: 'seccomp-zig' }));
  const many = join(api.dataDir, 'many');
  mkdirSync(many);
  for (let i = 0; i < ENTRIES; i++) writeFileSync(join(many, `f${String(i).padStart(4, '0')}`), '');
  agent = await startAgentProcess();
}, 600_000);

afterAll(async () => {
  await stopAll({ agent, harness });
  if (work) rmSync(work, { recursive: true, force: true });
});

const exec = (command: string[]) => tsmExec(agent.url, `pid/${api.pid}`, command, [], { timeoutMs: 90_000 });

describe.skipIf(!ZIG)('a static Zig program (no libc) under seccomp', () => {
  it('doctor says seccomp for it', async () => {
    const r = await run(process.execPath, [cliPath, 'doctor', '--json', zigBin], { env: { ...process.env, KUBECONFIG: join(work, 'none') } });
    const checks = JSON.parse(r.stdout) as { ok: boolean | 'warn'; what: string }[];
    expect(checks.find((c) => c.what.startsWith(zigBin))?.what).toMatch(/statically linked.*seccomp/);
  });

  it('tcpConnectToHost by the short name (the pod\'s search list and nameserver) and a GET go through the pod', async () => {
    const r = await exec([zigBin, 'get', 'db', '8080', '/']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\n');
    expect(r.code).toBe(0);
  });

  it('without tsmirror the same GET fails: the name is the cluster\'s', async () => {
    const r = await run(zigBin, ['get', 'db', '8080', '/'], { timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
  });

  it("name lookups are the pod's; an unknown name fails", async () => {
    const r = await exec([zigBin, 'lookup', 'db']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${db.ip}\n`);
    const bad = await exec([zigBin, 'lookup', 'nope']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('lookup: UnknownHostName\n');
  });

  it("a pod file's content, a pod directory of 2,000 entries, and the pod's environment", async () => {
    const file = await exec([zigBin, 'read', '/data/index.html']);
    expect(file.stderr).toBe('');
    expect(file.stdout).toBe('hello from api\n');
    const dir = await exec([zigBin, 'ls', '/data/many']);
    expect(dir.stderr).toBe('');
    const lines = dir.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(String(ENTRIES));
    expect(lines.slice(1)).toEqual(Array.from({ length: ENTRIES }, (_, i) => `f${String(i).padStart(4, '0')}`));
    const env = await exec([zigBin, 'env', 'API_MODE']);
    expect(env.stdout).toBe('demo\n');
  });
});
