import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { programSocketClaim } from './in-process-agent.js';
import { isProgramPeer, lookupPeerOwner, type PeerOwner } from './program-socket.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A loopback server and a client connected to it; resolves both ends (the server's first). */
async function connection(): Promise<{ accepted: net.Socket; client: net.Socket }> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const acceptedP = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  client.on('error', () => undefined);
  await new Promise((r) => client.once('connect', r));
  const accepted = await acceptedP;
  accepted.on('error', () => undefined);
  cleanup.push(() => {
    client.destroy();
    accepted.destroy();
    server.close();
  });
  return { accepted, client };
}

describe('whose socket is at the other end of a loopback connection', () => {
  it('the kernel names the peer socket by its inode while it is open; once closed, by its owner only', async () => {
    const { accepted, client } = await connection();
    const claim = programSocketClaim(client);
    expect(lookupPeerOwner(accepted)).toEqual({ inode: claim.inode, uid: claim.uid });
    client.destroy();
    await new Promise((r) => setTimeout(r, 20));
    // The accepted socket keeps its addresses: the lookup is by its four-tuple.
    expect(lookupPeerOwner(accepted)).toEqual({ inode: 0, uid: claim.uid });
  });

  it('a connection whose peer is gone (reset) has no owner', async () => {
    const { accepted, client } = await connection();
    client.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 20));
    expect(lookupPeerOwner(accepted)).toBeUndefined();
  });

  it('keeps one netlink socket for its lookups, not a socket made and closed per connect (issue 13)', async () => {
    /** The inodes of this process's NETLINK_SOCK_DIAG (protocol 4) sockets. */
    const diagSockets = (): string[] => {
      const diag = new Set(readFileSync('/proc/net/netlink', 'utf8').trim().split('\n').slice(1)
        .map((line) => line.trim().split(/\s+/)).filter((f) => f[1] === '4').map((f) => f[9]));
      return readdirSync('/proc/self/fd').map((fd) => {
        try { return /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1]; } catch { return undefined; }
      }).filter((ino): ino is string => ino !== undefined && diag.has(ino));
    };
    const { accepted, client } = await connection();
    const claim = programSocketClaim(client);
    expect(lookupPeerOwner(accepted)).toEqual({ inode: claim.inode, uid: claim.uid });
    const kept = diagSockets();
    expect(kept).toHaveLength(1);
    const second = await connection();
    expect(lookupPeerOwner(second.accepted)).toEqual({ inode: programSocketClaim(second.client).inode, uid: claim.uid });
    expect(diagSockets()).toEqual(kept);
  });

  it('pairs the claimed socket; a closed one of the same owner on its port; nothing else', () => {
    const claim = { port: 40312, inode: 995270, uid: 1000 };
    const owner = (o: Partial<PeerOwner>): PeerOwner => ({ inode: 995270, uid: 1000, ...o });
    expect(isProgramPeer(claim, 40312, owner({}))).toBe(true);
    expect(isProgramPeer(claim, 40312, owner({ inode: 995271 }))).toBe(false); // another socket, even of the same user
    expect(isProgramPeer(claim, 40313, owner({}))).toBe(false);
    expect(isProgramPeer(claim, 40312, owner({ inode: 0 }))).toBe(true); // the program wrote and closed at once
    expect(isProgramPeer(claim, 40312, owner({ inode: 0, uid: 65534 }))).toBe(false); // another user's closed socket
  });
});
