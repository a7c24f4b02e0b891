/**
 * The agent's policy, read from a ConfigMap (key `policy.yaml`) and re-read when it
 * changes, and the session's identity. At every session's open it decides, from the
 * namespace of the pod that owns the target container (looked up in the API, never taken
 * from the client):
 *
 * - `deniedNamespaces` (regexes, whole-name match): every session there is refused;
 * - the Session object (agent/session-identity.ts): who the user is (as the API server
 *   authenticated them when they created it) and what they may do there (files, incoming
 *   traffic: as RBAC and the admission policy allowed them to declare);
 * - `protectedNamespaces`: unfiltered steal is refused (filtered steal and mirror are allowed);
 * - `recordDeniedNamespaces`: `tsmirror record` is refused (a recording carries the pod's
 *   traffic out of the cluster), checked at the open (the hello declares it) and at each
 *   record subscription.
 *
 * `requireUserAuth` is still read (old ConfigMaps keep working) but means nothing now: every
 * session needs a Session object.
 *
 * A refusal names the rule (TSM_ERR_POLICY). A ConfigMap that does not parse refuses every
 * session until it is fixed (fail closed), and says why.
 */
import { parse as parseYaml } from 'yaml';
import { TsmError } from '../protocol/errors.js';
import type { ClientHello, FilesMode, IncomingMode, TargetRef } from '../protocol/messages.js';
import type { AgentKube, PodRef } from './kube.js';
import { verifySession, watchSession } from './session-identity.js';
import type { SessionIncomingMode } from '../common/session-object.js';
import { containerIdsInCgroup } from './target.js';
import { readFile } from 'node:fs/promises';

export interface Policy {
  protectedNamespaces: string[];
  deniedNamespaces: string[];
  /** Namespaces (whole-name regexes) whose pods' traffic may not be recorded. */
  recordDeniedNamespaces: string[];
  /** Read so that older ConfigMaps stay valid; every session is authenticated now (its Session object). */
  requireUserAuth: boolean;
}

export const EMPTY_POLICY: Policy = { protectedNamespaces: [], deniedNamespaces: [], recordDeniedNamespaces: [], requireUserAuth: false };

/** The ConfigMap key holding the policy. */
export const POLICY_KEY = 'policy.yaml';

function regexList(value: unknown, field: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new Error(`${field} must be a list of regular expressions`);
  for (const re of value as string[]) {
    try {
      new RegExp(re);
    } catch (err) {
      throw new Error(`${field}: "${re}" is not a valid regular expression (${err instanceof Error ? err.message : String(err)})`);
    }
  }
  return value as string[];
}

/** Parses and validates `policy.yaml`; throws an Error saying what is wrong. */
export function parsePolicy(text: string): Policy {
  const doc = (parseYaml(text) ?? {}) as Record<string, unknown>;
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error('the policy must be a YAML mapping');
  const known = new Set(['protectedNamespaces', 'deniedNamespaces', 'recordDeniedNamespaces', 'requireUserAuth']);
  const unknown = Object.keys(doc).filter((k) => !known.has(k));
  if (unknown.length) throw new Error(`unknown field(s) ${unknown.join(', ')}; known: ${[...known].join(', ')}`);
  const requireUserAuth = doc.requireUserAuth ?? false;
  if (typeof requireUserAuth !== 'boolean') throw new Error('requireUserAuth must be true or false');
  return {
    protectedNamespaces: regexList(doc.protectedNamespaces, 'protectedNamespaces'),
    deniedNamespaces: regexList(doc.deniedNamespaces, 'deniedNamespaces'),
    recordDeniedNamespaces: regexList(doc.recordDeniedNamespaces, 'recordDeniedNamespaces'),
    requireUserAuth,
  };
}

/** A namespace matches a rule when the regex matches the whole name. */
export function matchingRule(rules: string[], namespace: string): string | undefined {
  return rules.find((re) => new RegExp(`^(?:${re})$`).test(namespace));
}

export interface AdmissionRequest {
  hello: ClientHello;
  target: TargetRef;
  /** The host PID the target resolved to (0 when targetless). */
  pid: number;
  /** The target's held /proc directory (agent/target.ts; empty when targetless). */
  proc: string;
}

