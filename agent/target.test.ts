import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { containerIdsInCgroup, resolveTarget } from './target.js';

const id = 'a'.repeat(8) + '0123456789abcdef'.repeat(3) + 'b'.repeat(8);

describe('container ids in /proc/PID/cgroup', () => {
  it.each([
    ['cgroup v1, cgroupfs driver (containerd)', `12:pids:/kubepods/besteffort/pod1f2e-33/${id}\n0::/`],
    ['cgroup v2, systemd driver (containerd)', `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e_33.slice/cri-containerd-${id}.scope`],
    ['cgroup v2, CRI-O', `0::/kubepods.slice/kubepods-pod1f2e.slice/crio-${id}.scope`],
    ['cgroup v2, Docker', `0::/system.slice/docker-${id}.scope`],
    ['cgroup v1, Docker', `4:memory:/docker/${id}\n1:name=systemd:/docker/${id}`],
  ])('finds the id: %s', (_name, text) => {
    expect(containerIdsInCgroup(text)).toEqual([id]);
  });

  it('ignores hex runs that are not exactly 64 long', () => {
    expect(containerIdsInCgroup(`0::/kubepods/pod/${id}ff`)).toEqual([]);
    expect(containerIdsInCgroup('0::/user.slice/session-3.scope')).toEqual([]);
  });

  it('resolves a live pid and refuses a missing one', async () => {
    const child = spawn('sleep', ['5']);
    try {
      const t = await resolveTarget({ kind: 'pid', pid: child.pid ?? 0 });
      expect(t.pid).toBe(child.pid);
    } finally {
      child.kill('SIGKILL');
    }
    await expect(resolveTarget({ kind: 'pid', pid: 2 ** 30 })).rejects.toMatchObject({ code: 'TSM_ERR_TARGET_NOT_FOUND' });
    await expect(resolveTarget({ kind: 'container', id: 'f'.repeat(64) })).rejects.toMatchObject({ code: 'TSM_ERR_TARGET_NOT_FOUND' });
  });
});
