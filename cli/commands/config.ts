/** `tsmirror config init|show|schema`: the project config file (cli/config.ts). */
import type { Command } from 'commander';
import { configReference, configSchema, initConfig } from '../config.js';
import { showExecSettings } from './exec.js';

/** The file's settings are exec's: `execCommand` defines them. */
export function registerConfig(program: Command, execCommand: Command): void {
  const configCommand = program.command('config')
    .description('the project config file: .tsmirror/config.json, found from the current directory upwards');
  configCommand.command('init')
    .description('write a starter .tsmirror/config.json (commit it so the whole team shares it)')
    .option('--dir <dir>', 'the project directory', '.')
    .option('-t, --target <target>', 'the target to write into the file', 'deployment/my-service')
    .option('--agent <url>', 'an agent URL to write into the file (for clusters reached directly)')
    .option('--force', 'overwrite an existing file')
    .action((flags: { dir: string; target: string; agent?: string; force?: boolean }) => {
      const settings: Record<string, unknown> = { target: flags.target };
      if (flags.agent) settings.agent = flags.agent;
      const file = initConfig(flags.dir, settings, flags.force ?? false);
      process.stdout.write(`wrote ${file}\nnext: edit it, then run \`tsmirror config show\` to see the effective settings\n`);
    });
  configCommand.command('show')
    .description('print the effective exec settings and where each came from (default, file, environment, flag)')
    .argument('[exec-flags...]', 'exec flags to take into account, e.g. --target pod/api')
    .allowUnknownOption()
    .helpOption(false)
    .action(async (args: string[]) => {
      await showExecSettings(program, args);
    });
  configCommand.command('schema')
    .description('print the JSON Schema of the config file')
    .option('--markdown', 'print the reference documentation instead')
    .action((flags: { markdown?: boolean }) => {
      process.stdout.write(flags.markdown ? configReference(execCommand) : `${JSON.stringify(configSchema(execCommand), null, 2)}\n`);
    });
}
