/**
 * The key of an agent started by hand (local mode: no cluster to vouch for users). The
 * agent writes a random key into a file only its user can read, under that user's home;
 * `tsmirror exec --agent ws://HOST:PORT` of the same user finds it by the port and sends
 * it in the hello. Another local user cannot read it, so the agent refuses them.
 */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { processGone } from './process-gone.js';

/**
 * This user's home as the password database has it, not $HOME: a program run with another
 * HOME (tests, sudo -E, tools that isolate their config) still finds its user's agents.
 */
function userHome(): string {
  return userInfo().homedir;
}

/** Where the agents of this user keep their keys. */
export function agentKeyDir(home = userHome()): string {
  return join(home, '.tsmirror', 'agents');
}

/** The key file of the agent listening on `port`. */
export function agentKeyPath(port: number, home = userHome()): string {
  return join(agentKeyDir(home), `${port}.key`);
}

interface KeyFile { key: string; url: string; pid: number; pidns?: string }

/** This process's PID namespace: a pid in a key file means something only within it. */
function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
}

/** Creates a fresh key for the agent at `url` and writes it (0600 in a 0700 folder). */
export function writeAgentKey(url: string, port: number, home = userHome()): { key: string; path: string; remove: () => void } {
  const dir = agentKeyDir(home);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  sweepStaleAgentKeys(dir);
  const key = randomBytes(32).toString('base64url');
  const path = agentKeyPath(port, home);
  const temporary = `${path}.${process.pid}.tmp`;
  const body: KeyFile = { key, url, pid: process.pid, pidns: pidNamespace() };
  writeFileSync(temporary, `${JSON.stringify(body)}\n`, { mode: 0o600, flag: 'wx' });
  renameSync(temporary, path);
  return {
    key, path,
    remove: () => {
      try {
        const current = JSON.parse(readFileSync(path, 'utf8')) as Partial<KeyFile>;
        if (current.key === key) rmSync(path, { force: true }); // not a newer agent's on the same port
      } catch {
        // gone already
      }
    },
  };
}

/** Removes the key files of agents that were killed without a chance to remove their own. */
export function sweepStaleAgentKeys(dir = agentKeyDir()): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!/^\d+\.key$/.test(name)) continue;
    const path = join(dir, name);
    let file: Partial<KeyFile> | undefined;
    try {
      file = JSON.parse(readFileSync(path, 'utf8')) as Partial<KeyFile>;
    } catch (err) {
      if (!(err instanceof SyntaxError)) continue; // gone meanwhile; an unreadable one is swept
    }
    if (file) {
      const { pid, pidns } = file;
      // An agent in another PID namespace (a container, a test's namespace) cannot be
      // judged from here: its pid would look dead, or name someone else.
      if (typeof pid !== 'number' || pid === process.pid || (pidns ?? '') !== pidNamespace() || !processGone(pid)) continue;
    }
    rmSync(path, { force: true });
    removed++;
  }
  return removed;
}

/**
 * The key for the agent at `url`: $TSMIRROR_AGENT_KEY when set (an agent reached through a
 * tunnel on another port), else the key file of the agent this user started on that port.
 */
export function readAgentKey(url: string, home = userHome()): string | undefined {
  const given = process.env.TSMIRROR_AGENT_KEY;
  if (given) return given;
  let port: number;
  try {
    const u = new URL(url);
    port = Number(u.port || (u.protocol === 'wss:' ? 443 : 80));
  } catch {
    return undefined;
  }
  const path = agentKeyPath(port, home);
  try {
    if (!lstatSync(path).isFile()) return undefined;
    const file = JSON.parse(readFileSync(path, 'utf8')) as Partial<KeyFile>;
    return typeof file.key === 'string' ? file.key : undefined;
  } catch {
    return undefined;
  }
}

/** Compares a presented key with the agent's in constant time. */
export function keyMatches(presented: unknown, expected: string): boolean {
  if (typeof presented !== 'string') return false;
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
