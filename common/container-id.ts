/**
 * Container ids as Kubernetes reports them (`status.containerStatuses[].containerID`) and
 * as a session's target names them: the CLI normalizes the id it found, the agent the id
 * it was sent, by the same rule.
 */
import { TsmError } from '../protocol/errors.js';

/** Accepts `containerd://<id>`, `cri-o://<id>`, `docker://<id>` or the bare id (12+ hex). */
export function normalizeContainerId(raw: string): string {
  const id = raw.replace(/^[a-z-]+:\/\//, '').toLowerCase();
  if (!/^[0-9a-f]{12,64}$/.test(id)) {
    throw new TsmError('TSM_ERR_USAGE', `"${raw}" is not a container id (expected 12 to 64 hex digits, optionally prefixed by containerd://, cri-o:// or docker://)`);
  }
  return id;
}
