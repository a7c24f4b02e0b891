/**
 * A held connect: a non-blocking connect answered (EINPROGRESS) before the pod's connect
 * finished. The program's socket connects to a held listener of its own (native/addon
 * holdListen: its accept queue is kept full, so the program's SYN is dropped and the
 * socket stays "connecting" to poll and epoll). Two things must then happen, in either
 * order: the shim attaches (tells the program's local port) and the pod's connect is made
 * (tcp.connected). When both have, the proxy connects from the held listener's port to the
 * program's socket (holdRelease: a TCP simultaneous open) and relays it like any other
 * connection, once the kernel says its other end is the socket the attach named
 * (program-socket.ts): should the program's socket be gone by then, another user's
 * listener on its port could have answered. When the pod's connect fails, the listener
 * closes: the program's next SYN is refused (ECONNREFUSED).
 *
 *   awaiting-attach-and-pod ─attach──────► awaiting-pod ───pod connected──► released
 *            │                                  │ (no pod answer: heldPairTimeoutMs)
 *            └─pod connected─► awaiting-attach ─attach─► released
 *                                   │ (program gone: attachTimeoutMs)
 *   any waiting state ─pod failed / timeout / session closed / release refused─► dropped
 */
import { closeSync } from 'node:fs';
import net from 'node:net';
import type { Family } from '../../protocol/messages.js';
import { isProgramPeer, type PeerOwnerLookup, type ProgramSocketClaim } from './program-socket.js';

export type HeldConnectState = 'awaiting-attach-and-pod' | 'awaiting-pod' | 'awaiting-attach' | 'released' | 'dropped';

/** The held listener (native/addon holdListen). */
export interface HeldListener {
  fd: number;
  port: number;
  fillers: number[];
}

export interface HeldConnectOptions {
  family: Family;
  listener: HeldListener;
  /** Connects from the held listener's port to the program's socket; returns the proxy's fd. Throws when nothing answers there. */
  release: (family: Family, listenPort: number, clientPort: number) => number;
  /** Who owns the other end of the released connection. */
  peerOwner: PeerOwnerLookup;
  /** The connection is made: relay it. */
  onReleased: (socket: net.Socket) => void;
  /** Given up from this side: close the stream (the pod's connection goes). */
  closeStream: () => void;
  /** Released or dropped: it holds nothing any more. */
  onSettled: () => void;
  /** Attached, how long the pod's connect may still take (the pod's kernel gives up after ~127 s). */
  heldPairTimeoutMs: number;
  /** Connected in the pod, how long the attach may take (the shim attaches right after its connect returns). */
  attachTimeoutMs: number;
}

export class HeldConnect {
  #state: HeldConnectState = 'awaiting-attach-and-pod';
  #claim: ProgramSocketClaim | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #opts: HeldConnectOptions;

  constructor(options: HeldConnectOptions) {
    this.#opts = options;
  }

  get state(): HeldConnectState {
    return this.#state;
  }

  /** The port the program's socket connects to. */
  get listenPort(): number {
    return this.#opts.listener.port;
  }

  /** The shim's attach: the program's socket (its port and inode). */
  attached(claim: ProgramSocketClaim): void {
    this.#claim = claim;
    if (this.#state === 'awaiting-attach-and-pod') {
      this.#enter('awaiting-pod', this.#opts.heldPairTimeoutMs, false);
    } else if (this.#state === 'awaiting-attach') {
      this.#release();
    }
  }

  /** tcp.connected: the pod's connection is made. */
  podConnected(): void {
    if (this.#state === 'awaiting-attach-and-pod') {
      // A program that died between its connect and its attach never attaches; its stream
      // and listener must not live as long as the session.
      this.#enter('awaiting-attach', this.#opts.attachTimeoutMs, true);
    } else if (this.#state === 'awaiting-pod') {
      this.#release();
    }
  }

  /** The stream closed (the pod's connect failed, or the session ended): the program is refused. */
  podFailed(): void {
    this.drop();
  }

  /** Closes the held listener: a program socket still waiting is refused at its next SYN. */
  drop(): void {
    if (this.#state === 'released' || this.#state === 'dropped') return;
    this.#settle('dropped');
  }

  #enter(state: 'awaiting-pod' | 'awaiting-attach', timeoutMs: number, unref: boolean): void {
    this.#state = state;
    this.#timer = setTimeout(() => {
      if (this.#state !== state) return;
      this.drop();
      this.#opts.closeStream();
    }, timeoutMs);
    if (unref) this.#timer.unref();
  }

  #release(): void {
    const claim = this.#claim;
    let fd: number;
    try {
      fd = this.#opts.release(this.#opts.family, this.#opts.listener.port, claim?.port ?? 0);
    } catch {
      // The program closed its socket meanwhile (nothing answers on its port).
      this.drop();
      this.#opts.closeStream();
      return;
    }
    const socket = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
    const owner = this.#opts.peerOwner(socket);
    if (!claim || !owner || !isProgramPeer(claim, socket.remotePort ?? 0, owner)) {
      // Not the program's socket: it closed, and something else answered on its port.
      socket.destroy();
      this.drop();
      this.#opts.closeStream();
      return;
    }
    this.#settle('released');
    socket.setNoDelay(true);
    this.#opts.onReleased(socket);
  }

  #settle(state: 'released' | 'dropped'): void {
    this.#state = state;
    clearTimeout(this.#timer);
    const { fd, fillers } = this.#opts.listener;
    for (const f of [fd, ...fillers]) {
      try {
        closeSync(f);
      } catch {
        // already closed
      }
    }
    this.#opts.onSettled();
  }
}
