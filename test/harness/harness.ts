/**
 * The local node harness: a Kubernetes node built for real on one Linux
 * machine, as root, without Kubernetes.
 *
 * ```
 *  host netns: only `unreachable 10.244.X.0/24` and `unreachable fd00:244:X::/64` (proto 244)
 *
 *  tsm-<id>-switch netns            tsm-<id>-dns netns
 *  ┌──────────── br0 ───────────┐   ┌─────────────────────────────┐
 *  │ vdns   v10   v11  …        │───│ eth0 10.244.X.2   dnsmasq   │
 *  └────────┼─────┼─────────────┘   └─────────────────────────────┘
 *           │     └── tsm-<id>-<ns>-<pod> netns: eth0 10.244.X.11 [fd00:244:X::11]
 *           └──────── tsm-<id>-<ns>-<pod> netns: eth0 10.244.X.10 [fd00:244:X::10]
 * ```
 *
 * - The bridge lives in a "switch" netns of the harness, so the host's own
 *   network config is untouched except for the two `unreachable` routes, which
 *   make anything sent to a pod address from the host fail at once
 *   (EHOSTUNREACH) instead of leaving the machine. Pods have no default route:
 *   traffic only goes between pods and DNS.
 * - Each pod is a real process: `setpriv --pdeathsig KILL nsenter --net=<pod
 *   netns> unshare --mount --pid --uts --ipc --fork --kill-child sh init.sh`.
 *   `init.sh` joins the pod's kubelet-style cgroups, builds the pod's root
 *   (tmpfs root; host /usr, /var, /opt, /srv, /home, /root and the repo's
 *   top-level dir bind-mounted; /etc an overlay of the host's /etc with the
 *   pod's own resolv.conf, hosts, hostname bind-mounted on top; fresh /proc,
 *   /sys, /tmp, /run, /dev/shm; /data bound to a per-pod host dir), sets the
 *   hostname, `pivot_root`s, and execs the command with exactly the pod's
 *   environment (plus PATH). {@link Pod.pid} is that command (PID 1 in the
 *   pod's pid namespace).
 * - Cluster DNS is dnsmasq in its own netns: `<pod>.<ns>.svc.cluster.local`
 *   (service name == pod, service IP == pod IP) and
 *   `<a-b-c-d>.<ns>.pod.cluster.local`, with PTR records for the service name.
 *   Every other name, inside cluster.local or not, gets NXDOMAIN at once:
 *   there is no upstream server (nothing leaves the machine).
 * - Cleanup: {@link Harness.destroy}, plus synchronous teardown on process
 *   exit / SIGINT / SIGTERM / SIGHUP, plus {@link Harness.sweep} (run by
 *   every {@link Harness.create}) for harnesses whose owner process died.
 *   See `cleanup.ts` for how every resource is named.
 *
 * This file holds the {@link Harness} class (the node: setting up, adding and
 * removing pods, exec, teardown) and the exit hooks. The rest of the harness:
 * `dns.ts` (the cluster DNS), `pod.ts` (starting a pod), `init-script.ts`
 * (the pod's init: its root and its command), `net.ts` (subnet and `ip`
 * helpers), `cleanup.ts` (naming and teardown), `system.ts` (running
 * commands, `/proc`). Importers take everything from here.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  NETNS_PREFIX,
  TMPDIR_PREFIX,
  deleteNetns,
  emptyReport,
  killNetnsProcessesSync,
  pidsInNetns,
  pruneKubepods,
  removePodCgroup,
  subnetRoutes,
  sweepSync,
  teardownSync,
  writeRecord,
  type CleanupReport,
  type RegistryRecord,
} from './cleanup.js';
import { ClusterDns, type SrvRecord } from './dns.js';
import { lookupUser } from './init-script.js';
import { claimSubnet, ipBatch } from './net.js';
import { launchPod, readLogs, type Pod, type PodHost, type PodSpec, type PodState } from './pod.js';
import { DEFAULT_PATH, isRunning, processStartTime, run, runOk, sleep, type RunOptions, type RunResult } from './system.js';

export type { CleanupReport } from './cleanup.js';
export type { SrvRecord } from './dns.js';
export type { Pod, PodSpec } from './pod.js';

/** Where Debian's PostgreSQL 15 server binaries are. */
export const PG_BIN = '/usr/lib/postgresql/15/bin';

