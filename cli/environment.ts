/**
 * The program's environment: the pod's variables merged into the local ones, except the
 * variables that describe this machine and user, which stay local.
 */
import { TsmError } from '../protocol/errors.js';

/** Never imported from the pod: they describe this machine, this user or this session. */
export const LOCAL_ONLY = [
  'PATH', 'HOME', 'PWD', 'OLDPWD', 'SHELL', 'TERM', 'USER', 'LOGNAME', 'LANG', 'LC_*', 'TMPDIR',
  'DISPLAY', 'SSH_*', 'XDG_*', 'LD_PRELOAD', 'LD_LIBRARY_PATH', 'TSMIRROR_*',
];

export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

function matcher(globs: string[]): (name: string) => boolean {
  const res = globs.flatMap((g) => g.split(',')).map((g) => g.trim()).filter(Boolean).map(globToRegExp);
  return (name) => res.some((re) => re.test(name));
}

export interface EnvOptions {
  /** Only pod variables matching one of these globs are imported (default: all). */
  include: string[];
  /** Pod variables matching one of these globs are not imported. */
  exclude: string[];
  /** `KEY=VALUE` settings that win over everything. */
  set: string[];
}

export function parseEnvSetting(text: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new TsmError('TSM_ERR_USAGE', `--env "${text}" must be KEY=VALUE`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}

/** The pod variables a session imports, after the local-only list and the filters. */
export function importedFromPod(pod: Record<string, string>, options: Pick<EnvOptions, 'include' | 'exclude'>): Record<string, string> {
  const localOnly = matcher(LOCAL_ONLY);
  const included = options.include.length > 0 ? matcher(options.include) : () => true;
  const excluded = matcher(options.exclude);
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(pod)) {
    if (!localOnly(key) && included(key) && !excluded(key)) out[key] = value;
  }
  return out;
}

export function mergeEnvironment(local: NodeJS.ProcessEnv, pod: Record<string, string>, options: EnvOptions): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(local)) if (v !== undefined) out[k] = v;
  Object.assign(out, importedFromPod(pod, options));
  for (const setting of options.set) {
    const [k, v] = parseEnvSetting(setting);
    out[k] = v;
  }
  return out;
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export function formatEnvironment(env: Record<string, string>, format: 'dotenv' | 'json' | 'shell'): string {
  const keys = Object.keys(env).sort();
  switch (format) {
    case 'json':
      return `${JSON.stringify(Object.fromEntries(keys.map((k) => [k, env[k]])), null, 2)}\n`;
    case 'shell':
      return keys.map((k) => `export ${k}=${shellQuote(env[k] ?? '')}\n`).join('');
    case 'dotenv':
      return keys.map((k) => `${k}=${JSON.stringify(env[k] ?? '')}\n`).join('');
  }
}
