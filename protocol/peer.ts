/**
 * One end of a session: framing, validation, heartbeats and the stream mux over a
 * WebSocket, and (once both hellos are through and the CLI asked for a grace) the
 * resumable layer that lets the session outlive its WebSocket. Both the CLI and the agent
 * build on it; a defect in a frame ends this session only.
 *
 * Resumable sessions (docs/ARCHITECTURE.md, "Sessions that survive"): every frame after
 * the hellos, but heartbeats, acks and datagrams, is numbered implicitly 1, 2, 3 … in each
 * direction (the receiver counts; nothing is added to a frame). The sender keeps each such
 * frame, encoded, until the peer acknowledges it; acknowledgements are cumulative (`n`:
 * frames received so far) and ride on the frames that flow anyway: `window` (stream credit),
 * `ping` and `pong`; a separate `ack` frame goes out only after many frames arrived with
 * none of those. Stream data is kept at most until its credit returns, so what a side keeps
 * is bounded by the streams' flow-control windows (plus requests and answers in flight).
 * When the WebSocket drops or stalls, the peer is `disconnected`: frames are still numbered
 * and kept, nothing is lost; `attach(ws, received)` puts a new WebSocket under it, drops
 * what the other side had, and resends the rest in order. No byte is lost, duplicated or
 * reordered, and no write waits for a round trip.
 */
import { EventEmitter } from 'node:events';
import type WebSocket from 'ws';
import { MAX_FRAME_BYTES, encodeFrame } from './codec.js';
import { TsmError, type ErrorCode } from './errors.js';
import { UNSEQUENCED_TYPES, type AgentMessage, type ClientMessage, type StreamMessage } from './messages.js';
import { Mux, type MuxOptions } from './mux.js';
import { frameBytes, frameWriter, type Frame, type FrameWriter } from './ws-frames.js';

export interface PeerOptions {
  /** How often a ping is sent. */
  heartbeatMs: number;
  /** The connection is declared dead (or, resumable, lost) after this long without any frame from the peer. */
  heartbeatTimeoutMs: number;
  mux?: Partial<MuxOptions>;
  /**
   * The most the session's streams may hold in memory together (bytes); above it the
   * WebSocket is not read until half has drained. 0 or absent: no bound but the windows.
   */
  sessionBudget?: number;
}

/** A ping a second; a stall is noticed after 2.5 s without a frame, checked every 0.5 s: within 3 s. */
export const DEFAULT_PEER_OPTIONS: PeerOptions = { heartbeatMs: 1000, heartbeatTimeoutMs: 2500 };

const STREAM_TYPES = new Set(['data', 'window', 'end', 'close', 'dgram']);

/** A separate `ack` goes out when this many numbered frames (or bytes) arrived since the last ack sent. */
const ACK_EVERY_FRAMES = 64;
const ACK_EVERY_BYTES = 1024 * 1024;

export function isStreamMessage(m: { type: string }): m is StreamMessage {
  return STREAM_TYPES.has(m.type);
}

/** What a session's resumable layer has done so far (for status and -v). */
export interface ResumeStats {
  /** Frames and bytes sent again after a resume. */
  resentFrames: number;
  resentBytes: number;
  /** Frames and bytes kept now for the peer (sent or not, not yet acknowledged). */
  keptFrames: number;
  keptBytes: number;
}

/**
 * Events: 'message' (a decoded non-stream, non-heartbeat message); 'closed' (TsmError |
 * undefined): emitted once, whatever ended the session; 'disconnected' (TsmError, ended:
 * boolean), resumable sessions only: the WebSocket is gone but the session is not (`ended`:
 * the peer ended it on purpose — a `session.error` or a normal close — so resuming is
 * pointless); the owner then attaches a new WebSocket, or closes the peer.
 */
export class Peer<In extends { type: string }, Out extends ClientMessage | AgentMessage> extends EventEmitter {
  #ws: WebSocket | undefined;
  /** Writes frames to #ws (protocol/ws-frames.ts). */
  #writer: FrameWriter | undefined;
  readonly mux: Mux;
  readonly #decode: (frame: Uint8Array) => In;
  readonly #options: PeerOptions;
  #lastSeen = Date.now();
  #lastPing = 0;
  #timer: NodeJS.Timeout;
  #closed = false;
  /** Reading is paused because the streams hold the session's whole budget. */
  #pausedForMemory = false;
  /** The listeners bound to the current WebSocket (removed when it is let go). */
  #unbind: (() => void) | undefined;

