/**
 * Targetless sessions: with no --target, the session's network is the agent's own. The
 * agent runs here as a pod of the harness (as the DaemonSet's agent pod would, with its
 * own network namespace), reached through a port-forward to its loopback.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode } from '../harness/demo-pods.js';
import { forwardToPod, type Forward } from '../harness/forward.js';
import { cliPath, run, runCli } from './tsm.js';
import { homedir } from 'node:os';
import { agentKeyPath, readAgentKey } from '../../common/local-agent-key.js';
import { rmSync } from 'node:fs';

let harness: Harness;
let agentPod: Pod;
let forward: Forward;

beforeAll(async () => {
  ({ harness } = await buildDemoNode({ name: 'tless' }));
  agentPod = await harness.addPod({
    name: 'agent', namespace: 'tsmirror-system', command: [process.execPath, cliPath, 'agent', '--listen', '127.0.0.1:7777'],
    env: { AGENT_ONLY: 'yes' }, readyPort: 7777,
  });
  forward = await forwardToPod(agentPod, 7777);
});

afterAll(async () => {
  await forward?.close();
  // The pod's agent lives in the pod's PID namespace: no sweep from here can judge its key.
  if (agentPod) rmSync(agentKeyPath(7777, `/proc/${agentPod.pid}/root${homedir()}`), { force: true });
  await harness?.destroy();
});

describe('targetless', () => {
  it("reaches cluster services and DNS through the agent's own network, says so once, imports no environment", async () => {
    // Reached through a forward on another port, the agent's key comes as a tunnel's user passes it.
    const key = readAgentKey('ws://127.0.0.1:7777', `/proc/${agentPod.pid}/root${homedir()}`);
    expect(key).toBeDefined();
    const r = await runCli(['exec', '--agent', `ws://127.0.0.1:${forward.port}`, '--',
      'sh', '-c', 'curl -sS http://db.default.svc.cluster.local:8080/ && echo "[${AGENT_ONLY:-}]"'], { timeoutMs: 30000, env: { ...process.env, TSMIRROR_AGENT_KEY: key } });
    expect(r.stdout).toBe('hello from db\n[]\n');
    expect(r.code).toBe(0);
    expect(r.stderr.match(/targetless/g)).toHaveLength(1);
    expect(r.stderr).toMatch(/targetless session: .*no incoming traffic, pod files or pod environment/);
    const direct = await run('curl', ['-sS', '--max-time', '3', 'http://db.default.svc.cluster.local:8080/']);
    expect(direct.code).not.toBe(0);
  });
});
