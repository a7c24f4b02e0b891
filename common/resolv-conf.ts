/**
 * /etc/resolv.conf as glibc reads it: nameservers, the search list, ndots, timeout and
 * attempts. The agent reads the pod's (its resolver and the session's hello); the CLI
 * reads this machine's, to tell DNS packets to its own nameserver apart.
 */
import { isIP } from 'node:net';

export interface ResolvConf {
  nameservers: string[];
  search: string[];
  ndots: number;
  timeoutMs: number;
  attempts: number;
}

export function parseResolvConf(text: string): ResolvConf {
  const conf: ResolvConf = { nameservers: [], search: [], ndots: 1, timeoutMs: 5000, attempts: 2 };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [key, ...rest] = line.split(/\s+/);
    if (key === 'nameserver' && rest[0] && isIP(rest[0])) conf.nameservers.push(rest[0]);
    else if (key === 'search' || key === 'domain') conf.search = rest.filter(Boolean);
    else if (key === 'options') {
      for (const opt of rest) {
        const [k, v] = opt.split(':');
        const n = Number(v);
        if (k === 'ndots' && Number.isFinite(n)) conf.ndots = Math.min(n, 15);
        if (k === 'timeout' && Number.isFinite(n)) conf.timeoutMs = Math.min(n, 30) * 1000;
        if (k === 'attempts' && Number.isFinite(n)) conf.attempts = Math.min(Math.max(n, 1), 5);
      }
    }
  }
  if (conf.nameservers.length === 0) conf.nameservers.push('127.0.0.1');
  return conf;
}
