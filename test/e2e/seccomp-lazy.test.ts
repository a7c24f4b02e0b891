/**
 * Big pod files under the seccomp supervisor are filled as the program reads them (issue
 * 12, "Files": "a memfd with the content, lazily filled for big files, as the shim
 * does"): a 64 MiB pod file read by a static Go program, busybox-static, python and a
 * static C program every way a file's content can be read, with the content compared to
 * the pod's, and the bytes that came from the pod counted to show that what was not
 * read was not fetched.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { repoRoot, run, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

const BUSYBOX = '/bin/busybox';
const PY = '/usr/bin/python3';
const MiB = 1024 * 1024;
/** Well above the 8 MiB from which the proxy answers `lazy`; not a multiple of the 64 KiB block. */
const HUGE = randomBytes(64 * MiB + 12345);
const HUGE_PATH = '/data/huge.bin';

let harness: Harness;
let pod: Pod;
let agent: AgentProcess;
let work: string;
/** test/e2e/fixtures/go-files, CGO_ENABLED=0. */
let goBin = '';
/** test/e2e/fixtures/seccomp-lazy.c, linked statically. */
let probe = '';

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tsm-seccomp-lazy-'));
  goBin = join(work, 'gofiles');
  const env = { ...process.env, GOCACHE: join(work, 'gocache'), GOPATH: join(work, 'gopath'), GOFLAGS: '', GO111MODULE: 'on', GOPROXY: 'off', GOTOOLCHAIN: 'local', CGO_ENABLED: '0' };
  const built = await run('go', ['build', '-o', goBin, '.'], { env, cwd: join(repoRoot, 'test/e2e/fixtures/go-files'), timeoutMs: 300000 });
  if (built.code !== 0) throw new Error(`go build failed (${built.code}):\n${built.stderr}`);
  probe = join(work, 'seccomp-lazy');
  const cc = await run('gcc', ['-static', '-O2', '-Wall', '-o', probe, join(repoRoot, 'test/e2e/fixtures/seccomp-lazy.c')]);
  if (cc.code !== 0) throw new Error(`gcc failed:\n${cc.stderr}`);
  harness = await Harness.create({ name: 'sclazy' });
  pod = await harness.addPod({ name: 'sclazy', namespace: 'default', command: ['/usr/bin/sleep', 'infinity'], files: { [HUGE_PATH]: HUGE } });
  agent = await startAgentProcess();
}, 600000);

afterAll(async () => {
  await stopAll({ agent, harness });
  if (work) rmSync(work, { recursive: true, force: true });
});

