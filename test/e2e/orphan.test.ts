/**
 * Never orphaned: a SIGKILLed CLI takes with it, within a second, its program and every
 * process the program started — a shell's foreground and background commands, and one
 * that made itself a new session (setsid, as a daemon does) — whatever their parent is by
 * then. A program that ends normally leaves no watchdog behind.
 * (The program alone, with and without --watch: test/e2e/outgoing.test.ts.)
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { httpServerCommand } from '../harness/demo-pods.js';
import { cliPath, pollUntil, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

let harness: Harness;
let agent: AgentProcess;
let pod: Pod;

beforeAll(async () => {
  harness = await Harness.create({ name: 'orphan' });
  agent = await startAgentProcess();
  pod = await harness.addPod({ name: 'web', namespace: 'default', command: httpServerCommand(8080), readyPort: 8080 });
}, 120000);

afterAll(() => stopAll({ agent, harness }));

/** Processes whose command line is exactly `argv` (NUL-separated in /proc). */
function pidsOf(argv: string[]): number[] {
  const want = `${argv.join('\0')}\0`;
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === want && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  });
}

/** Watchdogs (tsmirror-launch --watchdog) still running. */
const watchdogs = (): number[] => readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number).filter((pid) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('tsmirror-watchdog\0--watchdog\0');
  } catch {
    return false;
  }
});

describe('never orphaned', () => {
  it('SIGKILL of the CLI: the program and everything it started are gone within 1 s', async () => {
    // A shell (the program) with a foreground command, a background one, and a daemon in its own session.
    const script = 'sleep 6101 & setsid sleep 6102 & sleep 6103; true';
    const cli = spawn(process.execPath, [cliPath, 'exec', '-q', '--agent', agent.url, '--target', `pid/${pod.pid}`, '--', 'sh', '-c', script], { stdio: 'ignore' });
    const all = (): number[] => [...pidsOf(['sh', '-c', script]), ...pidsOf(['sleep', '6101']), ...pidsOf(['sleep', '6102']), ...pidsOf(['sleep', '6103'])];
    try {
      expect(await pollUntil(() => all().length === 4, 20000, 20), `started: ${all().join(' ')}`).toBe(true);
      cli.kill('SIGKILL');
      const killedAt = Date.now();
      const gone = await pollUntil(() => all().length === 0, 5000, 10); // bounded: a hang detector
      const ms = Date.now() - killedAt;
      expect(gone, `left: ${all().join(' ')}`).toBe(true);
      expect(ms).toBeLessThan(1000);
      expect(await pollUntil(() => watchdogs().length === 0, 2000)).toBe(true);
    } finally {
      for (const pid of all()) process.kill(pid, 'SIGKILL');
    }
  }, 40000);

  it('a program that ends by itself: its exit code as before, no watchdog left, what it left running is left alone', async () => {
    const before = watchdogs().length;
    const r = await tsmExec(agent.url, `pid/${pod.pid}`, ['sh', '-c', 'setsid sleep 6104 </dev/null >/dev/null 2>&1 & exit 7']);
    expect(r.code, r.stderr).toBe(7);
    try {
      expect(await pollUntil(() => watchdogs().length <= before, 2000)).toBe(true);
      // The CLI ended normally: nothing kills the session's processes (as before).
      await new Promise((r) => setTimeout(r, 300));
      expect(pidsOf(['sleep', '6104'])).toHaveLength(1);
    } finally {
      for (const pid of pidsOf(['sleep', '6104'])) process.kill(pid, 'SIGKILL');
    }
  }, 40000);
});
