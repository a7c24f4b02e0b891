/**
 * Where a program's connect goes: the routing rules (cli/routing.ts) decide local or
 * through the pod, and a DNS packet to this machine's nameserver (port 53; c-ares in node,
 * dig) is meant for the cluster's, so it goes to the pod's nameserver whatever the rules say.
 */
import net from 'node:net';
import { RemoteError, TsmError } from '../../protocol/errors.js';
import type { Family } from '../../protocol/messages.js';
import { route, unmapAddress, type RoutingPolicy } from '../routing.js';
import type { ShimErrorReply } from '../../protocol/shim-wire.js';

export interface OutgoingPolicy {
  routing: RoutingPolicy;
  /** Nameservers of this machine: DNS packets sent to them go to the pod's nameserver. */
  localNameservers: string[];
  podNameservers: string[];
}

export type Destination = { action: 'local' } | { action: 'remote'; address: string; family: Family };

/** Where a connect to `addr`:`port` goes. Throws TSM_ERR_BAD_FRAME for a name (the shim sends literals). */
export function destinationOf(policy: OutgoingPolicy, addr: string, port: number): Destination {
  const { family, address } = unmapAddress(addr);
  if (net.isIP(address) === 0) throw new TsmError('TSM_ERR_BAD_FRAME', 'connect needs a literal address');
  const podNameserver = policy.podNameservers[0];
  if (port === 53 && podNameserver && policy.localNameservers.includes(address)) {
    return { action: 'remote', address: podNameserver, family: net.isIP(podNameserver) === 6 ? 6 : 4 };
  }
  if (route(policy.routing, address, port) === 'local') return { action: 'local' };
  return { action: 'remote', address, family };
}

/** The pod's own error for a connect (ECONNREFUSED, EHOSTUNREACH, …), as the shim's reply; undefined for any other failure. */
export function podRefusal(err: unknown): ShimErrorReply | undefined {
  if (err instanceof RemoteError && err.errno !== undefined) return { ok: false, errno: err.errno, message: err.message };
  return undefined;
}
