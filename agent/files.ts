/**
 * The pod's files, as the target container sees them, for one session.
 *
 * Every path is resolved inside the container's root by the addon's openat2
 * (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) on a directory fd of /proc/<pid>/root, so it
 * sees the container's mount namespace (volumes mounted only there included), while
 * absolute symlinks, `..` and /proc magic links never reach the node's own files. Node
 * then works on the resulting fd (fstat, read, write); a directory is listed through
 * /proc/self/fd/<fd>, the agent's own descriptor of the already-confined directory.
 */
import { closeSync, constants as fsConstants, fstatSync, ftruncateSync, openSync, read, readSync, readdirSync, write, type Dirent } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { loadAddon } from '../native/index.js';
import { RemoteError, TsmError } from '../protocol/errors.js';
import { FS_MAX_READ, type FsChange, type FsStatValue, type ResultOf } from '../protocol/messages.js';

const O_PATH = 0o10000000;
const O_NOFOLLOW = fsConstants.O_NOFOLLOW;
/** Open flags a client may pass; everything else is dropped. */
const ALLOWED_FLAGS = fsConstants.O_RDONLY | fsConstants.O_WRONLY | fsConstants.O_RDWR | fsConstants.O_CREAT |
  fsConstants.O_EXCL | fsConstants.O_TRUNC | fsConstants.O_APPEND | fsConstants.O_DIRECTORY | O_NOFOLLOW;
const MAX_HANDLES = 4096;
/** Entries per fs.readdir answer: 32,768 names of up to 100 bytes stay well under the frame limit. */
const READDIR_PAGE = 32768;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

interface SysError { errno?: number; code?: string; message?: string }

/** The errno of an addon (positive `errno`) or Node (negative `errno`, `code`) error. */
function errnoOf(err: unknown): number {
  const e = err as SysError;
  if (typeof e.code === 'string') {
    const n = (osConstants.errno as Record<string, number>)[e.code];
    if (n !== undefined) return n;
  }
  if (typeof e.errno === 'number' && e.errno !== 0) return Math.abs(e.errno);
  return osConstants.errno.EIO;
}

