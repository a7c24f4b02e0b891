/**
 * Streams multiplexed over one connection with per-stream, credit-based flow control.
 *
 * Each side may send at most `window` bytes of a stream that the other side has not yet
 * acknowledged with a `window` message; the receiver acknowledges bytes once they have
 * been handed to the kernel of their destination socket. A slow reader therefore stops
 * only its own stream, and the memory a stream can hold is bounded by its window.
 */
import type { Duplex } from 'node:stream';
import type { StreamMessage } from './messages.js';

export const DEFAULT_WINDOW = 1024 * 1024;

export interface MuxOptions {
  /** Bytes a sender may have in flight per stream. */
  window: number;
  /** Datagrams are dropped while the transport has more than this buffered. */
  datagramHighWater: number;
}

type Socketish = Duplex & { resetAndDestroy?: () => unknown; destroySoon?: () => void };

interface Endpoint {
  id: number;
  sendWindow: number;
  /** Bytes written to the local socket but not yet acknowledged to the peer. */
  unacked: number;
  socket: Socketish | undefined;
  /** Data that arrived before a socket was bound (bounded by the window). */
  early: Uint8Array[];
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

  constructor(send: (m: StreamMessage) => void, bufferedAmount: () => number, options: Partial<MuxOptions> = {}) {
    this.#send = send;
    this.#buffered = bufferedAmount;
    this.#opts = { window: DEFAULT_WINDOW, datagramHighWater: 4 * 1024 * 1024, ...options };
  }

  get size(): number {
    return this.#streams.size;
  }

  has(id: number): boolean {
    return this.#streams.has(id);
  }

  /** Registers a stream; data for it is held (within the window) until a socket is bound. */
  open(id: number, onClose?: (errno?: number) => void): void {
    if (this.#streams.has(id)) throw new Error(`stream ${id} is already open`);
    this.#streams.set(id, {
      id, sendWindow: this.#opts.window, unacked: 0, socket: undefined, early: [], earlyEnd: false,
      earlyClose: undefined, onDatagram: undefined, onClose, sentClose: false,
    });
  }

  /** Relays a byte stream both ways between `socket` and the peer's end of stream `id`. */
  bindSocket(id: number, socket: Socketish): void {
    const ep = this.#streams.get(id);
    if (!ep) {
      socket.destroy();
      return;
    }
    ep.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      if (!this.#streams.has(id)) return;
      ep.sendWindow -= chunk.byteLength;
      this.#send({ type: 'data', stream: id, data: chunk });
      if (ep.sendWindow <= 0) socket.pause();
    });
    socket.on('end', () => {
      if (this.#streams.has(id)) this.#send({ type: 'end', stream: id });
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

  /** Handles a stream message from the peer. Unknown streams are ignored (they may have just closed). */
  handle(m: StreamMessage): void {
    const ep = this.#streams.get(m.stream);
    if (!ep) {
      if (m.type === 'data') this.#send({ type: 'close', stream: m.stream });
      return;
    }
    switch (m.type) {
      case 'data':
        if (ep.socket) this.#deliver(ep, m.data);
        else ep.early.push(m.data);
        return;
      case 'window':
        ep.sendWindow += m.bytes;
        if (ep.sendWindow > 0 && ep.socket?.isPaused()) ep.socket.resume();
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

  /** Ends every stream (the transport is gone). */
  closeAll(): void {
    for (const ep of [...this.#streams.values()]) {
      if (ep.socket) this.#closeSocket(ep, 104);
      ep.sentClose = true;
      this.#finish(ep, 104, false);
    }
  }

  #deliver(ep: Endpoint, data: Uint8Array): void {
    const socket = ep.socket;
    if (!socket || socket.destroyed) return;
    socket.write(data, (err) => {
      if (err || !this.#streams.has(ep.id)) return;
      ep.unacked += data.byteLength;
      if (ep.unacked >= this.#opts.window / 4 || socket.writableLength === 0) {
        this.#send({ type: 'window', stream: ep.id, bytes: ep.unacked });
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
    if (tellPeer && !ep.sentClose) {
      ep.sentClose = true;
      this.#send(errno === undefined ? { type: 'close', stream: ep.id } : { type: 'close', stream: ep.id, errno });
    }
    ep.onClose?.(errno);
  }
}
