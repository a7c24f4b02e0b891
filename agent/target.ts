/**
 * Finding the process a session works against: a PID, or a container id looked up in
 * /proc/PID/cgroup (kubelet-style paths; cgroup v1 and v2; containerd, CRI-O, Docker).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { TsmError } from '../protocol/errors.js';
import type { TargetRef } from '../protocol/messages.js';
import { normalizeContainerId } from '../common/container-id.js';

export interface ResolvedTarget {
  /** Host PID of the target (0 for targetless: the agent's own namespaces). */
  pid: number;
  description: string;
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

export async function resolveTarget(ref: TargetRef): Promise<ResolvedTarget> {
  switch (ref.kind) {
    case 'none':
      return { pid: 0, description: 'no target' };
    case 'pid': {
      if (!Number.isSafeInteger(ref.pid) || ref.pid <= 0) throw new TsmError('TSM_ERR_USAGE', `bad pid ${ref.pid}`);
      try {
        await stat(`/proc/${ref.pid}/ns/net`);
      } catch {
        throw new TsmError('TSM_ERR_TARGET_NOT_FOUND', `process ${ref.pid} does not exist on this node`);
      }
      return { pid: ref.pid, description: `pid/${ref.pid}` };
    }
    case 'container': {
      const id = normalizeContainerId(ref.id);
      const pid = await mainPidOfContainer(id);
      return { pid, description: `container/${id.slice(0, 12)} (pid ${pid})` };
    }
  }
}
