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
