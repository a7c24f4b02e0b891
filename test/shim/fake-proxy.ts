/**
 * A stand-in for the CLI's session proxy (docs/shim-ipc.md), for the shim's own suite
 * (native/shim/test/run.sh, test/shim/shim.test.ts). Every frame the shim sends is
 * decoded and checked by protocol/shim-wire.ts (decodeShimRequest), every op is handled
 * (ShimHandlers: a new op fails to compile until the fake answers it), and answers are
 * encoded by the same module, so the shim's C decoder reads exactly what the session
 * proxy would write.
 *
 * "Remote" is this machine: made-up pod addresses map to loopback servers started here.
 *   10.250.0.1:80   tcp -> a small HTTP server ("hello from remote <path>")
 *   10.250.0.1:7    tcp/udp -> echo servers
 *   10.250.0.1:81   -> ECONNREFUSED (111)
 *   any:53 udp      -> a fake DNS server (A answers 10.250.0.1 for every name)
 *   10.250.0.3:7    tcp -> a black hole: no answer for 30 s, then ETIMEDOUT (110)
 *   10.250.0.4:7    tcp -> the echo server, answered after 3 s (a slow pod connect)
 *   127.0.0.0/8, ::1 -> action local
 *   anything else   -> ENETUNREACH (101)
 * Names: db, web, *.svc.cluster.local -> 10.250.0.1; nx.test -> EAI_NONAME; again.test ->
 * EAI_AGAIN; v6.test -> fd00::1; everything else (localhost, ...) -> local.
 * Reverse: 10.250.0.1 -> db.default.svc.cluster.local; 127.x/::1 -> local; else EAI_NONAME.
 * Edge cases of the codec (shimtest's "codec" section): many.test -> 100 addresses (the
 * shim keeps 64); 10.250.0.1:82 -> ECONNREFUSED with a 320-character message;
 * 10.250.0.2 reverses to a 214-character name.
 * Incoming: one subscriber per port (a second listen gets EADDRINUSE); a connection from
 * 127.0.0.1:31999 stands for the pod client 10.250.0.9:5555 on 10.244.1.5:8080.
 * Files: every fs.* call is answered "unknown op" (EINVAL): the shim then reads locally.
 * glibc's resolver (res.config, res.send): nameservers 10.250.0.53 and fd00::53, search
 * default.svc.cluster.local svc.cluster.local cluster.local, ndots 5. Messages are answered
 * by podDnsAnswer: db/web.<ns>.svc.cluster.local have A 10.250.0.1 (10.250.0.2 when the
 * query carries an additional record: EDNS0's OPT) and SRV 0 0 8080
 * db.default.svc.cluster.local (and no AAAA), big.default.svc.cluster.local has TXT records
 * of 2,000 bytes in all; every other name is NXDOMAIN; servfail.test is SERVFAIL;
 * timeout.test gets ETIMEDOUT (no nameserver answered).
 *
 * usage: node dist/test/shim/fake-proxy.js SOCKET_PATH [LOG_PATH]
 * Prints "ready" once listening; LOG_PATH gets one line per request the shim sent.
 */
import { appendFileSync, rmSync } from 'node:fs';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import {
  decodeShimRequest, encodeShimReply, isShimNotification, shimFrame,
  type ShimCallOp, type ShimErrorReply, type ShimHandlers, type ShimReplyOf, type ShimRequest,
} from '../../protocol/shim-wire.js';

interface Target {
  host: string;
  port: number;
}

// ---- backends ("the pod's network") ----

