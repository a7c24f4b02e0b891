/**
 * Starting the program: find it, choose how it is intercepted (the preloaded shim for
 * dynamically linked libc programs, the seccomp supervisor for static and Go binaries),
 * refuse what cannot be intercepted, spawn it, relay signals, and turn its end into
 * tsmirror's exit code.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, openSync, readSync, closeSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { TsmError } from '../protocol/errors.js';
import { launcherPath, loadAddon, supervisorPath } from '../native/index.js';

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
  /** A 32-bit ELF program. */
  elf32?: boolean;
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

const PT_LOAD = 1;
const PT_INTERP = 3;
const PT_NOTE = 4;
const PF_X = 1;
const PF_W = 2;
const GO_BUILDINFO = Buffer.from('\xff Go buildinf:', 'latin1');

/** Reads `bytes` at `offset`, or undefined when the file does not have them all. */
function readAt(fd: number, size: number, offset: number, bytes: number): Buffer | undefined {
  if (offset < 0 || bytes < 0 || offset > size || bytes > size - offset) return undefined;
  const buf = Buffer.alloc(bytes);
  let got = 0;
  while (got < bytes) {
    const n = readSync(fd, buf, got, bytes - got, offset + got);
    if (n <= 0) return undefined;
    got += n;
  }
  return buf;
}

/** A note named "Go" of type 4 (Go's build id) in the first 4 KiB of a PT_NOTE segment. */
function goNote(note: Buffer, le: boolean, align: number): boolean {
  const u32 = (o: number): number => (le ? note.readUInt32LE(o) : note.readUInt32BE(o));
  const pad = (n: number, a: number): number => Math.ceil(n / a) * a;
  const a = align === 8 ? 8 : 4;
  for (let at = 0; at + 12 <= note.length;) {
    const namesz = u32(at), descsz = u32(at + 4), type = u32(at + 8);
    if (namesz > note.length || descsz > note.length) return false;
    const name = at + 12;
    if ((namesz === 3 || namesz === 4) && type === 4 && name + 3 <= note.length && note.subarray(name, name + 3).toString('latin1') === 'Go\0') return true;
    let next = name + pad(namesz, a);
    if (next > note.length) return false;
    next = pad(next + descsz, a);
    if (next <= at) return false;
    at = next;
  }
  return false;
}

/** Go's build information at a 16-byte boundary, with 32 bytes after it, in a segment's first 64 KiB. */
function goBuildInfo(data: Buffer): boolean {
  for (let i = 0; i + 32 <= data.length; i += 16) if (data.subarray(i, i + GO_BUILDINFO.length).equals(GO_BUILDINFO)) return true;
  return false;
}

/**
 * The ELF rules, shared with the shim's exec hooks (native/shim/program.c, which says
 * why each is so; `tsmirror-supervise --inspect` prints its view, and the tests compare
 * the two): e_type EXEC or DYN, the class's program header size, 1 to 4096 bytes of
 * program headers within the file and a PT_LOAD, else not a program tsmirror knows;
 * dynamic with a PT_INTERP; Go with Go's build id note or its build information.
 */
function inspectElf(fd: number, size: number, head: Buffer): { kind: 'dynamic' | 'static' | 'other'; go: boolean; is64: boolean; le: boolean } {
  const is64 = head[4] === 2;
  const le = head[5] === 1;
  const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const u64 = (b: Buffer, o: number): number => Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
  const other = { kind: 'other' as const, go: false, is64, le };
  const type = u16(head, 16);
  const phoff = is64 ? u64(head, 32) : u32(head, 28);
  const phentsize = u16(head, is64 ? 54 : 42);
  const phnum = u16(head, is64 ? 56 : 44);
  if ((type !== 2 && type !== 3) || phentsize !== (is64 ? 56 : 32) || phnum === 0 || phnum * phentsize > 4096) return other;
  const table = readAt(fd, size, phoff, phnum * phentsize);
  if (!table) return other;
  let load = false, interp = false, go = false, dataSeen = false;
  for (let i = 0; i < phnum; i++) {
    const p = i * phentsize;
    const ptype = u32(table, p);
    const flags = is64 ? u32(table, p + 4) : u32(table, p + 24);
    const offset = is64 ? u64(table, p + 8) : u32(table, p + 4);
    const filesz = is64 ? u64(table, p + 32) : u32(table, p + 16);
    const align = is64 ? u64(table, p + 48) : u32(table, p + 28);
    if (ptype === PT_INTERP) interp = true;
    if (ptype === PT_LOAD) load = true;
    if (!go && ptype === PT_NOTE) {
      const note = readAt(fd, size, offset, Math.min(filesz, 4096));
      go = note !== undefined && goNote(note, le, align);
    }
    if (ptype === PT_LOAD && !dataSeen && (flags & (PF_X | PF_W)) === PF_W) {
      dataSeen = true;
      if (!go && offset <= size) go = goBuildInfo(readAt(fd, size, offset, Math.min(filesz, 65536, size - offset)) ?? Buffer.alloc(0));
    }
  }
  return load ? { kind: interp ? 'dynamic' : 'static', go, is64, le } : other;
}

