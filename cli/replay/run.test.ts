import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ReplayEntry } from './entries.js';
import { MAX_OPEN_CONNECTIONS, printable, replayEntries } from './run.js';

/** A real server that notes, per request, its connection and how many requests were in flight; answers `{"ok":true}`. */
interface Seen { conn: string; seq: number; socket: number; inFlight: number }
let server: http.Server | undefined;
afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

async function startServer(holdUntil: number): Promise<{ port: number; seen: Seen[]; maxOpen: () => number }> {
  const seen: Seen[] = [];
  let inFlight = 0;
  let open = 0;
  let maxOpen = 0;
  let socketIds = 0;
  const ids = new WeakMap<object, number>();
  const waiting: (() => void)[] = [];
  server = http.createServer((req, res) => {
    inFlight++;
    seen.push({ conn: String(req.headers['x-conn']), seq: Number(req.headers['x-seq']), socket: ids.get(req.socket)!, inFlight });
    const answer = (): void => {
      inFlight--;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    };
    // Held until `holdUntil` requests are in flight (or 2 s passed): concurrency shows without timing luck.
    waiting.push(answer);
    if (inFlight >= holdUntil) for (const w of waiting.splice(0)) w();
    else setTimeout(() => waiting.includes(answer) && (waiting.splice(waiting.indexOf(answer), 1), answer()), 2000);
  });
  server.on('connection', (s) => {
    ids.set(s, ++socketIds);
    maxOpen = Math.max(maxOpen, ++open);
    s.on('close', () => open--);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return { port: (server!.address() as AddressInfo).port, seen, maxOpen: () => maxOpen };
}

function entries(groups: number, perGroup: number): ReplayEntry[] {
  const out: ReplayEntry[] = [];
  for (let seq = 0; seq < perGroup; seq++) {
    for (let g = 0; g < groups; g++) {
      const index = out.length;
      out.push({
        index, connection: `c${g}`, started: Date.UTC(2026, 0, 1) + index, method: 'GET', target: '/', path: '/', authority: 'app', http2: false,
        headers: [['x-conn', `c${g}`], ['x-seq', String(seq)]], body: undefined, port: undefined,
        recorded: { status: 200, headers: [['Content-Type', 'application/json']], trailers: undefined, body: { kind: 'bytes', bytes: Buffer.from('{"ok": true}') }, mimeType: 'application/json', ms: 1 },
      });
    }
  }
  return out;
}

const send = { timeoutMs: 10_000, maxBody: 1 << 20, headerValues: new Map<string, string>() };
const compare = { ignoreHeaders: [], ignoreJsonPaths: [] };

describe('replay scheduling', () => {
  it('keeps at most N requests in flight, each recorded connection in order on one connection of its own', async () => {
    const s = await startServer(3);
    const results = await replayEntries(entries(6, 5), () => ({ host: '127.0.0.1', port: s.port }), 3, send, compare);
    expect(results.map((r) => r.outcome)).toEqual(Array(30).fill('same'));
    expect(Math.max(...s.seen.map((x) => x.inFlight))).toBe(3);
    for (let g = 0; g < 6; g++) {
      const mine = s.seen.filter((x) => x.conn === `c${g}`);
      expect(mine.map((x) => x.seq)).toEqual([0, 1, 2, 3, 4]);
      expect(new Set(mine.map((x) => x.socket)).size).toBe(1);
    }
    expect(new Set(s.seen.map((x) => x.socket)).size).toBe(6);
  });

  it('follows the recorded order with --concurrency 1', async () => {
    const s = await startServer(1);
    await replayEntries(entries(4, 3).reverse(), () => ({ host: '127.0.0.1', port: s.port }), 1, send, compare);
    expect(s.seen.map((x) => `${x.conn}/${x.seq}`)).toEqual(entries(4, 3).map((e) => `${e.headers[0]![1]}/${e.headers[1]![1]}`));
  });

  it(`keeps no more than ${MAX_OPEN_CONNECTIONS} connections open, however many the recording overlaps`, async () => {
    const s = await startServer(1);
    const results = await replayEntries(entries(300, 2), () => ({ host: '127.0.0.1', port: s.port }), 1, send, compare);
    expect(results.every((r) => r.outcome === 'same')).toBe(true);
    expect(s.maxOpen()).toBeLessThanOrEqual(MAX_OPEN_CONNECTIONS + 2); // +2: a close the server has not yet seen
    for (let g = 0; g < 300; g++) expect(s.seen.filter((x) => x.conn === `c${g}`).map((x) => x.seq)).toEqual([0, 1]);
  }, 60_000); // 600 requests on 300 connections: a second alone, much more on a busy machine
});

describe('output', () => {
  it('shows control characters from the file or the program as \\xNN', () => {
    expect(printable('a\x1b[2Jb\r\n\tc\x9b')).toBe('a\\x1b[2Jb\\x0d\n\tc\\x9b');
  });
});
