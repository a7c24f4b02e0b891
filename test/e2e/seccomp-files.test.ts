/**
 * The pod's files for programs no preload reaches (issue 12, "Files"), end to end on the
 * local node harness: a Go program built from source here (the default cgo build and a
 * CGO_ENABLED=0 one) and busybox-static run under `--intercept seccomp`, and read, list,
 * stat and write the pod's files through the supervisor, the session proxy and the agent.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, chmodSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { repoRoot, run, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

const BUSYBOX = '/bin/busybox';
const CONFIG = JSON.stringify({ db: 'postgres://db:5432/shop', replicas: 3 });
const SECRET = `node-only secret ${randomBytes(8).toString('hex')}`;
const SECRET_PATH = `/tmp/tsm-seccomp-secret-${randomBytes(4).toString('hex')}`;
/** A time no file on this machine has: the pod's mtime, not the memfd's. */
const MTIME = 1000000000;
const POD_ONLY_HOST = 'only-in-the-pods-hosts';
const POD_ONLY_ADDR = '10.99.0.7';
/** Above the 8 MiB from which pod files are filled lazily (seccomp-lazy.test.ts has more). */
const BIG = randomBytes(24 * 1024 * 1024);

let harness: Harness;
let pod: Pod;
let agent: AgentProcess;
let work: string;
/** The Go probe (test/e2e/fixtures/go-files), built twice. */
const go: Record<'cgo' | 'static', string> = { cgo: '', static: '' };
/** test/e2e/fixtures/seccomp-files-edge.c, linked statically. */
let edge = '';
/** test/e2e/fixtures/seccomp-wakeups.c, linked statically. */
let wakeups = '';

async function buildGo(out: string, cgo: boolean): Promise<void> {
  const env = {
    ...process.env,
    GOCACHE: join(work, 'gocache'),
    GOPATH: join(work, 'gopath'),
    GOFLAGS: '',
    GO111MODULE: 'on',
    GOPROXY: 'off', // no network: the probe has no dependencies
    GOTOOLCHAIN: 'local',
    CGO_ENABLED: cgo ? '1' : '0',
  };
  const r = await run('go', ['build', '-o', out, '.'], { env, cwd: join(repoRoot, 'test/e2e/fixtures/go-files'), timeoutMs: 300000 });
  if (r.code !== 0) throw new Error(`go build failed (${r.code}):\n${r.stderr}`);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tsm-seccomp-files-'));
  go.cgo = join(work, 'gofiles-cgo');
  go.static = join(work, 'gofiles-static');
  await buildGo(go.cgo, true);
  await buildGo(go.static, false);
  edge = join(work, 'seccomp-files-edge');
  const cc = await run('gcc', ['-static', '-O2', '-Wall', '-o', edge, join(repoRoot, 'test/e2e/fixtures/seccomp-files-edge.c')]);
  if (cc.code !== 0) throw new Error(`gcc failed:\n${cc.stderr}`);
  wakeups = join(work, 'seccomp-wakeups');
  const cc2 = await run('gcc', ['-static', '-O2', '-Wall', '-o', wakeups, join(repoRoot, 'test/e2e/fixtures/seccomp-wakeups.c')]);
  if (cc2.code !== 0) throw new Error(`gcc failed:\n${cc2.stderr}`);
  const file = await run('file', [go.cgo, go.static]);
  expect(file.stdout).toMatch(/gofiles-cgo: .*dynamically linked/);
  expect(file.stdout).toMatch(/gofiles-static: .*statically linked/);

  harness = await Harness.create({ name: 'scfiles' });
  const many: Record<string, string> = {};
  for (let i = 0; i < 2000; i++) many[`/data/many/f${String(i).padStart(4, '0')}.txt`] = `${i}\n`;
  pod = await harness.addPod({
    name: 'scfiles',
    namespace: 'default',
    command: ['/usr/bin/sleep', 'infinity'],
    files: { '/data/big.bin': BIG, '/data/config.json': CONFIG, '/data/rw.txt': 'original\n', '/data/sub/inner.txt': 'inner\n', ...many },
  });
  chmodSync(join(pod.dataDir, 'config.json'), 0o640);
  utimesSync(join(pod.dataDir, 'config.json'), MTIME, MTIME);
  // A name only the pod's /etc/hosts has (the pod's /etc is its own overlay).
  const hosts = await harness.exec(pod, ['sh', '-c', `echo '${POD_ONLY_ADDR} ${POD_ONLY_HOST}' >> /etc/hosts`]);
  expect(hosts.code).toBe(0);
  // A file only the node has, and pod symlinks aiming at it.
  writeFileSync(SECRET_PATH, SECRET);
  symlinkSync(SECRET_PATH, join(pod.dataDir, 'escape-abs'));
  symlinkSync(`../../../../../../..${SECRET_PATH}`, join(pod.dataDir, 'escape-rel'));
  agent = await startAgentProcess();
}, 600000);

