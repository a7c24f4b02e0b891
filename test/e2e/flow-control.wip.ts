// WORK IN PROGRESS (not run: not *.test.ts): this transfer stalls today; see the closing note of issue 2.
/**
 * Flow control end to end: 1 GiB from a pod to a local reader that reads slowly keeps
 * the CLI and the agent under 200 MiB RSS each, while a second stream of the same
 * session keeps a fast round trip.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { rssBytes, startAgentProcess, cliPath, type AgentProcess } from './tsm.js';

const PY = '/usr/bin/python3';
// Serves 1 GiB of zeros to each connection on 9000; echoes lines on 9001.
const SERVER = `
import socket, threading
def big(c):
    chunk = b'\\0' * (1 << 20)
    try:
        for _ in range(1024): c.sendall(chunk)
    finally: c.close()
def echo(c):
    f = c.makefile('rwb')
    for line in f:
        f.write(line); f.flush()
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port)); s.listen(16)
    while True:
        c, _ = s.accept(); threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(9001, echo), daemon=True).start()
serve(9000, big)
`;
// The local program: reads the 1 GiB slowly at first, measures echo round trips meanwhile.
const CLIENT = `
import socket, time, sys
big = socket.create_connection(('bulk', 9000))
echo = socket.create_connection(('bulk', 9001))
f = echo.makefile('rwb')
total = 0; rtts = []; start = time.time()
while total < (1 << 30):
    slow = time.time() - start < 6
    d = big.recv(65536 if slow else 1 << 20)
    if not d: break
    total += len(d)
    if slow:
        time.sleep(0.01)
        if len(rtts) < 50:
            t = time.time(); f.write(b'ping\\n'); f.flush(); f.readline(); rtts.append(time.time() - t)
print(total, max(rtts), flush=True)
`;

let harness: Harness;
let bulk: Pod;
let agent: AgentProcess;

beforeAll(async () => {
  harness = await Harness.create({ name: 'flow' });
  bulk = await harness.addPod({ name: 'bulk', namespace: 'default', command: [PY, '-c', SERVER], readyPort: 9001 });
  agent = await startAgentProcess();
});

afterAll(async () => {
  await agent?.stop();
  await harness?.destroy();
});

describe('flow control', () => {
  it('1 GiB to a slow reader: CLI and agent stay under 200 MiB RSS; the other stream stays fast', async () => {
    const cli = spawn(process.execPath, [cliPath, 'exec', '-q', '--agent', agent.url, '--target', `pid/${bulk.pid}`, '--', PY, '-c', CLIENT], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    cli.stdout.on('data', (d: Buffer) => (out += d.toString()));
    cli.stderr.on('data', (d: Buffer) => (err += d.toString()));
    let maxCli = 0;
    let maxAgent = 0;
    const sampler = setInterval(() => {
      void rssBytes(cli.pid ?? 0).then((b) => (maxCli = Math.max(maxCli, b)), () => undefined);
      void rssBytes(agent.child.pid ?? 0).then((b) => (maxAgent = Math.max(maxAgent, b)), () => undefined);
    }, 100);
    const code = await new Promise<number | null>((r) => cli.once('close', r));
    clearInterval(sampler);
    expect(err).toBe('');
    expect(code).toBe(0);
    const [total, maxRtt] = out.trim().split(' ').map(Number);
    expect(total).toBe(1 << 30);
    expect(maxRtt).toBeLessThan(0.5);
    expect(maxCli).toBeLessThan(200 * 1024 * 1024);
    expect(maxAgent).toBeLessThan(200 * 1024 * 1024);
  }, 180000);
});
