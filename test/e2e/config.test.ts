/**
 * The project config file for real: the CLI finds .tsmirror/config.json from the current
 * directory, runs a program against a harness pod with no flags, lets flags and
 * TSMIRROR_* variables override the file, and refuses a bad file before connecting.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode } from '../harness/demo-pods.js';
import { repoRoot, runCli, startAgentProcess, startCli, stopAll, stopCli, type AgentProcess } from './tsm.js';

let harness: Harness;
let db: Pod;
let api: Pod;
let agent: AgentProcess;
let project: string;

beforeAll(async () => {
  ({ harness, db, api } = await buildDemoNode({ name: 'config' }));
  agent = await startAgentProcess();
  project = mkdtempSync(join(tmpdir(), 'tsm-project-'));
  mkdirSync(join(project, '.git'));
  mkdirSync(join(project, 'src', 'deep'), { recursive: true });
  mkdirSync(join(project, '.tsmirror'));
});

afterAll(() => stopAll({ agent, harness, dirs: [project] }));

const writeConfig = (config: Record<string, unknown>): void => {
  writeFileSync(join(project, '.tsmirror', 'config.json'), JSON.stringify(config));
};
const tsm = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runCli(args, { cwd: join(project, 'src', 'deep'), env: { ...process.env, ...env }, timeoutMs: 30000 });

describe('.tsmirror/config.json', () => {
  it('names agent and target: `tsmirror exec -- curl` works with no flags, from a subdirectory', async () => {
    writeConfig({ agent: agent.url, target: `pid/${api.pid}`, quiet: true });
    const r = await tsm(['exec', '--', 'curl', '-sS', 'http://db:8080/']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db\n');
    expect(r.code).toBe(0);
  });

  it('a flag overrides the file, an environment variable overrides the file, ${VAR} is expanded', async () => {
    writeConfig({ agent: agent.url, target: `pid/${api.pid}`, quiet: true, env: ['WHO=${TSM_TEST_WHO}'] });
    const show = 'echo "$API_MODE|${DB_NAME:-}|$WHO"';
    const fromFile = await tsm(['exec', '--', 'sh', '-c', show], { TSM_TEST_WHO: 'alice' });
    expect(fromFile.stdout).toBe('demo||alice\n');
    const flag = await tsm(['exec', '--target', `pid/${db.pid}`, '--', 'sh', '-c', show], { TSM_TEST_WHO: 'bob' });
    expect(flag.stdout).toBe('|shop|bob\n');
    const env = await tsm(['exec', '--', 'sh', '-c', show], { TSM_TEST_WHO: 'carol', TSMIRROR_TARGET: `pid/${db.pid}` });
    expect(env.stdout).toBe('|shop|carol\n');
    const shown = await tsm(['config', 'show', '--quiet'], { TSM_TEST_WHO: 'dave', TSMIRROR_TARGET: `pid/${db.pid}` });
    expect(shown.stdout).toContain(`config file: ${join(project, '.tsmirror', 'config.json')}`);
    expect(shown.stdout).toMatch(new RegExp(`^target +"pid/${db.pid}" +environment$`, 'm'));
    expect(shown.stdout).toMatch(/^agent +"ws:\/\/[^"]+" +file$/m);
    expect(shown.stdout).toMatch(/^env +"WHO=dave" +file$/m);
    expect(shown.stdout).toMatch(/^quiet +true +flag$/m);
  });

  it('a misspelt key or a wrong type fails before connecting, naming file, key and what is allowed', async () => {
    const file = join(project, '.tsmirror', 'config.json');
    // The agent URL points nowhere: reaching it would be a different error.
    writeConfig({ agent: 'ws://127.0.0.1:9', targt: `pid/${api.pid}` });
    const misspelt = await tsm(['exec', '--', 'true']);
    expect(misspelt.code).toBe(125);
    expect(misspelt.stderr).toContain(`${file}: unknown key "targt" — did you mean "target"? [TSM_ERR_CONFIG]`);
    writeConfig({ agent: 'ws://127.0.0.1:9', quiet: 'yes' });
    const wrong = await tsm(['exec', '--', 'true']);
    expect(wrong.code).toBe(125);
    expect(wrong.stderr).toContain(`${file}: quiet is "yes", but it must be true or false [TSM_ERR_CONFIG]`);
    writeConfig({ agent: 'ws://127.0.0.1:9', fsMode: 'rw' });
    const mode = await tsm(['exec', '--', 'true']);
    expect(mode.code).toBe(125);
    expect(mode.stderr).toContain(`${file}: fsMode is "rw", but it must be one of "read", "write", "local" [TSM_ERR_CONFIG]`);
    writeConfig({ agent: 'ws://127.0.0.1:9', env: ['WHO=${TSM_UNSET_VARIABLE}'] });
    const unset = await tsm(['exec', '--', 'true']);
    expect(unset.stderr).toContain('${TSM_UNSET_VARIABLE} is not set');
  });

  it('${USER} in a header filter is expanded: a filtered steal from the file takes only that user\'s requests', async () => {
    writeConfig({ agent: agent.url, target: `pid/${api.pid}`, steal: true, httpHeader: ['x-dev: ${USER}'] });
    const server = 'import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n  def do_GET(self):\n    self.send_response(200); self.end_headers(); self.wfile.write(b"local\\n")\n  def log_message(self, *a): pass\nhttp.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()';
    const cli = startCli(['exec', '--', '/usr/bin/python3', '-c', server], { cwd: join(project, 'src', 'deep'), env: { ...process.env, USER: 'alice-cfg' } });
    try {
      await cli.waitFor(/stealing requests matching x-dev: alice-cfg on port 8080/, 20000);
      const get = async (header: string[]): Promise<string> =>
        (await harness.exec(db, ['curl', '-sS', '--max-time', '10', ...header, `http://${api.ip}:8080/`])).stdout;
      expect(await get(['-H', 'x-dev: alice-cfg'])).toBe('local\n');
      expect(await get(['-H', 'x-dev: bob'])).toBe('hello from api\n');
    } finally {
      await stopCli(cli.child);
    }
  });

  it('the config example in docs/quickstart.md is valid', async () => {
    const doc = readFileSync(join(repoRoot, 'docs', 'quickstart.md'), 'utf8');
    const example = /```json\n([\s\S]*?)```/.exec(doc)?.[1] ?? '';
    const file = join(project, 'quickstart.json');
    writeFileSync(file, example);
    const r = await tsm(['config', 'show', '--config', file], { USER: 'alice' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^httpHeader +"x-dev: alice" +file$/m);
  });

  it('config init writes a starter file that validates; --config picks another file', async () => {
    const other = mkdtempSync(join(tmpdir(), 'tsm-init-'));
    try {
      const init = await runCli(['config', 'init', '--dir', other, '--target', `pid/${api.pid}`, '--agent', agent.url]);
      expect(init.code).toBe(0);
      const written = join(other, '.tsmirror', 'config.json');
      expect(JSON.parse(readFileSync(written, 'utf8'))).toMatchObject({ target: `pid/${api.pid}`, agent: agent.url });
      const again = await runCli(['config', 'init', '--dir', other]);
      expect(again.code).toBe(125);
      expect(again.stderr).toContain('already exists');
      writeConfig({ agent: 'ws://127.0.0.1:9' });
      const r = await tsm(['exec', '--config', written, '-q', '--', 'curl', '-sS', 'http://db:8080/']);
      expect(r.stdout).toBe('hello from db\n');
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('the shipped JSON Schema and docs/config-reference.md are what the exec options define (npm run schema)', async () => {
    const r = await runCli(['config', 'schema']);
    expect(JSON.parse(r.stdout)).toEqual(JSON.parse(readFileSync(join(repoRoot, 'schema', 'config.schema.json'), 'utf8')));
    const md = await runCli(['config', 'schema', '--markdown']);
    expect(md.stdout).toBe(readFileSync(join(repoRoot, 'docs', 'config-reference.md'), 'utf8'));
  });
});
