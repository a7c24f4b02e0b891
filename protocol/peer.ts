/**
 * One end of a session's WebSocket: framing, validation, heartbeats and the stream mux.
 * Both the CLI and the agent build on it; a defect in a frame ends this session only.
 */
import { EventEmitter } from 'node:events';
import type WebSocket from 'ws';
import { MAX_FRAME_BYTES, encode } from './codec.js';
import { TsmError, type ErrorCode } from './errors.js';
import type { AgentMessage, ClientMessage, StreamMessage } from './messages.js';
import { Mux, type MuxOptions } from './mux.js';

export interface PeerOptions {
  /** How often a ping is sent. */
  heartbeatMs: number;
  /** The peer is declared dead after this long without any frame from it. */
  heartbeatTimeoutMs: number;
  mux?: Partial<MuxOptions>;
  /**
   * The most the session's streams may hold in memory together (bytes); above it the
   * WebSocket is not read until half has drained. 0 or absent: no bound but the windows.
   */
  sessionBudget?: number;
}

export const DEFAULT_PEER_OPTIONS: PeerOptions = { heartbeatMs: 2000, heartbeatTimeoutMs: 10000 };

const STREAM_TYPES = new Set(['data', 'window', 'end', 'close', 'dgram']);

export function isStreamMessage(m: { type: string }): m is StreamMessage {
  return STREAM_TYPES.has(m.type);
}

/**
 * Events: 'message' (a decoded non-stream, non-heartbeat message), 'closed' (TsmError |
 * undefined): emitted once, whatever ended the session.
 */
export class Peer<In extends { type: string }, Out extends ClientMessage | AgentMessage> extends EventEmitter {
  readonly ws: WebSocket;
  readonly mux: Mux;
  #lastSeen = Date.now();
  #timer: NodeJS.Timeout;
  #closed = false;
  /** Reading is paused because the streams hold the session's whole budget. */
  #pausedForMemory = false;

  constructor(ws: WebSocket, decode: (frame: Uint8Array) => In, options: PeerOptions) {
    super();
    this.ws = ws;
    this.mux = new Mux((m) => this.send(m as Out), () => ws.bufferedAmount, options.mux);
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
      this.#lastSeen = Date.now();
      if (this.#closed) return;
      let message: In;
      try {
        if (!isBinary || !Buffer.isBuffer(data)) throw new TsmError('TSM_ERR_BAD_FRAME', 'frames must be binary msgpack');
        message = decode(data);
      } catch (err) {
        const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_BAD_FRAME', String(err));
        this.fail(e.code, e.message);
        return;
      }
      try {
        if (message.type === 'ping') {
          this.send({ type: 'pong', t: (message as unknown as { t: number }).t } as Out);
        } else if (message.type === 'pong') {
          // lastSeen is enough
        } else if (isStreamMessage(message)) {
          this.mux.handle(message);
        } else {
          this.emit('message', message);
        }
      } catch (err) {
        // Whatever a peer's message makes fail ends this session, never the process.
        const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_INTERNAL', err instanceof Error ? err.message : String(err));
        this.fail(e.code, e.message);
      }
    });
    ws.on('close', (code: number, reason: Buffer) => {
      const text = reason.toString();
      this.#end(code === 1000 || code === 1005 ? undefined : new TsmError('TSM_ERR_SESSION_CLOSED', `connection closed (${code}${text ? `: ${text}` : ''})`));
    });
    ws.on('error', (err: Error & { code?: string }) => {
      const code: ErrorCode = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'TSM_ERR_FRAME_TOO_LARGE' : 'TSM_ERR_SESSION_CLOSED';
      this.#end(new TsmError(code, err.message));
    });
    if (options.sessionBudget) this.setBudget(options.sessionBudget);
    this.#timer = setInterval(() => {
      // While we do not read (our own backpressure), the peer's frames wait in the socket.
      if (this.#pausedForMemory) this.#lastSeen = Date.now();
      if (Date.now() - this.#lastSeen > options.heartbeatTimeoutMs) {
        this.fail('TSM_ERR_HEARTBEAT', `no frame from the peer for ${options.heartbeatTimeoutMs} ms`);
      } else {
        this.send({ type: 'ping', t: Date.now() } as Out);
      }
    }, options.heartbeatMs);
    this.#timer.unref();
  }

  /** Bounds the memory of the session's streams (see PeerOptions.sessionBudget). */
  setBudget(bytes: number): void {
    this.mux.setBudget(bytes, (over) => {
      this.#pausedForMemory = over;
      if (over) this.ws.pause();
      else this.ws.resume();
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(message: Out): void {
    if (this.#closed || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(encode(message), { binary: true });
  }

  /** Ends the session with an error that the peer is told about. */
  fail(code: ErrorCode, message: string): void {
    if (this.#closed) return;
    this.send({ type: 'session.error', code, message } as Out);
    const err = new TsmError(code, message);
    this.#end(err);
    this.ws.close(4000, `${code}: ${message}`.slice(0, 120));
    const hard = setTimeout(() => this.ws.terminate(), 1000);
    hard.unref();
  }

  /** Ends the session normally. */
  close(): void {
    if (this.#closed) return;
    this.#end(undefined);
    this.ws.close(1000);
  }

  #end(err: TsmError | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.mux.closeAll();
    this.emit('closed', err);
  }
}

export { MAX_FRAME_BYTES };
