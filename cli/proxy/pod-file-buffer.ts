/**
 * A pod file that the proxy keeps serving after the open's answer: the program's memfd
 * (opened here through /proc/<pid>/fd/<fd>) standing for a file open in the pod. Two kinds:
 * a big read-only file filled block by block as the program reads it (`fs.fill`, with
 * read-ahead for sequential reading), and a file open for writing in --fs-mode write,
 * whose whole content goes back to the pod on `fs.writeback`.
 */
import { closeSync, fstatSync, readSync, writeSync } from 'node:fs';
import { FS_MAX_READ } from '../../protocol/messages.js';
import { SHIM_FILE_BLOCK_BYTES, SHIM_READ_AHEAD_MAX_BYTES } from '../../protocol/shim-wire.js';
import type { ProxyAgent } from './proxy-agent.js';

/** What a pod file's transfers need: requests to the agent (counted) and byte counters. */
export interface PodFileTransport {
  request: ProxyAgent['request'];
  readonly stats: { bytesIn: number; bytesOut: number };
  /** The session is still up (a file closed after it ended has no pod handle left to close). */
  sessionOpen(): boolean;
}

/** The fill granularity, the same as the shim's chunk. */
const BLOCK = SHIM_FILE_BLOCK_BYTES;
/** The largest read-ahead the proxy starts on its own after a sequential fill. */
const PREFETCH_MAX = SHIM_READ_AHEAD_MAX_BYTES;
/** Parallel fs.read requests when copying a range. */
const PARALLEL_READS = 4;

/** Copies [from, to) of the pod file `agentHandle` into `memfd`; returns the bytes copied. */
export async function copyFromPod(t: PodFileTransport, agentHandle: number, memfd: number, from: number, to: number): Promise<number> {
  let total = 0;
  const chunks: Array<[number, number]> = [];
  for (let off = from; off < to; off += FS_MAX_READ) chunks.push([off, Math.min(FS_MAX_READ, to - off)]);
  for (let i = 0; i < chunks.length; i += PARALLEL_READS) {
    const batch = chunks.slice(i, i + PARALLEL_READS);
    const results = await Promise.all(batch.map(([offset, length]) => t.request({ type: 'fs.read', handle: agentHandle, offset, length })));
    results.forEach((r, k) => {
      const at = batch[k]?.[0] ?? 0;
      if (r.data.byteLength > 0) writeSync(memfd, r.data, 0, r.data.byteLength, at);
      total += r.data.byteLength;
    });
  }
  t.stats.bytesIn += total;
  return total;
}

/** Which blocks of a lazily filled file are in the memfd, and which are on their way. */
interface BlockState {
  present: Uint8Array;
  inflight: Map<number, Promise<void>>;
  /** Where the last fill ended: a fill starting there is sequential and triggers read-ahead. */
  lastEnd: number;
}

export class PodFileBuffer {
  readonly #t: PodFileTransport;
  readonly #agentHandle: number;
  /** The proxy's own descriptor of the program's memfd. */
  readonly #fd: number;
  readonly #size: number;
  /** Only for lazily filled files. */
  readonly #blocks: BlockState | undefined;

  private constructor(t: PodFileTransport, agentHandle: number, fd: number, size: number, blocks: BlockState | undefined) {
    this.#t = t;
    this.#agentHandle = agentHandle;
    this.#fd = fd;
    this.#size = size;
    this.#blocks = blocks;
  }

  /** A sparse memfd of `size` (already truncated to it), filled as the program reads. */
  static lazilyFilled(t: PodFileTransport, agentHandle: number, fd: number, size: number): PodFileBuffer {
    return new PodFileBuffer(t, agentHandle, fd, size, { present: new Uint8Array(Math.ceil(size / BLOCK)), inflight: new Map(), lastEnd: -1 });
  }

