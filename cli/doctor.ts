/**
 * `tsmirror doctor [--target …] [-- PROGRAM]`: checks, in order, everything `exec` needs —
 * kubeconfig and context, the API server, RBAC, the agent on the target's node and its
 * version, the local shim, the program — and prints each failure with its fix.
 */
import { spawnSync } from 'node:child_process';
import { packageVersion, shimPath } from '../native/index.js';
import { PROTOCOL_VERSION } from '../protocol/messages.js';
import { TsmError } from '../protocol/errors.js';
import { checkInterceptable, chooseInterception, findProgram, inspectProgram, seccompSupport } from './launch.js';
import { httpStatus, kubeError, loadKube, type Kube, type KubeFlags } from './kube.js';
import { SESSION_GROUP, SESSION_PLURAL, SESSION_VERSION } from '../common/session-object.js';
import { resolveKubeTarget } from './kube-target.js';
import { AGENT_NAMESPACE, findAgent, listAgentPods, type AgentPod } from './agent-pod.js';
import { agentGet, type AgentAuth, type AgentStatus } from './status.js';
import { parseTarget } from './target.js';

export interface Check { ok: boolean | 'warn'; what: string; fix?: string }

export interface DoctorFlags extends KubeFlags {
  target?: string;
  container?: string;
  node?: string;
  agentNamespace?: string;
  json?: boolean;
}

function fail(what: string, fix: string | undefined): Check {
  return fix === undefined ? { ok: false, what } : { ok: false, what, fix };
}

function fromError(err: unknown, prefix: string): Check {
  if (err instanceof TsmError) return fail(`${prefix}: ${err.message}`, err.hint);
  return fail(`${prefix}: ${err instanceof Error ? err.message : String(err)}`, undefined);
}

async function can(kube: Kube, verb: string, resource: string, namespace: string, subresource?: string): Promise<boolean> {
  // `deployments.apps` → resource deployments in group apps (kubectl's notation).
  const dot = resource.indexOf('.');
  const attributes = { namespace, verb, resource: dot < 0 ? resource : resource.slice(0, dot), group: dot < 0 ? '' : resource.slice(dot + 1), ...(subresource ? { subresource } : {}) };
  const review = await kube.authz.createSelfSubjectAccessReview({
    body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: attributes } },
  });
  return review.status?.allowed === true;
}

function checkShim(): Check {
  let shim: string;
  try {
    shim = shimPath();
  } catch (err) {
    return fromError(err, 'the shim');
  }
  const r = spawnSync('/bin/true', [], { env: { ...process.env, LD_PRELOAD: shim }, encoding: 'utf8', timeout: 10000 });
  if (r.status !== 0 || /ld\.so|cannot be preloaded|error while loading/i.test(r.stderr ?? '')) {
    return fail(`the shim ${shim} does not load: ${(r.stderr ?? '').trim() || `exit ${r.status ?? r.signal ?? '?'}`}`, 'rebuild it for this machine: npm run build:native (needs g++ and make)');
  }
  return { ok: true, what: `the shim loads (${shim})` };
}

/** Whether the kernel offers seccomp user notification (static and Go programs need it). */
function checkSeccomp(): Check {
  const support = seccompSupport();
  return support.ok
    ? { ok: true, what: 'seccomp user notification works here: static and Go programs can be intercepted' }
    : { ok: 'warn', what: `seccomp user notification is unavailable (${support.reason}): static and Go programs cannot be intercepted`, fix: 'run on Linux 5.9 or later with seccomp enabled (outside a container whose seccomp policy forbids filters); dynamically linked programs still work through the preload' };
}

function checkProgram(program: string): Check {
  try {
    const path = findProgram(program, process.env.PATH);
    const info = inspectProgram(path);
    const interception = chooseInterception(info, 'auto', process.env.PATH);
    const what = `${path} is ${info.kind === 'script' ? 'a script' : info.kind === 'static' ? 'statically linked' : info.kind === 'dynamic' ? 'dynamically linked' : 'not an ELF program'}${info.go ? ' (Go)' : ''}: intercepted by ${interception.how === 'seccomp' ? 'the seccomp supervisor' : 'the preloaded shim'} (${interception.why})`;
    let warnings: string[];
    try {
      warnings = checkInterceptable(info, false, process.env.PATH, interception.how);
    } catch (err) {
      return fromError(err, path);
    }
    if (warnings.length > 0) return { ok: 'warn', what, fix: warnings.join('; ') };
    return { ok: true, what };
  } catch (err) {
    return fromError(err, `the program ${program}`);
  }
}