function fail(what: string, path: string, err: unknown): never {
  const errno = errnoOf(err);
  const name = Object.entries(osConstants.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
  throw new RemoteError('TSM_ERR_FILE', `${what} ${path} in the pod: ${name}`, errno);
}

function absolute(path: string): string {
  if (!path.startsWith('/') || path.includes('\0')) throw new RemoteError('TSM_ERR_FILE', `pod paths must be absolute: "${path.slice(0, 64)}"`, osConstants.errno.EINVAL);
  return path;
}

function statOf(fd: number): FsStatValue {
  const s = fstatSync(fd, { bigint: true });
  const time = (ns: bigint): [number, number] => [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
  return {
    dev: Number(s.dev), ino: Number(s.ino), mode: Number(s.mode), nlink: Number(s.nlink), uid: Number(s.uid),
    gid: Number(s.gid), rdev: Number(s.rdev), size: Number(s.size), blksize: Number(s.blksize), blocks: Number(s.blocks),
    atime: time(s.atimeNs), mtime: time(s.mtimeNs), ctime: time(s.ctimeNs),
  };
}

function direntType(d: Dirent): number {
  if (d.isFile()) return 8;
  if (d.isDirectory()) return 4;
  if (d.isSymbolicLink()) return 10;
  if (d.isFIFO()) return 1;
  if (d.isSocket()) return 12;
  if (d.isCharacterDevice()) return 2;
  if (d.isBlockDevice()) return 6;
  return 0;
}

/** The most the agent reads of a pod configuration file (resolv.conf, hosts): they are a few hundred bytes. */
export const POD_CONFIG_MAX_BYTES = 256 * 1024;
let configScratch: Buffer | undefined;

/**
 * Reads a small configuration file of the pod (resolv.conf, hosts) with the confinement of
 * every pod file: resolved inside the container's root (an absolute symlink there cannot
 * make the agent read the node's file), opened non-blocking (a FIFO cannot stall the
 * agent), regular files only, and at most `maxBytes` read.
 */
export function readPodConfigFile(rootFd: number, path: string, maxBytes = POD_CONFIG_MAX_BYTES): string {
  const fd = loadAddon().openInRoot(rootFd, absolute(path), fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY, 0);
  try {
    if (!fstatSync(fd).isFile()) throw new RemoteError('TSM_ERR_FILE', `${path} in the pod is not a regular file`, osConstants.errno.ENXIO);
    // One scratch buffer for every read (they are synchronous): resolv.conf is read for every
    // DNS message and lookup, and zero-filling a fresh 256 KiB each time was the agent's
    // largest cost per query (issue 12). Only the bytes read are decoded.
    const buffer = maxBytes <= POD_CONFIG_MAX_BYTES ? (configScratch ??= Buffer.allocUnsafe(POD_CONFIG_MAX_BYTES)) : Buffer.allocUnsafe(maxBytes);
    let filled = 0;
    for (let n = 1; n > 0 && filled < maxBytes; filled += n) n = readSync(fd, buffer, filled, maxBytes - filled, null);
    return buffer.subarray(0, filled).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export class PodFiles {
  readonly #root: number;
  readonly #handles = new Map<number, { fd: number; path: string }>();
  #nextHandle = 1;
  /** Counters for /status. */
  readonly stats = { opens: 0, reads: 0, bytesRead: 0, listings: 0, stats: 0, changes: 0 };

  /** `proc` is the target's held /proc directory (agent/target.ts), `pid` its PID on the node. */
  constructor(proc: string, pid: number) {
    try {
      this.#root = openSync(`${proc}/root`, O_PATH | fsConstants.O_DIRECTORY);
    } catch (cause) {
      throw new TsmError('TSM_ERR_PERMISSION', `cannot open the root of process ${pid}`, { cause, hint: 'the agent needs hostPID and CAP_SYS_PTRACE (or root) to see a container\'s files' });
    }
  }

  dispose(): void {
    for (const h of this.#handles.values()) closeSync(h.fd);
    this.#handles.clear();
    closeSync(this.#root);
  }

  #open(path: string, flags: number, mode = 0): number {
    try {
      return loadAddon().openInRoot(this.#root, absolute(path), flags, mode);
    } catch (err) {
      if (err instanceof RemoteError) throw err;
      return fail('cannot open', path, err);
    }
  }

  #handle(handle: number): { fd: number; path: string } {
    const h = this.#handles.get(handle);
    if (!h) throw new RemoteError('TSM_ERR_FILE', `no open pod file with handle ${handle}`, osConstants.errno.EBADF);
    return h;
  }

  open(path: string, flags: number, mode: number, inlineMax: number): ResultOf['fs.open'] {
    this.stats.opens++;
    const accmode = flags & 3;
    // Never block the agent on a FIFO or a device; regular files ignore O_NONBLOCK.
    const fd = this.#open(path, (flags & ALLOWED_FLAGS) | fsConstants.O_NONBLOCK, mode);
    let keep = false;
    try {
      const stat = statOf(fd);
      const type = stat.mode & S_IFMT;
      if (type === S_IFDIR) return { handle: 0, stat };
      if (type !== S_IFREG) fail('cannot open', path, { code: 'ENXIO' });
      if (accmode === fsConstants.O_RDONLY && stat.size <= inlineMax) {
        this.stats.bytesRead += stat.size;
        return { handle: 0, stat, data: this.#readAllSync(fd, stat.size, path) };
      }
      if (this.#handles.size >= MAX_HANDLES) fail('too many open pod files for', path, { code: 'EMFILE' });
      const handle = this.#nextHandle++;
      this.#handles.set(handle, { fd, path });
      keep = true;
      return { handle, stat };
    } finally {
      if (!keep) closeSync(fd);
    }
  }

  #readAllSync(fd: number, size: number, path: string): Uint8Array {
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      let n: number;
      try {
        n = readSync(fd, buf, got, size - got, got);
      } catch (err) {
        return fail('cannot read', path, err);
      }
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  }

  async read(handle: number, offset: number, length: number): Promise<ResultOf['fs.read']> {
    const h = this.#handle(handle);
    const want = Math.min(length, FS_MAX_READ);
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const n = await new Promise<number>((resolve, reject) => read(h.fd, buf, got, want - got, offset + got, (err, bytes) => (err ? reject(err) : resolve(bytes))))
        .catch((err: unknown) => fail('cannot read', h.path, err));
      if (n === 0) break;
      got += n;
    }
    this.stats.reads++;
    this.stats.bytesRead += got;
    return { data: buf.subarray(0, got) };
  }

  async write(handle: number, offset: number, data: Uint8Array): Promise<ResultOf['fs.write']> {
    const h = this.#handle(handle);
    let done = 0;
    while (done < data.byteLength) {
      done += await new Promise<number>((resolve, reject) => write(h.fd, data, done, data.byteLength - done, offset + done, (err, bytes) => (err ? reject(err) : resolve(bytes))))
        .catch((err: unknown) => fail('cannot write', h.path, err));
    }
    return { written: done };
  }

  truncate(handle: number, path: string, size: number): ResultOf['fs.truncate'] {
    this.stats.changes++;
    if (handle > 0) {
      const h = this.#handle(handle);
      try {
        ftruncateSync(h.fd, size);
      } catch (err) {
        fail('cannot truncate', h.path, err);
      }
      return {};
    }
    const fd = this.#open(path, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    try {
      ftruncateSync(fd, size);
    } catch (err) {
      fail('cannot truncate', path, err);
    } finally {
      closeSync(fd);
    }
    return {};
  }

  close(handle: number): ResultOf['fs.close'] {
    const h = this.#handles.get(handle);
    if (h) {
      this.#handles.delete(handle);
      closeSync(h.fd);
    }
    return {};
  }

  stat(path: string, follow: boolean): ResultOf['fs.stat'] {
    this.stats.stats++;
    const fd = this.#open(path, O_PATH | (follow ? 0 : O_NOFOLLOW));
    try {
      return { stat: statOf(fd) };
    } finally {
      closeSync(fd);
    }
  }

  readdir(path: string, offset: number): ResultOf['fs.readdir'] {
    this.stats.listings++;
    const fd = this.#open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    let all: Dirent[];
    try {
      all = readdirSync(`/proc/self/fd/${fd}`, { withFileTypes: true });
    } catch (err) {
      return fail('cannot list', path, err);
    } finally {
      closeSync(fd);
    }
    const names: string[] = [];
    const types: number[] = [];
    let bytes = 0;
    for (let i = offset; i < all.length && names.length < READDIR_PAGE && bytes < 2 * 1024 * 1024; i++) {
      const d = all[i] as Dirent;
      bytes += Buffer.byteLength(d.name) + 2;
      names.push(d.name);
      types.push(direntType(d));
    }
    return { names: names.join('\0'), types: Uint8Array.from(types), done: offset + names.length >= all.length };
  }

  readlink(path: string): ResultOf['fs.readlink'] {
    try {
      return { target: loadAddon().readlinkInRoot(this.#root, absolute(path)) };
    } catch (err) {
      if (err instanceof RemoteError) throw err;
      return fail('cannot read the link', path, err);
    }
  }

  change(m: FsChange): ResultOf['fs.change'] {
    this.stats.changes++;
    const arg = m.op === 'rename' ? absolute(m.to) : m.mode;
    try {
      loadAddon().pathOpInRoot(this.#root, m.op, absolute(m.path), arg);
    } catch (err) {
      if (err instanceof RemoteError) throw err;
      fail(`cannot ${m.op}`, m.path, err);
    }
    return {};
  }
}