/** Options of {@link Harness.create}. */
export interface HarnessOptions {
  /** A label recorded in the registry (default "harness"); the id is always random. */
  name?: string;
  /**
   * SRV records the cluster DNS serves, as Kubernetes does for a Service's named ports
   * (`_http._tcp.db.default.svc.cluster.local` → `db.default.svc.cluster.local`:8080).
   * Fixed when the harness starts (dnsmasq reads them once); the target need not exist yet.
   */
  srvRecords?: readonly SrvRecord[];
  /**
   * The TTL in seconds of the cluster DNS's answers (dnsmasq `--local-ttl`; default 0, so
   * nothing may be cached). CoreDNS's kubernetes plugin answers with 5.
   */
  dnsTtl?: number;
  /** Have dnsmasq log every query it gets (see {@link Harness.dnsQueries}). */
  logQueries?: boolean;
}

/** Result of {@link Harness.exec}. */
export type ExecResult = RunResult;

/** Options of {@link Harness.exec}. */
export interface ExecOptions {
  /** Extra environment on top of the pod's own (PATH included). */
  env?: Record<string, string>;
  /** Sent to stdin. */
  input?: string;
  /** SIGKILL after this many ms (default 15 000). */
  timeoutMs?: number;
}

/** Options of {@link Harness.addPostgres}. */
export interface PostgresOptions {
  name: string;
  namespace?: string;
  env?: Record<string, string>;
  ipv6?: boolean;
  readyTimeoutMs?: number;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Harnesses of this process that are not destroyed yet. */
const live = new Set<Harness>();

/**
 * One local node: a switch netns with a bridge, cluster DNS, and pods.
 * Create with {@link Harness.create}; always {@link Harness.destroy} it (e.g. in afterAll).
 */
export class Harness {
  /** Random 8-hex id; every resource's name contains it. */
  readonly id: string;
  readonly name: string;
  /** Third octet of the harness's subnet. */
  readonly octet: number;
  /** `10.244.X.0/24`. */
  readonly subnet: string;
  /** `fd00:244:X::/64`. */
  readonly subnet6: string;
  /** Cluster DNS server address (port 53, UDP and TCP). */
  readonly dnsIp: string;
  readonly clusterDomain = 'cluster.local';
  /** Host temp dir holding pod dirs, DNS hosts file, logs. */
  readonly baseDir: string;
  /** The netns holding the bridge `br0`. */
  readonly switchNetns: string;
  /** The netns holding dnsmasq. */
  readonly dnsNetns: string;

  private readonly record: RegistryRecord;
  private readonly states = new Map<string, PodState>();
  private nextIndex = 10;
  private readonly dns: ClusterDns;
  private destroying: Promise<void> | undefined;
  private closed = false;

  private constructor(record: RegistryRecord, octet: number, baseDir: string, opts: HarnessOptions) {
    this.record = record;
    this.id = record.id;
    this.name = record.name;
    this.octet = octet;
    const r = subnetRoutes(octet);
    this.subnet = r.v4;
    this.subnet6 = r.v6;
    this.dnsIp = `10.244.${octet}.2`;
    this.baseDir = baseDir;
    this.switchNetns = `${NETNS_PREFIX}${record.id}-switch`;
    this.dnsNetns = `${NETNS_PREFIX}${record.id}-dns`;
    this.dns = new ClusterDns({
      netns: this.dnsNetns,
      ip: this.dnsIp,
      hostsFile: path.join(baseDir, 'dns-hosts'),
      clusterDomain: this.clusterDomain,
      srvRecords: opts.srvRecords ?? [],
      ttl: Math.max(0, Math.trunc(opts.dnsTtl ?? 0)),
      logQueries: opts.logQueries === true,
      entries: () => this.dnsEntries(),
      closed: () => this.closed,
    });
  }

