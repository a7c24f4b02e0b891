/**
 * Streams multiplexed over one connection with per-stream, credit-based flow control.
 *
 * Each side may send at most `window` bytes of a stream that the other side has not yet
 * acknowledged with a `window` message; the receiver acknowledges bytes once they have
 * been handed to the kernel of their destination socket, a quarter of the window at a time
 * (one `window` frame per 256 KiB by default, not one per chunk). A slow reader therefore
 * stops only its own stream, and the memory a stream can hold is bounded by its window.
 */
import type { Duplex } from 'node:stream';
import { TsmError } from './errors.js';
import { AGENT_STREAM_BASE, type StreamMessage } from './messages.js';

export const DEFAULT_WINDOW = 1024 * 1024;

/** Which stream ids each side allocates: the client below AGENT_STREAM_BASE, the agent from it on. */
export type StreamIdRange = 'client' | 'agent';

export interface MuxOptions {
  /** Bytes a sender may have in flight per stream; the receiver cuts off a peer that sends more. */
  window: number;
  /** Datagrams are dropped while the transport has more than this buffered. */
  datagramHighWater: number;
  /** The ids the peer allocates (checked by {@link Mux.claimPeerStream}); undefined: not checked. */
  peerIds: StreamIdRange | undefined;
}

/** A peer that broke the stream rules: the session ends (never the process). */
function violation(message: string): TsmError {
  return new TsmError('TSM_ERR_PROTOCOL', message);
}

type Socketish = Duplex & { resetAndDestroy?: () => unknown; destroySoon?: () => void };

/** The most one read of a socket made with {@link relayReader} takes (a 'data' chunk is 64 KiB). */
export const RELAY_READ_BYTES = 256 * 1024;

/**
 * The buffer every RelayReader reads into until its socket proves fast (see below): one per
 * process, made on first use. Reads are synchronous on the one JavaScript thread and each
 * is copied out in its callback before any other read, so sharing it is safe as long as it
 * is never handed on.
 */
let sharedReadBuffer: Buffer | undefined;

/**
 * Reads a net.Socket for the mux through Node's `onread` (pass `onread` to the socket's
 * constructor, the reader to {@link Mux.bindSocket}): up to RELAY_READ_BYTES per read into
 * a buffer of its own, so a fast source makes a quarter as many frames (and reads, writes
 * and wake-ups on both sides) as with 64 KiB 'data' chunks. A read that fills less than
 * half of the buffer is copied out and the buffer read into again: a small chunk never pins
 * a large buffer while it is kept for a resume.
 *
 * A reader starts on the process's shared buffer and gets one of its own only at its first
 * read that fills half of it (a bulk source). A connection that carries a few small
 * messages, or none (connect and close), never allocates one: 256 KiB per connect of
 * memory outside V8's heap made the agent run a full garbage collection every few hundred
 * connects: a fifth to a third of its busy time per connect (issue 13).
 */
export class RelayReader {
  #buffer: Buffer = (sharedReadBuffer ??= Buffer.allocUnsafeSlow(RELAY_READ_BYTES));
  #own = false;
  /** Chunks read before the socket was bound (reading stops at the first). */
  #early: Buffer[] = [];
  /** Set by bindSocket: takes a chunk; false stops reading until {@link resume}. */
  deliver: ((chunk: Buffer) => boolean) | undefined;
  /** Reading was stopped (a callback returned false) and not resumed yet. */
  stopped = false;