  /** A filled memfd kept for write-back (on the program's close and fsync). */
  static writtenBack(t: PodFileTransport, agentHandle: number, fd: number, size: number): PodFileBuffer {
    return new PodFileBuffer(t, agentHandle, fd, size, undefined);
  }

  get lazy(): boolean {
    return this.#blocks !== undefined;
  }

  /** Makes [offset, offset + length) of the file present in the memfd; returns how many bytes that is. */
  async fill(offset: number, length: number): Promise<number> {
    const end = Math.min(this.#size, offset + length);
    if (offset >= end) return 0;
    const blocks = this.#blocks;
    if (!blocks) return copyFromPod(this.#t, this.#agentHandle, this.#fd, offset, end);
    await this.#fetchBlocks(blocks, offset, end);
    // Sequential reading: fetch the next window while the program consumes this one, so the
    // next fill finds it present or on its way (errors surface on that fill, not here).
    if (offset === blocks.lastEnd && end < this.#size) {
      const ahead = Math.min(PREFETCH_MAX, Math.max(end - offset, BLOCK) * 2);
      this.#fetchBlocks(blocks, end, Math.min(this.#size, end + ahead)).catch(() => undefined);
    }
    blocks.lastEnd = end;
    return end - offset;
  }

  /** Writes the memfd's whole content and size to the pod; returns the size. */
  async writeBack(): Promise<number> {
    const size = fstatSync(this.#fd).size;
    const buf = Buffer.allocUnsafe(Math.min(FS_MAX_READ, Math.max(size, 1)));
    for (let off = 0; off < size;) {
      const n = readSync(this.#fd, buf, 0, Math.min(buf.byteLength, size - off), off);
      if (n <= 0) break;
      await this.#t.request({ type: 'fs.write', handle: this.#agentHandle, offset: off, data: buf.subarray(0, n) });
      this.#t.stats.bytesOut += n;
      off += n;
    }
    await this.#t.request({ type: 'fs.truncate', handle: this.#agentHandle, path: '/', size });
    return size;
  }

  /** The program closed it (or the session ends): close the memfd here and the file in the pod. */
  release(): void {
    closeSync(this.#fd);
    if (this.#agentHandle > 0 && this.#t.sessionOpen()) this.#t.request({ type: 'fs.close', handle: this.#agentHandle }).catch(() => undefined);
  }

  /** Makes the blocks covering [from, to) present: fetches the missing ones (contiguous runs, FS_MAX_READ per request) and waits for those on their way. */
  async #fetchBlocks(state: BlockState, from: number, to: number): Promise<void> {
    const { present, inflight } = state;
    const waits: Array<Promise<void>> = [];
    const first = Math.floor(from / BLOCK);
    const last = Math.floor((to - 1) / BLOCK);
    let run = -1;
    const flush = (upTo: number): void => {
      for (let b = run; b < upTo; b += FS_MAX_READ / BLOCK) {
        const count = Math.min(FS_MAX_READ / BLOCK, upTo - b);
        const offset = b * BLOCK;
        const length = Math.min(count * BLOCK, this.#size - offset);
        const p = this.#t.request({ type: 'fs.read', handle: this.#agentHandle, offset, length }).then((r) => {
          if (r.data.byteLength > 0) writeSync(this.#fd, r.data, 0, r.data.byteLength, offset);
          this.#t.stats.bytesIn += r.data.byteLength;
          for (let k = b; k < b + count; k++) present[k] = 1;
        }).finally(() => {
          for (let k = b; k < b + count; k++) inflight.delete(k);
        });
        for (let k = b; k < b + count; k++) inflight.set(k, p);
        waits.push(p);
      }
      run = -1;
    };
    for (let b = first; b <= last; b++) {
      const pending = inflight.get(b);
      if (present[b] || pending) {
        if (run >= 0) flush(b);
        if (pending) waits.push(pending);
        continue;
      }
      if (run < 0) run = b;
    }
    if (run >= 0) flush(last + 1);
    await Promise.all(waits);
  }
}
