/**
 * Memory, as root, in two parts:
 *
 * `npm run bench:memory` (issue 16's figures): a pod server pushes 1 GiB to a program
 * reading 1 MiB/s (17 minutes), and a program pushes to a pod server that never reads
 * (held 60 s); prints how far the agent and the CLI grew above their RSS once the
 * connection was open, and exits 1 when either grew by 64 MiB or more. MEMORY_BYTES,
 * MEMORY_RATE (bytes/s) and MEMORY_HOLD (s) change the figures.
 *
 * `node dist/bench/memory.js goals` (in `npm run bench`; issue 13's goals, about a minute):
 * the agent's RSS per idle session (MEMORY_SESSIONS idle sessions, 20 unless told, against
 * none), and the CLI's peak RSS while a program reads 1 GiB (MEMORY_BYTES) from a pod
 * server as fast as it can; printed beside the goals (bench/goals.ts).
 */
import { Harness, type Pod } from '../test/harness/harness.js';
import { startAgentProcess, type AgentProcess } from '../test/e2e/tsm.js';
import { addMemoryServer, formatMemory, idleSessions, neverReads, slowReader } from '../test/e2e/memory.js';
import { goalTable } from './goals.js';

const LIMIT = 64 * 2 ** 20;
const MiB = 2 ** 20;

/** Runs `part` with an agent and the memory server pod, then cleans up. */
async function withMemoryServer(name: string, part: (agent: AgentProcess, server: Pod) => Promise<number>): Promise<number> {
  const harness = await Harness.create({ name });
  const agent = await startAgentProcess();
  try {
    return await part(agent, await addMemoryServer(harness));
  } finally {
    await agent.stop();
    await harness.destroy();
  }
}

async function backPressure(agent: AgentProcess, server: Pod): Promise<number> {
  const bytes = Number(process.env.MEMORY_BYTES ?? 2 ** 30);
  const rate = Number(process.env.MEMORY_RATE ?? 2 ** 20);
  const hold = Number(process.env.MEMORY_HOLD ?? 60);
  let ok = true;
  const slow = await slowReader(agent, server, bytes, rate);
  console.log(formatMemory(`slow reader (${(bytes / MiB).toFixed(0)} MiB at ${(rate / MiB).toFixed(1)} MiB/s)`, slow));
  ok &&= slow.programSaid === `read ${bytes}` && slow.agentGrowth < LIMIT && slow.cliGrowth < LIMIT;
  const sink = await neverReads(agent, server, hold);
  console.log(formatMemory(`peer never reads (held ${hold} s)`, sink));
  ok &&= sink.agentGrowth < LIMIT && sink.cliGrowth < LIMIT;
  console.log(ok ? 'OK: each grew by less than 64 MiB' : 'FAILED: 64 MiB or more');
  return ok ? 0 : 1;
}

async function goals(agent: AgentProcess, server: Pod): Promise<number> {
  const sessions = Number(process.env.MEMORY_SESSIONS ?? 20);
  const bytes = Number(process.env.MEMORY_BYTES ?? 2 ** 30);
  const idle = await idleSessions(agent, server, sessions);
  console.log(`agent RSS: ${(idle.agentBefore / MiB).toFixed(1)} MiB with no session, ${(idle.agentWith / MiB).toFixed(1)} MiB with ${sessions} idle sessions (${((idle.agentWith - idle.agentBefore) / sessions / 1024).toFixed(0)} KiB each)`);
  const transfer = await slowReader(agent, server, bytes, 1e12);
  if (transfer.programSaid !== `read ${bytes}`) throw new Error(`the transfer failed: ${transfer.programSaid}`);
  console.log(formatMemory(`a program reading ${(bytes / MiB).toFixed(0)} MiB from the pod as fast as it can`, transfer));
  process.stdout.write(goalTable('memory', [
    { what: 'agent RSS per idle session', value: idle.perSession / MiB, unit: 'MiB', limit: 10, kind: 'atMost', rule: `${sessions} idle sessions against none` },
    { what: `CLI peak RSS, ${(bytes / MiB).toFixed(0)} MiB transfer`, value: (transfer.cliBaseline + transfer.cliGrowth) / MiB, unit: 'MiB', limit: 100, kind: 'atMost', rule: 'sampled every 100 ms' },
  ]));
  return 0;
}

const goalsPart = process.argv[2] === 'goals';
withMemoryServer(goalsPart ? 'bench-memgoal' : 'bench-memory', goalsPart ? goals : backPressure).then((code) => process.exit(code), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