  /**
   * Builds a node: sweeps leftovers of dead harnesses, claims a free
   * 10.244.X.0/24 (adding its `unreachable` host routes), creates the switch
   * and DNS namespaces and starts dnsmasq. Needs root.
   */
  static async create(opts: HarnessOptions = {}): Promise<Harness> {
    if (process.getuid?.() !== 0) throw new Error('the local node harness needs root');
    installHooks();
    sweepSync();
    const ownerStart = processStartTime(process.pid);
    if (ownerStart === undefined) throw new Error('cannot read /proc/self/stat');
    const record: RegistryRecord = {
      version: 1,
      id: randomBytes(4).toString('hex'),
      name: opts.name ?? 'harness',
      ownerPid: process.pid,
      ownerStart,
      octet: null,
      baseDir: null,
      createdAt: new Date().toISOString(),
    };
    writeRecord(record); // before any resource exists
    let baseDir: string | null = null;
    let h: Harness;
    try {
      baseDir = fs.mkdtempSync(path.join(os.tmpdir(), `${TMPDIR_PREFIX}${record.id}-`));
      fs.chmodSync(baseDir, 0o755); // the postgres user must reach its data dir
      record.baseDir = baseDir;
      writeRecord(record);
      const octet = claimSubnet(record);
      h = new Harness(record, octet, baseDir, opts);
    } catch (e) {
      teardownSync(record.id, record.octet, baseDir);
      throw e;
    }
    live.add(h);
    try {
      await h.setUp();
    } catch (e) {
      await h.destroy();
      throw e;
    }
    return h;
  }

  /**
   * Removes leftovers of harnesses whose owner process is gone (and orphaned
   * `tsm-*` netns, kubepods cgroups, proto-244 routes and temp dirs without a
   * live owner). Harnesses of running processes are never touched.
   */
  static sweep(): CleanupReport {
    return sweepSync();
  }

  /** The pods that are running, in creation order. */
  get pods(): readonly Pod[] {
    const out: Pod[] = [];
    for (const s of this.states.values()) if (s.pod !== undefined && s.removing === undefined) out.push(s.pod);
    return out;
  }

  /** Finds a running pod by name (and namespace, default `default`). */
  pod(name: string, namespace = 'default'): Pod | undefined {
    const s = this.states.get(`${namespace}/${name}`);
    return s?.removing === undefined ? s?.pod : undefined;
  }

  /** How many queries of `type` for `name` dnsmasq got so far (needs `logQueries`). */
  dnsQueries(name: string, type = 'A'): number {
    return this.dns.queries(name, type);
  }

  /** Last lines dnsmasq wrote (for debugging). */
  dnsLogTail(lines = 50): string {
    return this.dns.logTail(lines);
  }

  private async setUp(): Promise<void> {
    await runOk('ip', ['netns', 'add', this.switchNetns]);
    await runOk('ip', ['netns', 'add', this.dnsNetns]);
    await ipBatch(this.switchNetns, [
      'link set lo up',
      'link add br0 type bridge',
      'link set br0 up',
      `link add vdns type veth peer name eth0 netns ${this.dnsNetns}`,
      'link set vdns master br0 up',
    ]);
    await ipBatch(this.dnsNetns, ['link set lo up', `addr add ${this.dnsIp}/24 dev eth0`, 'link set eth0 up']);
    await this.dns.start();
  }

  /** The pods the cluster DNS lists: being started or running, not being removed. */
  private *dnsEntries(): Iterable<PodState> {
    for (const s of this.states.values()) {
      if (s.pod === undefined && s.child === undefined) continue;
      if (s.removing !== undefined) continue;
      yield s;
    }
  }

  /**
   * Starts a pod and resolves once its command runs (and, if asked, listens on
   * {@link PodSpec.readyPort} / logged {@link PodSpec.readyLog}) and its DNS
   * name resolves.
   */
  addPod(spec: PodSpec): Promise<Pod> {
    return this.startPod(spec, undefined);
  }

