/**
 * `npm run bench` (as root): what a UDP or TCP receive costs a program under the seccomp
 * supervisor when nothing was relayed for its socket (issue 12). UDP sockets are placed in
 * a window of descriptor numbers, and recvfrom (with a source buffer), recvmsg and
 * recvmmsg are notified only there (native/supervisor/udpwindow.c): a TCP receive must
 * cost what it costs without tsmirror; a UDP receive on a socket with nothing relayed is
 * a notification continued by the kernel. bench/udp-recv-probe.c (built here, static
 * musl) measures each, with MSG_DONTWAIT on an empty socket, in µs per call (median of
 * batches: noisy on a loaded machine) and in context switches per call (load-
 * independent: about 1 for a notified call, 0 for one the filter lets through): without
 * tsmirror, under seccomp before any relayed flow, and after one (a datagram to a pod);
 * and socket() + close() of a UDP socket (notified: placed in the window) and a TCP one.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness } from '../test/harness/harness.js';
import { udpEchoCommand } from '../test/harness/demo-pods.js';
import { repoRoot, run, startAgentProcess, stopAll, tsmExec } from '../test/e2e/tsm.js';
import { runBench } from './run.js';

const MUSL_GCC = '/usr/bin/musl-gcc';
type Probe = Record<'udp_recvfrom' | 'udp_recvmsg' | 'tcp_recvfrom' | 'tcp_recvmsg' | 'udp_socket' | 'tcp_socket', { us: number; switches: number; fd: number }>;

function parse(what: string, r: { code: number | null; stdout: string; stderr: string }): Probe {
  if (r.code !== 0) throw new Error(`${what}: exit ${String(r.code)}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Probe;
}

async function main(): Promise<void> {
  if (!existsSync(MUSL_GCC)) throw new Error('seccomp-udp bench: musl-gcc is missing (Debian: musl-tools)');
  const work = mkdtempSync(join(tmpdir(), 'tsm-bench-seccomp-udp-'));
  const harness = await Harness.create({ name: 'benchudp' });
  const agent = await startAgentProcess();
  try {
    const probe = join(work, 'udp-recv-probe');
    const built = await run(MUSL_GCC, ['-static', '-O2', '-Wall', '-o', probe, join(repoRoot, 'bench/udp-recv-probe.c')]);
    if (built.code !== 0) throw new Error(`musl-gcc failed: ${built.stderr}`);
    const echo = await harness.addPod({ name: 'udp', namespace: 'default', command: udpEchoCommand(9999) });
    const client = await harness.addPod({ name: 'client', namespace: 'default', command: ['sleep', 'infinity'] });
    const target = `pid/${client.pid}`;
    const opts = { timeoutMs: 300000 };
    const columns: [string, Probe][] = [
      ['no tsmirror', parse('the probe alone', await run(probe, []))],
      ['seccomp', parse('the probe under seccomp', await tsmExec(agent.url, target, [probe], [], opts))],
      ['seccomp, relayed', parse('the probe under seccomp after a relayed datagram', await tsmExec(agent.url, target, [probe, echo.ip, '9999'], [], opts))],
    ];
    process.stdout.write(`seccomp receives, nothing relayed on the socket; socket()+close() (µs per call / context switches per call)\n`);
    process.stdout.write(`${''.padEnd(26)}${columns.map(([name]) => name.padStart(20)).join('')}\n`);
    for (const key of ['udp_recvfrom', 'udp_recvmsg', 'tcp_recvfrom', 'tcp_recvmsg', 'udp_socket', 'tcp_socket'] as const) {
      const cells = columns.map(([, p]) => `${p[key].us.toFixed(1)} / ${p[key].switches.toFixed(2)}`.padStart(20));
      process.stdout.write(`${key.replace('_', ' ').padEnd(26)}${cells.join('')}\n`);
    }
    const tcp = columns.slice(1).every(([, p]) => p.tcp_recvfrom.switches < 0.05 && p.tcp_recvmsg.switches < 0.05);
    process.stdout.write(`goal: a TCP receive is never notified (no context switch per call): ${tcp ? 'met' : 'NOT met'}\n`);
  } finally {
    await stopAll({ agent, harness, dirs: [work] });
  }
}

runBench(main);
