import { homedir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { TsmError } from '../../protocol/errors.js';
import { fileRules } from './file-rules.js';

const base = { local: [], remote: [], notFound: [], programPath: '/usr/bin/node', cwd: '/home/dev/app', targetless: false };

describe('file rules (--fs-*)', () => {
  it('defaults to read mode and keeps the working directory, the program directory and home local', () => {
    const r = fileRules(base);
    expect(r.mode).toBe('read');
    expect(r.keep).toEqual(['/home/dev/app', '/usr/bin', homedir()].filter((d, i, a) => d !== '/' && a.indexOf(d) === i));
  });

  it('never keeps "/" (a session started from / would otherwise make every path local)', () => {
    const r = fileRules({ ...base, cwd: '/', programPath: '/prog' });
    expect(r.keep).not.toContain('/');
  });

  it('a targetless session has no pod files', () => {
    expect(fileRules({ ...base, mode: 'write', targetless: true }).mode).toBe('local');
  });

  it('refuses an unknown mode and a regex that does not compile, with a hint', () => {
    expect(() => fileRules({ ...base, mode: 'readwrite' })).toThrow(TsmError);
    try {
      fileRules({ ...base, local: ['('] });
      expect.unreachable();
    } catch (err) {
      expect((err as TsmError).code).toBe('TSM_ERR_USAGE');
      expect((err as TsmError).hint).toMatch(/POSIX extended/);
    }
  });

  it('keeps the regexes in the order given', () => {
    const r = fileRules({ ...base, local: ['^/a', '^/b'], remote: ['^/c'], notFound: ['^/d'] });
    expect([r.local, r.remote, r.notFound]).toEqual([['^/a', '^/b'], ['^/c'], ['^/d']]);
  });
});
