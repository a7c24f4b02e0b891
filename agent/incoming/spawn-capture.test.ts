/**
 * The addon's spawnCapture, which runs the agent's nft (agent/incoming/redirect.ts) without
 * forking the agent on its JavaScript thread.
 */
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../../native/index.js';

describe('spawnCapture', () => {
  const { spawnCapture } = loadAddon();

  it('feeds stdin and returns the exit code and both outputs', async () => {
    const big = 'x'.repeat(3 * 65536 + 7); // more than a pipe holds: written while the output is read
    const cat = await spawnCapture(['sh', '-c', 'cat; echo err >&2; exit 3'], big, 10000);
    expect(cat).toEqual({ code: 3, signal: null, stdout: big, stderr: 'err\n' });
  });

  it('says why a command could not start (code 127), like a shell', async () => {
    const r = await spawnCapture(['tsmirror-no-such-command'], '', 10000);
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/tsmirror-no-such-command: No such file or directory/);
  });

  it('kills a command that outlives its time limit, and reports signals', async () => {
    const slow = await spawnCapture(['sleep', '30'], '', 200);
    expect(slow).toMatchObject({ code: null, signal: 'SIGKILL' });
    expect(slow.stderr).toMatch(/no answer within the time limit/);
    expect(await spawnCapture(['sh', '-c', 'kill -TERM $$'], '', 10000)).toMatchObject({ code: null, signal: 'SIGTERM' });
  });

  it('keeps the event loop running while the command runs', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const r = await spawnCapture(['sleep', '0.3'], '', 10000);
    clearInterval(timer);
    expect(r.code).toBe(0);
    expect(ticks).toBeGreaterThan(5);
  });

  it('refuses malformed arguments with its usage', () => {
    expect(() => spawnCapture([], '', 1000)).toThrow(/usage: spawnCapture/);
    expect(() => spawnCapture(['a\0b'], '', 1000)).toThrow(/usage: spawnCapture/);
    expect(() => spawnCapture(['true'], '', 0)).toThrow(/usage: spawnCapture/);
  });
});