export interface Admission {
  pod: PodRef;
  /** The user, from the Session object (the admission policy tied it to who created it). */
  user: string;
  /** What the Session declared, which the agent enforces. */
  files: FilesMode;
  incoming: { mode: SessionIncomingMode; filtered: boolean };
  /**
   * Checks each port.subscribe against the Session's mode and the policy in force then: what
   * the session really asks for, not what its hello declared.
   */
  authorizeIncoming: (mode: IncomingMode, filtered: boolean) => void;
  /** Watches the Session object while the session lives; `ended` when it is deleted. Returns the stop. */
  watch: (ended: (why: TsmError) => void) => () => void;
}

/** How long a check that the Session admission policy is in force is trusted. */
const ADMISSION_RECHECK_MS = 10_000;

export interface PolicyOptions {
  kube: AgentKube;
  node: string;
  /** `namespace/name` of the policy ConfigMap (none: the empty policy). */
  configMap: { namespace: string; name: string } | undefined;
  pollMs: number;
  log: (line: string) => void;
  /** This agent's name, written into the Sessions it claims. */
  agentName: string;
  /** How often a live session's Session object is checked. */
  sessionPollMs?: number;
}

export class PolicyEnforcer {
  readonly #o: PolicyOptions;
  #policy: Policy = EMPTY_POLICY;
  #invalid: string | undefined;
  #version = '';
  #timer: NodeJS.Timeout | undefined;

  constructor(options: PolicyOptions) {
    this.#o = options;
  }

  get policy(): Policy {
    return this.#policy;
  }

