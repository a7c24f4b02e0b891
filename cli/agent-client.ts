/**
 * The CLI's end of a session: connects to an agent, says hello, and turns requests into
 * promises (each request gets exactly one answer, or fails when the session ends).
 */
import { hostname, userInfo } from 'node:os';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import { packageVersion } from '../native/index.js';
import { MAX_FRAME_BYTES, decodeAgentMessage } from '../protocol/codec.js';
import { RemoteError, TsmError } from '../protocol/errors.js';
import {
  CAPABILITIES, PROTOCOL_VERSION, type AgentHello, type AgentMessage, type ClientMessage, type ClientRequest,
  type ResultOf, type TargetRef, type FilesMode,
} from '../protocol/messages.js';
import { DEFAULT_PEER_OPTIONS, Peer, type PeerOptions } from '../protocol/peer.js';
import { readAgentKey } from '../common/local-agent-key.js';

type RequestBody<K extends ClientRequest['type']> = Omit<Extract<ClientRequest, { type: K }>, 'id'>;

export class AgentConnection {
  readonly peer: Peer<AgentMessage, ClientMessage>;
  readonly hello: AgentHello;
  #nextId = 1;
  #nextStream = 1;
  readonly #pending = new Map<number, { resolve: (v: never) => void; reject: (e: Error) => void }>();
  #closedError: TsmError | undefined;

  constructor(peer: Peer<AgentMessage, ClientMessage>, hello: AgentHello, transportError?: () => TsmError | undefined) {
    this.peer = peer;
    this.hello = hello;
    peer.on('message', (m: AgentMessage) => {
      if (m.type === 'result' || m.type === 'error') {
        const pending = this.#pending.get(m.id);
        if (!pending) return;
        this.#pending.delete(m.id);
        if (m.type === 'result') pending.resolve(m.value as never);
        else pending.reject(new RemoteError(m.code, m.message, m.errno));
      } else if (m.type === 'session.error') {
        this.#closedError = new TsmError(m.code, m.message);
      }
    });
    peer.once('closed', (err: TsmError | undefined) => {
      const e = this.#closedError ?? transportError?.() ?? err ?? new TsmError('TSM_ERR_SESSION_CLOSED', 'the session ended');
      this.#closedError = e;
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    });
  }

  /** Why the session ended, once it has. */
  get closedError(): TsmError | undefined {
    return this.peer.closed ? this.#closedError : undefined;
  }

  allocateStream(): number {
    return this.#nextStream++;
  }

  request<K extends ClientRequest['type']>(body: RequestBody<K> & { type: K }): Promise<ResultOf[K]> {
    if (this.peer.closed) return Promise.reject(this.#closedError ?? new TsmError('TSM_ERR_SESSION_CLOSED', 'the session ended'));
    const id = this.#nextId++;
    return new Promise<ResultOf[K]>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: never) => void, reject });
      this.peer.send({ ...body, id } as ClientMessage);
    });
  }

  close(): void {
    this.peer.close();
  }
}

export interface ConnectOptions {
  url: string;
  target: TargetRef;
  timeoutMs?: number;
  peer?: PeerOptions;
  /** The byte stream to the agent when it is not a plain TCP connection (a port-forward). */
  createConnection?: () => Duplex;
  /** Why that stream broke, if it did: explains a dropped session better than the WebSocket can. */
  transportError?: () => TsmError | undefined;
  /** Cluster mode: the Session object the user created for this session, and its one-time secret (cli/kube-session-object.ts). */
  session?: { namespace: string; name: string };
  secret?: string;
  /** The incoming traffic the session will ask for (policy checks it at open). */
  incoming?: { mode: 'mirror' | 'steal'; filtered: boolean; record?: boolean };
  /** Whether the session may change the pod's files (the agent enforces it). */
  files?: { mode: FilesMode };
}

/** Opens a session on the agent at `url`. Fails with a TsmError that says what to do. */
export async function connectAgent(options: ConnectOptions): Promise<AgentConnection> {
  const timeoutMs = options.timeoutMs ?? 15000;
  const ws = new WebSocket(options.url, {
    maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, handshakeTimeout: timeoutMs,
    ...(options.createConnection ? { createConnection: options.createConnection as never } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', (err: Error & { code?: string }) => {
      const transport = options.transportError?.() ?? (err instanceof TsmError ? err : undefined);
      if (transport) {
        reject(transport);
        return;
      }
      reject(new TsmError('TSM_ERR_AGENT_UNREACHABLE', `cannot reach the agent at ${options.url}: ${err.code ?? err.message}`,
        { hint: 'check that the agent is running (`tsmirror agent --listen HOST:PORT`) and that the address is right' }));
    });
  });
  const peerOptions = options.peer ?? DEFAULT_PEER_OPTIONS;
  // An agent this user started by hand left its key where only this user can read it.
  const localKey = options.createConnection ? undefined : readAgentKey(options.url);
  const peer = new Peer<AgentMessage, ClientMessage>(ws, decodeAgentMessage, { ...peerOptions, mux: { ...peerOptions.mux, peerIds: 'agent' } });
  const hello = await new Promise<AgentHello>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new TsmError('TSM_ERR_HANDSHAKE', `the agent at ${options.url} did not answer the hello within ${timeoutMs} ms`));
      peer.close();
    }, timeoutMs);
    let sessionError: TsmError | undefined;
    peer.on('message', function onMessage(m: AgentMessage) {
      if (m.type === 'session.error') {
        sessionError = new TsmError(m.code, m.message);
      } else if (m.type === 'hello') {
        clearTimeout(timer);
        peer.off('message', onMessage);
        if (m.protocol !== PROTOCOL_VERSION) {
          peer.close();
          reject(new TsmError('TSM_ERR_VERSION', `the agent speaks protocol ${m.protocol} (tsmirror ${m.agent.version}) and this CLI speaks protocol ${PROTOCOL_VERSION} (tsmirror ${packageVersion})`,
            { hint: 'install the same tsmirror version on both sides' }));
        } else {
          resolve(m);
        }
      }
    });
    peer.once('closed', (err: TsmError | undefined) => {
      clearTimeout(timer);
      reject(sessionError ?? options.transportError?.() ?? err ?? new TsmError('TSM_ERR_HANDSHAKE', 'the agent closed the connection during the hello'));
    });
    peer.send({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      capabilities: [...CAPABILITIES],
      target: options.target,
      client: { version: packageVersion, user: userInfo().username, host: hostname() },
      ...(options.session === undefined ? {} : { session: options.session, secret: options.secret }),
      ...(options.incoming === undefined ? {} : { incoming: options.incoming }),
      ...(options.files === undefined ? {} : { files: options.files }),
      ...(localKey === undefined ? {} : { key: localKey }),
    });
  });
  return new AgentConnection(peer, hello, options.transportError);
}
