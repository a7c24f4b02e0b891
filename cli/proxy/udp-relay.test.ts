import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { constants as osConstants } from 'node:os';
import dnsPacket from 'dns-packet';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteError } from '../../protocol/errors.js';
import type { ShimRequestOf } from '../../protocol/shim-wire.js';
import { PodDns } from './dns.js';
import { InProcessAgent } from './in-process-agent.js';
import { UdpRelays } from './udp-relay.js';

const dest = { action: 'remote', address: '10.0.0.10', family: 4 } as const;
const connect: ShimRequestOf<'connect'> = { op: 'connect', proto: 'udp', family: 4, addr: '10.0.0.10', port: 53 };

let agent: InProcessAgent;
let relays: UdpRelays;
const sockets: dgram.Socket[] = [];

/** The pod side answers each datagram with its upper-case copy. */
function podEchoesUpperCase(): void {
  agent.answers['udp.open'] = (b) => {
    agent.podMux.open(b.stream);
    const send = agent.podMux.bindDatagrams(b.stream, (data) => send(Buffer.from(Buffer.from(data).toString().toUpperCase())));
    return { localAddress: '10.244.0.5', localPort: 40000 };
  };
}

async function program(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  sockets.push(s);
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

const next = (s: dgram.Socket): Promise<string> => new Promise((resolve) => s.once('message', (m) => resolve(m.toString())));
const nextBytes = (s: dgram.Socket, ms = 2000): Promise<Buffer | undefined> => new Promise((resolve) => {
  const timer = setTimeout(() => resolve(undefined), ms);
  s.once('message', (m) => {
    clearTimeout(timer);
    resolve(m);
  });
});

beforeEach(() => {
  agent = new InProcessAgent();
  relays = new UdpRelays(agent, { idleMs: 100 });
});
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
  relays.close();
});

describe('UDP relay', () => {
  it('relays the program\'s datagrams to the pod and the answers back, and reports the pod-side address', async () => {
    podEchoesUpperCase();
    const reply = await relays.open(connect, dest, '127.0.0.1') as { proxyPort: number } & Record<string, unknown>;
    expect(reply).toMatchObject({ ok: true, action: 'proxy', proxyAddr: '127.0.0.1', stream: 1, localAddr: '10.244.0.5', localPort: 40000 });
    expect(agent.requests[0]).toEqual({ type: 'udp.open', stream: 1, host: '10.0.0.10', port: 53, family: 4 });
    const p = await program();
    const answer = next(p);
    p.send('query', reply.proxyPort, '127.0.0.1');
    expect(await answer).toBe('QUERY');
    expect(relays.stats.udpFlows).toBe(1);
  });

  it('relays only the flow\'s first sender', async () => {
    let podGot = 0;
    agent.answers['udp.open'] = (b) => {
      agent.podMux.open(b.stream);
      agent.podMux.bindDatagrams(b.stream, () => { podGot++; });
      return { localAddress: '10.244.0.5', localPort: 40000 };
    };
    const { proxyPort } = await relays.open(connect, dest, '127.0.0.1') as { proxyPort: number };
    const first = await program();
    const other = await program();
    first.send('a', proxyPort, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 30));
    other.send('b', proxyPort, '127.0.0.1');
    first.send('c', proxyPort, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    expect(podGot).toBe(2);
  });

  it('an idle flow closes its relay and the pod\'s stream', async () => {
    podEchoesUpperCase();
    await relays.open(connect, dest, '127.0.0.1');
    expect(relays.size).toBe(1);
    // At least the idle time; more on a loaded machine, where timers fire late.
    await new Promise((r) => setTimeout(r, 200));
    for (let waited = 0; relays.size > 0 && waited < 3000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setImmediate(r)); // the stream's close reaches the pod side on the next turn
    expect(relays.size).toBe(0);
    expect(agent.podMux.has(1)).toBe(false);
  });

  it('the pod\'s error comes back as its errno, and no relay stays open', async () => {
    agent.answers['udp.open'] = () => Promise.reject(new RemoteError('TSM_ERR_CONNECT', 'network unreachable', osConstants.errno.ENETUNREACH));
    expect(await relays.open(connect, dest, '127.0.0.1')).toEqual({ ok: false, errno: osConstants.errno.ENETUNREACH, message: 'network unreachable' });
    expect(relays.size).toBe(0);
    expect(agent.peer.mux.has(1)).toBe(false);
  });
});


