/**
 * Tests of the local node harness, against the real kernel (root needed): no mocks.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REGISTRY_DIR, cgroupRoots, listNetns, registryPath } from './cleanup.js';
import { buildDemoNode, httpServerCommand, type DemoNode } from './demo-pods.js';
import { Harness, destroyAllSync, type Pod } from './harness.js';
import { isRunning } from './system.js';

/** Connect from the host; resolves with the error code (or 'connected'). */
function hostConnect(host: string, port: number): Promise<{ code: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.setTimeout(5000, () => {
      s.destroy();
      resolve({ code: 'timeout', ms: Date.now() - t0 });
    });
    s.on('connect', () => {
      s.destroy();
      resolve({ code: 'connected', ms: Date.now() - t0 });
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ code: e.code ?? e.message, ms: Date.now() - t0 }));
  });
}

function hostRoutes(): string {
  const a = spawnSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' }).stdout;
  const b = spawnSync('ip', ['-6', 'route', 'show', 'table', 'all'], { encoding: 'utf8' }).stdout;
  return a + b;
}

/** Everything a harness may leave behind, for "nothing remains" checks. */
function leftovers(h: Harness, pods: readonly Pod[]): string[] {
  const out: string[] = [];
  for (const n of listNetns()) if (n.startsWith(`tsm-${h.id}-`)) out.push(`netns ${n}`);
  const routes = hostRoutes();
  if (routes.includes(`10.244.${h.octet}.`)) out.push(`route ${h.subnet}`);
  if (routes.includes(`fd00:244:${h.octet}:`)) out.push(`route ${h.subnet6}`);
  for (const p of pods) {
    if (isRunning(p.pid)) out.push(`process ${p.pid}`);
    for (const root of cgroupRoots()) {
      const d = path.join(root, p.cgroupPath, '..');
      if (fs.existsSync(d)) out.push(`cgroup ${d}`);
    }
  }
  if (fs.existsSync(h.baseDir)) out.push(`dir ${h.baseDir}`);
  if (fs.existsSync(registryPath(h.id))) out.push(`record ${registryPath(h.id)}`);
  return out;
}