  readonly onread = {
    buffer: (): Buffer => this.#buffer,
    callback: (n: number, buf: Uint8Array): boolean => {
      let chunk: Buffer;
      const large = n * 2 >= buf.byteLength;
      if (large && this.#own) {
        chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
        this.#buffer = Buffer.allocUnsafeSlow(RELAY_READ_BYTES);
      } else {
        chunk = Buffer.allocUnsafe(n);
        chunk.set(buf.subarray(0, n));
        if (large) {
          this.#buffer = Buffer.allocUnsafeSlow(RELAY_READ_BYTES);
          this.#own = true;
        }
      }
      const more = this.deliver ? this.deliver(chunk) : (this.#early.push(chunk), false);
      if (!more) this.stopped = true;
      return more;
    },
  };

  /** What was read before the bind (handed to it once). */
  takeEarly(): Buffer[] {
    const early = this.#early;
    this.#early = [];
    return early;
  }
}

/**
 * Whether a socket whose readable side just ended is destroyed (and emits `close`) right
 * away: its writable side has finished and it auto-destroys.
 */
function closesAtEnd(socket: Socketish): boolean {
  const state = socket as unknown as { _readableState?: { autoDestroy?: boolean }; _writableState?: { autoDestroy?: boolean } };
  return socket.writableFinished && state._readableState?.autoDestroy === true && state._writableState?.autoDestroy === true;
}

interface Endpoint {
  id: number;
  sendWindow: number;
  /** Bytes written to the local socket but not yet acknowledged to the peer. */
  unacked: number;
  socket: Socketish | undefined;
  /** Bytes received from the peer and not yet credited back to it: never above the window. */
  received: number;
  /** Of those, the bytes not yet handed to the socket's kernel (or reader): what this stream holds in memory. */
  unwritten: number;
  /** Data that arrived before a socket was bound (bounded by the window). */
  early: Uint8Array[];
  /** A socket read through a RelayReader, and the part of its last chunk still waiting for credit. */
  reader: RelayReader | undefined;
  unsent: Buffer | undefined;
  earlyEnd: boolean;
  earlyClose: { errno?: number } | undefined;
  onDatagram: ((data: Uint8Array) => void) | undefined;
  onClose: ((errno?: number) => void) | undefined;
  sentClose: boolean;
}

export class Mux {
  readonly #send: (m: StreamMessage) => void;
  readonly #buffered: () => number;
  readonly #opts: MuxOptions;
  readonly #streams = new Map<number, Endpoint>();
  /** Peer-chosen ids reserved by a request that has not opened its stream yet. */
  readonly #claimed = new Set<number>();
  /** Bytes the peer sent on all streams that this side has not handed on yet: what the session holds. */
  #held = 0;
  #budget = 0;
  #overBudget = false;
  #onPressure: ((over: boolean) => void) | undefined;

  constructor(send: (m: StreamMessage) => void, bufferedAmount: () => number, options: Partial<MuxOptions> = {}) {
    this.#send = send;
    this.#buffered = bufferedAmount;
    this.#opts = { window: DEFAULT_WINDOW, datagramHighWater: 4 * 1024 * 1024, peerIds: undefined, ...options };
  }

  /**
   * Bounds the bytes all streams together may hold: above `bytes`, `onPressure(true)` asks
   * the transport to stop reading (the peer's own buffers then fill, not ours); once half
   * of it has drained, `onPressure(false)`. Each stream's window still applies.
   */
  setBudget(bytes: number, onPressure: (over: boolean) => void): void {
    this.#budget = bytes;
    this.#onPressure = onPressure;
    this.#account(0);
  }

  /** What the streams hold now (bytes received and not yet written to their sockets). */
  get held(): number {
    return this.#held;
  }

  #account(delta: number): void {
    this.#held += delta;
    if (this.#budget <= 0) return;
    if (!this.#overBudget && this.#held > this.#budget) {
      this.#overBudget = true;
      this.#onPressure?.(true);
    } else if (this.#overBudget && this.#held <= this.#budget / 2) {
      this.#overBudget = false;
      this.#onPressure?.(false);
    }
  }

  get size(): number {
    return this.#streams.size;
  }

  has(id: number): boolean {
    return this.#streams.has(id);
  }

  /**
   * Reserves a stream id that the peer chose (in a request that will open it later).
   * Throws TSM_ERR_PROTOCOL when the id is outside the peer's range or already in use, so
   * a client cannot make the agent open a stream twice or take one of the agent's ids.
   */
  claimPeerStream(id: number): void {
    const range = this.#opts.peerIds;
    if (range !== undefined) {
      const inRange = range === 'client' ? id > 0 && id < AGENT_STREAM_BASE : id >= AGENT_STREAM_BASE && id <= 0xffffffff;
      if (!inRange) throw violation(`stream id ${id} is outside the ${range}'s range`);
    }
    if (this.#streams.has(id) || this.#claimed.has(id)) throw violation(`stream ${id} is already open`);
    this.#claimed.add(id);
  }

  /** Gives back a claimed id whose request failed before its stream opened. */
  releaseClaim(id: number): void {
    this.#claimed.delete(id);
  }

  /** True when `id` is neither open nor claimed (for ids this side allocates). */
  isFree(id: number): boolean {
    return !this.#streams.has(id) && !this.#claimed.has(id);
  }

  /** Registers a stream; data for it is held (within the window) until a socket is bound. */
  open(id: number, onClose?: (errno?: number) => void): void {
    if (this.#streams.has(id)) throw violation(`stream ${id} is already open`);
    this.#claimed.delete(id);
    this.#streams.set(id, {
      id, sendWindow: this.#opts.window, unacked: 0, socket: undefined, received: 0, unwritten: 0, early: [], reader: undefined, unsent: undefined, earlyEnd: false,
      earlyClose: undefined, onDatagram: undefined, onClose, sentClose: false,
    });
  }

