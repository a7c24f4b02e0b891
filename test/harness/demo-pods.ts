/**
 * The demo node: pods `db` and `api` in namespace `default`, both python
 * http.servers on port 8080 (dual stack), `db` serving a page that says
 * `hello from db`, `api` one that says `hello from api`.
 *
 * @module
 */
import { Harness, type Pod, type SrvRecord } from './harness.js';

/** The demo node and its pods. */
export interface DemoNode {
  harness: Harness;
  db: Pod;
  api: Pod;
}

/** Options of {@link buildDemoNode}. */
export interface DemoOptions {
  /** Give the pods IPv6 addresses too (default true). */
  ipv6?: boolean;
  /** Harness label (default `demo`). */
  name?: string;
  /** SRV records the cluster DNS serves (Harness.create's). */
  srvRecords?: readonly SrvRecord[];
}

/** python http.server on `port`, serving /data. */
export function httpServerCommand(port = 8080): string[] {
  return ['/usr/bin/python3', '-m', 'http.server', String(port), '--bind', '::', '--directory', '/data'];
}

/** A python UDP echo server on `port`: each datagram comes back to its sender as `echo:<data>`. */
export function udpEchoCommand(port = 9999): string[] {
  const script = [
    'import socket',
    's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    `s.bind(('0.0.0.0', ${port}))`,
    'while True:',
    '    d, a = s.recvfrom(65535)',
    "    s.sendto(b'echo:' + d, a)",
  ].join('\n');
  return ['/usr/bin/python3', '-c', script];
}

/**
 * Builds the demo node. The caller owns the harness: `await node.harness.destroy()`.
 */
export async function buildDemoNode(opts: DemoOptions = {}): Promise<DemoNode> {
  const harness = await Harness.create({ name: opts.name ?? 'demo', ...(opts.srvRecords ? { srvRecords: opts.srvRecords } : {}) });
  try {
    const ipv6 = opts.ipv6 ?? true;
    const [db, api] = await Promise.all([
      harness.addPod({
        name: 'db',
        namespace: 'default',
        env: { DB_PASSWORD: 'hunter2', DB_NAME: 'shop' },
        command: httpServerCommand(8080),
        files: { '/data/index.html': 'hello from db\n' },
        ipv6,
        readyPort: 8080,
      }),
      harness.addPod({
        name: 'api',
        namespace: 'default',
        env: { DB_URL: 'http://db:8080/', API_MODE: 'demo' },
        command: httpServerCommand(8080),
        files: { '/data/index.html': 'hello from api\n' },
        ipv6,
        readyPort: 8080,
      }),
    ]);
    return { harness, db, api };
  } catch (e) {
    await harness.destroy();
    throw e;
  }
}
