/** `tsmirror targets`: what can be targeted (cli/targets.ts, loaded when the command runs). */
import { Option, type Command } from 'commander';
import type { KubeFlags } from '../kube.js';
import { kubeOptions } from './options.js';

export function registerTargets(program: Command): void {
  kubeOptions(program.command('targets'))
    .description('list what can be targeted: workloads and standalone pods, with ready pods')
    .option('-n, --namespace <namespace>', 'the namespace (default: the kubeconfig context\'s)')
    .addOption(new Option('-A, --all-namespaces', 'list every namespace'))
    .option('--json', 'print JSON')
    .action(async (flags: KubeFlags & { allNamespaces?: boolean; json?: boolean }) => {
      await (await import('../targets.js')).runTargets(flags);
    });
}
