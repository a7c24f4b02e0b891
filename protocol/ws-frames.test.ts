import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { decodeAgentMessage, encode, encodeFrame } from './codec.js';
import { frameBytes, frameWriter, joinFrame, zeroMask, type Frame } from './ws-frames.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A real WebSocket pair on loopback, the client masking with the zero key as the CLI does. */
async function pair(): Promise<{ server: WebSocket; client: WebSocket }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const server = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, { perMessageDeflate: false, generateMask: zeroMask });
  await new Promise((r) => client.once('open', r));
  const s = await server;
  cleanup.push(() => { client.terminate(); s.terminate(); wss.close(); });
  return { server: s, client };
}

/** The bytes `write` puts on the WebSocket's socket. */
function wire(ws: WebSocket, write: () => void): Buffer {
  const socket = (ws as unknown as { _socket: { write: (c: Uint8Array, ...rest: unknown[]) => boolean } })._socket;
  const original = socket.write;
  const chunks: Buffer[] = [];
  socket.write = (c: Uint8Array) => {
    chunks.push(Buffer.from(c));
    return true;
  };
  try {
    write();
  } finally {
    socket.write = original;
  }
  return Buffer.concat(chunks);
}

// Lengths on each side of the WebSocket header's size steps (125/126, 65535/65536) and of the copy threshold.
const SIZES = [0, 1, 100, 115, 116, 1000, 1023, 1024, 4000, 65_500, 65_535, 65_536, 200_000];
const frames = (): Frame[] => SIZES.flatMap((n) => {
  const data = randomBytes(n);
  return [encodeFrame({ type: 'data', stream: 7, data }), encodeFrame({ type: 'data', stream: 70_000, data }), Buffer.from(encode({ type: 'data', stream: 3, data }))];
});

describe('ws-frames: frames written straight to the socket', () => {
  it('are byte for byte what ws.send writes, from the server and from a zero-mask client', async () => {
    const { server, client } = await pair();
    for (const ws of [server, client]) {
      const writer = frameWriter(ws);
      expect(writer.socket).toBeDefined();
      for (const frame of frames()) {
        const ours = wire(ws, () => writer.write(frame));
        const theirs = wire(ws, () => ws.send(joinFrame(frame), { binary: true }));
        expect(ours.equals(theirs)).toBe(true);
      }
    }
  });

  it('arrive whole and in order at the other ws, interleaved with ws.send', async () => {
    const { server, client } = await pair();
    for (const [from, to] of [[server, client], [client, server]] as const) {
      const writer = frameWriter(from);
      const sent = frames();
      const got: Buffer[] = [];
      const all = new Promise<void>((resolve) => to.on('message', (d: Buffer) => {
        got.push(d);
        if (got.length === sent.length + 1) resolve();
      }));
      for (const frame of sent) writer.write(frame);
      from.send(encode({ type: 'end', stream: 1 }), { binary: true });
      await all;
      to.removeAllListeners('message');
      sent.forEach((frame, i) => expect(got[i]?.equals(joinFrame(frame))).toBe(true));
      expect(decodeAgentMessage(got[sent.length] as Buffer)).toEqual({ type: 'end', stream: 1 });
      expect(got.slice(0, sent.length).reduce((n, b) => n + b.byteLength, 0)).toBe(sent.reduce((n, f) => n + frameBytes(f), 0));
    }
  });

  it('a data frame of 1 KiB or more keeps its payload, not a copy', () => {
    const data = randomBytes(4096);
    const frame = encodeFrame({ type: 'data', stream: 1, data });
    expect(Buffer.isBuffer(frame)).toBe(false);
    expect((frame as { body: Uint8Array }).body).toBe(data);
    expect(joinFrame(frame).equals(encode({ type: 'data', stream: 1, data }))).toBe(true);
  });
});
