/**
 * Which loopback connection is the program's (docs/ARCHITECTURE.md, "Outgoing TCP: who may
 * pair"). The proxy's loopback listeners are open to every local user, and a source port
 * is no proof: another user can connect from 127.0.0.2 with the program's port, or from
 * 127.0.0.1 with a port it guessed, before the program. What nobody else can forge is the
 * program's socket itself: the shim's attach (on the session's private unix socket) names
 * the socket's inode, and the kernel (sock_diag, by the connection's four-tuple) says
 * which socket is at the other end of a connection the proxy accepted.
 */
import net from 'node:net';
import { loadAddon } from '../../native/index.js';

/** What the shim's attach says about the program's socket. */
export interface ProgramSocketClaim {
  /** Its local port. */
  port: number;
  /** Its inode (fstat st_ino). */
  inode: number;
  /** Its owner (fstat st_uid). */
  uid: number;
}

/** The socket at the other end of a loopback connection: its inode (0 once its owner has closed it) and uid. */
export interface PeerOwner {
  inode: number;
  uid: number;
}

/** Looks up the owner of a connection's peer socket; undefined when there is none (reset, gone). */
export type PeerOwnerLookup = (socket: net.Socket) => PeerOwner | undefined;

export const lookupPeerOwner: PeerOwnerLookup = (socket) => {
  const { localAddress, localPort, remoteAddress, remotePort } = socket;
  if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) return undefined;
  try {
    return loadAddon().loopbackPeerOwner(net.isIPv6(remoteAddress) ? 6 : 4, localAddress, localPort, remoteAddress, remotePort) ?? undefined;
  } catch {
    return undefined;
  }
};

/**
 * Whether a connection whose peer has `peerPort` and `owner` is the program's claimed socket.
 * A program that wrote and closed at once (`echo x > /dev/tcp/…`) may be gone before the
 * proxy looks: its socket then has no inode, but keeps its port and its owner, and a closed
 * socket cannot read what the pod answers. Another user's socket, open or closed, never
 * passes.
 */
export function isProgramPeer(claim: ProgramSocketClaim, peerPort: number, owner: PeerOwner): boolean {
  if (peerPort !== claim.port) return false;
  if (owner.inode !== 0) return owner.inode === claim.inode;
  return owner.uid === claim.uid;
}
