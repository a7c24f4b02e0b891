/**
 * The session proxy's answers to the shim's file requests (docs/shim-ipc.md, "Files").
 *
 * For a remote file the shim creates a memfd and the proxy fills it directly through
 * /proc/<pid>/fd/<fd> (Node cannot pass descriptors over a unix socket, but it can open the
 * program's memfd by that path), so the program reads a real kernel file with no further
 * hook; a big file is filled range by range as the program reads it (pod-file-buffer.ts).
 */
import { closeSync, constants as fsConstants, ftruncateSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { RemoteError, TsmError } from '../../protocol/errors.js';
import type { FsStatValue } from '../../protocol/messages.js';
import type { FileRules } from './file-rules.js';
import { copyFromPod, PodFileBuffer, type PodFileTransport } from './pod-file-buffer.js';
import type { ProxyAgent } from './proxy-agent.js';
import type { FieldsOf } from '../../protocol/codec.js';
import { SHIM_LAZY_ABOVE_BYTES, type SHIM_STAT_FIELDS, type ShimCallOp, type ShimErrorReply, type ShimHandlers, type ShimOp, type ShimReplyOf, type ShimRequestOf } from '../../protocol/shim-wire.js';

/** The file ops (fs.*), requests and the fs.release notification. */
export type FileOp = Extract<ShimOp, `fs.${string}`>;
export type FileHandlers = Pick<ShimHandlers, FileOp>;

/** A file op's handler whose failures become the shim's errno reply. */
function answering<K extends Extract<FileOp, ShimCallOp>>(handle: (r: ShimRequestOf<K>) => Promise<ShimReplyOf[K]> | ShimReplyOf[K]) {
  return async (r: ShimRequestOf<K>): Promise<ShimReplyOf[K]> => {
    try {
      return await handle(r);
    } catch (err) {
      return fileFailure(err) as ShimReplyOf[K];
    }
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

/** Files up to this size come back whole in the open's answer (one round trip). */
const INLINE_MAX = 256 * 1024;

/** The stat fields as the shim reads them (flat integers). */
function flatStat(s: FsStatValue): FieldsOf<typeof SHIM_STAT_FIELDS> {
  return {
    dev: s.dev, ino: s.ino, mode: s.mode, nlink: s.nlink, uid: s.uid, gid: s.gid, rdev: s.rdev, size: s.size,
    blksize: s.blksize, blocks: s.blocks, atime: s.atime[0], atimeNs: s.atime[1], mtime: s.mtime[0],
    mtimeNs: s.mtime[1], ctime: s.ctime[0], ctimeNs: s.ctime[1],
  };
}

/** Opens the program's memfd `fd` of process `pid` for writing. */
function openMemfd(req: { pid: number; fd: number }): number {
  return openSync(`/proc/${req.pid}/fd/${req.fd}`, fsConstants.O_RDWR);
}

/** A failure as the shim's reply: the pod's errno, or a local one. */
export function fileFailure(err: unknown): ShimErrorReply {
  if (err instanceof RemoteError && err.errno !== undefined) return { ok: false, errno: err.errno, message: err.message };
  if (err instanceof TsmError && err.code === 'TSM_ERR_BAD_FRAME') return { ok: false, errno: osConstants.errno.EINVAL, message: err.message };
  const e = err as { code?: string; message?: string };
  const errno = typeof e.code === 'string' ? (osConstants.errno as Record<string, number>)[e.code] : undefined;
  return { ok: false, errno: errno ?? osConstants.errno.EIO, message: e.message ?? String(err) };
}

export class FileProxy {
  readonly stats: FileStats = { filesRead: 0, bytesIn: 0, bytesOut: 0, requests: 0 };
  readonly #agent: ProxyAgent;
  readonly #rules: FileRules;
  readonly #emptyDir: string;
  /** Files the proxy still serves after their open, by the handle the shim was given. */
  readonly #buffers = new Map<number, PodFileBuffer>();
  #nextLocalHandle = 1;
  readonly #transport: PodFileTransport;
  /** One handler per file op; failures are answered with an errno, never thrown. */
  readonly handlers: FileHandlers;

  /** `privateDir` is the session proxy's 0700 directory. */
  constructor(agent: ProxyAgent, rules: FileRules, privateDir: string) {
    this.#agent = agent;
    this.#rules = rules;
    this.#emptyDir = join(privateDir, 'empty-dir');
    mkdirSync(this.#emptyDir, { mode: 0o500 });
    this.#transport = { request: this.#request, stats: this.stats, sessionOpen: () => !this.#agent.peer.closed };
    this.handlers = {
      'fs.config': () => ({ ok: true, ...this.#rules, emptyDir: this.#emptyDir }),
      'fs.open': answering((r) => this.#open(r)),
      'fs.fill': answering((r) => this.#fill(r)),
      'fs.writeback': answering((r) => this.#writeback(r)),
      'fs.release': (n) => this.#releaseBuffer(n.handle),
      'fs.stat': answering(async (r) => ({ ok: true, ...flatStat((await this.#request({ type: 'fs.stat', path: r.path, follow: r.follow !== false })).stat) })),
      'fs.access': answering((r) => this.#access(r)),
      'fs.readdir': answering((r) => this.#readdir(r)),
      'fs.readlink': answering(async (r) => ({ ok: true, target: (await this.#request({ type: 'fs.readlink', path: r.path })).target })),
      'fs.change': answering((r) => this.#change(r)),
      'fs.truncate': answering((r) => this.#truncate(r)),
    };
  }

  close(): void {
    for (const f of this.#buffers.values()) f.release();
    this.#buffers.clear();
  }

  /** The shim closed a file that has a handle (notification, no answer). */
  #releaseBuffer(handle: number): void {
    const f = this.#buffers.get(handle);
    if (!f) return;
    this.#buffers.delete(handle);
    f.release();
  }

  #request: ProxyAgent['request'] = (body) => {
    this.stats.requests++;
    return this.#agent.request(body);
  };

  async #open(req: ShimRequestOf<'fs.open'>): Promise<ShimReplyOf['fs.open']> {
    const { path, flags } = req;
    const mode = req.mode ?? 0;
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
    let keep = false;
    let memfd: number | undefined;
    try {
      memfd = openMemfd(req);
      const truncated = writable && (flags & fsConstants.O_TRUNC) !== 0;
      if (opened.data) {
        if (opened.data.byteLength > 0) writeSync(memfd, opened.data, 0, opened.data.byteLength, 0);
        this.stats.bytesIn += opened.data.byteLength;
        return { ok: true, kind: 'file', handle: 0, ...flatStat(stat) };
      }
      if (!writable && !eager && stat.size > SHIM_LAZY_ABOVE_BYTES) {
        // A sparse memfd of the pod file's size; ranges are filled as the program reads them.
        const local = this.#nextLocalHandle++;
        ftruncateSync(memfd, stat.size);
        this.#buffers.set(local, PodFileBuffer.lazilyFilled(this.#transport, handle, memfd, stat.size));
        keep = true;
        return { ok: true, kind: 'file', handle: local, lazy: true, ...flatStat(stat) };
      }
      if (!truncated) await copyFromPod(this.#transport, handle, memfd, 0, stat.size);
      if (writable && writeMode) {
        // Kept open for write-back (on close and fsync).
        const local = this.#nextLocalHandle++;
        this.#buffers.set(local, PodFileBuffer.writtenBack(this.#transport, handle, memfd, stat.size));
        keep = true;
        return { ok: true, kind: 'file', handle: local, writeback: true, ...flatStat(truncated ? { ...stat, size: 0 } : stat) };
      }
      return { ok: true, kind: 'file', handle: 0, ...flatStat(stat) };
    } finally {
      if (!keep) {
        if (memfd !== undefined) closeSync(memfd);
        if (handle > 0) this.#request({ type: 'fs.close', handle }).catch(() => undefined);
      }
    }
  }

  async #fill(req: ShimRequestOf<'fs.fill'>): Promise<ShimReplyOf['fs.fill']> {
    const f = this.#buffers.get(req.handle);
    if (!f) return { ok: false, errno: osConstants.errno.EBADF, message: 'no such lazily filled file' };
    return { ok: true, filled: await f.fill(req.offset, req.length) };
  }

  async #writeback(req: ShimRequestOf<'fs.writeback'>): Promise<ShimReplyOf['fs.writeback']> {
    const f = this.#buffers.get(req.handle);
    if (!f) return { ok: false, errno: osConstants.errno.EBADF, message: 'no such writable pod file' };
    return { ok: true, size: await f.writeBack() };
  }

  async #access(req: ShimRequestOf<'fs.access'>): Promise<ShimReplyOf['fs.access']> {
    const { path } = req;
    const want = req.mode ?? 0;
    const { stat } = await this.#request({ type: 'fs.stat', path, follow: true });
    // The agent reads as root: like root, only execute needs a bit set somewhere.
    if ((want & 1) && (stat.mode & 0o170000) !== 0o040000 && (stat.mode & 0o111) === 0) {
      return { ok: false, errno: osConstants.errno.EACCES, message: `${path} is not executable in the pod` };
    }
    return { ok: true };
  }

  async #readdir(req: ShimRequestOf<'fs.readdir'>): Promise<ShimReplyOf['fs.readdir']> {
    const { path } = req;
    const memfd = openMemfd(req);
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

  #readOnly(): ShimErrorReply | undefined {
    if (this.#rules.mode === 'write') return undefined;
    return { ok: false, errno: osConstants.errno.EROFS, message: 'the pod\'s files are read-only unless --fs-mode write' };
  }

  async #change(req: ShimRequestOf<'fs.change'>): Promise<ShimReplyOf['fs.change']> {
    const refused = this.#readOnly();
    if (refused) return refused;
    await this.#request({ type: 'fs.change', op: req.change, path: req.path, mode: req.mode ?? 0, to: req.change === 'rename' ? req.to ?? '' : '' });
    return { ok: true };
  }

  async #truncate(req: ShimRequestOf<'fs.truncate'>): Promise<ShimReplyOf['fs.truncate']> {
    const refused = this.#readOnly();
    if (refused) return refused;
    await this.#request({ type: 'fs.truncate', handle: 0, path: req.path, size: req.size });
    return { ok: true };
  }
}
