import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { decodeClientMessage, encode } from './codec.js';
import type { AgentMessage, ClientMessage } from './messages.js';
import { Peer } from './peer.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A real WebSocket pair on loopback: the server side is a Peer with a session budget. */
async function pair(sessionBudget: number): Promise<{ server: Peer<ClientMessage, AgentMessage>; client: WebSocket }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  const serverPeer = new Promise<Peer<ClientMessage, AgentMessage>>((resolve) => {
    wss.once('connection', (ws) => resolve(new Peer<ClientMessage, AgentMessage>(ws, decodeClientMessage, { heartbeatMs: 60_000, heartbeatTimeoutMs: 120_000, sessionBudget })));
  });
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  await new Promise((r) => client.once('open', r));
  const server = await serverPeer;
  cleanup.push(() => { client.terminate(); server.close(); wss.close(); });
  return { server, client };
}

const until = async (done: () => boolean, ms = 5000): Promise<void> => {
  const started = Date.now();
  while (!done() && Date.now() - started < ms) await new Promise((r) => setTimeout(r, 10));
};

describe('peer: a session budget bounds what all streams hold together', () => {
  it('stops reading the WebSocket above the budget, resumes when half has drained, and loses nothing', async () => {
    const budget = 4 * 1024 * 1024;
    const { server, client } = await pair(budget);
    const streams = 16;
    for (let s = 1; s <= streams; s++) server.mux.open(s); // no socket yet: data waits in the mux
    const payload = Buffer.alloc(1024 * 1024 - 1, 7);
    for (let s = 1; s <= streams; s++) {
      for (let off = 0; off < payload.length; off += 64 * 1024) client.send(encode({ type: 'data', stream: s, data: payload.subarray(off, off + 64 * 1024) }));
    }
    // 16 MiB offered, each stream within its window: the agent holds about the budget, not all of it.
    await until(() => server.mux.held >= budget);
    await new Promise((r) => setTimeout(r, 300));
    expect(server.mux.held).toBeGreaterThan(budget);
    expect(server.mux.held).toBeLessThan(budget + 2 * 1024 * 1024);
    expect(client.bufferedAmount + server.mux.held).toBeGreaterThan(0);
    // Drain: bind a sink to every stream; everything arrives, in order, and nothing is cut off.
    const sinks = new Map<number, Buffer[]>();
    for (let s = 1; s <= streams; s++) {
      const sink = new PassThrough();
      const got: Buffer[] = [];
      sinks.set(s, got);
      sink.on('data', (d: Buffer) => got.push(d));
      server.mux.bindSocket(s, sink as never);
    }
    const total = (): number => [...sinks.values()].reduce((n, g) => n + g.reduce((m, b) => m + b.length, 0), 0);
    await until(() => total() === streams * payload.length, 10_000);
    expect(total()).toBe(streams * payload.length);
    const digest = createHash('sha256').update(payload).digest('hex');
    for (const got of sinks.values()) expect(createHash('sha256').update(Buffer.concat(got)).digest('hex')).toBe(digest);
    expect(server.closed).toBe(false);
  });
});
