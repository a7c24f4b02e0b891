/**
 * The network probe and the pod-side echo server that the outgoing and seccomp benches share:
 * the probe prints connect, round-trip, getaddrinfo and 1 GiB figures as JSON.
 */
export const PY = '/usr/bin/python3';
export const NET_PROBE = `
import socket, time, statistics, json
def pct(xs, p): xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]
ip = socket.gethostbyname('echo'); conn = []
for _ in range(500):  # warm-up, not measured: tsmirror's code paths get compiled
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
dns4 = []
for _ in range(200):
    t = time.perf_counter(); socket.getaddrinfo('echo', 9001, socket.AF_INET); dns4.append(time.perf_counter() - t)
print(json.dumps({'connect_median_us': statistics.median(conn) * 1e6, 'connect_p99_us': pct(conn, 0.99) * 1e6,
  'rtt_median_us': statistics.median(rtt) * 1e6, 'getaddrinfo_median_us': statistics.median(dns) * 1e6,
  'getaddrinfo_short_v4_median_us': statistics.median(dns4) * 1e6,
  'gib_transfer_us': gib_s * 1e6}))
`;
// The accept queue is deep: in the pod, 800 connects in a row (12 µs each) outrun python's
// accept loop, and a full queue of 128 dropped SYNs (a 1 s retransmit: the pod column's p99).
// Echoes lines on 9001; sends 1 GiB to each connection on 9000; on 9002 reads to the end and answers the byte count.
export const ECHO = `
import socket, threading
def echo(c):
    with c, c.makefile('rwb') as f:
        for line in f: f.write(line); f.flush()
def bulk(c):
    chunk = b'\\0' * (1 << 20)
    with c:
        for _ in range(1024): c.sendall(chunk)
def sink(c):
    n = 0
    with c:
        while True:
            d = c.recv(1 << 20)
            if not d: break
            n += len(d)
        c.sendall(str(n).encode())
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', port)); s.listen(1024)
    while True:
        c, _ = s.accept(); threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(9000, bulk), daemon=True).start()
threading.Thread(target=serve, args=(9002, sink), daemon=True).start()
serve(9001, echo)
`;

/** The JSON a probe printed, or an error naming the probe and its stderr. */
export function probeFigures<T>(what: string, r: { code: number | null; stdout: string; stderr: string }): T {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}