/** Reads the file's first bytes: a `#!` script, or an ELF program (inspectElf); the rules of native/shim/program.c. */
export function inspectProgram(path: string): ProgramInfo {
  const st = statSync(path);
  const setuid = ((st.mode & 0o4000) !== 0 && st.uid !== process.geteuid?.()) || ((st.mode & 0o2000) !== 0 && st.gid !== process.getegid?.());
  const head = readHead(path, 256);
  if (head.subarray(0, 2).toString('latin1') === '#!') {
    // As the kernel reads it: spaces and tabs skipped, the name ends at a space, tab,
    // newline or NUL; one running to the end of the 256 bytes read may be cut.
    const isBlank = (c: number | undefined): boolean => c === 0x20 || c === 0x09;
    let i = 2;
    while (i < head.length && isBlank(head[i])) i++;
    let end = i;
    while (end < head.length && !isBlank(head[end]) && head[end] !== 0x0a && head[end] !== 0) end++;
    const cut = end === head.length && head.length === 256;
    const interpreter = head.subarray(i, end).toString('latin1');
    return interpreter && !cut ? { path, kind: 'script', interpreter, setuid, go: false } : { path, kind: 'other', setuid, go: false };
  }
  if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46 || (head[4] !== 1 && head[4] !== 2) || (head[5] !== 1 && head[5] !== 2)) return { path, kind: 'other', setuid, go: false };
  const fd = openSync(path, 'r');
  let elf: ReturnType<typeof inspectElf>;
  let ioUring = false;
  try {
    elf = inspectElf(fd, st.size, head);
    if (elf.kind === 'dynamic') ioUring = usesIoUring(fd, Math.min(st.size, IO_URING_SCAN_LIMIT), head, elf.is64, elf.le);
  } finally {
    closeSync(fd);
  }
  if (elf.kind === 'other') return { path, kind: 'other', setuid, go: false };
  return { path, kind: elf.kind, setuid, go: elf.go, ...(ioUring ? { ioUring } : {}), ...(elf.is64 ? {} : { elf32: true }) };
}

const SHT_DYNSYM = 11;
/** Only what lies in a program's first 64 MiB is looked at for io_uring. */
const IO_URING_SCAN_LIMIT = 64 * 1024 * 1024;

/**
 * Whether the dynamic symbol names (the .dynsym's string table: imported functions and
 * DT_NEEDED libraries) name liburing or an io_uring_* function. Only what is linked
 * dynamically counts: a program that makes the system call itself (libuv in node) is
 * reported by the shim when it does. Reads the section headers and that one string
 * table where they are (within the first `limit` bytes), not the whole file: `node` is
 * about 100 MiB.
 */
function usesIoUring(fd: number, limit: number, head: Buffer, is64: boolean, le: boolean): boolean {
  const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const word = (b: Buffer, o: number): number => (is64 ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)) : u32(b, o));
  try {
    const shoff = word(head, is64 ? 40 : 32);
    const shentsize = u16(head, is64 ? 58 : 46);
    const shnum = u16(head, is64 ? 60 : 48);
    if (shentsize < (is64 ? 64 : 40)) return false;
    const table = readAt(fd, limit, shoff, shnum * shentsize);
    if (!table) return false;
    const section = (i: number): { type: number; offset: number; size: number; link: number } => {
      const at = i * shentsize;
      return is64
        ? { type: u32(table, at + 4), offset: word(table, at + 24), size: word(table, at + 32), link: u32(table, at + 40) }
        : { type: u32(table, at + 4), offset: u32(table, at + 16), size: u32(table, at + 20), link: u32(table, at + 24) };
    };
    for (let i = 0; i < shnum; i++) {
      const s = section(i);
      if (s.type !== SHT_DYNSYM) continue;
      if (s.link >= shnum) return false;
      const strings = section(s.link);
      if (strings.offset >= limit) return false;
      const names = readAt(fd, limit, strings.offset, Math.min(strings.size, limit - strings.offset));
      if (!names) return false;
      // A name starting with the prefix: at the table's start or after a NUL (`node`'s table is megabytes: searched, not split).
      const starts = (prefix: string): boolean => names.indexOf(prefix, 0, 'latin1') === 0 || names.includes(`\0${prefix}`, 0, 'latin1');
      return starts('liburing.so') || starts('io_uring_');
    }
  } catch {
    // a truncated or odd ELF file: say nothing
  }
  return false;
}