const exec = (command: string[], flags: string[] = []) =>
  tsmExec(agent.url, `pid/${pod.pid}`, command, ['--intercept', 'seccomp', '--verbose', ...flags], { timeoutMs: 120000 });

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** FNV-1a 32, as the C probe prints it. */
function fnv(b: Uint8Array): string {
  let h = 2166136261;
  for (const byte of b) h = Math.imul(h ^ byte, 16777619) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/** The content bytes the session proxy received from the pod, from the --verbose summary. */
function bytesIn(stderr: string): number {
  const m = /files read from the pod, (\d+) bytes in/.exec(stderr);
  if (!m?.[1]) throw new Error(`no file summary in:\n${stderr}`);
  return Number(m[1]);
}

describe('seccomp: big pod files filled lazily', () => {
  it('reading only the first 4 KiB of a 64 MiB pod file fetches a small part of it (Go)', async () => {
    const r = await exec([goBin, 'head', HUGE_PATH, '4096']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`4096 ${sha256(HUGE.subarray(0, 4096))}\n`);
    // Read whole at open, this would be all 64 MiB.
    expect(bytesIn(r.stderr)).toBeGreaterThanOrEqual(4096);
    expect(bytesIn(r.stderr)).toBeLessThan(2 * MiB);
  });

  it('static Go: io.Copy into sha256 reads all 64 MiB right', async () => {
    const r = await exec([goBin, 'copysum', HUGE_PATH]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${sha256(HUGE)}\n`);
  });

  it('static Go: ReadAt (pread64) at scattered offsets reads the right bytes and fetches little', async () => {
    const offsets = [0, 8 * MiB - 1, 13 * MiB + 4095, 33 * MiB + 17, 47 * MiB, HUGE.length - 4096, HUGE.length - 100];
    const want = createHash('sha256');
    for (const o of offsets) want.update(HUGE.subarray(o, Math.min(o + 4096, HUGE.length)));
    const r = await exec([goBin, 'readat', HUGE_PATH, offsets.join(',')]);
    expect(r.stderr).not.toMatch(/error|EIO/i);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${want.digest('hex')}\n`);
    // Seven scattered 4 KiB reads: a block or two each, not the file.
    expect(bytesIn(r.stderr)).toBeLessThan(4 * MiB);
  });

  it('busybox-static: md5sum, and cat through a pipe, read all 64 MiB right', async () => {
    const sum = await exec([BUSYBOX, 'md5sum', HUGE_PATH]);
    expect(sum.code).toBe(0);
    expect(sum.stdout).toBe(`${md5(HUGE)}  ${HUGE_PATH}\n`);
    const piped = await exec([BUSYBOX, 'sh', '-c', `${BUSYBOX} cat ${HUGE_PATH} | ${BUSYBOX} md5sum`]);
    expect(piped.code).toBe(0);
    expect(piped.stdout).toBe(`${md5(HUGE)}  -\n`);
  });

  it('mmap: a Go syscall.Mmap of the whole file and python3 mmap read the right bytes', async () => {
    const go = await exec([goBin, 'mmapsum', HUGE_PATH]);
    expect(go.code).toBe(0);
    expect(go.stdout).toBe(`${sha256(HUGE)}\n`);
    const script = `import mmap, hashlib
with open('${HUGE_PATH}', 'rb') as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    print(hashlib.sha256(m).hexdigest(), hashlib.sha256(m[40 << 20:(40 << 20) + 4096]).hexdigest())`;
    const py = await exec([PY, '-c', script]);
    expect(py.stderr).not.toContain('Traceback');
    expect(py.stdout).toBe(`${sha256(HUGE)} ${sha256(HUGE.subarray(40 * MiB, 40 * MiB + 4096))}\n`);
  });

  it('readv, preadv, preadv2 at the current position, an mmap slice and a forked child on the inherited descriptor read the right bytes, fetching only those parts', async () => {
    const slice = (from: number, len: number) => fnv(HUGE.subarray(from, from + len));
    const r = await exec([probe, HUGE_PATH, 'parts']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe([
      `readv 5M+3: ${slice(5 * MiB + 3, 100 + 70000 + 5000)}`,
      `preadv 30M-7: ${slice(30 * MiB - 7, 2 * 65536)}`,
      `preadv2 at 50M+11: ${slice(50 * MiB + 11, 2 * 65536)}`,
      `mmap 1M at 40M: ${slice(40 * MiB, MiB)}`,
      `child read 256K at 60M: ${slice(60 * MiB, 256 * 1024)}`,
      '',
    ].join('\n'));
    expect(bytesIn(r.stderr)).toBeLessThan(12 * MiB);
  });

  it('200 big pod files opened one after another do not pile up open files in the session proxy (released at the last close)', async () => {
    // The shell's parent is the supervisor, whose parent is the CLI: count the CLI's descriptors.
    const script = [
      `for i in $(${BUSYBOX} seq 200); do ${BUSYBOX} head -c 1 ${HUGE_PATH} >/dev/null; done`,
      `cli=$(${BUSYBOX} awk '/PPid/{print $2}' /proc/$PPID/status)`,
      `${BUSYBOX} ls /proc/$cli/fd | ${BUSYBOX} wc -l`,
    ].join('; ');
    const r = await exec([BUSYBOX, 'sh', '-c', script]);
    expect(r.code).toBe(0);
    expect(Number(r.stdout.trim())).toBeLessThan(100);
    expect(r.stderr).toContain('200 files read from the pod');
  });

  it('a dup, sendfile and copy_file_range get the whole file (their reads are not seen)', async () => {
    const r = await exec([probe, HUGE_PATH, 'copies']);
    expect(r.stderr).not.toContain('Input/output error');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe([
      `dup then pread 64K at 20M: ${fnv(HUGE.subarray(20 * MiB, 20 * MiB + 65536))}`,
      `sendfile whole: ${fnv(HUGE)}`,
      `copy_file_range whole: ${fnv(HUGE)}`,
      '',
    ].join('\n'));
  });
});