  /**
   * Starts a pod running PostgreSQL 15 on 0.0.0.0:5432 and [::]:5432, trust
   * authentication for everyone (user `postgres`, no password), data in
   * /data/pgdata (initdb runs on the host as the `postgres` user, ~1 s), unix
   * socket in /tmp. Resolves when the server accepts connections.
   */
  addPostgres(opts: PostgresOptions): Promise<Pod> {
    const spec: PodSpec = {
      name: opts.name,
      namespace: opts.namespace ?? 'default',
      command: [
        `${PG_BIN}/postgres`,
        '-D',
        '/data/pgdata',
        '-c',
        'listen_addresses=*',
        '-c',
        'unix_socket_directories=/tmp',
        '-c',
        'fsync=off',
        '-c',
        'synchronous_commit=off',
        '-c',
        'full_page_writes=off',
      ],
      env: { PGDATA: '/data/pgdata', ...opts.env },
      user: 'postgres',
      readyPort: 5432,
      readyLog: /database system is ready to accept connections/,
      readyTimeoutMs: opts.readyTimeoutMs ?? 30_000,
    };
    if (opts.ipv6 !== undefined) spec.ipv6 = opts.ipv6;
    return this.startPod(spec, async (dataDir) => {
      const pg = lookupUser('postgres');
      const pgdata = path.join(dataDir, 'pgdata');
      fs.mkdirSync(pgdata, { mode: 0o700 });
      fs.chownSync(pgdata, pg.uid, pg.gid);
      await runOk(
        'setpriv',
        [
          '--pdeathsig',
          'KILL',
          `--reuid=${pg.uid}`,
          `--regid=${pg.gid}`,
          '--init-groups',
          '--',
          `${PG_BIN}/initdb`,
          '-D',
          pgdata,
          '-U',
          'postgres',
          '--auth=trust',
          '--no-sync',
          '--no-instructions',
          '--encoding=UTF8',
          '--locale=C',
        ],
        { timeoutMs: 60_000 },
      );
      fs.appendFileSync(path.join(pgdata, 'pg_hba.conf'), 'host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n');
    });
  }

  private async startPod(spec: PodSpec, prepare: ((dataDir: string) => Promise<void>) | undefined): Promise<Pod> {
    if (this.closed) throw new Error('harness is destroyed');
    const namespace = spec.namespace ?? 'default';
    if (!DNS_LABEL.test(spec.name)) throw new Error(`bad pod name ${JSON.stringify(spec.name)}`);
    if (!DNS_LABEL.test(namespace)) throw new Error(`bad namespace ${JSON.stringify(namespace)}`);
    if (spec.command.length === 0) throw new Error('pod command is empty');
    const key = `${namespace}/${spec.name}`;
    if (this.states.has(key)) throw new Error(`pod ${key} exists`);
    const env: Record<string, string> = {};
    if (spec.env?.['PATH'] === undefined) env['PATH'] = DEFAULT_PATH;
    for (const [k, v] of Object.entries(spec.env ?? {})) {
      if (k === '' || k.includes('=') || k.includes('\0') || v.includes('\0')) throw new Error(`bad env var ${JSON.stringify(k)}`);
      env[k] = v;
    }
    const index = this.nextIndex++;
    if (index > 254) throw new Error('harness subnet is full');
    const netns = `${NETNS_PREFIX}${this.id}-${namespace}-${spec.name}`;
    const dir = path.join(this.baseDir, 'pods', `${namespace}.${spec.name}`);
    const st: PodState = {
      pod: undefined,
      name: spec.name,
      namespace,
      index,
      netns,
      dir,
      ip: `10.244.${this.octet}.${index}`,
      ipv6: spec.ipv6 === true ? `fd00:244:${this.octet}::${index}` : undefined,
      cgroupDirs: [],
      child: undefined,
      removing: undefined,
    };
    this.states.set(key, st);
    try {
      const host: PodHost = {
        id: this.id,
        clusterDomain: this.clusterDomain,
        dnsIp: this.dnsIp,
        switchNetns: this.switchNetns,
        updateDns: () => this.dns.update(),
      };
      return await launchPod(host, spec, st, env, prepare);
    } catch (e) {
      const logs = readLogs(dir);
      await this.removeState(st).catch(() => undefined);
      this.states.delete(key);
      const msg = e instanceof Error ? e.message : String(e);
      throw new Error(`pod ${key} failed to start: ${msg}\n--- stderr ---\n${logs.stderr}\n--- stdout ---\n${logs.stdout}`);
    }
  }

