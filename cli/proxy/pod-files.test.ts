import { closeSync, constants as fsConstants, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteError } from '../../protocol/errors.js';
import type { FsStatValue } from '../../protocol/messages.js';
import { SHIM_FILE_BLOCK_BYTES, SHIM_LAZY_ABOVE_BYTES } from '../../protocol/shim-wire.js';
import type { FileRules } from './file-rules.js';
import { InProcessAgent } from './in-process-agent.js';
import { FileProxy } from './pod-files.js';

const dir = mkdtempSync(join(tmpdir(), 'tsm-podfiles-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rules = (mode: FileRules['mode']): FileRules => ({ mode, local: [], remote: [], notFound: [], keep: [] });
const stat = (size: number): FsStatValue => ({
  dev: 1, ino: 2, mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, size, blksize: 4096, blocks: 0, atime: [1, 0], mtime: [2, 0], ctime: [3, 0],
});

/** A pod with one file, /data/f, served by the in-process agent from memory. */
function podWith(content: Buffer): { agent: InProcessAgent; written: Buffer[]; closed: number[] } {
  const agent = new InProcessAgent();
  const written: Buffer[] = [];
  const closed: number[] = [];
  let current = Buffer.from(content);
  agent.answers['fs.open'] = (b) => {
    if (b.path !== '/data/f') return Promise.reject(new RemoteError('TSM_ERR_FILE', `${b.path}: no such file`, osConstants.errno.ENOENT));
    return current.byteLength <= b.inlineMax ? { handle: 0, stat: stat(current.byteLength), data: current } : { handle: 7, stat: stat(current.byteLength) };
  };
  agent.answers['fs.read'] = (b) => ({ data: current.subarray(b.offset, b.offset + b.length) });
  agent.answers['fs.write'] = (b) => {
    written.push(Buffer.from(b.data));
    return { written: b.data.byteLength };
  };
  agent.answers['fs.truncate'] = (b) => {
    current = Buffer.concat(written).subarray(0, b.size);
    return {};
  };
  agent.answers['fs.close'] = (b) => {
    closed.push(b.handle);
    return {};
  };
  agent.answers['fs.change'] = () => ({});
  return { agent, written, closed };
}

let memfdPath: string;
let memfd: number;
let n = 0;
beforeEach(() => {
  // A real file of this process stands for the program's memfd (/proc/<pid>/fd/<fd>).
  memfdPath = join(dir, `memfd-${n++}`);
  memfd = openSync(memfdPath, 'w+');
});
afterEach(() => closeSync(memfd));

const openReq = (flags: number, extra: Record<string, unknown> = {}) => ({ op: 'fs.open', path: '/data/f', flags, pid: process.pid, fd: memfd, ...extra }) as const;

describe('pod files: open', () => {
  it('a small file comes back inline and is written into the memfd; no handle is kept', async () => {
    const { agent } = podWith(Buffer.from('hello pod'));
    const files = new FileProxy(agent, rules('read'), mkdtempSync(join(dir, 'p-')));
    const reply = await files.handlers['fs.open'](openReq(fsConstants.O_RDONLY));
    expect(reply).toMatchObject({ ok: true, kind: 'file', handle: 0, size: 9, mode: 0o100644, mtime: 2 });
    expect(readFileSync(memfdPath, 'utf8')).toBe('hello pod');
    expect(files.stats).toMatchObject({ filesRead: 1, bytesIn: 9, requests: 1 });
  });

  it('the pod\'s errno comes back; read mode creates a missing file privately', async () => {
    const { agent } = podWith(Buffer.from(''));
    const files = new FileProxy(agent, rules('read'), mkdtempSync(join(dir, 'p-')));
    expect(await files.handlers['fs.open']({ ...openReq(fsConstants.O_RDONLY), path: '/data/missing' })).toMatchObject({ ok: false, errno: osConstants.errno.ENOENT });
    expect(await files.handlers['fs.open']({ ...openReq(fsConstants.O_WRONLY | fsConstants.O_CREAT, { mode: 0o600 }), path: '/data/new' }))
      .toMatchObject({ ok: true, kind: 'file', handle: 0, size: 0, mode: 0o100600 });
  });

  it('a big read-only file is lazily filled: a sparse memfd of its size, blocks fetched on fs.fill, read-ahead on sequential reading', async () => {
    const size = SHIM_LAZY_ABOVE_BYTES + 3 * SHIM_FILE_BLOCK_BYTES;
    const content = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4096) content.writeUInt32BE(i, i);
    const { agent, closed } = podWith(content);
    const files = new FileProxy(agent, rules('read'), mkdtempSync(join(dir, 'p-')));
    const reply = await files.handlers['fs.open'](openReq(fsConstants.O_RDONLY));
    expect(reply).toMatchObject({ ok: true, handle: 1, lazy: true, size });
    expect(fstatSync(memfd).size).toBe(size);
    expect(files.stats.bytesIn).toBe(0);
    expect(await files.handlers['fs.fill']({ op: 'fs.fill', handle: 1, offset: 0, length: SHIM_FILE_BLOCK_BYTES })).toEqual({ ok: true, filled: SHIM_FILE_BLOCK_BYTES });
    const reads = () => agent.requests.filter((r) => r.type === 'fs.read').length;
    expect(reads()).toBe(1);
    expect(await files.handlers['fs.fill']({ op: 'fs.fill', handle: 1, offset: SHIM_FILE_BLOCK_BYTES, length: SHIM_FILE_BLOCK_BYTES })).toEqual({ ok: true, filled: SHIM_FILE_BLOCK_BYTES });
    expect(reads()).toBe(3); // the range, and the read-ahead after it
    const onDisk = readFileSync(memfdPath);
    expect(onDisk.subarray(0, 2 * SHIM_FILE_BLOCK_BYTES).equals(content.subarray(0, 2 * SHIM_FILE_BLOCK_BYTES))).toBe(true);
    expect(await files.handlers['fs.fill']({ op: 'fs.fill', handle: 99, offset: 0, length: 1 })).toMatchObject({ ok: false, errno: osConstants.errno.EBADF });
    files.handlers['fs.release']({ op: 'fs.release', handle: 1 });
    await new Promise((r) => setImmediate(r));
    expect(closed).toEqual([7]);
    expect(await files.handlers['fs.fill']({ op: 'fs.fill', handle: 1, offset: 0, length: 1 })).toMatchObject({ ok: false, errno: osConstants.errno.EBADF });
  });

  it('write mode: a writable open is filled and kept; fs.writeback sends its whole content and size to the pod', async () => {
    const { agent, written } = podWith(Buffer.from('old content'));
    const files = new FileProxy(agent, rules('write'), mkdtempSync(join(dir, 'p-')));
    const reply = await files.handlers['fs.open'](openReq(fsConstants.O_RDWR));
    expect(reply).toMatchObject({ ok: true, handle: 1, writeback: true });
    expect(readFileSync(memfdPath, 'utf8')).toBe('old content');
    writeSync(memfd, 'NEW', 0, 'utf8');
    expect(await files.handlers['fs.writeback']({ op: 'fs.writeback', handle: 1 })).toEqual({ ok: true, size: 11 });
    expect(Buffer.concat(written).toString()).toBe('NEW content');
    expect(agent.requests.at(-1)).toEqual({ type: 'fs.truncate', handle: 7, path: '/', size: 11 });
    expect(files.stats.bytesOut).toBe(11);
  });
});

describe('pod files: changes', () => {
  it('read mode refuses changes with EROFS, without asking the pod', async () => {
    const { agent } = podWith(Buffer.from(''));
    const files = new FileProxy(agent, rules('read'), mkdtempSync(join(dir, 'p-')));
    expect(await files.handlers['fs.change']({ op: 'fs.change', change: 'mkdir', path: '/data/d' })).toMatchObject({ ok: false, errno: osConstants.errno.EROFS });
    expect(await files.handlers['fs.truncate']({ op: 'fs.truncate', path: '/data/f', size: 0 })).toMatchObject({ ok: false, errno: osConstants.errno.EROFS });
    expect(agent.requests).toEqual([]);
  });

  it('write mode sends them to the pod (rename with its target, truncate by path)', async () => {
    const { agent } = podWith(Buffer.from(''));
    const files = new FileProxy(agent, rules('write'), mkdtempSync(join(dir, 'p-')));
    expect(await files.handlers['fs.change']({ op: 'fs.change', change: 'rename', path: '/data/a', to: '/data/b' })).toEqual({ ok: true });
    expect(await files.handlers['fs.change']({ op: 'fs.change', change: 'mkdir', path: '/data/d', mode: 0o755 })).toEqual({ ok: true });
    expect(await files.handlers['fs.truncate']({ op: 'fs.truncate', path: '/data/f', size: 3 })).toEqual({ ok: true });
    expect(agent.requests).toEqual([
      { type: 'fs.change', op: 'rename', path: '/data/a', mode: 0, to: '/data/b' },
      { type: 'fs.change', op: 'mkdir', path: '/data/d', mode: 0o755, to: '' },
      { type: 'fs.truncate', handle: 0, path: '/data/f', size: 3 },
    ]);
  });

  it('fs.config hands the rules and the empty directory to the shim', async () => {
    const { agent } = podWith(Buffer.from(''));
    const privateDir = mkdtempSync(join(dir, 'p-'));
    const files = new FileProxy(agent, { ...rules('read'), local: ['^/srv/'] }, privateDir);
    expect(await files.handlers['fs.config']({ op: 'fs.config' })).toEqual({ ok: true, mode: 'read', local: ['^/srv/'], remote: [], notFound: [], keep: [], emptyDir: join(privateDir, 'empty-dir') });
  });
});
