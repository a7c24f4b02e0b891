/**
 * Debugging under tsmirror: a program started with `node --inspect` keeps its debugger
 * port on this machine while its service port takes the pod's traffic.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode } from '../harness/demo-pods.js';
import { run, startAgentProcess, startCli, stopAll, stopCli, type AgentProcess } from './tsm.js';

let harness: Harness;
let api: Pod;
let db: Pod;
let agent: AgentProcess;

beforeAll(async () => {
  ({ harness, api, db } = await buildDemoNode({ name: 'debug' }));
  agent = await startAgentProcess();
});

afterAll(() => stopAll({ agent, harness }));

describe('debuggers', () => {
  it('node --inspect: the inspector port stays local, the service port is stolen', async () => {
    const cli = startCli(['exec', '--agent', agent.url, '--target', `pid/${api.pid}`, '--steal', '--',
      'node', '--inspect=127.0.0.1:9229', '-e', "require('http').createServer((q, s) => s.end('local\\n')).listen(8080)"]);
    try {
      await cli.waitFor(/stealing all traffic on port 8080/, 20000);
      expect(cli.err()).toContain('port 9229 stays local: it is a debugger port');
      const stolen = await harness.exec(db, ['curl', '-sS', '--max-time', '10', `http://${api.ip}:8080/`]);
      expect(stolen.stdout).toBe('local\n');
      const inspector = await run('curl', ['-sS', '--max-time', '5', 'http://127.0.0.1:9229/json/version']);
      expect(JSON.parse(inspector.stdout)).toHaveProperty('Protocol-Version');
      const fromPod = await harness.exec(db, ['curl', '-sS', '--max-time', '3', `http://${api.ip}:9229/json/version`]);
      expect(fromPod.code).not.toBe(0);
    } finally {
      await stopCli(cli.child);
    }
  });
});
