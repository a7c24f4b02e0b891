/**
 * The framing of the shim's channel (docs/shim-ipc.md, "Framing"): a 4-byte big-endian
 * length, then that many bytes of msgpack holding one map. Requests on one connection are
 * answered in order (the shim waits for each answer); notifications get no answer and are
 * handled as they arrive. A frame over the size limit, or one that is not a msgpack map,
 * drops the connection: the shim cannot be re-synchronised after it.
 */
import type net from 'node:net';
import { packPlain, unpackPlain } from '../../protocol/codec.js';
import { TsmError } from '../../protocol/errors.js';
import { decodeShimRequest, isShimNotification, type ShimCall, type ShimNotification, type ShimReply } from './shim-requests.js';

/** The shim drops the channel on a larger frame; so does the proxy. */
export const MAX_SHIM_FRAME = 1024 * 1024;

export interface ShimEndpoint {
  answer(request: ShimCall): Promise<ShimReply>;
  notify(notification: ShimNotification): void;
  /**
   * A frame whose fields did not check (`err` is TSM_ERR_BAD_FRAME): the reply that tells the
   * shim so, or undefined for an op that gets none.
   */
  refuse(op: unknown, err: TsmError): ShimReply | undefined;
}

export interface ShimChannelOptions {
  log: (line: string) => void;
  maxFrameBytes?: number;
}

export function encodeShimFrame(message: unknown): Buffer {
  const body = packPlain(message);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.byteLength);
  return Buffer.concat([header, body]);
}

/** Serves one shim connection until it closes. */
export function serveShimChannel(conn: net.Socket, endpoint: ShimEndpoint, options: ShimChannelOptions): void {
  const maxFrame = options.maxFrameBytes ?? MAX_SHIM_FRAME;
  conn.on('error', () => undefined);
  let buffer: Buffer = Buffer.alloc(0);
  let chain = Promise.resolve();
  const reply = (produce: () => Promise<ShimReply> | ShimReply): void => {
    chain = chain.then(async () => {
      const response = await produce();
      if (!conn.destroyed) conn.write(encodeShimFrame(response));
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
      let message: Record<string, unknown>;
      try {
        message = unpackPlain(frame) as Record<string, unknown>;
        if (typeof message !== 'object' || message === null) throw new Error('not a map');
      } catch {
        options.log('shim sent a malformed frame; dropping its channel');
        conn.destroy();
        return;
      }
      let request;
      try {
        request = decodeShimRequest(message);
      } catch (err) {
        const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_BAD_FRAME', String(err));
        const refusal = endpoint.refuse(message.op, e);
        if (refusal) reply(() => refusal);
        continue;
      }
      if (isShimNotification(request)) endpoint.notify(request);
      else {
        const call = request;
        reply(() => endpoint.answer(call));
      }
    }
  });
}
