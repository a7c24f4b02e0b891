/**
 * An agent started by hand (local mode) serves only the user who started it: another
 * local user used to get any process's environment, files and traffic from it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connectAgent } from '../../cli/agent-client.js';
import { agentKeyDir, agentKeyPath, readAgentKey } from '../../common/local-agent-key.js';
import { decodeAgentMessage, encode } from '../../protocol/codec.js';
import { PROTOCOL_VERSION, type AgentMessage } from '../../protocol/messages.js';
import { cliPath, run, startAgentProcess, type AgentProcess } from './tsm.js';

let agent: AgentProcess;
let target: ChildProcess;
const setpriv = '/usr/bin/setpriv';

beforeAll(async () => {
  agent = await startAgentProcess();
  target = spawn('sleep', ['600']);
});

afterAll(async () => {
  target.kill('SIGKILL');
  await agent.stop();
});

describe('local mode: the agent serves only the user who started it', () => {
  it('writes its key where only that user can read it', () => {
    const port = Number(new URL(agent.url).port);
    const path = agentKeyPath(port);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(agentKeyDir()).mode & 0o777).toBe(0o700);
    expect(readAgentKey(agent.url)).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(agent.log()).toContain(`sessions need the key in ${path}`);
  });

  it('the same user connects without a flag', async () => {
    const session = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
    expect(typeof (await session.request({ type: 'env.get' })).env).toBe('object');
    session.close();
  });

  it.each([['no key', undefined], ['a wrong key', 'x'.repeat(43)]])('a session with %s is refused', async (_what, key) => {
    const ws = new WebSocket(agent.url);
    const messages: AgentMessage[] = [];
    ws.on('message', (d: Buffer) => messages.push(decodeAgentMessage(d)));
    const closed = new Promise((r) => ws.once('close', r));
    await new Promise((r) => ws.once('open', r));
    ws.send(encode({ type: 'hello', protocol: PROTOCOL_VERSION, capabilities: ['env'], target: { kind: 'pid', pid: target.pid ?? 0 }, client: { version: 't', user: 'mallory', host: 'h' }, ...(key ? { key } : {}) }));
    await closed;
    expect(messages.find((m) => m.type === 'hello')).toBeUndefined();
    expect(messages.find((m) => m.type === 'session.error')).toMatchObject({ code: 'TSM_ERR_UNAUTHENTICATED', message: expect.stringContaining('serves only the user who started it') });
  });

  it.skipIf(!existsSync(setpriv))('another local user (nobody) is refused, with a message saying why', async () => {
    const r = await run(setpriv, ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', process.execPath, cliPath, 'exec', '--agent', agent.url,
      '--target', `pid/${target.pid}`, '--', 'cat', '/etc/shadow'], { timeoutMs: 20000, env: { ...process.env, HOME: '/nonexistent' } });
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('[TSM_ERR_UNAUTHENTICATED]');
    expect(r.stderr).toContain('serves only the user who started it');
    expect(r.stdout).not.toContain('root:');
  });
});
