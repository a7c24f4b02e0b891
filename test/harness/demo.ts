/**
 * `npm run demo` (as root): builds the demo node (pods `db` and `api`),
 * prints how to reach it, and keeps it up until Ctrl-C (or exits at once with
 * `--once`). Everything is removed on exit.
 *
 * @module
 */
import { buildDemoNode } from './demo-pods.js';

async function main(): Promise<void> {
  const t0 = Date.now();
  const { harness, db, api } = await buildDemoNode();
  process.stdout.write(
    `local node ${harness.id} up in ${Date.now() - t0} ms: subnet ${harness.subnet} (${harness.subnet6}), DNS ${harness.dnsIp}\n`,
  );
  for (const p of [db, api]) {
    process.stdout.write(
      `  ${p.namespace}/${p.name}: pid ${p.pid} ip ${p.ip}${p.ipv6 !== undefined ? ` ${p.ipv6}` : ''} netns ${p.netns}\n` +
        `    container ${p.containerId}\n`,
    );
  }
  process.stdout.write(
    `try: nsenter -t ${api.pid} -n -m -- curl -s http://db:8080/\n` +
      `     ip netns exec ${api.netns} curl -s http://${db.ip}:8080/\n`,
  );
  if (process.argv.includes('--once')) {
    const r = await harness.exec(api, ['curl', '-sS', 'http://db:8080/']);
    process.stdout.write(`api -> db: ${r.stdout}`);
    await harness.destroy();
    return;
  }
  process.stdout.write('Ctrl-C to tear down\n');
  await new Promise<void>((resolve) => {
    // The harness's child processes do not keep the event loop alive; this does.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    const stop = (): void => {
      clearInterval(keepAlive);
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await harness.destroy();
  process.stdout.write('torn down\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
