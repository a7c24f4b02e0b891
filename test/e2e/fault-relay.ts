/**
 * A TCP relay that puts the faults of a real network between two processes (the CLI and the
 * agent, or the CLI and the API server), for the tests of sessions that survive them:
 *
 * - `reset(ms)`: every connection is reset (RST, as a NAT box or load balancer that forgot
 *   it does) and new connections are refused (the port is closed: ECONNREFUSED) for `ms`.
 * - `stall(ms?)`: nothing is forwarded in either direction, nothing is closed (a laptop
 *   asleep, a Wi-Fi hand-over, a black-holed route); connections made meanwhile are
 *   accepted by the kernel and wait, as a SYN retransmitted until the route is back would.
 *   What was held is forwarded, in order, when the stall ends.
 * - `slow({ bytesPerSecond, delayMs })`: each direction is throttled and/or delayed.
 * - `delayConnects([…ms])`: the next connection attempts reach the upstream after these
 *   delays, so a later attempt can arrive before an earlier one (`reorderNext(n)`).
 *
 * Bytes are never lost, duplicated or reordered within a connection by the relay itself
 * except by `reset`, which drops what was in flight, as a reset does.
 */
import * as net from 'node:net';

export interface Upstream {
  host: string;
  port: number;
}

export interface SlowSettings {
  /** Per direction and connection; 0 or absent: no limit. */
  bytesPerSecond?: number;
  /** Added to every chunk, per direction (latency). */
  delayMs?: number;
}

export interface RelayStats {
  /** Connections accepted and relayed (not those refused during a reset). */
  accepted: number;
  /** Connections currently open (client side). */
  open: number;
  /** Connections reset by `reset()`. */
  reset: number;
  /** Bytes forwarded client → upstream and upstream → client. */
  up: number;
  down: number;
}

/** One direction of one relayed connection: a FIFO that can be held, delayed and throttled. */
class Pipe {
  readonly #queue: Array<{ data: Buffer; at: number }> = [];
  #queued = 0;
  #timer: NodeJS.Timeout | undefined;
  #ended = false;
  #endSent = false;
  #draining = false;
  #flushed = false;
  /** Called once the end has been handed to the destination's kernel. */
  onFlushed: (() => void) | undefined;
  /** When the next chunk may leave under the rate limit. */
  #nextAt = 0;

