/**
 * Starting a pod of the local node harness: its files (/data, resolv.conf,
 * hosts, hostname, the /etc overlay's dirs), its kubelet-style cgroups, its
 * netns with a veth on the harness bridge, and its process (the root it runs
 * in is built by the script of `init-script.ts`), waited on until the command
 * runs, is ready, and its DNS name resolves.
 *
 * {@link PodSpec} and {@link Pod} are public (`harness.ts` re-exports them);
 * the rest is internal: `Harness.startPod` (in `harness.ts`, behind `addPod`
 * and `addPostgres`) checks the spec, books the pod's {@link PodState} and
 * removes what was made when starting fails; {@link launchPod} does the rest.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KUBEPODS, cgroupRoots } from './cleanup.js';
import { DEFAULT_HOST_DIRS, initScript, lookupUser } from './init-script.js';
import { ipBatch } from './net.js';
import { DEFAULT_PATH, isListening, readOrUndefined, runOk, waitFor } from './system.js';

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

/** A pod of a harness, from the moment it is booked until it is removed (internal). */
export interface PodState {
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

/** What starting a pod needs of its harness (internal). */
export interface PodHost {
  /** The harness id (the first group of the pod's UID). */
  readonly id: string;
  readonly clusterDomain: string;
  readonly dnsIp: string;
  /** The netns holding the bridge `br0`. */
  readonly switchNetns: string;
  /** Rewrites the cluster DNS's hosts file and waits until dnsmasq re-read it. */
  updateDns(): Promise<void>;
}

/**
 * Makes the pod booked in `st` and starts it (the body of `Harness.startPod`,
 * which cleans up when this throws). `env` is the pod's checked environment.
 */
export async function launchPod(
  h: PodHost,
  spec: PodSpec,
  st: PodState,
  env: Record<string, string>,
  prepare: ((dataDir: string) => Promise<void>) | undefined,
): Promise<Pod> {
  const { dir, netns, namespace } = st;
  const uid = podUid(h.id);
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
    `search ${namespace}.svc.${h.clusterDomain} svc.${h.clusterDomain} ${h.clusterDomain}\n` +
      `nameserver ${h.dnsIp}\noptions ndots:5\n`,
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
  await ipBatch(h.switchNetns, [
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
  const dnsDone = h.updateDns();
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
  // argv never is, and the init's names its script. The wrappers the init execs on the way
  // (setpriv, env -i) do not count: inside their execve the kernel sets argv before
  // environ, so for a moment env's environ reads empty, and a command that then fails to
  // start was taken for started.
  const wrappers = new Set(['env', 'setpriv']);
  await waitFor('the pod command to start', timeoutMs, () => {
    if (exited()) throw new Error(`pod exited (${child.exitCode ?? child.signalCode})`);
    const e = readOrUndefined(`/proc/${pid}/environ`);
    const argv = readOrUndefined(`/proc/${pid}/cmdline`);
    const started = e !== undefined && !e.includes(`TSM_HARNESS_INIT=${marker}`) && !!argv && !argv.includes(scriptPath) &&
      !wrappers.has(argv.split('\0')[0] ?? '');
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
    fqdn: `${st.name}.${namespace}.svc.${h.clusterDomain}`,
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

/** What the pod (including its init script) wrote so far to its stdout and stderr logs. */
export function readLogs(dir: string): { stdout: string; stderr: string } {
  return {
    stdout: readOrUndefined(path.join(dir, 'stdout.log')) ?? '',
    stderr: readOrUndefined(path.join(dir, 'stderr.log')) ?? '',
  };
}
