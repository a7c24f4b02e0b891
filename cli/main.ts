/**
 * The `tsmirror` command line: the program, one module per command (cli/commands/), and
 * errors caught once here: the message (and its hint) is printed, the stack only with
 * --verbose, and the exit code says what failed. Each command loads what it runs only when
 * it runs, so --help, --version and completion stay quick and `exec` loads no agent,
 * Kubernetes client or config validator it does not use.
 */
import { Command } from 'commander';
import { packageVersion } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';
import { EXIT } from './launch.js';
import { registerAgent } from './commands/agent.js';
import { registerCompletion } from './commands/completion.js';
import { registerConfig } from './commands/config.js';
import { registerDoctor } from './commands/doctor.js';
import { registerEnv } from './commands/env.js';
import { registerExec } from './commands/exec.js';
import { registerInstall } from './commands/install.js';
import { registerRecord } from './commands/record.js';
import { useProjectConfig } from './commands/project-config.js';
import { registerReplay } from './commands/replay.js';
import { registerStatus } from './commands/status.js';
import { registerTargets } from './commands/targets.js';
import { mark } from './start-trace.js';

mark('bundle loaded (main.js and its imports)');

function buildProgram(): Command {
  const program = new Command('tsmirror')
    .description("Run a local program as if it were inside a Kubernetes pod: its outgoing connections, DNS lookups, files and environment come from the pod, and the pod's incoming traffic is mirrored to it or stolen by it.")
    .version(packageVersion)
    .enablePositionalOptions()
    .showHelpAfterError('(run with --help for usage)');
  const exec = registerExec(program);
  const env = registerEnv(program);
  for (const session of [exec, env]) useProjectConfig(session, exec);
  registerConfig(program, exec);
  registerCompletion(program);
  registerAgent(program);
  registerInstall(program); // and uninstall
  registerStatus(program);
  registerDoctor(program);
  registerTargets(program);
  registerRecord(program);
  registerReplay(program);
  return program;
}

function exitCodeFor(err: TsmError): number {
  if (err.code === 'TSM_ERR_PROGRAM_NOT_FOUND') return EXIT.NOT_FOUND;
  if (err.code === 'TSM_ERR_STATIC_BINARY' || err.code === 'TSM_ERR_SETUID' || err.code === 'TSM_ERR_SECCOMP_UNAVAILABLE') return EXIT.CANNOT_RUN;
  return EXIT.TSMIRROR_FAILED;
}

try {
  const program = buildProgram();
  mark('commands defined');
  await program.parseAsync(process.argv);
  mark('command done');
} catch (err) {
  const verbose = process.argv.includes('--verbose') || process.argv.includes('-v');
  if (err instanceof TsmError) {
    process.stderr.write(`tsmirror: ${err.message} [${err.code}]\n`);
    if (err.hint) process.stderr.write(`  → ${err.hint}\n`);
    if (verbose && err.stack) process.stderr.write(`${err.stack}\n`);
    process.exitCode = exitCodeFor(err);
  } else {
    process.stderr.write(`tsmirror: internal error: ${err instanceof Error ? (verbose ? err.stack : err.message) : String(err)} [TSM_ERR_INTERNAL]\n`);
    process.exitCode = EXIT.TSMIRROR_FAILED;
  }
}
