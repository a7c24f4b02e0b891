import { describe, expect, it } from 'vitest';
import { TsmError } from '../protocol/errors.js';
import { parseDestRule, route, type RoutingPolicy } from './routing.js';

const policy = (p: Partial<RoutingPolicy> = {}): RoutingPolicy => ({ remoteLocalhost: false, localDest: [], remoteDest: [], ...p });

describe('routing', () => {
  it('sends everything but loopback through the pod by default', () => {
    expect(route(policy(), '10.244.3.7', 80)).toBe('remote');
    expect(route(policy(), '2001:db8::1', 443)).toBe('remote');
    expect(route(policy(), '127.0.0.1', 5432)).toBe('local');
    expect(route(policy(), '127.9.9.9', 5432)).toBe('local');
    expect(route(policy(), '::1', 80)).toBe('local');
    expect(route(policy(), '0.0.0.0', 80)).toBe('local');
    expect(route(policy(), '::ffff:127.0.0.1', 80)).toBe('local');
    expect(route(policy(), '::ffff:10.1.2.3', 80)).toBe('remote');
  });

  it('--remote-localhost sends loopback through the pod', () => {
    expect(route(policy({ remoteLocalhost: true }), '127.0.0.1', 80)).toBe('remote');
  });

  it('explicit rules win, the most specific first, ports narrowing them', () => {
    const p = policy({
      localDest: [parseDestRule('10.0.0.0/8'), parseDestRule('10.244.0.9:5432')],
      remoteDest: [parseDestRule('10.244.0.0/16'), parseDestRule('127.0.0.1:6379'), parseDestRule('[fd00::]/64:443')],
    });
    expect(route(p, '10.1.1.1', 80)).toBe('local');
    expect(route(p, '10.244.0.9', 80)).toBe('remote');
    expect(route(p, '10.244.0.9', 5432)).toBe('local');
    expect(route(p, '127.0.0.1', 6379)).toBe('remote');
    expect(route(p, '127.0.0.1', 6380)).toBe('local');
    expect(route(p, 'fd00::5', 443)).toBe('remote');
    expect(route(p, 'fd00::5', 80)).toBe('remote');
  });

  it('parses CIDR[:PORT] forms and rejects nonsense with a usage error', () => {
    expect(parseDestRule('10.1.2.3').prefix).toBe(32);
    expect(parseDestRule('10.1.2.3:80').port).toBe(80);
    expect(parseDestRule('fd00::1').family).toBe(6);
    expect(parseDestRule('fd00::/8').prefix).toBe(8);
    expect(parseDestRule('[fd00::]/8:53').port).toBe(53);
    for (const bad of ['nope', '10.0.0.0/33', '10.0.0.1:99999', '']) {
      expect(() => parseDestRule(bad)).toThrow(TsmError);
    }
  });
});
