/**
 * The init script of a harness pod: what `/bin/sh` runs as PID 1 of the pod's
 * new pid namespace to join its cgroups, build its root (tmpfs with host
 * directories bound in, an overlay /etc with the pod's own resolv.conf, hosts
 * and hostname, fresh kernel filesystems and scratch space, /data),
 * `pivot_root` into it and exec the pod's command as its user.
 *
 * Internal to the local node harness (`pod.ts` writes the script, `harness.ts`
 * looks up the postgres user).
 *
 * @module
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { shQuote } from './system.js';

const SPECIAL_DIRS = new Set(['/', '/proc', '/sys', '/dev', '/tmp', '/run', '/data', '/etc']);
const LIB_LINKS = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'];
const REPO_TOP = `/${fileURLToPath(import.meta.url).split('/')[1] ?? 'work'}`;
/** The repository (the package root): pods run its files (fixtures, the CLI itself). */
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..').replace(/\/dist$/, '');
// A clone under /tmp or /run (as a CI may make) is bound by its own path, after the pod's
// private /tmp and /run are mounted; otherwise its top-level directory is bound.
/** Default of `PodSpec.hostDirs` (`pod.ts`). */
export const DEFAULT_HOST_DIRS = ['/usr', '/var', '/opt', '/srv', '/home', '/root', SPECIAL_DIRS.has(REPO_TOP) ? REPO_ROOT : REPO_TOP];

/** A user's ids, from the host's /etc/passwd. */
export interface UserIds {
  name: string;
  uid: number;
  gid: number;
}

/** Looks a user up in the host's /etc/passwd (the pod's /etc is an overlay of it). */
export function lookupUser(name: string): UserIds {
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && f[3] !== undefined) return { name, uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new Error(`no user ${name} in /etc/passwd`);
}

/** What {@link initScript} builds the pod from. */
export interface InitScriptInput {
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
export function initScript(i: InitScriptInput): string {
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
