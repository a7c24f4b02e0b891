/**
 * Finding the process a session works against: a PID, or a container id looked up in
 * /proc/PID/cgroup (kubelet-style paths; cgroup v1 and v2; containerd, CRI-O, Docker).
 */
import { closeSync, constants as fsConstants, openSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { TsmError } from '../protocol/errors.js';
import type { TargetRef } from '../protocol/messages.js';
import { normalizeContainerId } from '../common/container-id.js';

export interface ResolvedTarget {
  /** Host PID of the target (0 for targetless: the agent's own namespaces). */
  pid: number;
  description: string;
  /**
   * The target's /proc directory as the agent holds it: `/proc/self/fd/N` of a descriptor of
   * `/proc/<pid>` opened at resolution (a pidfd, in the kernel's words). Everything read
   * about the target goes through it, so once the process exits every read fails (ESRCH)
   * even when its PID has been given to another process. Empty when targetless.
   */
  proc: string;
  /** The descriptor behind `proc` (-1 when targetless); closed by {@link releaseTarget}. */
  procFd: number;
}

/** Closes the target's /proc descriptor (the session is over). */
export function releaseTarget(target: ResolvedTarget): void {
  if (target.procFd < 0) return;
  try {
    closeSync(target.procFd);
  } catch {
    // already closed
  }
  target.procFd = -1;
}

/** True while the process the target was resolved to still runs (its PID may have been reused otherwise). */
export function targetAlive(target: ResolvedTarget): boolean {
  if (target.procFd < 0) return target.pid === 0;
  try {
    readFileSync(`${target.proc}/stat`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Opens `/proc/<pid>` and keeps it. `expectContainer`: the container id the process must
 * still belong to once held (its PID could have been reused between the lookup and the open).
 */
function holdProcess(pid: number, description: string, expectContainer?: string): ResolvedTarget {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}`, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  } catch {
    throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', `process ${pid} does not exist on this node`);
  }
  const target: ResolvedTarget = { pid, description, proc: `/proc/self/fd/${fd}`, procFd: fd };
  try {
    readFileSync(`${target.proc}/stat`); // still alive once held
    if (expectContainer !== undefined && !containerIdsInCgroup(readFileSync(`${target.proc}/cgroup`, 'utf8')).some((c) => c.startsWith(expectContainer))) {
      throw new Error('moved');
    }
  } catch {
    releaseTarget(target);
    throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', `process ${pid} exited while the agent looked it up${expectContainer ? ` (container ${expectContainer.slice(0, 12)})` : ''}`);
  }
  return target;
}

const HEX64 = /(?:^|[^0-9a-f])([0-9a-f]{64})(?=[^0-9a-f]|$)/g;

/**
 * The container ids named in a /proc/PID/cgroup text. Recognises cgroupfs paths
 * (`/kubepods/besteffort/pod<uid>/<id>`, `/docker/<id>`) and systemd scopes
 * (`cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`).
 */
export function containerIdsInCgroup(text: string): string[] {
  const ids = new Set<string>();
  for (const line of text.split('\n')) {
    const path = line.split(':').slice(2).join(':');
    for (const m of path.matchAll(HEX64)) ids.add(m[1] as string);
  }
  return [...ids];
}

async function readCgroup(pid: number): Promise<string | undefined> {
  try {
    return await readFile(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined; // the process exited while we scanned
  }
}

async function parentPid(pid: number): Promise<number> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return Number(fields[1]);
  } catch {
    return 0;
  }
}

/** All PIDs whose cgroup names the container (a prefix of at least 12 hex digits matches). */
export async function pidsOfContainer(id: string, procRoot = '/proc'): Promise<number[]> {
  const entries = await readdir(procRoot);
  const pids: number[] = [];
  await Promise.all(entries.map(async (name) => {
    if (!/^\d+$/.test(name)) return;
    const text = await readCgroup(Number(name));
    if (text === undefined) return;
    if (containerIdsInCgroup(text).some((c) => c.startsWith(id))) pids.push(Number(name));
  }));
  return pids.sort((a, b) => a - b);
}

/** The container's main process: the one whose parent is outside the container. */
export async function mainPidOfContainer(id: string): Promise<number> {
  const pids = await pidsOfContainer(id);
  if (pids.length === 0) {
    throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', `no process on this node belongs to container ${id.slice(0, 12)}`,
      { hint: 'check that the pod is running on the node this agent serves and that the container id is current' });
  }
  const inside = new Set(pids);
  for (const pid of pids) {
    if (!inside.has(await parentPid(pid))) return pid;
  }
  return pids[0] as number;
}

/** Resolves a target and holds its process (see {@link ResolvedTarget.proc}); release it with {@link releaseTarget}. */
export async function resolveTarget(ref: TargetRef): Promise<ResolvedTarget> {
  switch (ref.kind) {
    case 'none':
      return { pid: 0, description: 'no target', proc: '', procFd: -1 };
    case 'pid': {
      if (!Number.isSafeInteger(ref.pid) || ref.pid <= 0) throw new TsmError('TSM_ERR_USAGE', `bad pid ${ref.pid}`);
      return holdProcess(ref.pid, `pid/${ref.pid}`);
    }
    case 'container': {
      const id = normalizeContainerId(ref.id);
      const pid = await mainPidOfContainer(id);
      return holdProcess(pid, `container/${id.slice(0, 12)} (pid ${pid})`, id);
    }
  }
}
