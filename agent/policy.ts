/**
 * The agent's policy, read from a ConfigMap (key `policy.yaml`) and re-read when it
 * changes. At every session's open it decides, from the namespace of the pod that owns the
 * target container (looked up in the API, never taken from the client):
 *
 * - `deniedNamespaces` (regexes, whole-name match): every session there is refused;
 * - `protectedNamespaces`: unfiltered steal is refused (filtered steal and mirror are allowed);
 * - with a bearer token in the hello: TokenReview, then SubjectAccessReview — the user must be
 *   allowed to `create pods/portforward` and `get pods` in the target's namespace;
 * - `requireUserAuth: true`: sessions without a token are refused.
 *
 * A refusal names the rule (TSM_ERR_POLICY). A ConfigMap that does not parse refuses every
 * session until it is fixed (fail closed), and says why.
 */
import { parse as parseYaml } from 'yaml';
import { TsmError } from '../protocol/errors.js';
import type { ClientHello, TargetRef } from '../protocol/messages.js';
import type { AgentKube, PodRef } from './kube.js';
import { containerIdsInCgroup } from './target.js';
import { readFile } from 'node:fs/promises';

export interface Policy {
  protectedNamespaces: string[];
  deniedNamespaces: string[];
  requireUserAuth: boolean;
}

export const EMPTY_POLICY: Policy = { protectedNamespaces: [], deniedNamespaces: [], requireUserAuth: false };

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
  const known = new Set(['protectedNamespaces', 'deniedNamespaces', 'requireUserAuth']);
  const unknown = Object.keys(doc).filter((k) => !known.has(k));
  if (unknown.length) throw new Error(`unknown field(s) ${unknown.join(', ')}; known: ${[...known].join(', ')}`);
  const requireUserAuth = doc.requireUserAuth ?? false;
  if (typeof requireUserAuth !== 'boolean') throw new Error('requireUserAuth must be true or false');
  return {
    protectedNamespaces: regexList(doc.protectedNamespaces, 'protectedNamespaces'),
    deniedNamespaces: regexList(doc.deniedNamespaces, 'deniedNamespaces'),
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
  /** The user the API server vouched for (when a token was given). */
  user: string | undefined;
  /**
   * Checks each port.subscribe against the policy in force then: what the session really
   * asks for, not what its hello declared (a client may declare nothing and steal later).
   */
  authorizeIncoming: (mode: 'mirror' | 'steal', filtered: boolean) => void;
}

export interface PolicyOptions {
  kube: AgentKube;
  node: string;
  /** `namespace/name` of the policy ConfigMap (none: the empty policy). */
  configMap: { namespace: string; name: string } | undefined;
  pollMs: number;
  log: (line: string) => void;
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
      this.#o.log(`policy: loaded ${this.#where} (version ${version}): protected ${JSON.stringify(this.#policy.protectedNamespaces)}, denied ${JSON.stringify(this.#policy.deniedNamespaces)}, requireUserAuth ${this.#policy.requireUserAuth}`);
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

  async #podOf(req: AdmissionRequest): Promise<PodRef | undefined> {
    let ids: string[];
    if (req.target.kind === 'container') ids = [req.target.id.replace(/^[a-z-]+:\/\//, '').toLowerCase()];
    else if (req.pid > 0) ids = containerIdsInCgroup(await readFile(`${req.proc}/cgroup`, 'utf8').catch(() => ''));
    else ids = [];
    return ids.length ? this.#o.kube.podOfContainer(this.#o.node, ids) : undefined;
  }

  /** Decides a session at its open; throws a TsmError naming the rule when it is refused. */
  async admit(req: AdmissionRequest): Promise<Admission> {
    if (this.#invalid !== undefined) {
      throw new TsmError('TSM_ERR_POLICY', `the policy in ${this.#where} is invalid, so this agent refuses sessions: ${this.#invalid}`, { hint: 'fix the ConfigMap (docs/install.md describes the format)' });
    }
    const policy = this.#policy;
    const pod = await this.#podOf(req);
    if (!pod) {
      throw this.#refuse('"targets are pods"', `the target ${req.target.kind === 'none' ? '(targetless)' : req.target.kind === 'pid' ? `pid/${req.target.pid}` : `container/${req.target.id.slice(0, 12)}`} is not a container of a pod on node ${this.#o.node}; a cluster agent serves only pod targets`);
    }
    const ns = pod.namespace;
    const denied = matchingRule(policy.deniedNamespaces, ns);
    if (denied !== undefined) throw this.#refuse(`deniedNamespaces "${denied}"`, `no session may target namespace ${ns}`);
    const incoming = req.hello.incoming;
    if (incoming !== undefined && incoming.mode !== 'mirror' && incoming.mode !== 'steal') {
      throw new TsmError('TSM_ERR_BAD_FRAME', 'hello.incoming.mode must be "mirror" or "steal"');
    }
    // Anything but an explicit `filtered: true` counts as unfiltered.
    if (incoming?.mode === 'steal') this.#checkSteal(ns, incoming.filtered === true);
    const authorizeIncoming = (mode: 'mirror' | 'steal', filtered: boolean): void => {
      if (this.#invalid !== undefined) throw new TsmError('TSM_ERR_POLICY', `the policy in ${this.#where} is invalid, so this agent refuses new subscriptions: ${this.#invalid}`);
      if (mode === 'steal') this.#checkSteal(ns, filtered);
    };
    const token = req.hello.token;
    if (token === undefined || token === '') {
      if (policy.requireUserAuth) {
        throw this.#refuse('requireUserAuth: true', 'the session carries no bearer token, so the agent cannot check who you are; use a kubeconfig whose credentials are a token (or an exec plugin that yields one)');
      }
      return { pod, user: undefined, authorizeIncoming };
    }
    const review = await this.#o.kube.reviewToken(token);
    if ('error' in review) {
      throw new TsmError('TSM_ERR_UNAUTHENTICATED', `the API server did not accept your token (TokenReview: ${review.error})`, { hint: 'log in to the cluster again; the agent checks your kubeconfig credentials' });
    }
    for (const q of [{ verb: 'create', resource: 'pods', subresource: 'portforward' }, { verb: 'get', resource: 'pods' }]) {
      if (!(await this.#o.kube.canUser(review.user, { namespace: ns, ...q }))) {
        const what = `${q.verb} ${q.resource}${q.subresource ? `/${q.subresource}` : ''}`;
        throw this.#refuse(`"users must be allowed to ${what} in the target's namespace"`, `user ${review.user.username} may not ${what} in namespace ${ns} (SubjectAccessReview)`);
      }
    }
    return { pod, user: review.user.username, authorizeIncoming };
  }
}
