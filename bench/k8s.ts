/**
 * `npm run bench` (as root), Kubernetes part: time from `tsmirror exec` to the program's
 * start (the program prints its own start time, `date +%s%N`), median of 20, for
 *
 * - the port-forward path: --target deployment/api, resolved through the (in-memory) API
 *   server, the agent reached through its port-forward WebSocket;
 * - the same Kubernetes target with --agent ws://… (API lookups, no port-forward);
 * - the direct path: --agent ws://… --target container/<id> (no API at all).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness } from '../test/harness/harness.js';
import { httpServerCommand } from '../test/harness/demo-pods.js';
import { FakeApiServer } from '../test/k8s/apiserver.js';
import { addAgentPod, addSessionAdmission, cliPath, startAgentProcess } from '../test/e2e/tsm.js';
import { runBench } from './run.js';

const RUNS = 20;

/** Milliseconds from spawning tsmirror to the program's first instruction (as `date` sees it). */
function startLatency(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.timeOrigin + performance.now();
    const child = spawn(process.execPath, [cliPath, 'exec', '--quiet', ...args, '--', '/bin/date', '+%s%N'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('close', (code) => {
      const started = Number(out.trim()) / 1e6;
      if (code !== 0 || !Number.isFinite(started) || started === 0) reject(new Error(`tsmirror exec failed (${code}): ${err}`));
      else resolve(started - t0);
    });
  });
}

async function median(args: string[]): Promise<{ median: number; p90: number }> {
  const xs: number[] = [];
  for (let i = 0; i < RUNS; i++) xs.push(await startLatency(args));
  xs.sort((a, b) => a - b);
  return { median: ((xs[RUNS / 2 - 1] ?? 0) + (xs[RUNS / 2] ?? 0)) / 2, p90: xs[Math.floor(RUNS * 0.9)] ?? 0 };
}

async function main(): Promise<void> {
  const harness = await Harness.create({ name: 'benchk8s' });
  const api = await FakeApiServer.start();
  const dir = mkdtempSync(join(tmpdir(), 'tsm-bench-k8s-'));
  // A cluster agent, as installed (sessions need their Session object), and an agent started
  // by hand for the direct path, which has no API at all.
  const agent = await startAgentProcess(['--kubeconfig', api.writeKubeconfig(dir, { file: 'agent' }), '--node-name', 'node-1']);
  const local = await startAgentProcess();
  try {
    const web = await harness.addPod({ name: 'web', namespace: 'shop', command: httpServerCommand(8080), readyPort: 8080 });
    api.addNode('node-1');
    addSessionAdmission(api);
    addAgentPod(api, agent, { name: 'tsmirror-agent-n1', node: 'node-1' });
    api.addDeployment('shop', 'api', [{ pod: web }]);
    const kubeconfig = api.writeKubeconfig(dir, { namespace: 'shop' });
    await startLatency(['--kubeconfig', kubeconfig, '--target', 'deployment/api']); // warm the page cache
    const forward = await median(['--kubeconfig', kubeconfig, '--target', 'deployment/api']);
    const kubeDirect = await median(['--kubeconfig', kubeconfig, '--target', 'deployment/api', '--agent', agent.url]);
    const direct = await median(['--agent', local.url, '--target', `container/${web.containerId}`]);
    process.stdout.write(`\nexec → program start, median (p90) of ${RUNS}:\n`);
    process.stdout.write(`  deployment/api through the API server's port-forward  ${forward.median.toFixed(1).padStart(7)} ms (${forward.p90.toFixed(1)} ms)\n`);
    process.stdout.write(`  deployment/api, --agent ws:// (API lookups only)       ${kubeDirect.median.toFixed(1).padStart(7)} ms (${kubeDirect.p90.toFixed(1)} ms)\n`);
    process.stdout.write(`  container/<id>, --agent ws:// (direct)                 ${direct.median.toFixed(1).padStart(7)} ms (${direct.p90.toFixed(1)} ms)\n`);
    process.stdout.write(`  port-forward path costs ${(forward.median - direct.median).toFixed(1)} ms more than direct (${(forward.median / direct.median).toFixed(2)}x)\n`);
  } finally {
    await agent.stop();
    await local.stop();
    await api.close();
    await harness.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench(main);
