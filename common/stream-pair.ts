/**
 * Two cross-wired Duplex ends: what is written to one is read from the other, with
 * backpressure. Both sides bind one end to a mux stream as if it were a socket: the agent
 * so that its request router sees a session's stream and a TCP connection to the pod's
 * app alike, the CLI so that a mirror's stream carries the copy in and drops the
 * program's replies.
 * (Node 22 has stream.duplexPair; Node 20 does not.)
 */
import { Duplex } from 'node:stream';

class PairEnd extends Duplex {
  other!: PairEnd;
  /** The write callback held back until the other end's reader wants more. */
  #pending: (() => void) | undefined;

  constructor() {
    super({ allowHalfOpen: true });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.other.destroyed) {
      callback();
      return;
    }
    if (this.other.push(chunk)) callback();
    else this.other.#pending = callback;
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.other.destroyed) this.other.push(null);
    callback();
  }

  override _read(): void {
    const cb = this.#pending;
    this.#pending = undefined;
    cb?.();
  }

  /**
   * An end that closes cleanly (both directions done: the auto-destroy after 'end' and
   * 'finish') leaves the other end alone, like a TCP socket closed after its FIN: what it
   * still holds unread (say, the bytes a mux stream keeps until its credit returns) is read
   * to the end, and it closes itself after. Any other destroy resets the other end too.
   */
  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const cb = this.other.#pending;
    this.other.#pending = undefined;
    cb?.();
    const clean = !err && this.readableEnded && this.writableFinished;
    if (!clean && !this.other.destroyed) this.other.destroy();
    callback(err);
  }
}

export function streamPair(): [Duplex, Duplex] {
  const a = new PairEnd();
  const b = new PairEnd();
  a.other = b;
  b.other = a;
  return [a, b];
}
