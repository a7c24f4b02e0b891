/**
 * Target strings. `pid/<N>` and `container/<id>` are answered by the agent directly;
 * Kubernetes names (`pod/NAME`, `deployment/NAME`, …) parse here and are resolved
 * through the Kubernetes API.
 */
import { TsmError } from '../protocol/errors.js';
import type { TargetRef } from '../protocol/messages.js';

export type ParsedTarget = TargetRef | { kind: 'kubernetes'; resource: string; name: string; container: string | undefined };

const KUBE_KINDS: Record<string, string> = {
  pod: 'pod', po: 'pod', pods: 'pod',
  deployment: 'deployment', deploy: 'deployment', deployments: 'deployment',
  statefulset: 'statefulset', sts: 'statefulset',
  replicaset: 'replicaset', rs: 'replicaset',
  daemonset: 'daemonset', ds: 'daemonset',
  job: 'job', rollout: 'rollout',
};

export function parseTarget(text: string | undefined): ParsedTarget {
  if (text === undefined || text === '') return { kind: 'none' };
  const [kind = '', rest = ''] = [text.slice(0, text.indexOf('/')), text.slice(text.indexOf('/') + 1)];
  if (!text.includes('/') || rest === '') {
    throw new TsmError('TSM_ERR_USAGE', `target "${text}" must look like pid/<N>, container/<id> or <kind>/<name> (e.g. deployment/api)`);
  }
  if (kind === 'pid') {
    if (!/^\d+$/.test(rest) || Number(rest) <= 0) throw new TsmError('TSM_ERR_USAGE', `target "${text}": pid must be a positive number`);
    return { kind: 'pid', pid: Number(rest) };
  }
  if (kind === 'container') return { kind: 'container', id: rest };
  const resource = KUBE_KINDS[kind];
  if (!resource) {
    throw new TsmError('TSM_ERR_USAGE', `unknown target kind "${kind}" in "${text}"; use pid, container, pod, deployment, statefulset, replicaset, daemonset, job or rollout`);
  }
  const parts = rest.split('/');
  if (parts.length === 3 && parts[1] === 'container') return { kind: 'kubernetes', resource, name: parts[0] ?? '', container: parts[2] };
  if (parts.length !== 1) throw new TsmError('TSM_ERR_USAGE', `target "${text}" has too many parts`);
  return { kind: 'kubernetes', resource, name: rest, container: undefined };
}
