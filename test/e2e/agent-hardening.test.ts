/**
 * A hostile client ends its own session, never the agent: regressions for the stream
 * rules a client could break (a stream opened twice, an id in the agent's range, a
 * flow-control window overrun). Each of these used to crash the agent process or make it
 * queue without bound. Also: DNS messages for the program's res_* functions that are not
 * DNS queries. Clients here are raw WebSockets speaking the protocol by hand.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { decodeAgentMessage, encode } from '../../protocol/codec.js';
import { AGENT_STREAM_BASE, PROTOCOL_VERSION, type AgentMessage, type ClientMessage } from '../../protocol/messages.js';
import { connectAgent, type AgentConnection } from '../../cli/agent-client.js';
import { readAgentKey } from '../../common/local-agent-key.js';
import { rssBytes, startAgentProcess, type AgentProcess } from './tsm.js';

let agent: AgentProcess;
let target: ChildProcess;
/** A loopback server that accepts and never reads (the "pod" server of the tests). */
let sink: net.Server;
let sinkPort: number;
const accepted: net.Socket[] = [];

beforeAll(async () => {
  agent = await startAgentProcess();
  target = spawn('sleep', ['600']);
  sink = net.createServer((s) => { s.pause(); s.on('error', () => undefined); accepted.push(s); });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  sinkPort = (sink.address() as net.AddressInfo).port;
});

afterAll(async () => {
  for (const s of accepted) s.destroy();
  sink.close();
  target.kill('SIGKILL');
  await agent.stop();
});

interface RawSession { ws: WebSocket; messages: AgentMessage[]; closed: Promise<number>; }

async function rawSession(): Promise<RawSession> {
  const ws = new WebSocket(agent.url);
  const messages: AgentMessage[] = [];
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  ws.on('message', (d: Buffer) => messages.push(decodeAgentMessage(d)));
  ws.on('error', () => undefined);
  await new Promise((r) => ws.once('open', r));
  const hello: ClientMessage = { type: 'hello', protocol: PROTOCOL_VERSION, capabilities: ['tcp', 'udp', 'dns', 'env'], target: { kind: 'pid', pid: target.pid ?? 0 }, client: { version: 'test', user: 'mallory', host: 'test' }, key: readAgentKey(agent.url) ?? '' };
  ws.send(encode(hello));
  await until(() => messages.some((m) => m.type === 'hello' || m.type === 'session.error'));
  return { ws, messages, closed };
}

async function until(done: () => boolean, ms = 5000): Promise<void> {
  const started = Date.now();
  while (!done() && Date.now() - started < ms) await new Promise((r) => setTimeout(r, 10));
}

const connect = (id: number, stream: number): ClientMessage =>
  ({ type: 'tcp.connect', id, stream, host: '127.0.0.1', port: sinkPort, family: 4, timeoutMs: 0 });

/** The agent process is alive and another session's requests are answered within 1 s. */
async function expectAgentServes(bystander: AgentConnection): Promise<void> {
  expect(agent.child.exitCode).toBeNull();
  const started = Date.now();
  const env = await bystander.request({ type: 'env.get' });
  expect(typeof env.env).toBe('object');
  expect(Date.now() - started).toBeLessThan(1000);
  const fresh = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
  fresh.close();
}

