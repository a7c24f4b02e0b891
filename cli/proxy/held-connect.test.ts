import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { loadAddon } from '../../native/index.js';
import { HeldConnect, type HeldConnectOptions } from './held-connect.js';
import { programSocketClaim } from './in-process-agent.js';
import { lookupPeerOwner } from './program-socket.js';

const addon = loadAddon();

interface Harness {
  held: HeldConnect;
  program: net.Socket;
  released: net.Socket[];
  closedStream: number;
  settled: number;
}

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A held listener (the real addon) and a program socket connecting to it, as the shim leaves it. */
function heldConnect(options: Partial<HeldConnectOptions> = {}): Harness {
  const listener = addon.holdListen(4);
  const h: Harness = { released: [], closedStream: 0, settled: 0 } as unknown as Harness;
  h.held = new HeldConnect({
    family: 4,
    listener,
    release: (family, port, clientPort) => addon.holdRelease(family, port, clientPort),
    peerOwner: lookupPeerOwner,
    onReleased: (socket) => {
      h.released.push(socket);
      cleanup.push(() => socket.destroy());
    },
    closeStream: () => { h.closedStream++; },
    onSettled: () => { h.settled++; },
    heldPairTimeoutMs: 5000,
    attachTimeoutMs: 5000,
    ...options,
  });
  h.program = net.connect({ port: listener.port, host: '127.0.0.1' });
  h.program.on('error', () => undefined);
  cleanup.push(() => {
    h.held.drop();
    h.program.destroy();
  });
  return h;
}

/** A claim for a program socket that is never released (node has no fd before its connect starts). */
const unreleasedClaim = (s: net.Socket): { port: number; inode: number; uid: number } => ({ port: s.localPort ?? 0, inode: 1, uid: 0 });
const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const connected = (s: net.Socket): Promise<void> => new Promise((resolve) => s.once('connect', () => resolve()));
const refused = (s: net.Socket): Promise<string | undefined> => new Promise((resolve) => s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code)));

describe('held connect states', () => {
  it('attach, then the pod connects: awaiting-attach-and-pod → awaiting-pod → released, by a simultaneous open', async () => {
    const h = heldConnect();
    expect(h.held.state).toBe('awaiting-attach-and-pod');
    await wait(50);
    expect(h.program.connecting).toBe(true); // its SYN was dropped
    h.held.attached(programSocketClaim(h.program));
    expect(h.held.state).toBe('awaiting-pod');
    const done = connected(h.program);
    h.held.podConnected();
    expect(h.held.state).toBe('released');
    await done;
    const released = h.released[0];
    expect(released).toBeDefined();
    h.program.write('from the program');
    const got = await new Promise<string>((resolve) => released?.once('data', (d: Buffer) => resolve(d.toString())));
    expect(got).toBe('from the program');
    expect(h.settled).toBe(1);
    expect(h.closedStream).toBe(0);
  });

  it('the pod connects, then the attach: awaiting-attach → released', async () => {
    const h = heldConnect();
    await wait(20);
    h.held.podConnected();
    expect(h.held.state).toBe('awaiting-attach');
    const done = connected(h.program);
    h.held.attached(programSocketClaim(h.program));
    expect(h.held.state).toBe('released');
    await done;
  });

  it('the pod fails: dropped, the listener closes and the program is refused at its next SYN', async () => {
    const h = heldConnect();
    const outcome = refused(h.program);
    h.held.attached(unreleasedClaim(h.program));
    h.held.podFailed();
    expect(h.held.state).toBe('dropped');
    expect(h.closedStream).toBe(0); // the stream is what told us
    expect(await outcome).toBe('ECONNREFUSED');
    h.held.podConnected(); // too late: nothing happens
    expect(h.held.state).toBe('dropped');
    expect(h.settled).toBe(1);
  }, 10000);

  it('the program is gone (no attach after the pod connected): dropped after attachTimeoutMs, and the stream closed', async () => {
    const h = heldConnect({ attachTimeoutMs: 50 });
    h.held.podConnected();
    await wait(20);
    expect(h.held.state).toBe('awaiting-attach');
    await wait(80);
    expect(h.held.state).toBe('dropped');
    expect(h.closedStream).toBe(1);
  });

  it('attached but the pod never answers: dropped after heldPairTimeoutMs, and the stream closed', async () => {
    const h = heldConnect({ heldPairTimeoutMs: 50 });
    h.held.attached(unreleasedClaim(h.program));
    await wait(100);
    expect(h.held.state).toBe('dropped');
    expect(h.closedStream).toBe(1);
  });

  it('the program closed its socket before the pod connected: the release is refused, and it is dropped', async () => {
    const h = heldConnect();
    h.held.attached(unreleasedClaim(h.program));
    h.program.destroy();
    await wait(20);
    h.held.podConnected();
    expect(h.held.state).toBe('dropped');
    expect(h.closedStream).toBe(1);
    expect(h.released).toHaveLength(0);
  });

  it('a release whose other end is not the claimed socket (another user\'s, on its port) is dropped, and the stream closed', async () => {
    const h = heldConnect();
    await wait(20);
    h.held.attached({ ...programSocketClaim(h.program), inode: 1 });
    h.held.podConnected();
    expect(h.held.state).toBe('dropped');
    expect(h.closedStream).toBe(1);
    expect(h.released).toHaveLength(0);
  });
});