/** --intercept: how the program's calls are intercepted. */
export const INTERCEPT_MODES = ['auto', 'preload', 'seccomp'] as const;
export type InterceptMode = (typeof INTERCEPT_MODES)[number];

export interface Interception {
  how: 'preload' | 'seccomp';
  /** Why, in words (doctor, exec -v). */
  why: string;
}

let probed: { ok: true } | { ok: false; reason: string } | undefined;

/**
 * Whether this kernel offers seccomp user notification (asks `tsmirror-supervise --probe`,
 * which installs a filter in a child; a few milliseconds, once per process).
 */
export function seccompSupport(): { ok: true } | { ok: false; reason: string } {
  if (probed) return probed;
  let supervisor: string;
  try {
    supervisor = supervisorPath();
  } catch (err) {
    return (probed = { ok: false, reason: (err as Error).message });
  }
  const r = spawnSync(supervisor, ['--probe'], { encoding: 'utf8', timeout: 10000 });
  const out = (r.stdout ?? '').trim();
  probed = r.status === 0 && out === 'ok' ? { ok: true } : { ok: false, reason: out.replace(/^unavailable: /, '') || `the probe failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})` };
  return probed;
}

/**
 * seccompSupport without blocking: the CLI starts it before connecting to the agent and
 * reads it after (--intercept auto on a dynamically linked program: whether the static
 * and Go programs it runs go under the supervisor). Shares seccompSupport's answer.
 * The probe starts with the addon's posix_spawn on a thread-pool thread: child_process
 * would fork the CLI on its JavaScript thread (page tables of ~55 MiB copied) and wait
 * there for the child's execve, a few ms of every `exec`'s start (more on a busy machine).
 */
export function seccompSupportAsync(): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (probed) return Promise.resolve(probed);
  let supervisor: string;
  let addon: ReturnType<typeof loadAddon>;
  try {
    supervisor = supervisorPath();
    addon = loadAddon();
  } catch (err) {
    return Promise.resolve(probed = { ok: false, reason: (err as Error).message });
  }
  return addon.spawnCapture([supervisor, '--probe'], '', 10000).then((r) => {
    const out = r.stdout.trim();
    const failure = r.stderr.trim() || (r.signal ? `killed by ${r.signal}` : `exit ${r.code ?? '?'}`);
    probed ??= r.code === 0 && out === 'ok' ? { ok: true } : { ok: false, reason: out.replace(/^unavailable: /, '') || `the probe failed (${failure})` };
    return probed;
  }, (err: unknown) => (probed ??= { ok: false, reason: `the probe failed (${err instanceof Error ? err.message : String(err)})` }));
}

/**
 * How a program is intercepted. auto: the preload for dynamically linked programs (and
 * scripts whose interpreter is one), seccomp for static binaries and Go programs (Go
 * makes its own system calls, past any preload, whether linked statically or not).
 */
export function chooseInterception(info: ProgramInfo, mode: InterceptMode, path: string | undefined): Interception {
  if (mode === 'preload') return { how: 'preload', why: '--intercept preload' };
  if (mode === 'seccomp') return { how: 'seccomp', why: '--intercept seccomp' };
  if (info.kind === 'script' && info.interpreter) {
    try {
      const interp = isAbsolute(info.interpreter) ? info.interpreter : findProgram(info.interpreter, path);
      if (interp !== info.path) {
        const inner = chooseInterception(inspectProgram(interp), mode, path);
        return { how: inner.how, why: `its interpreter ${interp}: ${inner.why}` };
      }
    } catch {
      // an interpreter that is not there: the launch reports it
    }
    return { how: 'preload', why: 'a script' };
  }
  if (info.go) return { how: 'seccomp', why: 'a Go program: Go makes its own system calls, which no preload sees' };
  if (info.kind === 'static') return { how: 'seccomp', why: 'statically linked: no preload can be loaded into it' };
  return { how: 'preload', why: info.kind === 'dynamic' ? 'dynamically linked: the shim is preloaded' : 'not an ELF program or script tsmirror knows' };
}

/**
 * Refuses what cannot be intercepted the way chosen, unless `force`. Returns warnings to
 * print. Scripts are judged by their interpreter.
 */
