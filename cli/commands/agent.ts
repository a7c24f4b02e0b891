/**
 * `tsmirror agent`: the node agent (what the DaemonSet runs). Its options are declared
 * here, so that --help and completion load none of the agent; what they start is
 * agent/command.ts (runAgent, and AgentFlags naming these options), loaded when the
 * command runs.
 */
import type { Command } from 'commander';

export function registerAgent(program: Command): void {
  program.command('agent')
    .description('run the node agent (what the DaemonSet runs); serves sessions over WebSocket')
    .option('--listen <host:port>', 'address to listen on (keep it on loopback: reach it through a port-forward)', '127.0.0.1:7777')
    .option('--heartbeat-interval <ms>', 'how often to ping clients', '1000')
    .option('--heartbeat-timeout <ms>', 'after this long without a frame from its client a session is dropped, or kept for its client to resume (exec --reconnect-grace)', '10000')
    .option('--max-reconnect-grace <seconds>', 'the longest a dropped session is kept for its client to resume it, whatever the client asks', '600')
    // In a cluster: Kubernetes access, policy, probes
    .option('--in-cluster', "use the pod's service account to reach the API server (what the DaemonSet does)")
    .option('--kubeconfig <path>', 'reach the API server with this kubeconfig instead')
    .option('--policy-configmap <namespace/name>', 'the ConfigMap holding the policy (key policy.yaml); re-read when it changes')
    .option('--policy-poll <ms>', 'how often to look for policy changes', '5000')
    .option('--node-name <node>', "this node's name (default: $NODE_NAME)")
    .option('--health-listen <host:port>', 'also serve GET /healthz here, on the pod network, for the kubelet probes')
    .option('--session-memory <MiB>', "the most one session's streams may hold in the agent's memory; above it the agent reads that session's connection no further until half has drained", '64')
    .option('--insecure-no-auth', 'local mode: serve every local user, not only the one who started the agent (whose key in ~/.tsmirror/agents/ the CLI sends); never use it on a shared machine')
    .action(async (flags) => {
      // The CLI's one way into the agent: its other commands need none of it.
      const { runAgent } = await import('../../agent/command.js');
      await runAgent(flags);
    });
}
