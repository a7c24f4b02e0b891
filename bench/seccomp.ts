/**
 * `npm run bench` (as root): outgoing traffic of programs under the seccomp supervisor,
 * beside the preload path and the same work run directly in the pod, in one run:
 * connect latency (median, p99), small-request round trip, getaddrinfo / LookupHost of a
 * cluster name, and a 1 GiB transfer, for
 * - a CGO_ENABLED=0 Go program (test/e2e/fixtures/go-net `bench`, built here): in the
 *   pod, and under seccomp (the preload does not apply: Go's connects never reach it);
 * - a C program (python3, bench/outgoing.ts's probe): in the pod, under the preload, and
 *   under `--intercept seccomp`: the same work both ways, so the difference is what
 *   seccomp adds per notified call.
 * Goal: seccomp adds at most 30 µs per notified call over the preload; a call that is not
 * notified (the round trip's reads and writes) costs nothing measurable.
 */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness } from '../test/harness/harness.js';
import { repoRoot, run, startAgentProcess, tsmExec } from '../test/e2e/tsm.js';

const PY = '/usr/bin/python3';
const PY_PROBE = `
import socket, time, statistics, json
def pct(xs, p): xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]
ip = socket.gethostbyname('echo'); conn = []
for _ in range(500):
    s = socket.socket(); s.connect((ip, 9001)); s.close()
for _ in range(300):
    s = socket.socket(); t = time.perf_counter(); s.connect((ip, 9001)); conn.append(time.perf_counter() - t); s.close()
s = socket.create_connection(('echo', 9001)); f = s.makefile('rwb'); rtt = []
for _ in range(500):
    f.write(b'x\\n'); f.flush(); f.readline()
for _ in range(1000):
    t = time.perf_counter(); f.write(b'x\\n'); f.flush(); f.readline(); rtt.append(time.perf_counter() - t)
b = socket.create_connection(('echo', 9000)); n = 0; t = time.perf_counter()
while True:
    d = b.recv(1 << 20)
    if not d: break
    n += len(d)
gib_s = time.perf_counter() - t
assert n == 1 << 30, n
dns = []
for _ in range(200):
    t = time.perf_counter(); socket.getaddrinfo('echo.default.svc.cluster.local', 9001); dns.append(time.perf_counter() - t)
print(json.dumps({'connect_median_us': statistics.median(conn) * 1e6, 'connect_p99_us': pct(conn, 0.99) * 1e6,
  'rtt_median_us': statistics.median(rtt) * 1e6, 'getaddrinfo_median_us': statistics.median(dns) * 1e6,
  'gib_transfer_us': gib_s * 1e6}))
`;
const ECHO = `
import socket, threading
def echo(c):
    with c, c.makefile('rwb') as f:
        for line in f: f.write(line); f.flush()
def bulk(c):
    chunk = b'\\0' * (1 << 20)
    with c:
        for _ in range(1024): c.sendall(chunk)
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port)); s.listen(128)
    while True:
        c, _ = s.accept(); threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(9000, bulk), daemon=True).start()
serve(9001, echo)
`;

type Figures = Record<'connect_median_us' | 'connect_p99_us' | 'rtt_median_us' | 'getaddrinfo_median_us' | 'gib_transfer_us', number>;

function figures(what: string, r: { code: number | null; stdout: string; stderr: string }): Figures {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Figures;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'tsm-bench-seccomp-'));
  const harness = await Harness.create({ name: 'benchsc' });
  const agent = await startAgentProcess();
  try {
    const goBin = join(work, 'gonet');
    const env = { ...process.env, GOCACHE: join(tmpdir(), 'tsmirror-test-gocache'), GOPATH: join(work, 'gopath'), GOFLAGS: '', GOPROXY: 'off', CGO_ENABLED: '0' };
    const built = await run('go', ['build', '-o', goBin, '.'], { env, cwd: join(repoRoot, 'test/e2e/fixtures/go-net'), timeoutMs: 300000 });
    if (built.code !== 0) throw new Error(`go build failed: ${built.stderr}`);
    await harness.addPod({ name: 'echo', namespace: 'default', command: [PY, '-c', ECHO], readyPort: 9001 });
    const client = await harness.addPod({ name: 'client', namespace: 'default', command: ['sleep', 'infinity'] });
    copyFileSync(goBin, join(client.dataDir, 'gonet'));
    const target = `pid/${client.pid}`;
    const opts = { timeoutMs: 300000 };

    const columns: [string, Figures][] = [
      ['Go: pod', figures('Go in the pod', await harness.exec(client, ['/data/gonet', 'bench', 'echo'], opts))],
      ['Go: seccomp', figures('Go under seccomp', await tsmExec(agent.url, target, [goBin, 'bench', 'echo'], [], opts))],
      ['C: pod', figures('python in the pod', await harness.exec(client, [PY, '-c', PY_PROBE], opts))],
      ['C: preload', figures('python under the preload', await tsmExec(agent.url, target, [PY, '-c', PY_PROBE], ['--intercept', 'preload'], opts))],
      ['C: seccomp', figures('python under seccomp', await tsmExec(agent.url, target, [PY, '-c', PY_PROBE], ['--intercept', 'seccomp'], opts))],
    ];
    const mbps = (us: number): number => (1 << 30) / 1e6 / (us / 1e6);
    process.stdout.write(`seccomp outgoing (µs)     ${columns.map(([name]) => name.padStart(12)).join('')}\n`);
    const rows: [string, (f: Figures) => number][] = [
      ['connect median', (f) => f.connect_median_us],
      ['connect p99', (f) => f.connect_p99_us],
      ['small-request RTT', (f) => f.rtt_median_us],
      ['getaddrinfo/LookupHost', (f) => f.getaddrinfo_median_us],
      ['1 GiB (MB/s)', (f) => mbps(f.gib_transfer_us)],
    ];
    for (const [label, pick] of rows) process.stdout.write(`${label.padEnd(26)}${columns.map(([, f]) => pick(f).toFixed(0).padStart(12)).join('')}\n`);
    const pre = columns[3]?.[1];
    const sec = columns[4]?.[1];
    if (pre && sec) {
      const connect = sec.connect_median_us - pre.connect_median_us;
      const rtt = sec.rtt_median_us - pre.rtt_median_us;
      process.stdout.write(`goal: seccomp adds at most 30 µs per notified call over preload; non-notified calls cost nothing\n`);
      process.stdout.write(`  connect (notified): seccomp ${connect >= 0 ? '+' : ''}${connect.toFixed(1)} µs over preload ${connect <= 30 ? '(met)' : '(NOT met)'}\n`);
      process.stdout.write(`  round trip (not notified): seccomp ${rtt >= 0 ? '+' : ''}${rtt.toFixed(1)} µs over preload\n`);
    }
  } finally {
    await agent.stop();
    await harness.destroy();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
