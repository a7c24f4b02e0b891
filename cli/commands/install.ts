/**
 * `tsmirror install` and `tsmirror uninstall`: the agent DaemonSet and what it needs
 * (cli/install.ts, loaded when the command runs: @kubernetes/client-node takes ~75 ms to
 * import even bundled, which `exec` on a pid/container target and `agent` should not pay).
 */
import type { Command } from 'commander';
import { packageVersion } from '../../native/index.js';
import type { InstallFlags } from '../install.js';
import type { KubeFlags } from '../kube.js';
import { kubeOptions } from './options.js';

const DEFAULT_IMAGE = `ghcr.io/tsmirror/agent:${packageVersion}`;

export function registerInstall(program: Command): void {
  kubeOptions(program.command('install'))
    .description('install the tsmirror agent on every node (a cluster admin does this once)')
    .option('-n, --namespace <namespace>', "the agent's namespace", 'tsmirror-system')
    .option('--image <image>', 'the agent image (build and push it as docs/install.md says)', DEFAULT_IMAGE)
    .option('--dry-run', 'print the manifests as YAML instead of applying them')
    .option('--wait <seconds>', 'wait this long for an agent to be ready on every node (0: do not wait)', '180')
    .option('-q, --quiet', 'print nothing but errors')
    .addHelpText('after', `
Applies, with server-side apply (field manager "tsmirror"): the namespace (Pod Security
"privileged"), the agent's service account and least RBAC, the policy ConfigMap (created
once; a re-install keeps your edits), a ClusterRole tsmirror-user to bind to developers,
and the DaemonSet. Then waits until the agent is ready on every node.

Examples:
  tsmirror install --image registry.example.com/tsmirror/agent:0.1.0
  tsmirror install --dry-run > tsmirror.yaml     # review, or kubectl apply -f it yourself`)
    .action(async (flags: InstallFlags) => {
      await (await import('../install.js')).runInstall(flags);
    });

  kubeOptions(program.command('uninstall'))
    .description('remove the tsmirror agent and everything install created')
    .option('-n, --namespace <namespace>', "the agent's namespace", 'tsmirror-system')
    .option('-q, --quiet', 'print nothing but errors')
    .action(async (flags: KubeFlags & { quiet?: boolean }) => {
      await (await import('../install.js')).runUninstall(flags);
    });
}
