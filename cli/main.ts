/**
 * The `tsmirror` command line. Errors are caught once here: the message (and its hint)
 * is printed, the stack only with --verbose, and the exit code says what failed.
 */
import { Command, Option } from 'commander';
import { packageVersion } from '../native/index.js';
import { TsmError } from '../protocol/errors.js';
import { describeDefaultPathRules } from '../protocol/shim-constants.js';
import type { ExecFlags } from './exec.js';
import { EXIT } from './launch.js';
import { SHELLS, complete, completionScript, type TargetLister } from './completion.js';
import {
  addEnvironmentVariables, applyConfig, configFileFor, configReference, configSchema, describeSettings, formatSettings, initConfig,
  loadConfig, optionSpecs,
} from './config.js';
import type { ClusterFlags } from '../agent/cluster.js';
import { registerClusterCommands } from './cluster-commands.js';

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
    .option('-v, --verbose', 'print statistics at exit and stacks on errors')
    .option('--config <file>', 'read settings from this file instead of the nearest .tsmirror/config.json');
}

const program = new Command('tsmirror')
  .description("Run a local program as if it were inside a Kubernetes pod: its outgoing connections, DNS lookups, files and environment come from the pod, and the pod's incoming traffic is mirrored to it or stolen by it.")
  .version(packageVersion)
  .enablePositionalOptions()
  .showHelpAfterError('(run with --help for usage)');

const execCommand = sessionOptions(program.command('exec'))
  .description('run a program with the network, names and environment of a target')
  .argument('<command...>', 'the program and its arguments (put them after --)')
  .option('--remote-localhost', 'send loopback connections (127.0.0.1, ::1) through the pod too')
  .option('--local-dest <cidr[:port]>', 'keep connections to this network (and port) local (repeatable)', collect, [])
  .option('--remote-dest <cidr[:port]>', 'send connections to this network (and port) through the pod (repeatable)', collect, [])
  .option('--force', 'run a program the shim cannot intercept (static or setuid) anyway, with a warning')
  .option('-w, --watch <paths...>', 'restart the program when files under these paths change; the session stays up')
  .option('--watch-ignore <regex>', 'ignore changed paths matching this (repeatable; .git, node_modules and build output are always ignored)', collect, [])
  .option('--watch-grace <ms>', 'how long a stopping program gets after SIGTERM before SIGKILL', '3000')
  .addOption(new Option('--fs-mode <mode>', "pod files: read (the pod's files; writes go to a private copy), write (writes reach the pod), local (no pod files)").choices(['read', 'write', 'local']).default('read'))
  .option('--fs-local <regex>', 'paths matching this POSIX extended regex are read locally (repeatable; wins over the others)', collect, [])
  .option('--fs-remote <regex>', 'paths matching this regex are read from the pod (repeatable)', collect, [])
  .option('--fs-not-found <regex>', 'paths matching this regex do not exist for the program (ENOENT; repeatable)', collect, [])
  // incoming traffic (issue 4)
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

Exit codes: the program's own; 128+N if a signal N killed it; ${EXIT.TSMIRROR_FAILED} when tsmirror itself
failed; ${EXIT.CANNOT_RUN} when the program cannot run under tsmirror (statically linked, setuid);
${EXIT.NOT_FOUND} when it was not found.`)
  .action(async (command: string[], flags: ExecFlags) => {
    if (showSettingsOnly) {
      process.stdout.write(formatSettings(describeSettings(execCommand), configFiles.get(execCommand)));
      return;
    }
    const { runExec } = await import('./exec.js'); // loaded when needed: a fast start for everything else
    process.exitCode = await runExec(command, flags);
  });

const envCommand = sessionOptions(program.command('env'))
  .description("print the environment a session would import from the target")
  .addOption(new Option('--format <format>', 'output format').choices(['dotenv', 'json', 'shell']).default('dotenv'))
  .action(async (flags: ExecFlags & { format: string }) => {
    const { runEnv } = await import('./exec.js');
    await runEnv({ ...flags, localDest: [], remoteDest: [] });
  });

/**
 * Names of targets in the cluster, for completion: what `tsmirror targets` lists, and
 * every pod for `pod/`. Gives up after 2 s (a shell must not hang on an unreachable cluster).
 */
const targetLister: TargetLister = async (prefix, flags) => {
  const { loadKube } = await import('./kube.js');
  const { listTargets } = await import('./targets.js');
  const kube = loadKube({
    ...(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}),
    ...(flags.context ? { context: flags.context } : {}),
    ...(flags.namespace ? { namespace: flags.namespace } : {}),
  });
  const work = (async (): Promise<string[]> => {
    const names = (await listTargets(kube, kube.namespace)).map((r) => r.target);
    if (prefix.startsWith('pod/')) {
      for (const p of (await kube.core.listNamespacedPod({ namespace: kube.namespace })).items) names.push(`pod/${p.metadata?.name ?? ''}`);
    }
    return [...new Set(names)].sort();
  })();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string[]>((resolve) => (timer = setTimeout(() => resolve([]), 2000)));
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
};

// ---- the project config file (.tsmirror/config.json) and TSMIRROR_* variables
let showSettingsOnly = false;
const configFiles = new Map<Command, string | undefined>();
for (const cmd of [execCommand, envCommand]) {
  addEnvironmentVariables(cmd);
  cmd.hook('preAction', (c) => {
    const file = configFileFor(c.getOptionValue('config') as string | undefined);
    configFiles.set(c, file);
    if (!file) return;
    // The file is checked against all exec settings; each command takes the ones it has.
    const values = loadConfig(file, execCommand);
    const own = new Set(optionSpecs(c).map((o) => o.key));
    applyConfig(c, Object.fromEntries(Object.entries(values).filter(([k]) => own.has(k))));
  });
}

const configCommand = program.command('config')
  .description('the project config file: .tsmirror/config.json, found from the current directory upwards');
configCommand.command('init')
  .description('write a starter .tsmirror/config.json (commit it so the whole team shares it)')
  .option('--dir <dir>', 'the project directory', '.')
  .option('-t, --target <target>', 'the target to write into the file', 'deployment/my-service')
  .option('--agent <url>', 'an agent URL to write into the file (for clusters reached directly)')
  .option('--force', 'overwrite an existing file')
  .action((flags: { dir: string; target: string; agent?: string; force?: boolean }) => {
    const settings: Record<string, unknown> = { target: flags.target };
    if (flags.agent) settings.agent = flags.agent;
    const file = initConfig(flags.dir, settings, flags.force ?? false);
    process.stdout.write(`wrote ${file}\nnext: edit it, then run \`tsmirror config show\` to see the effective settings\n`);
  });
