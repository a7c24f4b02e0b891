/**
 * The `tsmirror` command line. Errors are caught once here: the message (and its hint)
 * is printed, the stack only with --verbose, and the exit code says what failed.
 */
import { Command, Option } from 'commander';
import { packageVersion } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';
import { DEFAULT_AGENT_OPTIONS, startAgent } from '../agent/server.js';
import { clusterAdmission, parseListen, startHealthServer, type ClusterFlags } from '../agent/cluster.js';
import { registerClusterCommands } from './cluster-commands.js';
import { EXIT, runEnv, runExec, type ExecFlags } from './exec.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function sessionOptions(cmd: Command): Command {
  return cmd
    .option('--agent <url>', 'the agent to use, e.g. ws://127.0.0.1:7777')
    .option('-t, --target <target>', 'what to run as: pod/NAME[/container/C], deployment/NAME (deploy/), statefulset/NAME (sts/), replicaset/NAME (rs/), daemonset/NAME (ds/), job/NAME, rollout/NAME; or pid/<N>, container/<id> with --agent (omit for a targetless session)')
    // Kubernetes targets (issue 3)
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
    .option('-v, --verbose', 'print statistics at exit and stacks on errors');
}

const program = new Command('tsmirror')
  .description('Run a local program as if it were inside a Kubernetes pod: its outgoing connections, DNS lookups and environment come from the pod.')
  .version(packageVersion)
  .enablePositionalOptions()
  .showHelpAfterError('(run with --help for usage)');

sessionOptions(program.command('exec'))
  .description('run a program with the network, names and environment of a target')
  .argument('<command...>', 'the program and its arguments (put them after --)')
  .option('--remote-localhost', 'send loopback connections (127.0.0.1, ::1) through the pod too')
  .option('--local-dest <cidr[:port]>', 'keep connections to this network (and port) local (repeatable)', collect, [])
  .option('--remote-dest <cidr[:port]>', 'send connections to this network (and port) through the pod (repeatable)', collect, [])
  .option('--force', 'run a program the shim cannot intercept (static or setuid) anyway, with a warning')
  .passThroughOptions()
  .addHelpText('after', `
Examples:
  tsmirror exec --target deployment/api -n shop -- curl http://db:8080/
  tsmirror exec --target pod/api-7d9f-x2x/container/app --context staging -- node server.js
  tsmirror exec --target ds/logger --node node-3 -- ./collector
  tsmirror exec --agent ws://127.0.0.1:7777 --target pid/4242 -- curl http://db:8080/
  tsmirror exec --agent ws://127.0.0.1:7777 --target container/3f2a…c9 -- node server.js
  tsmirror exec --agent ws://127.0.0.1:7777 --target pid/4242 --local-dest 10.0.0.0/8:5432 -- psql -h db

Exit codes: the program's own; 128+N if a signal N killed it; ${EXIT.TSMIRROR_FAILED} when tsmirror itself
failed; ${EXIT.CANNOT_RUN} when the program cannot run under tsmirror (statically linked, setuid);
${EXIT.NOT_FOUND} when it was not found.`)
  .action(async (command: string[], flags: ExecFlags) => {
    process.exitCode = await runExec(command, flags);
  });

sessionOptions(program.command('env'))
  .description("print the environment a session would import from the target")
  .addOption(new Option('--format <format>', 'output format').choices(['dotenv', 'json', 'shell']).default('dotenv'))
  .action(async (flags: ExecFlags & { format: string }) => {
    await runEnv({ ...flags, localDest: [], remoteDest: [] });
  });

program.command('agent')
  .description('run the node agent (what the DaemonSet runs); serves sessions over WebSocket')
  .option('--listen <host:port>', 'address to listen on (keep it on loopback: reach it through a port-forward)', '127.0.0.1:7777')
  .option('--heartbeat-interval <ms>', 'how often to ping clients', '2000')
  .option('--heartbeat-timeout <ms>', 'drop a session after this long without a frame from its client', '10000')
  // In a cluster (issue 3): Kubernetes access, policy, probes
  .option('--in-cluster', "use the pod's service account to reach the API server (what the DaemonSet does)")
  .option('--kubeconfig <path>', 'reach the API server with this kubeconfig instead')
  .option('--policy-configmap <namespace/name>', 'the ConfigMap holding the policy (key policy.yaml); re-read when it changes')
  .option('--policy-poll <ms>', 'how often to look for policy changes', '5000')
  .option('--node-name <node>', "this node's name (default: $NODE_NAME)")
  .option('--health-listen <host:port>', 'also serve GET /healthz here, on the pod network, for the kubelet probes')
  .action(async (flags: ClusterFlags & { listen: string; heartbeatInterval: string; heartbeatTimeout: string; healthListen?: string }) => {
    const { host, port } = parseListen(flags.listen, '--listen');
    const log = DEFAULT_AGENT_OPTIONS.log;
    const cluster = await clusterAdmission(flags, log);
    const health = flags.healthListen ? parseListen(flags.healthListen, '--health-listen') : undefined;
    const healthServer = health ? await startHealthServer(health.host, health.port) : undefined;
    const agent = await startAgent({
      host,
      port,
      heartbeatMs: Number(flags.heartbeatInterval),
      heartbeatTimeoutMs: Number(flags.heartbeatTimeout),
      ...(cluster ? { admit: cluster.admit, node: cluster.node } : flags.nodeName ? { node: flags.nodeName } : {}),
    });
    const stop = (): void => {
      cluster?.stop();
      healthServer?.close();
      void agent.close().then(() => process.exit(0));
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });

registerClusterCommands(program); // install, uninstall, status, doctor, targets (issue 3)

function exitCodeFor(err: TsmError): number {
  if (err.code === 'TSM_ERR_PROGRAM_NOT_FOUND') return EXIT.NOT_FOUND;
  if (err.code === 'TSM_ERR_STATIC_BINARY' || err.code === 'TSM_ERR_SETUID') return EXIT.CANNOT_RUN;
  return EXIT.TSMIRROR_FAILED;
}

try {
  await program.parseAsync(process.argv);
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
