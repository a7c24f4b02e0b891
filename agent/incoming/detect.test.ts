import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DETECT_MS, detectHttp, type DetectedProtocol } from './detect.js';
import { H2_PREFACE } from './http2.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A loopback connection: `client` is ours, `server` the accepted end detection reads. */
async function connection(): Promise<{ client: net.Socket; server: net.Socket }> {
  const listener = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const port = (listener.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect(port, '127.0.0.1');
  const server = await accepted;
  cleanup.push(() => {
    client.destroy();
    server.destroy();
    listener.close();
  });
  return { client, server };
}

/** What detection decides on `server`, with the bytes it read and whether it left the socket paused. */
function detect(server: net.Socket, waitMs?: number): Promise<{ kind: DetectedProtocol; start: string; paused: boolean; ms: number }> {
  const began = Date.now();
  return new Promise((resolve) => detectHttp(server, (start, kind) => resolve({ kind, start: start.toString('latin1'), paused: server.isPaused(), ms: Date.now() - began }), waitMs));
}

describe('protocol detection on a filtered port', () => {
  it('HTTP/1.x request line, even when it arrives a few bytes at a time', async () => {
    const { client, server } = await connection();
    const decided = detect(server);
    client.write('GE');
    await new Promise((r) => setTimeout(r, 30));
    client.write('T /x HTTP/1.1\r\nHost: a\r\n\r\n');
    const d = await decided;
    expect(d.kind).toBe('http1');
    expect(d.start.startsWith('GET /x HTTP/1.1')).toBe(true);
    expect(d.paused).toBe(true);
  });

  it('the HTTP/2 preface, waited for whole (its start looks like neither yet)', async () => {
    const { client, server } = await connection();
    const decided = detect(server);
    client.write(H2_PREFACE.subarray(0, 10));
    await new Promise((r) => setTimeout(r, 30));
    client.write(Buffer.concat([H2_PREFACE.subarray(10), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
    const d = await decided;
    expect(d.kind).toBe('h2');
    expect(Buffer.from(d.start, 'latin1').subarray(0, H2_PREFACE.byteLength).equals(H2_PREFACE)).toBe(true);
  });

  it('anything else goes to the app with the bytes read so far (a TLS ClientHello)', async () => {
    const { client, server } = await connection();
    const decided = detect(server);
    client.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]));
    const d = await decided;
    expect(d.kind).toBe('other');
    expect(Buffer.from(d.start, 'latin1')).toEqual(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]));
  });

  it('a client that sends nothing (server speaks first) is "other" after the wait, not before', async () => {
    const { server } = await connection();
    const d = await detect(server, 200);
    expect(d.kind).toBe('other');
    expect(d.start).toBe('');
    expect(d.ms).toBeGreaterThanOrEqual(190);
  });

  it('a client that closes before a decision is "other" at once', async () => {
    const { client, server } = await connection();
    const decided = detect(server);
    client.end('GE');
    const d = await decided;
    expect(d).toMatchObject({ kind: 'other', start: 'GE' });
    expect(d.ms).toBeLessThan(DETECT_MS);
  });
});
