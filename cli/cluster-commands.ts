/**
 * The cluster commands: install, uninstall, status, doctor, targets (registered on the
 * `tsmirror` program by cli/main.ts).
 */
import { Option, type Command } from 'commander';
import { packageVersion } from '../native/index.js';
import type { DoctorFlags } from './doctor.js';
import type { InstallFlags } from './install.js';
import type { KubeFlags } from './kube.js';

// The commands load their modules when they run: @kubernetes/client-node takes ~75 ms to
// import even bundled, which `exec` on a pid/container target and `agent` should not pay.
const DEFAULT_IMAGE = `ghcr.io/tsmirror/agent:${packageVersion}`;

function kubeOptions(cmd: Command): Command {
  return cmd
    .option('--context <context>', 'the kubeconfig context to use (default: the current one)')
    .option('--kubeconfig <path>', 'the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)');
}

export function registerClusterCommands(program: Command): void {
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
      await (await import('./install.js')).runInstall(flags);
    });

  kubeOptions(program.command('uninstall'))
    .description('remove the tsmirror agent and everything install created')
    .option('-n, --namespace <namespace>', "the agent's namespace", 'tsmirror-system')
    .option('-q, --quiet', 'print nothing but errors')
    .action(async (flags: KubeFlags & { quiet?: boolean }) => {
      await (await import('./install.js')).runUninstall(flags);
    });

  kubeOptions(program.command('status'))
    .description('the agents (one per node): version, readiness and the sessions each serves')
    .option('--agent-namespace <namespace>', 'where the agents run', 'tsmirror-system')
    .option('--json', 'print JSON')
    .action(async (flags: KubeFlags & { agentNamespace?: string; json?: boolean }) => {
      await (await import('./status.js')).runStatus(flags);
    });

  kubeOptions(program.command('doctor'))
    .description('check everything exec needs, and say how to fix what is wrong')
    .argument('[program]', 'also check that this program can be intercepted (dynamically linked, not setuid)')
    .option('-t, --target <target>', 'check the agent on this target\'s node too (e.g. deployment/api)')
    .option('-n, --namespace <namespace>', "the target's namespace (default: the kubeconfig context's)")
    .option('-c, --container <name>', 'the container of the target pod')
    .option('--node <node>', 'for a daemonset target: its pod on this node')
    .option('--agent-namespace <namespace>', 'where the agents run', 'tsmirror-system')
    .option('--json', 'print the checks as JSON')
    .addHelpText('after', `
Checks: the kubeconfig and context; that the API server answers; RBAC for what exec needs
(read pods, port-forward to the agent); the agent on the target's node (present, ready,
reachable, same version as this CLI); that the shim loads here; that PROGRAM is
dynamically linked. Exit code 1 when something is wrong.

Example:
  tsmirror doctor --target deployment/api -n shop ./server`)
    .action(async (program: string | undefined, flags: DoctorFlags) => {
      process.exitCode = await (await import('./doctor.js')).runDoctor(flags, program);
    });

  kubeOptions(program.command('targets'))
    .description('list what can be targeted: workloads and standalone pods, with ready pods')
    .option('-n, --namespace <namespace>', 'the namespace (default: the kubeconfig context\'s)')
    .addOption(new Option('-A, --all-namespaces', 'list every namespace'))
    .option('--json', 'print JSON')
    .action(async (flags: KubeFlags & { allNamespaces?: boolean; json?: boolean }) => {
      await (await import('./targets.js')).runTargets(flags);
    });
}
