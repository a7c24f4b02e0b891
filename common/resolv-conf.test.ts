import { describe, expect, it } from 'vitest';
import { parseResolvConf } from './resolv-conf.js';

describe('resolv.conf', () => {
  it('parses a kubelet-written resolv.conf', () => {
    const conf = parseResolvConf('nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:3\n');
    expect(conf).toEqual({ nameservers: ['10.96.0.10'], search: ['shop.svc.cluster.local', 'svc.cluster.local', 'cluster.local'], ndots: 5, timeoutMs: 2000, attempts: 3 });
  });

  it('uses glibc defaults, with 127.0.0.1 when no nameserver is given', () => {
    expect(parseResolvConf('')).toEqual({ nameservers: ['127.0.0.1'], search: [], ndots: 1, timeoutMs: 5000, attempts: 2 });
  });

  it('skips comments and nameservers that are not addresses, and caps the options', () => {
    const conf = parseResolvConf('# nameserver 10.0.0.1\nnameserver dns.example ; not an address\nnameserver fd00::53 # v6\ndomain corp.example\noptions ndots:40 timeout:90 attempts:0\n');
    expect(conf).toEqual({ nameservers: ['fd00::53'], search: ['corp.example'], ndots: 15, timeoutMs: 30000, attempts: 1 });
  });
});
