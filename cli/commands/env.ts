/** `tsmirror env`: print the environment a session would import (cli/exec.ts runEnv). */
import { Option, type Command } from 'commander';
import type { ExecFlags } from '../exec.js';
import { sessionOptions } from './options.js';

export function registerEnv(program: Command): Command {
  return sessionOptions(program.command('env'))
    .description("print the environment a session would import from the target")
    .addOption(new Option('--format <format>', 'output format').choices(['dotenv', 'json', 'shell']).default('dotenv'))
    .action(async (flags: ExecFlags & { format: string }) => {
      const { runEnv } = await import('../exec.js');
      await runEnv({ ...flags, localDest: [], remoteDest: [] });
    });
}
