/**
 * The framing of the shim's channel (docs/shim-ipc.md, "Framing"): a 4-byte big-endian
 * length, then that many bytes of msgpack holding one map, decoded and checked field by
 * field by protocol/shim-wire.ts. Requests on one connection are answered in order (the
 * shim waits for each answer); notifications get no answer and are handled as they
 * arrive. A frame over the size limit, or one that is not a msgpack map with an op, drops
 * the connection: the shim cannot be re-synchronised after it. The shim may close its
 * connection while it waits (a signal interrupted the program's blocking connect): the
 * answer then goes nowhere, and the endpoint is told so (`undelivered`) to release what
 * the answer handed out.
 */
import type net from 'node:net';
import {
  SHIM_MAX_FRAME_BYTES, ShimFrameError, decodeShimRequest, encodeShimReply, isShimNotification, shimFrame,
  type ShimCallOp, type ShimNotificationOp, type ShimReply, type ShimRequest,
} from '../../protocol/shim-wire.js';

export type ShimCall = Extract<ShimRequest, { op: ShimCallOp }>;
export type ShimNotification = Extract<ShimRequest, { op: ShimNotificationOp }>;

export interface ShimEndpoint {
  /** A request's reply; never rejects. */
  answer(request: ShimCall): Promise<ShimReply>;
  notify(notification: ShimNotification): void;
  /**
   * A frame that names an op but did not check (a bad field, or an op this proxy does not
   * know): the reply that tells the shim so, or undefined when it gets none.
   */
  refuse(err: ShimFrameError): ShimReply | undefined;
  /** The shim closed its connection before this answer could be sent. */
  undelivered?(request: ShimCall, reply: ShimReply): void;
}

export interface ShimChannelOptions {
  log: (line: string) => void;
  maxFrameBytes?: number;
}

/** Serves one shim connection until it closes. */
export function serveShimChannel(conn: net.Socket, endpoint: ShimEndpoint, options: ShimChannelOptions): void {
  const maxFrame = options.maxFrameBytes ?? SHIM_MAX_FRAME_BYTES;
  conn.on('error', () => undefined);
  let buffer: Buffer = Buffer.alloc(0);
  let chain = Promise.resolve();
  const reply = (produce: () => Promise<ShimReply> | ShimReply, request?: ShimCall): void => {
    chain = chain.then(async () => {
      const response = await produce();
      if (!conn.destroyed && conn.writable) conn.write(shimFrame(encodeShimReply(response)));
      else if (request) endpoint.undelivered?.(request, response);
    });
  };
  conn.on('data', (chunk: Buffer) => {
    buffer = buffer.byteLength === 0 ? chunk : Buffer.concat([buffer, chunk]);
    while (buffer.byteLength >= 4) {
      const length = buffer.readUInt32BE(0);
      if (length > maxFrame) {
        options.log(`shim sent a ${length}-byte frame; dropping its channel`);
        conn.destroy();
        return;
      }
      if (buffer.byteLength < 4 + length) break;
      const frame = buffer.subarray(4, 4 + length);
      buffer = buffer.subarray(4 + length);
      let request: ShimRequest;
      try {
        request = decodeShimRequest(frame);
      } catch (err) {
        const named = err instanceof ShimFrameError && (err.op !== undefined || err.code === 'TSM_ERR_UNKNOWN_MESSAGE');
        if (!named) {
          options.log('shim sent a malformed frame; dropping its channel');
          conn.destroy();
          return;
        }
        const refusal = endpoint.refuse(err);
        if (refusal) reply(() => refusal);
        continue;
      }
      if (isShimNotification(request.op)) {
        endpoint.notify(request as ShimNotification);
      } else {
        const call = request as ShimCall;
        reply(() => endpoint.answer(call), call);
      }
    }
  });
}
