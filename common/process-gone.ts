/**
 * Whether a process is gone, for sweeping what a killed process left behind (a session's
 * private folder, an agent's key file). Only ESRCH says so: a live process, or one this
 * user may not signal (EPERM), is left alone. A pid reused since then reads as alive, which
 * only delays a sweep.
 */
export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
