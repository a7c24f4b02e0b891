/**
 * Which destinations the program reaches through the pod, and which stay on this machine.
 *
 * Explicit rules (`--local-dest`, `--remote-dest`) win, the most specific prefix first
 * (a tie goes to local); then loopback and unspecified addresses stay local unless
 * `--remote-localhost`; everything else goes through the pod.
 */
import { isIP } from 'node:net';
import { TsmError } from '../protocol/errors.js';
import type { Family } from '../protocol/messages.js';

export interface DestRule {
  family: Family;
  network: bigint;
  prefix: number;
  port: number | undefined;
  text: string;
}

export interface RoutingPolicy {
  remoteLocalhost: boolean;
  localDest: DestRule[];
  remoteDest: DestRule[];
}

export function addressToBigInt(address: string): { family: Family; value: bigint } {
  if (isIP(address) === 4) {
    return { family: 4, value: address.split('.').reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n) };
  }
  if (isIP(address) !== 6) throw new TsmError('TSM_ERR_USAGE', `"${address}" is not an IP address`);
  let text = address.replace(/%.*$/, '');
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const n = addressToBigInt(v4[1]).value;
    text = text.slice(0, -v4[1].length) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail = ''] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = text.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  return { family: 6, value: groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

/** Parses `CIDR[:PORT]`: `10.0.0.0/8`, `10.1.2.3:5432`, `[fd00::]/64:443`, `fd00::1`. */
export function parseDestRule(text: string): DestRule {
  const m = /^(?:\[([^\]]+)\]|([^/[\]]+?))(?:\/(\d{1,3}))?(?::(\d{1,5}))?$/.exec(text.trim());
  let addr = m?.[1] ?? m?.[2];
  let prefixText = m?.[3];
  let portText = m?.[4];
  // A bare IPv6 address (no brackets) has colons that are not a port.
  if (m && !m[1] && addr && isIP(addr) === 0 && isIP(`${addr}${portText ? `:${portText}` : ''}`) === 6) {
    addr = `${addr}:${portText}`;
    portText = undefined;
  }
  if (!m && isIP(text.split('/')[0] ?? '') === 6) {
    [addr, prefixText] = text.split('/');
  }
  if (!addr || isIP(addr) === 0) {
    throw new TsmError('TSM_ERR_USAGE', `"${text}" is not CIDR[:PORT] (examples: 10.0.0.0/8, 10.1.2.3:5432, [fd00::]/64:443)`);
  }
  const { family, value } = addressToBigInt(addr);
  const bits = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? bits : Number(prefixText);
  const port = portText === undefined ? undefined : Number(portText);
  if (prefix > bits || (port !== undefined && (port < 1 || port > 65535))) {
    throw new TsmError('TSM_ERR_USAGE', `"${text}": prefix must be 0-${bits} and port 1-65535`);
  }
  const mask = prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
  return { family, network: value & mask, prefix, port, text };
}

function matches(rule: DestRule, family: Family, value: bigint, port: number): boolean {
  if (rule.family !== family) return false;
  if (rule.port !== undefined && rule.port !== port) return false;
  const bits = family === 4 ? 32 : 128;
  const mask = rule.prefix === 0 ? 0n : ((1n << BigInt(rule.prefix)) - 1n) << BigInt(bits - rule.prefix);
  return (value & mask) === rule.network;
}

/** `::ffff:a.b.c.d` is the IPv4 destination a.b.c.d. */
export function unmapAddress(address: string): { family: Family; address: string } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return { family: 4, address: mapped[1] };
  return { family: isIP(address) === 6 ? 6 : 4, address };
}

export function isLoopbackOrUnspecified(address: string): boolean {
  const { family, address: a } = unmapAddress(address);
  if (family === 4) return a.startsWith('127.') || a === '0.0.0.0';
  const v = addressToBigInt(a).value;
  return v === 1n || v === 0n;
}

export function route(policy: RoutingPolicy, address: string, port: number): 'local' | 'remote' {
  const { family, address: a } = unmapAddress(address);
  const { value } = addressToBigInt(a);
  let best: { prefix: number; action: 'local' | 'remote' } | undefined;
  for (const [rules, action] of [[policy.localDest, 'local'], [policy.remoteDest, 'remote']] as const) {
    for (const rule of rules) {
      if (!matches(rule, family, value, port)) continue;
      const score = rule.prefix + (rule.port !== undefined ? 0.5 : 0);
      if (!best || score > best.prefix) best = { prefix: score, action };
    }
  }
  if (best) return best.action;
  if (isLoopbackOrUnspecified(a)) return policy.remoteLocalhost ? 'remote' : 'local';
  return 'remote';
}
