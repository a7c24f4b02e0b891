/**
 * Option sets that several commands share: a session's (exec, env) and the kubeconfig's
 * (the cluster commands).
 */
import type { Command } from 'commander';

/** For repeatable options: each use adds to the list. */
export const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** What a session needs: the agent or the Kubernetes target, what it imports, how it talks. */
export function sessionOptions(cmd: Command): Command {
  return cmd
    .option('--agent <url>', 'the agent to use, e.g. ws://127.0.0.1:7777')
    .option('-t, --target <target>', 'what to run as: pod/NAME[/container/C], deployment/NAME (deploy/), statefulset/NAME (sts/), replicaset/NAME (rs/), daemonset/NAME (ds/), job/NAME, rollout/NAME; or pid/<N>, container/<id> with --agent (omit for a targetless session)')
    // Kubernetes targets
    .option('-n, --namespace <namespace>', "the target's namespace (default: the kubeconfig context's)")
    .option('--context <context>', 'the kubeconfig context to use (default: the current one)')
    .option('--kubeconfig <path>', 'the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)')
    .option('-c, --container <name>', 'the container of the pod (default: its default-container annotation, the only one, or the first that is not a known sidecar)')
    .option('--node <node>', 'for a daemonset target: use its pod on this node')
    .option('--agent-namespace <namespace>', 'where the tsmirror agents run', 'tsmirror-system')
    .option('--env-include <globs>', 'import only pod variables matching these globs (comma-separated, repeatable)', collect, [])
    .option('--env-exclude <globs>', 'do not import pod variables matching these globs (comma-separated, repeatable)', collect, [])
    .option('-e, --env <KEY=VALUE>', 'set a variable for the program (repeatable; wins over the pod and local values)', collect, [])
    .option('-q, --quiet', 'print nothing but errors')
    .option('-v, --verbose', 'print statistics at exit and stacks on errors')
    .option('--config <file>', 'read settings from this file instead of the nearest .tsmirror/config.json');
}

/** The kubeconfig and its context, for the commands that talk to the API server. */
export function kubeOptions(cmd: Command): Command {
  return cmd
    .option('--context <context>', 'the kubeconfig context to use (default: the current one)')
    .option('--kubeconfig <path>', 'the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)');
}