describe('DNS relay: UDP queries to the pod\'s nameserver', () => {
  const NS = '10.0.0.10';
  const query = (id: number, name = 'db.default.svc.cluster.local', edns = false): Buffer => dnsPacket.encode({
    type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name, class: 'IN' }],
    ...(edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as unknown as dnsPacket.Answer] } : {}),
  });
  /** The pod's nameserver, as the agent's dns.query gives it: `records` A records with a TTL of 30 for the query's name. */
  function nameserver(records = 1): void {
    agent.answers['dns.query'] = (b) => {
      const q = dnsPacket.decode(Buffer.from(b.packet));
      const name = q.questions?.[0]?.name ?? '';
      return {
        packet: dnsPacket.encode({
          type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: q.questions,
          answers: Array.from({ length: records }, (_, i) => ({ type: 'A' as const, name, ttl: 30, data: `10.96.0.${i + 1}` })),
        }),
      };
    };
  }
  let dns: PodDns;
  beforeEach(() => {
    (agent.hello.capabilities as string[]).push('dns-packets');
    dns = new PodDns(agent, { remoteLocalhost: false, localDest: [], remoteDest: [] }, [NS, 'fd00::10']);
    relays = new UdpRelays(agent, { idleMs: 1000 }, dns);
  });

  const openDns = async (address = NS, port = 53, uid = process.getuid?.() ?? 0) => {
    const reply = await relays.open({ ...connect, addr: address, port, uid }, { action: 'remote', address, family: address.includes(':') ? 6 : 4 }, '127.0.0.1');
    return reply as { ok: true; proxyPort: number } & Record<string, unknown>;
  };

  it('answers a query through dns.query, with no UDP flow in the pod; a repeated query comes from the session\'s cache', async () => {
    nameserver();
    const reply = await openDns();
    expect(reply).toEqual({ ok: true, action: 'proxy', proxyAddr: '127.0.0.1', proxyPort: reply.proxyPort, stream: 0, sharedUid: process.getuid?.() });
    const p = await program();
    const got = nextBytes(p);
    p.send(query(0x1111), reply.proxyPort, '127.0.0.1');
    const a = dnsPacket.decode((await got)!);
    expect(a.id).toBe(0x1111);
    expect(a.answers?.map((r) => (r as { data?: unknown }).data)).toEqual(['10.96.0.1']);
    // A new socket for the next query, as Go's resolver makes.
    const again = await openDns('fd00::10');
    const p2 = await program();
    const got2 = nextBytes(p2);
    p2.send(query(0x2222, 'DB.default.svc.cluster.local'), again.proxyPort, '127.0.0.1');
    const b = dnsPacket.decode((await got2)!);
    expect(b.id).toBe(0x2222);
    expect(b.questions?.[0]?.name).toBe('DB.default.svc.cluster.local');
    expect(agent.requests.map((r) => r.type)).toEqual(['dns.query']);
    expect(relays.stats).toEqual({ udpFlows: 0, dnsFlows: 2 });
    expect(dns.stats).toMatchObject({ udpQueries: 2, cachedMessages: 1 });
  });

  it('one relay per nameserver serves every socket of the session: a later connect gets the same one, so the shim and the supervisor need not ask again', async () => {
    nameserver();
    const first = await openDns();
    const [second, third] = await Promise.all([openDns(), openDns()]);
    expect([second.proxyPort, third.proxyPort]).toEqual([first.proxyPort, first.proxyPort]);
    expect((await openDns('fd00::10')).proxyPort).not.toBe(first.proxyPort);
    // Three sockets of the program, each answered (the per-socket count is what --verbose shows).
    for (const id of [1, 2, 3]) {
      const p = await program();
      const got = nextBytes(p);
      p.send(query(id, `n${id}.default.svc.cluster.local`), first.proxyPort, '127.0.0.1');
      expect(dnsPacket.decode((await got)!).id).toBe(id);
    }
    expect(relays.stats).toEqual({ udpFlows: 0, dnsFlows: 3 });
  });

  it('a socket of another owner (a program that dropped its privileges) gets a DNS relay of its own, which serves its first sender', async () => {
    nameserver();
    const shared = await openDns();
    const own = await openDns(NS, 53, (process.getuid?.() ?? 0) + 1);
    expect(own).not.toHaveProperty('sharedUid');
    expect(own.proxyPort).not.toBe(shared.proxyPort);
    const [p, other] = [await program(), await program()];
    const got = nextBytes(p);
    p.send(query(4), own.proxyPort, '127.0.0.1');
    expect(dnsPacket.decode((await got)!).id).toBe(4);
    const notOther = nextBytes(other, 200);
    other.send(query(5), own.proxyPort, '127.0.0.1');
    expect(await notOther).toBeUndefined();
  });

  it.skipIf(process.getuid?.() !== 0)('another local user\'s socket gets no answer from the shared relay, nor a flow in the pod', async () => {
    nameserver();
    podEchoesUpperCase();
    const { proxyPort } = await openDns();
    // As nobody: a query, then a datagram that is not DNS (it would open a pod flow), each to the relay.
    const script = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
for msg in [bytes.fromhex(sys.argv[2]), b'not dns']:
    s.sendto(msg, ('127.0.0.1', int(sys.argv[1])))
try:
    s.recvfrom(2048); print('answered')
except socket.timeout:
    print('nothing')
`;
    const squatter = spawn('/usr/bin/setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '/usr/bin/python3', '-c', script, String(proxyPort), query(9).toString('hex')]);
    let out = '';
    squatter.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => squatter.once('close', r));
    expect(out.trim()).toBe('nothing');
    expect(agent.requests.filter((r) => r.type === 'udp.open' || r.type === 'dns.query')).toHaveLength(0);
    // The session's own socket is served, as before.
    const p = await program();
    const got = nextBytes(p);
    p.send(query(10), proxyPort, '127.0.0.1');
    expect(dnsPacket.decode((await got)!).id).toBe(10);
    expect(relays.stats.dnsFlows).toBe(1);
  });

  it('a sender\'s pod flow (what is not a plain query) is closed at the next sweep once its socket is gone; the shared relay stays', async () => {
    relays.close();
    relays = new UdpRelays(agent, { idleMs: 60_000, sweepMs: 50 }, dns);
    nameserver();
    podEchoesUpperCase();
    const { proxyPort } = await openDns();
    const [kept, gone] = [await program(), await program()];
    for (const p of [kept, gone]) {
      const echoed = nextBytes(p);
      p.send('hello', proxyPort, '127.0.0.1');
      expect((await echoed)?.toString()).toBe('HELLO');
    }
    const streams = (): number[] => agent.requests.flatMap((r) => (r.type === 'udp.open' ? [(r as unknown as { stream: number }).stream] : []));
    expect(streams()).toHaveLength(2);
    const [keptStream, goneStream] = streams() as [number, number];
    gone.close();
    sockets.splice(sockets.indexOf(gone), 1);
    for (let waited = 0; agent.podMux.has(goneStream) && waited < 3000; waited += 25) await new Promise((r) => setTimeout(r, 25));
    expect(agent.podMux.has(goneStream)).toBe(false);
    expect(agent.podMux.has(keptStream)).toBe(true);
    const got = nextBytes(kept);
    kept.send(query(3), proxyPort, '127.0.0.1');
    expect(dnsPacket.decode((await got)!).id).toBe(3);
  });

  it('an answer larger than the program takes over UDP is truncated (TC), so it asks again over TCP', async () => {
    nameserver(25);
    const { proxyPort } = await openDns();
    const p = await program();
    let got = nextBytes(p);
    p.send(query(1), proxyPort, '127.0.0.1');
    const cut = (await got)!;
    expect(cut.length).toBeLessThanOrEqual(512);
    expect(dnsPacket.decode(cut)).toMatchObject({ id: 1, flag_tc: true, answers: [] });
    got = nextBytes(p);
    p.send(query(2, 'db.default.svc.cluster.local', true), proxyPort, '127.0.0.1');
    const whole = dnsPacket.decode((await got)!); // 25 records fit 1232 bytes
    expect(whole.flag_tc).toBe(false);
    expect(whole.answers).toHaveLength(25);
  });

  it('what is not a plain query goes through a pod flow opened for it; hostile datagrams crash nothing', async () => {
    nameserver();
    podEchoesUpperCase();
    const { proxyPort } = await openDns();
    const p = await program();
    const echoed = nextBytes(p);
    p.send('not dns at all', proxyPort, '127.0.0.1');
    expect((await echoed)?.toString()).toBe('NOT DNS AT ALL');
    for (const junk of [Buffer.alloc(0), Buffer.alloc(11, 0xff), Buffer.alloc(60000, 0xc0), Buffer.from(query(5).subarray(0, 20))]) p.send(junk, proxyPort, '127.0.0.1');
    const notify = query(6);
    notify[2] = 0x21; // opcode NOTIFY
    p.send(notify, proxyPort, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 100));
    p.removeAllListeners('message');
    const got = nextBytes(p);
    p.send(query(7), proxyPort, '127.0.0.1');
    expect(dnsPacket.decode((await got)!).id).toBe(7);
    expect(agent.requests.filter((r) => r.type === 'udp.open')).toHaveLength(1);
    expect(relays.stats).toEqual({ udpFlows: 1, dnsFlows: 1 });
  });

  it('no answer from the pod\'s nameservers: nothing is sent back (the program asks again), and the relay goes on', async () => {
    agent.answers['dns.query'] = () => Promise.reject(new RemoteError('TSM_ERR_DNS', 'no nameserver answered', osConstants.errno.ETIMEDOUT));
    const { proxyPort } = await openDns();
    const p = await program();
    p.send(query(1), proxyPort, '127.0.0.1');
    expect(await nextBytes(p, 200)).toBeUndefined();
    nameserver();
    const got = nextBytes(p);
    p.send(query(2), proxyPort, '127.0.0.1');
    expect(dnsPacket.decode((await got)!).id).toBe(2);
  });

  it('other destinations and ports, and an agent that cannot send DNS messages, keep the pod flow', async () => {
    podEchoesUpperCase();
    expect(await openDns('10.0.0.11')).toMatchObject({ stream: 1, localAddr: '10.244.0.5' });
    expect(await openDns(NS, 5353)).toMatchObject({ stream: 2, localAddr: '10.244.0.5' });
    (agent.hello.capabilities as string[]).splice((agent.hello.capabilities as string[]).indexOf('dns-packets'), 1);
    expect(await openDns()).toMatchObject({ stream: 3, localAddr: '10.244.0.5' });
    expect(relays.stats).toEqual({ udpFlows: 3, dnsFlows: 0 });
  });
});

describe('UDP relay sweep', () => {
  it('a relay whose program socket has closed is closed at the next sweep, with its pod stream; an open one stays', async () => {
    relays.close();
    relays = new UdpRelays(agent, { idleMs: 60_000, sweepMs: 50 });
    podEchoesUpperCase();
    const kept = await relays.open(connect, dest, '127.0.0.1') as { proxyPort: number; stream: number };
    const gone = await relays.open(connect, dest, '127.0.0.1') as { proxyPort: number; stream: number };
    const [p1, p2] = [await program(), await program()];
    for (const [p, r] of [[p1, kept], [p2, gone]] as const) {
      const answer = next(p);
      p.connect(r.proxyPort, '127.0.0.1');
      await new Promise((resolve) => p.once('connect', resolve));
      p.send('q');
      expect(await answer).toBe('Q');
    }
    p2.close();
    sockets.splice(sockets.indexOf(p2), 1);
    for (let waited = 0; relays.size > 1 && waited < 3000; waited += 25) await new Promise((r) => setTimeout(r, 25));
    await new Promise((r) => setImmediate(r));
    expect(relays.size).toBe(1);
    expect(agent.podMux.has(gone.stream)).toBe(false);
    expect(agent.podMux.has(kept.stream)).toBe(true);
    // Several sweeps later the open one is still there.
    await new Promise((r) => setTimeout(r, 200));
    expect(relays.size).toBe(1);
  });
});
