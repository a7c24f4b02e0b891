/**
 * Sessions that survive (issue 16's acceptance), on the local node harness through the
 * in-memory API server: `tsmirror exec --target deployment/api` reaches a cluster agent
 * through the port-forward, and the port-forward reaches the agent through the fault relay
 * (test/e2e/fault-relay.ts). The program (fixtures/survive-program.py) reads numbered lines
 * from the `feed` pod over one connection and makes a name lookup and a new request every
 * 100 ms.
 *
 * - a reset with 2 s of refusals, a 15 s stall and a dropped port-forward: every line comes
 *   back in order and no request fails;
 * - the agent SIGKILLed and started again: requests work again within 5 s of the agent being
 *   back, and the program's steal of port 8080 works again;
 * - the deployment's pod replaced: the session follows within 5 s of the new pod being ready.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { FakeApiServer } from '../k8s/apiserver.js';
import { FaultRelay } from './fault-relay.js';
import { addSessionAdmission, pollUntil, repoRoot, restartAgentProcess, startAgentProcess, startCli, stopAll, type AgentProcess, type RunningCli } from './tsm.js';

const PY = '/usr/bin/python3';
const PROGRAM = join(repoRoot, 'test', 'e2e', 'fixtures', 'survive-program.py');
const SERVER = join(repoRoot, 'test', 'e2e', 'fixtures', 'incoming-server.mjs');

/** The feed pod: 7000 sends the number of lines a connection asks for (100 a second, 1 KiB each); 7001 answers ping with pong. */
const FEED = `
import socket, threading, time
pad = b'x' * 1000
def lines(c):
    try:
        with c:
            n = int(c.makefile('rb').readline())
            for i in range(0, n, 10):
                c.sendall(b''.join(b'%d %s\\n' % (j, pad) for j in range(i, min(i + 10, n))))
                time.sleep(0.1)
    except OSError:
        pass
def pong(c):
    with c:
        try:
            if c.recv(64): c.sendall(b'pong\\n')
        except OSError:
            pass
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port)); s.listen(256)
    while True:
        c, _ = s.accept(); threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(7001, pong), daemon=True).start()
serve(7000, lines)
`;

const AGENT_NODE = 'node-1';
let harness: Harness;
let api: FakeApiServer;
let agent: AgentProcess;
let agentFlags: string[];
let relay: FaultRelay;
let app: Pod;
let client: Pod;
let dir: string;
let kubeconfig: string;
const clis: RunningCli[] = [];

beforeAll(async () => {
  harness = await Harness.create({ name: 'survive' });
  [app, client] = await Promise.all([
    harness.addPod({ name: 'app', namespace: 'shop', command: ['/usr/bin/node', SERVER, 'pod', '8080'], readyPort: 8080 }),
    harness.addPod({ name: 'client', namespace: 'shop', command: ['/usr/bin/sleep', 'infinity'] }),
    harness.addPod({ name: 'feed', namespace: 'shop', command: [PY, '-c', FEED], readyPort: 7001 }),
  ]);
  api = await FakeApiServer.start();
  dir = mkdtempSync(join(tmpdir(), 'tsm-survive-'));
  kubeconfig = api.writeKubeconfig(dir, { namespace: 'shop' });
  agentFlags = ['--kubeconfig', api.writeKubeconfig(dir, { file: 'agent' }), '--node-name', AGENT_NODE, '--health-listen', '127.0.0.1:0'];
  agent = await startAgentProcess(agentFlags);
  relay = await FaultRelay.start({ host: '127.0.0.1', port: Number(new URL(agent.url).port) });
  api.addNode(AGENT_NODE);
  addSessionAdmission(api);
  // The agent's pod: its session port forwarded (by the API server) to the relay, and on to the agent.
  api.addPod({
    name: 'tsmirror-agent-n1', namespace: 'tsmirror-system', node: AGENT_NODE,
    labels: { 'app.kubernetes.io/name': 'tsmirror-agent' }, containers: [{ name: 'agent' }],
    forwards: { 7777: { host: '127.0.0.1', port: relay.port } },
  });
  api.addDeployment('shop', 'api', [{ pod: app, name: 'api-7d9f8c6b5-x7k2p' }]);
}, 120000);