  get #where(): string {
    const cm = this.#o.configMap;
    return cm ? `ConfigMap ${cm.namespace}/${cm.name}` : 'the default policy';
  }

  /** Loads the policy once, then re-reads it every pollMs. */
  async start(): Promise<void> {
    await this.reload();
    if (this.#o.configMap) {
      this.#timer = setInterval(() => void this.reload().catch((err: unknown) => this.#o.log(`policy: ${err instanceof Error ? err.message : String(err)}`)), this.#o.pollMs);
      this.#timer.unref();
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async reload(): Promise<void> {
    const cm = this.#o.configMap;
    if (!cm) return;
    const found = await this.#o.kube.readConfigMap(cm.namespace, cm.name);
    const version = found?.version ?? 'absent';
    if (version === this.#version) return;
    this.#version = version;
    if (!found) {
      this.#policy = EMPTY_POLICY;
      this.#invalid = undefined;
      this.#o.log(`policy: ${this.#where} does not exist; no namespace is protected`);
      return;
    }
    try {
      this.#policy = parsePolicy(found.data[POLICY_KEY] ?? '');
      this.#invalid = undefined;
      this.#o.log(`policy: loaded ${this.#where} (version ${version}): protected ${JSON.stringify(this.#policy.protectedNamespaces)}, denied ${JSON.stringify(this.#policy.deniedNamespaces)}, record denied ${JSON.stringify(this.#policy.recordDeniedNamespaces)}${this.#policy.requireUserAuth ? '; requireUserAuth has no effect any more: every session needs a Session object its user created' : ''}`);
    } catch (err) {
      this.#invalid = err instanceof Error ? err.message : String(err);
      this.#o.log(`policy: ${this.#where} is invalid, refusing sessions until it is fixed: ${this.#invalid}`);
    }
  }

  #refuse(rule: string, message: string): TsmError {
    return new TsmError('TSM_ERR_POLICY', `refused by policy rule ${rule} (${this.#where}): ${message}`,
      { hint: 'ask the cluster admin who owns the tsmirror policy, or choose another target' });
  }

  /** Unfiltered steal is refused in a protected namespace (by the policy in force now). */
  #checkSteal(namespace: string, filtered: boolean): void {
    if (filtered) return;
    const rule = matchingRule(this.#policy.protectedNamespaces, namespace);
    if (rule !== undefined) throw this.#refuse(`protectedNamespaces "${rule}"`, `unfiltered steal is not allowed in namespace ${namespace}; steal with an HTTP filter, or mirror`);
  }

  /** Recording is refused in a namespace `recordDeniedNamespaces` names (by the policy in force now). */
  #checkRecord(namespace: string): void {
    const rule = matchingRule(this.#policy.recordDeniedNamespaces, namespace);
    if (rule !== undefined) throw this.#refuse(`recordDeniedNamespaces "${rule}"`, `the traffic of pods in namespace ${namespace} may not be recorded`);
  }

  async #podsOf(req: AdmissionRequest): Promise<PodRef[]> {
    let ids: string[];
    if (req.target.kind === 'container') ids = [req.target.id.replace(/^[a-z-]+:\/\//, '').toLowerCase()];
    else if (req.pid > 0) ids = containerIdsInCgroup(await readFile(`${req.proc}/cgroup`, 'utf8').catch(() => ''));
    else ids = [];
    return ids.length ? this.#o.kube.podsOfContainer(this.#o.node, ids) : [];
  }

  /** When the admission policy was last seen in force (it is re-checked after ADMISSION_RECHECK_MS). */
  #admissionCheckedAt = -Infinity;

  /**
   * A Session is only as good as the admission policy that checked it: without the policy
   * its creator could name anyone as its user and any mode. Refuses (fail closed) until the
   * cluster runs it.
   */
  async #checkSessionAdmission(): Promise<void> {
    if (Date.now() - this.#admissionCheckedAt < ADMISSION_RECHECK_MS) return;
    const problem = await this.#o.kube.sessionAdmissionProblem();
    if (problem !== undefined) {
      throw new TsmError('TSM_ERR_POLICY', `this agent refuses sessions until the cluster checks Session objects: ${problem}`,
        { hint: 'a cluster admin re-runs `tsmirror install` (Kubernetes 1.30+; docs/install.md)' });
    }
    this.#admissionCheckedAt = Date.now();
  }

  /** Decides a session at its open; throws a TsmError naming the rule when it is refused. */
  async admit(req: AdmissionRequest): Promise<Admission> {
    if (this.#invalid !== undefined) {
      throw new TsmError('TSM_ERR_POLICY', `the policy in ${this.#where} is invalid, so this agent refuses sessions: ${this.#invalid}`, { hint: 'fix the ConfigMap (docs/install.md describes the format)' });
    }
    const policy = this.#policy;
    const pods = await this.#podsOf(req);
    if (pods.length === 0) {
      throw this.#refuse('"targets are pods"', `the target ${req.target.kind === 'none' ? '(targetless)' : req.target.kind === 'pid' ? `pid/${req.target.pid}` : `container/${req.target.id.slice(0, 12)}`} is not a container of a pod on node ${this.#o.node}; a cluster agent serves only pod targets`);
    }
    for (const { namespace } of pods) {
      const denied = matchingRule(policy.deniedNamespaces, namespace);
      if (denied !== undefined) throw this.#refuse(`deniedNamespaces "${denied}"`, `no session may target namespace ${namespace}`);
    }
    const incoming = req.hello.incoming;
    if (incoming !== undefined && incoming.mode !== 'mirror' && incoming.mode !== 'steal') {
      throw new TsmError('TSM_ERR_BAD_FRAME', 'hello.incoming.mode must be "mirror" or "steal"');
    }
    await this.#checkSessionAdmission();
    const { verified, pod } = await verifySession(this.#o.kube, req.hello, pods, this.#o.node, this.#o.agentName);
    const ns = pod.namespace;
    const declared = verified.spec.mode;
    // The hello's declaration is checked too: anything but an explicit `filtered: true` is unfiltered.
    if (incoming?.mode === 'steal') this.#checkSteal(ns, incoming.filtered === true);
    if (declared.incoming === 'steal') this.#checkSteal(ns, declared.filtered);
    if (incoming?.record === true) this.#checkRecord(ns);
    const authorizeIncoming = (mode: IncomingMode, filtered: boolean): void => {
      if (this.#invalid !== undefined) throw new TsmError('TSM_ERR_POLICY', `the policy in ${this.#where} is invalid, so this agent refuses new subscriptions: ${this.#invalid}`);
      if (declared.incoming === 'none' || (mode === 'steal' && declared.incoming !== 'steal') || (mode === 'steal' && declared.filtered && !filtered)) {
        const has = declared.incoming === 'none' ? 'no incoming traffic' : `${declared.incoming}${declared.filtered ? ' with a filter' : ''}`;
        throw new TsmError('TSM_ERR_POLICY', `the Session ${verified.ref} declared ${has}, so this session may not ${mode}${filtered ? '' : ' unfiltered'}; run tsmirror again with the flags that declare it (--mirror, --steal, --http-*)`);
      }
      if (mode === 'steal') this.#checkSteal(ns, filtered);
      if (mode === 'record') this.#checkRecord(ns);
    };
    return {
      pod, user: verified.spec.user, files: declared.files, incoming: { mode: declared.incoming, filtered: declared.filtered }, authorizeIncoming,
      watch: (ended) => watchSession(this.#o.kube, verified, ended, this.#o.log, this.#o.sessionPollMs),
    };
  }
}
