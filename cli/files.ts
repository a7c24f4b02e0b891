/**
 * Pod files on the CLI side: the path rules (`--fs-mode`, `--fs-local`, `--fs-remote`,
 * `--fs-not-found`, the default lists) and the session proxy's answers to the shim's
 * file requests (docs/shim-ipc.md, "Files").
 *
 * The rules are computed here, once, and handed to the shim (`fs.config`), which applies
 * them itself: a local path never leaves the program. For a remote file the shim creates
 * a memfd and the proxy fills it directly through /proc/<pid>/fd/<fd> (Node cannot pass
 * descriptors over a unix socket, but it can open the program's memfd by that path), so
 * the program reads a real kernel file with no further hook; a big file is filled range
 * by range as the program reads it.
 */
import { closeSync, constants as fsConstants, fstatSync, ftruncateSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import { constants as osConstants, homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { RemoteError, TsmError } from '../protocol/errors.js';
import { FS_MAX_READ, type FsStatValue } from '../protocol/messages.js';
import { SHIM_FILE_BLOCK_BYTES, SHIM_LAZY_ABOVE_BYTES, SHIM_READ_AHEAD_MAX_BYTES } from '../protocol/shim-wire.js';
import type { AgentConnection } from './agent-client.js';

export type FsMode = 'read' | 'write' | 'local';

export interface FileRules {
  mode: FsMode;
  /** Regexes (POSIX extended, as the shim's regcomp reads them), in precedence order. */
  local: string[];
  remote: string[];
  notFound: string[];
  /** Directory trees that stay local: the working directory, the program's directory, the home directory. */
  keep: string[];
}

/** Files up to this size come back whole in the open's answer (one round trip). */
const INLINE_MAX = 256 * 1024;
/** Files up to this size are copied whole at open; bigger ones are filled as they are read. */
const EAGER_MAX = SHIM_LAZY_ABOVE_BYTES;
/** Parallel fs.read requests when filling a range. */
const PARALLEL_READS = 4;

function validRegex(flag: string, re: string): string {
  try {
    new RegExp(re);
  } catch (err) {
    throw new TsmError('TSM_ERR_USAGE', `${flag} "${re}" is not a valid regular expression: ${(err as Error).message}`, { hint: 'patterns are POSIX extended regular expressions matched against absolute paths, e.g. --fs-local "^/srv/cache/"' });
  }
  return re;
}

export function fileRules(opts: { mode?: string | undefined; local: string[]; remote: string[]; notFound: string[]; programPath: string; cwd: string; targetless: boolean }): FileRules {
  const mode = opts.mode ?? 'read';
  if (mode !== 'read' && mode !== 'write' && mode !== 'local') {
    throw new TsmError('TSM_ERR_USAGE', `--fs-mode must be read, write or local, not "${mode}"`, { hint: 'read (default): the pod\'s files, writes stay private; write: writes reach the pod; local: no pod files' });
  }
  // "/" as a kept tree would make every path local; a session started from / keeps nothing.
  const keep = [opts.cwd, dirname(opts.programPath), homedir()].filter((d) => d && d !== '/');
  return {
    mode: opts.targetless ? 'local' : mode,
    local: opts.local.map((r) => validRegex('--fs-local', r)),
    remote: opts.remote.map((r) => validRegex('--fs-remote', r)),
    notFound: opts.notFound.map((r) => validRegex('--fs-not-found', r)),
    keep: [...new Set(keep)],
  };
}

export interface FileStats {
  /** Files whose content came from the pod. */
  filesRead: number;
  /** Content bytes received from the pod. */
  bytesIn: number;
  /** Content bytes written to the pod. */
  bytesOut: number;
  /** Every file request sent to the agent (opens, reads, stats, listings, …). */
  requests: number;
}

type Req = Record<string, unknown>;
type Resp = Record<string, unknown> & { ok: boolean };

function str(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.length > 4096 || v.includes('\0')) throw new TsmError('TSM_ERR_BAD_FRAME', `shim request has a bad "${field}"`);
  return v;
}

function uint(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new TsmError('TSM_ERR_BAD_FRAME', `shim request has a bad "${field}"`);
  return v;
}

/** The stat fields as the shim reads them (flat integers). */
function flatStat(s: FsStatValue): Record<string, number> {
  return {
    dev: s.dev, ino: s.ino, mode: s.mode, nlink: s.nlink, uid: s.uid, gid: s.gid, rdev: s.rdev, size: s.size,
    blksize: s.blksize, blocks: s.blocks, atime: s.atime[0], atimeNs: s.atime[1], mtime: s.mtime[0],
    mtimeNs: s.mtime[1], ctime: s.ctime[0], ctimeNs: s.ctime[1],
  };
}

interface LazyFile {
  agentHandle: number;
  /** The proxy's own descriptor of the program's memfd. */
  fd: number;
  size: number;
  /** Lazily filled files: which BLOCK-sized blocks are in the memfd, and which are on their way. */
  present?: Uint8Array;
  inflight?: Map<number, Promise<void>>;
  /** Where the last fill ended: a fill starting there is sequential and triggers read-ahead. */
  lastEnd?: number;
}

/** The fill granularity, the same as the shim's chunk. */
const BLOCK = SHIM_FILE_BLOCK_BYTES;
/** The largest read-ahead the proxy starts on its own after a sequential fill. */
const PREFETCH_MAX = SHIM_READ_AHEAD_MAX_BYTES;

export class FileProxy {
  readonly stats: FileStats = { filesRead: 0, bytesIn: 0, bytesOut: 0, requests: 0 };
  readonly #agent: AgentConnection;
  readonly #rules: FileRules;
  readonly #emptyDir: string;
  readonly #lazy = new Map<number, LazyFile>();
  #nextLocalHandle = 1;

  /** `privateDir` is the session proxy's 0700 directory. */
  constructor(agent: AgentConnection, rules: FileRules, privateDir: string) {
    this.#agent = agent;
    this.#rules = rules;
    this.#emptyDir = join(privateDir, 'empty-dir');
    mkdirSync(this.#emptyDir, { mode: 0o500 });
  }

  close(): void {
    for (const f of this.#lazy.values()) this.#release(f);
    this.#lazy.clear();
  }

  /** Answers a shim request whose op starts with "fs.". */
  async answer(req: Req): Promise<Resp> {
    try {
      switch (req.op) {
        case 'fs.config':
          return { ok: true, ...this.#rules, emptyDir: this.#emptyDir };
        case 'fs.open':
          return await this.#open(req);
        case 'fs.fill':
          return await this.#fill(req);
        case 'fs.writeback':
          return await this.#writeback(req);
        case 'fs.stat':
          return { ok: true, ...flatStat((await this.#request({ type: 'fs.stat', path: str(req.path, 'path'), follow: req.follow !== false })).stat) };
        case 'fs.access':
          return await this.#access(req);
        case 'fs.readdir':
          return await this.#readdir(req);
        case 'fs.readlink':
          return { ok: true, target: (await this.#request({ type: 'fs.readlink', path: str(req.path, 'path') })).target };
        case 'fs.change':
          return await this.#change(req);
        case 'fs.truncate':
          return await this.#truncate(req);
        default:
          return { ok: false, errno: osConstants.errno.ENOSYS, message: `unknown op ${String(req.op).slice(0, 32)}` };
      }
    } catch (err) {
      if (err instanceof RemoteError && err.errno !== undefined) return { ok: false, errno: err.errno, message: err.message };
      if (err instanceof TsmError && err.code === 'TSM_ERR_BAD_FRAME') return { ok: false, errno: osConstants.errno.EINVAL, message: err.message };
      const e = err as { code?: string; message?: string };
      const errno = typeof e.code === 'string' ? (osConstants.errno as Record<string, number>)[e.code] : undefined;
      return { ok: false, errno: errno ?? osConstants.errno.EIO, message: e.message ?? String(err) };
    }
  }

  /** The shim says it closed a lazily filled file (notification, no answer). */
  release(req: Req): void {
    const handle = typeof req.handle === 'number' ? req.handle : -1;
    const f = this.#lazy.get(handle);
    if (!f) return;
    this.#lazy.delete(handle);
    this.#release(f);
  }

  #release(f: LazyFile): void {
    closeSync(f.fd);
    if (f.agentHandle > 0 && !this.#agent.peer.closed) this.#request({ type: 'fs.close', handle: f.agentHandle }).catch(() => undefined);
  }

  #request: AgentConnection['request'] = (body) => {
    this.stats.requests++;
    return this.#agent.request(body);
  };

  /** Opens the program's memfd `fd` of process `pid` for writing. */
  #memfd(req: Req): number {
    const pid = uint(req.pid, 'pid');
    const fd = uint(req.fd, 'fd');
    return openSync(`/proc/${pid}/fd/${fd}`, fsConstants.O_RDWR);
  }

  async #copy(agentHandle: number, memfd: number, from: number, to: number): Promise<number> {
    let total = 0;
    const chunks: Array<[number, number]> = [];
    for (let off = from; off < to; off += FS_MAX_READ) chunks.push([off, Math.min(FS_MAX_READ, to - off)]);
    for (let i = 0; i < chunks.length; i += PARALLEL_READS) {
      const batch = chunks.slice(i, i + PARALLEL_READS);
      const results = await Promise.all(batch.map(([offset, length]) => this.#request({ type: 'fs.read', handle: agentHandle, offset, length })));
      results.forEach((r, k) => {
        const at = batch[k]?.[0] ?? 0;
        if (r.data.byteLength > 0) writeSync(memfd, r.data, 0, r.data.byteLength, at);
        total += r.data.byteLength;
      });
    }
    this.stats.bytesIn += total;
    return total;
  }

  async #open(req: Req): Promise<Resp> {
    const path = str(req.path, 'path');
    const flags = uint(req.flags, 'flags');
    const mode = uint(req.mode ?? 0, 'mode');
    const eager = req.eager === true;
    const accmode = flags & 3;
    const writable = accmode !== fsConstants.O_RDONLY;
    const writeMode = this.#rules.mode === 'write';
    // In read mode the pod's file is opened read-only whatever the program asked: its
    // writes go to its private copy only.
    // In write mode the pod's file is opened read-write (its content fills the program's
    // copy, which is written back with positioned writes, so never O_APPEND there).
    const podFlags = writeMode
      ? (flags & ~(3 | fsConstants.O_APPEND)) | (writable ? fsConstants.O_RDWR : fsConstants.O_RDONLY)
      : flags & ~(3 | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_TRUNC | fsConstants.O_APPEND);
    const inlineMax = !writable || !writeMode ? INLINE_MAX : 0;
    let opened;
    try {
      opened = await this.#request({ type: 'fs.open', path, flags: podFlags, mode, inlineMax });
    } catch (err) {
      // Read mode: creating a file that does not exist in the pod makes a private one.
      if (!writeMode && writable && (flags & fsConstants.O_CREAT) && err instanceof RemoteError && err.errno === osConstants.errno.ENOENT) {
        const now = Math.floor(Date.now() / 1000);
        return { ok: true, kind: 'file', handle: 0, ...flatStat({ dev: 0, ino: 0, mode: 0o100000 | (mode & 0o777), nlink: 1, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, rdev: 0, size: 0, blksize: 4096, blocks: 0, atime: [now, 0], mtime: [now, 0], ctime: [now, 0] }) };
      }
      throw err;
    }
    const { stat, handle } = opened;
    if ((stat.mode & 0o170000) === 0o040000) {
      if (writable) throw new RemoteError('TSM_ERR_FILE', `${path} is a directory`, osConstants.errno.EISDIR);
      return { ok: true, kind: 'dir', handle: 0, ...flatStat(stat) };
    }
    this.stats.filesRead++;
    const memfd = this.#memfd(req);
    let keep = false;
    try {
      const truncated = writable && (flags & fsConstants.O_TRUNC) !== 0;
      if (opened.data) {
        if (opened.data.byteLength > 0) writeSync(memfd, opened.data, 0, opened.data.byteLength, 0);
        this.stats.bytesIn += opened.data.byteLength;
        return { ok: true, kind: 'file', handle: 0, ...flatStat(stat) };
      }
      const lazy = !writable && !eager && stat.size > EAGER_MAX;
      if (lazy) {
        // A sparse memfd of the pod file's size; ranges are filled as the program reads them.
        const local = this.#nextLocalHandle++;
        ftruncateSync(memfd, stat.size);
        this.#lazy.set(local, { agentHandle: handle, fd: memfd, size: stat.size, present: new Uint8Array(Math.ceil(stat.size / BLOCK)), inflight: new Map(), lastEnd: -1 });
        keep = true;
        return { ok: true, kind: 'file', handle: local, lazy: true, ...flatStat(stat) };
      }
      if (!truncated) await this.#copy(handle, memfd, 0, stat.size);
      if (writable && writeMode) {
        // Kept open for write-back (on close and fsync).
        const local = this.#nextLocalHandle++;
        this.#lazy.set(local, { agentHandle: handle, fd: memfd, size: stat.size });
        keep = true;
        return { ok: true, kind: 'file', handle: local, writeback: true, ...flatStat(truncated ? { ...stat, size: 0 } : stat) };
      }
      return { ok: true, kind: 'file', handle: 0, ...flatStat(stat) };
    } finally {
      if (!keep) {
        closeSync(memfd);
        if (handle > 0) this.#request({ type: 'fs.close', handle }).catch(() => undefined);
      }
    }
  }

  async #fill(req: Req): Promise<Resp> {
    const f = this.#lazy.get(uint(req.handle, 'handle'));
    if (!f) return { ok: false, errno: osConstants.errno.EBADF, message: 'no such lazily filled file' };
    const offset = uint(req.offset, 'offset');
    const end = Math.min(f.size, offset + uint(req.length, 'length'));
    if (offset >= end) return { ok: true, filled: 0 };
    if (!f.present || !f.inflight) return { ok: true, filled: await this.#copy(f.agentHandle, f.fd, offset, end) };
    await this.#blocks(f, offset, end);
    // Sequential reading: fetch the next window while the program consumes this one, so the
    // next fill finds it present or on its way (errors surface on that fill, not here).
    if (offset === f.lastEnd && end < f.size) {
      const ahead = Math.min(PREFETCH_MAX, Math.max(end - offset, BLOCK) * 2);
      this.#blocks(f, end, Math.min(f.size, end + ahead)).catch(() => undefined);
    }
    f.lastEnd = end;
    return { ok: true, filled: end - offset };
  }

  /** Makes the blocks covering [from, to) present: fetches the missing ones (contiguous runs, FS_MAX_READ per request) and waits for those on their way. */
  async #blocks(f: LazyFile, from: number, to: number): Promise<void> {
    const present = f.present as Uint8Array;
    const inflight = f.inflight as Map<number, Promise<void>>;
    const waits: Array<Promise<void>> = [];
    const first = Math.floor(from / BLOCK);
    const last = Math.floor((to - 1) / BLOCK);
    let run = -1;
    const flush = (upTo: number): void => {
      for (let b = run; b < upTo; b += FS_MAX_READ / BLOCK) {
        const count = Math.min(FS_MAX_READ / BLOCK, upTo - b);
        const offset = b * BLOCK;
        const length = Math.min(count * BLOCK, f.size - offset);
        const p = this.#request({ type: 'fs.read', handle: f.agentHandle, offset, length }).then((r) => {
          if (r.data.byteLength > 0) writeSync(f.fd, r.data, 0, r.data.byteLength, offset);
          this.stats.bytesIn += r.data.byteLength;
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

  async #writeback(req: Req): Promise<Resp> {
    const f = this.#lazy.get(uint(req.handle, 'handle'));
    if (!f) return { ok: false, errno: osConstants.errno.EBADF, message: 'no such writable pod file' };
    const size = fstatSync(f.fd).size;
    const buf = Buffer.allocUnsafe(Math.min(FS_MAX_READ, Math.max(size, 1)));
    for (let off = 0; off < size;) {
      const n = readSync(f.fd, buf, 0, Math.min(buf.byteLength, size - off), off);
      if (n <= 0) break;
      await this.#request({ type: 'fs.write', handle: f.agentHandle, offset: off, data: buf.subarray(0, n) });
      this.stats.bytesOut += n;
      off += n;
    }
    await this.#request({ type: 'fs.truncate', handle: f.agentHandle, path: '/', size });
    return { ok: true, size };
  }

  async #access(req: Req): Promise<Resp> {
    const path = str(req.path, 'path');
    const want = uint(req.mode ?? 0, 'mode');
    const { stat } = await this.#request({ type: 'fs.stat', path, follow: true });
    // The agent reads as root: like root, only execute needs a bit set somewhere.
    if ((want & 1) && (stat.mode & 0o170000) !== 0o040000 && (stat.mode & 0o111) === 0) {
      return { ok: false, errno: osConstants.errno.EACCES, message: `${path} is not executable in the pod` };
    }
    return { ok: true };
  }

  async #readdir(req: Req): Promise<Resp> {
    const path = str(req.path, 'path');
    const memfd = this.#memfd(req);
    try {
      let offset = 0;
      let at = 0;
      for (;;) {
        const page = await this.#request({ type: 'fs.readdir', path, offset });
        // Each entry: d_type (1 byte), name length (2 bytes, little endian), name.
        const names = page.names === '' ? [] : page.names.split('\0');
        if (names.length !== page.types.byteLength) throw new TsmError('TSM_ERR_BAD_FRAME', 'fs.readdir answer has names and types of different lengths');
        let total = 0;
        for (const name of names) total += 3 + Buffer.byteLength(name, 'utf8');
        const chunk = Buffer.allocUnsafe(total);
        let pos = 0;
        names.forEach((name, i) => {
          const n = chunk.write(name, pos + 3, 'utf8');
          chunk.writeUInt8(page.types[i] ?? 0, pos);
          chunk.writeUInt16LE(n, pos + 1);
          pos += 3 + n;
        });
        if (chunk.byteLength > 0) writeSync(memfd, chunk, 0, chunk.byteLength, at);
        at += chunk.byteLength;
        offset += names.length;
        if (page.done || names.length === 0) break;
      }
      return { ok: true, count: offset, bytes: at };
    } finally {
      closeSync(memfd);
    }
  }

  async #change(req: Req): Promise<Resp> {
    if (this.#rules.mode !== 'write') return { ok: false, errno: osConstants.errno.EROFS, message: 'the pod\'s files are read-only unless --fs-mode write' };
    const change = str(req.change, 'change');
    const path = str(req.path, 'path');
    if (change !== 'mkdir' && change !== 'unlink' && change !== 'rmdir' && change !== 'rename') throw new TsmError('TSM_ERR_BAD_FRAME', `unknown change "${change}"`);
    await this.#request({ type: 'fs.change', op: change, path, mode: uint(req.mode ?? 0, 'mode'), to: change === 'rename' ? str(req.to, 'to') : '' });
    return { ok: true };
  }

  async #truncate(req: Req): Promise<Resp> {
    if (this.#rules.mode !== 'write') return { ok: false, errno: osConstants.errno.EROFS, message: 'the pod\'s files are read-only unless --fs-mode write' };
    await this.#request({ type: 'fs.truncate', handle: 0, path: str(req.path, 'path'), size: uint(req.size, 'size') });
    return { ok: true };
  }
}
