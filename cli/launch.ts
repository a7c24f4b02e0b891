/**
 * Starting the program: find it, refuse what the shim cannot reach (statically linked
 * or setuid executables), spawn it with the shim preloaded, relay signals, and turn its
 * end into tsmirror's exit code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, openSync, readSync, closeSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { TsmError } from '../protocol/errors.js';
import { launcherPath } from '../native/index.js';

/** tsmirror's own exit codes (the program's own code is passed through otherwise). */
export const EXIT = {
  /** tsmirror failed before or around the program (usage, agent unreachable, …). */
  TSMIRROR_FAILED: 125,
  /** The program was found but cannot run under tsmirror (statically linked, setuid). */
  CANNOT_RUN: 126,
  /** The program was not found. */
  NOT_FOUND: 127,
} as const;

export function findProgram(command: string, path: string | undefined): string {
  const candidates = command.includes('/') ? [resolve(command)] : (path ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, command));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // try the next one
    }
  }
  throw new TsmError('TSM_ERR_PROGRAM_NOT_FOUND', command.includes('/') ? `${command}: no such executable file` : `${command}: not found on PATH`);
}

export interface ProgramInfo {
  path: string;
  kind: 'dynamic' | 'static' | 'script' | 'other';
  /** The interpreter of a `#!` script. */
  interpreter?: string;
  setuid: boolean;
  go: boolean;
  /** Links liburing or imports an io_uring_* function (its dynamic symbols): connects and opens through a ring bypass the shim. */
  ioUring?: boolean;
}

function readHead(path: string, bytes: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const n = readSync(fd, buf, 0, bytes, 0);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

const PT_INTERP = 3;
const GO_BUILDINFO = Buffer.from('\xff Go buildinf:', 'latin1');

/** Reads the ELF program headers: a dynamically linked program has PT_INTERP. */
export function inspectProgram(path: string): ProgramInfo {
  const st = statSync(path);
  const setuid = ((st.mode & 0o4000) !== 0 && st.uid !== process.geteuid?.()) || ((st.mode & 0o2000) !== 0 && st.gid !== process.getegid?.());
  const head = readHead(path, 4096);
  if (head.subarray(0, 2).toString('latin1') === '#!') {
    const line = head.toString('latin1').split('\n')[0] ?? '';
    const interpreter = line.slice(2).trim().split(/\s+/)[0];
    return interpreter ? { path, kind: 'script', interpreter, setuid, go: false } : { path, kind: 'other', setuid, go: false };
  }
  if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46) return { path, kind: 'other', setuid, go: false };
  const is64 = head[4] === 2;
  const le = head[5] === 1;
  const u16 = (o: number): number => (le ? head.readUInt16LE(o) : head.readUInt16BE(o));
  const u32 = (o: number): number => (le ? head.readUInt32LE(o) : head.readUInt32BE(o));
  const phoff = is64 ? Number(le ? head.readBigUInt64LE(32) : head.readBigUInt64BE(32)) : u32(28);
  const phentsize = u16(is64 ? 54 : 42);
  const phnum = u16(is64 ? 56 : 44);
  const table = phoff + phentsize * phnum <= head.length ? head : readHead(path, phoff + phentsize * phnum);
  let dynamic = false;
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    const type = le ? table.readUInt32LE(off) : table.readUInt32BE(off);
    if (type === PT_INTERP) dynamic = true;
  }
  const size = Math.min(st.size, 64 * 1024 * 1024);
  const whole = readHead(path, size);
  const go = whole.includes(GO_BUILDINFO);
  const ioUring = dynamic && usesIoUring(whole, is64, le);
  return { path, kind: dynamic ? 'dynamic' : 'static', setuid, go, ...(ioUring ? { ioUring } : {}) };
}

const SHT_DYNSYM = 11;

/**
 * Whether the dynamic symbol names (the .dynsym's string table: imported functions and
 * DT_NEEDED libraries) name liburing or an io_uring_* function. Only what is linked
 * dynamically counts: a program that makes the system call itself (libuv in node) is
 * reported by the shim when it does.
 */