afterEach(async () => {
  relay.resume();
  relay.slow({});
  for (const c of clis.splice(0)) await stop(c);
});

/** Ends a session as a user does (SIGTERM), then its whole process group (the steal test's server runs in the background). */
async function stop(cli: RunningCli): Promise<void> {
  const { child } = cli;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  }
  try {
    process.kill(-(child.pid ?? 0), 'SIGKILL');
  } catch {
    // the group is gone
  }
}

afterAll(async () => {
  await relay?.close();
  await stopAll({ agent, api, harness, dirs: [dir] });
});

function exec(flags: string[], command: string[]): RunningCli {
  const cli = startCli(['exec', '--kubeconfig', kubeconfig, '--target', 'deployment/api', ...flags, '--', ...command], { detached: true });
  clis.push(cli);
  return cli;
}

const program = (lines: number, seconds: number): string[] => [PY, PROGRAM, 'feed', '7000', '7001', String(lines), String(seconds)];
const count = (cli: RunningCli, re: RegExp): number => (cli.out() + cli.err()).split('\n').filter((l) => re.test(l)).length;
/** Requests the program started after `since` (ms since the epoch) that worked / failed. */
const requests = (cli: RunningCli, since: number): { ok: number; failed: string[] } => {
  const lines = cli.out().split('\n');
  const after = (l: string): boolean => Number(/^REQ \S+ (\S+)/.exec(l)?.[1] ?? 0) * 1000 >= since;
  return { ok: lines.filter((l) => l.startsWith('REQ ok') && after(l)).length, failed: lines.filter((l) => l.startsWith('REQ fail') && after(l)) };
};