  /**
   * Runs a command inside a pod, like `kubectl exec`: `nsenter` into the pod's
   * network, mount, UTS, IPC and pid namespaces (so the pod's /etc/resolv.conf,
   * /etc/hosts and /data apply), with the pod's environment plus `opts.env`.
   */
  async exec(pod: Pod, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (!isRunning(pod.pid)) throw new Error(`pod ${pod.namespace}/${pod.name} is not running`);
    const runOpts: RunOptions = {
      env: { ...pod.env, ...opts.env },
      timeoutMs: opts.timeoutMs ?? 15_000,
    };
    if (opts.input !== undefined) runOpts.input = opts.input;
    return run('nsenter', ['-t', String(pod.pid), '-n', '-m', '-u', '-i', '-p', '--', ...argv], runOpts);
  }

  /** Stops a pod (SIGKILL) and removes its netns, veth, cgroups, DNS names and files. */
  async removePod(pod: Pod): Promise<void> {
    const st = this.states.get(`${pod.namespace}/${pod.name}`);
    if (st?.pod !== pod) return;
    await this.removeState(st);
    this.states.delete(`${pod.namespace}/${pod.name}`);
  }

  private removeState(st: PodState): Promise<void> {
    st.removing ??= (async () => {
      killNetnsProcessesSync([st.netns]);
      if (st.child !== undefined) await waitExit(st.child, 5000);
      const deadline = Date.now() + 3000;
      while (pidsInNetns([st.netns]).some(isRunning) && Date.now() < deadline) await sleep(5);
      deleteNetns([st.netns]);
      for (const d of st.cgroupDirs) removePodCgroup(d);
      if (st.cgroupDirs.length > 0) pruneKubepods();
      fs.rmSync(st.dir, { recursive: true, force: true });
      await this.dns.update().catch(() => undefined);
    })();
    return st.removing;
  }

  /**
   * Removes everything the harness made: SIGKILLs pods, execs and dnsmasq;
   * deletes every `tsm-<id>-*` netns (so the bridge and veths), the cgroups,
   * the host routes, the temp dir and the registry record. Idempotent.
   */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.closed = true;
      const netns = [this.switchNetns, this.dnsNetns, ...[...this.states.values()].map((s) => s.netns)];
      const pids = killNetnsProcessesSync(netns);
      const children = [this.dns.child, ...[...this.states.values()].map((s) => s.child)];
      await Promise.all(children.map((c) => (c === undefined ? undefined : waitExit(c, 5000))));
      // Let the event loop reap our own children (nsenter of a running exec): a pod's
      // PID 1 cannot finish dying while a process of its pid namespace is unreaped.
      const deadline = Date.now() + 5000;
      while (pids.some(isRunning) && Date.now() < deadline) await sleep(5);
      this.destroySync();
    })();
    return this.destroying;
  }

  /** Synchronous teardown (exit hooks). */
  destroySync(): CleanupReport {
    this.closed = true;
    live.delete(this);
    const report = teardownSync(this.id, this.octet, this.baseDir, emptyReport());
    if (live.size === 0) uninstallHooks();
    return report;
  }

  /** The registry record of this harness (`/run/tsmirror-harness/<id>.json`). */
  get registryRecord(): Readonly<RegistryRecord> {
    return this.record;
  }
}

/** Synchronously tears down every harness of this process (what the exit and signal hooks do). */
export function destroyAllSync(): void {
  for (const h of [...live]) {
    try {
      h.destroySync();
    } catch {
      /* keep going: the next sweep gets the rest */
    }
  }
}

// ---------------------------------------------------------------- hooks

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let hooksInstalled = false;
const onExit = (): void => destroyAllSync();
const signalHandlers = new Map<NodeJS.Signals, () => void>(
  SIGNALS.map((sig) => [
    sig,
    () => {
      destroyAllSync();
      uninstallHooks();
      // Nobody else handles it: die of the signal as we would have without us.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    },
  ]),
);

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', onExit);
  for (const [sig, fn] of signalHandlers) process.on(sig, fn);
}

function uninstallHooks(): void {
  if (!hooksInstalled) return;
  hooksInstalled = false;
  process.off('exit', onExit);
  for (const [sig, fn] of signalHandlers) process.off(sig, fn);
}

// ---------------------------------------------------------------- helpers

function waitExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
