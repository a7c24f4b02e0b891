/**
 * The project config file, `.tsmirror/config.json`: every `exec` option has a key named
 * after its long flag in camelCase (`--fs-mode` → `fsMode`). The keys, their types and
 * the JSON Schema are derived from the command's own option definitions, so a new flag
 * is a new key with nothing else to keep in step (schema/config.schema.json is that
 * schema written out; a test keeps it equal to what the code derives).
 *
 * Precedence, highest first: a flag on the command line, a TSMIRROR_* environment
 * variable, the config file, the built-in default.
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { createRequire } from 'node:module';
import type { Ajv as AjvClass, ErrorObject } from 'ajv';
import type { Command, Option } from 'commander';
import { packageRoot } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';

export const CONFIG_DIR = '.tsmirror';
export const CONFIG_NAME = 'config.json';
export const SCHEMA_PATH = join(packageRoot, 'schema', 'config.schema.json');

/** Options that make no sense in a shared file. */
const NOT_IN_FILE = new Set(['config', 'help', 'version']);

type Kind = 'boolean' | 'string' | 'string[]';

export interface OptionSpec {
  key: string;
  flag: string;
  kind: Kind;
  description: string;
  choices?: readonly string[];
  env: string;
}

function kindOf(o: Option): Kind {
  if (!o.required && !o.optional) return 'boolean';
  if (o.variadic || Array.isArray(o.defaultValue)) return 'string[]';
  return 'string';
}

/** TSMIRROR_ + the long flag in upper snake case: --fs-mode → TSMIRROR_FS_MODE. */
export function envName(long: string): string {
  return `TSMIRROR_${long.replace(/^--/, '').replace(/-/g, '_').toUpperCase()}`;
}

/** The keys a config file may set for `cmd`, from its option definitions. */
export function optionSpecs(cmd: Command): OptionSpec[] {
  const specs: OptionSpec[] = [];
  for (const o of cmd.options) {
    const key = o.attributeName();
    if (!o.long || o.negate || NOT_IN_FILE.has(key) || o.hidden) continue;
    const spec: OptionSpec = { key, flag: o.long, kind: kindOf(o), description: o.description, env: envName(o.long) };
    if (o.argChoices) spec.choices = o.argChoices;
    specs.push(spec);
  }
  return specs;
}

/**
 * Lets every option of `cmd` also come from a TSMIRROR_* environment variable (shown in
 * --help). Commander wires environment variables when an option is added, so for
 * options already defined the listener it would have added is added here.
 */
export function addEnvironmentVariables(cmd: Command): void {
  for (const o of cmd.options) {
    const key = o.attributeName();
    if (!o.long || o.negate || key === 'help' || key === 'version' || o.envVar) continue;
    o.env(envName(o.long));
    cmd.on(`optionEnv:${o.name()}`, (val?: string) => {
      let value: unknown = true;
      if (o.required || o.optional) {
        const previous = cmd.getOptionValue(key) as unknown;
        value = o.parseArg ? o.parseArg(val ?? '', previous === undefined ? o.defaultValue : previous) : val;
      }
      cmd.setOptionValueWithSource(key, value, 'env');
    });
  }
}

/** The JSON Schema of the config file for `cmd`. */
export function configSchema(cmd: Command): Record<string, unknown> {
  const properties: Record<string, unknown> = {
    $schema: { type: 'string', description: 'the JSON Schema of this file, for editor completion' },
  };
  for (const s of optionSpecs(cmd)) {
    const item: Record<string, unknown> = { type: 'string' };
    if (s.choices) item.enum = [...s.choices];
    const description = `${s.description} (${s.flag}; environment ${s.env})`;
    properties[s.key] = s.kind === 'boolean'
      ? { type: 'boolean', description }
      : s.kind === 'string[]'
        ? { description, anyOf: [item, { type: 'array', items: item }] }
        : { ...item, description };
  }
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'tsmirror project configuration (.tsmirror/config.json)',
    description: 'Settings for `tsmirror exec`; each key is an exec flag in camelCase. Strings may use ${VAR} and ${VAR:-default}.',
    type: 'object',
    additionalProperties: false,
    properties,
  };
}

/**
 * The config file that applies in `start`: `.tsmirror/config.json` in it or the nearest
 * parent, stopping after the repository root (a directory holding .git) or the home
 * directory.
 */
