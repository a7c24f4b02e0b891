/**
 * `npm run bench` (as root): pod files under tsmirror against the same operation run
 * inside the pod's mount namespace (nsenter -m), in one run: open+read+close of a 4 KiB
 * file (µs per operation), sequential read of a 1 GiB file (MB/s), 4 KiB random reads in
 * a 2 GiB file (ops/s), and listing a directory of 10,000 entries (ms).
 */
import { closeSync, ftruncateSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Harness } from '../test/harness/harness.js';
import { startAgentProcess, tsmExec } from '../test/e2e/tsm.js';
import { goalTable } from './goals.js';

const PY = '/usr/bin/python3';
const PROBE = `
import os, time, random, json
t = time.perf_counter(); n = 2000
for _ in range(n):
    fd = os.open('/data/small.bin', os.O_RDONLY); os.read(fd, 4096); os.close(fd)
small_us = (time.perf_counter() - t) / n * 1e6
fd = os.open('/data/seq.bin', os.O_RDONLY); t = time.perf_counter(); total = 0
while True:
    d = os.read(fd, 1 << 20)
    if not d: break
    total += len(d)
seq_s = time.perf_counter() - t; os.close(fd)
assert total == 1 << 30, total
fd = os.open('/data/random.bin', os.O_RDONLY); rnd = random.Random(7); m = 2000
t = time.perf_counter()
for _ in range(m):
    os.pread(fd, 4096, rnd.randrange(0, (2 << 30) - 4096))
rand_s = time.perf_counter() - t; os.close(fd)
t = time.perf_counter(); names = os.listdir('/data/dir'); list_ms = (time.perf_counter() - t) * 1e3
assert len(names) == 10000, len(names)
print(json.dumps({'open_read_close_4k_us': small_us, 'seq_1gib_mb_s': (1 << 30) / 1e6 / seq_s,
  'random_4k_ops_s': m / rand_s, 'list_10000_ms': list_ms}))
`;
import { runBench } from './run.js';

async function main(): Promise<void> {
  const harness = await Harness.create({ name: 'benchfs' });
  const agent = await startAgentProcess();
  try {
    const pod = await harness.addPod({ name: 'files', namespace: 'default', command: ['sleep', 'infinity'] });
    writeFileSync(join(pod.dataDir, 'small.bin'), randomBytes(4096));
    const chunk = randomBytes(1 << 20);
    const seq = openSync(join(pod.dataDir, 'seq.bin'), 'w');
    for (let i = 0; i < 1024; i++) writeSync(seq, chunk);
    closeSync(seq);
    const sparse = openSync(join(pod.dataDir, 'random.bin'), 'w');
    ftruncateSync(sparse, 2 * 1024 ** 3);
    for (let i = 0; i < 2048; i++) writeSync(sparse, chunk, 0, 4096, i * 1024 * 1024);
    closeSync(sparse);
    mkdirSync(join(pod.dataDir, 'dir'));
    for (let i = 0; i < 10000; i++) writeFileSync(join(pod.dataDir, 'dir', `entry-${i}`), '');

    const directRun = await harness.exec(pod, [PY, '-c', PROBE], { timeoutMs: 300000 });
    if (directRun.code !== 0) throw new Error(`probe in the pod failed: ${directRun.stderr}`);
    const tsmRun = await tsmExec(agent.url, `pid/${pod.pid}`, [PY, '-c', PROBE], ['--verbose'], { timeoutMs: 300000 });
    if (tsmRun.code !== 0) throw new Error(`probe under tsmirror failed: ${tsmRun.stderr}`);
    const direct = JSON.parse(directRun.stdout) as Record<string, number>;
    const viaTsm = JSON.parse(tsmRun.stdout) as Record<string, number>;
    const rows: Array<[string, string, string, boolean]> = [
      ['open_read_close_4k_us', 'open+read+close 4 KiB', 'µs/op', false],
      ['seq_1gib_mb_s', 'sequential 1 GiB read', 'MB/s', true],
      ['random_4k_ops_s', '4 KiB random reads, 2 GiB', 'ops/s', true],
      ['list_10000_ms', 'list 10,000 entries', 'ms', false],
    ];
    process.stdout.write('files metric                 in the pod (nsenter)      tsmirror   ratio\n');
    for (const [key, label, unit, higherIsBetter] of rows) {
      const d = direct[key] ?? 0;
      const m = viaTsm[key] ?? 0;
      const ratio = higherIsBetter ? d / m : m / d;
      process.stdout.write(`${label.padEnd(28)} ${d.toFixed(1).padStart(12)} ${unit.padEnd(6)} ${m.toFixed(1).padStart(10)} ${unit.padEnd(6)} ${ratio.toFixed(1).padStart(6)}x ${higherIsBetter ? 'slower' : 'longer'}\n`);
    }
    const counters = /tsmirror: (\d+ files read from the pod.*)/.exec(tsmRun.stderr)?.[1];
    if (counters) process.stdout.write(`(tsmirror: ${counters})\n`);
    process.stdout.write(goalTable('files', [
      { what: 'open+read+close 4 KiB', value: viaTsm.open_read_close_4k_us ?? 0, unit: 'µs', limit: 100, kind: 'atMost', rule: 'absolute' },
      { what: 'sequential 1 GiB read', value: viaTsm.seq_1gib_mb_s ?? 0, unit: 'MB/s', limit: 1000, kind: 'atLeast', rule: 'absolute' },
    ]));
  } finally {
    await agent.stop();
    await harness.destroy();
  }
}

runBench(main);
