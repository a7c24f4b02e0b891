import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, describe, expect, it } from 'vitest';
import { TsmError } from '../protocol/errors.js';
import { applyConfig, configSchema, envName, expandVariables, findConfigFile, loadConfig, nearestKey, optionSpecs } from './config.js';

const collect = (v: string, prev: string[]): string[] => [...prev, v];
const sample = (): Command => new Command('exec')
  .option('--agent <url>', 'agent')
  .option('--fs-mode <mode>', 'files')
  .option('--http-header <h>', 'header', collect, [])
  .option('-q, --quiet', 'quiet')
  .option('--config <file>', 'file');

let dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'tsm-config-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

describe('config keys and schema', () => {
  it('derives camelCase keys, kinds and TSMIRROR_* names from the options, leaving out --config', () => {
    const specs = optionSpecs(sample());
    expect(specs.map((s) => [s.key, s.kind])).toEqual([['agent', 'string'], ['fsMode', 'string'], ['httpHeader', 'string[]'], ['quiet', 'boolean']]);
    expect(envName('--fs-mode')).toBe('TSMIRROR_FS_MODE');
    const schema = configSchema(sample()) as { additionalProperties: boolean; properties: Record<string, unknown> };
    expect(schema.additionalProperties).toBe(false);
    expect(Object.keys(schema.properties)).toEqual(['$schema', 'agent', 'fsMode', 'httpHeader', 'quiet']);
  });

  it('suggests the nearest key for a misspelt one', () => {
    expect(nearestKey('targt', ['agent', 'target'])).toBe('target');
    expect(nearestKey('http-header', ['httpHeader', 'fsMode'])).toBe('httpHeader');
    expect(nearestKey('zzzzzzzz', ['agent'])).toBeUndefined();
  });
});

describe('finding the file', () => {
  it('walks up to the nearest .tsmirror/config.json and stops at the repository root', () => {
    const root = tmp();
    const repo = join(root, 'repo');
    mkdirSync(join(repo, '.git'), { recursive: true });
    mkdirSync(join(repo, 'svc', 'src'), { recursive: true });
    mkdirSync(join(root, '.tsmirror'));
    writeFileSync(join(root, '.tsmirror', 'config.json'), '{}');
    // above the repository root: not found
    expect(findConfigFile(join(repo, 'svc', 'src'), '/nonexistent-home')).toBeUndefined();
    mkdirSync(join(repo, 'svc', '.tsmirror'));
    writeFileSync(join(repo, 'svc', '.tsmirror', 'config.json'), '{}');
    expect(findConfigFile(join(repo, 'svc', 'src'), '/nonexistent-home')).toBe(join(repo, 'svc', '.tsmirror', 'config.json'));
  });

  it('stops at the home directory', () => {
    const root = tmp();
    const home = join(root, 'home');
    mkdirSync(join(home, 'proj'), { recursive: true });
    mkdirSync(join(root, '.tsmirror'));
    writeFileSync(join(root, '.tsmirror', 'config.json'), '{}');
    expect(findConfigFile(join(home, 'proj'), home)).toBeUndefined();
    expect(findConfigFile(join(home, 'proj'), '/nonexistent-home')).toBe(join(root, '.tsmirror', 'config.json'));
  });
});

describe('loading', () => {
  const write = (body: string): string => {
    const f = join(tmp(), 'config.json');
    writeFileSync(f, body);
    return f;
  };

  it('expands ${VAR} and ${VAR:-default}, and a single string for a repeatable key becomes a list', () => {
    const f = write(JSON.stringify({ agent: 'ws://${HOST_X:-127.0.0.1}:7777', httpHeader: 'x-dev: ${USER_X}', quiet: true }));
    expect(loadConfig(f, sample(), { USER_X: 'alice' })).toEqual({ agent: 'ws://127.0.0.1:7777', httpHeader: ['x-dev: alice'], quiet: true });
    expect(() => expandVariables('${NOPE}', {}, 'f: agent')).toThrow(/NOPE\} is not set/);
  });

  const failure = (body: string): TsmError => {
    try {
      loadConfig(write(body), sample(), {});
    } catch (err) {
      if (err instanceof TsmError) return err;
      throw err;
    }
    throw new Error('no error');
  };

  it('names the file, the key, what is allowed, and the nearest key', () => {
    const unknown = failure('{"fsmode": "read"}');
    expect(unknown.code).toBe('TSM_ERR_CONFIG');
    expect(unknown.message).toMatch(/config\.json: unknown key "fsmode" — did you mean "fsMode"\?/);
    expect(unknown.hint).toMatch(/allowed keys: agent, fsMode, httpHeader, quiet/);
    const wrongType = failure('{"quiet": "yes"}');
    expect(wrongType.message).toMatch(/config\.json: quiet is "yes", but it must be true or false/);
    expect(failure('{"agent": ').message).toMatch(/is not valid JSON/);
  });

  it('a file value yields to the environment and to a flag', () => {
    const cmd = sample();
    cmd.action(() => undefined);
    cmd.parse(['--agent', 'ws://flag:1'], { from: 'user' });
    applyConfig(cmd, { agent: 'ws://file:1', fsMode: 'write', httpHeader: ['a: b'] });
    expect(cmd.getOptionValue('agent')).toBe('ws://flag:1');
    expect(cmd.getOptionValueSource('agent')).toBe('cli');
    expect(cmd.getOptionValue('fsMode')).toBe('write');
    expect(cmd.getOptionValueSource('fsMode')).toBe('config');
    expect(cmd.getOptionValue('httpHeader')).toEqual(['a: b']);
  });
});