export function findConfigFile(start: string, home: string = homedir()): string | undefined {
  let dir = resolve(start);
  for (;;) {
    const candidate = join(dir, CONFIG_DIR, CONFIG_NAME);
    if (existsSync(candidate)) return candidate;
    if (existsSync(join(dir, '.git')) || dir === resolve(home)) return undefined;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/** The known key nearest to `key` (case and dashes ignored), if it is near enough. */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  const norm = (k: string): string => k.toLowerCase().replace(/[-_]/g, '');
  let best: { k: string; d: number } | undefined;
  for (const k of known) {
    const d = levenshtein(norm(key), norm(k));
    if (!best || d < best.d) best = { k, d };
  }
  return best && best.d <= Math.max(2, Math.floor(key.length / 3)) ? best.k : undefined;
}

/** Expands ${VAR} and ${VAR:-default} in a string; `where` names the key for errors. */
export function expandVariables(text: string, env: NodeJS.ProcessEnv, where: string): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback: string | undefined) => {
    const value = env[name];
    if (value !== undefined && value !== '') return value;
    if (fallback !== undefined) return fallback;
    throw new TsmError('TSM_ERR_CONFIG', `${where}: \${${name}} is not set in the environment`, {
      hint: `set ${name}, or give a default: \${${name}:-value}`,
    });
  });
}

