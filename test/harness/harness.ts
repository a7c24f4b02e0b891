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
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  KUBEPODS,
  NETNS_PREFIX,
  ROUTE_PROTO,
  TMPDIR_PREFIX,
  cgroupRoots,
  deleteNetns,
  emptyReport,
  killNetnsProcessesSync,
  pidsInNetns,
  pruneKubepods,
  readRecords,
  removePodCgroup,
  subnetRoutes,
  sweepSync,
  teardownSync,
  writeRecord,
  type CleanupReport,
  type RegistryRecord,
} from './cleanup.js';
import {
  DEFAULT_PATH,
  isListening,
  isRunning,
  killQuiet,
  processStartTime,
  readOrUndefined,
  run,
  runOk,
  runSync,
  shQuote,
  sleep,
  waitFor,
  writeFileAtomic,
  type RunOptions,
  type RunResult,
} from './system.js';

export type { CleanupReport } from './cleanup.js';

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

/** One SRV record: `name` answers `priority weight port target`. */
export interface SrvRecord {
  name: string;
  target: string;
  port: number;
  priority?: number;
  weight?: number;
}

/** What a pod runs and sees. */
export interface PodSpec {
  /** DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63 chars); also the pod's hostname and service name. */
  name: string;
  /** Kubernetes namespace (default `default`). */
  namespace?: string;
  /** argv of the pod's main process, looked up in the pod's PATH. */
  command: readonly string[];
  /** The process's whole environment (PATH is added when missing). */
  env?: Record<string, string>;
  /**
   * Files put in the pod's /data volume before start: keys are absolute paths
   * under /data (or paths relative to /data), values the contents.
   */
  files?: Record<string, string | Uint8Array>;
  /** Also give the pod an IPv6 address `fd00:244:X::<n>` (and an AAAA record). */
  ipv6?: boolean;
  /** Working directory inside the pod (default `/`). */
  workdir?: string;
  /** Run the command as this user (name from /etc/passwd) instead of root. */
  user?: string;
  /** Resolve only once the pod listens on this TCP port (read from /proc/<pid>/net/tcp{,6}). */
  readyPort?: number;
  /** Resolve only once the pod's stdout or stderr matches this. */
  readyLog?: RegExp;
  /** Limit for start and readiness (default 15 000 ms). */
  readyTimeoutMs?: number;
  /**
   * Host directories bind-mounted (read-write, same path) into the pod's root.
   * Default: /usr, /var, /opt, /srv, /home, /root and the repo's top-level
   * directory; top-level symlinks such as /bin -> usr/bin are copied.
   */
  hostDirs?: readonly string[];
}

/** A running pod. All addresses are reachable only from other pods (and from inside the harness's netns). */
export interface Pod {
  readonly name: string;
  readonly namespace: string;
  /** Pod UID (UUID; its first 8 hex digits are the harness id). */
  readonly uid: string;
  /** 64-hex container id, the last element of the process's cgroup paths. */
  readonly containerId: string;
  /** Host PID of the pod's main process (the command itself, PID 1 in the pod's pid namespace). */
  readonly pid: number;
  /** IPv4 address on the harness bridge. */
  readonly ip: string;
  /** IPv6 address, when {@link PodSpec.ipv6} was set. */
  readonly ipv6: string | undefined;
  /** Name of the pod's network namespace (`ip netns exec <netns> …`, `/run/netns/<netns>`). */
  readonly netns: string;
  /** `<name>.<namespace>.svc.cluster.local`. */
  readonly fqdn: string;
  /** The environment the process got. */
  readonly env: Readonly<Record<string, string>>;
  readonly command: readonly string[];
  /** Cgroup path relative to each hierarchy's root: `/kubepods/besteffort/pod<uid>/<containerId>`. */
  readonly cgroupPath: string;
  /** Host directory behind the pod's /data volume. */
  readonly dataDir: string;
  /** `/proc/<pid>/root`: the pod's filesystem as the host (and an agent with hostPID) sees it. */
  readonly rootPath: string;
  /** What the pod (including its init script) wrote so far. */
  logs(): { stdout: string; stderr: string };
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

interface PodState {
  pod: Pod | undefined;
  name: string;
  namespace: string;
  index: number;
  netns: string;
  dir: string;
  ip: string;
  ipv6: string | undefined;
  cgroupDirs: string[];
  child: ChildProcess | undefined;
  removing: Promise<void> | undefined;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const SPECIAL_DIRS = new Set(['/', '/proc', '/sys', '/dev', '/tmp', '/run', '/data', '/etc']);
const LIB_LINKS = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'];
const REPO_TOP = `/${fileURLToPath(import.meta.url).split('/')[1] ?? 'work'}`;
/** The repository (the package root): pods run its files (fixtures, the CLI itself). */
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..').replace(/\/dist$/, '');
// A clone under /tmp or /run (as a CI may make) is bound by its own path, after the pod's
// private /tmp and /run are mounted; otherwise its top-level directory is bound.
const DEFAULT_HOST_DIRS = ['/usr', '/var', '/opt', '/srv', '/home', '/root', SPECIAL_DIRS.has(REPO_TOP) ? REPO_ROOT : REPO_TOP];

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
  private dnsChild: ChildProcess | undefined;
  private srvRecords: readonly SrvRecord[] = [];
  private dnsTtl = 0;
  private logQueries = false;
  private queryCounts = new Map<string, number>();
  private dnsReads = 0;
  private readonly dnsLog: string[] = [];
  private dnsChain: Promise<void> = Promise.resolve();
  private destroying: Promise<void> | undefined;
  private closed = false;

