/**
 * Sessions that survive (docs/ARCHITECTURE.md): a real `tsmirror exec` whose connection to
 * a real agent process goes through a TCP relay this test cuts and stalls, and an agent
 * that is SIGKILLed and started again. The program (test/e2e/fixtures/resume-program.py)
 * reads numbered lines over one connection and makes a lookup and a new connection every
 * 100 ms. The target is a process of this machine (its network is this machine's, and
 * --remote-localhost sends the program's loopback connections through the agent), so no
 * namespace or netfilter rule is involved.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readAgentKey } from '../../common/local-agent-key.js';
import { Harness, type Pod } from '../harness/harness.js';
import { httpServerCommand } from '../harness/demo-pods.js';
import { FakeApiServer } from '../k8s/apiserver.js';
import {
  addAgentPod, addSessionAdmission, pollUntil, repoRoot, startAgentProcess, startCli, stopAll, stopCli, type AgentProcess, type RunningCli,
} from './tsm.js';

const program = join(repoRoot, 'test', 'e2e', 'fixtures', 'resume-program.py');

/** A TCP relay to `target` that can cut its connections, refuse new ones for a while, or stall. */
async function relay(targetPort: number): Promise<{
  port: number; connections: () => number; cut: (refuseMs: number) => void; stall: (ms: number) => void; close: () => Promise<void>;
}> {
  const pairs = new Set<{ a: net.Socket; b: net.Socket }>();
  let refuseUntil = 0;
  const server = net.createServer((a) => {
    a.on('error', () => undefined);
    if (Date.now() < refuseUntil) {
      a.resetAndDestroy();
      return;
    }
    const b = net.connect(targetPort, '127.0.0.1');
    b.on('error', () => undefined);
    const pair = { a, b };
    pairs.add(pair);
    a.pipe(b);
    b.pipe(a);
    const gone = (): void => {
      pairs.delete(pair);
      a.destroy();
      b.destroy();
    };
    a.once('close', gone);
    b.once('close', gone);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => pairs.size,
    cut: (refuseMs) => {
      refuseUntil = Date.now() + refuseMs;
      for (const p of pairs) {
        p.a.resetAndDestroy();
        p.b.resetAndDestroy();
      }
    },
    // The connections open now stop carrying anything (a black hole); new ones work.
    stall: (ms) => {
      for (const p of [...pairs]) {
        p.a.unpipe(p.b);
        p.b.unpipe(p.a);
        p.a.pause();
        p.b.pause();
        setTimeout(() => {
          p.a.destroy();
          p.b.destroy();
        }, ms).unref();
      }
    },
    close: () => new Promise<void>((r) => {
      for (const p of pairs) {
        p.a.destroy();
        p.b.destroy();
      }
      server.close(() => r());
    }),
  };
}

/** Servers on this machine (the target's network): numbered lines, and ping → pong. */
async function servers(lines: number, paceMs: number): Promise<{ streamPort: number; requestPort: number; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket): void => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => sockets.delete(s));
  };
  const stream = net.createServer((s) => {
    track(s);
    let n = 0;
    const pad = 'x'.repeat(1000);
    const timer = setInterval(() => {
      // Several lines per tick: some KiB in flight at any cut.
      for (let i = 0; i < 8 && n < lines; i++) s.write(`${n++} ${pad}\n`);
      if (n >= lines) {
        clearInterval(timer);
        s.end();
      }
    }, paceMs);
    s.once('close', () => clearInterval(timer));
  });
  const request = net.createServer((s) => {
    track(s);
    s.once('data', () => s.end('pong\n'));
  });
  await new Promise<void>((r) => stream.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => request.listen(0, '127.0.0.1', r));
  return {
    streamPort: (stream.address() as net.AddressInfo).port,
    requestPort: (request.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      stream.close();
      request.close();
    },
  };
}

