/**
 * `npm run bench:memory` (as root): the memory figures. A pod server pushes 1 GiB
 * to a program reading 1 MiB/s (17 minutes), and a program pushes to a pod server that
 * never reads (held 60 s); prints how far the agent and the CLI grew above their RSS once
 * the connection was open, and exits 1 when either grew by 64 MiB or more.
 *
 * MEMORY_BYTES, MEMORY_RATE (bytes/s) and MEMORY_HOLD (s) change the figures.
 */
import { Harness } from '../test/harness/harness.js';
import { startAgentProcess } from '../test/e2e/tsm.js';
import { addMemoryServer, formatMemory, neverReads, slowReader } from '../test/e2e/memory.js';

const LIMIT = 64 * 2 ** 20;

async function main(): Promise<number> {
  const bytes = Number(process.env.MEMORY_BYTES ?? 2 ** 30);
  const rate = Number(process.env.MEMORY_RATE ?? 2 ** 20);
  const hold = Number(process.env.MEMORY_HOLD ?? 60);
  const harness = await Harness.create({ name: 'bench-memory' });
  const agent = await startAgentProcess();
  try {
    const server = await addMemoryServer(harness);
    let ok = true;
    const slow = await slowReader(agent, server, bytes, rate);
    console.log(formatMemory(`slow reader (${(bytes / 2 ** 20).toFixed(0)} MiB at ${(rate / 2 ** 20).toFixed(1)} MiB/s)`, slow));
    ok &&= slow.programSaid === `read ${bytes}` && slow.agentGrowth < LIMIT && slow.cliGrowth < LIMIT;
    const sink = await neverReads(agent, server, hold);
    console.log(formatMemory(`peer never reads (held ${hold} s)`, sink));
    ok &&= sink.agentGrowth < LIMIT && sink.cliGrowth < LIMIT;
    console.log(ok ? 'OK: each grew by less than 64 MiB' : 'FAILED: 64 MiB or more');
    return ok ? 0 : 1;
  } finally {
    await agent.stop();
    await harness.destroy();
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