  private constructor(record: RegistryRecord, octet: number, baseDir: string) {
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
      h = new Harness(record, octet, baseDir);
      h.srvRecords = opts.srvRecords ?? [];
      h.dnsTtl = Math.max(0, Math.trunc(opts.dnsTtl ?? 0));
      h.logQueries = opts.logQueries === true;
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
    return this.queryCounts.get(`${type} ${name}`) ?? 0;
  }

  /** Last lines dnsmasq wrote (for debugging). */
  dnsLogTail(lines = 50): string {
    return this.dnsLog.slice(-lines).join('\n');
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
    await this.startDns();
  }

  private get hostsFile(): string {
    return path.join(this.baseDir, 'dns-hosts');
  }

  private hostsContent(): string {
    const lines: string[] = [];
    for (const s of this.states.values()) {
      if (s.pod === undefined && s.child === undefined) continue;
      if (s.removing !== undefined) continue;
      const fqdn = `${s.name}.${s.namespace}.svc.${this.clusterDomain}`;
      lines.push(`${s.ip} ${fqdn} ${s.ip.replace(/\./g, '-')}.${s.namespace}.pod.${this.clusterDomain}`);
      if (s.ipv6 !== undefined) lines.push(`${s.ipv6} ${fqdn}`);
    }
    return lines.map((l) => `${l}\n`).join('');
  }

