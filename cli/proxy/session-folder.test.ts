import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createSessionFolder, sweepStaleSessionDirs } from './session-folder.js';

const dir = mkdtempSync(join(tmpdir(), 'tsm-sweep-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sweepStaleSessionDirs', () => {
  it('removes the folders of sessions whose CLI is gone, and nothing else', () => {
    const dead = spawnSync('true').pid ?? 0; // exited: its pid names no process now
    expect(dead).toBeGreaterThan(0);
    const stale = join(dir, `tsmirror-${dead}-aB3xYz`);
    mkdirSync(join(stale, 'empty-dir'), { recursive: true });
    chmodSync(join(stale, 'empty-dir'), 0o500);
    writeFileSync(join(stale, 'proxy.sock'), '');
    const live = join(dir, `tsmirror-${process.ppid}-aB3xYz`); // a running process
    const mine = join(dir, `tsmirror-${process.pid}-aB3xYz`);
    const old = join(dir, 'tsmirror-aB3xYz'); // an older name without a pid
    const other = join(dir, `tsmirror-${dead}-short`);
    const file = join(dir, `tsmirror-${dead}-Qw12er`);
    for (const d of [live, mine, old, other]) mkdirSync(d);
    writeFileSync(file, '');
    expect(sweepStaleSessionDirs(dir)).toBe(1);
    expect(existsSync(stale)).toBe(false);
    for (const kept of [live, mine, old, other, file]) expect(existsSync(kept), kept).toBe(true);
    expect(sweepStaleSessionDirs(join(dir, 'no-such-folder'))).toBe(0);
  });
});

describe('createSessionFolder', () => {
  it('makes a 0700 folder named with this CLI pid, which the sweep of another session would keep while we live', () => {
    const made = createSessionFolder(dir);
    expect(made.startsWith(join(dir, `tsmirror-${process.pid}-`))).toBe(true);
    expect(statSync(made).mode & 0o777).toBe(0o700);
    sweepStaleSessionDirs(dir);
    expect(existsSync(made)).toBe(true);
  });
});
