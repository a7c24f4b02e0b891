/**
 * Bookkeeping and teardown of the local node harness.
 *
 * Every resource a harness makes can be found again from its 8-hex id alone,
 * so a harness can be removed even when the process that made it died:
 *
 * | resource        | name                                                            |
 * |-----------------|-----------------------------------------------------------------|
 * | registry record | `/run/tsmirror-harness/<id>.json` (owner pid + start time)      |
 * | netns           | `tsm-<id>-*` (switch, dns, one per pod)                         |
 * | processes       | every process in one of those netns (pods, dnsmasq, execs)      |
 * | cgroups         | `<hierarchy>/kubepods/besteffort/pod<id>-…/<container id>`      |
 * | host routes     | `unreachable 10.244.<octet>.0/24` and `fd00:244:<octet>::/64`, `proto 244` |
 * | temp dir        | `$TMPDIR/tsmirror-harness-<id>-*`                               |
 *
 * The registry record is written before any other resource exists and removed
 * last, so a resource whose id has no record is an orphan.
 *
 * @module
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  isRunning,
  killQuiet,
  processStartTime,
  readOrUndefined,
  runSync,
  sleepSync,
  writeFileAtomic,
} from './system.js';

/** Where harnesses record themselves. */
export const REGISTRY_DIR = '/run/tsmirror-harness';
/** Routing protocol number marking the harness's host routes (`ip route show proto 244`). */
export const ROUTE_PROTO = '244';
/** Prefix of every harness netns name. */
export const NETNS_PREFIX = 'tsm-';
/** Prefix of every harness temp dir (inside os.tmpdir()). */
export const TMPDIR_PREFIX = 'tsmirror-harness-';
/** kubelet's cgroup parent for BestEffort pods (cgroupfs driver). */
export const KUBEPODS = ['kubepods', 'besteffort'] as const;

const ID_RE = /^[0-9a-f]{8}$/;

/** What a harness writes to the registry. */
export interface RegistryRecord {
  version: 1;
  id: string;
  name: string;
  ownerPid: number;
  /** `/proc/<ownerPid>/stat` start time, so a reused pid is not taken for the owner. */
  ownerStart: string;
  /** Third octet of 10.244.X.0/24 once claimed (claimed before the route is added). */
  octet: number | null;
  baseDir: string | null;
  createdAt: string;
}

/** What {@link teardownSync} and {@link sweepSync} removed. */
export interface CleanupReport {
  harnesses: string[];
  processes: number[];
  netns: string[];
  cgroups: string[];
  routes: string[];
  dirs: string[];
}

export function emptyReport(): CleanupReport {
  return { harnesses: [], processes: [], netns: [], cgroups: [], routes: [], dirs: [] };
}

export function registryPath(id: string): string {
  return path.join(REGISTRY_DIR, `${id}.json`);
}

export function writeRecord(rec: RegistryRecord): void {
  writeFileAtomic(registryPath(rec.id), `${JSON.stringify(rec, null, 2)}\n`);
}

export function readRecords(): RegistryRecord[] {
  let names: string[];
  try {
    names = fs.readdirSync(REGISTRY_DIR);
  } catch {
    return [];
  }
  const out: RegistryRecord[] = [];
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    const s = readOrUndefined(path.join(REGISTRY_DIR, n));
    if (s === undefined) continue;
    try {
      const v: unknown = JSON.parse(s);
      if (isRecord(v)) out.push(v);
    } catch {
      /* half-written by a crashed writer: its id is swept as an orphan */
    }
  }
  return out;
}

function isRecord(v: unknown): v is RegistryRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    r['version'] === 1 &&
    typeof r['id'] === 'string' &&
    ID_RE.test(r['id']) &&
    typeof r['ownerPid'] === 'number' &&
    typeof r['ownerStart'] === 'string' &&
    (r['octet'] === null || typeof r['octet'] === 'number') &&
    (r['baseDir'] === null || typeof r['baseDir'] === 'string')
  );
}

