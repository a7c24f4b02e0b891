/**
 * `tsmirror status`: the agents, one per node, with their version, readiness and the
 * sessions each serves (read from the agent's `/status` through the port-forward).
 */
import { request } from 'node:http';
import { TsmError } from '../protocol/errors.js';
import { loadKube, type Kube, type KubeFlags } from './kube.js';
import { AGENT_NAMESPACE, forwardToAgent, listAgentPods, type AgentPod } from './agent-pod.js';

export interface AgentSessionStatus {
  id: string; user: string; host: string; target: string; startedAt: number; streams: number;
  /** Agents with resumable sessions (issue 16) add these. */
  state?: 'connected' | 'resuming'; resumingSince?: number; resumes?: number; bytesResent?: number;
  longestGapMs?: number; lastGapMs?: number; mirrorDropped?: number; reestablished?: number;
  /** Agents that cut the mirror copies of a session that falls behind add these. */
  mirrorCut?: number; mirrorBytesDropped?: number;
}

/** A session's connection in a few words: connected or resuming since when, resumes, new sessions, bytes sent again, gaps. */
export function describeSessionState(s: AgentSessionStatus, now = Date.now()): string {
  if (s.state === undefined) return '';
  const parts = [s.state === 'resuming' ? `resuming since ${age(now - (s.resumingSince ?? now))} ago` : 'connected'];
  if (s.resumes) parts.push(`resumed ${s.resumes}× (last gap ${((s.lastGapMs ?? 0) / 1000).toFixed(1)} s, longest ${((s.longestGapMs ?? 0) / 1000).toFixed(1)} s), ${s.bytesResent ?? 0} bytes sent again`);
  if (s.reestablished) parts.push(`re-established ${s.reestablished}×`);
  if (s.mirrorDropped) parts.push(`${s.mirrorDropped} mirror copies dropped during gaps`);
  if (s.mirrorCut) parts.push(`${s.mirrorCut} mirror copies cut, the session behind (${s.mirrorBytesDropped ?? 0} bytes not copied)`);
  return `, ${parts.join(', ')}`;
}
/** How an agent authenticates sessions (agent/server.ts); absent from agents older than this field. */
export type AgentAuth = 'cluster' | 'local-key' | 'none';
export interface AgentStatus { version: string; protocol: number; node: string; auth?: AgentAuth; sessions: AgentSessionStatus[] }

export interface AgentReport {
  node: string;
  pod: string;
  ready: boolean;
  /** The image's version (pod label), and the running agent's own (from /status). */
  imageVersion: string | undefined;
  version: string | undefined;
  protocol: number | undefined;
  /** Cluster agents verify each session's Session object; `none` serves anyone who reaches it. */
  auth: AgentAuth | undefined;
  sessions: AgentSessionStatus[];
  error: string | undefined;
}

/** GET a path on the agent over a port-forward; resolves with the parsed JSON. */
export async function agentGet<T>(kube: Kube, agent: AgentPod, path: string, timeoutMs = 10000): Promise<T> {
  const socket = await forwardToAgent(kube, agent);
  return new Promise<T>((resolve, reject) => {
    const req = request({ createConnection: () => socket as never, path, host: `${agent.name}.${agent.namespace}`, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        clearTimeout(timer);
        socket.destroy();
        if (res.statusCode !== 200) reject(new TsmError('TSM_ERR_AGENT_UNREACHABLE', `the agent ${agent.name} answered ${res.statusCode ?? '?'} to ${path}`));
        else {
          try {
            resolve(JSON.parse(body) as T);
          } catch {
            reject(new TsmError('TSM_ERR_AGENT_UNREACHABLE', `the agent ${agent.name} answered ${path} with something that is not JSON`));
          }
        }
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err instanceof TsmError ? err : new TsmError('TSM_ERR_AGENT_UNREACHABLE', `cannot read ${path} from agent ${agent.name}: ${err.message}`));
    });
    req.end();
  });
}

export async function collectStatus(kube: Kube, namespace: string): Promise<AgentReport[]> {
  const agents = await listAgentPods(kube, namespace);
  return Promise.all(agents.map(async (a): Promise<AgentReport> => {
    const base = { node: a.node, pod: a.name, ready: a.ready, imageVersion: a.version };
    if (!a.ready) return { ...base, version: undefined, protocol: undefined, auth: undefined, sessions: [], error: `not ready (${a.pod.status?.phase ?? 'Unknown'})` };
    try {
      const s = await agentGet<AgentStatus>(kube, a, '/status');
      return { ...base, version: s.version, protocol: s.protocol, auth: s.auth, sessions: s.sessions, error: undefined };
    } catch (err) {
      return { ...base, version: undefined, protocol: undefined, auth: undefined, sessions: [], error: err instanceof Error ? err.message : String(err) };
    }
  }));
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd()).join('\n') + '\n';
}

export async function runStatus(flags: KubeFlags & { agentNamespace?: string; json?: boolean }): Promise<void> {
  const kube = loadKube(flags);
  const namespace = flags.agentNamespace ?? AGENT_NAMESPACE;
  const reports = await collectStatus(kube, namespace);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ namespace, agents: reports }, null, 2)}\n`);
    return;
  }
  if (reports.length === 0) {
    process.stdout.write(`no tsmirror agents in namespace ${namespace} of ${kube.server}; a cluster admin installs them with \`tsmirror install\`\n`);
    return;
  }
  const rows = [['NODE', 'AGENT POD', 'READY', 'VERSION', 'SESSIONS']];
  for (const r of reports) rows.push([r.node, r.pod, r.ready ? 'yes' : 'no', r.version ?? r.imageVersion ?? '?', r.error ? `? (${r.error})` : String(r.sessions.length)]);
  let out = table(rows);
  for (const r of reports) {
    if (r.auth === 'none') out += `  ${r.node}: WARNING: agent ${r.pod} authenticates no one (--insecure-no-auth): whoever reaches it gets every pod on its node\n`;
    for (const s of r.sessions) out += `  ${r.node}: session ${s.id} ${s.user}@${s.host} → ${s.target}, ${s.streams} streams, ${age(Date.now() - s.startedAt)}${describeSessionState(s)}\n`;
  }
  process.stdout.write(out);
}

export { table };
