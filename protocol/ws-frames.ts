/**
 * Writing the session's frames as WebSocket binary messages straight to the socket under a
 * `ws` WebSocket, so that a `data` frame's payload is never copied in JavaScript: the
 * WebSocket header and the msgpack header go out as one small buffer and the payload as it
 * came from the source socket, in one writev with the rest of the tick's frames (issue 13).
 * Through `ws.send` a payload was copied once into the msgpack frame and, on the CLI (a
 * client, which masks), once more into a masked copy XORed byte by byte in JavaScript.
 *
 * The bytes are exactly what `ws.send(frame, { binary: true })` writes: FIN + binary
 * opcode, the payload length, and from the client the mask bit with a zero masking key
 * (`zeroMask`, below), which the receiving ws does not even XOR.
 * This relies on two things about ws (8.x) that it checks where it can: its `_socket` is
 * the connection, and, with no extension negotiated (permessage-deflate off: the session
 * sends binary Buffers only), its sender writes each message to that socket at once, in
 * call order, so frames written here and its own (close, pong) never reorder. A WebSocket
 * that does not look like that gets `ws.send` of the joined frame.
 */
import type WebSocket from 'ws';

/**
 * The masking key of every frame the CLI sends: zero, so neither ws here (which XORs each
 * byte in JavaScript: no bufferutil, and Node 20's http has no websocketMask) nor the
 * agent's ws (which skips unmasking a zero key) touches the payload, and the sender does
 * not copy it into a masked buffer (issue 13). Masking (RFC 6455 §10.3) keeps a script in a
 * browser from steering the bytes a caching proxy on the path sees; here the client is the
 * CLI, not a browser running someone else's script, its frames carry what the user's own
 * program could send over its own connections anyway, and the path is the agent's port or
 * the API server's port-forward, which relays bytes without reading them as HTTP.
 */
export function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

/** An encoded session frame: one buffer, or a small head and the payload that follows it. */
export type Frame = Buffer | FrameParts;
export interface FrameParts {
  readonly head: Buffer;
  readonly body: Uint8Array;
}

export function frameBytes(frame: Frame): number {
  return Buffer.isBuffer(frame) ? frame.byteLength : frame.head.byteLength + frame.body.byteLength;
}

/** The frame as one buffer (a copy for parts). */
export function joinFrame(frame: Frame): Buffer {
  return Buffer.isBuffer(frame) ? frame : Buffer.concat([frame.head, frame.body]);
}

/** The socket-like end a `ws` WebSocket writes to (a net.Socket, or a port-forward's Duplex). */
interface FrameSocket {
  write(chunk: Uint8Array): boolean;
  cork(): void;
  uncork(): void;
  destroyed?: boolean;
}

/** Writes frames to one WebSocket; `socket` is what to cork around a tick's writes (undefined: none). */
export interface FrameWriter {
  readonly socket: FrameSocket | undefined;
  write(frame: Frame): void;
}

/** Below this a frame is copied behind its WebSocket header (one write); above, the payload goes as it is. */
const JOIN_BELOW = 1024;

/**
 * The WebSocket header of a final binary frame of `length` bytes, with `extra` bytes of room
 * after it; masked (a client's frame) with the zero key.
 */
function wsHead(length: number, masked: boolean, extra: number): { buf: Buffer; at: number } {
  const lengthBytes = length < 126 ? 0 : length < 0x10000 ? 2 : 8;
  const at = 2 + lengthBytes + (masked ? 4 : 0);
  const buf = Buffer.allocUnsafe(at + extra);
  buf[0] = 0x82; // FIN, binary
  const maskBit = masked ? 0x80 : 0;
  if (lengthBytes === 0) buf[1] = maskBit | length;
  else if (lengthBytes === 2) {
    buf[1] = maskBit | 126;
    buf.writeUInt16BE(length, 2);
  } else {
    buf[1] = maskBit | 127;
    buf.writeUInt32BE(0, 2); // frames are at most MAX_FRAME_BYTES: the high half is zero
    buf.writeUInt32BE(length, 6);
  }
  if (masked) buf.writeUInt32BE(0, at - 4); // the zero masking key
  return { buf, at };
}

export function frameWriter(ws: WebSocket): FrameWriter {
  const inner = ws as unknown as { _socket?: unknown; _isServer?: unknown };
  const socket = inner._socket as FrameSocket | undefined;
  const direct = typeof inner._isServer === 'boolean' && ws.extensions === '' && socket !== undefined &&
    typeof socket.write === 'function' && typeof socket.cork === 'function' && typeof socket.uncork === 'function';
  if (!direct) {
    return { socket: undefined, write: (frame) => ws.send(joinFrame(frame), { binary: true }) };
  }
  const masked = inner._isServer === false;
  return {
    socket,
    write(frame) {
      if (Buffer.isBuffer(frame)) {
        if (frame.byteLength < JOIN_BELOW) {
          const { buf, at } = wsHead(frame.byteLength, masked, frame.byteLength);
          frame.copy(buf, at);
          socket.write(buf);
        } else {
          socket.write(wsHead(frame.byteLength, masked, 0).buf);
          socket.write(frame);
        }
        return;
      }
      const { head, body } = frame;
      const { buf, at } = wsHead(head.byteLength + body.byteLength, masked, head.byteLength);
      head.copy(buf, at);
      socket.write(buf);
      socket.write(body);
    },
  };
}
