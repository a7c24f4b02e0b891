/**
 * `npm run loadtest` at a CI size: 5 sessions × 4 connections on one agent, every request
 * answered right, every session ending cleanly, and the agent back to its session count
 * and descriptors when they are gone. (The figures themselves: `npm run loadtest`.)
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { addLoadServer, formatLoad, runLoad } from './load.js';
import { pollUntil, startAgentProcess, stopAll, type AgentProcess } from './tsm.js';

let harness: Harness;
let agent: AgentProcess;
let server: Pod;

beforeAll(async () => {
  harness = await Harness.create({ name: 'load' });
  agent = await startAgentProcess();
  server = await addLoadServer(harness);
}, 120000);

afterAll(() => stopAll({ agent, harness }));

describe('load', () => {
  it('5 sessions × 4 connections doing requests on one agent: no failure; the agent keeps nothing afterwards', async () => {
    const sessionsNow = async (): Promise<number> => ((await (await fetch(`${agent.url.replace('ws:', 'http:')}/status`)).json()) as { sessions: unknown[] }).sessions.length;
    const fds = (): number => readdirSync(`/proc/${agent.child.pid}/fd`).length;
    // One session first: what the agent opens once, on first use (its own netns's fd, …), is not a leak.
    await runLoad(agent, server, { sessions: 1, connections: 1, seconds: 0.5 });
    await pollUntil(async () => (await sessionsNow()) === 0, 10000);
    const fdsBefore = fds();
    const r = await runLoad(agent, server, { sessions: 5, connections: 4, seconds: 4, reconnectEvery: 20 });
    const report = formatLoad(r);
    expect(r.cliFailures, report).toEqual([]);
    expect(r.failures, report).toEqual([]);
    expect(r.failed, report).toBe(0);
    // Each of the 20 connections did requests, and opened anew after every 20.
    expect(r.requests, report).toBeGreaterThan(200);
    expect(await pollUntil(async () => (await sessionsNow()) === 0, 10000)).toBe(true);
    const links = (): string[] => readdirSync(`/proc/${agent.child.pid}/fd`).map((fd) => { try { return readlinkSync(`/proc/${agent.child.pid}/fd/${fd}`); } catch { return '?'; } });
    const settled = await pollUntil(() => fds() <= fdsBefore, 5000, 100);
    expect(settled, `before ${fdsBefore}, now ${fds()}: ${links().join(' ')}`).toBe(true);
  }, 240000);
});
