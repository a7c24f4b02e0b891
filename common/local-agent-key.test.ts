import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { agentKeyDir, agentKeyPath, keyMatches, readAgentKey, sweepStaleAgentKeys, writeAgentKey } from './local-agent-key.js';

const homes: string[] = [];
afterEach(() => {
  for (const h of homes.splice(0)) rmSync(h, { recursive: true, force: true });
});
function home(): string {
  const h = mkdtempSync(join(tmpdir(), 'tsm-keyhome-'));
  homes.push(h);
  return h;
}

describe('local agent keys', () => {
  it('are written 0600 in a 0700 folder and found by the port of the URL', () => {
    const h = home();
    const { key, path, remove } = writeAgentKey('ws://127.0.0.1:4567', 4567, h);
    expect(path).toBe(agentKeyPath(4567, h));
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(agentKeyDir(h)).mode & 0o777).toBe(0o700);
    expect(readAgentKey('ws://localhost:4567/', h)).toBe(key);
    expect(readAgentKey('ws://127.0.0.1:4568', h)).toBeUndefined();
    remove();
    expect(existsSync(path)).toBe(false);
  });

  it('compare in constant time and refuse anything but the exact key', () => {
    expect(keyMatches('abc', 'abc')).toBe(true);
    expect(keyMatches('abd', 'abc')).toBe(false);
    expect(keyMatches(undefined, 'abc')).toBe(false);
    expect(keyMatches(42, 'abc')).toBe(false);
  });

  it("of agents that died are swept; a live agent's is kept", () => {
    const h = home();
    const dead = spawnSync('true').pid ?? 0; // a pid that has exited
    writeAgentKey('ws://127.0.0.1:1', 1, h);
    const pidns = readlinkSync('/proc/self/ns/pid');
    writeFileSync(agentKeyPath(2, h), JSON.stringify({ key: 'k', url: 'ws://127.0.0.1:2', pid: dead, pidns }), { mode: 0o600 });
    // An agent in another PID namespace is left alone: its pid means nothing here.
    writeFileSync(agentKeyPath(3, h), JSON.stringify({ key: 'k', url: 'ws://127.0.0.1:3', pid: dead, pidns: 'pid:[1]' }), { mode: 0o600 });
    expect(sweepStaleAgentKeys(agentKeyDir(h))).toBe(1);
    expect(existsSync(agentKeyPath(1, h))).toBe(true);
    expect(existsSync(agentKeyPath(2, h))).toBe(false);
    expect(existsSync(agentKeyPath(3, h))).toBe(true);
  });
});