afterAll(async () => {
  await stopAll({ agent, harness });
  rmSync(SECRET_PATH, { force: true });
  if (work) rmSync(work, { recursive: true, force: true });
});

const exec = (command: string[], flags: string[] = []) =>
  tsmExec(agent.url, `pid/${pod.pid}`, command, ['--intercept', 'seccomp', ...flags], { timeoutMs: 60000 });

const podSha = (name: string) => createHash('sha256').update(readFileSync(join(pod.dataDir, name))).digest('hex');

describe.each([
  ['a default (cgo) Go build', 'cgo'],
  ['a CGO_ENABLED=0 Go build', 'static'],
] as const)('seccomp files: %s', (_label, build) => {
  const bin = () => go[build];

  it('reads a pod file (os.ReadFile), which does not exist on this machine', async () => {
    expect(existsSync('/data/config.json')).toBe(false);
    const r = await exec([bin(), 'cat', '/data/config.json']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(CONFIG);
    const sub = await exec([bin(), 'cat', '/data/sub/inner.txt']);
    expect(sub.stdout).toBe('inner\n');
  });

  it('lists a pod directory of 2,000 entries (os.ReadDir, filepath.WalkDir with Info)', async () => {
    const r = await exec([bin(), 'readdir', '/data/many']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('2000 entries, 0 dirs, first f0000.txt, last f1999.txt\n');
    const top = await exec([bin(), 'readdir', '/data']);
    expect(top.stdout).toBe('7 entries, 2 dirs, first big.bin, last sub\n');
    // WalkDir lstat()s every entry: 2000 files of "N\n" plus the others.
    const walk = await exec([bin(), 'walk', '/data/many']);
    expect(walk.stderr).toBe('');
    let bytes = 0;
    for (let i = 0; i < 2000; i++) bytes += `${i}\n`.length;
    expect(walk.stdout).toBe(`2000 files, ${bytes} bytes\n`);
    // 64 goroutines opening at once: many threads, many notifications in flight.
    const parallel = await exec([bin(), 'readall', '/data/many']);
    expect(parallel.stderr).toBe('');
    expect(parallel.stdout).toBe(`2000 files, ${bytes} bytes\n`);
  });

  it("os.Stat, os.Lstat and File.Stat report the pod's size, mode and time", async () => {
    const want = `size ${CONFIG.length} mode ---------- perm 640`;
    const stat = await exec([bin(), 'stat', '/data/config.json']);
    expect(stat.stderr).toBe('');
    expect(stat.stdout).toBe(`${want} uid 0 mtime ${MTIME}\n`);
    const fstat = await exec([bin(), 'fstat', '/data/config.json']);
    expect(fstat.stdout).toBe(`${want} mtime ${MTIME}\n`);
    const dir = await exec([bin(), 'stat', '/data/many']);
    expect(dir.stdout).toMatch(/^size \d+ mode d--------- perm 755 /);
    const link = await exec([bin(), 'lstat', '/data/escape-abs']);
    expect(link.stdout).toMatch(/^size \d+ mode L--------- /);
    expect((await exec([bin(), 'readlink', '/data/escape-abs'])).stdout).toBe(`${SECRET_PATH}\n`);
    expect((await exec([bin(), 'access', '/data/config.json'])).stdout).toBe('readable\n');
    const missing = await exec([bin(), 'stat', '/data/missing']);
    expect(missing.stderr).toContain('no such file or directory');
  });

  it("a symlink escape in the pod does not reach this machine's files", async () => {
    expect(readFileSync(join(pod.rootPath, 'data', 'escape-abs'), 'utf8')).toBe(SECRET); // control
    for (const path of ['/data/escape-abs', '/data/escape-rel']) {
      const r = await exec([bin(), 'cat', path]);
      expect(r.stdout).not.toContain(SECRET);
      expect(r.stderr).toContain('no such file or directory');
      expect(r.code).toBe(100 + 2); // ENOENT
    }
  });

  it('read mode: a write goes to the private copy; the pod file is unchanged', async () => {
    const before = podSha('rw.txt');
    const r = await exec([bin(), 'append', '/data/rw.txt', 'mine\n']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('original\nmine\n');
    expect(podSha('rw.txt')).toBe(before);
    const rm = await exec([bin(), 'remove', '/data/rw.txt']);
    expect(rm.stderr).toContain('read-only file system');
    const created = await exec([bin(), 'create', '/data/new-in-read-mode.txt', 'x']);
    expect(created.stdout).toBe('written\n');
    expect(existsSync(join(pod.dataDir, 'new-in-read-mode.txt'))).toBe(false);
    expect(existsSync(join(pod.dataDir, 'rw.txt'))).toBe(true);
  });

  it("Go's resolver reads the pod's /etc/resolv.conf and /etc/hosts", async () => {
    const conf = await exec([bin(), 'cat', '/etc/resolv.conf']);
    expect(conf.stdout).toBe(readFileSync(join(pod.rootPath, 'etc', 'resolv.conf'), 'utf8'));
    expect(conf.stdout).toContain('search default.svc.');
    const r = await exec([bin(), 'lookup', POD_ONLY_HOST]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${POD_ONLY_ADDR}\n`);
    // The pod's search list and nameserver: "scfiles.default" is only a name there.
    const short = await exec([bin(), 'lookup', 'scfiles.default']);
    expect(short.stderr).toBe('');
    expect(short.stdout).toBe(`${pod.ip}\n`);
  });

  it('files in the working directory and /usr stay local (no file request reaches the agent)', async () => {
    const r = await exec([bin(), 'cat', 'package.json'], ['--verbose']);
    expect(r.stdout).toBe(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
    expect(r.stderr).toContain('0 files read from the pod, 0 bytes in, 0 bytes out, 0 file requests to the agent');
    const usr = await exec([bin(), 'readdir', '/usr/share/common-licenses']);
    expect(usr.stdout).toMatch(/^\d+ entries/);
  });
});

describe('seccomp files: busybox-static', () => {
  it('cat reads a pod file; sh redirections hand pod files to children', async () => {
    const r = await exec([BUSYBOX, 'cat', '/data/config.json']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(CONFIG);
    // The descriptor the shell opened is inherited across exec and still the pod's file.
    const sh = await exec([BUSYBOX, 'sh', '-c', `${BUSYBOX} wc -c < /data/config.json; exec 3</data/sub/inner.txt; ${BUSYBOX} cat <&3`]);
    expect(sh.stderr).toBe('');
    expect(sh.stdout).toBe(`${CONFIG.length}\ninner\n`);
  });

  it('sha256sum of a 24 MiB pod file is right, and mmap of it too (Go)', async () => {
    const want = createHash('sha256').update(BIG).digest('hex');
    const r = await exec([BUSYBOX, 'sha256sum', '/data/big.bin']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${want}  /data/big.bin\n`);
    const mapped = await exec([go.static, 'mmapsum', '/data/big.bin']);
    expect(mapped.stderr).toBe('');
    expect(mapped.stdout).toBe(`${want}\n`);
  });

  it('ls and ls -l list a pod directory of 2,000 entries', async () => {
    const ls = await exec([BUSYBOX, 'ls', '/data/many']);
    expect(ls.stderr).toBe('');
    const names = ls.stdout.trim().split('\n');
    expect(names).toHaveLength(2000);
    expect(names[0]).toBe('f0000.txt');
    expect(names[1999]).toBe('f1999.txt');
    const lsl = await exec([BUSYBOX, 'ls', '-l', '/data/many']);
    expect(lsl.stderr).toBe('');
    const lines = lsl.stdout.trim().split('\n').filter((l) => l.startsWith('-'));
    expect(lines).toHaveLength(2000);
    expect(lines[42]).toMatch(/^-rw-r--r-- .* 3 .* f0042\.txt$/);
    const lsa = await exec([BUSYBOX, 'ls', '-la', '/data']);
    expect(lsa.stdout).toMatch(/^d.* \.\n/m);
    expect(lsa.stdout).toMatch(/^d.* many\n/m);
    expect(lsa.stdout).toMatch(/^-rw-r----- .* config\.json\n/m);
  });

  it("nslookup asks the nameserver of the pod's /etc/resolv.conf", async () => {
    const nameserver = /nameserver (\S+)/.exec(readFileSync(join(pod.rootPath, 'etc', 'resolv.conf'), 'utf8'))?.[1];
    const r = await exec([BUSYBOX, 'nslookup', pod.fqdn]);
    expect(r.stdout).toContain(`Server:\t\t${nameserver}\n`);
    expect(r.stdout).toContain(`Address: ${pod.ip}\n`);
  });

  it("stat reports the pod's size, mode and time", async () => {
    const r = await exec([BUSYBOX, 'stat', '-c', '%s %a %Y %F', '/data/config.json']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${CONFIG.length} 640 ${MTIME} regular file\n`);
  });

  it('cat of a pod directory fails as it does in the pod (EISDIR), not with listing bytes', async () => {
    const inPod = await harness.exec(pod, [BUSYBOX, 'cat', '/data/sub']);
    expect(inPod.stderr).toMatch(/Is a directory/);
    const r = await exec([BUSYBOX, 'cat', '/data/sub']);
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: inPod.code, stdout: '', stderr: inPod.stderr });
    // A read of a directory opened with O_DIRECTORY by python's os module: the same errno.
    const py = `import os\nfd = os.open('/data/sub', os.O_RDONLY | os.O_DIRECTORY)\ntry:\n  os.read(fd, 100)\nexcept OSError as e:\n  print(e.errno)\nprint(sorted(os.listdir(fd)))`;
    const inPodPy = await harness.exec(pod, ['/usr/bin/python3', '-c', py]);
    const viaSeccomp = await exec(['/usr/bin/python3', '-c', py]);
    expect(viaSeccomp.stderr).toBe('');
    expect(viaSeccomp.stdout).toBe(inPodPy.stdout);
    expect(inPodPy.stdout).toBe("21\n['inner.txt']\n");
  });

  it("a symlink escape does not reach this machine's files", async () => {
    for (const path of ['/data/escape-abs', '/data/escape-rel']) {
      const r = await exec([BUSYBOX, 'cat', path]);
      expect(r.stdout).not.toContain(SECRET);
      expect(r.stderr).toContain('No such file or directory');
    }
  });

  it('read mode: an append changes only the private copy', async () => {
    const before = podSha('rw.txt');
    const r = await exec([BUSYBOX, 'sh', '-c', 'echo mine >> /data/rw.txt && cat /data/rw.txt && rm /data/rw.txt']);
    expect(r.stdout).toBe('original\n');
    expect(r.stderr).toContain('Read-only file system');
    expect(podSha('rw.txt')).toBe(before);
  });
});

describe('seccomp files: what the program hands the supervisor', () => {
  it('bad pointers, overlong paths, small buffers, rewinds, dups and forks get what the kernel would give', async () => {
    const r = await exec([edge, '/data/many', '/data/config.json']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe([
      'open bad pointer: EFAULT',
      'open overlong path: ENAMETOOLONG',
      'stat bad buffer: EFAULT',
      `readlink into 4 bytes: 4 ${SECRET_PATH.slice(0, 4)}`,
      'open dir: ok',
      'getdents64 tiny buffer: EINVAL',
      'getdents64 bad buffer: EFAULT',
      'entries (512-byte reads): 2002',
      'entries after rewind, on a dup: 2002',
      'fstat dir: directory',
      'openat relative to the pod dir: ok 7',
      `child fstat of inherited fd: mode 640 size ${CONFIG.length}`,
      `statx of fd: ok mode 640 size ${CONFIG.length}`,
      '',
    ].join('\n'));
  });
});

describe('seccomp files: what a notified call costs the supervisor', () => {
  // Counts, not times (the machine's load moves those): how often the supervisor's threads
  // went to sleep per call. Every thread waiting in NOTIF_RECV is woken for each
  // notification (Linux 6.6+), so with several idle workers there each call cost two or
  // three sleeps where one is needed (notify.c: one receiver at a time).
  it('a notified call wakes one worker: at most one sleep per local open, three per pod-file open', async () => {
    const r = await exec([wakeups, '/etc/passwd', '/data/config.json', '500']);
    expect(r.stderr).toBe('');
    const counts = JSON.parse(r.stdout) as { local_sleeps_per_call: number; pod_sleeps_per_open: number; threads: number };
    // A local open: the receiver's own wait for the next call. A pod-file open: that, the
    // wait for the proxy's answer, and ADDFD's wait for the program's thread to take the fd.
    expect(counts.local_sleeps_per_call).toBeLessThan(1.5);
    expect(counts.pod_sleeps_per_open).toBeLessThan(3.5);
  });
});

describe('seccomp files: write mode', () => {
  it('creates, appends, renames, truncates, makes and removes in the pod (Go)', async () => {
    const bin = go.static;
    const w = (args: string[]) => exec([bin, ...args], ['--fs-mode', 'write']);
    expect((await w(['create', '/data/go-out.txt', 'from go\n'])).stdout).toBe('written\n');
    expect(readFileSync(join(pod.dataDir, 'go-out.txt'), 'utf8')).toBe('from go\n');
    expect((await w(['append', '/data/go-out.txt', 'more\n'])).stdout).toBe('from go\nmore\n');
    expect(readFileSync(join(pod.dataDir, 'go-out.txt'), 'utf8')).toBe('from go\nmore\n');
    expect((await w(['mkdir', '/data/go-dir'])).stdout).toBe('made\n');
    expect((await w(['rename', '/data/go-out.txt', '/data/go-dir/moved.txt'])).stdout).toBe('renamed\n');
    expect(readFileSync(join(pod.dataDir, 'go-dir', 'moved.txt'), 'utf8')).toBe('from go\nmore\n');
    expect((await w(['truncate', '/data/go-dir/moved.txt'])).stdout).toBe('truncated\n');
    expect(readFileSync(join(pod.dataDir, 'go-dir', 'moved.txt'), 'utf8')).toBe('fro');
    const across = await w(['rename', '/data/go-dir/moved.txt', join(work, 'here.txt')]);
    expect(across.stderr).toContain('invalid cross-device link');
    expect((await w(['remove', '/data/go-dir/moved.txt'])).stdout).toBe('removed\n');
    expect((await w(['remove', '/data/go-dir'])).stdout).toBe('removed\n');
    expect(existsSync(join(pod.dataDir, 'go-dir'))).toBe(false);
  });

  it('busybox sh writes a pod file through a redirection', async () => {
    const r = await exec([BUSYBOX, 'sh', '-c', 'echo one > /data/bb.txt && echo two >> /data/bb.txt && cat /data/bb.txt'], ['--fs-mode', 'write']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('one\ntwo\n');
    expect(readFileSync(join(pod.dataDir, 'bb.txt'), 'utf8')).toBe('one\ntwo\n');
  });

  it('a program killed with a pod file still open keeps what it wrote', async () => {
    const r = await exec([BUSYBOX, 'sh', '-c', 'exec 3>/data/killed.txt; echo kept >&3; kill -9 $$'], ['--fs-mode', 'write']);
    expect(r.code).toBe(128 + 9);
    expect(readFileSync(join(pod.dataDir, 'killed.txt'), 'utf8')).toBe('kept\n');
  });

  it('300 files written one after another do not pile up open files in the session proxy', async () => {
    // The shell's parent is the supervisor, whose parent is the CLI: count the CLI's descriptors.
    const script = [
      'for i in $(busybox seq 300); do echo $i > /data/w/$i; done',
      'cli=$(busybox awk \'/PPid/{print $2}\' /proc/$PPID/status)',
      'busybox ls /proc/$cli/fd | busybox wc -l',
    ].join('; ');
    const made = await harness.exec(pod, ['mkdir', '-p', '/data/w']);
    expect(made.code).toBe(0);
    const r = await exec([BUSYBOX, 'sh', '-c', script], ['--fs-mode', 'write']);
    expect(r.stderr).toBe('');
    expect(Number(r.stdout.trim())).toBeLessThan(100);
    expect(readFileSync(join(pod.dataDir, 'w', '300'), 'utf8')).toBe('300\n');
  });
});