/** True when the process that made the record still runs. */
export function ownerAlive(rec: RegistryRecord): boolean {
  return isRunning(rec.ownerPid) && processStartTime(rec.ownerPid) === rec.ownerStart;
}

/** Cgroup hierarchies that can hold a pod: every v1 hierarchy and the v2 one (or the single v2 root). */
export function cgroupRoots(): string[] {
  const base = '/sys/fs/cgroup';
  if (fs.existsSync(path.join(base, 'cgroup.procs'))) return [base];
  const out: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(base);
  } catch {
    return out;
  }
  for (const n of names.sort()) {
    const p = path.join(base, n);
    try {
      if (!fs.lstatSync(p).isDirectory()) continue; // skip cpu -> cpu,cpuacct style links
    } catch {
      continue;
    }
    if (fs.existsSync(path.join(p, 'cgroup.procs'))) out.push(p);
  }
  return out;
}

/** Names of all netns in /run/netns. */
export function listNetns(): string[] {
  try {
    return fs.readdirSync('/run/netns');
  } catch {
    return [];
  }
}

/** Ids owning netns named tsm-<id>-…. */
function idsOfNetns(names: readonly string[]): Set<string> {
  const ids = new Set<string>();
  for (const n of names) {
    const m = /^tsm-([0-9a-f]{8})-/.exec(n);
    if (m?.[1] !== undefined) ids.add(m[1]);
  }
  return ids;
}

/** `<root>/kubepods/besteffort/pod<id>-…` directories, by id. */
function podCgroupDirs(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const root of cgroupRoots()) {
    const dir = path.join(root, ...KUBEPODS);
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      const m = /^pod([0-9a-f]{8})-[0-9a-f-]+$/.exec(n);
      if (m?.[1] === undefined) continue;
      const list = out.get(m[1]) ?? [];
      list.push(path.join(dir, n));
      out.set(m[1], list);
    }
  }
  return out;
}

/** Harness temp dirs, by id. */
function tmpDirs(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let names: string[];
  try {
    names = fs.readdirSync(os.tmpdir());
  } catch {
    return out;
  }
  for (const n of names) {
    const m = /^tsmirror-harness-([0-9a-f]{8})-/.exec(n);
    if (m?.[1] === undefined) continue;
    const list = out.get(m[1]) ?? [];
    list.push(path.join(os.tmpdir(), n));
    out.set(m[1], list);
  }
  return out;
}

interface HarnessRoute {
  family: '-4' | '-6';
  dst: string;
  octet: number;
}

/** Host routes marked `proto 244` that look like a harness subnet. */
function harnessRoutes(): HarnessRoute[] {
  const out: HarnessRoute[] = [];
  for (const family of ['-4', '-6'] as const) {
    const r = runSync('ip', ['-j', family, 'route', 'show', 'proto', ROUTE_PROTO]);
    if (r.code !== 0) continue;
    let list: unknown;
    try {
      list = JSON.parse(r.stdout || '[]');
    } catch {
      continue;
    }
    if (!Array.isArray(list)) continue;
    for (const e of list as unknown[]) {
      if (typeof e !== 'object' || e === null) continue;
      const dst = (e as Record<string, unknown>)['dst'];
      if (typeof dst !== 'string') continue;
      const m = family === '-4' ? /^10\.244\.(\d{1,3})\.0\/24$/.exec(dst) : /^fd00:244:(\d{1,3})::\/64$/.exec(dst);
      if (m?.[1] !== undefined) out.push({ family, dst, octet: Number(m[1]) });
    }
  }
  return out;
}

/** The host routes of a harness subnet. */
export function subnetRoutes(octet: number): { v4: string; v6: string } {
  return { v4: `10.244.${octet}.0/24`, v6: `fd00:244:${octet}::/64` };
}

function deleteRoute(family: '-4' | '-6', dst: string): boolean {
  return runSync('ip', [family, 'route', 'del', 'unreachable', dst, 'proto', ROUTE_PROTO]).code === 0;
}