/** A free loopback port (for an agent that must come back on the same one). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

let target: ChildProcess;
const stops: Array<() => Promise<void> | void> = [];

beforeAll(() => {
  target = spawn('sleep', ['600']);
});
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});
afterAll(() => {
  target.kill('SIGKILL');
});

function exec(agentUrl: string, args: string[], env: NodeJS.ProcessEnv = {}): RunningCli {
  const cli = startCli(['exec', '-v', '--agent', agentUrl, '--target', `pid/${target.pid}`, '--remote-localhost', '--fs-mode', 'local', '--', 'python3', ...args],
    { env: { ...process.env, ...env } });
  stops.push(() => stopCli(cli.child));
  return cli;
}

describe('sessions survive a dropped or stalled connection', () => {
  it('a cut with 2 s of refusals, then a stall: every line arrives in order and no request fails', async () => {
    const agent = await startAgentProcess();
    stops.push(() => agent.stop());
    const key = readAgentKey(agent.url) ?? '';
    const via = await relay(Number(new URL(agent.url).port));
    stops.push(() => via.close());
    const lines = 2400;
    const srv = await servers(lines, 40); // ~12 s of lines
    stops.push(() => srv.close());
    const cli = exec(`ws://127.0.0.1:${via.port}`, [program, String(srv.streamPort), String(srv.requestPort), String(lines), '0'], { TSMIRROR_AGENT_KEY: key });
    await cli.waitFor(/REQ ok/, 20_000);
    await cli.waitFor(/REQ ok[\s\S]*REQ ok[\s\S]*REQ ok/, 10_000);

    via.cut(2000);
    await cli.waitFor(/lost the agent, reconnecting/, 5000);
    // The agent keeps the session meanwhile, and says so in /status.
    const status = async (): Promise<Array<{ state: string; resumes: number; bytesResent: number; resumingSince?: number }>> =>
      ((await (await fetch(`${agent.url.replace('ws:', 'http:')}/status`)).json()) as { sessions: Array<{ state: string; resumes: number; bytesResent: number }> }).sessions;
    expect(await pollUntil(async () => (await status())[0]?.state === 'resuming', 2000)).toBe(true);
    await cli.waitFor(/session resumed, nothing lost/, 15_000);
    const after = (await status())[0];
    expect(after).toMatchObject({ state: 'connected', resumes: 1 });
    const afterCut = cli.out().split('\n').filter((l) => l.startsWith('REQ ok')).length;
    await pollUntil(() => cli.out().split('\n').filter((l) => l.startsWith('REQ ok')).length > afterCut + 3, 10_000);

    // A stall longer than the 3 s the CLI allows: noticed, and resumed on a new connection.
    const lostBefore = (cli.err().match(/lost the agent/g) ?? []).length;
    via.stall(6000);
    await pollUntil(() => (cli.err().match(/lost the agent/g) ?? []).length > lostBefore, 6000);
    expect((cli.err().match(/lost the agent/g) ?? []).length).toBeGreaterThan(lostBefore);
    await pollUntil(() => (cli.err().match(/session resumed/g) ?? []).length >= 2, 15_000);

    const done = await cli.waitFor(/DONE ok=(\d+) fail=(\d+)/, 60_000);
    const output = cli.out();
    expect(output).toContain(`STREAM OK ${lines}`);
    expect(output).not.toMatch(/STREAM (BAD|ERROR)/);
    expect(Number(done[2])).toBe(0);
    expect(Number(done[1])).toBeGreaterThan(20);
    expect((cli.err().match(/session resumed, nothing lost/g) ?? []).length).toBeGreaterThanOrEqual(2);
    // -v at exit: how the connection fared.
    await cli.closed; // (a listener added now could miss a close that already happened)
    expect(cli.err()).toMatch(/connection to the agent: [2-9]\d* resumed, 0 re-established/);
    expect(agent.log()).toMatch(/resumed from .* after \d+ ms/);
  }, 120_000);

  it('an agent SIGKILLed and started again: a new session; the open connection is reset, requests work again', async () => {
    const port = await freePort();
    let agent: AgentProcess = await startAgentProcess(['--listen', `127.0.0.1:${port}`]);
    stops.push(() => agent.stop());
    const srv = await servers(100_000, 40); // a stream that outlives the test
    stops.push(() => srv.close());
    // Requests for 25 s, whatever happens to the stream.
    const cli = exec(`ws://127.0.0.1:${port}`, [program, String(srv.streamPort), String(srv.requestPort), '100000', '25']);
    await cli.waitFor(/REQ ok[\s\S]*REQ ok[\s\S]*REQ ok/, 20_000);

    await agent.stop(); // SIGKILL
    await cli.waitFor(/lost the agent, reconnecting/, 5000);
    await new Promise((r) => setTimeout(r, 1000));
    agent = await startAgentProcess(['--listen', `127.0.0.1:${port}`]);
    const back = Date.now();
    await cli.waitFor(/with a new session/, 10_000);
    // The stream of the old session was reset, as after a network failure.
    await cli.waitFor(/STREAM ERROR (ConnectionResetError|ConnectionError|OSError)/, 10_000);
    // Requests made from 5 s after the agent came back all work.
    const okAfter = (): number => cli.out().split('\n').filter((l) => {
      const m = /^REQ ok (\S+)/.exec(l);
      return m && Number(m[1]) * 1000 > back + 5000;
    }).length;
    expect(await pollUntil(() => okAfter() >= 10, 20_000)).toBe(true);
    const failedLate = cli.out().split('\n').filter((l) => {
      const m = /^REQ fail (\S+)/.exec(l);
      return m && Number(m[1]) * 1000 > back + 5000;
    });
    expect(failedLate).toEqual([]);
    expect(cli.child.exitCode).toBeNull(); // the program kept running all along
  }, 90_000);

  it('--reconnect-grace 0: the session ends with its connection, as before', async () => {
    const agent = await startAgentProcess();
    stops.push(() => agent.stop());
    const via = await relay(Number(new URL(agent.url).port));
    stops.push(() => via.close());
    const srv = await servers(100_000, 40);
    stops.push(() => srv.close());
    const cli = startCli(['exec', '--agent', `ws://127.0.0.1:${via.port}`, '--target', `pid/${target.pid}`, '--remote-localhost', '--fs-mode', 'local', '--reconnect-grace', '0',
      '--', 'python3', program, String(srv.streamPort), String(srv.requestPort), '100000', '3'], { env: { ...process.env, TSMIRROR_AGENT_KEY: readAgentKey(agent.url) ?? '' } });
    stops.push(() => stopCli(cli.child));
    await cli.waitFor(/REQ ok/, 20_000);
    via.cut(0);
    await cli.waitFor(/the session ended: TSM_ERR_SESSION_CLOSED/, 10_000);
    expect(cli.err()).not.toMatch(/reconnecting/);
  }, 60_000);
});

describe('in a cluster: through the port-forward, and following a deployment whose pod is replaced', () => {
  let harness: Harness;
  let api: FakeApiServer;
  let agent: AgentProcess;
  let dir: string;
  let kubeconfig: string;
  let first: Pod;

  beforeAll(async () => {
    harness = await Harness.create({ name: 'resume' });
    let db: Pod;
    [db, first] = await Promise.all([
      harness.addPod({ name: 'db', namespace: 'shop', command: httpServerCommand(8080), files: { '/data/index.html': 'hello from db\n' }, readyPort: 8080 }),
      harness.addPod({ name: 'api1', namespace: 'shop', command: ['sleep', '600'] }),
    ]);
    api = await FakeApiServer.start();
    dir = mkdtempSync(join(tmpdir(), 'tsm-resume-'));
    kubeconfig = api.writeKubeconfig(dir, { namespace: 'shop' });
    agent = await startAgentProcess(['--kubeconfig', api.writeKubeconfig(dir, { file: 'agent' }), '--node-name', 'node-1']);
    api.addNode('node-1');
    addSessionAdmission(api);
    addAgentPod(api, agent, { name: 'tsmirror-agent-n1', node: 'node-1' });
    api.addHarnessPod(db, { name: 'db-0' });
    api.addDeployment('shop', 'api', [{ pod: first }]);
  }, 120_000);

  afterAll(() => stopAll({ agent, api, harness, dirs: [dir] }));

  /** Asks db for its page every 100 ms for `seconds`, one line per try with its time. */
  const asker = (seconds: number): string[] => ['python3', '-c', [
    'import socket, time',
    'start = time.time()',
    `while time.time() - start < ${seconds}:`,
    '    t = time.time()',
    '    try:',
    "        c = socket.create_connection((socket.gethostbyname('db'), 8080), timeout=20)",
    "        c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')",
    "        body = b''",
    '        while True:',
    '            d = c.recv(4096)',
    '            if not d: break',
    '            body += d',
    "        print('ok' if body.endswith(b'hello from db\\n') else 'fail', f'{t:.3f}', 'answer' if body.endswith(b'hello from db\\n') else repr(body[-60:]), flush=True)",
    '    except Exception as e:',
    "        print('fail', f'{t:.3f}', type(e).__name__, e, flush=True)",
    '    time.sleep(0.1)',
  ].join('\n')];

  const lines = (cli: RunningCli, kind: 'ok' | 'fail', after = 0): string[] =>
    cli.out().split('\n').filter((l) => l.startsWith(`${kind} `) && Number(l.split(' ')[1]) * 1000 > after);

  it('a dropped port-forward: the session resumes through a new one, no request fails', async () => {
    const cli = startCli(['exec', '-v', '--kubeconfig', kubeconfig, '--target', 'deploy/api', '--', ...asker(12)]);
    stops.push(() => stopCli(cli.child));
    await cli.waitFor(/^ok /m, 30_000);
    api.dropPortForwards();
    await cli.waitFor(/lost the agent, reconnecting/, 5000);
    await cli.waitFor(/session resumed, nothing lost/, 15_000);
    const resumedAt = Date.now();
    await pollUntil(() => lines(cli, 'ok', resumedAt).length >= 5, 15_000);
    await cli.closed; // (a listener added now could miss a close that already happened)
    expect(lines(cli, 'fail')).toEqual([]);
    expect(cli.err()).toMatch(/connection to the agent: 1 resumed, 0 re-established/);
  }, 90_000);

  it('the pod is replaced: the session moves to the new ready pod and says which; requests work again', async () => {
    const cli = startCli(['exec', '--kubeconfig', kubeconfig, '--target', 'deploy/api', '--', ...asker(30)]);
    stops.push(() => stopCli(cli.child));
    await cli.waitFor(/^ok /m, 30_000);
    // The rollout: a new pod of the same ReplicaSet, ready; the old one goes away.
    const second = await harness.addPod({ name: 'api2', namespace: 'shop', command: ['sleep', '600'] });
    const rs = api.get('apps/v1', 'ReplicaSet', 'shop', 'api-7d9f8c6b5');
    api.addPod({
      name: 'api-7d9f8c6b5-n3w9p', namespace: 'shop', ip: second.ip, labels: { app: 'api', 'pod-template-hash': '7d9f8c6b5' },
      owner: { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'api-7d9f8c6b5', uid: rs?.metadata.uid ?? '' },
      containers: [{ name: 'app', id: second.containerId }],
    });
    api.delete('v1', 'Pod', 'shop', 'api-7d9f8c6b5-x7k2p');
    await harness.removePod(first);
    const replaced = Date.now();
    await cli.waitFor(/now pod shop\/api-7d9f8c6b5-n3w9p on node node-1/, 20_000);
    // Within 5 s of the new pod being ready (it was ready before the old one went), requests work.
    expect(await pollUntil(() => lines(cli, 'ok', replaced + 5000).length >= 5, 20_000)).toBe(true);
    expect(lines(cli, 'fail', replaced + 5000)).toEqual([]);
    expect(cli.child.exitCode).toBeNull();
  }, 90_000);
});

