/**
 * A byte stream to a port on a pod's own loopback, through the API server's port-forward
 * (the WebSocket `v4.channel.k8s.io` protocol, spoken by @kubernetes/client-node's
 * PortForward). The stream is a Duplex with the few socket methods http and ws call, so
 * a WebSocket session or an HTTP request runs over it with `createConnection`.
 */
import { Duplex, PassThrough, Writable } from 'node:stream';
import { PortForward, type KubeConfig } from '@kubernetes/client-node';
import type WebSocket from 'ws';
import { TsmError } from '../protocol/errors.js';

/** ws.bufferedAmount above which writes wait (the port-forward has no flow control of its own). */
const HIGH_WATER = 4 << 20;

export class PortForwardSocket extends Duplex {
  readonly #input = new PassThrough();
  #ws: WebSocket | undefined;
  #errorText = '';
  /** Why the stream ended abnormally (the error channel's text, or the WebSocket's close). */
  dropped: string | undefined;
  readonly remoteAddress = '127.0.0.1';
  readonly what: string;

  constructor(what: string) {
    super({ allowHalfOpen: false });
    this.what = what;
  }

  /** Output from the pod (channel 0, port prefix already stripped by client-node). */
  readonly output = new Writable({
    write: (chunk: Buffer, _enc, cb) => {
      this.#active();
      if (chunk.length > 0) this.push(chunk);
      cb();
    },
  });

  /** The error channel: the kubelet's text when it could not forward. */
  readonly errors = new Writable({
    write: (chunk: Buffer, _enc, cb) => {
      this.#errorText += chunk.toString('utf8');
      cb();
    },
  });

  get input(): PassThrough {
    return this.#input;
  }

  attach(ws: WebSocket): void {
    this.#ws = ws;
    ws.on('close', (code: number, reason: Buffer) => {
      if (this.#errorText) this.dropped = this.#errorText.trim();
      else if (code !== 1000 && code !== 1005) this.dropped = `the port-forward WebSocket closed (${code}${reason.length ? `: ${reason.toString()}` : ''})`;
      if (this.dropped) this.destroy(new TsmError('TSM_ERR_PORT_FORWARD', `the port-forward to ${this.what} dropped: ${this.dropped}`));
      else this.push(null);
    });
    ws.on('error', (err: Error) => {
      this.dropped = err.message;
    });
  }

  override _read(): void {
    // Data is pushed as it arrives; the WebSocket has no pause per channel.
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const ws = this.#ws;
    if (!ws || ws.readyState === ws.CLOSED) {
      cb(new TsmError('TSM_ERR_PORT_FORWARD', `the port-forward to ${this.what} is closed${this.dropped ? `: ${this.dropped}` : ''}`));
      return;
    }
    if (ws.readyState !== ws.OPEN) {
      // Closing: its close handler records why and ends this stream with that reason.
      ws.once('close', () => cb());
      return;
    }
    this.#active();
    this.#input.write(chunk);
    if (ws.bufferedAmount < HIGH_WATER) {
      cb();
      return;
    }
    const wait = setInterval(() => {
      if (ws.bufferedAmount < HIGH_WATER / 2 || ws.readyState !== ws.OPEN) {
        clearInterval(wait);
        cb();
      }
    }, 2);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#input.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    clearTimeout(this.#idleTimer);
    this.#idleMs = 0;
    const ws = this.#ws;
    if (ws && ws.readyState === ws.OPEN) ws.close();
    cb(err);
  }

  #idleMs = 0;
  #idleTimer: NodeJS.Timeout | undefined;

  /**
   * As net.Socket's: 'timeout' after `ms` without a byte either way (0: never). http's
   * request timeouts (`req.setTimeout`) rely on it. ws's
   * handshakeTimeout does not reach a stream given through createConnection at all:
   * openWebSocket in cli/agent-client.ts bounds the upgrade itself.
   */
  setTimeout(ms: number, cb?: () => void): this {
    if (cb) {
      if (ms === 0) this.off('timeout', cb);
      else this.once('timeout', cb);
    }
    this.#idleMs = ms;
    this.#active();
    return this;
  }

  #active(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    if (this.#idleMs > 0 && !this.destroyed) {
      this.#idleTimer = setTimeout(() => this.emit('timeout'), this.#idleMs);
      this.#idleTimer.unref();
    }
  }

  // The rest of what http.ClientRequest and ws call on their socket.
  setNoDelay(): this { return this; }
  setKeepAlive(): this { return this; }
  ref(): this { return this; }
  unref(): this { return this; }
}

/**
 * Opens a port-forward to `port` on pod `namespace/pod`. Fails with a TsmError naming the
 * pod and the API server's reason (RBAC, pod gone, nothing listening).
 */
export async function openPortForward(kc: KubeConfig, namespace: string, pod: string, port: number): Promise<PortForwardSocket> {
  const socket = new PortForwardSocket(`pod ${namespace}/${pod} port ${port}`);
  const forward = new PortForward(kc, true);
  let ws: WebSocket;
  try {
    ws = await forward.portForward(namespace, pod, [port], socket.output, socket.errors, socket.input) as unknown as WebSocket;
  } catch (err) {
    const e = err as { message?: string; code?: string; target?: unknown; error?: Error };
    const detail = e.error?.message ?? e.message ?? String(err);
    const forbidden = /\b403\b/.test(detail);
    throw new TsmError(forbidden ? 'TSM_ERR_KUBE_FORBIDDEN' : 'TSM_ERR_PORT_FORWARD',
      forbidden
        ? `the API server refused the port-forward to pod ${namespace}/${pod} (403 Forbidden): you may not create pods/portforward in namespace ${namespace}`
        : `cannot open a port-forward to pod ${namespace}/${pod} port ${port}: ${detail}`,
      { cause: err, hint: forbidden ? `ask a cluster admin to bind you the ClusterRole tsmirror-user (create pods/portforward in ${namespace})` : 'check that the agent pod is running (`tsmirror doctor`)' });
  }
  socket.attach(ws);
  return socket;
}