  private async startDns(): Promise<void> {
    writeFileAtomic(this.hostsFile, '');
    const child = spawn(
      'setpriv',
      [
        '--pdeathsig',
        'KILL',
        '--',
        'nsenter',
        `--net=/run/netns/${this.dnsNetns}`,
        '--',
        'dnsmasq',
        '--no-daemon',
        '--conf-file=/dev/null',
        '--no-resolv',
        '--no-hosts',
        '--bind-interfaces',
        `--listen-address=${this.dnsIp}`,
        // Answer everything locally: names not in the hosts file get NXDOMAIN, never REFUSED.
        '--local=/#/',
        `--addn-hosts=${this.hostsFile}`,
        ...(this.dnsTtl > 0 ? [`--local-ttl=${this.dnsTtl}`] : []),
        ...(this.logQueries ? ['--log-queries'] : []),
        ...this.srvRecords.map((r) => `--srv-host=${r.name},${r.target},${r.port},${r.priority ?? 0},${r.weight ?? 0}`),
        '--pid-file=',
        '--log-facility=-',
      ],
      { env: { PATH: DEFAULT_PATH }, stdio: ['ignore', 'ignore', 'pipe'], cwd: '/' },
    );
    this.dnsChild = child;
    child.unref();
    let partial = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) {
        this.dnsLog.push(l);
        if (this.dnsLog.length > 500) this.dnsLog.shift();
        if (l.includes(`read ${this.hostsFile} - `)) this.dnsReads++;
        const q = / query\[(\w+)\] (\S+) from /.exec(l);
        if (q) this.queryCounts.set(`${q[1]} ${q[2]}`, (this.queryCounts.get(`${q[1]} ${q[2]}`) ?? 0) + 1);
      }
    });
    (child.stderr as { unref?: () => void } | null)?.unref?.();
    child.on('error', (e) => this.dnsLog.push(`spawn error: ${e.message}`));
    await waitFor(
      'dnsmasq to start',
      10_000,
      () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`dnsmasq exited: ${this.dnsLogTail()}`);
        return this.dnsReads > 0 ? true : undefined;
      },
      () => this.dnsLogTail(),
    );
  }

  /** Rewrites the DNS hosts file and waits until dnsmasq re-read it (serialized). */
  private updateDns(): Promise<void> {
    const next = this.dnsChain.then(async () => {
      const child = this.dnsChild;
      if (this.closed || child?.pid === undefined) return;
      const before = this.dnsReads;
      writeFileAtomic(this.hostsFile, this.hostsContent());
      killQuiet(child.pid, 'SIGHUP');
      await waitFor('dnsmasq to re-read its hosts file', 5000, () => (this.dnsReads > before ? true : undefined), () =>
        this.dnsLogTail(),
      );
    });
    this.dnsChain = next.catch(() => undefined);
    return next;
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
      return await this.startPodInner(spec, st, env, prepare);
    } catch (e) {
      const logs = readLogs(dir);
      await this.removeState(st).catch(() => undefined);
      this.states.delete(key);
      const msg = e instanceof Error ? e.message : String(e);
      throw new Error(`pod ${key} failed to start: ${msg}\n--- stderr ---\n${logs.stderr}\n--- stdout ---\n${logs.stdout}`);
    }
  }

  private async startPodInner(
    spec: PodSpec,
    st: PodState,
    env: Record<string, string>,
    prepare: ((dataDir: string) => Promise<void>) | undefined,
  ): Promise<Pod> {
    const { dir, netns, namespace } = st;
    const uid = podUid(this.id);
    const containerId = randomBytes(32).toString('hex');
    const cgroupRel = [...KUBEPODS, `pod${uid}`, containerId];

    // Files: /data, resolv.conf, hosts, hostname, overlay dirs for /etc.
    const dataDir = path.join(dir, 'data');
    for (const d of ['root', 'data', 'etc-upper', 'etc-work']) fs.mkdirSync(path.join(dir, d), { recursive: true, mode: 0o755 });
    for (const [p, content] of Object.entries(spec.files ?? {})) {
      const abs = path.posix.normalize(p.startsWith('/') ? p : `/data/${p}`);
      if (!abs.startsWith('/data/')) throw new Error(`file ${p} is not in /data`);
      const hostPath = path.join(dataDir, abs.slice('/data/'.length));
      fs.mkdirSync(path.dirname(hostPath), { recursive: true });
      fs.writeFileSync(hostPath, content);
    }
    fs.writeFileSync(
      path.join(dir, 'resolv.conf'),
      `search ${namespace}.svc.${this.clusterDomain} svc.${this.clusterDomain} ${this.clusterDomain}\n` +
        `nameserver ${this.dnsIp}\noptions ndots:5\n`,
    );
    fs.writeFileSync(
      path.join(dir, 'hosts'),
      '# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' +
        'fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n' +
        `${st.ip}\t${st.name}\n${st.ipv6 !== undefined ? `${st.ipv6}\t${st.name}\n` : ''}`,
    );
    fs.writeFileSync(path.join(dir, 'hostname'), `${st.name}\n`);
    if (prepare !== undefined) await prepare(dataDir);

    // Cgroups (kubelet cgroupfs layout) in every hierarchy.
    const procsFiles: string[] = [];
    for (const root of cgroupRoots()) {
      const made = makeCgroup(root, cgroupRel);
      if (made === undefined) continue;
      st.cgroupDirs.push(path.dirname(made));
      procsFiles.push(path.join(made, 'cgroup.procs'));
    }

    // Network.
    await runOk('ip', ['netns', 'add', netns]);
    await ipBatch(this.switchNetns, [
      `link add v${st.index} type veth peer name eth0 netns ${netns}`,
      `link set v${st.index} master br0 up`,
    ]);
    await ipBatch(netns, [
      'link set lo up',
      `addr add ${st.ip}/24 dev eth0`,
      ...(st.ipv6 !== undefined ? [`addr add ${st.ipv6}/64 dev eth0 nodad`] : []),
      'link set eth0 up',
    ]);

    // Process.
    const marker = randomBytes(8).toString('hex');
    const scriptPath = path.join(dir, 'init.sh');
    fs.writeFileSync(
      scriptPath,
      initScript({
        dir,
        hostname: st.name,
        procsFiles,
        hostDirs: spec.hostDirs ?? DEFAULT_HOST_DIRS,
        workdir: spec.workdir ?? '/',
        user: spec.user === undefined ? undefined : lookupUser(spec.user),
        env,
        command: spec.command,
      }),
    );
    const out = fs.openSync(path.join(dir, 'stdout.log'), 'a');
    const err = fs.openSync(path.join(dir, 'stderr.log'), 'a');
    let child: ChildProcess;
    try {
      child = spawn(
        'setpriv',
        [
          '--pdeathsig',
          'KILL',
          '--',
          'nsenter',
          `--net=/run/netns/${netns}`,
          '--',
          'unshare',
          '--mount',
          '--pid',
          '--uts',
          '--ipc',
          '--fork',
          '--kill-child',
          '--',
          '/bin/sh',
          scriptPath,
        ],
        { env: { PATH: DEFAULT_PATH, TSM_HARNESS_INIT: marker }, stdio: ['ignore', out, err], cwd: '/' },
      );
    } finally {
      fs.closeSync(out);
      fs.closeSync(err);
    }
    st.child = child;
    child.unref();
    child.on('error', () => undefined);
    const dnsDone = this.updateDns();
    dnsDone.catch(() => undefined);

    const timeoutMs = spec.readyTimeoutMs ?? 15_000;
    const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
    const unsharePid = child.pid;
    if (unsharePid === undefined) throw new Error('spawn failed');
    const pid = await waitFor('the pod process', timeoutMs, () => {
      if (exited()) throw new Error(`init exited (${child.exitCode ?? child.signalCode})`);
      const kids = readOrUndefined(`/proc/${unsharePid}/task/${unsharePid}/children`)?.trim();
      return kids ? Number(kids.split(/\s+/)[0]) : undefined;
    });
    // The command runs once the init's marker variable is gone from /proc/<pid>/environ.
    // Read while the process is in an execve (the first: unshare's child becoming the init
    // shell, before any mount), environ and cmdline can come back empty: the command's
    // argv never is, and the init's names its script.
    await waitFor('the pod command to start', timeoutMs, () => {
      if (exited()) throw new Error(`pod exited (${child.exitCode ?? child.signalCode})`);
      const e = readOrUndefined(`/proc/${pid}/environ`);
      const argv = readOrUndefined(`/proc/${pid}/cmdline`);
      const started = e !== undefined && !e.includes(`TSM_HARNESS_INIT=${marker}`) && !!argv && !argv.includes(scriptPath);
      return started ? true : undefined;
    });
    if (spec.readyPort !== undefined) {
      const port = spec.readyPort;
      await waitFor(`port ${port}`, timeoutMs, () => {
        if (exited()) throw new Error(`pod exited (${child.exitCode ?? child.signalCode})`);
        return isListening(pid, port) ? true : undefined;
      });
    }
    if (spec.readyLog !== undefined) {
      const re = spec.readyLog;
      await waitFor(`log ${re}`, timeoutMs, () => {
        if (exited()) throw new Error(`pod exited (${child.exitCode ?? child.signalCode})`);
        const l = readLogs(dir);
        return re.test(l.stdout) || re.test(l.stderr) ? true : undefined;
      }, undefined, 10);
    }
    await dnsDone;

    const pod: Pod = Object.freeze({
      name: st.name,
      namespace,
      uid,
      containerId,
      pid,
      ip: st.ip,
      ipv6: st.ipv6,
      netns,
      fqdn: `${st.name}.${namespace}.svc.${this.clusterDomain}`,
      env: Object.freeze({ ...env }),
      command: Object.freeze([...spec.command]),
      cgroupPath: `/${cgroupRel.join('/')}`,
      dataDir,
      rootPath: `/proc/${pid}/root`,
      logs: () => readLogs(dir),
    });
    st.pod = pod;
    return pod;
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
      await this.updateDns().catch(() => undefined);
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
      const children = [this.dnsChild, ...[...this.states.values()].map((s) => s.child)];
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

/** Picks a free 10.244.X.0/24 (and fd00:244:X::/64) and adds the host `unreachable` routes. */
function claimSubnet(record: RegistryRecord): number {
  const taken = new Set<number>();
  for (const r of readRecords()) if (r.id !== record.id && r.octet !== null) taken.add(r.octet);
  const v4 = routeDsts('-4');
  const v6 = routeDsts('-6');
  for (let attempt = 0; attempt < 64; attempt++) {
    const octet = 1 + randomInt(254);
    if (taken.has(octet)) continue;
    if (v4.some((d) => v4Conflicts(d, octet))) continue;
    if (v6.some((d) => d.startsWith(`fd00:244:${octet}:`))) continue;
    // Claim in the registry first, so a concurrent sweep never takes the route for an orphan.
    record.octet = octet;
    writeRecord(record);
    const r = subnetRoutes(octet);
    if (runSync('ip', ['-4', 'route', 'add', 'unreachable', r.v4, 'proto', ROUTE_PROTO]).code === 0) {
      if (runSync('ip', ['-6', 'route', 'add', 'unreachable', r.v6, 'proto', ROUTE_PROTO]).code === 0) return octet;
      runSync('ip', ['-4', 'route', 'del', 'unreachable', r.v4, 'proto', ROUTE_PROTO]);
    }
    taken.add(octet);
    record.octet = null;
    writeRecord(record);
  }
  throw new Error('no free 10.244.X.0/24 subnet for the harness');
}

/** Destinations of all routes (all tables) of a family. */
function routeDsts(family: '-4' | '-6'): string[] {
  const r = runSync('ip', ['-j', family, 'route', 'show', 'table', 'all']);
  if (r.code !== 0) throw new Error(`ip route show failed: ${r.stderr}`);
  const list: unknown = JSON.parse(r.stdout || '[]');
  if (!Array.isArray(list)) return [];
  const out: string[] = [];
  for (const e of list as unknown[]) {
    const dst = typeof e === 'object' && e !== null ? (e as Record<string, unknown>)['dst'] : undefined;
    if (typeof dst === 'string') out.push(dst);
  }
  return out;
}

/** Whether a route to `dst` lies inside (or equals) 10.244.octet.0/24. Wider routes are fine: ours is more specific. */
function v4Conflicts(dst: string, octet: number): boolean {
  if (dst === 'default') return false;
  const [addr, len] = dst.split('/');
  const parts = (addr ?? '').split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p))) return false;
  if (Number(len ?? '32') < 24) return false;
  return parts[0] === 10 && parts[1] === 244 && parts[2] === octet;
}

