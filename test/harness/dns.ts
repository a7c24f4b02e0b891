/**
 * The cluster DNS of the local node harness: dnsmasq in the harness's DNS
 * netns, answering `<pod>.<ns>.svc.cluster.local` and
 * `<a-b-c-d>.<ns>.pod.cluster.local` from a hosts file the harness rewrites
 * whenever a pod comes or goes (dnsmasq re-reads it on SIGHUP), plus the SRV
 * records given at start. No upstream server: every other name gets NXDOMAIN.
 *
 * {@link ClusterDns} is internal to the harness (`harness.ts` owns one per
 * node); tests see it through `Harness.dnsQueries` and `Harness.dnsLogTail`.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { DEFAULT_PATH, killQuiet, waitFor, writeFileAtomic } from './system.js';

/** One SRV record: `name` answers `priority weight port target`. */
export interface SrvRecord {
  name: string;
  target: string;
  port: number;
  priority?: number;
  weight?: number;
}

/** A pod's names in the cluster DNS (internal). */
export interface DnsEntry {
  readonly name: string;
  readonly namespace: string;
  readonly ip: string;
  readonly ipv6: string | undefined;
}

/** What a {@link ClusterDns} is made of (internal). */
export interface ClusterDnsOptions {
  /** The netns dnsmasq runs in (its `eth0` holds `ip`). */
  netns: string;
  /** Address dnsmasq listens on (port 53, UDP and TCP). */
  ip: string;
  /** The hosts file dnsmasq reads (`--addn-hosts`). */
  hostsFile: string;
  clusterDomain: string;
  srvRecords: readonly SrvRecord[];
  /** `--local-ttl` (0: none). */
  ttl: number;
  logQueries: boolean;
  /** The pods to list, read each time the hosts file is rewritten. */
  entries: () => Iterable<DnsEntry>;
  /** Whether the harness is destroyed (then the hosts file is no longer rewritten). */
  closed: () => boolean;
}

/** dnsmasq serving one harness's cluster DNS (internal to the harness). */
export class ClusterDns {
  private readonly o: ClusterDnsOptions;
  private dnsChild: ChildProcess | undefined;
  private queryCounts = new Map<string, number>();
  private dnsReads = 0;
  private readonly dnsLog: string[] = [];
  private dnsChain: Promise<void> = Promise.resolve();

  constructor(opts: ClusterDnsOptions) {
    this.o = opts;
  }

  /** The dnsmasq process (its `setpriv` parent), once started. */
  get child(): ChildProcess | undefined {
    return this.dnsChild;
  }

  /** How many queries of `type` for `name` dnsmasq got so far (needs `logQueries`). */
  queries(name: string, type = 'A'): number {
    return this.queryCounts.get(`${type} ${name}`) ?? 0;
  }

  /** Last lines dnsmasq wrote (for debugging). */
  logTail(lines = 50): string {
    return this.dnsLog.slice(-lines).join('\n');
  }

  private hostsContent(): string {
    const lines: string[] = [];
    for (const s of this.o.entries()) {
      const fqdn = `${s.name}.${s.namespace}.svc.${this.o.clusterDomain}`;
      lines.push(`${s.ip} ${fqdn} ${s.ip.replace(/\./g, '-')}.${s.namespace}.pod.${this.o.clusterDomain}`);
      if (s.ipv6 !== undefined) lines.push(`${s.ipv6} ${fqdn}`);
    }
    return lines.map((l) => `${l}\n`).join('');
  }

  /** Starts dnsmasq with an empty hosts file; resolves once it read it. */
  async start(): Promise<void> {
    const hostsFile = this.o.hostsFile;
    writeFileAtomic(hostsFile, '');
    const child = spawn(
      'setpriv',
      [
        '--pdeathsig',
        'KILL',
        '--',
        'nsenter',
        `--net=/run/netns/${this.o.netns}`,
        '--',
        'dnsmasq',
        '--no-daemon',
        '--conf-file=/dev/null',
        '--no-resolv',
        '--no-hosts',
        '--bind-interfaces',
        `--listen-address=${this.o.ip}`,
        // Answer everything locally: names not in the hosts file get NXDOMAIN, never REFUSED.
        '--local=/#/',
        `--addn-hosts=${hostsFile}`,
        ...(this.o.ttl > 0 ? [`--local-ttl=${this.o.ttl}`] : []),
        ...(this.o.logQueries ? ['--log-queries'] : []),
        ...this.o.srvRecords.map((r) => `--srv-host=${r.name},${r.target},${r.port},${r.priority ?? 0},${r.weight ?? 0}`),
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
        if (l.includes(`read ${hostsFile} - `)) this.dnsReads++;
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
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`dnsmasq exited: ${this.logTail()}`);
        return this.dnsReads > 0 ? true : undefined;
      },
      () => this.logTail(),
    );
  }

  /** Rewrites the DNS hosts file and waits until dnsmasq re-read it (serialized). */
  update(): Promise<void> {
    const next = this.dnsChain.then(async () => {
      const child = this.dnsChild;
      if (this.o.closed() || child?.pid === undefined) return;
      const before = this.dnsReads;
      writeFileAtomic(this.o.hostsFile, this.hostsContent());
      killQuiet(child.pid, 'SIGHUP');
      await waitFor('dnsmasq to re-read its hosts file', 5000, () => (this.dnsReads > before ? true : undefined), () =>
        this.logTail(),
      );
    });
    this.dnsChain = next.catch(() => undefined);
    return next;
  }
}
