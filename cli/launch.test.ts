import { chmodSync, copyFileSync, mkdtempSync, rmSync, writeFileSync, chownSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkInterceptable, findProgram, inspectProgram } from './launch.js';

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

  it.skipIf(!existsSync('/bin/busybox'))('refuses a statically linked program, saying so, unless --force', () => {
    const info = inspectProgram('/bin/busybox');
    expect(info.kind).toBe('static');
    expect(() => checkInterceptable(info, false, undefined)).toThrow(/statically linked/);
    expect(checkInterceptable(info, true, undefined)[0]).toMatch(/statically linked.*--force/);
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

  it('says clearly when a program is not found', () => {
    expect(() => findProgram('no-such-program-xyz', '/usr/bin')).toThrow(/not found on PATH/);
  });
});