describe('local node harness: demo node', () => {
  let node: DemoNode;

  beforeAll(async () => {
    const t0 = Date.now();
    node = await buildDemoNode();
    // Keep the suite fast: a node with two pods should take well under 5 s.
    expect(Date.now() - t0).toBeLessThan(5000);
  }, 20_000);

  afterAll(async () => {
    const h = node.harness;
    const pods = [...h.pods];
    await h.destroy();
    expect(leftovers(h, pods)).toEqual([]);
  }, 20_000);

  it('gives pods addresses in the harness subnet and a 64-hex container id', () => {
    const { harness: h, db, api } = node;
    expect(h.subnet).toMatch(/^10\.244\.\d{1,3}\.0\/24$/);
    expect(db.ip.startsWith(`10.244.${h.octet}.`)).toBe(true);
    expect(api.ip).not.toBe(db.ip);
    expect(db.ipv6?.startsWith(`fd00:244:${h.octet}::`)).toBe(true);
    expect(db.containerId).toMatch(/^[0-9a-f]{64}$/);
    expect(db.uid.startsWith(h.id)).toBe(true);
    expect(db.netns).toBe(`tsm-${h.id}-default-db`);
    expect(listNetns()).toContain(db.netns);
    expect(db.fqdn).toBe('db.default.svc.cluster.local');
  });

  it('lets pods reach each other by short name and FQDN', async () => {
    const { harness: h, db, api } = node;
    for (const url of ['http://db:8080/', 'http://db.default.svc.cluster.local:8080/', 'http://db.default:8080/']) {
      const r = await h.exec(api, ['curl', '-sS', '--max-time', '5', url]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('hello from db\n');
    }
    const back = await h.exec(db, ['curl', '-sS', '--max-time', '5', 'http://api:8080/']);
    expect(back.stdout).toBe('hello from api\n');
  });

  it('lets pods talk IPv6', async () => {
    const { harness: h, db, api } = node;
    const r = await h.exec(api, ['curl', '-sS', '-g', '--max-time', '5', `http://[${db.ipv6 ?? ''}]:8080/`]);
    expect(r.stdout).toBe('hello from db\n');
    const aaaa = await h.exec(api, ['getent', 'ahostsv6', 'db']);
    expect(aaaa.stdout).toContain(db.ipv6 ?? 'none');
  });

  it('answers cluster DNS: search domains, PTR, fast NXDOMAIN for unknown names', async () => {
    const { harness: h, db, api } = node;
    const a = await h.exec(api, ['getent', 'ahostsv4', 'db']);
    expect(a.stdout).toContain(`${db.ip}`);
    expect(a.stdout).toContain('db.default.svc.cluster.local');
    const ptr = await h.exec(api, ['getent', 'hosts', db.ip]);
    expect(ptr.stdout.trim().split(/\s+/)).toEqual([db.ip, 'db.default.svc.cluster.local']);
    const podRecord = await h.exec(api, ['getent', 'ahostsv4', `${db.ip.replace(/\./g, '-')}.default.pod.cluster.local`]);
    expect(podRecord.stdout).toContain(db.ip);
    for (const name of ['nope', 'nope.default.svc.cluster.local', 'example.com']) {
      const t0 = Date.now();
      const r = await h.exec(api, ['getent', 'hosts', name]);
      expect(r.code).toBe(2); // not found
      expect(Date.now() - t0).toBeLessThan(1500);
    }
    const nx = await h.exec(api, ['busybox', 'nslookup', 'nope.default.svc.cluster.local', h.dnsIp]);
    expect(nx.stdout + nx.stderr).toContain('NXDOMAIN');
  });

  it('does not let the host reach a pod address (unreachable route)', async () => {
    const { harness: h, db } = node;
    expect(hostRoutes()).toMatch(new RegExp(`unreachable 10\\.244\\.${h.octet}\\.0/24 proto 244`));
    const v4 = await hostConnect(db.ip, 8080);
    expect(['EHOSTUNREACH', 'ENETUNREACH']).toContain(v4.code);
    expect(v4.ms).toBeLessThan(1000);
    const v6 = await hostConnect(db.ipv6 ?? '', 8080);
    expect(['EHOSTUNREACH', 'ENETUNREACH']).toContain(v6.code);
    expect(v6.ms).toBeLessThan(1000);
    // And the pod has no way out either: no default route.
    const r = await node.harness.exec(db, ['ip', 'route']);
    expect(r.stdout).not.toContain('default');
  });

  it("shows the pod's own resolv.conf, hosts, hostname, /data and environment", async () => {
    const { harness: h, db } = node;
    const root = `/proc/${db.pid}/root`;
    expect(fs.readFileSync(`${root}/etc/resolv.conf`, 'utf8')).toBe(
      `search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver ${h.dnsIp}\noptions ndots:5\n`,
    );
    expect(fs.readFileSync(`${root}/etc/hostname`, 'utf8')).toBe('db\n');
    expect(fs.readFileSync(`${root}/etc/hosts`, 'utf8')).toMatch(new RegExp(`^${db.ip.replace(/\./g, '\\.')}\\tdb$`, 'm'));
    expect(fs.readFileSync(`${root}/data/index.html`, 'utf8')).toBe('hello from db\n');
    expect(fs.existsSync('/data/index.html')).toBe(false); // only in the pod's mount namespace
    const environ = fs.readFileSync(`/proc/${db.pid}/environ`, 'utf8').split('\0').filter((s) => s !== '');
    expect(environ.sort()).toEqual(Object.entries(db.env).map(([k, v]) => `${k}=${v}`).sort());
    expect(db.env['DB_PASSWORD']).toBe('hunter2');
    expect(Object.keys(db.env).sort()).toEqual(['DB_NAME', 'DB_PASSWORD', 'PATH']);
    // The pid is the server itself, PID 1 of its pid namespace.
    expect(fs.readFileSync(`/proc/${db.pid}/cmdline`, 'utf8').split('\0')).toEqual([...httpServerCommand(8080), '']);
    expect(fs.readFileSync(`/proc/${db.pid}/status`, 'utf8')).toMatch(/^NSpid:\s+\d+\s+1$/m);
    // exec sees the same view, the UTS hostname and the pod's environment.
    const r = await h.exec(db, ['sh', '-c', 'hostname; cat /etc/hostname /data/index.html; echo "$DB_NAME"']);
    expect(r.stdout).toBe('db\ndb\nhello from db\nshop\n');
  });

  it('puts the pod process in a kubelet-style cgroup holding the container id', () => {
    const { db } = node;
    const cg = fs.readFileSync(`/proc/${db.pid}/cgroup`, 'utf8');
    expect(db.cgroupPath).toBe(`/kubepods/besteffort/pod${db.uid}/${db.containerId}`);
    expect(cg).toContain(db.cgroupPath);
    // v1 pids hierarchy (hybrid machines) or the v2 one.
    expect(cg).toMatch(new RegExp(`^\\d+:(pids|):${db.cgroupPath.replace(/\//g, '\\/')}$`, 'm'));
    // The agent's way of finding it: scan /proc/*/cgroup for the id.
    const found = fs
      .readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e))
      .filter((e) => {
        try {
          return fs.readFileSync(`/proc/${e}/cgroup`, 'utf8').includes(db.containerId);
        } catch {
          return false;
        }
      })
      .map(Number);
    expect(found).toEqual([db.pid]);
  });

  it('runs PostgreSQL 15 reachable from another pod', async () => {
    const { harness: h, api } = node;
    const pg = await h.addPostgres({ name: 'pg', namespace: 'default' });
    const r = await h.exec(api, ['psql', '-h', 'pg', '-U', 'postgres', '-tAc', 'select 1']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('1\n');
    const byIp = await h.exec(api, ['psql', '-h', pg.ip, '-U', 'postgres', '-tAc', 'select current_user']);
    expect(byIp.stdout).toBe('postgres\n');
    expect(fs.readFileSync(`/proc/${pg.pid}/cgroup`, 'utf8')).toContain(pg.containerId);
    expect(fs.readFileSync(`/proc/${pg.pid}/status`, 'utf8')).toMatch(/^Uid:\s+(\d+)/m);
    expect(/^Uid:\s+0\s/m.test(fs.readFileSync(`/proc/${pg.pid}/status`, 'utf8'))).toBe(false);
  }, 60_000);
});