describe('incoming traffic across a gap and a new session', () => {
  const SERVER = join(repoRoot, 'test', 'e2e', 'fixtures', 'incoming-server.mjs');
  let harness: Harness;
  let app: Pod;
  let client: Pod;

  beforeAll(async () => {
    harness = await Harness.create({ name: 'resume-in' });
    [app, client] = await Promise.all([
      harness.addPod({ name: 'app', command: ['/usr/bin/node', SERVER, 'pod', '8080'], readyPort: 8080 }),
      harness.addPod({ name: 'client', command: ['/usr/bin/sleep', 'infinity'] }),
    ]);
  }, 120_000);
  afterAll(() => stopAll({ harness }));

  const who = async (): Promise<string> =>
    (await harness.exec(client, ['curl', '-sS', '--max-time', '20', `http://${app.ip}:8080/`], { timeoutMs: 30_000 })).stdout.split(' ')[0] ?? '';

  it('a stolen request made while the connection is cut waits and reaches the program on resume', async () => {
    const agent = await startAgentProcess();
    stops.push(() => agent.stop());
    const via = await relay(Number(new URL(agent.url).port));
    stops.push(() => via.close());
    const cli = startCli(['exec', '--agent', `ws://127.0.0.1:${via.port}`, '--target', `pid/${app.pid}`, '--steal', '--', '/usr/bin/node', SERVER, 'thief', '8080'],
      { env: { ...process.env, TSMIRROR_AGENT_KEY: readAgentKey(agent.url) ?? '' } });
    stops.push(() => stopCli(cli.child));
    await cli.waitFor(/port 8080 of the pod/, 20_000);
    expect(await who()).toBe('thief');
    via.cut(2500);
    await cli.waitFor(/lost the agent/, 5000);
    const during = who(); // made in the gap: held by the agent, answered after the resume
    await cli.waitFor(/session resumed/, 15_000);
    expect(await during).toBe('thief');
    expect(await who()).toBe('thief');
  }, 90_000);

  it('after an agent restart the new session subscribes the port again: stolen traffic reaches the program', async () => {
    const port = await freePort();
    let agent: AgentProcess = await startAgentProcess(['--listen', `127.0.0.1:${port}`]);
    stops.push(() => agent.stop());
    const cli = startCli(['exec', '--agent', `ws://127.0.0.1:${port}`, '--target', `pid/${app.pid}`, '--steal', '--', '/usr/bin/node', SERVER, 'thief', '8080']);
    stops.push(() => stopCli(cli.child));
    await cli.waitFor(/port 8080 of the pod/, 20_000);
    expect(await who()).toBe('thief');
    await agent.stop(); // SIGKILL: the pod's app gets its traffic back (fail-open)
    expect(await pollUntil(async () => (await who()) === 'pod', 10_000, 200)).toBe(true);
    agent = await startAgentProcess(['--listen', `127.0.0.1:${port}`]);
    await cli.waitFor(/with a new session/, 15_000);
    await cli.waitFor(/port 8080 of the pod subscribed again/, 10_000);
    expect(await who()).toBe('thief');
  }, 90_000);
});
