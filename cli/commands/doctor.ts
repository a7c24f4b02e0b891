/** `tsmirror doctor`: what exec needs, checked (cli/doctor.ts, loaded when the command runs). */
import type { Command } from 'commander';
import type { DoctorFlags } from '../doctor.js';
import { kubeOptions } from './options.js';

export function registerDoctor(program: Command): void {
  kubeOptions(program.command('doctor'))
    .description('check everything exec needs, and say how to fix what is wrong')
    .argument('[program]', 'also check that this program can be intercepted, and say how (the preload or seccomp) and why')
    .option('-t, --target <target>', 'check the agent on this target\'s node too (e.g. deployment/api)')
    .option('-n, --namespace <namespace>', "the target's namespace (default: the kubeconfig context's)")
    .option('-c, --container <name>', 'the container of the target pod')
    .option('--node <node>', 'for a daemonset target: its pod on this node')
    .option('--agent-namespace <namespace>', 'where the agents run', 'tsmirror-system')
    .option('--json', 'print the checks as JSON')
    .addHelpText('after', `
Checks: the kubeconfig and context; that the API server answers; RBAC for what exec needs
(read pods, port-forward to the agent); the agent on the target's node (present, ready,
reachable, same version as this CLI); that the shim loads here; whether the kernel offers
seccomp user notification (static and Go programs need it); how PROGRAM would be
intercepted (the preload for dynamically linked programs, seccomp for static and Go
ones) and whether it can be. Exit code 1 when something is wrong.

Example:
  tsmirror doctor --target deployment/api -n shop ./server`)
    .action(async (programToCheck: string | undefined, flags: DoctorFlags) => {
      process.exitCode = await (await import('../doctor.js')).runDoctor(flags, programToCheck);
    });
}
