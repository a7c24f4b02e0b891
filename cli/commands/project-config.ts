/**
 * The project config file (.tsmirror/config.json) and the TSMIRROR_* variables, applied to
 * a session command (exec, env) before its action runs.
 */
import type { Command } from 'commander';
import { addEnvironmentVariables, applyConfig, configFileFor, loadConfig, optionSpecs } from '../config.js';

const configFiles = new WeakMap<Command, string | undefined>();

/** The config file `cmd` read its settings from in this run, if any. */
export function configFileOf(cmd: Command): string | undefined {
  return configFiles.get(cmd);
}

/**
 * Gives `cmd` its TSMIRROR_* variables and, before its action, the settings of its config
 * file. The file is checked against all of `execCommand`'s settings; `cmd` takes the ones
 * it has.
 */
export function useProjectConfig(cmd: Command, execCommand: Command): void {
  addEnvironmentVariables(cmd);
  cmd.hook('preAction', (c) => {
    const file = configFileFor(c.getOptionValue('config') as string | undefined);
    configFiles.set(c, file);
    if (!file) return;
    const values = loadConfig(file, execCommand);
    const own = new Set(optionSpecs(c).map((o) => o.key));
    applyConfig(c, Object.fromEntries(Object.entries(values).filter(([k]) => own.has(k))));
  });
}