/** Whether the agent verifies who opens sessions; an agent that does not is loud news. */
function authCheck(agent: AgentPod, auth: AgentAuth | undefined): Check {
  switch (auth) {
    case 'cluster':
      return { ok: true, what: `the agent on node ${agent.node} authenticates sessions: each needs a Session object (sessions.tsmirror.dev) its user created` };
    case 'local-key':
      return { ok: 'warn', what: `the agent on node ${agent.node} runs in local mode: it serves only the user who started it (its key file), not cluster users`, fix: 'install the cluster agent with `tsmirror install` (docs/install.md)' };
    case 'none':
      return fail(`INSECURE: the agent on node ${agent.node} authenticates no one (--insecure-no-auth): whoever can reach it (a port-forward is enough) gets every pod on its node`,
        'reinstall it with `tsmirror install`, which runs it in cluster mode; never run an agent with --insecure-no-auth in a cluster');
    default:
      return { ok: 'warn', what: `the agent on node ${agent.node} does not say how it authenticates sessions (older than this CLI)`, fix: `upgrade the agent (tsmirror install --image …:${packageVersion})` };
  }
}

async function checkAgentVersion(kube: Kube, agent: AgentPod): Promise<Check[]> {
  const checks: Check[] = [];
  const fix = `run matching versions: upgrade the agent (tsmirror install --image …:${packageVersion}) or install tsmirror ${agent.version ?? '(the agent\'s version)'} locally`;
  if (agent.version !== undefined && agent.version !== packageVersion) {
    checks.push(fail(`version skew: the agent on node ${agent.node} is tsmirror ${agent.version}, this CLI is ${packageVersion}`, fix));
  }
  try {
    const s = await agentGet<AgentStatus>(kube, agent, '/status');
    checks.push({ ok: true, what: `the agent ${agent.name} answers through the API server's port-forward (${s.sessions.length} sessions)` });
    checks.push(authCheck(agent, s.auth));
    if (s.protocol !== PROTOCOL_VERSION) checks.push(fail(`the agent on node ${agent.node} speaks protocol ${s.protocol}, this CLI speaks ${PROTOCOL_VERSION}`, fix));
    else if (s.version !== packageVersion && s.version !== agent.version) checks.push(fail(`version skew: the agent on node ${agent.node} runs tsmirror ${s.version}, this CLI is ${packageVersion}`, fix));
    else if (checks.every((c) => c.ok)) checks.push({ ok: true, what: `the agent and this CLI are both tsmirror ${packageVersion} (protocol ${PROTOCOL_VERSION})` });
  } catch (err) {
    checks.push(fromError(err, `the agent ${agent.name} cannot be reached through the port-forward`));
  }
  return checks;
}