/** (dev, inode) key of a namespace file. */
function nsKey(p: string): string | undefined {
  try {
    const st = fs.statSync(p);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** Pids of all processes whose network namespace is one of `netnsNames`. */
export function pidsInNetns(netnsNames: readonly string[]): number[] {
  const keys = new Set<string>();
  for (const n of netnsNames) {
    const k = nsKey(`/run/netns/${n}`);
    if (k !== undefined) keys.add(k);
  }
  if (keys.size === 0) return [];
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const k = nsKey(`/proc/${e}/ns/net`);
    if (k !== undefined && keys.has(k)) out.push(Number(e));
  }
  return out;
}

function cgroupPids(dir: string): number[] {
  const s = readOrUndefined(path.join(dir, 'cgroup.procs')) ?? '';
  return s
    .split('\n')
    .filter((l) => l !== '')
    .map(Number);
}

/** Child directories (not files) of a cgroup directory. */
function subCgroups(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => path.join(dir, d.name));
  } catch {
    return [];
  }
}

/** rmdir with retries (a cgroup stays busy for a moment after its last task died). */
export function rmdirRetry(dir: string, timeoutMs = 3000): boolean {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      fs.rmdirSync(dir);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return false;
      if (code !== 'EBUSY' || Date.now() > deadline) return false;
      for (const p of cgroupPids(dir)) killQuiet(p, 'SIGKILL');
      sleepSync(10);
    }
  }
}

/** Removes a pod's cgroup dir (and its container dirs) in one hierarchy. */
export function removePodCgroup(podDir: string): boolean {
  for (const c of subCgroups(podDir)) rmdirRetry(c);
  return rmdirRetry(podDir);
}

/** Removes kubepods/besteffort and kubepods when empty (shared with other harnesses: EBUSY/ENOTEMPTY are fine). */
export function pruneKubepods(): void {
  for (const root of cgroupRoots()) {
    for (let i = KUBEPODS.length; i > 0; i--) {
      try {
        fs.rmdirSync(path.join(root, ...KUBEPODS.slice(0, i)));
      } catch {
        break;
      }
    }
  }
}

/**
 * SIGKILLs every process in the given netns, in two rounds: first those inside
 * a pod's pid namespace, waiting until they are reaped, then the rest (unshare,
 * nsenter, dnsmasq). The order matters: a pod's PID 1 cannot finish exiting
 * until every process of its pid namespace is reaped, and the child of a
 * `nsenter -p` whose nsenter died first is reparented to the host's init,
 * which may take its time to reap it.
 *
 * @returns the pids killed
 */
export function killNetnsProcessesSync(netns: readonly string[], timeoutMs = 3000): number[] {
  const pids = pidsInNetns(netns).filter((p) => p !== process.pid);
  const hostPidNs = nsKey('/proc/self/ns/pid');
  const inner = pids.filter((p) => nsKey(`/proc/${p}/ns/pid`) !== hostPidNs);
  const outer = pids.filter((p) => !inner.includes(p));
  for (const p of inner) killQuiet(p, 'SIGKILL');
  const deadline = Date.now() + timeoutMs;
  while (inner.some((p) => fs.existsSync(`/proc/${p}`)) && Date.now() < deadline) sleepSync(2);
  for (const p of outer) killQuiet(p, 'SIGKILL');
  waitGoneSync(outer, timeoutMs);
  return pids;
}

/** Waits until none of `pids` runs (zombies count as gone). */
export function waitGoneSync(pids: readonly number[], timeoutMs = 3000): boolean {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (pids.every((p) => !isRunning(p))) return true;
    if (Date.now() > deadline) return false;
    sleepSync(5);
  }
}

/** Deletes netns by name (`ip -force -batch`): the bridge and veths go with them. */
export function deleteNetns(names: readonly string[]): void {
  if (names.length === 0) return;
  runSync('ip', ['-force', '-batch', '-'], names.map((n) => `netns del ${n}\n`).join(''));
}

