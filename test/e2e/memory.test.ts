/**
 * The CLI's and the agent's memory stay flat under back-pressure (CI sizes; the issue's
 * 1 GiB at 1 MiB/s: `npm run bench:memory`): a pod server pushing 256 MiB to a program that
 * reads far slower than the path carries, and a program pushing to a pod server that never
 * reads. Each process may grow by less than 64 MiB above where it stood once the
 * connection was open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { addMemoryServer, formatMemory, neverReads, slowReader } from './memory.js';
import { startAgentProcess, stopAll, type AgentProcess } from './tsm.js';

const LIMIT = 64 * 2 ** 20;
let harness: Harness;
let agent: AgentProcess;
let server: Pod;

beforeAll(async () => {
  harness = await Harness.create({ name: 'memory' });
  agent = await startAgentProcess();
  server = await addMemoryServer(harness);
}, 120000);

afterAll(() => stopAll({ agent, harness }));

describe('memory under back-pressure', () => {
  it('a pod server pushing 256 MiB to a program reading 16 MiB/s: every byte arrives, agent and CLI grow < 64 MiB', async () => {
    const r = await slowReader(agent, server, 256 * 2 ** 20, 16 * 2 ** 20);
    const report = formatMemory('slow reader', r);
    expect(r.programSaid, report).toBe(`read ${256 * 2 ** 20}`);
    expect(r.agentGrowth, report).toBeLessThan(LIMIT);
    expect(r.cliGrowth, report).toBeLessThan(LIMIT);
  }, 180000);

  it('a program pushing to a pod server that never reads: its writes block, agent and CLI grow < 64 MiB', async () => {
    const r = await neverReads(agent, server, 5);
    const report = formatMemory('never reads', r);
    const sent = Number(/blocked after (\d+)/.exec(r.programSaid)?.[1]);
    // What is in flight is bounded: the kernel's buffers on each hop and one stream window.
    expect(sent, report).toBeGreaterThan(0);
    expect(sent, report).toBeLessThan(64 * 2 ** 20);
    expect(r.agentGrowth, report).toBeLessThan(LIMIT);
    expect(r.cliGrowth, report).toBeLessThan(LIMIT);
  }, 180000);
});
