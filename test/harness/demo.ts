/**
 * `npm run demo` (as root): builds a local node with pods `db` and `api`, starts the
 * tsmirror agent, and runs `curl http://db:8080/` on this machine twice: without
 * tsmirror (it fails: `db` means nothing here) and under `tsmirror exec --target
 * pid/<api>` (it reaches db through api's network). Everything is removed at the end.
 */
import { startAgentProcess, run, tsmExec } from '../e2e/tsm.js';
import { buildDemoNode } from './demo-pods.js';

async function main(): Promise<void> {
  const t0 = Date.now();
  const { harness, db, api } = await buildDemoNode();
  const agent = await startAgentProcess();
  try {
    process.stdout.write(`local node up in ${Date.now() - t0} ms: pods default/db (${db.ip}) and default/api (pid ${api.pid}); agent at ${agent.url}\n\n`);
    process.stdout.write('$ curl -sS --max-time 3 http://db:8080/\n');
    const plain = await run('curl', ['-sS', '--max-time', '3', 'http://db:8080/']);
    process.stdout.write(`${plain.stdout}${plain.stderr}(exit ${plain.code}: this machine cannot resolve or reach db)\n\n`);
    process.stdout.write(`$ tsmirror exec --agent ${agent.url} --target pid/${api.pid} -- curl -sS http://db:8080/\n`);
    const mirrored = await tsmExec(agent.url, `pid/${api.pid}`, ['curl', '-sS', 'http://db:8080/']);
    process.stdout.write(`${mirrored.stdout}${mirrored.stderr}(exit ${mirrored.code})\n\n`);
    process.stdout.write(`$ tsmirror env --agent ${agent.url} --target pid/${api.pid}\n`);
    const env = await run(process.execPath, ['bin/tsmirror.js', 'env', '--agent', agent.url, '--target', `pid/${api.pid}`]);
    process.stdout.write(`${env.stdout}${env.stderr}\n`);
    process.exitCode = mirrored.code === 0 ? 0 : 1;
    if (agent.child.exitCode !== null) process.stdout.write(`agent log:\n${agent.log()}\n`);
  } finally {
    await agent.stop();
    await harness.destroy();
    process.stdout.write('demo node removed\n');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