function listening(server: net.Server | http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

function startHttp(): Promise<number> {
  const server = http.createServer((req, res) => {
    // Like Python's BaseHTTPRequestHandler: HTTP/1.0 manners (one request per connection), GET only.
    if (req.method !== 'GET') {
      res.writeHead(501, { Connection: 'close' }).end();
      return;
    }
    const body = Buffer.from(`hello from remote ${req.url ?? ''}\n`);
    res.writeHead(200, { 'Content-Length': String(body.length), Connection: 'close' });
    res.end(body);
  });
  return listening(server);
}

function startTcpEcho(): Promise<number> {
  const server = net.createServer((c) => {
    c.on('error', () => c.destroy());
    c.pipe(c);
  });
  return listening(server);
}

function startUdp(answer: (d: Buffer) => Buffer | undefined): Promise<number> {
  const s = dgram.createSocket('udp4');
  s.on('message', (d, from) => {
    const r = answer(d);
    if (r) s.send(r, from.port, from.address);
  });
  return new Promise((resolve) => s.bind(0, '127.0.0.1', () => resolve(s.address().port)));
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

/** An A answer of 10.250.0.1 for any name; an empty answer for other query types. */
function dnsAnswer(q: Buffer): Buffer | undefined {
  if (q.length < 12) return undefined;
  const tid = q.subarray(0, 2);
  let i = 12;
  while (q[i]) i += 1 + (q[i] ?? 0);
  const qend = i + 5;
  const qtype = q.readUInt16BE(i + 1);
  const question = q.subarray(12, qend);
  const flags = Buffer.from([0x81, 0x80]);
  if (qtype !== 1) return Buffer.concat([tid, flags, u16(1), u16(0), u16(0), u16(0), question]);
  const ttl = Buffer.alloc(4);
  ttl.writeUInt32BE(60);
  const answer = Buffer.concat([Buffer.from([0xc0, 0x0c]), u16(1), u16(1), ttl, u16(4), Buffer.from([10, 250, 0, 1])]);
  return Buffer.concat([tid, flags, u16(1), u16(1), u16(0), u16(0), question, answer]);
}

/** The name of a query's first question, lowercased, and where the question ends; undefined if malformed. */
function firstQuestion(q: Buffer): { name: string; type: number; end: number } | undefined {
  if (q.length < 12 || q.readUInt16BE(4) < 1) return undefined;
  const labels: string[] = [];
  let i = 12;
  while (i < q.length && q[i] !== 0) {
    const len = q[i] ?? 0;
    if (len > 63 || i + 1 + len > q.length) return undefined;
    labels.push(q.subarray(i + 1, i + 1 + len).toString('latin1').toLowerCase());
    i += 1 + len;
  }
  if (i + 5 > q.length) return undefined;
  return { name: labels.join('.'), type: q.readUInt16BE(i + 1), end: i + 5 };
}

/** The fake cluster's nameserver for res.send (see the header). */
function podDnsAnswer(q: Buffer): Buffer | 'timeout' {
  const question = firstQuestion(q);
  if (!question) return Buffer.concat([q.subarray(0, 2), Buffer.from([0x81, 0x81]), u16(0), u16(0), u16(0), u16(0)]); // FORMERR
  const head = (rcode: number, answers: number): Buffer => Buffer.concat([q.subarray(0, 2), Buffer.from([0x85, 0x80 | rcode]), u16(1), u16(answers), u16(0), u16(0)]);
  const body = q.subarray(12, question.end);
  const rr = (type: number, data: Buffer): Buffer => {
    const ttl = Buffer.alloc(4);
    ttl.writeUInt32BE(30);
    return Buffer.concat([Buffer.from([0xc0, 0x0c]), u16(type), u16(1), ttl, u16(data.length), data]);
  };
  const { name, type } = question;
  if (name === 'timeout.test') return 'timeout';
  if (name === 'servfail.test') return Buffer.concat([head(2, 0), body]);
  if (/^(db|web)\.[a-z0-9-]+\.svc\.cluster\.local$/.test(name)) {
    if (type === 1) return Buffer.concat([head(0, 1), body, rr(1, Buffer.from([10, 250, 0, q.readUInt16BE(10) > 0 ? 2 : 1]))]);
    if (type === 33) {
      const target = Buffer.concat([...'db.default.svc.cluster.local'.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
      return Buffer.concat([head(0, 1), body, rr(33, Buffer.concat([u16(0), u16(0), u16(8080), target]))]);
    }
    return Buffer.concat([head(0, 0), body]); // NODATA
  }
  if (name === 'big.default.svc.cluster.local' && type === 16) {
    const txt = (i: number): Buffer => rr(16, Buffer.concat([Buffer.from([199]), Buffer.alloc(199, 0x61 + i)]));
    return Buffer.concat([head(0, 10), body, ...Array.from({ length: 10 }, (_, i) => txt(i))]);
  }
  return Buffer.concat([head(3, 0), body]); // NXDOMAIN
}

// ---- the proxy ----

class FakeProxy {
  readonly #log: (line: string) => void;
  readonly #streams = new Map<number, net.Socket>(); // stream id -> remote connection
  readonly #attached = new Map<number, number>(); // shim's local port -> stream id
  readonly #awaitingAttach = new Map<number, (stream: number) => void>();
  readonly #subscribed = new Set<number>();
  #nextStream = 1;
  #nextChannel = 1;
  #http = 0;
  #echo = 0;
  #udpEcho = 0;
  #dns = 0;
  #pairPort = 0;

  constructor(logPath: string | undefined) {
    this.#log = logPath ? (line) => appendFileSync(logPath, line + '\n') : () => undefined;
  }

  async start(socketPath: string): Promise<void> {
    this.#http = await startHttp();
    this.#echo = await startTcpEcho();
    this.#udpEcho = await startUdp((d) => d);
    this.#dns = await startUdp(dnsAnswer);
    const pairing = net.createServer({ allowHalfOpen: true }, (c) => this.#pair(c));
    this.#pairPort = await listening(pairing);
    rmSync(socketPath, { force: true });
    const channels = net.createServer((c) => this.#serveChannel(c));
    await new Promise<void>((resolve) => channels.listen(socketPath, () => resolve()));
  }

  #tcpTarget(addr: string, port: number): Target | undefined {
    if (addr === '10.250.0.1' && port === 80) return { host: '127.0.0.1', port: this.#http };
    if (addr === '10.250.0.1' && port === 7) return { host: '127.0.0.1', port: this.#echo };
    if (addr === '10.250.0.1' && port === 81) return { host: '127.0.0.1', port: 1 }; // nobody listens: refused
    return undefined;
  }

  #udpTarget(addr: string, port: number): Target | undefined {
    if (port === 53) return { host: '127.0.0.1', port: this.#dns };
    if (addr === '10.250.0.1' && port === 7) return { host: '127.0.0.1', port: this.#udpEcho };
    return undefined;
  }

  #isLocal(addr: string): boolean {
    return addr.startsWith('127.') || addr === '::1';
  }

  /** No file is the pod's here: every fs.* call fails, and the shim then keeps files local. */
  static readonly #unknownOp: ShimErrorReply = { ok: false, errno: 22, message: 'unknown op' };

  readonly #handlers: ShimHandlers = {
    connect: async (m) => {
      if (this.#isLocal(m.addr)) return { ok: true, action: 'local' };
      if (m.addr === '10.250.0.1' && m.port === 82) return { ok: false, errno: 111, message: 'refused '.repeat(40) };
      if (m.proto === 'tcp' && m.addr === '10.250.0.3' && m.port === 7) {
        await delay(30_000);
        return { ok: false, errno: 110, message: 'pod connect timed out' };
      }
      if (m.proto === 'tcp' && m.addr === '10.250.0.4' && m.port === 7) {
        await delay(3_000);
        return this.#connectTcp({ host: '127.0.0.1', port: this.#echo });
      }
      if (m.proto === 'tcp') {
        const target = this.#tcpTarget(m.addr, m.port);
        if (!target) return { ok: false, errno: 101, message: 'no route in fake pod' };
        return this.#connectTcp(target);
      }
      const target = this.#udpTarget(m.addr, m.port);
      if (!target) return { ok: false, errno: 101, message: 'no route in fake pod' };
      return { ok: true, action: 'proxy', proxyAddr: '127.0.0.1', proxyPort: await this.#udpRelay(target), stream: 0 };
    },
    attach: (m) => this.#attach(m.port, m.stream),
    resolve: ({ name, family }) => {
      if (name === 'db' || name === 'web' || name.endsWith('.svc.cluster.local')) {
        if (family === 6) return { ok: false, eai: -5, message: 'no AAAA' };
        return { ok: true, action: 'remote', addrs: [{ family: 4, addr: '10.250.0.1' }], canonname: 'db.default.svc.cluster.local' };
      }
      if (name === 'v6.test') {
        if (family === 4) return { ok: false, eai: -5, message: 'no A' };
        // canonname is the wire's; Python's fake sent none, which the shim reads as "".
        return { ok: true, action: 'remote', addrs: [{ family: 6, addr: 'fd00::1' }], canonname: '' };
      }
      if (name === 'many.test') {
        const addrs = Array.from({ length: 100 }, (_, i) => ({ family: 4 as const, addr: `10.1.${i >> 8}.${i & 255}` }));
        return { ok: true, action: 'remote', addrs, canonname: 'many.default.svc.cluster.local' };
      }
      if (name === 'nx.test') return { ok: false, eai: -2, message: 'NXDOMAIN' };
      if (name === 'again.test') return { ok: false, eai: -3, message: 'timeout' };
      return { ok: true, action: 'local' };
    },
    reverse: (m) => {
      if (m.addr === '10.250.0.1') return { ok: true, action: 'remote', name: 'db.default.svc.cluster.local' };
      if (m.addr === '10.250.0.2') return { ok: true, action: 'remote', name: 'x'.repeat(200) + '.cluster.local' };
      if (this.#isLocal(m.addr)) return { ok: true, action: 'local' };
      return { ok: false, eai: -2, message: 'no PTR' };
    },
    listen: (m) => {
      // One subscriber per port, like an unfiltered steal: a second listen is refused.
      if (this.#subscribed.has(m.port)) {
        return { ok: false, errno: 98, message: `port ${m.port} is already stolen by someone@elsewhere` };
      }
      this.#subscribed.add(m.port);
      return { ok: true, action: 'remote' };
    },
    unlisten: (m) => {
      this.#subscribed.delete(m.port);
    },
    peer: (m) => {
      // A connection from 127.0.0.1:31999 stands for the pod client 10.250.0.9:5555.
      if (m.port === 31999) {
        return { ok: true, action: 'remote', addr: '10.250.0.9', port: 5555, localAddr: '10.244.1.5', localPort: 8080 };
      }
      return { ok: true, action: 'local' };
    },
    notice: () => undefined, // logged with every notification
    'res.config': () => ({
      ok: true, action: 'remote', nameservers: ['10.250.0.53', 'fd00::53'],
      search: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'], ndots: 5, timeoutMs: 2000, attempts: 2,
    }),
    'res.send': ({ query }) => {
      const answer = podDnsAnswer(Buffer.from(query));
      if (answer === 'timeout') return { ok: false, errno: 110, message: 'no nameserver of the pod (10.250.0.53, fd00::53) answered' };
      return { ok: true, answer };
    },
    'fs.config': () => FakeProxy.#unknownOp,
    'fs.open': () => FakeProxy.#unknownOp,
    'fs.fill': () => FakeProxy.#unknownOp,
    'fs.writeback': () => FakeProxy.#unknownOp,
    'fs.release': () => undefined,
    'fs.stat': () => FakeProxy.#unknownOp,
    'fs.access': () => FakeProxy.#unknownOp,
    'fs.readlink': () => FakeProxy.#unknownOp,
    'fs.readdir': () => FakeProxy.#unknownOp,
    'fs.change': () => FakeProxy.#unknownOp,
    'fs.truncate': () => FakeProxy.#unknownOp,
  };

  /** Opens the "pod's" connection now; the shim's socket is paired with it on attach. */
  #connectTcp(target: Target): Promise<ShimReplyOf['connect']> {
    return new Promise((resolve) => {
      const remote = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
      remote.once('connect', () => {
        remote.removeAllListeners('error');
        remote.on('error', () => undefined);
        const stream = this.#nextStream++;
        this.#streams.set(stream, remote);
        resolve({
          ok: true, action: 'proxy', proxyAddr: '127.0.0.1', proxyPort: this.#pairPort, stream,
          localAddr: '10.244.1.5', localPort: remote.localPort ?? 0,
        });
      });
      remote.once('error', (e: NodeJS.ErrnoException) => {
        remote.destroy();
        const errno = e.code && e.code in osConstants.errno ? osConstants.errno[e.code as keyof typeof osConstants.errno] : 5;
        resolve({ ok: false, errno, message: e.message });
      });
    });
  }

  /** A relay socket for one (socket, destination) flow; it closes after 120 s without a datagram. */
  #udpRelay(target: Target): Promise<number> {
    const relay = dgram.createSocket('udp4');
    let client: dgram.RemoteInfo | undefined;
    let idle: NodeJS.Timeout | undefined;
    const stillUsed = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => relay.close(), 120_000);
      idle.unref();
    };
    relay.on('error', () => relay.close());
    relay.on('message', (d, from) => {
      stillUsed();
      if (from.address === target.host && from.port === target.port) {
        if (client) relay.send(d, client.port, client.address);
      } else {
        client = from;
        relay.send(d, target.port, target.host);
      }
    });
    return new Promise((resolve) => relay.bind(0, '127.0.0.1', () => {
      stillUsed();
      resolve(relay.address().port);
    }));
  }

  #serveChannel(c: net.Socket): void {
    const channel = this.#nextChannel++;
    c.on('error', () => c.destroy());
    let buffer = Buffer.alloc(0);
    // The shim waits for each answer: requests on one channel are answered in order.
    let chain = Promise.resolve();
    c.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
        const frame = buffer.subarray(4, 4 + buffer.readUInt32BE(0));
        buffer = buffer.subarray(4 + frame.length);
        let request: ShimRequest;
        try {
          request = decodeShimRequest(frame);
        } catch (e) {
          this.#log(`channel ${channel} sent a bad frame: ${(e as Error).message}`);
          c.destroy();
          return;
        }
        if (isShimNotification(request.op)) {
          this.#log(`channel ${channel} ${request.op} ${JSON.stringify(request)}`);
          (this.#handlers[request.op] as (r: ShimRequest) => void)(request);
          continue;
        }
        const handler = this.#handlers[request.op] as (r: ShimRequest) => ShimReplyOf[ShimCallOp] | Promise<ShimReplyOf[ShimCallOp]>;
        chain = chain.then(async () => {
          const reply = await handler(request);
          this.#log(`channel ${channel} ${JSON.stringify(request)} -> ${JSON.stringify(reply)}`);
          if (!c.destroyed) c.write(shimFrame(encodeShimReply(reply)));
        });
      }
    });
  }

  #attach(port: number, stream: number): void {
    const waiting = this.#awaitingAttach.get(port);
    if (waiting) {
      this.#awaitingAttach.delete(port);
      waiting(stream);
    } else {
      this.#attached.set(port, stream);
    }
  }

  /** A shim socket connected to the pairing port: join it to its stream once attached (5 s at most). */
  #pair(c: net.Socket): void {
    c.on('error', () => undefined);
    const port = c.remotePort ?? 0;
    const join = (stream: number): void => {
      const remote = this.#streams.get(stream);
      this.#streams.delete(stream);
      if (!remote) {
        c.destroy();
        return;
      }
      pump(remote, c);
      pump(c, remote);
    };
    const stream = this.#attached.get(port);
    if (stream !== undefined) {
      this.#attached.delete(port);
      join(stream);
      return;
    }
    const timer = setTimeout(() => {
      this.#awaitingAttach.delete(port);
      this.#log(`accepted port ${port} never attached`);
      c.destroy();
    }, 5000);
    this.#awaitingAttach.set(port, (s) => {
      clearTimeout(timer);
      join(s);
    });
  }
}

/** Copies from → to; at from's end or error, shuts down to's sending side. */
function pump(from: net.Socket, to: net.Socket): void {
  from.on('error', () => to.end());
  from.pipe(to);
}

const [socketPath, logPath] = process.argv.slice(2);
if (!socketPath) {
  process.stderr.write('usage: node fake-proxy.js SOCKET_PATH [LOG_PATH]\n');
  process.exitCode = 2;
} else {
  await new FakeProxy(logPath).start(socketPath);
  process.stdout.write('ready\n');
}