export function checkInterceptable(info: ProgramInfo, force: boolean, path: string | undefined, how: Interception['how'] = 'preload'): string[] {
  const warnings: string[] = [];
  const refuse = (code: 'TSM_ERR_STATIC_BINARY' | 'TSM_ERR_SETUID' | 'TSM_ERR_SECCOMP_UNAVAILABLE', message: string, hint: string): void => {
    if (!force) throw new TsmError(code, message, { hint: `${hint}; or pass --force to run it anyway, unintercepted` });
    warnings.push(`${message}; running it anyway (--force): its traffic, lookups and files are NOT redirected`);
  };
  if (info.setuid) {
    refuse('TSM_ERR_SETUID', how === 'seccomp'
      ? `${info.path} is setuid/setgid: under seccomp (PR_SET_NO_NEW_PRIVS) it would run without its privileges`
      : `${info.path} is setuid/setgid: the dynamic loader ignores LD_PRELOAD for it, so tsmirror cannot intercept it`,
    'run a copy without the setuid bit');
  }
  if (how === 'seccomp') {
    const support = seccompSupport();
    if (!support.ok) {
      refuse('TSM_ERR_SECCOMP_UNAVAILABLE', `${info.path} ${info.kind === 'static' ? 'is statically linked' : info.go ? 'is a Go program' : 'was to run under seccomp'}, and this kernel cannot intercept it: seccomp user notification is unavailable (${support.reason})`,
        info.kind === 'dynamic' && !info.go ? 'use --intercept preload' : 'run it on Linux 5.9 or later with seccomp enabled (outside a container whose seccomp policy forbids filters)');
    } else if (info.elf32 === true && info.kind !== 'script') {
      refuse('TSM_ERR_STATIC_BINARY', `${info.path} is a 32-bit program: the seccomp supervisor serves only 64-bit programs`, info.kind === 'dynamic' ? 'use --intercept preload' : 'use a 64-bit build of the program');
    }
    if (info.ioUring === true) warnings.push(`${info.path} uses io_uring (liburing): connects and opens it submits to a ring are not system calls seccomp sees, so they reach this machine, not the pod`);
    return warnings;
  }
  if (info.kind === 'static') {
    refuse('TSM_ERR_STATIC_BINARY', `${info.path} is statically linked: the shim cannot be preloaded into it`, 'run it with --intercept auto (the default) or seccomp');
  } else if (info.kind === 'dynamic' && info.ioUring === true) {
    warnings.push(`${info.path} uses io_uring (liburing): connects and opens it submits to a ring bypass the shim, so they reach this machine, not the pod`);
  }
  if (info.kind === 'dynamic' && info.go) {
    warnings.push(`${info.path} is a Go program under --intercept preload: Go makes its own system calls for sockets, name lookups and files, so the shim sees almost none of them; use --intercept auto (the default) or seccomp`);
  } else if (info.kind === 'script' && info.interpreter) {
    const interp = isAbsolute(info.interpreter) ? info.interpreter : findProgram(info.interpreter, path);
    if (interp !== info.path) warnings.push(...checkInterceptable(inspectProgram(interp), force, path, how));
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
 * with it instead of leaving it running with its remote calls broken. In seccomp mode
 * (`supervise`: the session proxy's socket) it starts through tsmirror-supervise instead
 * (native/supervisor), which stays its parent, relays the signals it gets, and reports
 * how the program ended on a pipe (fd 3): an end without that report is the supervisor's
 * own death, which takes the program with it and is said so.
 */
export function runProgram(path: string, args: string[], argv0: string, env: Record<string, string>, options: { ownGroup?: boolean; supervise?: string } = {}): RunningProgram {
  // In its own process group (--watch) the program and everything it started can be
  // stopped together; the caller then relays signals itself (to the group: the supervisor
  // then only waits, --group).
  const supervise = options.supervise;
  const child = supervise === undefined
    ? spawn(launcherPath(), [String(process.pid), path, argv0, ...args], { stdio: 'inherit', env, detached: options.ownGroup ?? false })
    : spawn(supervisorPath(), [...(options.ownGroup ? ['--group'] : []), String(process.pid), supervise, '3', path, argv0, ...args], { stdio: ['inherit', 'inherit', 'inherit', 'pipe'], env, detached: options.ownGroup ?? false });
  let report = '';
  child.stdio[3]?.on('data', (d: Buffer) => { report += d.toString('latin1'); });
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
    child.once('close', (code, signal) => {
      for (const [sig, handler] of handlers) process.off(sig, handler);
      // Under --watch the CLI itself SIGKILLs the whole group after the grace period.
      const groupKill = options.ownGroup === true && signal === 'SIGKILL';
      if (supervise !== undefined && !groupKill && !/^(exit|signal) \d+\n$/.test(report)) {
        const how = signal ? `was killed by ${signal}` : `ended with exit code ${code ?? '?'}`;
        process.stderr.write(`tsmirror: the seccomp supervisor (tsmirror-supervise) ${how} before the program ended; the program was ended with it, since its intercepted calls could no longer be answered\n`);
        resolveExit(EXIT.TSMIRROR_FAILED);
        return;
      }
      resolveExit(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0));
    });
  });
  return { child, exitCode };
}
