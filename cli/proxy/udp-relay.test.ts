import dgram from 'node:dgram';
import { constants as osConstants } from 'node:os';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteError } from '../../protocol/errors.js';
import type { ShimRequestOf } from '../../protocol/shim-wire.js';
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
    await new Promise((r) => setTimeout(r, 200));
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

