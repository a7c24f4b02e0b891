/** `tsmirror status`: the agents, one per node (cli/status.ts, loaded when the command runs). */
import type { Command } from 'commander';
import type { KubeFlags } from '../kube.js';
import { kubeOptions } from './options.js';

export function registerStatus(program: Command): void {
  kubeOptions(program.command('status'))
    .description('the agents (one per node): version, readiness and the sessions each serves')
    .option('--agent-namespace <namespace>', 'where the agents run', 'tsmirror-system')
    .option('--json', 'print JSON')
    .action(async (flags: KubeFlags & { agentNamespace?: string; json?: boolean }) => {
      await (await import('../status.js')).runStatus(flags);
    });
}
