import { describe, expect, it } from 'vitest';
import { packPlain } from './codec.js';
import { TsmError } from './errors.js';
import { decodeShimRequest, encodeShimRequest, isShimNotification, SHIM_MAX_FRAME_BYTES, SHIM_OPS, shimFrame, ShimFrameError, shimReplyProblem, type ShimOp } from './shim-wire.js';

function decodeError(value: unknown): ShimFrameError {
  try {
    decodeShimRequest(packPlain(value));
  } catch (err) {
    expect(err).toBeInstanceOf(ShimFrameError);
    return err as ShimFrameError;
  }
  throw new Error('decoded');
}

describe('decodeShimRequest', () => {
  it('returns a valid request as sent, extra fields and all', () => {
    const connect = { op: 'connect', proto: 'tcp', family: 4, addr: '10.0.0.1', port: 80, timeoutMs: 0, nonblock: true };
    expect(decodeShimRequest(encodeShimRequest(connect as never))).toEqual(connect);
    expect(decodeShimRequest(packPlain({ op: 'fs.config' }))).toEqual({ op: 'fs.config' });
    expect(decodeShimRequest(packPlain({ op: 'resolve', name: 'db', later: 1 }))).toEqual({ op: 'resolve', name: 'db', later: 1 });
  });

  it('names the op and the field that is missing, of the wrong type or out of bounds', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ op: 'connect', proto: 'sctp', family: 4, addr: '1.2.3.4', port: 1 }, 'proto'],
      [{ op: 'connect', proto: 'tcp', family: 5, addr: '1.2.3.4', port: 1 }, 'family'],
      [{ op: 'connect', proto: 'tcp', family: 4, addr: '1.2.3.4', port: 65536 }, 'port'],
      [{ op: 'connect', proto: 'tcp', family: 4, addr: '1.2.3.4', port: 1, nonblock: 1 }, 'nonblock'],
      [{ op: 'attach', stream: -1, port: 1 }, 'stream'],
      [{ op: 'fs.open', path: 'a\0b', flags: 0, pid: 1, fd: 3 }, 'path'],
      [{ op: 'fs.open', path: 'x'.repeat(4096), flags: 0, pid: 1, fd: 3 }, 'path'],
      [{ op: 'fs.change', change: 'truncate', path: '/data/x' }, 'change'],
      [{ op: 'fs.truncate', path: '/data/x' }, 'size'],
      [{ op: 'resolve', name: 'x'.repeat(1025) }, 'name'],
    ];
    for (const [value, field] of cases) {
      const err = decodeError(value);
      expect(err.code).toBe('TSM_ERR_BAD_FRAME');
      expect(err.message).toBe(`shim request "${String(value.op)}" has a bad "${field}"`);
      expect(err.op).toBe(value.op);
    }
  });

  it('tells an unknown op, a frame without op and a frame that is no map apart', () => {
    expect(decodeError({ op: 'fs.frobnicate' }).code).toBe('TSM_ERR_UNKNOWN_MESSAGE');
    expect(decodeError({ port: 1 }).message).toBe('shim request has no string "op"');
    expect(decodeError([1, 2]).code).toBe('TSM_ERR_BAD_FRAME');
    expect(() => decodeShimRequest(Buffer.from([0xc1]))).toThrow(TsmError);
    expect(() => decodeShimRequest(new Uint8Array(SHIM_MAX_FRAME_BYTES + 1))).toThrow(/exceeds/);
  });
});

describe('the op table', () => {
  it('has replies exactly for the ops that are not notifications', () => {
    for (const [op, spec] of Object.entries(SHIM_OPS)) {
      const notification = isShimNotification(op as ShimOp);
      expect('replies' in spec, op).toBe(!notification);
    }
    expect(Object.keys(SHIM_OPS).filter((op) => isShimNotification(op as ShimOp)).sort()).toEqual(['attach', 'fs.release', 'notice', 'unlisten']);
  });

  it('checks replies against their shapes', () => {
    expect(shimReplyProblem('connect', { ok: true, action: 'local' })).toBeUndefined();
    expect(shimReplyProblem('connect', { ok: true, action: 'proxy', proxyAddr: '127.0.0.1', proxyPort: 0, stream: 1 })).toBe('"proxy" reply has a bad "proxyPort"');
    expect(shimReplyProblem('listen', { ok: true, action: 'proxy' })).toBe('reply has an unknown action "proxy"');
    expect(shimReplyProblem('fs.fill', { ok: true, filled: 10 })).toBeUndefined();
    expect(shimReplyProblem('fs.fill', { ok: false, errno: 9, message: 'gone' })).toBeUndefined();
  });

  it('frames a body with its big-endian length', () => {
    expect([...shimFrame(Uint8Array.of(0x80))]).toEqual([0, 0, 0, 1, 0x80]);
  });
});
