/**
 * The harness's addresses and links: claiming a free 10.244.X.0/24 (and
 * fd00:244:X::/64) with its host `unreachable` routes, and running `ip`
 * commands in a netns in one batch.
 *
 * Internal to the local node harness (`harness.ts`, `pod.ts`).
 *
 * @module
 */
import { randomInt } from 'node:crypto';
import { ROUTE_PROTO, readRecords, subnetRoutes, writeRecord, type RegistryRecord } from './cleanup.js';
import { runOk, runSync } from './system.js';

/** Picks a free 10.244.X.0/24 (and fd00:244:X::/64) and adds the host `unreachable` routes. */
export function claimSubnet(record: RegistryRecord): number {
  const taken = new Set<number>();
  for (const r of readRecords()) if (r.id !== record.id && r.octet !== null) taken.add(r.octet);
  const v4 = routeDsts('-4');
  const v6 = routeDsts('-6');
  for (let attempt = 0; attempt < 64; attempt++) {
    const octet = 1 + randomInt(254);
    if (taken.has(octet)) continue;
    if (v4.some((d) => v4Conflicts(d, octet))) continue;
    if (v6.some((d) => d.startsWith(`fd00:244:${octet}:`))) continue;
    // Claim in the registry first, so a concurrent sweep never takes the route for an orphan.
    record.octet = octet;
    writeRecord(record);
    const r = subnetRoutes(octet);
    if (runSync('ip', ['-4', 'route', 'add', 'unreachable', r.v4, 'proto', ROUTE_PROTO]).code === 0) {
      if (runSync('ip', ['-6', 'route', 'add', 'unreachable', r.v6, 'proto', ROUTE_PROTO]).code === 0) return octet;
      runSync('ip', ['-4', 'route', 'del', 'unreachable', r.v4, 'proto', ROUTE_PROTO]);
    }
    taken.add(octet);
    record.octet = null;
    writeRecord(record);
  }
  throw new Error('no free 10.244.X.0/24 subnet for the harness');
}

/** Destinations of all routes (all tables) of a family. */
function routeDsts(family: '-4' | '-6'): string[] {
  const r = runSync('ip', ['-j', family, 'route', 'show', 'table', 'all']);
  if (r.code !== 0) throw new Error(`ip route show failed: ${r.stderr}`);
  const list: unknown = JSON.parse(r.stdout || '[]');
  if (!Array.isArray(list)) return [];
  const out: string[] = [];
  for (const e of list as unknown[]) {
    const dst = typeof e === 'object' && e !== null ? (e as Record<string, unknown>)['dst'] : undefined;
    if (typeof dst === 'string') out.push(dst);
  }
  return out;
}

/** Whether a route to `dst` lies inside (or equals) 10.244.octet.0/24. Wider routes are fine: ours is more specific. */
function v4Conflicts(dst: string, octet: number): boolean {
  if (dst === 'default') return false;
  const [addr, len] = dst.split('/');
  const parts = (addr ?? '').split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p))) return false;
  if (Number(len ?? '32') < 24) return false;
  return parts[0] === 10 && parts[1] === 244 && parts[2] === octet;
}

/** Runs `ip` commands (one per line of `ip -batch`) in a netns; rejects when one fails. */
export async function ipBatch(netns: string, cmds: readonly string[]): Promise<void> {
  await runOk('ip', ['-n', netns, '-batch', '-'], { input: cmds.map((c) => `${c}\n`).join('') });
}
