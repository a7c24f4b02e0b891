/**
 * Shell completion through the real shells: bash runs its completion function, fish its
 * `complete -C`, zsh registers the function with compinit.
 */
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeApiServer, randomHex } from '../k8s/apiserver.js';
import { cliPath, run, runCli } from './tsm.js';

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

  it('--target completes names from the cluster (kubeconfig, -n), and gives up quietly when it is unreachable', async () => {
    const api = await FakeApiServer.start();
    try {
      const kubeconfig = api.writeKubeconfig(bin, { namespace: 'default' });
      api.addNode('node-1');
      api.addDeployment('shop', 'api', [{ name: 'api-1', containers: [{ name: 'app', id: randomHex() }] }]);
      api.addWorkload('StatefulSet', 'shop', 'cache', [{ name: 'cache-0', containers: [{ name: 'redis', id: randomHex() }] }]);
      api.addPod({ name: 'debug-box', namespace: 'shop', containers: [{ name: 'sh', id: randomHex() }] });
      api.addDeployment('other', 'elsewhere', [{ name: 'e-1', containers: [{ name: 'app', id: randomHex() }] }]);
      const words = ['tsmirror', 'exec', '--kubeconfig', kubeconfig, '-n', 'shop', '--target'];
      expect(await bash([...words, 'deployment/'], 7)).toEqual(['deployment/api']);
      expect(await bash([...words, 's'], 7)).toEqual(['statefulset/']);
      expect(await bash([...words, 'statefulset/c'], 7)).toEqual(['statefulset/cache']);
      expect(await bash([...words, 'pod/'], 7)).toEqual(['pod/api-1', 'pod/cache-0', 'pod/debug-box']);
    } finally {
      await api.close();
    }
    // An API server that accepts connections and never answers.
    const held: net.Socket[] = [];
    const silent = net.createServer((c) => held.push(c));
    const port = await new Promise<number>((r) => silent.listen(0, '127.0.0.1', () => r((silent.address() as net.AddressInfo).port)));
    try {
      const dead = join(bin, 'dead.kubeconfig');
      writeFileSync(dead, [
        'apiVersion: v1', 'kind: Config', 'current-context: x',
        `clusters: [{name: x, cluster: {server: "http://127.0.0.1:${port}", insecure-skip-tls-verify: true}}]`,
        'contexts: [{name: x, context: {cluster: x, user: x}}]', 'users: [{name: x, user: {token: t}}]', '',
      ].join('\n'));
      const r = await runCli(['__complete', '3', 'tsmirror', 'exec', '--target', 'deployment/', '--kubeconfig', dead], { env, timeoutMs: 15000 });
      expect(r.stdout).toBe('');
      expect(r.code).toBe(0); // not killed by the timeout: it gave up by itself
      expect(held.length).toBeGreaterThan(0);
    } finally {
      for (const c of held) c.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  it('an unknown shell is refused with the list', async () => {
    const r = await runCli(['completion', 'tcsh']);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain('choose one of bash, zsh, fish');
  });
});