  /**
   * Relays a byte stream both ways between `socket` and the peer's end of stream `id`;
   * `reader`: the socket is read through it (made with its `onread`), not with 'data'.
   */
  bindSocket(id: number, socket: Socketish, reader?: RelayReader): void {
    const ep = this.#streams.get(id);
    if (!ep) {
      socket.destroy();
      return;
    }
    ep.socket = socket;
    if (reader) {
      ep.reader = reader;
      reader.deliver = (chunk) => this.#sendChunk(ep, chunk);
      let more = true;
      for (const chunk of reader.takeEarly()) more = this.#sendChunk(ep, chunk);
      // resume() starts reading again and makes the socket flowing, so that its 'end' is
      // emitted (nothing is pushed: the chunks go to the reader). Not while a chunk waits
      // for credit: the end must not overtake it.
      if (more) this.#resumeReader(ep);
      else reader.stopped = true;
    } else socket.on('data', (chunk: Buffer) => {
      if (!this.#streams.has(id)) return;
      // Never more than the window in flight: what does not fit goes back to the front of
      // the socket's buffer (paused first, so it is not re-emitted at once) until credit comes.
      const fits = Math.max(0, Math.min(chunk.byteLength, ep.sendWindow));
      if (fits < chunk.byteLength) {
        socket.pause();
        socket.unshift(chunk.subarray(fits));
      }
      if (fits === 0) return;
      ep.sendWindow -= fits;
      this.#send({ type: 'data', stream: id, data: fits === chunk.byteLength ? chunk : chunk.subarray(0, fits) });
      if (ep.sendWindow <= 0) socket.pause();
    });
    socket.on('end', () => {
      if (!this.#streams.has(id)) return;
      // Its other direction is done too: the socket closes now (auto-destroy), and the
      // `close` that follows says the end as well. A connection's end and close were two
      // frames, two writes and two wake-ups of the peer (issue 13); the peer ends its own
      // socket gracefully on either.
      if (closesAtEnd(socket)) return;
      this.#send({ type: 'end', stream: id });
    });
    socket.on('error', () => {
      /* reported through 'close' */
    });
    socket.on('close', (hadError: boolean) => {
      const errno = hadError ? 104 /* ECONNRESET */ : undefined;
      this.#finish(ep, errno, true);
    });
    for (const data of ep.early) this.#deliver(ep, data);
    ep.early = [];
    if (ep.earlyEnd) socket.end();
    if (ep.earlyClose) this.#closeSocket(ep, ep.earlyClose.errno);
  }

  /** Makes stream `id` a datagram stream; returns the function that sends one datagram. */
  bindDatagrams(id: number, onDatagram: (data: Uint8Array) => void): (data: Uint8Array) => void {
    const ep = this.#streams.get(id);
    if (ep) ep.onDatagram = onDatagram;
    return (data) => {
      if (!this.#streams.has(id)) return;
      if (this.#buffered() > this.#opts.datagramHighWater) return; // UDP may drop; memory may not grow
      this.#send({ type: 'dgram', stream: id, data });
    };
  }

  /** Closes stream `id` from this side (tells the peer). */
  close(id: number, errno?: number): void {
    const ep = this.#streams.get(id);
    if (!ep) return;
    if (ep.socket) this.#closeSocket(ep, errno);
    this.#finish(ep, errno, true);
  }

  /**
   * Handles a stream message from the peer. Unknown streams are ignored (they may have just
   * closed). Throws TSM_ERR_PROTOCOL when the peer overruns a stream's window or returns
   * more credit than it could owe: the caller ends the session.
   */
  handle(m: StreamMessage): void {
    const ep = this.#streams.get(m.stream);
    if (!ep) {
      if (m.type === 'data') this.#send({ type: 'close', stream: m.stream });
      return;
    }
    switch (m.type) {
      case 'data':
        ep.received += m.data.byteLength;
        ep.unwritten += m.data.byteLength;
        this.#account(m.data.byteLength);
        if (ep.received > this.#opts.window) {
          throw violation(`stream ${ep.id}: the peer sent ${ep.received} bytes against a ${this.#opts.window}-byte window`);
        }
        if (ep.socket) this.#deliver(ep, m.data);
        else ep.early.push(m.data);
        return;
      case 'window':
        if (ep.sendWindow + m.bytes > this.#opts.window) {
          throw violation(`stream ${ep.id}: the peer returned credit for ${m.bytes} bytes that were never sent`);
        }
        ep.sendWindow += m.bytes;
        if (ep.reader) {
          const unsent = ep.unsent;
          ep.unsent = undefined;
          if (unsent && !this.#sendChunk(ep, unsent)) return;
          if (ep.sendWindow > 0 && ep.reader.stopped) this.#resumeReader(ep);
        } else if (ep.sendWindow > 0 && ep.socket?.isPaused()) ep.socket.resume();
        return;
      case 'end':
        if (ep.socket) ep.socket.end();
        else ep.earlyEnd = true;
        return;
      case 'close':
        if (ep.socket) this.#closeSocket(ep, m.errno);
        else ep.earlyClose = m.errno === undefined ? {} : { errno: m.errno };
        this.#finish(ep, m.errno, false);
        return;
      case 'dgram':
        ep.onDatagram?.(m.data);
        return;
    }
  }

  /**
   * Sends what of a chunk read through a RelayReader the window allows; the rest waits in
   * `unsent` for credit. False: stop reading.
   */
  #sendChunk(ep: Endpoint, chunk: Buffer): boolean {
    if (!this.#streams.has(ep.id)) return true; // closed: what still comes is dropped, as with 'data'
    if (ep.unsent) {
      ep.unsent = Buffer.concat([ep.unsent, chunk]); // (reading stops with a chunk unsent: rare)
      return false;
    }
    const fits = Math.min(chunk.byteLength, ep.sendWindow);
    if (fits > 0) {
      ep.sendWindow -= fits;
      this.#send({ type: 'data', stream: ep.id, data: fits === chunk.byteLength ? chunk : chunk.subarray(0, fits) });
    }
    if (fits < chunk.byteLength) {
      ep.unsent = chunk.subarray(fits);
      return false;
    }
    return ep.sendWindow > 0;
  }

  #resumeReader(ep: Endpoint): void {
    if (!ep.reader || !ep.socket || ep.socket.destroyed) return;
    ep.reader.stopped = false;
    ep.socket.resume();
  }

  /** Ends every stream (the transport is gone). */
  closeAll(): void {
    for (const ep of [...this.#streams.values()]) {
      if (ep.socket) this.#closeSocket(ep, 104);
      ep.sentClose = true;
      this.#finish(ep, 104, false);
    }
  }

  /**
   * Writes data from the peer to the stream's socket. Credit goes back once a quarter of the
   * window has been written, not after every chunk: a chunk per `window` frame doubled the
   * frames (and wake-ups) of a request/response stream and of a bulk transfer (issue 13).
   * The sender is never stalled by it: it is stopped only with the whole window unwritten
   * or uncredited here, and once that is written at least a quarter goes back. Memory is
   * what is not yet written, so that is what the session's budget counts.
   */
  #deliver(ep: Endpoint, data: Uint8Array): void {
    const socket = ep.socket;
    if (!socket || socket.destroyed) return;
    const n = data.byteLength;
    socket.write(data, (err) => {
      if (err || !this.#streams.has(ep.id)) return;
      ep.unwritten -= n;
      this.#account(-n);
      ep.unacked += n;
      if (ep.unacked >= this.#opts.window / 4) {
        this.#send({ type: 'window', stream: ep.id, bytes: ep.unacked });
        ep.received -= ep.unacked;
        ep.unacked = 0;
      }
    });
  }

  #closeSocket(ep: Endpoint, errno: number | undefined): void {
    const socket = ep.socket;
    if (!socket || socket.destroyed) return;
    if (errno !== undefined && typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
    else if (errno !== undefined) socket.destroy();
    else if (typeof socket.destroySoon === 'function') socket.destroySoon(); // flush, FIN, then close
    else socket.end();
  }

  #finish(ep: Endpoint, errno: number | undefined, tellPeer: boolean): void {
    if (!this.#streams.has(ep.id)) return;
    this.#streams.delete(ep.id);
    this.#account(-ep.unwritten); // whatever it still held is dropped with it
    ep.received = 0;
    ep.unwritten = 0;
    if (tellPeer && !ep.sentClose) {
      ep.sentClose = true;
      this.#send(errno === undefined ? { type: 'close', stream: ep.id } : { type: 'close', stream: ep.id, errno });
    }
    ep.onClose?.(errno);
  }
}
