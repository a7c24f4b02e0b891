/**
 * Bulk transfers through the session: a fast 200 MB download arrives intact, and a slow
 * reader (curl --limit-rate) of 60 MB keeps the CLI and the agent under 200 MiB RSS,
 * because each stream's window bounds what is buffered. (The 1 GiB variant with a
 * second stream's round trip is test/e2e/flow-control.wip.ts, not yet passing.)
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { cliPath, rssBytes, startAgentProcess, tsmExec, type AgentProcess } from './tsm.js';

let harness: Harness;
let big: Pod;
let agent: AgentProcess;

beforeAll(async () => {
  harness = await Harness.create({ name: 'bulk' });
  big = await harness.addPod({ name: 'big', namespace: 'default', command: ['/usr/bin/python3', '-m', 'http.server', '8080', '--directory', '/data'], files: { '/data/ready': 'y' }, readyPort: 8080 });
  await harness.exec(big, ['sh', '-c', 'head -c 200000000 /dev/urandom > /data/big && sha256sum /data/big > /data/big.sum']);
  agent = await startAgentProcess();
});

afterAll(async () => {
  await agent?.stop();
  await harness?.destroy();
});

describe('bulk transfers', () => {
  it('a 200 MB download through the pod arrives intact', async () => {
    const want = (await harness.exec(big, ['cat', '/data/big.sum'])).stdout.split(' ')[0];
    const r = await tsmExec(agent.url, `pid/${big.pid}`, ['sh', '-c', 'curl -sS http://big:8080/big | sha256sum'], [], { timeoutMs: 60000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.split(' ')[0]).toBe(want);
  }, 90000);

  it('a slow reader keeps the CLI and the agent under 200 MiB RSS', async () => {
    const cli = spawn(process.execPath, [cliPath, 'exec', '-q', '--agent', agent.url, '--target', `pid/${big.pid}`, '--',
      'sh', '-c', 'curl -s --limit-rate 6M http://big:8080/big | head -c 60000000 | wc -c'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    cli.stdout.on('data', (d: Buffer) => (out += d.toString()));
    let maxCli = 0;
    let maxAgent = 0;
    const sampler = setInterval(() => {
      void rssBytes(cli.pid ?? 0).then((b) => (maxCli = Math.max(maxCli, b)), () => undefined);
      void rssBytes(agent.child.pid ?? 0).then((b) => (maxAgent = Math.max(maxAgent, b)), () => undefined);
    }, 100);
    const code = await new Promise<number | null>((r) => cli.once('close', r));
    clearInterval(sampler);
    expect(code).toBe(0);
    expect(out.trim()).toBe('60000000');
    expect(maxCli).toBeGreaterThan(0);
    expect(maxCli).toBeLessThan(200 * 1024 * 1024);
    expect(maxAgent).toBeLessThan(200 * 1024 * 1024);
  }, 90000);
});
