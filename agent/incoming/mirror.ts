/**
 * Mirror copies: the bytes a client sends on a mirrored port, copied to each mirroring
 * session while the connection itself is relayed to the pod's app (agent/incoming/hub.ts).
 * A copy is best-effort, never in the app's path:
 *   - the client's `data` handler only keeps a reference to the chunk (no copy, no frame);
 *     the copies go out in batches, every MIRROR_BATCH_MS, after the relaying of that
 *     turn of the event loop is done, so that one WebSocket write (and one wake-up of the
 *     CLI) carries the copies of many requests instead of one each;
 *   - a session that falls behind loses copies, the client never waits: a copy is cut
 *     (its stream reset, the program sees the connection end) when it is more than
 *     MIRROR_COPY_BACKLOG bytes behind its stream's window, when all of the session's copies
 *     together are more than MIRROR_SESSION_BACKLOG behind, or when the session's WebSocket
 *     already holds MIRROR_TRANSPORT_BACKLOG bytes it could not send. Each cut is counted
 *     (the agent's /status: `mirrorCut`, `mirrorBytesDropped`; `tsmirror status`).
 */
import type { Duplex } from 'node:stream';

/** One copy this far behind its window is cut (a 10 MB upload copied whole still fits). */
export const MIRROR_COPY_BACKLOG = 16 * 1024 * 1024;
/** All of a session's copies together: beyond this, the copy that adds to it is cut. */
export const MIRROR_SESSION_BACKLOG = 32 * 1024 * 1024;
/** The session's WebSocket holding this much unsent: its link or its CLI is slow; copies are cut. */
export const MIRROR_TRANSPORT_BACKLOG = 8 * 1024 * 1024;
/** How long copies wait to leave together (their latency does not matter: nobody sees their answers). */
export const MIRROR_BATCH_MS = 2;

/** A session's mirror copies: their batches, how far behind they are, and what was cut. */
export class MirrorAccount {
  /** Copies cut because the session fell behind. */
  cut = 0;
  /** Bytes of those copies that never went to the session (at the cut and after it). */
  bytesDropped = 0;
  /** Bytes the session's copies hold beyond their windows (as of each copy's last batch). */
  backlog = 0;
  readonly #transportBacklog: () => number;
  readonly #due = new Set<MirrorCopy>();
  #timer: NodeJS.Timeout | undefined;

  /** `transportBacklog`: what the session's WebSocket holds unsent. */
  constructor(transportBacklog: () => number) {
    this.#transportBacklog = transportBacklog;
  }

  get transportBacklog(): number {
    return this.#transportBacklog();
  }

  /** `copy` has bytes (or its end) to send with the next batch. */
  schedule(copy: MirrorCopy): void {
    this.#due.add(copy);
    this.#timer ??= setTimeout(() => this.#flush(), MIRROR_BATCH_MS);
  }

  /** The session ended: nothing more is sent. */
  dispose(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#due.clear();
  }

  #flush(): void {
    this.#timer = undefined;
    const due = [...this.#due];
    this.#due.clear();
    for (const copy of due) copy.flush();
  }
}

/** The copy of one client connection for one mirroring session. */
export class MirrorCopy {
  readonly #account: MirrorAccount;
  readonly #stream: Duplex;
  readonly #onCut: (why: string) => void;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #ended = false;
  #wasCut = false;
  /** What this copy adds to the account's backlog. */
  #counted = 0;

  /** `stream`: to the session's program (its answers are dropped); `onCut` logs why a copy was cut. */
  constructor(account: MirrorAccount, stream: Duplex, onCut: (why: string) => void) {
    this.#account = account;
    this.#stream = stream;
    this.#onCut = onCut;
    stream.on('data', () => undefined); // the program's replies go nowhere
    stream.on('drain', () => this.#count(stream.writableLength));
    stream.once('close', () => {
      this.#count(0);
      this.#pending = [];
      this.#pendingBytes = 0;
    });
  }

  /** A chunk the client sent (kept by reference until the batch leaves). */
  push(chunk: Buffer): void {
    if (this.#wasCut) this.#account.bytesDropped += chunk.byteLength;
    if (this.#stream.destroyed || this.#ended) return;
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.byteLength;
    this.#account.schedule(this);
  }

  /** The client finished sending: the copy ends after what is pending. */
  end(): void {
    if (this.#stream.destroyed || this.#ended) return;
    this.#ended = true;
    this.#account.schedule(this);
  }

  /** Sends what is pending, or cuts the copy if the session is too far behind. */
  flush(): void {
    const stream = this.#stream;
    if (stream.destroyed) return;
    const behind = stream.writableLength + this.#pendingBytes;
    const sessionBehind = this.#account.backlog - this.#counted + behind;
    if (behind > MIRROR_COPY_BACKLOG) this.#cut(`its copy of a connection fell ${behind} bytes behind`);
    else if (sessionBehind > MIRROR_SESSION_BACKLOG) this.#cut(`its copies together fell ${sessionBehind} bytes behind`);
    else if (this.#pendingBytes > 0 && this.#account.transportBacklog > MIRROR_TRANSPORT_BACKLOG) this.#cut(`its WebSocket holds ${this.#account.transportBacklog} bytes it could not send yet`);
    if (stream.destroyed) return;
    for (const chunk of this.#pending) stream.write(chunk);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#count(stream.writableLength);
    if (this.#ended) stream.end();
  }

  #count(bytes: number): void {
    this.#account.backlog += bytes - this.#counted;
    this.#counted = bytes;
  }

  #cut(why: string): void {
    this.#wasCut = true;
    this.#account.cut++;
    this.#account.bytesDropped += this.#pendingBytes + this.#stream.writableLength;
    this.#onCut(why);
    this.#stream.destroy();
  }
}