async function ipBatch(netns: string, cmds: readonly string[]): Promise<void> {
  await runOk('ip', ['-n', netns, '-batch', '-'], { input: cmds.map((c) => `${c}\n`).join('') });
}

/** UUID whose first group is the harness id, so leftovers can be traced to their harness. */
function podUid(harnessId: string): string {
  const h = randomBytes(16).toString('hex');
  const variant = ((parseInt(h[16] ?? '0', 16) & 0x3) | 0x8).toString(16);
  return `${harnessId}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * mkdir -p of a kubelet-style cgroup path in one hierarchy; returns the leaf,
 * or undefined when the hierarchy cannot be used. cpuset needs cpus/mems
 * copied down before a task may join.
 */
function makeCgroup(root: string, rel: readonly string[]): string | undefined {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      let cur = root;
      for (const part of rel) {
        const parent = cur;
        cur = path.join(cur, part);
        try {
          fs.mkdirSync(cur);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
        for (const f of ['cpuset.cpus', 'cpuset.mems']) {
          const mine = readOrUndefined(path.join(cur, f));
          if (mine !== undefined && mine.trim() === '') {
            fs.writeFileSync(path.join(cur, f), readOrUndefined(path.join(parent, f)) ?? '');
          }
        }
      }
      return cur;
    } catch (e) {
      // ENOENT: another harness pruned an empty kubepods dir in between; retry.
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return undefined;
    }
  }
  return undefined;
}

interface UserIds {
  name: string;
  uid: number;
  gid: number;
}

function lookupUser(name: string): UserIds {
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && f[3] !== undefined) return { name, uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new Error(`no user ${name} in /etc/passwd`);
}

function readLogs(dir: string): { stdout: string; stderr: string } {
  return {
    stdout: readOrUndefined(path.join(dir, 'stdout.log')) ?? '',
    stderr: readOrUndefined(path.join(dir, 'stderr.log')) ?? '',
  };
}

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

interface InitScriptInput {
  dir: string;
  hostname: string;
  procsFiles: readonly string[];
  hostDirs: readonly string[];
  workdir: string;
  user: UserIds | undefined;
  env: Record<string, string>;
  command: readonly string[];
}

/**
 * The pod's init, run by /bin/sh as PID 1 of the new pid namespace, in fresh
 * mount/UTS/IPC namespaces (private propagation: nothing reaches the host).
 */
function initScript(i: InitScriptInput): string {
  const q = shQuote;
  const L: string[] = ['set -e', `P=${q(i.dir)}`, 'R="$P/root"'];
  // 1. Cgroups first, so everything the pod starts is accounted there.
  for (const f of i.procsFiles) {
    L.push(`{ echo 0 > ${q(f)}; } 2>/dev/null || echo "tsm-init: cannot join cgroup ${f.replace(/["$`\\]/g, '')}" >&2`);
  }
  // 2. Root: tmpfs with the host's system dirs bound in.
  L.push('mount -t tmpfs -o mode=0755 tsm-root "$R"');
  for (const l of LIB_LINKS) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(`/${l}`);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) L.push(`ln -s ${q(fs.readlinkSync(`/${l}`))} "$R/${l}"`);
    else if (st.isDirectory()) L.push(`mkdir "$R/${l}"`, `mount --rbind /${l} "$R/${l}"`);
  }
  const dirs = [...new Set(i.hostDirs.map((d) => path.posix.normalize(d)))]
    .filter((d) => {
      if (!d.startsWith('/') || SPECIAL_DIRS.has(d)) throw new Error(`cannot bind host dir ${d}`);
      return fs.existsSync(d) && fs.statSync(d).isDirectory();
    })
    .sort((a, b) => a.split('/').length - b.split('/').length);
  // Directories inside /tmp, /run, … are bound after those are mounted (step 4).
  const late = dirs.filter((d) => SPECIAL_DIRS.has(`/${d.split('/')[1] ?? ''}`));
  for (const d of dirs.filter((x) => !late.includes(x))) L.push(`mkdir -p "$R"${q(d)}`, `mount --rbind ${q(d)} "$R"${q(d)}`);
  // 3. /etc: overlay of the host's (writes stay in the pod), with kubelet-style bind-mounted files.
  L.push(
    'mkdir "$R/etc"',
    'if mount -t overlay -o lowerdir=/etc,upperdir="$P/etc-upper",workdir="$P/etc-work" tsm-etc "$R/etc"; then',
    '  for f in resolv.conf hosts hostname; do rm -f "$R/etc/$f"; : > "$R/etc/$f"; done',
    'else',
    '  echo "tsm-init: no overlayfs, /etc is the host one" >&2',
    '  mount --rbind /etc "$R/etc"',
    'fi',
    'for f in resolv.conf hosts hostname; do mount --bind "$P/$f" "$R/etc/$f"; done',
  );
  // 4. Kernel filesystems and private scratch space.
  L.push(
    'mkdir "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/data"',
    'mount -t proc proc "$R/proc"',
    'mount -t sysfs sysfs "$R/sys" || mount --rbind /sys "$R/sys"',
    'mount --rbind /dev "$R/dev"',
    'mkdir -p "$R/dev/shm"',
    'mount -t tmpfs -o mode=1777 shm "$R/dev/shm"',
    'mount -t tmpfs -o mode=1777 tmp "$R/tmp"',
    'mount -t tmpfs -o mode=0755 run "$R/run"',
    'mount --bind "$P/data" "$R/data"',
    `hostname ${q(i.hostname)}`,
  );
  for (const d of late) L.push(`mkdir -p "$R"${q(d)}`, `mount --rbind ${q(d)} "$R"${q(d)}`);
  // 5. Switch root, drop the old one.
  L.push('cd "$R"', 'pivot_root . .', 'umount -l .', `cd ${q(i.workdir)}`);
  // 6. Exec the command with exactly the pod's environment.
  const envArgs = Object.entries(i.env).map(([k, v]) => q(`${k}=${v}`));
  const asUser = i.user === undefined ? '' : `setpriv --reuid=${i.user.uid} --regid=${i.user.gid} --init-groups -- `;
  L.push(`exec ${asUser}env -i -- ${envArgs.join(' ')} ${i.command.map(q).join(' ')}`);
  return `${L.join('\n')}\n`;
}
