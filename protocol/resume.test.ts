/**
 * The resumable session layer (protocol/peer.ts) over real WebSockets on loopback that the
 * test cuts at random moments: every byte of every stream, both ways, and every message
 * arrives exactly once and in order, whatever was in flight at the cut.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { decodeAgentMessage, decodeClientMessage } from './codec.js';
import type { AgentMessage, ClientMessage } from './messages.js';
import { Peer } from './peer.js';
import { streamPair } from '../common/stream-pair.js';
import type { Duplex } from 'node:stream';
import { TsmError } from './errors.js';

type Agent = Peer<ClientMessage, AgentMessage>;
type Client = Peer<AgentMessage, ClientMessage>;

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

const options = { heartbeatMs: 200, heartbeatTimeoutMs: 60_000 };

/** A WebSocket server on loopback; `connect()` gives both ends of one new connection. */
async function link(): Promise<{ connect: () => Promise<{ agentWs: WebSocket; clientWs: WebSocket }> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const port = (wss.address() as AddressInfo).port;
  const all: WebSocket[] = [];
  cleanup.push(() => {
    for (const ws of all) ws.terminate();
    wss.close();
  });
  return {
    connect: async () => {
      const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
      const clientWs = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
      await new Promise((r) => clientWs.once('open', r));
      const agentWs = await accepted;
      all.push(agentWs, clientWs);
      return { agentWs, clientWs };
    },
  };
}

