/**
 * Bulk transfers through the session: a fast 200 MB download arrives intact, and 1 GiB
 * sent faster than a slow local reader takes it keeps the CLI and the agent under
 * 200 MiB RSS (each stream's window bounds what is buffered) while a second stream of
 * the same session keeps a fast round trip.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { cliPath, peakRss, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

const PY = '/usr/bin/python3';
const MiB = 1024 * 1024;

// Port 8080: files from /data. Port 9000: 1 GiB of zeros, as fast as the window allows.
// Port 9001: echoes lines.
const SERVER = `
import socket, threading, http.server, functools
def bulk(c):
    chunk = b'\\0' * (1 << 20)
    with c:
        for _ in range(1024): c.sendall(chunk)
def echo(c):
    with c, c.makefile('rwb') as f:
        for line in f:
            f.write(line); f.flush()
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port)); s.listen(16)
    while True:
        c, _ = s.accept(); threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(9000, bulk), daemon=True).start()
threading.Thread(target=serve, args=(9001, echo), daemon=True).start()
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory='/data')
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), handler).serve_forever()
`;

// The local program: for its first 6 s it reads 64 KiB every 10 ms (about 6 MB/s, far
// slower than the pod sends) and times 50 echo round trips on a second connection;
// then it reads the rest as fast as it can. Prints bytes read and the slowest round trip.
const SLOW_READER = `
import socket, time
bulk = socket.create_connection(('big', 9000))
echo = socket.create_connection(('big', 9001))
f = echo.makefile('rwb')
total = 0; rtts = []; start = time.time()
while True:
    slow = time.time() - start < 6
    d = bulk.recv(65536 if slow else 1 << 20)
    if not d: break
    total += len(d)
    if slow:
        time.sleep(0.01)
        if len(rtts) < 50:
            t = time.time(); f.write(b'ping\\n'); f.flush(); assert f.readline() == b'ping\\n'; rtts.append(time.time() - t)
print(total, len(rtts), max(rtts), flush=True)
`;

let harness: Harness;
let big: Pod;
let agent: AgentProcess;

beforeAll(async () => {
  harness = await Harness.create({ name: 'bulk' });
  big = await harness.addPod({ name: 'big', namespace: 'default', command: [PY, '-c', SERVER], files: { '/data/ready': 'y' }, readyPort: 8080 });
  await harness.exec(big, ['sh', '-c', 'head -c 200000000 /dev/urandom > /data/big && sha256sum /data/big > /data/big.sum']);
  agent = await startAgentProcess();
});

afterAll(() => stopAll({ agent, harness }));

describe('bulk transfers', () => {
  it('a 200 MB download through the pod arrives intact', async () => {
    const want = (await harness.exec(big, ['cat', '/data/big.sum'])).stdout.split(' ')[0];
    const r = await tsmExec(agent.url, `pid/${big.pid}`, ['sh', '-c', 'curl -sS http://big:8080/big | sha256sum'], [], { timeoutMs: 60000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.split(' ')[0]).toBe(want);
  }, 90000);

  it('1 GiB to a slow reader: CLI and agent stay under 200 MiB RSS, and a second stream stays fast', async () => {
    const cli = spawn(process.execPath, [cliPath, 'exec', '-q', '--agent', agent.url, '--target', `pid/${big.pid}`, '--', PY, '-c', SLOW_READER], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    cli.stdout.on('data', (d: Buffer) => (out += d.toString()));
    cli.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const rss = peakRss([cli.pid ?? 0, agent.child.pid ?? 0]);
    const timer = setTimeout(() => cli.kill('SIGKILL'), 150000);
    const code = await new Promise<number | null>((r) => cli.once('close', r));
    clearTimeout(timer);
    const [maxCli = 0, maxAgent = 0] = rss.stop();
    expect(err).toBe('');
    expect(code).toBe(0);
    const [total, rtts, maxRtt] = out.trim().split(' ').map(Number);
    expect(total).toBe(1024 * MiB);
    expect(rtts).toBe(50);
    expect(maxRtt).toBeLessThan(0.25);
    expect(maxCli).toBeGreaterThan(0);
    expect(maxCli).toBeLessThan(200 * MiB);
    expect(maxAgent).toBeGreaterThan(0);
    expect(maxAgent).toBeLessThan(200 * MiB);
  }, 180000);
});