function keyPath(e: ErrorObject): string {
  const path = e.instancePath.replace(/^\//, '').split('/').filter(Boolean);
  return path.length === 0 ? '(top level)' : path.map((p, i) => (/^\d+$/.test(p) ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

function valueAt(data: unknown, e: ErrorObject): unknown {
  let v: unknown = data;
  for (const p of e.instancePath.split('/').slice(1)) v = (v as Record<string, unknown> | undefined)?.[p];
  return v;
}

function describeError(file: string, data: unknown, e: ErrorObject, specs: OptionSpec[]): TsmError {
  const known = specs.map((s) => s.key);
  if (e.keyword === 'additionalProperties') {
    const key = String((e.params as { additionalProperty: string }).additionalProperty);
    const near = nearestKey(key, known);
    return new TsmError('TSM_ERR_CONFIG', `${file}: unknown key "${key}"${near ? ` — did you mean "${near}"?` : ''}`, {
      hint: `allowed keys: ${known.join(', ')}`,
    });
  }
  const top = e.instancePath.split('/')[1] ?? '';
  const spec = specs.find((s) => s.key === top);
  const allowed = spec?.choices
    ? `one of ${spec.choices.map((c) => JSON.stringify(c)).join(', ')}`
    : spec?.kind === 'boolean' ? 'true or false' : spec?.kind === 'string[]' ? 'a string or an array of strings' : spec ? 'a string' : 'an object';
  return new TsmError('TSM_ERR_CONFIG', `${file}: ${keyPath(e)} is ${JSON.stringify(valueAt(data, e))}, but it must be ${allowed}`, {
    hint: spec ? `${spec.key} is the ${spec.flag} flag: ${spec.description}` : `see ${SCHEMA_PATH}`,
  });
}

/**
 * Reads, validates and expands a config file for `cmd`. Returns the values by key;
 * repeatable options come back as arrays.
 */
export function loadConfig(file: string, cmd: Command, env: NodeJS.ProcessEnv = process.env): Record<string, boolean | string | string[]> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TsmError('TSM_ERR_CONFIG', `cannot read the config file ${file}: ${(err as Error).message}`, { hint: 'check the path given to --config' });
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new TsmError('TSM_ERR_CONFIG', `${file} is not valid JSON: ${(err as Error).message}`, { hint: 'the file is plain JSON: no comments, no trailing commas' });
  }
  const specs = optionSpecs(cmd);
  // ajv is loaded only when there is a file to check (it costs tens of ms at start).
  const { Ajv } = createRequire(import.meta.url)('ajv') as { Ajv: typeof AjvClass };
  const ajv = new Ajv({ allErrors: false, strict: true });
  const validate = ajv.compile(configSchema(cmd));
  if (!validate(data)) {
    const first = validate.errors?.find((e) => e.keyword === 'additionalProperties') ?? validate.errors?.[0];
    throw first ? describeError(file, data, first, specs) : new TsmError('TSM_ERR_CONFIG', `${file} is not a valid tsmirror config`);
  }
  const out: Record<string, boolean | string | string[]> = {};
  for (const s of specs) {
    const v = (data as Record<string, unknown>)[s.key];
    if (v === undefined) continue;
    if (typeof v === 'boolean') out[s.key] = v;
    else if (Array.isArray(v)) out[s.key] = v.map((x, i) => expandVariables(String(x), env, `${file}: ${s.key}[${i}]`));
    else {
      const expanded = expandVariables(String(v), env, `${file}: ${s.key}`);
      out[s.key] = s.kind === 'string[]' ? [expanded] : expanded;
    }
  }
  return out;
}

/** Where each setting came from, in the words `config show` prints. */
export type SettingSource = 'default' | 'file' | 'environment' | 'flag' | 'unset';

const SOURCE_WORDS: Record<string, SettingSource> = { default: 'default', config: 'file', env: 'environment', cli: 'flag', implied: 'default' };

/**
 * Applies a loaded config to `cmd` after commander has parsed flags and environment:
 * a file value is taken only where nothing stronger set the option.
 */
export function applyConfig(cmd: Command, values: Record<string, boolean | string | string[]>): void {
  for (const [key, value] of Object.entries(values)) {
    const source = cmd.getOptionValueSource(key);
    if (source === undefined || source === 'default') cmd.setOptionValueWithSource(key, value, 'config');
  }
}

/** The config file for this run: --config, else the nearest one; undefined if none. */
export function configFileFor(explicit: string | undefined, cwd: string = process.cwd()): string | undefined {
  if (explicit) {
    if (!existsSync(explicit) || !statSync(explicit).isFile()) {
      throw new TsmError('TSM_ERR_CONFIG', `--config ${explicit}: no such file`, { hint: 'give the path of a JSON file, e.g. .tsmirror/config.json' });
    }
    return resolve(explicit);
  }
  return findConfigFile(cwd);
}

/** Every setting of `cmd` with its effective value and where it came from. */
export function describeSettings(cmd: Command): Array<{ key: string; value: unknown; source: SettingSource }> {
  return optionSpecs(cmd).map((s) => {
    const value = cmd.getOptionValue(s.key) as unknown;
    const raw = cmd.getOptionValueSource(s.key);
    const source: SettingSource = raw === undefined ? 'unset' : (SOURCE_WORDS[raw] ?? 'default');
    return { key: s.key, value, source };
  });
}

/** The text `config show` prints. */
export function formatSettings(rows: ReturnType<typeof describeSettings>, file: string | undefined): string {
  const lines = [`config file: ${file ?? '(none found)'}`];
  const width = Math.max(...rows.map((r) => r.key.length));
  for (const r of rows) {
    const shown = r.value === undefined ? '-' : Array.isArray(r.value) ? (r.value.length ? r.value.map((v) => JSON.stringify(v)).join(' ') : '[]') : JSON.stringify(r.value);
    lines.push(`${r.key.padEnd(width)}  ${shown.padEnd(30)}  ${r.source}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Writes a starter config in `dir`/.tsmirror/config.json; returns its path. */
export function initConfig(dir: string, settings: Record<string, unknown>, force: boolean): string {
  const folder = join(resolve(dir), CONFIG_DIR);
  const file = join(folder, CONFIG_NAME);
  if (existsSync(file) && !force) {
    throw new TsmError('TSM_ERR_CONFIG', `${file} already exists`, { hint: 'edit it, or run `tsmirror config init --force` to overwrite it' });
  }
  mkdirSync(folder, { recursive: true });
  // A schema inside the project is referenced relatively, so the file works for everyone.
  const rel = relative(folder, SCHEMA_PATH);
  const schemaRef = rel.startsWith(`..${sep}`) && !rel.split(sep).includes('node_modules') ? SCHEMA_PATH : rel;
  writeFileSync(file, `${JSON.stringify({ $schema: schemaRef, ...settings }, null, 2)}\n`);
  return file;
}

/** The config reference (docs/config-reference.md), written from the schema. */
export function configReference(cmd: Command): string {
  const lines = [
    '# Config reference: `.tsmirror/config.json`',
    '',
    '<!-- Generated by `npm run schema` from the exec options; do not edit by hand. -->',
    '',
    'tsmirror looks for `.tsmirror/config.json` in the current directory and its parents, stopping at the',
    'repository root (a directory with `.git`) or your home directory; `--config FILE` names one directly.',
    'Each key is an `exec` flag in camelCase. Precedence, highest first: the flag, the `TSMIRROR_*`',
    'environment variable, the file, the default. Strings may use `${VAR}` and `${VAR:-default}`.',
    '`tsmirror config show` prints the effective settings and where each came from.',
    '',
    '| key | type | flag | environment | meaning |',
    '|---|---|---|---|---|',
  ];
  for (const s of optionSpecs(cmd)) {
    const type = s.choices ? s.choices.map((c) => `\`"${c}"\``).join(' \\| ') : s.kind === 'string[]' ? 'string or string[]' : s.kind;
    lines.push(`| \`${s.key}\` | ${type} | \`${s.flag}\` | \`${s.env}\` | ${s.description.replace(/\|/g, '\\|').replace(/</g, '&lt;')} |`);
  }
  lines.push('', 'Example:', '', '```json', JSON.stringify({ $schema: './node_modules/tsmirror/schema/config.schema.json', target: 'deployment/api', namespace: 'shop' }, null, 2), '```', '');
  return lines.join('\n');
}
