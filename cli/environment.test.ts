import { describe, expect, it } from 'vitest';
import { formatEnvironment, importedFromPod, mergeEnvironment } from './environment.js';

const pod = { PATH: '/pod/bin', HOME: '/root', DB_URL: 'postgres://db', LC_ALL: 'C', XDG_X: '1', KUBERNETES_SERVICE_HOST: '10.96.0.1', SECRET_TOKEN: 's', LD_PRELOAD: '/evil.so' };

describe('environment', () => {
  it('imports the pod variables but keeps machine-specific ones local', () => {
    const env = mergeEnvironment({ PATH: '/usr/bin', HOME: '/home/dev', TERM: 'xterm' }, pod, { include: [], exclude: [], set: [] });
    expect(env.PATH).toBe('/usr/bin');
    expect(env.HOME).toBe('/home/dev');
    expect(env.TERM).toBe('xterm');
    expect(env.DB_URL).toBe('postgres://db');
    expect(env.LC_ALL).toBeUndefined();
    expect(env.XDG_X).toBeUndefined();
    expect(env.LD_PRELOAD).toBeUndefined();
  });

  it('applies include and exclude globs, then --env settings', () => {
    const imported = importedFromPod(pod, { include: ['DB_*,KUBERNETES_*', 'SECRET_*'], exclude: ['SECRET_*'] });
    expect(Object.keys(imported).sort()).toEqual(['DB_URL', 'KUBERNETES_SERVICE_HOST']);
    const env = mergeEnvironment({}, pod, { include: [], exclude: [], set: ['DB_URL=postgres://local', 'EMPTY='] });
    expect(env.DB_URL).toBe('postgres://local');
    expect(env.EMPTY).toBe('');
  });

  it('formats for dotenv, json and shell with safe quoting', () => {
    const env = { B: "it's", A: 'x y' };
    expect(formatEnvironment(env, 'dotenv')).toBe('A="x y"\nB="it\'s"\n');
    expect(JSON.parse(formatEnvironment(env, 'json'))).toEqual(env);
    expect(formatEnvironment(env, 'shell')).toBe("export A='x y'\nexport B='it'\\''s'\n");
  });
});
