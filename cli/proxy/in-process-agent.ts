/**
 * An agent session in this process, for the proxy's unit tests: two real Muxes wired back
 * to back (the CLI's, and the "pod side" the test drives), requests answered by functions
 * the test sets, and agent messages the test emits. The "pod" is this machine's loopback.
 */
import { EventEmitter } from 'node:events';
import { fstatSync } from 'node:fs';
import net from 'node:net';
import { RemoteError } from '../../protocol/errors.js';
import type { AgentHello, AgentMessage, ClientRequest, ResultOf, StreamMessage } from '../../protocol/messages.js';
import { Mux } from '../../protocol/mux.js';
import type { ProxyAgent } from './proxy-agent.js';

type Body<K extends ClientRequest['type']> = Omit<Extract<ClientRequest, { type: K }>, 'id'>;
type Answer<K extends ClientRequest['type']> = (body: Body<K>) => Promise<ResultOf[K]> | ResultOf[K];
export type Answers = { [K in ClientRequest['type']]?: Answer<K> };

class InProcessPeer extends EventEmitter {
  mux!: Mux;
  closed = false;
}

export class InProcessAgent implements ProxyAgent {
  readonly hello: AgentHello = {
    type: 'hello', protocol: 1, capabilities: ['incoming', 'files'], session: 'test', agent: { version: 'test', node: 'test' },
    target: { pid: 1, description: 'test', nameservers: [], search: [] },
  };
  readonly peer = new InProcessPeer();
  /** The agent's end of the session's streams. */
  readonly podMux: Mux;
  /** Every request, in order. */
  readonly requests: Array<Body<ClientRequest['type']> & { type: ClientRequest['type'] }> = [];
  answers: Answers = {};
  #nextStream = 1;

  constructor() {
    // Asynchronous both ways, as over a WebSocket.
    const toPod = (m: StreamMessage): void => void setImmediate(() => this.podMux.handle(m));
    const toCli = (m: StreamMessage): void => void setImmediate(() => this.peer.mux.handle(m));
    this.peer.mux = new Mux(toPod, () => 0);
    this.podMux = new Mux(toCli, () => 0);
  }

  allocateStream(): number {
    return this.#nextStream++;
  }

  readonly request: ProxyAgent['request'] = (body) => {
    this.requests.push(body);
    const answer = this.answers[body.type] as ((b: typeof body) => unknown) | undefined;
    if (!answer) return Promise.reject(new RemoteError('TSM_ERR_INTERNAL', `no answer for ${body.type} in this test`));
    return Promise.resolve().then(() => answer(body)) as never;
  };

  /** An agent message (tcp.connected, incoming.open, …). */
  emit(m: AgentMessage): void {
    this.peer.emit('message', m);
  }

  /** The pod's side of a TCP stream: connects to `port` on loopback and relays it. Resolves with the pod-side address. */
  async connectInPod(stream: number, port: number): Promise<{ localAddress: string; localPort: number }> {
    if (!this.podMux.has(stream)) this.podMux.open(stream);
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    this.podMux.bindSocket(stream, socket);
    return { localAddress: socket.localAddress ?? '', localPort: socket.localPort ?? 0 };
  }
}

/** A loopback TCP server that echoes what it receives; `close()` ends it and its connections. */
export async function echoServer(): Promise<{ port: number; connections: Set<net.Socket>; close: () => Promise<void> }> {
  const connections = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections.add(s);
    s.on('close', () => connections.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port, connections,
    close: () => new Promise<void>((resolve) => {
      for (const c of connections) c.destroy();
      server.close(() => resolve());
    }),
  };
}

/** What the shim's attach says about a program socket of this process: its port, inode and owner. */
export function programSocketClaim(socket: net.Socket): { port: number; inode: number; uid: number } {
  // The fd of a connected TCP socket (libuv's handle); the shim fstat()s its own.
  const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
  const st = fstatSync(fd);
  return { port: socket.localPort ?? 0, inode: st.ino, uid: st.uid };
}
