import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chownSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkInterceptable, chooseInterception, findProgram, inspectProgram } from './launch.js';

const dir = mkdtempSync(join(tmpdir(), 'tsm-launch-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('what the shim can intercept', () => {
  it('accepts a dynamically linked program and a script whose interpreter is one', () => {
    expect(inspectProgram(findProgram('true', '/usr/bin:/bin')).kind).toBe('dynamic');
    const script = join(dir, 'script.sh');
    writeFileSync(script, '#!/bin/sh\necho hi\n');
    chmodSync(script, 0o755);
    const info = inspectProgram(script);
    expect(info).toMatchObject({ kind: 'script', interpreter: '/bin/sh' });
    expect(checkInterceptable(info, false, process.env.PATH)).toEqual([]);
  });

  it.skipIf(!existsSync('/bin/busybox'))('under --intercept preload, refuses a statically linked program, naming auto/seccomp, unless --force', () => {
    const info = inspectProgram('/bin/busybox');
    expect(info.kind).toBe('static');
    expect(() => checkInterceptable(info, false, undefined, 'preload')).toThrow(/statically linked/);
    expect(() => checkInterceptable(info, false, undefined, 'preload')).not.toThrow(/CGO_ENABLED/);
    expect(checkInterceptable(info, true, undefined, 'preload')[0]).toMatch(/statically linked.*--force/);
  });

  it.skipIf(!existsSync('/bin/busybox'))('auto: the preload for dynamic programs and scripts on them, seccomp for static ones (accepted where the kernel has it)', () => {
    const busybox = inspectProgram('/bin/busybox');
    expect(chooseInterception(busybox, 'auto', undefined)).toMatchObject({ how: 'seccomp', why: expect.stringMatching(/statically linked/) as unknown });
    expect(checkInterceptable(busybox, false, undefined, 'seccomp')).toEqual([]);
    expect(chooseInterception(inspectProgram(findProgram('true', '/usr/bin:/bin')), 'auto', undefined).how).toBe('preload');
    const script = join(dir, 'bb.sh');
    writeFileSync(script, '#!/bin/busybox sh\necho hi\n');
    chmodSync(script, 0o755);
    expect(chooseInterception(inspectProgram(script), 'auto', undefined)).toMatchObject({ how: 'seccomp', why: expect.stringMatching(/^its interpreter \/bin\/busybox/) as unknown });
    expect(chooseInterception(busybox, 'preload', undefined).how).toBe('preload');
    expect(chooseInterception(inspectProgram(findProgram('true', '/usr/bin:/bin')), 'seccomp', undefined).how).toBe('seccomp');
  });

  it('refuses a setuid program owned by someone else', () => {
    const copy = join(dir, 'suid-true');
    copyFileSync('/bin/true', copy);
    chownSync(copy, 65534, 65534);
    chmodSync(copy, 0o4755);
    const info = inspectProgram(copy);
    expect(info.setuid).toBe(true);
    expect(() => checkInterceptable(info, false, undefined)).toThrow(/setuid/);
  });

  it.skipIf(!existsSync('/usr/bin/gcc'))('warns before launch about a program that imports io_uring (liburing); not about node or true', () => {
    const source = join(dir, 'ring.c');
    writeFileSync(source, 'extern int io_uring_setup(unsigned entries, void *p);\nint main(void) { return io_uring_setup(1, 0) < 0; }\n');
    const lib = join(dir, 'liburing.so.2'); // a stand-in for liburing: the program is inspected, never run
    writeFileSync(join(dir, 'uring.c'), 'int io_uring_setup(unsigned entries, void *p) { (void)entries, (void)p; return -1; }\n');
    const ring = join(dir, 'ring');
    for (const args of [['-shared', '-fPIC', '-Wl,-soname,liburing.so.2', '-o', lib, join(dir, 'uring.c')], ['-o', ring, source, lib]]) {
      const cc = spawnSync('gcc', args, { encoding: 'utf8' });
      expect(cc.status, cc.stderr).toBe(0);
    }
    const info = inspectProgram(ring);
    expect(info).toMatchObject({ kind: 'dynamic', ioUring: true });
    expect(checkInterceptable(info, false, undefined)).toEqual([`${ring} uses io_uring (liburing): connects and opens it submits to a ring bypass the shim, so they reach this machine, not the pod`]);
    for (const plain of [findProgram('true', '/usr/bin:/bin'), process.execPath]) {
      expect(inspectProgram(plain).ioUring, plain).toBeUndefined();
      expect(checkInterceptable(inspectProgram(plain), false, undefined)).toEqual([]);
    }
  });

  it('inspecting a large program reads its headers and dynamic names, not the program (exec -- node read 64 MiB on every start)', () => {
    // Bytes read by this thread (read/pread), whatever the machine's load: /proc/thread-self/io.
    const readSoFar = (): number => Number(/^rchar: (\d+)$/m.exec(readFileSync('/proc/thread-self/io', 'utf8'))?.[1] ?? NaN);
    expect(statSync(process.execPath).size).toBeGreaterThan(16 << 20);
    const before = readSoFar();
    const info = inspectProgram(process.execPath);
    const read = readSoFar() - before;
    expect(info).toMatchObject({ kind: 'dynamic', go: false });
    expect(read).toBeLessThan(4 << 20);
  });

  it('says clearly when a program is not found', () => {
    expect(() => findProgram('no-such-program-xyz', '/usr/bin')).toThrow(/not found on PATH/);
  });
});
