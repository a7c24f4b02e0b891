/**
 * A session's private folder ($TMPDIR/tsmirror-<CLI pid>-XXXXXX, 0700): the shim's unix
 * socket and the pod-file scratch space live there. The CLI's pid in the name lets a later
 * session remove the folder of one that was SIGKILLed.
 */
import { chmodSync, lstatSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processGone } from '../../common/process-gone.js';

const DIR_PREFIX = 'tsmirror-';

/** Creates this session's private folder; returns its path. */
export function createSessionFolder(dir = tmpdir()): string {
  const path = mkdtempSync(join(dir, `${DIR_PREFIX}${process.pid}-`));
  chmodSync(path, 0o700);
  return path;
}

/**
 * Removes the private folders that sessions killed without a chance to clean up (SIGKILL,
 * a crash) left in the temporary folder: those of this user whose CLI pid is gone.
 * Returns how many it removed. Cheap enough to run once per session, off its start path.
 */
export function sweepStaleSessionDirs(dir = tmpdir()): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  const uid = process.getuid?.() ?? -1;
  const pattern = new RegExp(`^${DIR_PREFIX}(\\d+)-[A-Za-z0-9]{6}$`);
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || !processGone(pid)) continue;
    const path = join(dir, name);
    try {
      const st = lstatSync(path);
      if (!st.isDirectory() || st.uid !== uid) continue;
      rmSync(path, { recursive: true, force: true });
      removed++;
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  return removed;
}
