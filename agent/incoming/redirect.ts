/**
 * Netfilter redirection inside a pod's network namespace (nftables, one table per node
 * agent: `table inet tsmirror`). New TCP connections to a subscribed port, from outside
 * the pod (prerouting) and over the pod's own loopback (output, `lo`), are redirected to
 * the agent's listener in the pod. The agent's own connections to the pod's app carry
 * SO_MARK `PASS_MARK` and are left alone.
 *
 * Fail-open: the port → listener map's elements time out after `ELEMENT_TIMEOUT_S`; the
 * live agent rewrites them every `REFRESH_MS` (one atomic `nft -f` batch: flush the map,
 * add every element again, which also restarts their timeouts). If every agent process
 * dies, nobody refreshes and new connections reach the pod's app again within the
 * timeout. The table names its owner (PID and start time), so a new agent removes
 * tables whose owner is gone (`removeStaleTables`).
 */
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { loadAddon } from '../../native/index.js';
import { TsmError } from '../../protocol/errors.js';

export const TABLE = 'tsmirror';
export const PASS_MARK = 0x7473;
export const ELEMENT_TIMEOUT_S = 3;
export const REFRESH_MS = 1000;

function startTime(pid: number | 'self'): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, counted after the parenthesised command name (which may hold spaces).
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

const OWNER = `tsmirror agent ${process.pid} ${startTime('self') ?? '0'}`;

/** No nft batch of ours takes long; one that hangs is killed rather than stall the refreshes. */
const NFT_TIMEOUT_MS = 30_000;

/**
 * Runs `nft -f -` with `script` in the network namespace at `nsPath`. Started by the addon
 * with posix_spawn on a thread-pool thread: child_process.spawn forks the agent on the
 * JavaScript thread, which stopped the event loop (and every relayed connection) for
 * 10-50 ms at each refresh of the rules, once a second.
 */
export async function nft(nsPath: string, script: string, args: string[] = ['-f', '-']): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await loadAddon().spawnCapture(['nsenter', `--net=${nsPath}`, '--', 'nft', ...args], script, NFT_TIMEOUT_MS);
  return { code: r.code ?? 1, stdout: r.stdout, stderr: r.signal ? `${r.stderr}nft ended by ${r.signal}` : r.stderr };
}

function tableScript(): string {
  // `add` then `delete` makes the recreation work whether or not a table is there.
  return `add table inet ${TABLE}
delete table inet ${TABLE}
table inet ${TABLE} {
  comment "${OWNER}"
  map redir { type inet_service : inet_service; flags timeout; }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; meta l4proto tcp redirect to :tcp dport map @redir; }
  chain output { type nat hook output priority -100; policy accept; oifname "lo" meta mark != ${PASS_MARK} meta l4proto tcp redirect to :tcp dport map @redir; }
}
`;
}

/** The redirect rules of one pod network namespace, shared by every session on it. */
export class NetnsRedirect {
  readonly nsFd: number;
  readonly #nsPath: string;
  readonly #ports = new Map<number, number>();
  #chain: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #tableUp = false;
  readonly #log: (line: string) => void;

  constructor(pid: number, log: (line: string) => void) {
    this.nsFd = openSync(`/proc/${pid}/ns/net`, 'r');
    // nsenter opens this path: our own fd, so the namespace is the one we hold.
    this.#nsPath = `/proc/${process.pid}/fd/${this.nsFd}`;
    this.#log = log;
  }

  get ports(): number {
    return this.#ports.size;
  }

  /** Redirects new connections to `port` to `listenPort` (awaits the rule). */
  set(port: number, listenPort: number): Promise<void> {
    this.#ports.set(port, listenPort);
    this.#timer ??= setInterval(() => void this.#queue(() => this.#refresh(false)), REFRESH_MS).unref();
    return this.#queue(() => this.#refresh(true));
  }