const until = async (done: () => boolean, ms = 20_000): Promise<void> => {
  const started = Date.now();
  while (!done()) {
    if (Date.now() - started > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** The byte at `offset` of stream `id`, direction `dir`: any loss, duplicate or reordering shows. */
const byteAt = (id: number, dir: number, offset: number): number => (offset * 31 + id * 7 + dir * 101 + (offset >> 11)) & 0xff;

function pattern(id: number, dir: number, from: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = byteAt(id, dir, from + i);
  return b;
}

/** A deterministic random source (the test must be repeatable when it fails). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Writes `total` bytes of the pattern in random chunks with backpressure, then ends. */
async function writeAll(end: Duplex, id: number, dir: number, total: number, random: () => number): Promise<void> {
  let off = 0;
  while (off < total) {
    const n = Math.min(total - off, 1 + Math.floor(random() * 48 * 1024));
    const ok = end.write(pattern(id, dir, off, n));
    off += n;
    if (!ok) await new Promise((r) => end.once('drain', r));
    else if (random() < 0.3) await new Promise((r) => setImmediate(r));
  }
  end.end();
}

/** Checks what arrives against the pattern as it comes; resolves at the end with the count. */
function readAll(end: Duplex, id: number, dir: number): Promise<number> {
  let off = 0;
  return new Promise((resolve, reject) => {
    end.on('data', (chunk: Buffer) => {
      for (let i = 0; i < chunk.length; i++) {
        if (chunk[i] !== byteAt(id, dir, off + i)) {
          reject(new Error(`stream ${id} dir ${dir}: wrong byte at offset ${off + i}`));
          return;
        }
      }
      off += chunk.length;
    });
    end.on('end', () => resolve(off));
    end.on('error', reject);
  });
}

/**
 * The seeds of the random-cut run (each in the test's name, so a failure says which); others
 * with TSM_RESUME_SEEDS=1,2,3. Several, since what a cut catches in flight also depends on
 * timing: a loss that one run misses (issue 16: a stream's tail) another catches.
 */
const SEEDS = (process.env.TSM_RESUME_SEEDS ?? '20261202,5,7,14').split(',').map(Number);

describe('resumable session: random cuts lose, duplicate and reorder nothing', () => {
  it.each(SEEDS)('carries 8 streams both ways and 400 numbered requests across random cuts of the WebSocket (seed %i)', async (seed) => {
    const random = rng(seed);
    const net = await link();
    const first = await net.connect();
    const window = 256 * 1024;
    const agent: Agent = new Peer<ClientMessage, AgentMessage>(first.agentWs, decodeClientMessage, { ...options, mux: { window } });
    const client: Client = new Peer<AgentMessage, ClientMessage>(first.clientWs, decodeAgentMessage, { ...options, mux: { window } });
    agent.startResumable();
    client.startResumable();
    cleanup.push(() => { agent.abandon(undefined); client.abandon(undefined); });
    let closed = false;
    agent.once('closed', () => { closed = true; });
    client.once('closed', () => { closed = true; });

    // Requests one way, answers the other: each exactly once, in order.
    const requests: number[] = [];
    const answers: number[] = [];
    agent.on('message', (m: ClientMessage) => {
      if (m.type !== 'env.get') return;
      requests.push(m.id);
      agent.send({ type: 'result', id: m.id, value: { env: { n: String(m.id) } } });
    });
    client.on('message', (m: AgentMessage) => {
      if (m.type === 'result') answers.push(m.id);
    });

    const streams = 8;
    const perDirection = 1536 * 1024;
    const transfers: Array<Promise<unknown>> = [];
    for (let id = 1; id <= streams; id++) {
      const [agentSide, agentApp] = streamPair();
      const [clientSide, clientApp] = streamPair();
      agent.mux.open(id);
      client.mux.open(id);
      agent.mux.bindSocket(id, agentSide);
      client.mux.bindSocket(id, clientSide);
      transfers.push(writeAll(clientApp, id, 0, perDirection, random), readAll(agentApp, id, 0));
      transfers.push(writeAll(agentApp, id, 1, perDirection, random), readAll(clientApp, id, 1));
    }
    let done = false;
    const finished = Promise.all(transfers).finally(() => { done = true; });
    let nextRequest = 1;
    const asking = (async () => {
      while (nextRequest <= 400) {
        client.send({ type: 'env.get', id: nextRequest++ });
        await new Promise((r) => setTimeout(r, random() * 4));
      }
    })();

    // Cut the connection at random moments (either end, or a stall), then resume on a new one.
    let cuts = 0;
    let maxKept = 0;
    while (!done || nextRequest <= 400 || answers.length < 400) {
      await new Promise((r) => setTimeout(r, 10 + random() * 60));
      maxKept = Math.max(maxKept, agent.stats.keptBytes, client.stats.keptBytes);
      if (done && nextRequest > 400 && answers.length === 400) break;
      const victim = random() < 0.5 ? agent.ws : client.ws;
      victim?.terminate();
      await until(() => agent.disconnected && client.disconnected);
      cuts++;
      const next = await net.connect();
      // What each side received is what a resume frame would carry.
      const clientReceived = client.received;
      agent.attach(next.agentWs, clientReceived);
      client.attach(next.clientWs, agent.received);
      if (cuts > 200) throw new Error('too many cuts: the transfer does not progress');
    }
    await finished;
    await asking;
    const lengths = await Promise.all(transfers.filter((_, i) => i % 2 === 1));
    expect(lengths).toEqual(Array(streams * 2).fill(perDirection));
    expect(requests).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
    expect(answers).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
    expect(cuts).toBeGreaterThan(5);
    expect(agent.stats.resentBytes + client.stats.resentBytes).toBeGreaterThan(0);
    // What a side keeps for the peer is bounded by the streams' windows (plus small frames).
    expect(maxKept).toBeLessThan(streams * window * 1.1 + 256 * 1024);
    expect(closed).toBe(false);
  }, 120_000);

  it('delivers the tail of a stream whose app end closed during a cut while the tail waited for credit (issue 16)', async () => {
    const net = await link();
    const first = await net.connect();
    const window = 64 * 1024;
    const agent: Agent = new Peer<ClientMessage, AgentMessage>(first.agentWs, decodeClientMessage, { ...options, mux: { window } });
    const client: Client = new Peer<AgentMessage, ClientMessage>(first.clientWs, decodeAgentMessage, { ...options, mux: { window } });
    agent.startResumable();
    client.startResumable();
    cleanup.push(() => { agent.abandon(undefined); client.abandon(undefined); });
    const [agentSide, agentApp] = streamPair();
    const [clientSide, clientApp] = streamPair();
    agent.mux.open(1);
    client.mux.open(1);
    agent.mux.bindSocket(1, agentSide);
    client.mux.bindSocket(1, clientSide);
    const received: Buffer[] = [];
    clientApp.on('data', (c: Buffer) => received.push(c));
    const clientEnded = new Promise((r) => clientApp.once('end', r));
    // The client's direction ends first and the agent's app reads it to the end.
    agentApp.resume();
    const agentEnded = new Promise((r) => agentApp.once('end', r));
    clientApp.end();
    await agentEnded;
    first.clientWs.terminate();
    await until(() => agent.disconnected && client.disconnected);
    // During the cut the agent's app writes more than the window and ends: its end of the pair
    // is done both ways and closes, while the last 1000 bytes wait for credit.
    const payload = randomBytes(window + 1000);
    agentApp.end(payload);
    await until(() => agentApp.destroyed);
    const next = await net.connect();
    agent.attach(next.agentWs, client.received);
    client.attach(next.clientWs, agent.received);
    await clientEnded;
    expect(Buffer.concat(received).equals(payload)).toBe(true);
  });

  it('keeps numbering while disconnected: what is written during the gap arrives after the resume', async () => {
    const net = await link();
    const first = await net.connect();
    const agent: Agent = new Peer<ClientMessage, AgentMessage>(first.agentWs, decodeClientMessage, options);
    const client: Client = new Peer<AgentMessage, ClientMessage>(first.clientWs, decodeAgentMessage, options);
    agent.startResumable();
    client.startResumable();
    cleanup.push(() => { agent.abandon(undefined); client.abandon(undefined); });
    const disconnected: boolean[] = [];
    client.on('disconnected', (_err: TsmError, ended: boolean) => disconnected.push(ended));
    const seen: number[] = [];
    agent.on('message', (m: ClientMessage) => { if (m.type === 'env.get') seen.push(m.id); });
    client.send({ type: 'env.get', id: 1 });
    await until(() => seen.length === 1);
    first.agentWs.terminate();
    await until(() => agent.disconnected && client.disconnected);
    expect(disconnected).toEqual([false]); // a cut, not an end: resuming makes sense
    for (let id = 2; id <= 5; id++) client.send({ type: 'env.get', id });
    expect(client.stats.keptFrames).toBeGreaterThanOrEqual(4);
    const next = await net.connect();
    agent.attach(next.agentWs, client.received);
    client.attach(next.clientWs, agent.received);
    await until(() => seen.length === 5);
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    // Acknowledgements (pings every 200 ms here) empty what was kept.
    await until(() => client.stats.keptFrames === 0);
  });

  it('refuses a resume that claims frames never sent, and a normal close ends the session', async () => {
    const net = await link();
    const first = await net.connect();
    const agent: Agent = new Peer<ClientMessage, AgentMessage>(first.agentWs, decodeClientMessage, options);
    const client: Client = new Peer<AgentMessage, ClientMessage>(first.clientWs, decodeAgentMessage, options);
    agent.startResumable();
    client.startResumable();
    cleanup.push(() => { agent.abandon(undefined); client.abandon(undefined); });
    first.clientWs.terminate();
    await until(() => agent.disconnected && client.disconnected);
    const next = await net.connect();
    expect(() => agent.attach(next.agentWs, 5)).toThrow(/received 5 frames/);
    agent.attach(next.agentWs, 0);
    client.attach(next.clientWs, 0);
    const ended = new Promise<boolean>((resolve) => agent.once('disconnected', (_e: unknown, gone: boolean) => resolve(gone)));
    client.close();
    expect(await ended).toBe(true); // the owner ends it at once, no grace
  });

  it('a session that is not resumable ends with its connection, as before', async () => {
    const net = await link();
    const first = await net.connect();
    const agent: Agent = new Peer<ClientMessage, AgentMessage>(first.agentWs, decodeClientMessage, options);
    const closed = new Promise<TsmError | undefined>((resolve) => agent.once('closed', resolve));
    first.clientWs.terminate();
    expect((await closed)?.code).toBe('TSM_ERR_SESSION_CLOSED');
  });

  it('notices a stalled connection within the heartbeat timeout', async () => {
    const net = await link();
    const first = await net.connect();
    const agent: Agent = new Peer<ClientMessage, AgentMessage>(first.agentWs, decodeClientMessage, { heartbeatMs: 100, heartbeatTimeoutMs: 500 });
    agent.startResumable();
    cleanup.push(() => agent.abandon(undefined));
    // The client end never answers: its socket is paused (a stall, not a close).
    first.clientWs.pause();
    const started = Date.now();
    const why = await new Promise<TsmError>((resolve) => agent.once('disconnected', resolve));
    expect(why.code).toBe('TSM_ERR_HEARTBEAT');
    expect(Date.now() - started).toBeLessThan(2000);
  });
});
