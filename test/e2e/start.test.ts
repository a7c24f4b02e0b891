/**
 * How `tsmirror exec` starts (issue 13): on Node 20, bin/tsmirror.js runs it from the
 * CommonJS build (dist/cli-exec) with V8's code cache in the user's cache folder; Node
 * 22.1+ runs the ES module bundle with Node's own compile cache. The cache may only make
 * the start quicker: missing, refused by V8 (here: overwritten with garbage) or made for an
 * older build, the program runs the same.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import nodeModule from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, run, startAgentProcess, type AgentProcess } from './tsm.js';

const nodeCompileCache = typeof (nodeModule as { enableCompileCache?: unknown }).enableCompileCache === 'function';

describe('exec start: the CommonJS build and its code cache', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsm-start-'));
  const cacheHome = join(dir, 'cache');
  const codeCache = join(cacheHome, 'tsmirror', 'code-cache');
  const install = join(dir, 'install');
  let agent: AgentProcess;
  let target: ChildProcess;

  beforeAll(async () => {
    // An install of its own (its exec.cjs can be "rebuilt" here without touching the checkout's).
    mkdirSync(join(install, 'bin'), { recursive: true });
    mkdirSync(join(install, 'dist'));
    cpSync(join(repoRoot, 'bin', 'tsmirror.js'), join(install, 'bin', 'tsmirror.js'));
    cpSync(join(repoRoot, 'dist', 'cli-exec'), join(install, 'dist', 'cli-exec'), { recursive: true });
    cpSync(join(repoRoot, 'dist', 'cli-bundle'), join(install, 'dist', 'cli-bundle'), { recursive: true });
    for (const file of ['package.json', 'binding.gyp']) cpSync(join(repoRoot, file), join(install, file));
    for (const link of ['node_modules', 'build']) symlinkSync(join(repoRoot, link), join(install, link));
    agent = await startAgentProcess();
    target = spawn('sleep', ['600'], { stdio: 'ignore' });
  });

  afterAll(async () => {
    target?.kill('SIGKILL');
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const exec = (env: NodeJS.ProcessEnv = {}, command = ['sh', '-c', 'echo "$TSMIRROR_SOCK" | grep -q proxy.sock && echo intercepted']) =>
    run(process.execPath, [join(install, 'bin', 'tsmirror.js'), 'exec', '-q', '--reconnect-grace', '0', '--agent', agent.url, '--target', `pid/${target.pid}`, '--', ...command],
      { env: { ...process.env, XDG_CACHE_HOME: cacheHome, ...env } });
  const entries = (): string[] => (existsSync(codeCache) ? readdirSync(codeCache).sort() : []);

  it('makes the cache on the first run, uses it after, and runs the same when it is refused or stale', async () => {
    const first = await exec();
    expect(first.stderr).toBe('');
    expect(first.stdout).toBe('intercepted\n');
    expect(first.code).toBe(0);
    if (nodeCompileCache) {
      // Node 22.1+: the ES module bundle and Node's own cache; no script cache.
      expect(entries()).toEqual([]);
      expect(readdirSync(join(cacheHome, 'tsmirror'))).toContain('compile-cache');
      return;
    }
    const [made, ...others] = entries();
    expect(others).toEqual([]);
    expect(made).toMatch(/^exec-[0-9a-f]{8}-\d+-[0-9a-f]{8}\.bin$/);
    const cacheFile = join(codeCache, made ?? '');
    const madeAt = statSync(cacheFile).mtimeMs;

    // V8 took it: nothing written again.
    const second = await exec();
    expect([second.code, second.stdout, second.stderr]).toEqual([0, 'intercepted\n', '']);
    expect(statSync(cacheFile).mtimeMs).toBe(madeAt);

    // Garbage of the same size: V8 refuses it, the program runs as before, a good cache replaces it.
    const garbage = Buffer.alloc(statSync(cacheFile).size, 0x5a);
    writeFileSync(cacheFile, garbage);
    const refused = await exec();
    expect([refused.code, refused.stdout, refused.stderr]).toEqual([0, 'intercepted\n', '']);
    expect(readFileSync(cacheFile).equals(garbage)).toBe(false);
    expect(entries()).toEqual([made]);

    // The program's exit code and output pass through as without a cache.
    const failing = await exec({}, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect([failing.code, failing.stdout, failing.stderr]).toEqual([7, 'out\n', 'err\n']);

    // A new build of exec.cjs: a new entry, and the old one removed.
    const bundle = join(install, 'dist', 'cli-exec', 'exec.cjs');
    writeFileSync(bundle, `${readFileSync(bundle, 'latin1')}\n`, 'latin1');
    const rebuilt = await exec();
    expect([rebuilt.code, rebuilt.stdout, rebuilt.stderr]).toEqual([0, 'intercepted\n', '']);
    const after = entries();
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(made);
    expect(after[0]?.slice(0, 'exec-12345678-'.length)).toBe(made?.slice(0, 'exec-12345678-'.length));

    // TSM_NO_COMPILE_CACHE: none read, none written.
    rmSync(codeCache, { recursive: true });
    const uncached = await exec({ TSM_NO_COMPILE_CACHE: '1' });
    expect([uncached.code, uncached.stdout, uncached.stderr]).toEqual([0, 'intercepted\n', '']);
    expect(entries()).toEqual([]);
  });

  it('fails the same way as the ES module bundle (same message, same exit code)', async () => {
    const args = ['exec', '--agent', 'ws://127.0.0.1:1', '--target', 'pid/1', '--', 'true'];
    const env = { ...process.env, XDG_CACHE_HOME: cacheHome };
    const viaBin = await run(process.execPath, [join(install, 'bin', 'tsmirror.js'), ...args], { env });
    const viaEsm = await run(process.execPath, [join(install, 'dist', 'cli-bundle', 'main.js'), ...args], { env });
    expect(viaBin.code).toBe(125);
    expect([viaBin.code, viaBin.stdout, viaBin.stderr]).toEqual([viaEsm.code, viaEsm.stdout, viaEsm.stderr]);
    // A Kubernetes target goes through kube.cjs (the Kubernetes client) on Node 20: its YAML
    // parser reports a bad kubeconfig.
    writeFileSync(join(dir, 'bad-kubeconfig'), 'x: [');
    const kube = ['exec', '--target', 'deployment/api', '--kubeconfig', join(dir, 'bad-kubeconfig'), '--', 'true'];
    const kubeBin = await run(process.execPath, [join(install, 'bin', 'tsmirror.js'), ...kube], { env });
    const kubeEsm = await run(process.execPath, [join(install, 'dist', 'cli-bundle', 'main.js'), ...kube], { env });
    expect(kubeBin.stderr).toMatch(/cannot read the kubeconfig .*bad-kubeconfig: unexpected end of the stream[\s\S]*TSM_ERR_KUBE_CONFIG/);
    expect([kubeBin.code, kubeBin.stderr]).toEqual([kubeEsm.code, kubeEsm.stderr]);
    if (!nodeCompileCache) expect(entries().filter((name) => name.startsWith('kube-'))).toHaveLength(1);
  });
});
