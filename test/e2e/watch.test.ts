/**
 * --watch for real: saving a file restarts the program in the same session (the agent
 * sees one session), each restart prints one line with its time, a program that ignores
 * SIGTERM is killed after the grace period, and Ctrl-C ends everything.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode } from '../harness/demo-pods.js';
import { startAgentProcess, startCli, stopAll, stopCli, type AgentProcess, type RunningCli } from './tsm.js';

let harness: Harness;
let api: Pod;
let db: Pod;
let agent: AgentProcess;
let project: string;

beforeAll(async () => {
  ({ harness, api, db } = await buildDemoNode({ name: 'watch' }));
  agent = await startAgentProcess();
  project = mkdtempSync(join(tmpdir(), 'tsm-watch-'));
  mkdirSync(join(project, 'src'));
  mkdirSync(join(project, 'node_modules'));
});

afterAll(() => stopAll({ agent, harness, dirs: [project] }));

/** A program that fetches from the pod's network at start, says which version it is, then waits. */
const app = (version: string, ignoreTerm = false): string => `
import signal, sys, time, urllib.request
${ignoreTerm ? 'signal.signal(signal.SIGTERM, signal.SIG_IGN)' : ''}
body = urllib.request.urlopen('http://db:8080/').read().decode().strip()
print('${version}', body, flush=True)
while True: time.sleep(1)
`;

function start(args: string[]): RunningCli {
  return startCli(['exec', '--agent', agent.url, '--target', `pid/${api.pid}`, ...args], { cwd: project });
}

const sessionsOpened = (): number => (agent.log().match(/session \S+ opened/g) ?? []).length;

describe('--watch', () => {
  it('a save restarts the program in the same session and prints one line with the time', async () => {
    writeFileSync(join(project, 'src', 'app.py'), app('v1'));
    const before = sessionsOpened();
    const w = start(['--watch', 'src', '--', '/usr/bin/python3', 'src/app.py']);
    try {
      await w.waitFor(/v1 hello from db/);
      await w.waitFor(/watching src/);
      writeFileSync(join(project, 'node_modules', 'ignored.js'), 'x'); // ignored by default
      writeFileSync(join(project, 'src', 'app.py'), app('v2'));
      await w.waitFor(/v2 hello from db/);
      expect(w.err()).toMatch(/tsmirror: src\/app\.py changed; restarted in \d+ ms\n/);
      expect(w.err().match(/restarted in/g)).toHaveLength(1);
      expect(sessionsOpened() - before).toBe(1);
      w.child.kill('SIGINT');
      const code = await new Promise<number | null>((r) => w.child.once('close', r));
      expect(code).not.toBeNull();
    } finally {
      await stopCli(w.child);
    }
  });

  it('a program that ignores SIGTERM is killed after the grace period; no process is left', async () => {
    writeFileSync(join(project, 'src', 'stubborn.py'), app('s1', true));
    const w = start(['--watch', 'src', '--watch-grace', '300', '--', '/usr/bin/python3', 'src/stubborn.py']);
    try {
      await w.waitFor(/s1 hello from db/);
      await w.waitFor(/watching src/);
      writeFileSync(join(project, 'src', 'stubborn.py'), app('s2', true));
      await w.waitFor(/s2 hello from db/);
      w.child.kill('SIGTERM');
      await new Promise((r) => w.child.once('close', r));
      const { execFileSync } = await import('node:child_process');
      const left = execFileSync('ps', ['-eo', 'args']).toString().split('\n').filter((l) => l.includes('src/stubborn.py'));
      expect(left).toEqual([]);
    } finally {
      await stopCli(w.child);
    }
  });

  it('a program under a shell gets the whole grace period to shut down, though the shell dies of the SIGTERM at once', async () => {
    // The shell (the group's leader) ends at the SIGTERM; the program traps it and needs
    // 400 ms. The CLI used to SIGKILL the group as soon as the leader was gone.
    const graceful = (v: string): string => `
import signal, sys, time
def term(*_):
    time.sleep(0.4)
    print('${v} shut down cleanly', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
print('${v} up', flush=True)
while True: time.sleep(1)
`;
    writeFileSync(join(project, 'src', 'graceful.py'), graceful('g1'));
    const w = start(['--watch', 'src', '--watch-grace', '5000', '--', '/bin/sh', '-c', '/usr/bin/python3 src/graceful.py; true']);
    try {
      await w.waitFor(/g1 up/);
      await w.waitFor(/watching src/);
      writeFileSync(join(project, 'src', 'graceful.py'), graceful('g2'));
      await w.waitFor(/g2 up/, 20000);
      expect(w.out()).toMatch(/g1 shut down cleanly\n[\s\S]*g2 up/);
    } finally {
      await stopCli(w.child);
    }
  });

  it('with --steal, requests that arrive while the program restarts wait for it instead of going to the pod', async () => {
    // Starts listening only after a second: a restart leaves a window with no listener.
    const web = (version: string): string => `
import http.server, time
time.sleep(1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'${version}\\n'
        self.send_response(200); self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
print('listening ${version}', flush=True)
http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
`;
    writeFileSync(join(project, 'src', 'web.py'), web('w1'));
    const w = start(['--steal', '--watch', 'src', '--', '/usr/bin/python3', 'src/web.py']);
    const get = async (): Promise<string> => (await harness.exec(db, ['curl', '-sS', '--max-time', '20', `http://${api.ip}:8080/`], { timeoutMs: 30000 })).stdout;
    try {
      await w.waitFor(/stealing all traffic on port 8080/);
      await w.waitFor(/watching src/);
      expect(await get()).toBe('w1\n');
      writeFileSync(join(project, 'src', 'web.py'), web('w2'));
      await w.waitFor(/restarted in/);
      // The new program is still sleeping: this request arrives with nobody listening.
      expect(await get()).toBe('w2\n');
      expect(w.err()).toMatch(/port 8080: 1 connection\(s\) waited for the restart/);
      expect(await get()).toBe('w2\n');
    } finally {
      await stopCli(w.child);
    }
  });

  it('a missing watch path is refused before connecting', async () => {
    const w = start(['--watch', 'nope', '--', 'true']);
    const code = await new Promise<number | null>((r) => w.child.once('close', r));
    expect(code).toBe(125);
    expect(w.err()).toContain('--watch nope: no such file or directory');
  });
});