  // ---- the resumable layer
  #resumable = false;
  /** Numbered frames sent (kept until acknowledged). */
  #sent = 0;
  /** Numbered frames received. */
  #received = 0;
  /** The highest acknowledgement from the peer: frames up to it are dropped from #kept. */
  #acked = 0;
  /** Frames #acked+1 … #sent, encoded, oldest first (from #keptHead on). */
  #kept: Frame[] = [];
  #keptHead = 0;
  #keptBytes = 0;
  /** The last acknowledgement this side sent, and bytes received since. */
  #ackSent = 0;
  #bytesSinceAck = 0;
  /** A `session.error` came from the peer: the session is over, whatever the transport does. */
  #peerEnded = false;
  #peerError: TsmError | undefined;
  readonly #stats: ResumeStats = { resentFrames: 0, resentBytes: 0, keptFrames: 0, keptBytes: 0 };

  constructor(ws: WebSocket, decode: (frame: Uint8Array) => In, options: PeerOptions) {
    super();
    this.#decode = decode;
    this.#options = options;
    this.mux = new Mux((m) => this.send(m as Out), () => this.#ws?.bufferedAmount ?? 0, options.mux);
    this.#bind(ws);
    if (options.sessionBudget) this.setBudget(options.sessionBudget);
    const tick = Math.max(10, Math.min(options.heartbeatMs, options.heartbeatTimeoutMs / 5));
    this.#timer = setInterval(() => this.#heartbeat(), tick);
    this.#timer.unref();
  }

  /** The WebSocket under the session now (undefined while a resumable session is disconnected). */
  get ws(): WebSocket | undefined {
    return this.#ws;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A resumable session whose WebSocket is gone: frames are kept until a new one is attached. */
  get disconnected(): boolean {
    return !this.#closed && this.#ws === undefined;
  }

  get resumable(): boolean {
    return this.#resumable;
  }

  /** How many numbered frames came from the peer (what a resume tells it). */
  get received(): number {
    return this.#received;
  }

  get stats(): ResumeStats {
    return { ...this.#stats, keptFrames: this.#sent - this.#acked, keptBytes: this.#keptBytes };
  }

  /**
   * From now on frames are numbered and kept until acknowledged, and losing the WebSocket
   * only disconnects the session. Both sides call it right after the hellos (the agent
   * before it sends its hello, the CLI as it receives it), so both count the same frames.
   */
  startResumable(): void {
    this.#resumable = true;
  }

  /** Bounds the memory of the session's streams (see PeerOptions.sessionBudget). */
  setBudget(bytes: number): void {
    this.mux.setBudget(bytes, (over) => {
      this.#pausedForMemory = over;
      if (over) this.#ws?.pause();
      else this.#ws?.resume();
    });
  }

  send(message: Out): void {
    if (this.#closed) return;
    const ws = this.#ws;
    if (!this.#resumable || UNSEQUENCED_TYPES.has(message.type)) {
      if (ws && ws.readyState === ws.OPEN) this.#write(encodeFrame(message));
      return;
    }
    // A window (stream credit) also carries the acknowledgement: no frame of its own.
    if (message.type === 'window') (message as { ack?: number }).ack = this.#noteAckSent();
    const frame = encodeFrame(message);
    this.#sent++;
    this.#kept.push(frame);
    this.#keptBytes += frameBytes(frame);
    if (ws && ws.readyState === ws.OPEN) this.#write(frame);
  }

  /** The socket under the WebSocket while its writes of this tick are held (see #write). */
  #corked: { uncork(): void } | undefined;

  /**
   * Sends one frame on the current WebSocket. The frames sent in one tick (a connect's result
   * and credit, a burst of replies) leave in one write: the WebSocket's socket is corked at
   * the first of them and uncorked on the next tick, so the kernel gets one writev and the
   * peer one wake-up, not one per frame (issue 13).
   */
  #write(frame: Frame): void {
    const writer = this.#writer;
    if (!writer) return;
    const socket = writer.socket;
    if (this.#corked === undefined && socket !== undefined && socket.destroyed !== true) {
      socket.cork();
      this.#corked = socket;
      process.nextTick(() => {
        this.#corked = undefined;
        socket.uncork();
      });
    }
    writer.write(frame);
  }

  /** Ends the session with an error that the peer is told about (when it can be). */
  fail(code: ErrorCode, message: string): void {
    if (this.#closed) return;
    this.send({ type: 'session.error', code, message } as Out);
    const err = new TsmError(code, message);
    const ws = this.#ws;
    this.#end(err);
    if (ws) {
      ws.close(4000, `${code}: ${message}`.slice(0, 120));
      const hard = setTimeout(() => ws.terminate(), 1000);
      hard.unref();
    }
  }

  /** Ends the session normally. */
  close(): void {
    if (this.#closed) return;
    const ws = this.#ws;
    this.#end(undefined);
    ws?.close(1000);
  }

  /** Ends a disconnected session for good (its grace ran out, or it is not to be resumed). */
  abandon(err: TsmError | undefined): void {
    if (this.#closed) return;
    const ws = this.#ws;
    this.#end(err ?? this.#peerError);
    ws?.terminate();
  }

  /**
   * Lets the WebSocket go without ending anything: the listeners come off, the timer
   * stops, and this peer is done (used for a connection whose first frame resumes another
   * session, which takes the WebSocket over).
   */
  release(): WebSocket | undefined {
    const ws = this.#ws;
    this.#unbind?.();
    this.#unbind = undefined;
    this.#ws = undefined;
    this.#writer = undefined;
    this.#closed = true;
    clearInterval(this.#timer);
    return ws;
  }

  /**
   * Puts a new WebSocket under a disconnected resumable session: `peerReceived` is how
   * many numbered frames the peer has (from its resume or resumed frame); frames after it
   * are sent again, in order, after `greeting` (the agent's `resumed`) if any.
   */
  attach(ws: WebSocket, peerReceived: number, greeting?: Out): { resentFrames: number; resentBytes: number } {
    if (this.#closed) throw new TsmError('TSM_ERR_SESSION_CLOSED', 'the session has ended');
    if (peerReceived < this.#acked || peerReceived > this.#sent) {
      throw new TsmError('TSM_ERR_PROTOCOL', `the peer says it received ${peerReceived} frames; ${this.#acked} were acknowledged and ${this.#sent} sent`);
    }
    if (this.#ws) this.#drop();
    this.#onAck(peerReceived);
    this.#bind(ws);
    this.#lastSeen = Date.now();
    if (greeting) this.#write(encodeFrame(greeting));
    let resentFrames = 0;
    let resentBytes = 0;
    for (let i = this.#keptHead; i < this.#kept.length; i++) {
      const frame = this.#kept[i] as Frame;
      this.#write(frame);
      resentFrames++;
      resentBytes += frameBytes(frame);
    }
    this.#stats.resentFrames += resentFrames;
    this.#stats.resentBytes += resentBytes;
    if (this.#pausedForMemory) ws.pause();
    return { resentFrames, resentBytes };
  }

  /**
   * Starts the session over on a new WebSocket after a hello exchanged on it (the CLI's
   * re-establish): every stream is reset, numbering starts again, kept frames are dropped.
   */
  restart(ws: WebSocket): void {
    if (this.#closed) throw new TsmError('TSM_ERR_SESSION_CLOSED', 'the session has ended');
    if (this.#ws) this.#drop();
    this.mux.closeAll();
    this.#sent = 0;
    this.#received = 0;
    this.#acked = 0;
    this.#kept = [];
    this.#keptHead = 0;
    this.#keptBytes = 0;
    this.#ackSent = 0;
    this.#bytesSinceAck = 0;
    this.#peerEnded = false;
    this.#peerError = undefined;
    this.#bind(ws);
    this.#lastSeen = Date.now();
    if (this.#pausedForMemory) ws.pause();
  }

  #bind(ws: WebSocket): void {
    this.#ws = ws;
    this.#writer = frameWriter(ws);
    const onMessage = (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void => this.#onFrame(data, isBinary);
    const onClose = (code: number, reason: Buffer): void => {
      const text = reason.toString();
      const normal = code === 1000 || code === 1005;
      const err = normal ? undefined : new TsmError('TSM_ERR_SESSION_CLOSED', `connection closed (${code}${text ? `: ${text}` : ''})`);
      // A normal close, or the peer's own failure (4000), ends the session; anything else is the path.
      this.#lost(err, normal || code >= 4000);
    };
    const onError = (err: Error & { code?: string }): void => {
      const code: ErrorCode = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'TSM_ERR_FRAME_TOO_LARGE' : 'TSM_ERR_SESSION_CLOSED';
      this.#lost(new TsmError(code, err.message), code === 'TSM_ERR_FRAME_TOO_LARGE');
    };
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.on('error', onError);
    this.#unbind = () => {
      ws.off('message', onMessage);
      ws.off('close', onClose);
      ws.off('error', onError);
      ws.on('error', () => undefined); // what it still reports is of no interest
    };
  }

  /** Lets go of the current WebSocket (listeners off, connection cut). */
  #drop(): void {
    const ws = this.#ws;
    this.#unbind?.();
    this.#unbind = undefined;
    this.#ws = undefined;
    this.#writer = undefined;
    ws?.terminate();
  }

  #heartbeat(): void {
    const ws = this.#ws;
    if (this.#closed || !ws) return;
    const now = Date.now();
    // While we do not read (our own backpressure), the peer's frames wait in the socket.
    if (this.#pausedForMemory) this.#lastSeen = now;
    if (now - this.#lastSeen > this.#options.heartbeatTimeoutMs) {
      const err = new TsmError('TSM_ERR_HEARTBEAT', `no frame from the peer for ${this.#options.heartbeatTimeoutMs} ms`);
      if (this.#resumable) {
        this.#lost(err, false);
      } else {
        this.fail(err.code, err.message);
      }
      return;
    }
    if (now - this.#lastPing >= this.#options.heartbeatMs) {
      this.#lastPing = now;
      this.send((this.#resumable ? { type: 'ping', t: now, ack: this.#noteAckSent() } : { type: 'ping', t: now }) as Out);
    }
  }

  /** The acknowledgement to send now (all frames received), noted as sent. */
  #noteAckSent(): number {
    this.#ackSent = this.#received;
    this.#bytesSinceAck = 0;
    return this.#received;
  }

  #onAck(n: number): void {
    if (n > this.#sent) throw new TsmError('TSM_ERR_PROTOCOL', `the peer acknowledged ${n} frames; ${this.#sent} were sent`);
    if (n <= this.#acked) return;
    for (let i = this.#acked; i < n; i++) {
      this.#keptBytes -= frameBytes(this.#kept[this.#keptHead] as Frame);
      this.#kept[this.#keptHead++] = undefined as unknown as Frame;
    }
    this.#acked = n;
    // Compact now and then, not on every ack.
    if (this.#keptHead > 1024 && this.#keptHead * 2 > this.#kept.length) {
      this.#kept = this.#kept.slice(this.#keptHead);
      this.#keptHead = 0;
    }
  }

  #onFrame(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    this.#lastSeen = Date.now();
    if (this.#closed) return;
    let message: In;
    try {
      if (!isBinary || !Buffer.isBuffer(data)) throw new TsmError('TSM_ERR_BAD_FRAME', 'frames must be binary msgpack');
      message = this.#decode(data);
    } catch (err) {
      const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_BAD_FRAME', String(err));
      this.fail(e.code, e.message);
      return;
    }
    try {
      const type = message.type;
      if (this.#resumable) {
        if (!UNSEQUENCED_TYPES.has(type)) {
          this.#received++;
          this.#bytesSinceAck += data.byteLength;
          if (this.#received - this.#ackSent >= ACK_EVERY_FRAMES || this.#bytesSinceAck >= ACK_EVERY_BYTES) {
            this.send({ type: 'ack', n: this.#noteAckSent() } as Out);
          }
        }
        const ack = type === 'ack' ? (message as unknown as { n: number }).n : (message as { ack?: number }).ack;
        if (typeof ack === 'number' && (type === 'ack' || type === 'window' || type === 'ping' || type === 'pong')) this.#onAck(ack);
      }
      if (type === 'ping') {
        const t = (message as unknown as { t: number }).t;
        this.send((this.#resumable ? { type: 'pong', t, ack: this.#noteAckSent() } : { type: 'pong', t }) as Out);
      } else if (type === 'pong' || type === 'ack') {
        // lastSeen (and the ack) is all they carry
      } else if (isStreamMessage(message)) {
        this.mux.handle(message);
      } else {
        if (type === 'session.error') {
          const m = message as unknown as { code: ErrorCode; message: string };
          this.#peerEnded = true;
          this.#peerError = new TsmError(m.code, m.message);
        }
        this.emit('message', message);
      }
    } catch (err) {
      // Whatever a peer's message makes fail ends this session, never the process.
      const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_INTERNAL', err instanceof Error ? err.message : String(err));
      this.fail(e.code, e.message);
    }
  }

  /** The WebSocket is gone (closed, failed or stalled). */
  #lost(err: TsmError | undefined, ended: boolean): void {
    if (this.#closed || !this.#ws) return;
    if (!this.#resumable) {
      this.#end(err);
      return;
    }
    this.#drop();
    const gone = ended || this.#peerEnded;
    this.emit('disconnected', this.#peerError ?? err ?? new TsmError('TSM_ERR_SESSION_CLOSED', 'the connection closed'), gone);
  }

  #end(err: TsmError | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#unbind?.();
    this.#unbind = undefined;
    this.#ws = undefined;
    this.#writer = undefined;
    this.#kept = [];
    this.#keptHead = 0;
    this.#keptBytes = 0;
    this.mux.closeAll();
    this.emit('closed', err);
  }
}

export { MAX_FRAME_BYTES };
