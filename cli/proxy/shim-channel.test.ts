import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { packPlain, unpackPlain } from '../../protocol/codec.js';
import { encodeShimRequest, shimFrame, type ShimFrameError, type ShimReply } from '../../protocol/shim-wire.js';
import { serveShimChannel, type ShimCall, type ShimEndpoint, type ShimNotification } from './shim-channel.js';

const dir = mkdtempSync(join(tmpdir(), 'tsm-channel-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An endpoint that records what reaches it; `answer` waits `delayMs` of the request if it has one. */
class RecordingEndpoint implements ShimEndpoint {
  calls: ShimCall[] = [];
  notifications: ShimNotification[] = [];
  refused: ShimFrameError[] = [];
  undeliveredReplies: { request: ShimCall; reply: ShimReply }[] = [];
  async answer(request: ShimCall): Promise<ShimReply> {
    this.calls.push(request);
    if (request.op === 'resolve') await new Promise((r) => setTimeout(r, request.name === 'slow' ? 80 : 0));
    return { ok: true, action: 'remote', name: request.op === 'resolve' || request.op === 'reverse' ? (request.op === 'resolve' ? request.name : request.addr) : '' } as ShimReply;
  }
  notify(n: ShimNotification): void {
    this.notifications.push(n);
  }
  undelivered(request: ShimCall, reply: ShimReply): void {
    this.undeliveredReplies.push({ request, reply });
  }
  refuse(err: ShimFrameError): ShimReply | undefined {
    this.refused.push(err);
    return err.op === 'attach' ? undefined : { ok: false, errno: 22, message: err.message };
  }
}

let server: net.Server;
let endpoint: RecordingEndpoint;
let logged: string[];
let path: string;
let n = 0;

beforeEach(async () => {
  endpoint = new RecordingEndpoint();
  logged = [];
  path = join(dir, `s${n++}.sock`);
  server = net.createServer((c) => serveShimChannel(c, endpoint, { log: (l) => logged.push(l), maxFrameBytes: 4096 }));
  await new Promise<void>((r) => server.listen(path, r));
});
afterEach(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

/** A client playing the shim: sends raw bytes, collects decoded replies, notes the close. */
async function shim(): Promise<{ socket: net.Socket; replies: unknown[]; closed: Promise<void>; replyCount: (k: number) => Promise<void> }> {
  const socket = net.connect(path);
  await new Promise((r) => socket.once('connect', r));
  const replies: unknown[] = [];
  let buf = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.byteLength >= 4 && buf.byteLength >= 4 + buf.readUInt32BE(0)) {
      const len = buf.readUInt32BE(0);
      replies.push(unpackPlain(buf.subarray(4, 4 + len)));
      buf = buf.subarray(4 + len);
    }
  });
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  const replyCount = async (k: number): Promise<void> => {
    const end = Date.now() + 2000;
    while (replies.length < k && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  };
  return { socket, replies, closed, replyCount };
}

const frame = (value: Record<string, unknown>): Buffer => shimFrame(encodeShimRequest(value as never));

describe('shim channel framing', () => {
  it('answers requests in the order they came, even when a later one is answered first', async () => {
    const c = await shim();
    c.socket.write(Buffer.concat([frame({ op: 'resolve', name: 'slow' }), frame({ op: 'resolve', name: 'fast' })]));
    await c.replyCount(2);
    expect(c.replies.map((r) => (r as { name: string }).name)).toEqual(['slow', 'fast']);
    c.socket.destroy();
  });

  it('reassembles frames split across writes, byte by byte', async () => {
    const c = await shim();
    const bytes = frame({ op: 'reverse', family: 4, addr: '10.0.0.1' });
    for (const b of bytes) {
      c.socket.write(Buffer.of(b));
      await new Promise((r) => setImmediate(r));
    }
    await c.replyCount(1);
    expect(c.replies).toEqual([{ ok: true, action: 'remote', name: '10.0.0.1' }]);
    c.socket.destroy();
  });

  it('gives notifications to notify and sends no reply for them', async () => {
    const c = await shim();
    c.socket.write(Buffer.concat([frame({ op: 'attach', stream: 3, port: 4000, inode: 995270, uid: 1000 }), frame({ op: 'fs.release', handle: 2 }), frame({ op: 'resolve', name: 'db' })]));
    await c.replyCount(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(c.replies).toEqual([{ ok: true, action: 'remote', name: 'db' }]);
    expect(endpoint.notifications).toEqual([{ op: 'attach', stream: 3, port: 4000, inode: 995270, uid: 1000 }, { op: 'fs.release', handle: 2 }]);
    c.socket.destroy();
  });

  it('a request with a bad field is refused with the endpoint\'s reply; the channel stays up', async () => {
    const c = await shim();
    c.socket.write(Buffer.concat([
      frame({ op: 'connect', proto: 'tcp', family: 4, addr: '10.0.0.1', port: 70000 }),
      frame({ op: 'attach', stream: -1, port: 1 }), // a bad notification: refused without a reply
      frame({ op: 'fs.frobnicate' }),
      frame({ op: 'resolve', name: 'db' }),
    ]));
    await c.replyCount(3);
    expect(c.replies).toEqual([
      { ok: false, errno: 22, message: 'shim request "connect" has a bad "port"' },
      { ok: false, errno: 22, message: 'unknown shim op "fs.frobnicate"' },
      { ok: true, action: 'remote', name: 'db' },
    ]);
    expect(endpoint.refused.map((e) => e.op)).toEqual(['connect', 'attach', undefined]);
    expect(endpoint.calls).toHaveLength(1);
    c.socket.destroy();
  });

  it('an oversized frame drops the channel before its body arrives', async () => {
    const c = await shim();
    const header = Buffer.alloc(4);
    header.writeUInt32BE(4097);
    c.socket.write(header);
    await c.closed;
    expect(logged).toEqual(['shim sent a 4097-byte frame; dropping its channel']);
    expect(endpoint.calls).toHaveLength(0);
  });

  it('a frame that is not a msgpack map with an op drops the channel', async () => {
    for (const body of [Buffer.of(0xc1), packPlain([1, 2]), packPlain({ port: 1 })]) {
      const c = await shim();
      c.socket.write(Buffer.concat([shimFrame(body), frame({ op: 'resolve', name: 'after' })]));
      await c.closed;
      expect(c.replies).toEqual([]);
    }
    expect(logged).toEqual(Array(3).fill('shim sent a malformed frame; dropping its channel'));
    expect(endpoint.calls).toHaveLength(0);
  });

  it('the shim closing while it waits (a signal interrupted its connect): the answer goes to undelivered, nothing is written', async () => {
    const c = await shim();
    c.socket.write(frame({ op: 'resolve', name: 'slow' }));
    await new Promise((r) => setTimeout(r, 20));
    c.socket.destroy();
    const end = Date.now() + 2000;
    while (endpoint.undeliveredReplies.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    expect(endpoint.undeliveredReplies).toEqual([{ request: { op: 'resolve', name: 'slow' }, reply: { ok: true, action: 'remote', name: 'slow' } }]);
    expect(logged).toEqual([]);
  });
});
