/**
 * `npm run loadtest` (as root): one agent, 50 sessions (`tsmirror exec` each), 20
 * connections per session doing requests against one pod (each request a line and its
 * 256-byte answer; every connection opened anew after 50 requests, its name resolved
 * through the agent each time). Prints requests/s, p50/p99 latency, the agent's CPU and
 * its RSS per session; exits 1 on any failed request or session.
 *
 * LOADTEST_SESSIONS, LOADTEST_CONNECTIONS, LOADTEST_SECONDS change the figures.
 */
import { Harness } from '../test/harness/harness.js';
import { startAgentProcess } from '../test/e2e/tsm.js';
import { addLoadServer, formatLoad, runLoad } from '../test/e2e/load.js';

async function main(): Promise<number> {
  const sessions = Number(process.env.LOADTEST_SESSIONS ?? 50);
  const connections = Number(process.env.LOADTEST_CONNECTIONS ?? 20);
  const seconds = Number(process.env.LOADTEST_SECONDS ?? 20);
  const harness = await Harness.create({ name: 'loadtest' });
  const agent = await startAgentProcess();
  try {
    const server = await addLoadServer(harness);
    const r = await runLoad(agent, server, { sessions, connections, seconds, log: (l) => console.log(l) });
    console.log(formatLoad(r));
    const ok = r.failed === 0 && r.cliFailures.length === 0 && r.requests > 0;
    console.log(ok ? 'OK: no failure' : 'FAILED');
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
