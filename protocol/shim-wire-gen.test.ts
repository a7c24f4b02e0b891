import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { unpackMap } from './codec.js';
import { renderShimIpcDoc, sampleReplies, SHIM_IPC_DOC_PATH, WIRE_HEADER_PATH, wireHeader, writeSeeds } from './shim-wire-gen.js';
import { isShimNotification, SHIM_OPS, shimReplyProblem, type ShimOp } from './shim-wire.js';

const root = join(import.meta.dirname, '..');

describe('generated from protocol/shim-wire.ts (run `npm run build:ts && npm run wire` after editing it)', () => {
  it('native/shim/wire.h is what the generator writes', () => {
    expect(readFileSync(join(root, WIRE_HEADER_PATH), 'utf8')).toBe(wireHeader());
  });

  it("docs/shim-ipc.md's generated blocks are what the generator writes", () => {
    const doc = readFileSync(join(root, SHIM_IPC_DOC_PATH), 'utf8');
    expect(doc).toBe(renderShimIpcDoc(doc));
  });
});

describe('the C shim', () => {
  it('names ops and keys only through wire.h (no string literal where a key or an op is written or matched)', () => {
    const keyed = /(?:mp_write_cstr|mp_write_kv_\w+|mp_str_eq|strcmp)\([^;]*?"[A-Za-z.]+"/g;
    for (const file of ['proto.c', 'fsproto.c', 'replies.c', 'pathrules.c']) {
      const source = readFileSync(join(root, 'native/shim', file), 'utf8');
      expect(source.match(keyed) ?? [], file).toEqual([]);
    }
  });
});

describe('sample replies (the fuzzers\' seeds)', () => {
  it('cover every shape of every op that has a reply, and each is a valid reply', () => {
    const samples = sampleReplies();
    for (const s of samples) expect(shimReplyProblem(s.op, s.reply), s.name).toBeUndefined();
    const ops = new Set(samples.map((s) => s.op));
    for (const op of Object.keys(SHIM_OPS) as ShimOp[]) expect(ops.has(op as never), op).toBe(!isShimNotification(op));
    expect(samples.map((s) => s.name)).toEqual(expect.arrayContaining(['connect.local', 'connect.proxy', 'connect.proxy-min', 'connect.error', 'resolve.remote', 'fs.open.ok', 'fs.config.ok-min']));
  });

  it('are written one msgpack map per file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsmirror-seeds-'));
    try {
      const n = writeSeeds(dir);
      const files = readdirSync(dir);
      expect(files).toHaveLength(n);
      expect(unpackMap(readFileSync(join(dir, 'connect.local.mp')))).toEqual({ ok: true, action: 'local' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