  /**
   * Stops redirecting `port` (new connections to it reach the app). The table stays, with
   * an empty map after the last port, until `dropTable`: connections it redirected may
   * still be relayed.
   */
  remove(port: number): Promise<void> {
    this.#ports.delete(port);
    if (this.#ports.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return this.#queue(async () => {
        if (this.#ports.size > 0) return this.#refresh(true);
        if (!this.#tableUp) return;
        const r = await nft(this.#nsPath, `flush map inet ${TABLE} redir\n`);
        if (r.code !== 0) this.#log(`could not empty the redirect map: ${r.stderr.trim()}`);
      });
    }
    return this.#queue(() => this.#refresh(true));
  }

  /**
   * Deletes the table once no port is redirected. Only when no redirected connection is
   * left: when the last NAT rules of a namespace go, the kernel forgets the NAT of every
   * connection they redirected (nf_nat_unregister_fn cleans those conntrack entries), and
   * the next packet of each is reset by the app's port.
   */
  dropTable(): Promise<void> {
    return this.#queue(async () => {
      if (this.#ports.size > 0 || !this.#tableUp) return;
      this.#tableUp = false;
      // Only our own: another agent on this node may have made the table since.
      const listed = await nft(this.#nsPath, '', ['list', 'table', 'inet', TABLE]);
      if (listed.code !== 0 || !listed.stdout.includes(`comment "${OWNER}"`)) return;
      const r = await nft(this.#nsPath, `delete table inet ${TABLE}\n`);
      if (r.code !== 0) this.#log(`could not remove the redirect table: ${r.stderr.trim()}`);
    });
  }

  /** Closes the namespace fd (after the last port is gone). */
  close(): Promise<void> {
    return this.#queue(async () => {
      clearInterval(this.#timer);
      closeSync(this.nsFd);
    });
  }

  #queue(step: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(step);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  async #refresh(strict: boolean): Promise<void> {
    if (this.#ports.size === 0) return;
    const elements = [...this.#ports].map(([p, l]) => `${p} timeout ${ELEMENT_TIMEOUT_S}s : ${l}`).join(', ');
    const update = `flush map inet ${TABLE} redir\nadd element inet ${TABLE} redir { ${elements} }\n`;
    let r = this.#tableUp ? await nft(this.#nsPath, update) : { code: 1, stdout: '', stderr: 'no table yet' };
    if (r.code !== 0) {
      // First use, or the table was removed under us: (re)create it with the elements.
      r = await nft(this.#nsPath, tableScript() + update);
      this.#tableUp = r.code === 0;
    }
    if (r.code !== 0) {
      const msg = `nft in the pod's network namespace failed: ${r.stderr.trim() || `exit ${r.code}`}`;
      if (strict) throw new TsmError('TSM_ERR_REDIRECT', msg);
      this.#log(msg);
    }
  }
}

/**
 * Removes `table inet tsmirror` from every network namespace on the node whose owning
 * agent is no longer running (left by a killed agent). Returns how many were removed.
 */
export async function removeStaleTables(log: (line: string) => void): Promise<number> {
  const seen = new Set<string>();
  const paths: string[] = [];
  const consider = (path: string): void => {
    try {
      const st = statSync(path);
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) return;
      seen.add(key);
      paths.push(path);
    } catch {
      // the process or namespace went away
    }
  };
  for (const entry of readdirSync('/proc')) {
    if (/^\d+$/.test(entry)) {
      try {
        readlinkSync(`/proc/${entry}/ns/net`);
        consider(`/proc/${entry}/ns/net`);
      } catch {
        // not ours to see, or gone
      }
    }
  }
  try {
    for (const name of readdirSync('/run/netns')) consider(`/run/netns/${name}`);
  } catch {
    // no named namespaces
  }
  let removed = 0;
  const work = paths.map((path) => async (): Promise<void> => {
    const r = await nft(path, '', ['list', 'table', 'inet', TABLE]);
    if (r.code !== 0) return;
    const m = /comment "tsmirror agent (\d+) (\d+)"/.exec(r.stdout);
    if (m && startTime(Number(m[1])) === m[2]) return; // its agent is alive (maybe us)
    const d = await nft(path, `delete table inet ${TABLE}\n`);
    if (d.code === 0) removed++;
    else log(`could not remove a stale redirect table in ${path}: ${d.stderr.trim()}`);
  });
  // A few at a time: each is an nsenter + nft process.
  for (let i = 0; i < work.length; i += 8) await Promise.all(work.slice(i, i + 8).map((w) => w()));
  return removed;
}