configCommand.command('show')
  .description('print the effective exec settings and where each came from (default, file, environment, flag)')
  .argument('[exec-flags...]', 'exec flags to take into account, e.g. --target pod/api')
  .allowUnknownOption()
  .helpOption(false)
  .action(async (args: string[]) => {
    showSettingsOnly = true;
    await program.parseAsync(['exec', ...args, '--', 'true'], { from: 'user' });
  });
configCommand.command('schema')
  .description('print the JSON Schema of the config file')
  .option('--markdown', 'print the reference documentation instead')
  .action((flags: { markdown?: boolean }) => {
    process.stdout.write(flags.markdown ? configReference(execCommand) : `${JSON.stringify(configSchema(execCommand), null, 2)}\n`);
  });

// ---- shell completion
program.command('completion')
  .description('print the shell completion script for bash, zsh or fish')
  .argument('<shell>', `one of ${SHELLS.join(', ')}`)
  .addHelpText('after', `
Install:
  bash:  echo 'source <(tsmirror completion bash)' >> ~/.bashrc
  zsh:   echo 'source <(tsmirror completion zsh)' >> ~/.zshrc
  fish:  tsmirror completion fish > ~/.config/fish/completions/tsmirror.fish`)
  .action((shell: string) => {
    process.stdout.write(completionScript(shell));
  });
program.command('__complete', { hidden: true })
  .argument('<index>')
  .argument('[words...]')
  .helpOption(false)
  .passThroughOptions()
  .allowUnknownOption()
  .action(async (index: string, words: string[]) => {
    const candidates = await complete(program, Number(index), words, targetLister);
    if (candidates.length > 0) process.stdout.write(`${candidates.join('\n')}\n`);
    process.exit(0); // a cluster request that timed out must not keep the shell waiting
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
    // The CLI's other commands need none of the agent: it is loaded here.
    const { DEFAULT_AGENT_OPTIONS, startAgent } = await import('../agent/server.js');
    const { clusterAdmission, parseListen, startHealthServer } = await import('../agent/cluster.js');
    const { host, port } = parseListen(flags.listen, '--listen');
    const log = DEFAULT_AGENT_OPTIONS.log;
    const cluster = await clusterAdmission(flags, log);
    const health = flags.healthListen ? parseListen(flags.healthListen, '--health-listen') : undefined;
    let healthServer: Awaited<ReturnType<typeof startHealthServer>> | undefined;
    let agent: Awaited<ReturnType<typeof startAgent>>;
    try {
      healthServer = health ? await startHealthServer(health.host, health.port, log) : undefined;
      agent = await startAgent({
        host,
        port,
        heartbeatMs: Number(flags.heartbeatInterval),
        heartbeatTimeoutMs: Number(flags.heartbeatTimeout),
        ...(cluster ? { admit: cluster.admit, node: cluster.node } : flags.nodeName ? { node: flags.nodeName } : {}),
      });
    } catch (err) {
      // The policy poller and the health listener would keep a failed agent alive.
      cluster?.stop();
      healthServer?.close();
      throw err;
    }
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
