/**
 * The agent serves many sessions; a defective or vanished client ends its own session
 * only. Clients here are raw WebSockets speaking the protocol by hand.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { decodeAgentMessage, encode, MAX_FRAME_BYTES } from '../../protocol/codec.js';
import { PROTOCOL_VERSION, type AgentMessage, type ClientMessage } from '../../protocol/messages.js';
import { connectAgent } from '../../cli/agent-client.js';
import { readAgentKey } from '../../common/local-agent-key.js';
import { pollUntil, runCli, startAgentProcess, type AgentProcess } from './tsm.js';

let agent: AgentProcess;
let target: ChildProcess;

beforeAll(async () => {
  agent = await startAgentProcess(['--heartbeat-interval', '200', '--heartbeat-timeout', '1000']);
  target = spawn('sleep', ['600']);
});

afterAll(async () => {
  target.kill('SIGKILL');
  await agent.stop();
});

function hello(pid = target.pid ?? 0, protocol = PROTOCOL_VERSION): ClientMessage {
  return { type: 'hello', protocol, capabilities: ['tcp', 'udp', 'dns', 'env'], target: { kind: 'pid', pid }, client: { version: 'test', user: 'test', host: 'test' }, key: readAgentKey(agent.url) ?? '' };
}

/** Opens a raw session; resolves once the agent's hello arrived. */
async function rawSession(h = hello()): Promise<{ ws: WebSocket; messages: AgentMessage[]; closed: Promise<number> }> {
  const ws = new WebSocket(agent.url);
  const messages: AgentMessage[] = [];
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  ws.on('message', (d: Buffer) => messages.push(decodeAgentMessage(d)));
  await new Promise((r) => ws.once('open', r));
  ws.send(encode(h));
  await pollUntil(() => messages.some((m) => m.type === 'hello' || m.type === 'session.error'), 5000, 10);
  return { ws, messages, closed };
}

async function status(): Promise<{ sessions: Array<{ id: string }> }> {
  const res = await fetch(agent.url.replace('ws:', 'http:') + '/status');
  return (await res.json()) as { sessions: Array<{ id: string }> };
}

function sessionError(messages: AgentMessage[]): AgentMessage | undefined {
  return messages.find((m) => m.type === 'session.error');
}

describe('agent sessions', () => {
  it('a protocol version mismatch is an error naming both versions, not a hang', async () => {
    const s = await rawSession(hello(target.pid, PROTOCOL_VERSION + 41));
    const err = sessionError(s.messages);
    expect(err).toMatchObject({ code: 'TSM_ERR_VERSION' });
    expect((err as { message: string }).message).toContain(`protocol ${PROTOCOL_VERSION + 41}`);
    expect((err as { message: string }).message).toContain(`protocol ${PROTOCOL_VERSION}`);
    await s.closed;
  });

  it.each([
    ['garbage bytes', Buffer.from('this is not msgpack \xc1\xc1', 'latin1'), 'TSM_ERR_BAD_FRAME'],
    ['an unknown message type', encode({ type: 'launch.missiles', id: 1 } as never), 'TSM_ERR_UNKNOWN_MESSAGE'],
    ['a malformed request', encode({ type: 'tcp.connect', id: 'x' } as never), 'TSM_ERR_BAD_FRAME'],
    ['an oversized frame', Buffer.alloc(MAX_FRAME_BYTES + 1024, 0x90), 'TSM_ERR_FRAME_TOO_LARGE'],
  ])('%s ends that session with an error; the agent keeps serving the others', async (_what, frame, code) => {
    const bystander = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
    const bad = await rawSession();
    expect(bad.messages[0]?.type).toBe('hello');
    bad.ws.send(frame);
    const closeCode = await bad.closed;
    if (code === 'TSM_ERR_FRAME_TOO_LARGE') expect(closeCode).toBe(1009); // ws refuses it before decoding
    else expect(sessionError(bad.messages)).toMatchObject({ code });
    // The other session still works, and the agent still accepts new ones.
    const env = await bystander.request({ type: 'env.get' });
    expect(typeof env.env).toBe('object');
    const fresh = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
    fresh.close();
    bystander.close();
  });

  it('a client that stops answering is dropped after the heartbeat timeout, leaving nothing behind', async () => {
    const fdsBefore = readdirSync(`/proc/${agent.child.pid}/fd`).length;
    const s = await rawSession();
    const id = (s.messages[0] as { session: string }).session;
    expect((await status()).sessions.map((x) => x.id)).toContain(id);
    // Stop answering pings without closing the TCP connection (a laptop that vanished).
    s.ws.pause();
    (s.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const started = Date.now();
    await pollUntil(async () => !(await status()).sessions.some((x) => x.id === id), 5000);
    const after = Date.now() - started;
    expect((await status()).sessions.map((x) => x.id)).not.toContain(id);
    expect(after).toBeGreaterThanOrEqual(700);
    s.ws.terminate();
    await new Promise((r) => setTimeout(r, 200));
    expect(readdirSync(`/proc/${agent.child.pid}/fd`).length).toBeLessThanOrEqual(fdsBefore);
    expect(agent.log()).toMatch(new RegExp(`session ${id} closed: TSM_ERR_HEARTBEAT`));
  });

  it('an unknown target is refused with a clear error', async () => {
    const s = await rawSession(hello(2 ** 30));
    expect(sessionError(s.messages)).toMatchObject({ code: 'TSM_ERR_TARGET_NOT_FOUND' });
  });

  it('a port already in use is a usage error naming the flag, not an internal error', async () => {
    const taken = new URL(agent.url).port;
    const listen = await runCli(['agent', '--listen', `127.0.0.1:${taken}`], { timeoutMs: 15000 });
    expect(listen.code).toBe(125);
    expect(listen.stderr).toContain(`cannot listen on 127.0.0.1:${taken} (--listen): that port is already in use; choose another --listen, or port 0 for any free one [TSM_ERR_USAGE]`);
    const health = await runCli(['agent', '--listen', '127.0.0.1:0', '--health-listen', `127.0.0.1:${taken}`], { timeoutMs: 15000 });
    expect(health.code).toBe(125);
    expect(health.stderr).toContain(`cannot listen on 127.0.0.1:${taken} (--health-listen): that port is already in use`);
  });
});