describe('a client that breaks the stream rules ends its own session only', () => {
  it('the same stream id opened twice', async () => {
    const bystander = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
    const bad = await rawSession();
    bad.ws.send(encode(connect(1, 5)));
    await until(() => bad.messages.some((m) => m.type === 'result'));
    bad.ws.send(encode(connect(2, 5)));
    await bad.closed;
    expect(bad.messages.find((m) => m.type === 'session.error')).toMatchObject({ code: 'TSM_ERR_PROTOCOL' });
    expect(agent.log()).toMatch(/closed: TSM_ERR_PROTOCOL stream 5 is already open/);
    await expectAgentServes(bystander);
    bystander.close();
  });

  it('two connects racing for one stream id', async () => {
    const bystander = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
    const bad = await rawSession();
    bad.ws.send(encode(connect(1, 9)));
    bad.ws.send(encode(connect(2, 9)));
    await bad.closed;
    expect(bad.messages.find((m) => m.type === 'session.error')).toMatchObject({ code: 'TSM_ERR_PROTOCOL' });
    await expectAgentServes(bystander);
    bystander.close();
  });

  it("a stream id in the agent's range", async () => {
    const bystander = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
    const bad = await rawSession();
    bad.ws.send(encode(connect(1, AGENT_STREAM_BASE)));
    await bad.closed;
    expect(bad.messages.find((m) => m.type === 'session.error')).toMatchObject({ code: 'TSM_ERR_PROTOCOL', message: expect.stringContaining("outside the client's range") });
    await expectAgentServes(bystander);
    bystander.close();
  });

  it('data past the window to a pod server that never reads: cut off, and the agent does not grow', async () => {
    const bystander = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
    const pid = agent.child.pid ?? 0;
    const rssBefore = await rssBytes(pid);
    const bad = await rawSession();
    bad.ws.send(encode(connect(1, 11)));
    await until(() => bad.messages.some((m) => m.type === 'result'));
    // 64 MiB offered at once, ignoring the 1 MiB window.
    const chunk = new Uint8Array(256 * 1024);
    for (let i = 0; i < 256 && bad.ws.readyState === WebSocket.OPEN; i++) {
      bad.ws.send(encode({ type: 'data', stream: 11, data: chunk }));
    }
    await bad.closed;
    // The agent's log says why (the session.error frame itself may be lost: the agent
    // closes a connection whose unread 64 MiB make the kernel reset it).
    const cutOff = /closed: TSM_ERR_PROTOCOL stream 11: the peer sent \d+ bytes against a 1048576-byte window/;
    await until(() => cutOff.test(agent.log()));
    expect(agent.log()).toMatch(cutOff);
    expect(await rssBytes(pid)).toBeLessThan(rssBefore + 48 * 1024 * 1024);
    await expectAgentServes(bystander);
    bystander.close();
  });
});

describe("DNS messages a client asks the agent to send (glibc's res_* functions)", () => {
  it('something that is not a DNS query is refused before anything is sent, and the session goes on', async () => {
    const bad = await rawSession();
    const notQueries = [
      Uint8Array.from([1, 2, 3]), // shorter than a header
      Uint8Array.from([0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0x64, 0x62, 0, 0, 1, 0, 1]), // a response
      Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, 0x64]), // a label past the end
    ];
    notQueries.forEach((packet, i) => bad.ws.send(encode({ type: 'dns.query', id: i + 1, packet })));
    await until(() => bad.messages.filter((m) => m.type === 'error').length === notQueries.length);
    for (let id = 1; id <= notQueries.length; id++) {
      expect(bad.messages.find((m) => m.type === 'error' && m.id === id)).toMatchObject({ code: 'TSM_ERR_DNS', errno: 22 });
    }
    bad.ws.send(encode({ type: 'dns.config', id: 9 }));
    await until(() => bad.messages.some((m) => m.type === 'result' && m.id === 9));
    expect(bad.messages.find((m) => m.type === 'result' && m.id === 9)).toMatchObject({ value: { nameservers: expect.any(Array), ndots: expect.any(Number) } });
    bad.ws.close();
  });

  it('a message larger than DNS allows ends that session only', async () => {
    const bystander = await connectAgent({ url: agent.url, target: { kind: 'pid', pid: target.pid ?? 0 } });
    const bad = await rawSession();
    bad.ws.send(encode({ type: 'dns.query', id: 1, packet: new Uint8Array(70000) }));
    await bad.closed;
    expect(bad.messages.find((m) => m.type === 'session.error')).toMatchObject({ code: 'TSM_ERR_BAD_FRAME' });
    await expectAgentServes(bystander);
    bystander.close();
  });
});
