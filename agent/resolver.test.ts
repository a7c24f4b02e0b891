import { describe, expect, it } from 'vitest';
import { parseResolvConf } from '../common/resolv-conf.js';
import { candidateNames, parseHosts } from './resolver.js';

describe('pod resolver configuration', () => {
  const conf = parseResolvConf('nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:3\n');

  it('tries search domains first below ndots, the name itself first at or above it', () => {
    expect(candidateNames('db', conf)).toEqual(['db.shop.svc.cluster.local', 'db.svc.cluster.local', 'db.cluster.local', 'db']);
    expect(candidateNames('a.b.c.d.e.f', conf)[0]).toBe('a.b.c.d.e.f');
    expect(candidateNames('db.shop.svc.cluster.local.', conf)).toEqual(['db.shop.svc.cluster.local']);
    expect(candidateNames('example.com', { search: ['x'], ndots: 1 })).toEqual(['example.com', 'example.com.x']);
  });

  it('parses hosts files, ignoring comments and junk', () => {
    expect(parseHosts('127.0.0.1 localhost\n# c\n10.1.2.3 Web web.local # x\nnot-an-ip foo\nfd00::1 v6\n')).toEqual([
      { address: '127.0.0.1', family: 4, names: ['localhost'] },
      { address: '10.1.2.3', family: 4, names: ['web', 'web.local'] },
      { address: 'fd00::1', family: 6, names: ['v6'] },
    ]);
  });
});
