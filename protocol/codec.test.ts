import { describe, expect, it } from 'vitest';
import { decode as plainDecode, encode as plainEncode } from '@msgpack/msgpack';
import { MAX_FRAME_BYTES, decodeAgentMessage, decodeClientMessage, encode, unpackPlain } from './codec.js';
import { TsmError } from './errors.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof TsmError ? err.code : 'not a TsmError';
  }
  return undefined;
}

describe('codec', () => {
  it('writes a data frame of any size and stream number as a plain msgpack map that another decoder reads', () => {
    for (const size of [0, 1, 255, 256, 1023, 1024, 65535, 65536, 70000]) {
      for (const stream of [0, 127, 128, 255, 256, 65535, 65536, 0xffffffff]) {
        const message = { type: 'data', stream, data: Buffer.alloc(size, size & 0xff) } as const;
        const frame = encode(message);
        const plain = plainDecode(frame) as { type: string; stream: number; data: Uint8Array };
        expect([plain.type, plain.stream, Buffer.from(plain.data).equals(message.data)], `size ${size}, stream ${stream}`).toEqual(['data', stream, true]);
        // from 1 KiB the frame is written directly (not by msgpackr): the minimal encoding
        if (size >= 1024) expect(Buffer.from(plainEncode(message)).equals(frame), `size ${size}, stream ${stream}`).toBe(true);
        const back = decodeAgentMessage(frame);
        expect(back.type === 'data' && back.stream === stream && Buffer.from(back.data).equals(message.data)).toBe(true);
      }
    }
  });

  it("refuses msgpackr's own extensions (RegExp, Set, Error, BigInt, typed arrays) in a frame", () => {
    const head = Buffer.from(plainEncode({ type: 'result', id: 1 })); // fixmap 2: made 3 below
    for (const ext of ['d578' + '00', 'd473' + '90', 'd465' + '90', 'd542' + '0001', 'd674' + '01000000']) {
      const frame = Buffer.concat([Buffer.from([0x83]), head.subarray(1), Buffer.from([0xa5, ...Buffer.from('value')]), Buffer.from(ext, 'hex')]);
      expect(codeOf(() => decodeAgentMessage(frame)), ext).toBe('TSM_ERR_BAD_FRAME');
    }
  });

  it('refuses the byte msgpack never uses (0xc1), which msgpackr would decode into a marker object', () => {
    expect(() => decodeClientMessage(Uint8Array.from([0xc1]))).toThrow('not valid msgpack');
    expect(() => unpackPlain(Uint8Array.from([0xc1]))).toThrow('0xc1');
  });

  it('round-trips a request as a plain msgpack map readable by any decoder', () => {
    const frame = encode({ type: 'tcp.connect', id: 7, stream: 3, host: '10.0.0.1', port: 80, family: 4, timeoutMs: 0 });
    // A second, independently configured decoder (plain maps) reads the same object.
    const plain = plainDecode(frame) as Record<string, unknown>;
    expect(plain).toEqual({ type: 'tcp.connect', id: 7, stream: 3, host: '10.0.0.1', port: 80, family: 4, timeoutMs: 0 });
    expect(decodeClientMessage(frame)).toEqual(plain);
  });

  it('a held connect: holdMs is optional and checked, and tcp.connected is an agent message', () => {
    const held = { type: 'tcp.connect', id: 1, stream: 1, host: '10.0.0.1', port: 80, family: 4, timeoutMs: 0, holdMs: 100 } as const;
    expect(decodeClientMessage(encode(held))).toEqual(held);
    expect(codeOf(() => decodeClientMessage(encode({ ...held, holdMs: -1 } as never)))).toBe('TSM_ERR_BAD_FRAME');
    const connected = { type: 'tcp.connected', stream: 1, localAddress: '10.0.0.2', localPort: 40000 } as const;
    expect(decodeAgentMessage(encode(connected))).toEqual(connected);
    expect(codeOf(() => decodeAgentMessage(encode({ ...connected, localPort: 'x' } as never)))).toBe('TSM_ERR_BAD_FRAME');
    // Only the agent says it: a client sending it ends its session.
    expect(codeOf(() => decodeClientMessage(encode(connected as never)))).toBe('TSM_ERR_UNKNOWN_MESSAGE');
  });

  it('carries binary stream data as bytes', () => {
    const data = new Uint8Array([0, 1, 2, 255]);
    const m = decodeAgentMessage(encode({ type: 'data', stream: 1, data }));
    expect(m.type).toBe('data');
    expect(Buffer.from((m as { data: Uint8Array }).data)).toEqual(Buffer.from(data));
  });

  it('rejects garbage, non-maps, unknown types, bad fields and oversized frames with stable codes', () => {
    expect(codeOf(() => decodeClientMessage(Buffer.from([0xc1, 0xc1, 0xc1])))).toBe('TSM_ERR_BAD_FRAME');
    expect(codeOf(() => decodeClientMessage(plainEncode([1, 2, 3])))).toBe('TSM_ERR_BAD_FRAME');
    expect(codeOf(() => decodeClientMessage(encode({ type: 'nope' } as never)))).toBe('TSM_ERR_UNKNOWN_MESSAGE');
    expect(codeOf(() => decodeClientMessage(encode({ type: 'tcp.connect', id: -1 } as never)))).toBe('TSM_ERR_BAD_FRAME');
    expect(codeOf(() => decodeClientMessage(encode({ type: 'tcp.connect', id: 1, stream: 1, host: 'x', port: 1, family: 5, timeoutMs: 0 } as never)))).toBe('TSM_ERR_BAD_FRAME');
    expect(codeOf(() => decodeClientMessage(Buffer.alloc(MAX_FRAME_BYTES + 1)))).toBe('TSM_ERR_FRAME_TOO_LARGE');
    // Keys of the prototype are not message types.
    expect(codeOf(() => decodeClientMessage(encode({ type: 'constructor' } as never)))).toBe('TSM_ERR_UNKNOWN_MESSAGE');
  });
});