/** Runs every check it can; later checks that depend on a failed one are skipped. */
export async function diagnose(flags: DoctorFlags, program: string | undefined): Promise<Check[]> {
  const checks: Check[] = [];
  const local = (): Check[] => [checkShim(), checkSeccomp(), ...(program ? [checkProgram(program)] : [])];
  let kube: Kube;
  try {
    kube = loadKube(flags);
    checks.push({ ok: true, what: `kubeconfig ${kube.source}, context ${kube.context}, namespace ${kube.namespace}` });
  } catch (err) {
    return [...checks, fromError(err, 'kubeconfig'), ...local()];
  }
  try {
    const v = await kube.version.getCode();
    checks.push({ ok: true, what: `the API server ${kube.server} answers (Kubernetes ${v.gitVersion})` });
  } catch (err) {
    return [...checks, fromError(kubeError(err, 'asking for its version', kube), 'the API server'), ...local()];
  }
  const agentNs = flags.agentNamespace ?? AGENT_NAMESPACE;
  const target = flags.target ? parseTarget(flags.target) : undefined;
  const targetNs = kube.namespace;
  const questions: Array<[string, string, string, string | undefined, string]> = [
    ['get', 'pods', targetNs, undefined, 'read the target\'s pods'],
    ['list', 'pods', targetNs, undefined, 'find the target\'s pods'],
    ['list', 'pods', agentNs, undefined, 'find the agent on the target\'s node'],
    ['create', 'pods', agentNs, 'portforward', 'reach the agent through the API server'],
    // A session is a Session object the user creates; the admission policy also asks for
    // pods/portforward where the target is (cli/manifests.ts).
    ['create', 'sessions.tsmirror.dev', targetNs, undefined, 'open a session there (its Session object)'],
    ['create', 'pods', targetNs, 'portforward', 'open a session there (the Session admission policy asks)'],
  ];
  const workloadResource: Record<string, string> = {
    deployment: 'deployments.apps', statefulset: 'statefulsets.apps', replicaset: 'replicasets.apps', daemonset: 'daemonsets.apps', job: 'jobs.batch', rollout: 'rollouts.argoproj.io',
  };
  const workload = target?.kind === 'kubernetes' ? workloadResource[target.resource] : undefined;
  if (workload) questions.push(['get', workload, targetNs, undefined, `read ${flags.target ?? 'the target'}`]);
  let rbacOk = true;
  for (const [verb, resource, ns, sub, why] of questions) {
    try {
      if (!(await can(kube, verb, resource, ns, sub))) {
        rbacOk = false;
        checks.push(fail(`RBAC: you may not ${verb} ${resource}${sub ? `/${sub}` : ''} in namespace ${ns} (needed to ${why})`,
          `ask a cluster admin to bind you the ClusterRole tsmirror-user in namespace ${ns}: kubectl -n ${ns} create rolebinding tsmirror-user-$USER --clusterrole=tsmirror-user --user=YOU`));
      }
    } catch (err) {
      rbacOk = false;
      checks.push(fromError(kubeError(err, 'asking the API server what you may do (SelfSubjectAccessReview)', kube), 'RBAC'));
    }
  }
  if (rbacOk) checks.push({ ok: true, what: `RBAC: you may read pods in ${targetNs} and port-forward to the agents in ${agentNs}` });
  try {
    await kube.custom.listNamespacedCustomObject({ group: SESSION_GROUP, version: SESSION_VERSION, plural: SESSION_PLURAL, namespace: targetNs, limit: 1 });
    checks.push({ ok: true, what: `the cluster serves ${SESSION_PLURAL}.${SESSION_GROUP} (each session is one, created with your credentials)` });
  } catch (err) {
    if (httpStatus(err) === 404) {
      checks.push(fail(`the cluster does not serve ${SESSION_PLURAL}.${SESSION_GROUP}: the tsmirror installed there predates Session objects, or is not installed`, 'a cluster admin runs `tsmirror install` with this version (Kubernetes 1.30+; docs/install.md)'));
    } else if (httpStatus(err) !== 403) {
      checks.push(fromError(kubeError(err, `listing ${SESSION_PLURAL}.${SESSION_GROUP} in namespace ${targetNs}`, kube), 'Session objects'));
    }
  }
  // The modes with grants of their own: not needed for every session, so only noted.
  for (const [sub, role, what] of [['steal', 'tsmirror-steal', 'steal traffic (--steal)'], ['writefiles', 'tsmirror-write-files', 'write pod files (--fs-mode write)']] as const) {
    try {
      if (await can(kube, 'create', 'sessions.tsmirror.dev', targetNs, sub)) checks.push({ ok: true, what: `RBAC: you may ${what} in ${targetNs}` });
      else checks.push({ ok: 'warn', what: `RBAC: you may not ${what} in namespace ${targetNs} (create sessions/${sub})`, fix: `if you need to, ask a cluster admin to bind you the ClusterRole ${role} in namespace ${targetNs}` });
    } catch {
      // The base RBAC check above already reported an API server that cannot answer.
    }
  }

  let agents: AgentPod[] = [];
  try {
    if (target?.kind === 'kubernetes') {
      const resolved = await resolveKubeTarget(kube, { resource: target.resource, name: target.name, container: target.container ?? flags.container, node: flags.node });
      checks.push({ ok: true, what: `target ${flags.target}: ${resolved.description}` });
      const agent = await findAgent(kube, resolved.node, agentNs, `node '${resolved.node}' (where pod ${resolved.podName} runs)`);
      checks.push({ ok: true, what: `the agent ${agent.name} on node ${agent.node} is ready` });
      agents = [agent];
    } else {
      if (target) checks.push({ ok: 'warn', what: `target ${flags.target} is not a Kubernetes target: only the cluster-wide checks run`, fix: 'give --target deployment/NAME (or pod/…) to check its node' });
      const all = await listAgentPods(kube, agentNs);
      if (all.length === 0) {
        checks.push(fail(`no tsmirror agent runs in namespace ${agentNs}`, 'a cluster admin installs it once with `tsmirror install` (docs/install.md)'));
      } else {
        for (const a of all.filter((x) => !x.ready)) checks.push(fail(`the agent ${a.name} on node ${a.node} is not ready (${a.pod.status?.phase ?? 'Unknown'})`, `kubectl -n ${agentNs} describe pod ${a.name}`));
        agents = all.filter((a) => a.ready);
        if (agents.length) checks.push({ ok: true, what: `agents ready on ${agents.length} node(s): ${agents.map((a) => a.node).join(', ')}` });
      }
    }
  } catch (err) {
    checks.push(fromError(err, 'agent'));
  }
  for (const agent of agents) checks.push(...await checkAgentVersion(kube, agent));
  return [...checks, ...local()];
}

export async function runDoctor(flags: DoctorFlags, program: string | undefined): Promise<number> {
  const checks = await diagnose(flags, program);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(checks, null, 2)}\n`);
  } else {
    for (const c of checks) {
      process.stdout.write(`${c.ok === true ? '✓' : c.ok === 'warn' ? '!' : '✗'} ${c.what}\n`);
      if (c.ok !== true && c.fix) process.stdout.write(`    fix: ${c.fix}\n`);
    }
    const failed = checks.filter((c) => c.ok === false).length;
    process.stdout.write(failed ? `${failed} problem(s) found\n` : 'everything tsmirror needs is in place\n');
  }
  return checks.some((c) => c.ok === false) ? 1 : 0;
}