function usesIoUring(elf: Buffer, is64: boolean, le: boolean): boolean {
  const u16 = (o: number): number => (le ? elf.readUInt16LE(o) : elf.readUInt16BE(o));
  const u32 = (o: number): number => (le ? elf.readUInt32LE(o) : elf.readUInt32BE(o));
  const word = (o: number): number => (is64 ? Number(le ? elf.readBigUInt64LE(o) : elf.readBigUInt64BE(o)) : u32(o));
  try {
    const shoff = word(is64 ? 40 : 32);
    const shentsize = u16(is64 ? 58 : 46);
    const shnum = u16(is64 ? 60 : 48);
    const section = (i: number): { type: number; offset: number; size: number; link: number } => {
      const at = shoff + i * shentsize;
      return is64
        ? { type: u32(at + 4), offset: word(at + 24), size: word(at + 32), link: u32(at + 40) }
        : { type: u32(at + 4), offset: u32(at + 16), size: u32(at + 20), link: u32(at + 24) };
    };
    for (let i = 0; i < shnum; i++) {
      const s = section(i);
      if (s.type !== SHT_DYNSYM) continue;
      const strings = section(s.link);
      const names = elf.subarray(strings.offset, strings.offset + strings.size).toString('latin1').split('\0');
      return names.some((n) => n.startsWith('liburing.so') || n.startsWith('io_uring_'));
    }
  } catch {
    // a truncated or odd ELF file (beyond the 64 MiB read): say nothing
  }
  return false;
}

/**
 * Refuses what the shim cannot intercept, unless `force`. Returns warnings to print.
 * Scripts are judged by their interpreter.
 */
export function checkInterceptable(info: ProgramInfo, force: boolean, path: string | undefined): string[] {
  const warnings: string[] = [];
  const refuse = (code: 'TSM_ERR_STATIC_BINARY' | 'TSM_ERR_SETUID', message: string, hint: string): void => {
    if (!force) throw new TsmError(code, message, { hint: `${hint}; or pass --force to run it anyway, unintercepted` });
    warnings.push(`${message}; running it anyway (--force): its traffic, lookups and files are NOT redirected`);
  };
  if (info.setuid) {
    refuse('TSM_ERR_SETUID', `${info.path} is setuid/setgid: the dynamic loader ignores LD_PRELOAD for it, so tsmirror cannot intercept it`,
      'run a copy without the setuid bit');
  }
  if (info.kind === 'static') {
    refuse('TSM_ERR_STATIC_BINARY', `${info.path} is statically linked: the shim cannot be preloaded into it`,
      info.go ? 'rebuild the Go program with CGO_ENABLED=1 (a dynamically linked build)' : 'use a dynamically linked build of the program');
  } else if (info.kind === 'dynamic' && info.ioUring === true) {
    warnings.push(`${info.path} uses io_uring (liburing): connects and opens it submits to a ring bypass the shim, so they reach this machine, not the pod`);
  }
  if (info.kind === 'dynamic' && info.go) {
    warnings.push(`${info.path} is a Go program: Go makes its own system calls for sockets, so its connections bypass the shim (name lookups through cgo are still answered by the pod)`);
  } else if (info.kind === 'script' && info.interpreter) {
    const interp = isAbsolute(info.interpreter) ? info.interpreter : findProgram(info.interpreter, path);
    if (interp !== info.path) warnings.push(...checkInterceptable(inspectProgram(interp), force, path));
  }
  return warnings;
}

export interface RunningProgram {
  child: ChildProcess;
  /** Resolves with tsmirror's exit code once the program has ended. */
  exitCode: Promise<number>;
}

export const RELAYED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const;

/**
 * Spawns the program and relays SIGINT, SIGTERM, SIGHUP and SIGQUIT to it. When stdin is
 * a terminal, SIGINT and SIGQUIT from the keyboard already reach the program (same
 * process group), so they are not sent twice.
 *
 * The program starts through tsmirror-launch (native/launcher), which gives it a
 * parent-death signal and then becomes it (same pid): a SIGKILLed CLI takes its program
 * with it instead of leaving it running with its remote calls broken.
 */
export function runProgram(path: string, args: string[], argv0: string, env: Record<string, string>, options: { ownGroup?: boolean } = {}): RunningProgram {
  // In its own process group (--watch) the program and everything it started can be
  // stopped together; the caller then relays signals itself.
  const child = spawn(launcherPath(), [String(process.pid), path, argv0, ...args], { stdio: 'inherit', env, detached: options.ownGroup ?? false });
  const handlers = new Map<string, () => void>();
  for (const signal of options.ownGroup ? [] : RELAYED) {
    const handler = (): void => {
      const fromTerminal = process.stdin.isTTY && (signal === 'SIGINT' || signal === 'SIGQUIT');
      if (!fromTerminal && child.exitCode === null && child.signalCode === null) child.kill(signal);
    };
    handlers.set(signal, handler);
    process.on(signal, handler);
  }
  const exitCode = new Promise<number>((resolveExit) => {
    child.once('error', (err: Error & { code?: string }) => {
      process.stderr.write(`tsmirror: cannot start ${path}: ${err.message}\n`);
      resolveExit(err.code === 'ENOENT' ? EXIT.NOT_FOUND : EXIT.CANNOT_RUN);
    });
    child.once('exit', (code, signal) => {
      for (const [sig, handler] of handlers) process.off(sig, handler);
      resolveExit(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0));
    });
  });
  return { child, exitCode };
}
