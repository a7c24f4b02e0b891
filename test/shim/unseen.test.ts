/**
 * What the preload cannot see, end to end through the real session proxy: a program that
 * sets up io_uring, opens a pod file and connects through syscall() (native/shim/test/bypass.c, compiled
 * here) gets one warning line per kind on the user's terminal and is counted for
 * `exec -v`; a program that does the same through libc gets none.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileRules } from '../../cli/proxy/file-rules.js';
import { InProcessAgent } from '../../cli/proxy/in-process-agent.js';
import { SessionProxy, UNSEEN_WARNINGS } from '../../cli/proxy/session-proxy.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const shim = join(root, 'build', 'Release', 'libtsmirror.so');
const dir = mkdtempSync(join(tmpdir(), 'tsm-unseen-'));
const program = join(dir, 'bypass');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs bypass.c in `mode` under the shim against a fresh session proxy; what it warned and counted. */
async function underShim(mode: 'bypass' | 'plain'): Promise<{ warnings: string[]; unseen: number; stdout: string }> {
  const warnings: string[] = [];
  const proxy = await SessionProxy.start(new InProcessAgent(), {
    routing: { remoteLocalhost: false, localDest: [], remoteDest: [] },
    localNameservers: [], podNameservers: [], log: () => undefined, tmpdir: dir, warn: (line) => warnings.push(line),
    files: fileRules({ local: [], remote: ['^/srv/tsmirror-unseen/'], notFound: [], programPath: program, cwd: dir, targetless: false }),
  });
  try {
    const run = await new Promise<{ stdout: string }>((resolve) => {
      // Asynchronous, so that the proxy in this process answers the shim meanwhile.
      execFile(program, [mode], {
        env: { PATH: process.env.PATH ?? '', LD_PRELOAD: shim, TSMIRROR_SHIM: shim, TSMIRROR_SOCK: proxy.socketPath }, timeout: 20_000,
      }, (_err, stdout) => resolve({ stdout }));
    });
    await new Promise((r) => setTimeout(r, 50)); // the last notice may still be in flight
    return { warnings, unseen: proxy.stats.unseen, stdout: run.stdout };
  } finally {
    await proxy.close();
  }
}

describe.skipIf(!existsSync('/usr/bin/gcc') || !existsSync(shim))('what the preload cannot see', () => {
  beforeAll(() => {
    const cc = spawnSync('gcc', ['-O1', '-o', program, join(root, 'native', 'shim', 'test', 'bypass.c')], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
  });

  it('io_uring, an open and a connect through syscall(): one warning line each, counted', async () => {
    const r = await underShim('bypass');
    expect(r.stdout).toBe('done\n');
    expect(r.warnings).toEqual([UNSEEN_WARNINGS.io_uring, UNSEEN_WARNINGS['raw-open'], UNSEEN_WARNINGS['raw-connect']]);
    expect(r.warnings[0]).toMatch(/^the program uses io_uring, which the preload cannot see: its connects and opens through io_uring go to this machine, not the pod/);
    expect(r.unseen).toBe(3);
  });

  it('the same work through libc: no warning', async () => {
    const r = await underShim('plain');
    expect(r.stdout).toBe('done\n');
    expect(r.warnings).toEqual([]);
    expect(r.unseen).toBe(0);
  });
});
