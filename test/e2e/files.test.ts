/**
 * Pod files end to end, on the local node harness, with real programs (cat, ls, stat,
 * sha256sum, python, node): the program runs on this machine and reads the pod's files
 * through the agent, confined to the pod's root.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { connectAgent } from '../../cli/agent-client.js';
import { RemoteError } from '../../protocol/errors.js';
import { run, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

const PY = '/usr/bin/python3';
const TOKEN_PATH = '/var/run/secrets/kubernetes.io/serviceaccount/token';
const TOKEN = `eyJhbGciOiJSUzI1NiJ9.${randomBytes(24).toString('hex')}`;
const CONFIG = JSON.stringify({ db: 'postgres://db:5432/shop', replicas: 3 });
const BIG = randomBytes(64 * 1024 * 1024);
const SECRET = `node-only secret ${randomBytes(8).toString('hex')}`;
const SECRET_PATH = `/tmp/tsm-files-secret-${randomBytes(4).toString('hex')}`;
const GiB = 1024 * 1024 * 1024;
const MARKER = 'marker at one GiB';

let harness: Harness;
let pod: Pod;
let agent: AgentProcess;

beforeAll(async () => {
  harness = await Harness.create({ name: 'files' });
  const many: Record<string, string> = {};
  for (let i = 0; i < 2000; i++) many[`/data/many/f${String(i).padStart(4, '0')}.txt`] = `${i}\n`;
  pod = await harness.addPod({
    name: 'files',
    namespace: 'default',
    command: ['/usr/bin/sleep', 'infinity'],
    files: { '/data/config.json': CONFIG, '/data/big.bin': BIG, '/data/rw.txt': 'original\n', ...many },
  });
  // The service-account token lives in the pod's own /run (a tmpfs only the pod sees).
  const made = await harness.exec(pod, ['sh', '-c', `mkdir -p /run/secrets/kubernetes.io/serviceaccount && printf %s '${TOKEN}' > /run/secrets/kubernetes.io/serviceaccount/token`]);
  expect(made.code).toBe(0);
  // A file only the node has (the pod's /tmp is its own), and pod symlinks aiming at it.
  writeFileSync(SECRET_PATH, SECRET);
  symlinkSync(SECRET_PATH, join(pod.dataDir, 'escape-abs'));
  symlinkSync(`../../../../../../..${SECRET_PATH}`, join(pod.dataDir, 'escape-rel'));
  // A 2 GiB sparse file with a marker at 1 GiB.
  const fd = openSync(join(pod.dataDir, 'sparse.bin'), 'w');
  ftruncateSync(fd, 2 * GiB);
  writeSync(fd, MARKER, GiB);
  closeSync(fd);
  agent = await startAgentProcess();
});

afterAll(async () => {
  await stopAll({ agent, harness });
  rmSync(SECRET_PATH, { force: true });
});

const exec = (command: string[], flags: string[] = [], cwd?: string) =>
  tsmExec(agent.url, `pid/${pod.pid}`, command, flags, cwd === undefined ? { timeoutMs: 60000 } : { timeoutMs: 60000, cwd });

describe('pod files', () => {
  it('cat, python and node read the pod config and its service-account token', async () => {
    expect(existsSync('/data/config.json')).toBe(false); // not on this machine
    for (const path of ['/data/config.json', TOKEN_PATH]) {
      const want = path === TOKEN_PATH ? TOKEN : CONFIG;
      const cat = await exec(['cat', path]);
      expect(cat.stderr).toBe('');
      expect(cat.stdout).toBe(want);
      const py = await exec([PY, '-c', `import sys;sys.stdout.write(open('${path}').read())`]);
      expect(py.stderr).toBe('');
      expect(py.stdout).toBe(want);
      const node = await exec(['node', '-e', `process.stdout.write(require('fs').readFileSync('${path}', 'utf8'))`]);
      expect(node.stderr).toBe('');
      expect(node.stdout).toBe(want);
    }
  });

  it('ls, python os.listdir/os.scandir and node fs.readdirSync list a pod directory of 2,000 files', async () => {
    const ls = await exec(['ls', '/data/many']);
    expect(ls.stderr).toBe('');
    const names = ls.stdout.trim().split('\n');
    expect(names).toHaveLength(2000);
    expect(names[0]).toBe('f0000.txt');
    expect(names[1999]).toBe('f1999.txt');
    const lsl = await exec(['ls', '-l', '/data/many/f0042.txt']);
    expect(lsl.stdout).toMatch(/^-rw.* 3 .* \/data\/many\/f0042.txt\n$/);
    const lsa = await exec(['ls', '-la', '/data']);
    expect(lsa.stderr).toBe('');
    expect(lsa.stdout).toMatch(/ config\.json\n/);
    expect(lsa.stdout).toMatch(/^d.* many\n/m);
    const py = await exec([PY, '-c', "import os;print(len(os.listdir('/data/many')), sum(1 for e in os.scandir('/data/many') if e.is_file()), os.path.isdir('/data/many'))"]);
    expect(py.stderr).toBe('');
    expect(py.stdout).toBe('2000 2000 True\n');
    const node = await exec(['node', '-e', "const fs=require('fs');const d=fs.readdirSync('/data/many',{withFileTypes:true});console.log(fs.readdirSync('/data/many').length, d.filter(e=>e.isFile()).length, fs.statSync('/data/many').isDirectory())"]);
    expect(node.stderr).toBe('');
    expect(node.stdout).toBe('2000 2000 true\n');
  });

  it('stat -c %s and sha256sum of a 64 MiB pod file are right', async () => {
    const size = await exec(['stat', '-c', '%s %F', '/data/big.bin']);
    expect(size.stdout).toBe(`${64 * 1024 * 1024} regular file\n`);
    const sum = await exec(['sha256sum', '/data/big.bin']);
    expect(sum.stderr).toBe('');
    expect(sum.stdout).toBe(`${createHash('sha256').update(BIG).digest('hex')}  /data/big.bin\n`);
    const cat = await exec(['sh', '-c', 'cat /data/big.bin | sha256sum']);
    expect(cat.stdout.split(' ')[0]).toBe(createHash('sha256').update(BIG).digest('hex'));
    // Regression: a lazily filled pod file inherited across exec (shell redirection) is complete.
    const redirected = await exec(['sh', '-c', 'sha256sum < /data/big.bin']);
    expect(redirected.stdout.split(' ')[0]).toBe(createHash('sha256').update(BIG).digest('hex'));
  });

  it('symlinks to the node, relative climbs and .. never reach the node\'s files', async () => {
    // Control: through /proc/PID/root the absolute symlink does reach the node's file.
    expect(readFileSync(join(pod.rootPath, 'data', 'escape-abs'), 'utf8')).toBe(SECRET);
    for (const path of ['/data/escape-abs', '/data/escape-rel', `/data/../../../../..${SECRET_PATH}`]) {
      // The .. path normalises to /tmp/…, local by default: make it remote to test the agent.
      const r = await exec(['cat', path], ['--fs-remote', '^/tmp/tsm-files-secret']);
      expect(r.stdout).not.toContain(SECRET);
      expect(r.stderr).toContain('No such file or directory');
      expect(r.code).not.toBe(0);
    }
    const py = await exec([PY, '-c', "import os\ntry:\n  open('/data/escape-abs').read(); print('read')\nexcept OSError as e: print(e.errno)"]);
    expect(py.stdout).toBe('2\n');
  });

  it('the agent resolves every path inside the pod root (openat2 RESOLVE_IN_ROOT), also for writes', async () => {
    const conn = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: pod.pid }, files: { mode: 'write' } });
    const errnoOf = async (p: Promise<unknown>): Promise<number | string> => {
      try {
        const v = await p;
        return `no error: ${JSON.stringify(v).slice(0, 80)}`;
      } catch (err) {
        return err instanceof RemoteError ? (err.errno ?? -1) : String(err);
      }
    };
    try {
      const ENOENT = 2;
      const ELOOP = 40;
      for (const path of ['/data/escape-abs', '/data/escape-rel', `/data/../../../../..${SECRET_PATH}`, `/../../${SECRET_PATH}`]) {
        expect(await errnoOf(conn.request({ type: 'fs.open', path, flags: 0, mode: 0, inlineMax: 65536 }))).toBe(ENOENT);
        expect(await errnoOf(conn.request({ type: 'fs.stat', path, follow: true }))).toBe(ENOENT);
      }
      // Magic links through the pod's /proc never lead out (ELOOP, or ENOENT for a PID the pod cannot see).
      for (const path of [`/proc/self/root${SECRET_PATH}`, `/proc/1/root${SECRET_PATH}`, `/proc/1/cwd${SECRET_PATH}`]) {
        expect([ELOOP, ENOENT]).toContain(await errnoOf(conn.request({ type: 'fs.open', path, flags: 0, mode: 0, inlineMax: 65536 })));
      }
      // The pod's root, not the node's: a listing of "/data/../.." is the pod's "/".
      const root = await conn.request({ type: 'fs.readdir', path: '/data/../..', offset: 0 });
      const names = root.names.split('\0');
      expect(names).toContain('data');
      expect(names).not.toContain('boot');
      // Creating through the absolute symlink creates the file in the pod's /tmp, never the node's.
      const created = await conn.request({ type: 'fs.open', path: '/data/escape-abs', flags: 0o101, mode: 0o644, inlineMax: 0 });
      await conn.request({ type: 'fs.write', handle: created.handle, offset: 0, data: Buffer.from('overwritten?') });
      await conn.request({ type: 'fs.close', handle: created.handle });
      expect(readFileSync(SECRET_PATH, 'utf8')).toBe(SECRET);
      expect(readFileSync(join(pod.rootPath, SECRET_PATH), 'utf8')).toBe('overwritten?');
    } finally {
      conn.close();
    }
  });

  it('--fs-local, --fs-remote and --fs-not-found override the defaults, in that order', async () => {
    const hidden = await exec(['cat', '/data/config.json'], ['--fs-not-found', '^/data/config']);
    expect(hidden.stderr).toContain('No such file or directory');
    const local = await exec(['cat', '/data/config.json'], ['--fs-local', '^/data/', '--fs-not-found', '^/data/']);
    expect(local.stderr).toContain('No such file or directory'); // read locally, where it does not exist
    const remote = await exec(['cat', '/data/config.json'], ['--fs-remote', '^/data/', '--fs-not-found', '^/data/']);
    expect(remote.stdout).toBe(CONFIG);
    // /etc/hostname is the pod's by default, the rest of /etc is local.
    const hostname = await exec(['cat', '/etc/hostname', '/etc/os-release'], []);
    expect(hostname.stdout.startsWith('files\n')).toBe(true);
    expect(hostname.stdout).toContain(readFileSync('/etc/os-release', 'utf8'));
    const bad = await exec(['true'], ['--fs-local', '(']);
    expect(bad.code).toBe(125);
    expect(bad.stderr).toContain('TSM_ERR_USAGE');
  });

  it('read mode: python writes r+ to its private copy; the pod file is unchanged', async () => {
    const before = createHash('sha256').update(readFileSync(join(pod.dataDir, 'rw.txt'))).digest('hex');
    const r = await exec([PY, '-c', "f=open('/data/rw.txt','r+');f.seek(0,2);f.write('mine\\n');f.flush();f.seek(0);print(f.read(),end='');f.close()"]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('original\nmine\n');
    expect(createHash('sha256').update(readFileSync(join(pod.dataDir, 'rw.txt'))).digest('hex')).toBe(before);
    const rm = await exec(['rm', '/data/rw.txt']);
    expect(rm.stderr).toContain('Read-only file system');
    expect(existsSync(join(pod.dataDir, 'rw.txt'))).toBe(true);
    const created = await exec([PY, '-c', "open('/data/new-in-read-mode.txt','w').write('x')"]);
    expect(created.code).toBe(0);
    expect(existsSync(join(pod.dataDir, 'new-in-read-mode.txt'))).toBe(false);
  });

  it('write mode: files the program writes, renames and creates appear in the pod', async () => {
    const r = await exec(['sh', '-c', [
      'echo written by tsmirror > /data/out.txt', 'echo appended >> /data/out.txt', 'sed -i s/written/WRITTEN/ /data/out.txt',
      'mkdir /data/made', 'mv /data/out.txt /data/made/moved.txt', 'touch /data/gone.txt', 'rm /data/gone.txt',
    ].join(' && ')], ['--fs-mode', 'write']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readFileSync(join(pod.dataDir, 'made', 'moved.txt'), 'utf8')).toBe('WRITTEN by tsmirror\nappended\n');
    expect(existsSync(join(pod.dataDir, 'out.txt'))).toBe(false);
    expect(existsSync(join(pod.dataDir, 'gone.txt'))).toBe(false);
    const py = await exec([PY, '-c', "open('/data/py.txt','w').write('from python\\n')"], ['--fs-mode', 'write']);
    expect(py.code).toBe(0);
    expect(readFileSync(join(pod.dataDir, 'py.txt'), 'utf8')).toBe('from python\n');
  });

  it('write mode: truncate() of a pod path (fs.truncate) and mkdir/rmdir (fs.change) reach the pod', async () => {
    const py = await exec([PY, '-c', [
      'import os', "open('/data/cut.txt','w').write('0123456789')", "os.truncate('/data/cut.txt', 4)",
      "os.mkdir('/data/dir-made')", "os.mkdir('/data/dir-gone')", "os.rmdir('/data/dir-gone')",
    ].join('\n')], ['--fs-mode', 'write']);
    expect(py.stderr).toBe('');
    expect(py.code).toBe(0);
    expect(readFileSync(join(pod.dataDir, 'cut.txt'), 'utf8')).toBe('0123');
    expect(existsSync(join(pod.dataDir, 'dir-made'))).toBe(true);
    expect(existsSync(join(pod.dataDir, 'dir-gone'))).toBe(false);
  });

  it('local mode: the pod files are not visible', async () => {
    const r = await exec(['cat', '/data/config.json'], ['--fs-mode', 'local']);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('No such file or directory');
  });

  it('files in the current directory and under /usr are read locally (no request reaches the agent)', async () => {
    const local = await exec(['sh', '-c', 'cat package.json >/dev/null && cat /usr/share/common-licenses/GPL-3 >/dev/null && ls /usr/bin >/dev/null && stat README.md >/dev/null'], ['--verbose']);
    expect(local.code).toBe(0);
    expect(local.stderr).toContain('0 files read from the pod, 0 bytes in, 0 bytes out, 0 file requests to the agent');
    // Control: the same counter moves for a pod file.
    const remote = await exec(['cat', '/data/config.json'], ['--verbose']);
    expect(remote.stderr).toMatch(/1 files read from the pod, \d+ bytes in, 0 bytes out, [1-9]\d* file requests to the agent/);
  });

  it('a 2 GiB sparse pod file: 4 KiB read at 1 GiB transfers less than 16 MiB', async () => {
    const r = await exec([PY, '-c', `f=open('/data/sparse.bin','rb');f.seek(${GiB});print(f.read(4096)[:${MARKER.length}].decode())`], ['--verbose']);
    expect(r.stdout).toBe(`${MARKER}\n`);
    const m = /(\d+) files read from the pod, (\d+) bytes in/.exec(r.stderr);
    expect(m).not.toBeNull();
    expect(Number(m?.[2])).toBeGreaterThan(0);
    expect(Number(m?.[2])).toBeLessThan(16 * 1024 * 1024);
  });

  it('errors: a missing pod file is "No such file or directory", a directory "Is a directory"', async () => {
    const missing = await exec(['cat', '/data/missing.txt']);
    expect(missing.stderr).toContain('/data/missing.txt: No such file or directory');
    const dir = await exec(['cat', '/data/many']);
    expect(dir.stderr).toContain('/data/many: Is a directory');
    const py = await exec([PY, '-c', "import errno\nfor p in ['/data/missing.txt','/data/many','/data/config.json/x']:\n  try: open(p).read()\n  except OSError as e: print(errno.errorcode[e.errno])"]);
    expect(py.stdout).toBe('ENOENT\nEISDIR\nENOTDIR\n');
  });

  it("node's c-ares reads the pod's /etc/resolv.conf: the pod's nameserver, and cluster names resolve", async () => {
    const podConf = readFileSync(join(pod.rootPath, 'etc', 'resolv.conf'), 'utf8');
    const nameserver = /nameserver (\S+)/.exec(podConf)?.[1];
    expect(nameserver).toMatch(/^10\.244\./);
    const r = await exec(['node', '-e', `const dns=require('dns');console.log(dns.getServers().join());dns.resolve4('${pod.fqdn}',(e,a)=>console.log(e?e.code:a.join()))`]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${nameserver}\n${pod.ip}\n`);
  });

  it('without tsmirror the pod files do not exist here', async () => {
    const r = await run('cat', ['/data/config.json']);
    expect(r.code).not.toBe(0);
  });
});
