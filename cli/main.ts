/**
 * The `tsmirror` command line: the program, one module per command (cli/commands/), and
 * errors caught once here: the message (and its hint) is printed, the stack only with
 * --verbose, and the exit code says what failed. Each command loads what it runs only when
 * it runs, so --help, --version and completion stay quick and `exec` loads no agent,
 * Kubernetes client or config validator it does not use, and no other command's
 * definition.
 */
import { Command } from 'commander';
import { packageVersion } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';
import { EXIT } from './launch.js';
import { registerExec } from './commands/exec.js';
import { useProjectConfig } from './commands/project-config.js';
import { mark } from './start-trace.js';

mark('bundle loaded (main.js and its imports)');

/**
 * The program with all its commands, or, when the command line starts with `exec` (root
 * options come before the command: positional options), with exec alone: the other
 * commands' definitions are neither loaded nor built on exec's start. Help, errors and
 * suggestions for anything else see every command.
 */
async function buildProgram(argv: string[]): Promise<Command> {
  const program = new Command('tsmirror')
    .description("Run a local program as if it were inside a Kubernetes pod: its outgoing connections, DNS lookups, files and environment come from the pod, and the pod's incoming traffic is mirrored to it or stolen by it.")
    .version(packageVersion)
    .enablePositionalOptions()
    .showHelpAfterError('(run with --help for usage)');
  const exec = registerExec(program);
  useProjectConfig(exec, exec);
  if (argv[2] !== 'exec') {
    const { registerOtherCommands } = await import('./commands/other-commands.js');
    registerOtherCommands(program, exec);
  }
  return program;
}

function exitCodeFor(err: TsmError): number {
  if (err.code === 'TSM_ERR_PROGRAM_NOT_FOUND') return EXIT.NOT_FOUND;
  if (err.code === 'TSM_ERR_STATIC_BINARY' || err.code === 'TSM_ERR_SETUID' || err.code === 'TSM_ERR_SECCOMP_UNAVAILABLE') return EXIT.CANNOT_RUN;
  return EXIT.TSMIRROR_FAILED;
}

try {
  const program = await buildProgram(process.argv);
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
