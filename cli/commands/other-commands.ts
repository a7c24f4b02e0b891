/**
 * Every command but exec, registered in help's order after it. Loaded only when the
 * command line does not start with `exec` (cli/main.ts), so `exec` parses none of them.
 */
import type { Command } from 'commander';
import { registerAgent } from './agent.js';
import { registerCompletion } from './completion.js';
import { registerConfig } from './config.js';
import { registerDoctor } from './doctor.js';
import { registerEnv } from './env.js';
import { registerInstall } from './install.js';
import { registerRecord } from './record.js';
import { useProjectConfig } from './project-config.js';
import { registerReplay } from './replay.js';
import { registerStatus } from './status.js';
import { registerTargets } from './targets.js';

/** Registers them on `program`; `exec` (already registered) defines the settings env and config share. */
export function registerOtherCommands(program: Command, exec: Command): void {
  const env = registerEnv(program);
  useProjectConfig(env, exec);
  registerConfig(program, exec);
  registerCompletion(program);
  registerAgent(program);
  registerInstall(program); // and uninstall
  registerStatus(program);
  registerDoctor(program);
  registerTargets(program);
  registerRecord(program);
  registerReplay(program);
}
