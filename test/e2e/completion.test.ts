/**
 * Shell completion through the real shells: bash runs its completion function, fish its
 * `complete -C`, zsh registers the function with compinit.
 */
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliPath, run } from './tsm.js';

let bin: string;
let env: NodeJS.ProcessEnv;

beforeAll(() => {
  bin = mkdtempSync(join(tmpdir(), 'tsm-bin-'));
  symlinkSync(cliPath, join(bin, 'tsmirror'));
  env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` };
});

afterAll(() => {
  if (bin) rmSync(bin, { recursive: true, force: true });
});

const bash = async (words: string[], cword: number): Promise<string[]> => {
  const quoted = words.map((w) => `'${w}'`).join(' ');
  const r = await run('bash', ['-c', `source <(tsmirror completion bash); COMP_WORDS=(${quoted}); COMP_CWORD=${cword}; _tsmirror_complete; printf '%s\\n' "\${COMPREPLY[@]}"`], { env });
  expect(r.stderr).toBe('');
  return r.stdout.split('\n').filter(Boolean);
};

describe('shell completion', () => {
  it('bash: subcommands, flags of the subcommand, flag values, target kinds; nothing after --', async () => {
    expect(await bash(['tsmirror', 'e'], 1)).toEqual(['exec', 'env']);
    expect(await bash(['tsmirror', 'exec', '--wat'], 2)).toEqual(['--watch', '--watch-ignore', '--watch-grace']);
    expect(await bash(['tsmirror', 'env', '--format', ''], 3)).toEqual(['dotenv', 'json', 'shell']);
    expect(await bash(['tsmirror', 'exec', '--target', 'dep'], 3)).toEqual(['deployment/']);
    expect(await bash(['tsmirror', 'exec', '--', 'cur'], 3)).toEqual([]); // the shell's default (commands, files) applies
  });

  it('fish: complete -C answers from tsmirror, and falls back to files after --', async () => {
    const r = await run('fish', ['-c', 'tsmirror completion fish | source; complete -C "tsmirror config s"; echo ---; complete -C "tsmirror exec -- /usr/bin/python3.1"'], { env });
    expect(r.stderr).toBe('');
    const [before, after] = r.stdout.split('---\n');
    expect(before?.split('\n').filter(Boolean).map((l) => l.split('\t')[0])).toEqual(['schema', 'show']);
    expect(after).toContain('/usr/bin/python3.11');
  });

  it('zsh: the script loads and registers its function', async () => {
    const r = await run('zsh', ['-c', 'autoload -U compinit; compinit -u; source <(tsmirror completion zsh); print -r -- $_comps[tsmirror]'], { env });
    expect(r.stdout.trim()).toBe('_tsmirror_complete');
  });

  it('an unknown shell is refused with the list', async () => {
    const r = await run(process.execPath, [cliPath, 'completion', 'tcsh']);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('choose one of bash, zsh, fish');
  });
});