describe('sessions that survive (through the API server, the port-forward and a faulty network)', () => {
  it('a reset with 2 s of refusals, a 15 s stall and a dropped port-forward: every line in order, no request fails', async () => {
    const lines = 5000; // 50 s of lines at 100 a second: they outlast the faults
    const cli = exec(['-v'], program(lines, 0));
    await cli.waitFor(/REQ ok[\s\S]*REQ ok[\s\S]*REQ ok/, 30000);
    const resumed = (): number => count(cli, /session resumed, nothing lost/);

    await relay.reset(2000);
    await cli.waitFor(/lost the agent, reconnecting/, 5000);
    expect(await pollUntil(() => resumed() >= 1, 20000), cli.err()).toBe(true);
    const afterReset = count(cli, /^REQ ok/);
    expect(await pollUntil(() => count(cli, /^REQ ok/) > afterReset + 3, 10000)).toBe(true);

    // Longer than the heartbeats allow: noticed in 3 s; reconnecting waits for the network.
    const lostBefore = count(cli, /lost the agent/);
    relay.stall(15000);
    expect(await pollUntil(() => count(cli, /lost the agent/) > lostBefore, 8000), cli.err()).toBe(true);
    expect(await pollUntil(() => resumed() >= 2, 40000), cli.err()).toBe(true);
    const afterStall = count(cli, /^REQ ok/);
    expect(await pollUntil(() => count(cli, /^REQ ok/) > afterStall + 3, 10000)).toBe(true);

    api.dropPortForwards();
    expect(await pollUntil(() => resumed() >= 3, 20000), cli.err()).toBe(true);

    const done = await cli.waitFor(/DONE ok=(\d+) fail=(\d+)/, 120000);
    expect(cli.out()).toContain(`STREAM OK ${lines}`);
    expect(cli.out()).not.toMatch(/STREAM (BAD|ERROR|SHORT)/);
    expect(cli.out().match(/^REQ fail.*$/gm) ?? []).toEqual([]);
    expect(Number(done[2])).toBe(0);
    expect(Number(done[1])).toBeGreaterThan(50);
    expect(cli.err()).not.toMatch(/with a new session|the session ended/);
  }, 240000);

  it('the agent SIGKILLed and started again: requests work within 5 s of it being back, and the steal of port 8080 again', async () => {
    const curlApp = async (): Promise<string> => (await harness.exec(client, ['curl', '-sS', '--max-time', '2', `http://${app.ip}:8080/`], { timeoutMs: 5000 })).stdout;
    const cli = exec(['--steal'], ['/bin/sh', '-c', `/usr/bin/node ${SERVER} thief 8080 & exec ${program(100000, 60).join(' ')}`]);
    await cli.waitFor(/port 8080 of the pod/, 30000);
    await cli.waitFor(/REQ ok[\s\S]*REQ ok[\s\S]*REQ ok/, 30000);
    expect(await curlApp()).toMatch(/^thief GET/);

    agent = await restartAgentProcess(agent, agentFlags, 1000);
    const back = Date.now();
    // Requests made from 5 s after the agent is back all work (and some do).
    expect(await pollUntil(() => requests(cli, back + 5000).ok >= 10, 30000), `${cli.err()}\n--- agent\n${agent.log()}`).toBe(true);
    expect(requests(cli, back + 5000).failed).toEqual([]);
    expect(cli.err()).toMatch(/with a new session/);
    // The program's stolen port: the new session subscribed again.
    expect(await pollUntil(async () => /^thief GET/.test(await curlApp()), 15000, 200), cli.err()).toBe(true);
    expect(cli.child.exitCode).toBeNull(); // the program ran on throughout
  }, 120000);

  it("the deployment's pod replaced: the session follows within 5 s of the new pod being ready", async () => {
    const cli = exec(['-v'], program(100000, 90));
    await cli.waitFor(/REQ ok[\s\S]*REQ ok[\s\S]*REQ ok/, 30000);
    // A rollout: the new pod (its own network namespace and container) comes up, the old one goes.
    const next = await harness.addPod({ name: 'app-2', namespace: 'shop', command: ['/usr/bin/node', SERVER, 'pod2', '8080'], readyPort: 8080 });
    api.replacePod('shop', 'api-7d9f8c6b5-x7k2p', { name: 'api-7d9f8c6b5-n3w9p', pod: next });
    await harness.removePod(app);
    await cli.waitFor(/lost the agent|the session ended|reconnecting/, 10000);
    await new Promise((r) => setTimeout(r, 2000)); // the new pod is not ready yet
    api.setPodReady('shop', 'api-7d9f8c6b5-n3w9p', true);
    const ready = Date.now();
    const m = await cli.waitFor(/with a new session[^\n]*api-7d9f8c6b5-n3w9p/, 30000).catch((e: unknown) => { throw new Error(`${String(e)}\n--- agent\n${agent.log()}\n${JSON.stringify(relay.stats)}`); });
    expect(m[0]).toBeTruthy();
    expect(await pollUntil(() => requests(cli, ready).ok >= 1, 10000), cli.out() + cli.err()).toBe(true);
    // Followed: a request started within 5 s of the new pod being ready worked.
    const okWithin5 = cli.out().split('\n').filter((l) => {
      const m2 = /^REQ ok (\S+) (\S+)/.exec(l);
      if (!m2) return false;
      const end = (Number(m2[1]) + Number(m2[2])) * 1000;
      return end >= ready && end <= ready + 5000;
    });
    expect(okWithin5.length, cli.err()).toBeGreaterThan(0);
    expect(cli.child.exitCode).toBeNull();
    expect(agent.child.exitCode, agent.log()).toBeNull(); // the old pod's end ended its session, not the agent
  }, 120000);

  it('a target that exits with no request in flight: its session ends, the agent serves on', async () => {
    const own = await startAgentProcess();
    const target = spawn('sleep', ['60']);
    try {
      const cli = startCli(['exec', '--agent', own.url, '--target', `pid/${target.pid}`, '--fs-mode', 'local', '--', 'sh', '-c', 'echo running; exec sleep 30'], { detached: true });
      clis.push(cli);
      // The program runs (a target gone while the session is still being set up ends the CLI
      // with that error instead, code 125: a loaded machine once got there first).
      await cli.waitFor(/^running$/m, 30000);
      target.kill('SIGKILL'); // the program sleeps: no request is in flight when the agent notices
      await cli.waitFor(/the session ended: TSM_ERR_TARGET_GONE/, 15000);
      await new Promise((r) => setTimeout(r, 500));
      expect(own.child.exitCode, own.log()).toBeNull();
      const status = (await (await fetch(`${own.url.replace('ws:', 'http:')}/status`)).json()) as { sessions: unknown[] };
      expect(status.sessions).toEqual([]);
    } finally {
      target.kill('SIGKILL');
      await own.stop();
    }
  }, 60000);
});
