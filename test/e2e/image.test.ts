/**
 * The agent image's runtime stage (daemonset/Dockerfile) holds only what its COPY lines
 * name. No Docker engine runs here, so the test lays out that same tree in a temporary
 * folder, from this checkout's built files, and starts the agent from it as the image's
 * ENTRYPOINT would.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot, run } from './tsm.js';

const dockerfile = readFileSync(join(repoRoot, 'daemonset', 'Dockerfile'), 'utf8');
const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
const workdir = /^WORKDIR (\S+)/m.exec(runtime)?.[1] ?? '/';
const root = mkdtempSync(join(tmpdir(), 'tsm-image-'));

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Copies what one `COPY --from=build SRC… DEST` line copies from /src (this checkout). */
function copyLine(args: string[]): void {
  const dest = args.pop() ?? '.';
  for (const src of args) {
    const from = join(repoRoot, src.replace(/^\/src\/?/, ''));
    const to = dest.endsWith('/') ? join(root, dest.replace(workdir, ''), src.split('/').pop() ?? '') : join(root, dest.replace(workdir, ''));
    if (src.endsWith('node_modules')) {
      symlinkSync(from, to); // the same packages; a copy would only cost time
    } else {
      cpSync(from, to, { recursive: true });
    }
  }
}

describe('the agent image layout', () => {
  it('starts the agent from only what the runtime stage copies', async () => {
    const copies = [...runtime.matchAll(/^COPY --from=build (.+)$/gm)].map((m) => (m[1] ?? '').trim().split(/\s+/));
    expect(copies.length).toBeGreaterThan(3);
    for (const args of copies) copyLine(args);
    const entry = /^ENTRYPOINT \[(.+)\]$/m.exec(runtime)?.[1]?.split(',').map((s) => JSON.parse(s.trim()) as string) ?? [];
    expect(entry[0]).toBe('node');
    const cli = join(root, (entry[1] ?? '').replace(workdir, ''));
    expect(dirname(cli)).toBe(join(root, 'bin'));
    const version = await run(process.execPath, [cli, '--version'], { cwd: root });
    expect(version.stderr).toBe('');
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const agent = spawn(process.execPath, [cli, 'agent', '--listen', '127.0.0.1:0'], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    agent.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<void>((r) => agent.once('exit', () => r()));
    const t0 = Date.now();
    while (!/listening on ws:/.test(log) && agent.exitCode === null && Date.now() - t0 < 15000) await new Promise((r) => setTimeout(r, 50));
    agent.kill('SIGKILL');
    await exited;
    expect(log).toMatch(/listening on ws:/);
    const shim = await run(process.execPath, ['-e', `import(${JSON.stringify(join(root, 'dist', 'native', 'index.js'))}).then((m) => { m.loadAddon(); console.log(m.shimPath()); })`], { cwd: root });
    expect(shim.stderr).toBe('');
    expect(shim.stdout.trim()).toBe(join(root, 'build', 'Release', 'libtsmirror.so'));
    // The Kubernetes client (in the bundle) loads from the image: its YAML parser reports a bad kubeconfig.
    writeFileSync(join(root, 'bad-kubeconfig'), 'x: [');
    const kube = await run(process.execPath, [cli, 'targets', '--kubeconfig', join(root, 'bad-kubeconfig')], { cwd: root });
    expect(kube.code).toBe(125);
    expect(kube.stderr).toMatch(/cannot read the kubeconfig .*bad-kubeconfig: unexpected end of the stream[\s\S]*TSM_ERR_KUBE_CONFIG/);
  });

  it("the build stage copies every source folder the build compiles: tsc finds every import there", async () => {
    // The image's build stage compiles only what its COPY lines bring in; a folder the CLI or
    // the agent imports from (common/ was once missing) fails `npm ci`'s build in the image only.
    const build = dockerfile.slice(0, dockerfile.lastIndexOf('\nFROM '));
    const dir = mkdtempSync(join(tmpdir(), 'tsm-image-build-'));
    try {
      const copies = [...build.matchAll(/^COPY (?!--)(.+)$/gm)].map((m) => (m[1] ?? '').trim().split(/\s+/));
      expect(copies.length).toBeGreaterThan(3);
      for (const args of copies) {
        const dest = args.pop() ?? '.';
        for (const src of args) cpSync(join(repoRoot, src), dest.endsWith('/') ? join(dir, dest, basename(src)) : join(dir, dest), { recursive: true });
      }
      symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
      const tsc = await run(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json', '--noEmit'], { cwd: dir, timeoutMs: 240000 });
      expect(tsc.stdout + tsc.stderr).toBe('');
      expect(tsc.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300000);

  it('bin/tsmirror.js runs the bundled CLI when it was built, the compiled modules when there is none or it is older', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsm-bin-'));
    try {
      mkdirSync(join(dir, 'bin'));
      cpSync(join(repoRoot, 'bin', 'tsmirror.js'), join(dir, 'bin', 'tsmirror.js'));
      writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
      for (const [folder, says] of [['cli', 'modules'], ['cli-bundle', 'bundle']] as const) {
        mkdirSync(join(dir, 'dist', folder), { recursive: true });
        writeFileSync(join(dir, 'dist', folder, 'main.js'), `console.log(${JSON.stringify(says)});`);
      }
      expect((await run(process.execPath, [join(dir, 'bin', 'tsmirror.js')])).stdout).toBe('bundle\n');
      // Modules compiled after the bundle (a bare tsc): the bundle is stale.
      const later = new Date(Date.now() + 5000);
      utimesSync(join(dir, 'dist', 'cli', 'main.js'), later, later);
      expect((await run(process.execPath, [join(dir, 'bin', 'tsmirror.js')])).stdout).toBe('modules\n');
      rmSync(join(dir, 'dist', 'cli-bundle'), { recursive: true });
      expect((await run(process.execPath, [join(dir, 'bin', 'tsmirror.js')])).stdout).toBe('modules\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
