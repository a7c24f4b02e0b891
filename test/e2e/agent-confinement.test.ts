/**
 * The agent serves a session only the target it was opened for, and never reads the
 * node's files or blocks on a pod's: regressions for a reused PID, a read-only session
 * that writes, and resolver files that are a symlink out of the pod or a FIFO.
 *
 * Targets here are small processes with a root of their own (a chroot holding a static
 * busybox), so "the pod's files" and "the node's files" are different trees.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { constants as fsConstants } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectAgent } from '../../cli/agent-client.js';
import { agentKeyPath } from '../../common/local-agent-key.js';
import { RemoteError } from '../../protocol/errors.js';
import { startAgentProcess, cliPath, type AgentProcess } from './tsm.js';

const BUSYBOX = '/bin/busybox';
const work = mkdtempSync(join(tmpdir(), 'tsm-confinement-'));
const children: ChildProcess[] = [];
let agent: AgentProcess;

/** A root for a target: /bin/busybox and an /etc of its own. */
function makeRoot(name: string): string {
  const root = join(work, name);
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'etc'), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'bin', 'busybox'));
  return root;
}

/** Starts `busybox sleep` chrooted into `root`; its /proc/PID/root is that tree. */
async function chrootedTarget(root: string, env: Record<string, string> = {}): Promise<number> {
  const child = spawn('/usr/sbin/chroot', [root, '/bin/busybox', 'sleep', '600'], { env, stdio: 'ignore' });
  children.push(child);
  await new Promise((r) => setTimeout(r, 100));
  expect(child.exitCode).toBeNull();
  return child.pid ?? 0;
}

beforeAll(async () => {
  agent = await startAgentProcess();
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await agent.stop();
  rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!existsSync(BUSYBOX))('the agent confines each session to its target', () => {
  it("a pod's /etc/resolv.conf that is an absolute symlink resolves inside the pod, never to the node's file", async () => {
    const nodeFile = join(work, 'node-resolv.conf');
    writeFileSync(nodeFile, 'nameserver 203.0.113.77\nsearch node.example\n');
    const root = makeRoot('symlinked');
    symlinkSync(nodeFile, join(root, 'etc', 'resolv.conf')); // absolute: outside the pod's root
    const pid = await chrootedTarget(root);
    const session = await connectAgent({ url: agent.url, target: { kind: 'pid', pid } });
    expect(session.hello.target.nameservers).not.toContain('203.0.113.77');
    expect(session.hello.target.search).not.toContain('node.example');
    session.close();
    // The same path written inside the pod's root is what the pod sees, and is read.
    mkdirSync(join(root, nodeFile, '..'), { recursive: true });
    writeFileSync(join(root, nodeFile), 'nameserver 198.51.100.53\n');
    const again = await connectAgent({ url: agent.url, target: { kind: 'pid', pid } });
    expect(again.hello.target.nameservers).toEqual(['198.51.100.53']);
    again.close();
  });

  it("a FIFO as the pod's /etc/resolv.conf does not block the agent", async () => {
    const root = makeRoot('fifo');
    expect(spawnSync('mkfifo', [join(root, 'etc', 'resolv.conf')]).status).toBe(0);
    const pid = await chrootedTarget(root);
    const bystanderPid = await chrootedTarget(makeRoot('bystander'));
    const bystander = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: bystanderPid } });
    const started = Date.now();
    const session = await connectAgent({ url: agent.url, target: { kind: 'pid', pid }, timeoutMs: 3000 });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(session.hello.target.nameservers).toEqual(['127.0.0.1']); // glibc's default when resolv.conf cannot be read
    const t = Date.now();
    await bystander.request({ type: 'env.get' });
    expect(Date.now() - t).toBeLessThan(1000);
    session.close();
    bystander.close();
  });

  it('a session opened read-only cannot write, create, truncate, rename or delete pod files (EROFS from the agent)', async () => {
    const root = makeRoot('readonly');
    mkdirSync(join(root, 'data'));
    writeFileSync(join(root, 'data', 'config.json'), '{"v":1}\n');
    const pid = await chrootedTarget(root);
    // A modified client: it asks for writes although it declared nothing (read mode).
    const session = await connectAgent({ url: agent.url, target: { kind: 'pid', pid } });
    const attempts: Array<Promise<unknown>> = [
      session.request({ type: 'fs.open', path: '/data/config.json', flags: fsConstants.O_RDWR, mode: 0, inlineMax: 0 }),
      session.request({ type: 'fs.open', path: '/data/new', flags: fsConstants.O_WRONLY | fsConstants.O_CREAT, mode: 0o644, inlineMax: 0 }),
      session.request({ type: 'fs.open', path: '/data/config.json', flags: fsConstants.O_RDONLY | fsConstants.O_TRUNC, mode: 0, inlineMax: 0 }),
      session.request({ type: 'fs.change', op: 'rename', path: '/data/config.json', mode: 0, to: '/data/moved' }),
      session.request({ type: 'fs.change', op: 'unlink', path: '/data/config.json', mode: 0, to: '' }),
      session.request({ type: 'fs.change', op: 'mkdir', path: '/data/dir', mode: 0o755, to: '' }),
      session.request({ type: 'fs.truncate', handle: 0, path: '/data/config.json', size: 0 }),
    ];
    for (const attempt of attempts) {
      const err = await attempt.then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteError);
      expect((err as RemoteError).errno).toBe(osConstants.errno.EROFS);
    }
    // Reading still works, and the pod's tree is unchanged.
    const read = await session.request({ type: 'fs.open', path: '/data/config.json', flags: fsConstants.O_RDONLY, mode: 0, inlineMax: 1024 });
    expect(Buffer.from(read.data ?? new Uint8Array()).toString()).toBe('{"v":1}\n');
    expect(readFileSync(join(root, 'data', 'config.json'), 'utf8')).toBe('{"v":1}\n');
    expect(existsSync(join(root, 'data', 'new'))).toBe(false);
    expect(existsSync(join(root, 'data', 'dir'))).toBe(false);
    session.close();
    // Declared write mode is allowed to.
    const writer = await connectAgent({ url: agent.url, target: { kind: 'pid', pid }, files: { mode: 'write' } });
    await writer.request({ type: 'fs.change', op: 'mkdir', path: '/data/dir', mode: 0o755, to: '' });
    expect(existsSync(join(root, 'data', 'dir'))).toBe(true);
    writer.close();
  });
});