/**
 * Removes everything of harness `id`, synchronously: processes, netns,
 * cgroups, host routes (if `octet` is known), temp dirs, registry record.
 * Safe to call repeatedly and for half-built harnesses.
 */
export function teardownSync(id: string, octet: number | null, baseDir: string | null, report = emptyReport()): CleanupReport {
  const netns = listNetns().filter((n) => n.startsWith(`${NETNS_PREFIX}${id}-`));
  const cgDirs = podCgroupDirs().get(id) ?? [];

  // 1. Processes: everything in the harness's netns or cgroups.
  report.processes.push(...killNetnsProcessesSync(netns));
  const stray: number[] = [];
  for (const d of cgDirs) for (const c of [d, ...subCgroups(d)]) stray.push(...cgroupPids(c));
  for (const p of stray) killQuiet(p, 'SIGKILL');
  waitGoneSync(stray);
  report.processes.push(...stray);

  // 2. Network namespaces (veths and the bridge disappear with them).
  deleteNetns(netns);
  report.netns.push(...netns.filter((n) => !fs.existsSync(`/run/netns/${n}`)));

  // 3. Cgroups.
  for (const d of cgDirs) if (removePodCgroup(d)) report.cgroups.push(d);
  if (cgDirs.length > 0) pruneKubepods();

  // 4. Host routes.
  if (octet !== null) {
    const r = subnetRoutes(octet);
    if (deleteRoute('-4', r.v4)) report.routes.push(r.v4);
    if (deleteRoute('-6', r.v6)) report.routes.push(r.v6);
  }

  // 5. Temp dirs (nothing is mounted in them on the host side: pod mounts live in the pods' own mount namespaces).
  const dirs = new Set(tmpDirs().get(id) ?? []);
  if (baseDir !== null) dirs.add(baseDir);
  for (const d of dirs) {
    if (!fs.existsSync(d)) continue;
    try {
      fs.rmSync(d, { recursive: true, force: true, maxRetries: 3 });
      report.dirs.push(d);
    } catch {
      /* someone else (a concurrent sweep) is removing it */
    }
  }

  // 6. Registry record, last.
  try {
    fs.unlinkSync(registryPath(id));
  } catch {
    /* not there */
  }
  try {
    fs.rmdirSync(REGISTRY_DIR);
  } catch {
    /* other harnesses still registered */
  }
  report.harnesses.push(id);
  return report;
}

/**
 * Removes leftovers of harnesses whose owner process is gone, and orphaned
 * resources (netns, cgroups, routes, temp dirs) of ids that have no live record.
 * Never touches a harness whose owner still runs.
 *
 * @param exceptIds ids to leave alone even if they look orphaned
 */
export function sweepSync(exceptIds: ReadonlySet<string> = new Set()): CleanupReport {
  const report = emptyReport();
  // Snapshot resources first, records second: a record is always written
  // before its resources, so a resource seen here has its record visible below.
  const netnsIds = idsOfNetns(listNetns());
  const cgIds = new Set(podCgroupDirs().keys());
  const dirIds = new Set(tmpDirs().keys());
  const routes = harnessRoutes();
  const records = readRecords();

  const live = new Set<string>(exceptIds);
  const liveOctets = new Set<number>();
  for (const rec of records) {
    if (live.has(rec.id) || ownerAlive(rec)) {
      live.add(rec.id);
      if (rec.octet !== null) liveOctets.add(rec.octet);
    }
  }
  const done = new Set<string>();
  for (const rec of records) {
    if (live.has(rec.id)) continue;
    teardownSync(rec.id, rec.octet, rec.baseDir, report);
    done.add(rec.id);
  }
  for (const id of new Set([...netnsIds, ...cgIds, ...dirIds])) {
    if (live.has(id) || done.has(id)) continue;
    teardownSync(id, null, null, report);
  }
  for (const r of routes) {
    if (liveOctets.has(r.octet)) continue;
    if (deleteRoute(r.family, r.dst)) report.routes.push(r.dst);
  }
  return report;
}
