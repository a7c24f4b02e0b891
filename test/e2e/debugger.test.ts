/**
 * Debugging under tsmirror: a program started with `node --inspect` keeps its debugger
 * port on this machine while its service port takes the pod's traffic.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode } from '../harness/demo-pods.js';
import { cliPath, run, startAgentProcess, stopCli, type AgentProcess } from './tsm.js';

let harness: Harness;
let api: Pod;
let db: Pod;
let agent: AgentProcess;

beforeAll(async () => {
  ({ harness, api, db } = await buildDemoNode({ name: 'debug' }));
  agent = await startAgentProcess();
});

afterAll(async () => {
  await agent?.stop();
  await harness?.destroy();
});

describe('debuggers', () => {
  it('node --inspect: the inspector port stays local, the service port is stolen', async () => {
    const cli = spawn(process.execPath, [cliPath, 'exec', '--agent', agent.url, '--target', `pid/${api.pid}`, '--steal', '--',
      'node', '--inspect=127.0.0.1:9229', '-e', "require('http').createServer((q, s) => s.end('local\\n')).listen(8080)"], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    cli.stderr.on('data', (d: Buffer) => (err += d.toString()));
    try {
      const until = Date.now() + 20000;
      while (!/stealing all traffic on port 8080/.test(err)) {
        if (Date.now() > until || cli.exitCode !== null) throw new Error(`no steal:\n${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(err).toContain('port 9229 stays local: it is a debugger port');
      const stolen = await harness.exec(db, ['curl', '-sS', '--max-time', '10', `http://${api.ip}:8080/`]);
      expect(stolen.stdout).toBe('local\n');
      const inspector = await run('curl', ['-sS', '--max-time', '5', 'http://127.0.0.1:9229/json/version']);
      expect(JSON.parse(inspector.stdout)).toHaveProperty('Protocol-Version');
      const fromPod = await harness.exec(db, ['curl', '-sS', '--max-time', '3', `http://${api.ip}:9229/json/version`]);
      expect(fromPod.code).not.toBe(0);
    } finally {
      await stopCli(cli);
    }
  });
});