describe('local node harness: lifecycle and cleanup', () => {
  it('removes a pod and its DNS name', async () => {
    const h = await Harness.create({ name: 'remove-pod' });
    try {
      const [a, b] = await Promise.all([
        h.addPod({ name: 'a', command: ['sleep', 'infinity'] }),
        h.addPod({ name: 'b', namespace: 'other', command: ['sleep', 'infinity'] }),
      ]);
      expect((await h.exec(a, ['getent', 'hosts', 'b.other'])).stdout).toContain(b.ip);
      expect((await h.exec(b, ['getent', 'hosts', 'a.default.svc.cluster.local'])).stdout).toContain(a.ip);
      const t0 = Date.now();
      const slow = await h.exec(a, ['sleep', '30'], { timeoutMs: 200 });
      expect(slow.signal).toBe('SIGKILL');
      expect(Date.now() - t0).toBeLessThan(2000);
      await h.removePod(b);
      expect(isRunning(b.pid)).toBe(false);
      expect(listNetns()).not.toContain(b.netns);
      expect((await h.exec(a, ['getent', 'hosts', 'b.other'])).code).toBe(2);
      expect(h.pods.map((p) => p.name)).toEqual(['a']);
    } finally {
      await h.destroy();
    }
  }, 20_000);

  it("a pod's mounts are in place when addPod returns (40 pods, each used at once)", async () => {
    // addPod used to take an empty /proc/<pid>/environ, read while the init was in its
    // execve, for the command having started: a command run in the pod at once then found
    // no /data (3 of 40 here), and a pod whose command does not exist could resolve.
    const h = await Harness.create({ name: 'mounts-ready' });
    try {
      const missing: number[] = [];
      for (let i = 0; i < 40; i++) {
        const pod = await h.addPod({ name: `p${i}`, command: ['sleep', 'infinity'], files: { '/data/x': 'x' } });
        if ((await h.exec(pod, ['cat', '/data/x'])).stdout !== 'x') missing.push(i);
        await h.removePod(pod);
      }
      expect(missing).toEqual([]);
    } finally {
      await h.destroy();
    }
  }, 120_000);

  it('reports a pod that fails to start, with its stderr, and cleans it up', async () => {
    const h = await Harness.create({ name: 'bad-pod' });
    try {
      await expect(h.addPod({ name: 'bad', command: ['/nonexistent/binary'] })).rejects.toThrow(/nonexistent/);
      expect(listNetns().filter((n) => n.startsWith(`tsm-${h.id}-default-`))).toEqual([]);
    } finally {
      await h.destroy();
    }
  }, 20_000);

  it('destroy() removes everything and is idempotent', async () => {
    const h = await Harness.create({ name: 'destroy' });
    const pod = await h.addPod({ name: 'x', command: ['sleep', 'infinity'], ipv6: true });
    const probe = h.exec(pod, ['sleep', '30']); // a running exec must not survive either
    await new Promise((r) => setTimeout(r, 50));
    expect(leftovers(h, [pod]).length).toBeGreaterThan(0);
    await h.destroy();
    await h.destroy();
    expect(leftovers(h, [pod])).toEqual([]);
    expect((await probe).signal).toBe('SIGKILL');
  }, 20_000);

  it('sweep() removes the leftovers of a harness whose owner died', async () => {
    const h = await Harness.create({ name: 'orphan' });
    const pod = await h.addPod({ name: 'x', command: ['sleep', 'infinity'] });
    // Pretend the owner died: point the record at a pid that no longer exists.
    const dead = spawnSync('true').pid ?? 999_999;
    const rec = JSON.parse(fs.readFileSync(registryPath(h.id), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(registryPath(h.id), JSON.stringify({ ...rec, ownerPid: dead }));
    const report = Harness.sweep();
    // (When other harness processes run at the same time, their create() may sweep it first.)
    if (report.harnesses.includes(h.id)) expect(report.processes).toContain(pod.pid);
    expect(leftovers(h, [pod])).toEqual([]);
    await h.destroy(); // still safe
  }, 20_000);

  it('tears down synchronously, as the exit and signal hooks do', async () => {
    const h = await Harness.create({ name: 'exit-hook' });
    const pod = await h.addPod({ name: 'x', command: ['sleep', 'infinity'] });
    const probe = h.exec(pod, ['sleep', '30']);
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    destroyAllSync();
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(leftovers(h, [pod])).toEqual([]);
    expect((await probe).signal).toBe('SIGKILL');
    await h.destroy();
  }, 20_000);

  it('leaves no registry behind', () => {
    const mine = fs.existsSync(REGISTRY_DIR) ? fs.readdirSync(REGISTRY_DIR) : [];
    const ownedHere = mine.filter((f) => {
      try {
        return (JSON.parse(fs.readFileSync(path.join(REGISTRY_DIR, f), 'utf8')) as { ownerPid?: number }).ownerPid === process.pid;
      } catch {
        return false;
      }
    });
    expect(ownedHere).toEqual([]);
  });
});
