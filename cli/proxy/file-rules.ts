/**
 * The pod-file path rules (`--fs-mode`, `--fs-local`, `--fs-remote`, `--fs-not-found`, the
 * default lists). They are computed here, once, and handed to the shim (`fs.config`), which
 * applies them itself: a local path never leaves the program.
 */
import { homedir } from 'node:os';
import { dirname } from 'node:path';
import { TsmError } from '../../protocol/errors.js';

export type FsMode = 'read' | 'write' | 'local';

export interface FileRules {
  mode: FsMode;
  /** Regexes (POSIX extended, as the shim's regcomp reads them), in precedence order. */
  local: string[];
  remote: string[];
  notFound: string[];
  /** Directory trees that stay local: the working directory, the program's directory, the home directory. */
  keep: string[];
}

// The default lists the shim applies after these rules: protocol/shim-wire.ts DEFAULT_PATH_RULES.

function validRegex(flag: string, re: string): string {
  try {
    new RegExp(re);
  } catch (err) {
    throw new TsmError('TSM_ERR_USAGE', `${flag} "${re}" is not a valid regular expression: ${(err as Error).message}`, { hint: 'patterns are POSIX extended regular expressions matched against absolute paths, e.g. --fs-local "^/srv/cache/"' });
  }
  return re;
}

export function fileRules(opts: { mode?: string | undefined; local: string[]; remote: string[]; notFound: string[]; programPath: string; cwd: string; targetless: boolean }): FileRules {
  const mode = opts.mode ?? 'read';
  if (mode !== 'read' && mode !== 'write' && mode !== 'local') {
    throw new TsmError('TSM_ERR_USAGE', `--fs-mode must be read, write or local, not "${mode}"`, { hint: 'read (default): the pod\'s files, writes stay private; write: writes reach the pod; local: no pod files' });
  }
  // "/" as a kept tree would make every path local; a session started from / keeps nothing.
  const keep = [opts.cwd, dirname(opts.programPath), homedir()].filter((d) => d && d !== '/');
  return {
    mode: opts.targetless ? 'local' : mode,
    local: opts.local.map((r) => validRegex('--fs-local', r)),
    remote: opts.remote.map((r) => validRegex('--fs-remote', r)),
    notFound: opts.notFound.map((r) => validRegex('--fs-not-found', r)),
    keep: [...new Set(keep)],
  };
}