describe('a target whose PID is reused', () => {
  it('ends the session instead of serving the new process', async () => {
    // A PID namespace of our own, where the next PID can be chosen (ns_last_pid), holds the
    // agent and the targets; its network is the host's, so the agent is on loopback.
    const script = `
      set -e
      env -i MARK=old /bin/busybox sleep 600 & first=$!
      echo "target $first"
      ${process.execPath} ${cliPath} agent --listen 127.0.0.1:0 2>&1 &
      read line
      kill -9 $first; wait $first || true
      echo $((first - 1)) > /proc/sys/kernel/ns_last_pid
      env -i MARK=new /bin/busybox sleep 600 & echo "reused $!"
      wait`;
    const ns = spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', 'bash', '-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(ns);
    let out = '';
    ns.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
    const waitFor = async (re: RegExp): Promise<RegExpExecArray> => {
      const started = Date.now();
      for (;;) {
        const m = re.exec(out);
        if (m) return m;
        if (Date.now() - started > 15000) throw new Error(`no ${re} in:\n${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const pid = Number((await waitFor(/target (\d+)/))[1]);
    const url = (await waitFor(/listening on (ws:\/\/\S+)/))[1] as string;
    const session = await connectAgent({ url, target: { kind: 'pid', pid } });
    const closed = new Promise<void>((r) => session.peer.once('closed', () => r()));
    expect((await session.request({ type: 'env.get' })).env.MARK).toBe('old');
    ns.stdin?.write('go\n');
    const reused = Number((await waitFor(/reused (\d+)/))[1]);
    expect(reused).toBe(pid);
    // The process is gone: the session ends (at once on a request, or by the watcher),
    // and the new process's environment is never served.
    const answer = await session.request({ type: 'env.get' }).then((r) => r.env.MARK, (e: Error) => e);
    expect(answer).not.toBe('new');
    await closed;
    expect(session.closedError).toMatchObject({ code: 'TSM_ERR_TARGET_GONE' });
    ns.kill('SIGKILL');
    // That agent lived in its own PID namespace, where no sweep from here can judge it.
    rmSync(agentKeyPath(Number(new URL(url).port)), { force: true });
  });
});