  constructor(
    private readonly from: net.Socket,
    private readonly to: () => net.Socket | undefined,
    private readonly relay: FaultRelay,
    private readonly count: (n: number) => void,
  ) {
    from.on('data', (d: Buffer) => {
      this.#queue.push({ data: d, at: Date.now() });
      this.#queued += d.length;
      if (this.#queued > HELD_MAX) from.pause(); // back-pressure while held
      this.pump();
    });
    from.on('end', () => {
      this.#ended = true;
      this.pump();
    });
  }

  /** Forwards what may leave now; schedules itself again when held back by time. */
  pump(): void {
    if (this.#timer) return;
    const to = this.to();
    if (!to || to.destroyed || to.connecting || this.relay.stalled) return;
    if (to.writableNeedDrain) return this.#awaitDrain(to);
    const { bytesPerSecond = 0, delayMs = 0 } = this.relay.slowSettings;
    for (let head = this.#queue[0]; head; head = this.#queue[0]) {
      const now = Date.now();
      const wait = Math.max(this.#nextAt - now, head.at + delayMs - now, 0);
      if (wait > 0) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.pump();
        }, wait);
        return;
      }
      let chunk = head.data;
      if (bytesPerSecond > 0) {
        // At most ~10 ms worth at a time, so the rate is smooth.
        const max = Math.max(Math.floor(bytesPerSecond / 100), 1);
        if (chunk.length > max) {
          head.data = chunk.subarray(max);
          chunk = chunk.subarray(0, max);
        } else this.#queue.shift();
        this.#nextAt = Math.max(this.#nextAt, now) + (chunk.length * 1000) / bytesPerSecond;
      } else this.#queue.shift();
      this.#queued -= chunk.length;
      this.count(chunk.length);
      if (!to.write(chunk)) {
        // Keep the rest here until the kernel takes more; stop reading past HELD_MAX.
        this.#awaitDrain(to);
        return;
      }
    }
    if (this.#queued <= HELD_MAX && this.from.isPaused()) this.from.resume();
    if (this.#ended && !this.#endSent) {
      this.#endSent = true;
      to.end(() => {
        this.#flushed = true;
        this.onFlushed?.();
      });
    }
  }

  /** Nothing left to send: what came is sent, and the end too if it came. */
  get idle(): boolean {
    return this.#queue.length === 0 && (!this.#ended || this.#flushed);
  }

  #awaitDrain(to: net.Socket): void {
    if (this.#queued > HELD_MAX) this.from.pause();
    if (this.#draining) return;
    this.#draining = true;
    to.once('drain', () => {
      this.#draining = false;
      this.pump();
    });
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue.length = 0;
  }
}

/** What one direction holds (stalled, delayed or throttled) before it stops reading. */
const HELD_MAX = 4 << 20;

interface Relayed {
  client: net.Socket;
  upstream: net.Socket | undefined;
  pipes: Pipe[];
}

export class FaultRelay {
  readonly #server = net.createServer({ allowHalfOpen: true }, (client) => this.#accept(client));
  readonly #conns = new Set<Relayed>();
  readonly #connectDelays: number[] = [];
  #port = 0;
  #refusingUntil = 0;
  #reopenTimer: NodeJS.Timeout | undefined;
  #stallTimer: NodeJS.Timeout | undefined;
  #closed = false;
  stalled = false;
  slowSettings: SlowSettings = {};
  readonly stats: RelayStats = { accepted: 0, open: 0, reset: 0, up: 0, down: 0 };

  private constructor(public upstream: Upstream) {}

  /** Listens on 127.0.0.1 (a free port unless `port` is given) and relays to `upstream`. */
  static async start(upstream: Upstream, port = 0): Promise<FaultRelay> {
    const relay = new FaultRelay(upstream);
    await relay.#listen(port);
    return relay;
  }

  get port(): number {
    return this.#port;
  }

  /** `ws://127.0.0.1:PORT` (what `--agent` takes when the upstream is an agent). */
  get url(): string {
    return `ws://127.0.0.1:${this.#port}`;
  }

  /** Whether new connections are refused now (a reset's window). */
  get refusing(): boolean {
    return Date.now() < this.#refusingUntil;
  }

  async #listen(port: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await new Promise<void>((resolve, reject) => {
          this.#server.once('error', reject);
          this.#server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
            this.#server.off('error', reject);
            resolve();
          });
        });
        this.#port = (this.#server.address() as net.AddressInfo).port;
        return;
      } catch (err) {
        // Re-listening on our own port after a reset: a connection in TIME_WAIT cannot hold
        // it (SO_REUSEADDR), but another process could have taken it meanwhile.
        if (port === 0 || attempt >= 50 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  #accept(client: net.Socket): void {
    if (this.#closed || this.refusing) {
      client.resetAndDestroy();
      return;
    }
    this.stats.accepted++;
    this.stats.open++;
    client.setNoDelay(true);
    const conn: Relayed = { client, upstream: undefined, pipes: [] };
    this.#conns.add(conn);
    const pipes = [
      new Pipe(client, () => conn.upstream, this, (n) => (this.stats.up += n)),
    ];
    conn.pipes = pipes;
    let gone = false;
    const teardown = (how: 'reset' | 'end'): void => {
      if (gone) return;
      gone = true;
      this.#conns.delete(conn);
      this.stats.open--;
      for (const p of conn.pipes) p.stop();
      if (how === 'reset') {
        if (!client.destroyed) client.resetAndDestroy();
        if (conn.upstream && !conn.upstream.destroyed) conn.upstream.resetAndDestroy();
      } else {
        client.destroy();
        conn.upstream?.destroy();
      }
    };
    client.on('error', () => teardown('reset'));
    client.on('close', () => teardown('end'));
    const connect = (): void => {
      if (gone) return;
      const upstream = net.connect({ port: this.upstream.port, host: this.upstream.host, allowHalfOpen: true });
      upstream.setNoDelay(true);
      conn.upstream = upstream;
      conn.pipes.push(new Pipe(upstream, () => client, this, (n) => (this.stats.down += n)));
      upstream.on('connect', () => {
        for (const p of conn.pipes) p.pump();
      });
      // An upstream that refuses or resets: the client sees a reset too.
      upstream.on('error', () => teardown('reset'));
      // The upstream closed: the client gets what is still held first (a stall, a delay).
      upstream.on('close', () => {
        const down = conn.pipes[1];
        if (!down || down.idle) teardown('end');
        else down.onFlushed = () => teardown('end');
      });
    };
    const delay = this.#connectDelays.shift();
    if (delay === undefined || delay <= 0) connect();
    else setTimeout(connect, delay);
    // Half-close is relayed by the pipes ('end' → end()); a full close tears both down.
  }

  /**
   * Resets every connection and refuses new ones for `ms` (the listening port is closed,
   * so a connect gets ECONNREFUSED), then listens again on the same port.
   */
  async reset(ms: number): Promise<void> {
    this.#refusingUntil = Date.now() + ms;
    for (const c of [...this.#conns]) {
      this.stats.reset++;
      c.client.emit('error', new Error('relay reset'));
    }
    clearTimeout(this.#reopenTimer);
    if (ms <= 0) return;
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#reopenTimer = setTimeout(() => {
      if (!this.#closed) void this.#listen(this.#port);
    }, ms);
  }

  /** Resolves when the relay listens again after a reset. */
  async listening(ms = 10000): Promise<void> {
    const until = Date.now() + ms;
    while (!this.#server.listening) {
      if (Date.now() > until) throw new Error('fault relay: not listening again');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Stops forwarding (both directions, every connection) for `ms`, or until `resume()`. */
  stall(ms?: number): void {
    this.stalled = true;
    clearTimeout(this.#stallTimer);
    if (ms !== undefined) this.#stallTimer = setTimeout(() => this.resume(), ms);
  }

  /** Ends a stall: what was held is forwarded, in order. */
  resume(): void {
    clearTimeout(this.#stallTimer);
    this.stalled = false;
    for (const c of this.#conns) for (const p of c.pipes) p.pump();
  }

  /** Throttles and/or delays every direction of every connection from now on; `{}` ends it. */
  slow(settings: SlowSettings): void {
    this.slowSettings = { ...settings };
    for (const c of this.#conns) for (const p of c.pipes) p.pump();
  }

  /** The next connections reach the upstream after these delays (in order of arrival). */
  delayConnects(delaysMs: number[]): void {
    this.#connectDelays.push(...delaysMs);
  }

  /** The next `n` connection attempts reach the upstream in reverse order, `spacingMs` apart. */
  reorderNext(n: number, spacingMs = 300): void {
    this.delayConnects(Array.from({ length: n }, (_, i) => (n - 1 - i) * spacingMs));
  }

  /** Stops listening and destroys every connection. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#reopenTimer);
    clearTimeout(this.#stallTimer);
    for (const c of [...this.#conns]) c.client.emit('error', new Error('relay closed'));
    if (this.#server.listening) await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
