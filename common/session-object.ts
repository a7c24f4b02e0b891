/**
 * The Session custom resource (`sessions.tsmirror.dev`, v1alpha1): the one place a cluster
 * session's identity and rights are written down. The CLI creates it with the user's own
 * credentials (whatever their kubeconfig holds: certificate, token, exec plugin, OIDC), the
 * API server authenticates and authorizes that create (RBAC, and the ValidatingAdmissionPolicy
 * of cli/manifests.ts ties `spec.user` to the authenticated user and checks the mode's
 * grants), and the agent reads it with its own service account. Only a one-time secret, whose
 * sha256 the object carries, travels from the CLI to the agent.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const SESSION_GROUP = 'tsmirror.dev';
export const SESSION_VERSION = 'v1alpha1';
export const SESSION_PLURAL = 'sessions';
export const SESSION_KIND = 'Session';
export const SESSION_API_VERSION = `${SESSION_GROUP}/${SESSION_VERSION}`;

/**
 * How long after its creation a Session may be presented to an agent. The CLI creates it
 * just before the hello; an older one is a replay or a leftover.
 */
export const SESSION_FRESH_MS = 60_000;

export type SessionFilesMode = 'read' | 'write';
export type SessionIncomingMode = 'none' | 'mirror' | 'steal';

export interface SessionSpec {
  /** The user creating it; the admission policy refuses any other name. */
  user: string;
  target: { pod: string; container: string; containerId: string };
  mode: { files: SessionFilesMode; incoming: SessionIncomingMode; filtered: boolean };
  /** sha256 (hex) of the one-time secret the CLI sends the agent in its hello. */
  secretHash: string;
  /** The node whose agent may serve it. */
  node: string;
}

export interface SessionObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; uid?: string; resourceVersion?: string; creationTimestamp?: string | Date; labels?: Record<string, string>; [k: string]: unknown };
  spec: SessionSpec;
  status?: { claimedBy?: string; claimedAt?: string };
}

/** A fresh 256-bit secret, hex. */
export function newSessionSecret(): string {
  return randomBytes(32).toString('hex');
}

export function sessionSecretHash(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Whether `secret` hashes to `hash` (constant time). */
export function secretMatches(secret: unknown, hash: unknown): boolean {
  if (typeof secret !== 'string' || typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return false;
  return timingSafeEqual(Buffer.from(sessionSecretHash(secret), 'hex'), Buffer.from(hash, 'hex'));
}

/** The spec of an object read from the API, checked field by field (undefined when malformed). */
export function parseSessionSpec(value: unknown): SessionSpec | undefined {
  const s = value as Partial<SessionSpec> | undefined;
  const t = s?.target as Partial<SessionSpec['target']> | undefined;
  const m = s?.mode as Partial<SessionSpec['mode']> | undefined;
  if (!s || typeof s.user !== 'string' || typeof s.secretHash !== 'string' || typeof s.node !== 'string') return undefined;
  if (!t || typeof t.pod !== 'string' || typeof t.container !== 'string' || typeof t.containerId !== 'string') return undefined;
  if (!m || (m.files !== 'read' && m.files !== 'write') || (m.incoming !== 'none' && m.incoming !== 'mirror' && m.incoming !== 'steal') || typeof m.filtered !== 'boolean') return undefined;
  return { user: s.user, target: { pod: t.pod, container: t.container, containerId: t.containerId }, mode: { files: m.files, incoming: m.incoming, filtered: m.filtered }, secretHash: s.secretHash, node: s.node };
}

/**
 * The admission policy's validations (shipped by cli/manifests.ts as ValidatingAdmissionPolicy
 * `tsmirror-sessions`): here because the agent also checks that the cluster runs them.
 */
export const SESSION_ADMISSION_POLICY = 'tsmirror-sessions';

export interface CelValidation { expression: string; messageExpression: string; reason: string }

/**
 * What a Session's creator must be allowed, checked by the API server as the object is
 * created or changed: CEL that runs with `request.userInfo` (whoever really sent it) and an
 * `authorizer` asking RBAC about that user. Each failure says which grant is missing.
 */
export const SESSION_VALIDATIONS: CelValidation[] = [
  {
    expression: 'object.spec.user == request.userInfo.username',
    messageExpression: "'spec.user must be the name you authenticate as (' + request.userInfo.username + '), not ' + object.spec.user",
    reason: 'Forbidden',
  },
  {
    expression: "authorizer.group('').resource('pods').namespace(object.metadata.namespace).check('get').allowed()",
    messageExpression: "'a tsmirror session needs get pods in namespace ' + object.metadata.namespace + ', which ' + request.userInfo.username + ' is not allowed: ask your cluster admin to bind ClusterRole tsmirror-user in namespace ' + object.metadata.namespace",
    reason: 'Forbidden',
  },
  {
    expression: "authorizer.group('').resource('pods').subresource('portforward').namespace(object.metadata.namespace).check('create').allowed()",
    messageExpression: "'a tsmirror session needs create pods/portforward in namespace ' + object.metadata.namespace + ', which ' + request.userInfo.username + ' is not allowed: ask your cluster admin to bind ClusterRole tsmirror-user in namespace ' + object.metadata.namespace",
    reason: 'Forbidden',
  },
  {
    expression: `object.spec.mode.incoming != 'steal' || authorizer.group('${SESSION_GROUP}').resource('${SESSION_PLURAL}').subresource('steal').namespace(object.metadata.namespace).check('create').allowed()`,
    messageExpression: `'stealing traffic needs create ${SESSION_PLURAL}/steal (group ${SESSION_GROUP}) in namespace ' + object.metadata.namespace + ', which ' + request.userInfo.username + ' is not allowed: ask your cluster admin to bind ClusterRole tsmirror-steal in namespace ' + object.metadata.namespace`,
    reason: 'Forbidden',
  },
  {
    expression: `object.spec.mode.files != 'write' || authorizer.group('${SESSION_GROUP}').resource('${SESSION_PLURAL}').subresource('writefiles').namespace(object.metadata.namespace).check('create').allowed()`,
    messageExpression: `'writing pod files needs create ${SESSION_PLURAL}/writefiles (group ${SESSION_GROUP}) in namespace ' + object.metadata.namespace + ', which ' + request.userInfo.username + ' is not allowed: ask your cluster admin to bind ClusterRole tsmirror-write-files in namespace ' + object.metadata.namespace`,
    reason: 'Forbidden',
  },
];

