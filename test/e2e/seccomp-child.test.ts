/**
 * Static and Go programs started by a preloaded (dynamically linked) program: a shell
 * (`sh -c './server'`, make, npm scripts), python's subprocess, node's child_process.
 * The shim's exec hooks run them under the seccomp supervisor
 * (native/shim/exec_supervisor.c), so they go through the pod as they do when tsmirror
 * starts them itself; before, they ran silently unintercepted. Go programs are built
 * from source in the test run (test/e2e/fixtures/go-net), busybox is Debian's
 * busybox-static.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode } from '../harness/demo-pods.js';
import { inspectProgram } from '../../cli/launch.js';
import { supervisorPath } from '../../native/index.js';
import { cliPath, pollUntil, repoRoot, run, startAgentProcess, startCli, stopAll, stopCli, tsmExec, type AgentProcess } from './tsm.js';

const GO = '/usr/bin/go';
const BUSYBOX = '/bin/busybox';
const PYTHON = '/usr/bin/python3';
const haveGo = existsSync(GO);
const haveBusybox = existsSync(BUSYBOX);
const haveGcc = existsSync('/usr/bin/gcc');

let harness: Harness;
let db: Pod;
let api: Pod;
let agent: AgentProcess;
let work: string;
let goEnv: NodeJS.ProcessEnv;
const bin: Record<'cgo' | 'static' | 'noBuildId', string> = { cgo: '', static: '', noBuildId: '' };
/** test/e2e/fixtures/exec-ways.c (dynamic: the shim is in it) and exec-probe.c (static), built in the run. */
const cBin = { ways: '', probe: '' };

/** The pids of the processes named `comm` whose command line contains `mark` (the supervisor and its guard). */
function processesWith(comm: string, mark: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== comm) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(mark)) found.push(Number(entry));
    } catch { /* gone meanwhile */ }
  }
  return found;
}

function goBuild(out: string, cgo: boolean, extra: string[] = []): void {
  const r = spawnSync(GO, ['build', ...extra, '-o', out, '.'], { cwd: join(repoRoot, 'test/e2e/fixtures/go-net'), env: { ...goEnv, CGO_ENABLED: cgo ? '1' : '0' }, encoding: 'utf8', timeout: 300000 });
  if (r.status !== 0) throw new Error(`go build failed: ${r.stderr}`);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tsm-seccomp-child-'));
  goEnv = { ...process.env, GOCACHE: join(tmpdir(), 'tsmirror-test-gocache'), GOPATH: join(work, 'gopath'), GOFLAGS: '', GO111MODULE: 'on', GOPROXY: 'off', GOTOOLCHAIN: 'local' };
  if (haveGo) {
    bin.cgo = join(work, 'gonet-cgo');
    bin.static = join(work, 'gonet-static');
    bin.noBuildId = join(work, 'gonet-nobuildid');
    goBuild(bin.cgo, true);
    goBuild(bin.static, false);
    goBuild(bin.noBuildId, false, ['-ldflags=-buildid=']);
  }
  if (haveGcc) {
    cBin.ways = join(work, 'exec-ways');
    cBin.probe = join(work, 'exec-probe');
    const fixtures = join(repoRoot, 'test/e2e/fixtures');
    for (const [out, args] of [[cBin.ways, []], [cBin.probe, ['-static']]] as const) {
      const cc = await run('gcc', [...args, '-O1', '-Wall', '-Werror', '-o', out, join(fixtures, `${out === cBin.ways ? 'exec-ways' : 'exec-probe'}.c`)], { timeoutMs: 120000 });
      if (cc.code !== 0) throw new Error(`gcc failed:\n${cc.stderr}`);
    }
  }
  ({ harness, db, api } = await buildDemoNode({ name: 'seccomp-child' }));
  agent = await startAgentProcess();
}, 600000);

afterAll(async () => {
  await stopAll({ agent, harness });
  if (work) rmSync(work, { recursive: true, force: true });
});

const exec = (command: string[], flags: string[] = []) => tsmExec(agent.url, `pid/${api.pid}`, command, ['--reconnect-grace', '1', ...flags], { timeoutMs: 90000, env: goEnv });
const sh = (script: string, flags: string[] = []) => exec(['/bin/sh', '-c', script], flags);

