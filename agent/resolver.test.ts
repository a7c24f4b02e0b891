import { describe, expect, it } from 'vitest';
import { parseResolvConf } from '../common/resolv-conf.js';
import { answers, candidateNames, parseHosts, questionEnd } from './resolver.js';

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

describe('DNS messages sent for the program (res_send)', () => {
  const question = [2, 0x64, 0x62, 0, 0, 1, 0, 1]; // db A IN
  const query = Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...question]);

  it('finds where the questions end, and refuses what does not parse', () => {
    expect(questionEnd(query)).toBe(query.length);
    expect(questionEnd(query.subarray(0, 11))).toBe(-1);
    expect(questionEnd(query.subarray(0, query.length - 1))).toBe(-1);
    expect(questionEnd(Uint8Array.from([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 1, 0, 1]))).toBe(-1); // a reserved label type
    const loop = Uint8Array.from([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...Array<number>(300).fill(1).map((_, i) => (i % 2 === 0 ? 1 : 0x61))]);
    expect(questionEnd(loop)).toBe(-1); // more than 127 labels, or past the end
  });

  it('takes only a response to the same question (names compared case-insensitively)', () => {
    const reply = (flags: number, q: number[]) => Uint8Array.from([0x56, 0x78, flags, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, ...q]);
    expect(answers(query, reply(0x81, question))).toBe(true);
    expect(answers(query, reply(0x81, [2, 0x44, 0x42, 0, 0, 1, 0, 1]))).toBe(true);
    expect(answers(query, reply(0x01, question))).toBe(false); // a query, not a response
    expect(answers(query, reply(0x81, [2, 0x64, 0x63, 0, 0, 1, 0, 1]))).toBe(false);
    expect(answers(query, reply(0x81, [2, 0x64, 0x62, 0, 0, 28, 0, 1]))).toBe(false); // another type
    expect(answers(query, reply(0x81, question).subarray(0, 14))).toBe(false);
  });
});
