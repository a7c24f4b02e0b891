import { describe, expect, it } from 'vitest';
import { RemoteError } from '../../protocol/errors.js';
import { EAI_AGAIN, EAI_NONAME, PodDns } from './dns.js';
import { InProcessAgent } from './in-process-agent.js';
import type { RoutingPolicy } from '../routing.js';

const routing: RoutingPolicy = { remoteLocalhost: false, localDest: [], remoteDest: [] };

function dns(): { agent: InProcessAgent; dns: PodDns } {
  const agent = new InProcessAgent();
  return { agent, dns: new PodDns(agent, routing) };
}

describe('DNS answers', () => {
  it('localhost names stay with the real resolver, without asking the pod', async () => {
    const { agent, dns: d } = dns();
    for (const name of ['localhost', 'LOCALHOST.', 'app.localhost']) expect(await d.resolve({ op: 'resolve', name })).toEqual({ ok: true, action: 'local' });
    expect(agent.requests).toEqual([]);
    expect(d.stats.lookups).toBe(0);
  });

  it('a cluster name is the pod\'s answer, with the family asked (any when none)', async () => {
    const { agent, dns: d } = dns();
    agent.answers['dns.lookup'] = () => ({ addresses: [{ family: 4, address: '10.96.0.7' }, { family: 6, address: 'fd00::7' }], canonname: 'db.default.svc.cluster.local' });
    expect(await d.resolve({ op: 'resolve', name: 'db' })).toEqual({
      ok: true, action: 'remote', addrs: [{ family: 4, addr: '10.96.0.7' }, { family: 6, addr: 'fd00::7' }], canonname: 'db.default.svc.cluster.local',
    });
    await d.resolve({ op: 'resolve', name: 'db', family: 6 });
    expect(agent.requests).toEqual([{ type: 'dns.lookup', name: 'db', family: 0 }, { type: 'dns.lookup', name: 'db', family: 6 }]);
    expect(d.stats.lookups).toBe(2);
  });

  it('TSM_ERR_DNS maps to the EAI value the agent gave, EAI_NONAME when it gave none; other failures are thrown', async () => {
    const { agent, dns: d } = dns();
    let next: Error = new RemoteError('TSM_ERR_DNS', 'no answer', -EAI_AGAIN);
    agent.answers['dns.lookup'] = () => Promise.reject(next);
    expect(await d.resolve({ op: 'resolve', name: 'slow' })).toEqual({ ok: false, eai: EAI_AGAIN, message: 'no answer' });
    next = new RemoteError('TSM_ERR_DNS', 'NXDOMAIN');
    expect(await d.resolve({ op: 'resolve', name: 'nope' })).toEqual({ ok: false, eai: EAI_NONAME, message: 'NXDOMAIN' });
    next = new RemoteError('TSM_ERR_SESSION_CLOSED', 'the session ended');
    await expect(d.resolve({ op: 'resolve', name: 'db' })).rejects.toThrow('the session ended');
  });

  it('reverse: a local address stays local; a pod address is the pod\'s name, IPv4-mapped addresses unmapped', async () => {
    const { agent, dns: d } = dns();
    agent.answers['dns.reverse'] = (b) => ({ name: `name-of-${b.address}` });
    expect(await d.reverse({ op: 'reverse', family: 4, addr: '127.0.0.1' })).toEqual({ ok: true, action: 'local' });
    expect(await d.reverse({ op: 'reverse', family: 6, addr: '::ffff:10.0.0.3' })).toEqual({ ok: true, action: 'remote', name: 'name-of-10.0.0.3' });
    agent.answers['dns.reverse'] = () => Promise.reject(new RemoteError('TSM_ERR_DNS', 'NXDOMAIN'));
    expect(await d.reverse({ op: 'reverse', family: 4, addr: '10.0.0.4' })).toEqual({ ok: false, eai: EAI_NONAME, message: 'NXDOMAIN' });
  });

  it("res.config: the pod's settings within what struct __res_state holds; an agent without dns-packets leaves res_* to glibc", async () => {
    const { agent, dns: d } = dns();
    expect(await d.resConfig()).toEqual({ ok: true, action: 'local' });
    expect(agent.requests).toEqual([]);
    (agent.hello.capabilities as string[]).push('dns-packets');
    agent.answers['dns.config'] = () => ({
      nameservers: ['10.96.0.10', 'not-an-ip', 'fd00::10', '10.96.0.11', '10.96.0.12'],
      search: ['default.svc.cluster.local', '', 'x'.repeat(254), 'a', 'b', 'c', 'd', 'e', 'f'],
      ndots: 99, timeoutMs: 2000, attempts: 0,
    });
    expect(await d.resConfig()).toEqual({
      ok: true, action: 'remote', nameservers: ['10.96.0.10', 'fd00::10', '10.96.0.11'],
      search: ['default.svc.cluster.local', 'a', 'b', 'c', 'd', 'e'], ndots: 15, timeoutMs: 2000, attempts: 1,
    });
  });

  it("res.send: the agent's answer bytes; its errno when no nameserver answered; an agent without dns-packets: ECONNREFUSED", async () => {
    const { agent, dns: d } = dns();
    const query = Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
    expect(await d.resSend({ op: 'res.send', query })).toMatchObject({ ok: false, errno: 111 });
    (agent.hello.capabilities as string[]).push('dns-packets');
    const answer = Uint8Array.from([0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
    agent.answers['dns.query'] = (b) => {
      expect(b.packet).toEqual(query);
      return { packet: answer };
    };
    expect(await d.resSend({ op: 'res.send', query })).toEqual({ ok: true, answer });
    agent.answers['dns.query'] = () => Promise.reject(new RemoteError('TSM_ERR_DNS', 'no nameserver answered', 110));
    expect(await d.resSend({ op: 'res.send', query })).toEqual({ ok: false, errno: 110, message: 'no nameserver answered' });
    agent.answers['dns.query'] = () => ({ packet: 'not bytes' as unknown as Uint8Array });
    expect(await d.resSend({ op: 'res.send', query })).toMatchObject({ ok: false, errno: 5 });
    expect(d.stats.dnsMessages).toBe(3);
  });
});