describe.skipIf(!haveGo)('a Go program started by a preloaded program goes through the pod', () => {
  for (const build of ['static', 'cgo'] as const) {
    it(`sh -c '<${build === 'static' ? 'CGO_ENABLED=0' : 'default cgo'} Go program> get http://db:8080/': the cluster name resolves and the GET reaches db through the pod`, async () => {
      const r = await sh(`${bin[build]} get http://db:8080/; echo "code $?"`);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('hello from db\ncode 0\n');
      expect(r.code).toBe(0);
    });
  }

  it('bash, and a Go program found on PATH (the shell searches PATH and execs the full path)', async () => {
    const r = await exec(['/bin/bash', '-c', `PATH=${work}:$PATH; gonet-static get http://db:8080/ && gonet-static env DB_URL`]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\nhttp://db:8080/\n');
  });

  it('from python3: subprocess.run, os.posix_spawn and os.execvp (PATH searched by libc)', async () => {
    const script = [
      'import os, subprocess, sys',
      `prog = ${JSON.stringify(bin.static)}`,
      "print(subprocess.run([prog, 'get', 'http://db:8080/'], capture_output=True, text=True).stdout, end='')",
      "pid = os.posix_spawn(prog, [prog, 'get', 'http://db:8080/'], os.environ)",
      'print(os.waitpid(pid, 0)[1] == 0)',
      `os.environ['PATH'] = ${JSON.stringify(work)} + ':' + os.environ['PATH']`,
      "pid = os.posix_spawnp('gonet-static', ['gonet-static', 'env', 'DB_URL'], os.environ)",
      'os.waitpid(pid, 0)',
      'sys.stdout.flush()',
      "os.execvp('gonet-static', ['gonet-static', 'get', 'http://db:8080/'])",
    ].join('\n');
    const r = await exec([PYTHON, '-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\nhello from db\nTrue\nhttp://db:8080/\nhello from db\n');
  });

  it("from node: child_process.execFileSync and spawnSync through a shell", async () => {
    const script = `const cp = require('child_process');
      process.stdout.write(cp.execFileSync(${JSON.stringify(bin.cgo)}, ['get', 'http://db:8080/']));
      process.stdout.write(cp.spawnSync(${JSON.stringify(`${bin.static} get http://db:8080/`)}, { shell: true }).stdout);`;
    const r = await exec([process.execPath, '-e', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\nhello from db\n');
  });

  it('a Go program built without a build id note is found by its build information', async () => {
    const r = await sh(`${bin.noBuildId} get http://db:8080/`);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\n');
  });

  it('--intercept preload keeps the old behaviour: the Go program the shell starts is not intercepted', async () => {
    const r = await sh(`${bin.static} get http://db:8080/; echo "code $?"`, ['--intercept', 'preload']);
    expect(r.stdout).toBe('code 1\n');
    expect(r.stderr).toMatch(/error: .*db/);
  });

  it('SIGKILL of the CLI takes the shell, the Go program, its supervisor and the guard with it', async () => {
    const cli = spawn(process.execPath, [cliPath, 'exec', '-q', '--reconnect-grace', '0', '--agent', agent.url, '--target', `pid/${api.pid}`, '--', '/bin/sh', '-c', `${bin.static} loop http://db:8080/; echo after`], { stdio: ['ignore', 'pipe', 'ignore'], env: goEnv });
    let out = '';
    cli.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    let pids: string[] = [];
    let gone = false;
    try {
      expect(await pollUntil(() => out.includes('ok\n'), 20000)).toBe(true);
      // The shell's child is the program itself (its pid); the supervisor and its guard run beside it.
      const shell = spawnSync('pgrep', ['-P', String(cli.pid)], { encoding: 'utf8' }).stdout.trim();
      const program = spawnSync('pgrep', ['-P', shell], { encoding: 'utf8' }).stdout.trim();
      const beside = [...processesWith('tsmirror-superv', `${bin.static}\0loop`), ...processesWith('tsmirror-guard', `${bin.static}\0loop`)];
      pids = [shell, program, ...beside.map(String)].filter((p) => /^\d+$/.test(p));
      expect(readFileSync(`/proc/${program}/comm`, 'utf8')).toBe('gonet-static\n');
      expect(beside).toHaveLength(2);
      cli.kill('SIGKILL');
      gone = await pollUntil(() => pids.every((p) => !existsSync(`/proc/${p}`)), 8000, 20);
    } finally {
      cli.kill('SIGKILL');
      if (!gone) for (const pid of pids) try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
    expect(gone).toBe(true);
  });
});

describe.skipIf(!haveBusybox)('busybox-static started by a shell', () => {
  it("sh -c 'busybox wget -qO- http://db:8080/' goes through the pod", async () => {
    const r = await sh('busybox wget -qO- http://db:8080/');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\n');
  });

  it('it runs under the filter, with its own argv[0] (python os.execv: same pid), and --intercept preload leaves it as it was', async () => {
    const script = `import os; os.execv(${JSON.stringify(BUSYBOX)}, ['grep', 'Seccomp:', '/proc/self/status'])`;
    const r = await exec([PYTHON, '-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('Seccomp:\t2\n');
    const plain = await exec([PYTHON, '-c', script], ['--intercept', 'preload']);
    expect(plain.stdout).toBe('Seccomp:\t0\n');
  });

  it('the exit code and a death by signal reach the shell; a signal to the pid the shell knows reaches the program', async () => {
    const code = await sh(`${BUSYBOX} sh -c '${BUSYBOX} wget -qO- http://db:8080/; exit 7'; echo "code $?"`);
    expect(code.stdout).toBe('hello from db\ncode 7\n');
    const killed = await sh(`${BUSYBOX} sh -c 'kill -TERM $$; sleep 5'; echo "code $?"`);
    expect(killed.stdout).toBe('code 143\n');
    // The shell's $! is the supervisor's pid: its SIGTERM is relayed to the program.
    const relayed = await sh(`${BUSYBOX} sleep 30 & p=$!; sleep 0.5; kill -TERM $p; wait $p; echo "code $?"`);
    expect(relayed.stdout).toBe('code 143\n');
    expect(relayed.ms).toBeLessThan(20000);
  });

  it("errno stays the program's: a static program without the execute bit fails with EACCES, a missing one with ENOENT", async () => {
    const noexec = join(work, 'busybox-noexec');
    copyFileSync(BUSYBOX, noexec);
    chmodSync(noexec, 0o644);
    const script = `import os\nfor p in [${JSON.stringify(noexec)}, ${JSON.stringify(join(work, 'missing'))}]:\n    try: os.execv(p, ['x'])\n    except OSError as e: print(e.errno)`;
    const r = await exec([PYTHON, '-c', script]);
    expect(r.stdout).toBe('13\n2\n');
    const shell = await sh(`${noexec} true; echo "code $?"`);
    expect(shell.stdout).toBe('code 126\n');
    expect(shell.stderr).toMatch(/Permission denied/);
    expect(shell.stderr).not.toMatch(/tsmirror/);
  });

  it("--watch: a restart's SIGTERM reaches the program under sh once (the supervisor does not relay the CLI's group signal), and the next version is intercepted again", async () => {
    const dir = mkdtempSync(join(work, 'watch-'));
    const script = join(dir, 'app.sh');
    // The trap counts and does not exit: every SIGTERM the program gets is a line; the CLI
    // SIGKILLs the group after the grace period.
    const app = (v: string): string => `#!${BUSYBOX} sh\nn=0\ntrap 'n=$((n+1)); echo "${v} TERM $n"' TERM\n${BUSYBOX} wget -q -O - http://db:8080/ | ${BUSYBOX} sed 's/^/${v}: /'\nwhile :; do ${BUSYBOX} sleep 0.05; done\n`;
    writeFileSync(script, app('v1'));
    chmodSync(script, 0o755);
    const cli = startCli(['exec', '--reconnect-grace', '1', '--agent', agent.url, '--target', `pid/${api.pid}`, '--watch', dir, '--watch-grace', '1500', '--', '/bin/sh', '-c', `${script}; true`], { env: goEnv });
    try {
      await cli.waitFor(/v1: hello from db/, 30000);
      writeFileSync(script, app('v2'));
      await cli.waitFor(/v2: hello from db/, 30000);
      expect(cli.out().match(/v1 TERM \d/g)).toEqual(['v1 TERM 1']);
      expect(cli.err()).not.toMatch(/seccomp supervisor/);
    } finally {
      await stopCli(cli.child);
    }
  }, 120000);

  it('a script whose interpreter is busybox runs under the supervisor', async () => {
    const script = join(work, 'bb-script');
    writeFileSync(script, `#!${BUSYBOX} sh\n${BUSYBOX} wget -qO- http://db:8080/\n${BUSYBOX} grep Seccomp: /proc/self/status\n`);
    chmodSync(script, 0o755);
    const r = await sh(script);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\nSeccomp:\t2\n');
  });
});

describe.skipIf(!haveGcc || !haveBusybox)('in place, the program keeps its pid and parent; fexecve, execveat and raw execve are switched too', () => {
  const ways = ['execve', 'fexecve', 'fexecve-keep', 'execveat-dir', 'execveat-empty', 'syscall-execve', 'syscall-execveat'] as const;
  for (const way of ways) {
    it(`${way} of a static program from a dynamic C parent: under the filter, pid and parent its own, no child of its own, exit code passed${way === 'fexecve-keep' ? ', the inherited descriptor kept' : ''}`, async () => {
      const r = await exec([cBin.ways, way, cBin.probe, 'info']);
      expect(r.stderr).toBe('');
      const parent = /^parent=(\d+) child=(\d+)$/m.exec(r.stdout);
      expect(parent, r.stdout).not.toBeNull();
      const [, ppid, child] = parent ?? [];
      const info = /^pid=(\d+) ppid=(\d+) seccomp=(\d+) fds=([\d,]*) children=\[(.*)\]$/m.exec(r.stdout);
      expect(info, r.stdout).not.toBeNull();
      const [, pid, ppidSeen, seccomp, fds, children] = info ?? [];
      expect({ pid, ppid: ppidSeen, seccomp, children }).toEqual({ pid: child, ppid, seccomp: '2', children: '' });
      // The descriptor the parent opened for the exec: the program has it only when it was not close-on-exec.
      const opened = /^fd=(\d+)$/m.exec(r.stdout)?.[1];
      if (opened) expect((fds ?? '').split(',').includes(opened), `fds ${fds} fd ${opened}`).toBe(way === 'fexecve-keep');
      expect(r.stdout).toMatch(/^exit=7$/m);
    });
  }

  it("python's os.posix_spawn and node's child_process.spawn: the pid they return is the program's, and its parent is them", async () => {
    const py = [
      'import os',
      `pid = os.posix_spawn(${JSON.stringify(cBin.probe)}, ['exec-probe', 'info'], os.environ)`,
      "print('spawned', pid, os.getpid(), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)",
    ].join('\n');
    const js = `const cp = require('child_process');
      const c = cp.spawn(${JSON.stringify(cBin.probe)}, ['info'], { stdio: ['ignore', 'inherit', 'inherit'] });
      c.on('exit', (code) => console.log('spawned', c.pid, process.pid, code));`;
    for (const command of [[PYTHON, '-c', py], [process.execPath, '-e', js]]) {
      const r = await exec(command);
      expect(r.stderr).toBe('');
      const info = /^pid=(\d+) ppid=(\d+) seccomp=2 fds=[\d,]* children=\[\]$/m.exec(r.stdout);
      const spawned = /^spawned (\d+) (\d+) 7$/m.exec(r.stdout);
      expect(info && spawned, r.stdout).toBeTruthy();
      expect([info?.[1], info?.[2]]).toEqual([spawned?.[1], spawned?.[2]]);
    }
  });

  it('--fs-mode write (close and exit_group notified, also in the process that becomes the program): it starts, is served and ends with its code', async () => {
    const r = await exec([cBin.ways, 'execve', cBin.probe, 'info'], ['--fs-mode', 'write']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^pid=\d+ ppid=\d+ seccomp=2 fds=[\d,]* children=\[\]\nexit=7$/m);
    const shell = await sh(`${BUSYBOX} sh -c '${BUSYBOX} wget -qO- http://db:8080/; exit 4'; echo "code $?"`, ['--fs-mode', 'write']);
    expect(shell.stderr).toBe('');
    expect(shell.stdout).toBe('hello from db\ncode 4\n');
  });

  it('SIGSTOP, SIGCONT, SIGUSR1 and SIGALRM sent to the pid its parent knows reach the program itself', async () => {
    for (const way of ['execve', 'fexecve'] as const) {
      const r = await exec([cBin.ways, way, cBin.probe, 'signals']);
      expect(r.stderr).toBe('');
      expect(r.stdout.replace(/^(parent|fd)=.*\n/gm, '')).toBe('ready\nstopped=19 comm=exec-probe\ngot USR1 ALRM\nexit=9\n');
    }
  });

  it('fexecve of a script whose interpreter is static: switched when the descriptor is inherited; ENOENT, as without tsmirror, when it is close-on-exec', async () => {
    const script = join(work, 'fexecve-script');
    writeFileSync(script, `#!${BUSYBOX} sh\n${BUSYBOX} grep Seccomp: /proc/self/status\n`);
    chmodSync(script, 0o755);
    const kept = await exec([cBin.ways, 'fexecve-keep', script]);
    expect(kept.stdout).toMatch(/^Seccomp:\t2\nexit=0$/m);
    const closed = await exec([cBin.ways, 'fexecve', script]);
    expect(closed.stdout).toMatch(/^exec failed: No such file or directory\nexit=99$/m);
  });

  it("python's os.execve of a descriptor (fexecve): busybox wget goes through the pod", async () => {
    const script = `import os\nfd = os.open(${JSON.stringify(BUSYBOX)}, os.O_RDONLY)\nos.execve(fd, ['wget', '-qO-', 'http://db:8080/'], dict(os.environ))`;
    const r = await exec([PYTHON, '-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\n');
  });

  it("signals to the program's process group (SIGINT, SIGALRM) reach the program only (the supervisor is not in the group) and the program keeps being served", async () => {
    // The loop's sleeps run in a session of their own: a sleep in the group would be killed
    // by the SIGALRM too, and the shell would then say 'Alarm clock' on stderr, or not,
    // depending on whether one was running when the signal came.
    const body = `trap 'echo INT' INT; trap 'echo ALRM; done=1' ALRM; echo ready; while [ -z "$done" ]; do ${BUSYBOX} setsid ${BUSYBOX} sleep 0.05; done; ${BUSYBOX} sleep 0.5; ${BUSYBOX} wget -qO- http://db:8080/`;
    const script = [
      'import os, signal, sys',
      'r, w = os.pipe()',
      'pid = os.fork()',
      'if pid == 0:',
      '    os.setpgid(0, 0)',
      '    os.dup2(w, 1)',
      `    os.execv(${JSON.stringify(BUSYBOX)}, ['sh', '-c', ${JSON.stringify(body)}])`,
      'os.close(w)',
      "f = os.fdopen(r)",
      'sys.stdout.write(f.readline())',
      'os.killpg(pid, signal.SIGINT)',
      'sys.stdout.write(f.readline())',
      'os.killpg(pid, signal.SIGALRM)',
      'sys.stdout.write(f.read())',
      "print('status', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))",
    ].join('\n');
    const r = await exec([PYTHON, '-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('ready\nINT\nALRM\nhello from db\nstatus 0\n');
  });

  it('SIGKILL of the supervisor: the program ends at once with a message saying why, nothing is left', async () => {
    const mark = `sleep-${process.pid}-${Date.now()}`;
    const script = [
      'import os, signal, sys',
      'r, w = os.pipe()',
      'pid = os.fork()',
      'if pid == 0:',
      '    os.dup2(w, 1)',
      `    os.execv(${JSON.stringify(BUSYBOX)}, ['sh', '-c', 'echo ready; exec ${BUSYBOX} sleep 30 # ${mark}'])`,
      'os.close(w)',
      'print(os.fdopen(r).readline(), end="", flush=True)',
      'def ours(p):',
      '    try: return open(f"/proc/{p}/comm").read() == "tsmirror-superv\\n" and "' + mark + '" in open(f"/proc/{p}/cmdline").read()',
      '    except OSError: return False',
      "sv = [int(p) for p in os.listdir('/proc') if p.isdigit() and ours(p)]",
      "print('supervisors', len(sv), flush=True)",
      'for p in sv: os.kill(p, signal.SIGKILL)',
      "print('status', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))",
    ].join('\n');
    const r = await exec([PYTHON, '-c', script]);
    expect(r.stdout).toBe('ready\nsupervisors 1\nstatus -9\n');
    expect(r.stderr).toMatch(/^tsmirror: the seccomp supervisor of \/bin\/busybox ended unexpectedly; \/bin\/busybox \(pid \d+\) is stopped/m);
    expect(await pollUntil(() => processesWith('tsmirror-superv', mark).length + processesWith('tsmirror-guard', mark).length === 0, 5000)).toBe(true);
  });
});

describe('the shim and the CLI read programs the same way', () => {
  it('inspectProgram agrees with tsmirror-supervise --inspect (the exec hooks\' rules) on real and malformed files', () => {
    const files: string[] = ['/bin/true', '/bin/sh', '/etc/passwd', PYTHON];
    if (haveBusybox) files.push(BUSYBOX);
    if (haveGo) files.push(bin.static, bin.cgo, bin.noBuildId);
    const dir = mkdtempSync(join(work, 'inspect-'));
    const write = (name: string, data: Buffer | string, mode = 0o755): void => {
      writeFileSync(join(dir, name), data);
      chmodSync(join(dir, name), mode);
      files.push(join(dir, name));
    };
    if (haveBusybox) {
      const bb = readFileSync(BUSYBOX);
      write('script-bb', `#!${BUSYBOX} sh\necho hi\n`);
      write('script-tab', `#!\t ${BUSYBOX}\tsh\n`);
      write('truncated', bb.subarray(0, 100));
      write('headers-only', bb.subarray(0, 64));
      const hugePhnum = Buffer.from(bb.subarray(0, 4096));
      hugePhnum.writeUInt16LE(0xffff, 56);
      write('huge-phnum', hugePhnum);
      const badEntsize = Buffer.from(bb.subarray(0, 4096));
      badEntsize.writeUInt16LE(55, 54);
      write('bad-phentsize', badEntsize);
      const farPhoff = Buffer.from(bb.subarray(0, 4096));
      farPhoff.writeBigUInt64LE(0xffffffffffff0000n, 32);
      write('far-phoff', farPhoff);
    }
    write('script-crlf', '#!/bin/sh\r\necho hi\n');
    write('script-empty', '#!\n');
    write('script-long', `#!/${'x'.repeat(300)}\n`);
    write('empty', '');
    for (const file of files) {
      const r = spawnSync(supervisorPath(), ['--inspect', file], { encoding: 'utf8' });
      const c = JSON.parse(r.stdout) as { kind: string; go: boolean; interpreter: string; seccomp: boolean };
      const ts = inspectProgram(file);
      expect({ file, kind: ts.kind, go: ts.go, interpreter: ts.interpreter ?? '' }).toEqual({ file, kind: c.kind, go: c.go, interpreter: c.interpreter });
    }
    // Mutated headers, program headers and notes (a fixed-seed PRNG): no crash, same answer.
    let seed = 12;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const bases = [haveGo ? bin.static : '', haveGo ? bin.cgo : '', haveBusybox ? BUSYBOX : ''].filter(Boolean).map((f) => readFileSync(f).subarray(0, 96 * 1024));
    const mutant = join(dir, 'mutant');
    for (let i = 0; i < (bases.length ? 100 : 0); i++) {
      const m = Buffer.from(bases[i % bases.length] ?? Buffer.alloc(0));
      for (let k = 1 + rand(4); k > 0; k--) m[rand(k === 1 ? 64 : 4096)] = rand(256);
      writeFileSync(mutant, m);
      const r = spawnSync(supervisorPath(), ['--inspect', mutant], { encoding: 'utf8' });
      expect(r.status, `case ${i}: ${r.stderr}`).toBe(0);
      const c = JSON.parse(r.stdout) as { kind: string; go: boolean };
      const ts = inspectProgram(mutant);
      expect({ i, kind: ts.kind, go: ts.go }).toEqual({ i, kind: c.kind, go: c.go });
    }
    if (haveGo) for (const b of [bin.static, bin.cgo, bin.noBuildId]) expect(inspectProgram(b).go, b).toBe(true);
    if (haveBusybox) expect(inspectProgram(join(dir, 'truncated')).kind).toBe('other');
  });
});
