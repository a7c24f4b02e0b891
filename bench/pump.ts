/**
 * `node dist/bench/pump.js` (as root): what an established stream costs the two Node
 * processes, in CPU time, which the machine's load does not change (wall-clock figures on
 * a shared machine do): CPU milliseconds of the CLI and of the agent per GiB downloaded
 * (pod → program) and uploaded (program → pod), per small request round trip on an open
 * connection, and per connect + close. Read from /proc/PID/stat (user + system time of all
 * threads) at phase markers the probe prints; the probe sleeps around each marker.
 *
 * PUMP_MIB (1024), PUMP_REQUESTS (10000) and PUMP_CONNECTS (2000) size the phases,
 * PUMP_PHASES (connect,request,down,up) picks some; PUMP_PROF_DIR=dir writes a --cpu-prof
 * of the CLI and of the agent there; PUMP_NODE_ARGS are more node flags for both (e.g.
 * --perf-basic-prof for `perf record`).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Harness } from '../test/harness/harness.js';
import { cliPath, startAgentProcess } from '../test/e2e/tsm.js';
import { ECHO, PY } from './net-probe.js';

const MIB = Number(process.env.PUMP_MIB ?? 1024);
const REQUESTS = Number(process.env.PUMP_REQUESTS ?? 10000);
const CONNECTS = Number(process.env.PUMP_CONNECTS ?? 2000);
const PROF_DIR = process.env.PUMP_PROF_DIR;
const PHASES = (process.env.PUMP_PHASES ?? 'connect,request,down,up').split(',');

// Each phase: "start NAME", a pause, the work, "end NAME WALL_US", a pause.
const PROBE = `
import socket, sys, time
MIB, REQUESTS, CONNECTS, PHASES = ${MIB}, ${REQUESTS}, ${CONNECTS}, ${JSON.stringify(PHASES)}
def phase(name, work):
    if name not in PHASES: return
    print('start', name, flush=True); time.sleep(0.3)
    t = time.perf_counter(); work(); us = (time.perf_counter() - t) * 1e6
    print('end', name, us, flush=True); time.sleep(0.3)
ip = socket.gethostbyname('echo')
for _ in range(200):  # warm-up: tsmirror's code paths get compiled
    s = socket.socket(); s.connect((ip, 9001)); s.close()
def connects():
    for _ in range(CONNECTS):
        s = socket.socket(); s.connect((ip, 9001)); s.close()
phase('connect', connects)
s = socket.create_connection((ip, 9001)); f = s.makefile('rwb')
for _ in range(500):
    f.write(b'x\\n'); f.flush(); f.readline()
def requests():
    for _ in range(REQUESTS):
        f.write(b'x\\n'); f.flush(); f.readline()
phase('request', requests)
def down():
    b = socket.create_connection((ip, 9000)); n = 0
    while n < MIB << 20:
        d = b.recv(1 << 20)
        if not d: break
        n += len(d)
    b.close()
phase('down', down)
def up():
    b = socket.create_connection((ip, 9002)); chunk = b'\\0' * (1 << 20)
    for _ in range(MIB): b.sendall(chunk)
    b.shutdown(socket.SHUT_WR)
    assert int(b.recv(64)) == MIB << 20
    b.close()
phase('up', up)
`;
import { runBench } from './run.js';

/** CPU time (user + system, all threads, ms) of a process so far. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

interface PhaseFigures { wallUs: number; cliMs: number; agentMs: number }

async function main(): Promise<void> {
  const harness = await Harness.create({ name: 'bench-pump' });
  // (node 20 refuses --cpu-prof in NODE_OPTIONS)
  const nodeArgs = [...(PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`] : []), ...(process.env.PUMP_NODE_ARGS ?? '').split(' ').filter(Boolean)];
  const agent = await startAgentProcess([], '127.0.0.1:0', nodeArgs);
  const agentPid = agent.child.pid ?? 0;
  try {
    await harness.addPod({ name: 'echo', namespace: 'default', command: [PY, '-c', ECHO], readyPort: 9001 });
    const client = await harness.addPod({ name: 'client', namespace: 'default', command: ['sleep', 'infinity'] });
    const cli = spawn(process.execPath, [...nodeArgs, cliPath, 'exec', '--quiet', '--agent', agent.url, '--target', `pid/${client.pid}`, '--', PY, '-c', PROBE], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const cliPid = cli.pid ?? 0;
    const exited = new Promise<number | null>((resolve) => cli.once('close', (code) => resolve(code)));
    const phases = new Map<string, PhaseFigures>();
    const started = new Map<string, { cli: number; agent: number }>();
    for await (const line of createInterface({ input: cli.stdout })) {
      const [what, name = '', wall] = line.split(' ');
      if (what === 'start') started.set(name, { cli: cpuMs(cliPid), agent: cpuMs(agentPid) });
      else if (what === 'end') {
        const s = started.get(name);
        if (s) phases.set(name, { wallUs: Number(wall), cliMs: cpuMs(cliPid) - s.cli, agentMs: cpuMs(agentPid) - s.agent });
      }
    }
    const code = await exited;
    if (code !== 0) throw new Error(`the probe under tsmirror failed (${code})`);
    const per: [string, string, number, string][] = [
      ['connect', `per connect + close (${CONNECTS})`, CONNECTS / 1000, 'µs'],
      ['request', `per request round trip (${REQUESTS})`, REQUESTS / 1000, 'µs'],
      ['down', `per GiB pod → program (${MIB} MiB)`, MIB / 1024, 'ms'],
      ['up', `per GiB program → pod (${MIB} MiB)`, MIB / 1024, 'ms'],
    ];
    process.stdout.write(`${'CPU time'.padEnd(40)} ${'CLI'.padStart(9)} ${'agent'.padStart(9)} ${'both'.padStart(9)}   wall (loaded machine)\n`);
    for (const [key, label, units, unit] of per) {
      if (!PHASES.includes(key)) continue;
      const f = phases.get(key);
      if (!f) throw new Error(`the probe reported no ${key} phase`);
      // µs per operation: ms / thousands of operations; ms per GiB: ms / GiB.
      const show = (ms: number): string => `${(ms / units).toFixed(unit === 'µs' ? 1 : 0)} ${unit}`.padStart(9);
      const wall = key === 'down' || key === 'up' ? `${((MIB << 20) / f.wallUs).toFixed(0)} MB/s` : `${(f.wallUs / (units * 1000)).toFixed(0)} µs each`;
      process.stdout.write(`${label.padEnd(40)} ${show(f.cliMs)} ${show(f.agentMs)} ${show(f.cliMs + f.agentMs)}   ${wall}\n`);
    }
  } finally {
    if (PROF_DIR) {
      // A SIGKILLed agent writes no profile: ask it to stop first.
      const gone = new Promise<void>((r) => agent.child.once('exit', () => r()));
      agent.child.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
    }
    await agent.stop();
    await harness.destroy();
  }
}

runBench(main);
