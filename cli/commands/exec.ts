/**
 * `tsmirror exec`: run a program with the network, names, files and environment of a
 * target (cli/exec.ts, loaded when the command runs).
 */
import { Option, type Command } from 'commander';
import { describeDefaultPathRules } from '../../protocol/shim-constants.js';
import { describeSettings, formatSettings } from '../config.js';
import type { ExecFlags } from '../exec.js';
import { EXIT } from '../launch.js';
import { collect, sessionOptions } from './options.js';
import { configFileOf } from './project-config.js';
import { mark } from '../start-trace.js';

let showSettingsOnly = false;

/**
 * `tsmirror config show`: parses exec with these flags (so the config file, the
 * variables and the flags apply as they would), then prints the settings instead of
 * running anything.
 */
export async function showExecSettings(program: Command, execFlags: string[]): Promise<void> {
  showSettingsOnly = true;
  await program.parseAsync(['exec', ...execFlags, '--', 'true'], { from: 'user' });
}

export function registerExec(program: Command): Command {
  const exec = sessionOptions(program.command('exec'))
    .description('run a program with the network, names and environment of a target')
    .argument('<command...>', 'the program and its arguments (put them after --)')
    .option('--remote-localhost', 'send loopback connections (127.0.0.1, ::1) through the pod too')
    .option('--local-dest <cidr[:port]>', 'keep connections to this network (and port) local (repeatable)', collect, [])
    .option('--remote-dest <cidr[:port]>', 'send connections to this network (and port) through the pod (repeatable)', collect, [])
    .option('--force', 'run a program tsmirror cannot intercept (setuid; static where the kernel lacks seccomp user notification) anyway, unintercepted, with a warning')
    .addOption(new Option('--intercept <how>', 'how the program\'s calls are intercepted: preload (the shim, for dynamically linked libc programs), seccomp (a supervisor answers its system calls: static binaries, Go), auto (preload, or seccomp for static and Go programs)').choices(['auto', 'preload', 'seccomp']).default('auto'))
    .option('-w, --watch <paths...>', 'restart the program when files under these paths change; the session stays up')
    .option('--watch-ignore <regex>', 'ignore changed paths matching this (repeatable; .git, node_modules and build output are always ignored)', collect, [])
    .option('--watch-grace <ms>', 'how long a stopping program gets after SIGTERM before SIGKILL', '3000')
    .option('--reconnect-grace <seconds>', "when the connection to the agent drops or stalls, reconnect and resume the session within this time (nothing lost); after it, or if the agent restarted, a new session is opened (open connections reset); 0: the session ends with its connection", '60')
    .addOption(new Option('--fs-mode <mode>', "pod files: read (the pod's files; writes go to a private copy), write (writes reach the pod), local (no pod files)").choices(['read', 'write', 'local']).default('read'))
    .option('--fs-local <regex>', 'paths matching this POSIX extended regex are read locally (repeatable; wins over the others)', collect, [])
    .option('--fs-remote <regex>', 'paths matching this regex are read from the pod (repeatable)', collect, [])
    .option('--fs-not-found <regex>', 'paths matching this regex do not exist for the program (ENOENT; repeatable)', collect, [])
    // incoming traffic: mirror or steal
    .option('--mirror', "when the program listens on a port, give it a copy of the pod's incoming connections on that port (default); the pod's app still answers")
    .option('--steal', "when the program listens on a port, take the pod's incoming traffic on it (all of it, or only requests matching --http-* filters)")
    .option('--http-header <header>', 'steal only HTTP requests with this header, given as "NAME: VALUE" (repeatable, all must match; NAME case-insensitive, VALUE a regex matching the whole value)', collect, [])
    .option('--http-path <regex>', 'steal only HTTP requests whose path (without the query) matches this regex whole')
    .option('--http-method <method>', 'steal only HTTP requests with this method')
    .option('--port-map <LOCAL:REMOTE>', 'the program listens on LOCAL for the pod\'s port REMOTE (repeatable)', collect, [])
    .option('--ports <list>', 'only these pod ports (comma-separated) take incoming traffic; other listeners stay local')
    .passThroughOptions()
    .addHelpText('after', `
Examples:
  tsmirror exec --target deployment/api -n shop -- curl http://db:8080/
  tsmirror exec --target pod/api-7d9f-x2x/container/app --context staging -- node server.js
  tsmirror exec --target ds/logger --node node-3 -- ./collector
  tsmirror exec --agent ws://127.0.0.1:7777 --target pid/4242 -- curl http://db:8080/
  tsmirror exec --agent ws://127.0.0.1:7777 --target container/3f2a…c9 -- node server.js
  tsmirror exec --agent ws://127.0.0.1:7777 --target pid/4242 --local-dest 10.0.0.0/8:5432 -- psql -h db
  tsmirror exec --watch src -- node src/server.js     (restart on save; settings from .tsmirror/config.json)
  tsmirror exec --agent ws://127.0.0.1:7777 --target pid/4242 -- cat /data/config.json

${`Files: ${describeDefaultPathRules()} --fs-local, --fs-remote and --fs-not-found (in that precedence) override.`.replace(/(.{1,90})(?: |$)/g, '$1\n')}  tsmirror exec --agent ws://127.0.0.1:7777 --target pid/4242 -- python3 -m http.server 8080
      (mirror: the program sees a copy of every connection to the pod's port 8080)
  tsmirror exec --agent ws://127.0.0.1:7777 --target pid/4242 --steal --http-header 'x-dev: alice' -- node server.js
      (only requests with "x-dev: alice" reach the program; the pod's app answers the rest)

Interception: dynamically linked programs (curl, python, node, ...) get the preloaded
shim; static binaries and Go programs (which make their own system calls) run under a
seccomp supervisor (Linux 5.9+), children included. \`tsmirror doctor PROGRAM\` says which.

Exit codes: the program's own; 128+N if a signal N killed it; ${EXIT.TSMIRROR_FAILED} when tsmirror itself
failed; ${EXIT.CANNOT_RUN} when the program cannot run under tsmirror (setuid; static without seccomp support);
${EXIT.NOT_FOUND} when it was not found.`)
    .action(async (command: string[], flags: ExecFlags) => {
      if (showSettingsOnly) {
        process.stdout.write(formatSettings(describeSettings(exec), configFileOf(exec)));
        return;
      }
      mark('exec: parsed, config applied');
      const { runExec } = await import('../exec.js'); // loaded when needed: a fast start for everything else
      mark('exec: cli/exec.js loaded');
      process.exitCode = await runExec(command, flags);
    });
  return exec;
}
