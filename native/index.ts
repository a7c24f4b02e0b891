/**
 * The TypeScript face of native/: where the built shim, launcher, supervisor and addon are, and the typed
 * surface of the addon. Both are built by `npm ci` (node-gyp, from binding.gyp).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TsmError } from '../protocol/errors.js';

/** The package root: the nearest folder above this file that holds binding.gyp. */
export const packageRoot: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('tsmirror: cannot find the package root (binding.gyp)');
    dir = up;
  }
})();

export const packageVersion: string = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;

function built(file: string): string {
  const path = join(packageRoot, 'build', 'Release', file);
  if (!existsSync(path)) {
    throw new TsmError('TSM_ERR_SHIM_MISSING', `${file} is missing (looked in ${dirname(path)})`,
      { hint: 'run `npm ci` (or `npm run build:native`) in the tsmirror folder; it needs g++, make and python3' });
  }
  return path;
}

/** Absolute path of libtsmirror.so, the preloaded shim. */
export function shimPath(): string {
  return built('libtsmirror.so');
}

/** Absolute path of tsmirror-launch, which starts the program with a parent-death signal (native/launcher). */
export function launcherPath(): string {
  return built('tsmirror-launch');
}

/**
 * Absolute path of tsmirror-supervise, which runs a program under a seccomp filter and
 * answers its notified system calls for the session (native/supervisor).
 */
export function supervisorPath(): string {
  return built('tsmirror-supervise');
}

export interface Addon {
  /**
   * A non-blocking socket created in the network namespace open at `nsFd` (-1: the
   * agent's own). Synchronous; throws an Error with `errno` and `syscall` on failure.
   */
  netnsSocket(nsFd: number, family: 4 | 6, kind: 'tcp' | 'udp'): number;
  /**
   * openat2(rootFd, path, flags | O_CLOEXEC, mode) with RESOLVE_IN_ROOT |
   * RESOLVE_NO_MAGICLINKS: the path cannot leave the root open at `rootFd`. Returns the
   * fd; throws an Error with `errno` on failure.
   */
  openInRoot(rootFd: number, path: string, flags: number, mode: number): number;
  /** The target of the symlink at `path` (its parents resolved inside the root). */
  readlinkInRoot(rootFd: number, path: string): string;
  /** mkdir (arg: mode), unlink, rmdir or rename (arg: the new path), confined to the root. */
  pathOpInRoot(rootFd: number, op: 'mkdir' | 'unlink' | 'rmdir' | 'rename', path: string, arg: number | string): void;
  /** A listening TCP socket on an ephemeral wildcard port in the namespace (dual stack when it can). */
  netnsListen(nsFd: number): { fd: number; port: number };
  /** SO_MARK on a socket (the redirect rules skip marked packets). */
  setMark(fd: number, mark: number): void;
  /**
   * A loopback listener whose accept queue is full (SO_REUSEPORT, backlog 1, two filler
   * connections nobody accepts): a connect to `port` stays in SYN-SENT. Close all three fds
   * to make such a connect fail (ECONNREFUSED on its next SYN).
   */
  holdListen(family: 4 | 6): { fd: number; port: number; fillers: number[] };
  /**
   * Connects from the held listener's `port` to the program's socket at `clientPort` (a TCP
   * simultaneous open): both ends are connected when it returns the proxy's fd.
   */
  holdRelease(family: 4 | 6, port: number, clientPort: number): number;
  /**
   * Runs `argv` (looked up on PATH) with `input` on its stdin, on a thread-pool thread with
   * posix_spawn (no fork of the agent: see native/addon/addon.cc), and resolves with its
   * exit code (null if killed), the signal that killed it, and its output (1 MiB at most
   * each). A command that cannot be started resolves with code 127 and the reason on
   * stderr; one still running after `timeoutMs` is killed.
   */
  spawnCapture(argv: string[], input: string, timeoutMs: number): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
  /**
   * Who owns the other end of a local TCP connection (ours: localAddr:localPort, the peer's:
   * peerAddr:peerPort), by a sock_diag lookup of that four-tuple: its socket inode (0 when
   * its owner has closed it) and uid; null when there is no such socket.
   */
  loopbackPeerOwner(family: 4 | 6, localAddr: string, localPort: number, peerAddr: string, peerPort: number): { inode: number; uid: number } | null;
  /**
   * The UDP socket on this machine that would receive a datagram sent from
   * fromAddr:fromPort to addr:port (one connected to it, or one merely bound there), by a
   * sock_diag lookup of that four-tuple: its inode and owner's uid; null when there is none.
   */
  udpReceiverOwner(family: 4 | 6, addr: string, port: number, fromAddr: string, fromPort: number): { inode: number; uid: number } | null;
}

let addon: Addon | undefined;

export function loadAddon(): Addon {
  addon ??= createRequire(import.meta.url)(built('tsmirror_addon.node')) as Addon;
  return addon;
}
