/**
 * The preloaded shim against native/shim/test/fakeproxy.py, with real programs (a C
 * test program, curl, python3, node). The checks themselves live in
 * native/shim/test/run.sh so they can also be run by hand while working on the C code.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const shim = join(root, 'build', 'Release', 'libtsmirror.so');
const runner = join(root, 'native', 'shim', 'test', 'run.sh');
const tools = ['/usr/bin/python3', '/usr/bin/gcc', '/usr/bin/curl'].every((p) => existsSync(p));

describe.skipIf(!tools)('libtsmirror shim', () => {
  it('intercepts connect, resolvers, UDP, fork and exec in real programs', () => {
    const run = spawnSync(runner, [shim], { encoding: 'utf8', timeout: 300_000 });
    const failures = run.stdout.split('\n').filter((line) => line.startsWith('FAIL'));
    expect(failures, run.stdout + run.stderr).toEqual([]);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('ALL PASSED');
  }, 300_000);
});
