/**
 * The CLI's end of a session: connects to an agent, says hello, and turns requests into
 * promises (each request gets exactly one answer, or fails when the session ends).
 *
 * With a reconnect grace (exec --reconnect-grace), the session survives its connection
 * (docs/ARCHITECTURE.md, "Sessions that survive"): when the WebSocket drops or stalls,
 * the CLI dials again with backoff and resumes the session (nothing lost); when the agent
 * no longer has it (restarted, grace over) or its target went away, the CLI opens a new
 * session for the same target on the same Peer (open streams reset, waiting requests sent
 * again when they can be, subscriptions made again by whoever listens to 'reestablished').
 */
import { EventEmitter } from 'node:events';
import { hostname, userInfo } from 'node:os';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import { packageVersion } from '../native/index.js';
import { MAX_FRAME_BYTES, decodeAgentMessage, encode } from '../protocol/codec.js';
import { RemoteError, TsmError, type ErrorCode } from '../protocol/errors.js';
import {
  CAPABILITIES, PROTOCOL_VERSION, type AgentHello, type AgentMessage, type ClientHello, type ClientMessage, type ClientRequest,
  type ResultOf, type TargetRef, type FilesMode,
} from '../protocol/messages.js';
import { DEFAULT_PEER_OPTIONS, Peer, type PeerOptions } from '../protocol/peer.js';
import { zeroMask } from '../protocol/ws-frames.js';
import { readAgentKey } from '../common/local-agent-key.js';
import { mark } from './start-trace.js';

type RequestBody<K extends ClientRequest['type']> = Omit<Extract<ClientRequest, { type: K }>, 'id'>;

/** Reconnect backoff: from 100 ms, doubling, at most 5 s, each wait between half and all of it (jitter). */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(5000, 100 * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Errors after which a new session for the same target makes sense (not refusals of the user). */
const RENEWABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'TSM_ERR_RESUME_REFUSED', 'TSM_ERR_TARGET_GONE', 'TSM_ERR_SESSION_CLOSED', 'TSM_ERR_HEARTBEAT', 'TSM_ERR_PORT_FORWARD',
  'TSM_ERR_AGENT_UNREACHABLE', 'TSM_ERR_INTERNAL',
]);

/** Errors a new session would meet again: re-establishing stops (the session ends). */
const FATAL: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'TSM_ERR_VERSION', 'TSM_ERR_UNAUTHENTICATED', 'TSM_ERR_POLICY', 'TSM_ERR_USAGE', 'TSM_ERR_KUBE_CONFIG', 'TSM_ERR_KUBE_FORBIDDEN',
]);

/** Requests that name nothing of the old session: sent again on a new one. */
function resendable(body: { type: string; handle?: number }): boolean {
  if (body.type === 'fs.read' || body.type === 'fs.write' || body.type === 'fs.close') return false;
  if (body.type === 'fs.truncate') return (body.handle ?? 0) === 0;
  return true;
}

interface Pending {
  body: { type: ClientRequest['type'] } & Record<string, unknown>;
  resolve: (v: never) => void;
  reject: (e: Error) => void;
  /** Sent on the current session (false: waits for the session being re-established). */
  sent: boolean;
}

/** What `tsmirror status` and `exec -v` report about a session's connection. */
export interface ConnectionStats {
  state: 'connected' | 'resuming' | 're-establishing' | 'closed';
  /** Since when it is resuming or re-establishing (ms since the epoch); 0 when connected. */
  since: number;
  resumes: number;
  reestablished: number;
  bytesResent: number;
  gapsMs: number[];
}

/**
 * Events: 'lost' (TsmError): the connection dropped or stalled, reconnecting; 'resumed'
 * ({ gapMs, resentBytes }); 'reestablished' ({ hello, gapMs, note }): a new session for the
 * same target; 'retry' (TsmError): an attempt failed (once per distinct reason).
 */
export class AgentConnection extends EventEmitter {
  readonly peer: Peer<AgentMessage, ClientMessage>;
  #hello: AgentHello;
  #options: ConnectOptions;
  #nextId = 1;
  #nextStream = 1;
  readonly #pending = new Map<number, Pending>();
  #closedError: TsmError | undefined;
  #closing = false;
  #state: ConnectionStats['state'] = 'connected';
  #since = 0;
  #resumes = 0;
  #reestablished = 0;
  readonly #gaps: number[] = [];
  /** Ends the current session's extras (its Session object); replaced with the session. */
  #dispose: (() => void) | undefined;
  #wake: (() => void) | undefined;
  /** Re-establishing has taken longer than the grace: requests fail at once rather than wait. */
  #failFast: TsmError | undefined;

  constructor(peer: Peer<AgentMessage, ClientMessage>, hello: AgentHello, options: ConnectOptions) {
    super();
    this.peer = peer;
    this.#hello = hello;
    this.#options = options;
    this.#dispose = options.dispose;
    peer.on('message', (m: AgentMessage) => {
      if (m.type === 'result' || m.type === 'error') {
        const pending = this.#pending.get(m.id);
        if (!pending || !pending.sent) return;
        this.#pending.delete(m.id);
        if (m.type === 'result') pending.resolve(m.value as never);
        else pending.reject(new RemoteError(m.code, m.message, m.errno));
      } else if (m.type === 'session.error') {
        this.#closedError = new TsmError(m.code, m.message);
      }
    });
    peer.on('disconnected', (err: TsmError, ended: boolean) => void this.#recover(err, ended));
    peer.once('closed', (err: TsmError | undefined) => {
      const e = this.#closedError ?? options.transportError?.() ?? err ?? new TsmError('TSM_ERR_SESSION_CLOSED', 'the session ended');
      this.#closedError = e;
      this.#state = 'closed';
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
      this.#dispose?.();
      this.#dispose = undefined;
      this.#wake?.();
    });
  }

  /** The agent's hello of the current session (a re-established session has a new one). */
  get hello(): AgentHello {
    return this.#hello;
  }

  /** Why the session ended, once it has. */
  get closedError(): TsmError | undefined {
    return this.peer.closed ? this.#closedError : undefined;
  }

  get stats(): ConnectionStats {
    return {
      state: this.#state, since: this.#since, resumes: this.#resumes, reestablished: this.#reestablished,
      bytesResent: this.peer.stats.resentBytes, gapsMs: [...this.#gaps],
    };
  }

  allocateStream(): number {
    return this.#nextStream++;
  }

  request<K extends ClientRequest['type']>(body: RequestBody<K> & { type: K }): Promise<ResultOf[K]> {
    if (this.peer.closed) return Promise.reject(this.#closedError ?? new TsmError('TSM_ERR_SESSION_CLOSED', 'the session ended'));
    if (this.#failFast) return Promise.reject(this.#failFast);
    const id = this.#nextId++;
    return new Promise<ResultOf[K]>((resolve, reject) => {
      // While a new session is being opened, requests wait for it; while resuming, they are
      // numbered and kept by the peer like every frame, and sent on resume.
      const sent = this.#state !== 're-establishing';
      this.#pending.set(id, { body: body as Pending['body'], resolve: resolve as (v: never) => void, reject, sent });
      if (sent) this.peer.send({ ...body, id } as ClientMessage);
    });
  }

  close(): void {
    this.#closing = true;
    this.#wake?.();
    if (this.peer.disconnected) this.peer.abandon(undefined);
    else this.peer.close();
  }

  async #sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
  }

  /** The connection is gone: resume within the grace, else open a new session, else end. */
  async #recover(err: TsmError, ended: boolean): Promise<void> {
    if (this.#closing) {
      this.peer.abandon(err);
      return;
    }
    const started = Date.now();
    this.#state = 'resuming';
    this.#since = started;
    // The agent ended the session on purpose (its Session was deleted, the policy…), or the
    // process it served exited and cannot be found again (a pid or container of an agent
    // started by hand; a Kubernetes target is resolved again).
    if (ended && (!RENEWABLE.has(err.code) || (err.code === 'TSM_ERR_TARGET_GONE' && !this.#options.renew))) {
      this.peer.abandon(err);
      return;
    }
    this.emit('lost', err);
    if (!ended && (await this.#resume(started))) {
      const gapMs = Date.now() - started;
      this.#resumes++;
      this.#gaps.push(gapMs);
      this.#state = 'connected';
      this.#since = 0;
      this.emit('resumed', { gapMs, resentBytes: this.peer.stats.resentBytes });
      return;
    }
    if (this.#closing || this.peer.closed) return;
    await this.#reestablish(started, err);
  }

  /** Dials again until the agent takes the session back (true), refuses it, or the grace is over (false). */
  async #resume(started: number): Promise<boolean> {
    const graceMs = this.#hello.resume?.graceMs ?? 0;
    const token = this.#hello.resume?.token;
    if (token === undefined) return false;
    const reasons = new Set<string>();
    for (let attempt = 0; !this.#closing && !this.peer.closed; attempt++) {
      await this.#sleep(backoffMs(attempt));
      if (this.#closing || Date.now() - started > graceMs) return false;
      let ws: WebSocket | undefined;
      try {
        const o = this.#options;
        // Through a port-forward: a new one to the same agent pod.
        const fresh = o.reopen
          ? await within(o.reopen(), 5000, 'opening a port-forward to the agent through the API server', (late) => late.createConnection().destroy())
          : undefined;
        ws = await openWebSocket(fresh ? { ...o, ...fresh } : o, fresh?.createConnection ?? o.createConnection, Math.min(o.timeoutMs ?? 15000, 5000));
        const key = o.createConnection || o.reopen ? undefined : readAgentKey(o.url);
        await exchange(ws, {
          type: 'resume', protocol: PROTOCOL_VERSION, session: this.#hello.session, token, received: this.peer.received, ...(key === undefined ? {} : { key }),
        }, 5000, (m, socket) => {
          // Synchronously: the agent's replayed frames follow `resumed` at once.
          if (m.type === 'resumed') this.peer.attach(socket, m.received);
        });
        return true;
      } catch (e) {
        ws?.terminate();
        const error = e instanceof TsmError ? e : new TsmError('TSM_ERR_AGENT_UNREACHABLE', String(e));
        if (error.code === 'TSM_ERR_RESUME_REFUSED' || error.code === 'TSM_ERR_PROTOCOL') return false;
        if (!reasons.has(error.message)) {
          reasons.add(error.message);
          this.emit('retry', error);
        }
      }
    }
    return false;
  }

  /** Opens a new session for the same target on the same peer, until it works or the CLI closes. */
  async #reestablish(started: number, why: TsmError): Promise<void> {
    this.#state = 're-establishing';
    // Streams of the old session are gone with it: the program sees ECONNRESET now, not later.
    this.peer.mux.closeAll();
    for (const [id, p] of this.#pending) {
      if (resendable(p.body)) {
        p.sent = false;
      } else {
        this.#pending.delete(id);
        p.reject(new TsmError('TSM_ERR_SESSION_CLOSED', `the session ended (${why.code}) and this request named something of it`));
      }
    }
    const reasons = new Set<string>();
    // Requests wait for the new session as long as a resume would have been waited for.
    const patience = Math.max(this.#options.reconnectGraceMs ?? 0, 10_000);
    for (let attempt = 0; !this.#closing && !this.peer.closed; attempt++) {
      await this.#sleep(attempt === 0 ? 0 : backoffMs(attempt + 2));
      if (this.#closing) break;
      if (!this.#failFast && Date.now() - started > patience) {
        this.#failFast = new TsmError('TSM_ERR_AGENT_UNREACHABLE', `no session with the agent for ${Math.round((Date.now() - started) / 1000)} s (still trying to open one)`);
        for (const [id, p] of this.#pending) {
          if (p.sent) continue;
          this.#pending.delete(id);
          p.reject(this.#failFast);
        }
      }
      let ws: WebSocket | undefined;
      let renewed: RenewedSession | undefined;
      try {
        renewed = this.#options.renew
          ? await within(this.#options.renew(), this.#options.timeoutMs ?? 15000, 'finding the target and the agent again through the API server', (late) => late.dispose?.())
          : { options: this.#options };
        const o = renewed.options;
        ws = await openWebSocket(o, o.createConnection, o.timeoutMs ?? 15000);
        const previous = this.#hello;
        const replaces = previous.resume ? { session: previous.session, token: previous.resume.token } : undefined;
        const hello = await exchange(ws, helloMessage({ ...o, reconnectGraceMs: this.#options.reconnectGraceMs }, this.#reestablished + 1, replaces), o.timeoutMs ?? 15000, (m, socket) => {
          if (m.type === 'hello' && m.protocol === PROTOCOL_VERSION) {
            this.peer.restart(socket);
            if (m.resume) this.peer.startResumable();
          }
        });
        if (hello.type !== 'hello') throw new TsmError('TSM_ERR_HANDSHAKE', 'the agent answered the hello with something else');
        checkVersion(hello, this.peer);
        this.#dispose?.();
        this.#dispose = renewed.dispose;
        this.#options = { ...o, reconnectGraceMs: this.#options.reconnectGraceMs, renew: this.#options.renew };
        this.#hello = hello;
        this.#reestablished++;
        const gapMs = Date.now() - started;
        this.#gaps.push(gapMs);
        this.#state = 'connected';
        this.#since = 0;
        this.#failFast = undefined;
        this.#closedError = undefined;
        for (const [id, p] of this.#pending) {
          if (p.sent) continue;
          p.sent = true;
          this.peer.send({ ...p.body, id } as ClientMessage);
        }
        this.emit('reestablished', { hello, previous, gapMs, note: renewed.note });
        return;
      } catch (e) {
        ws?.terminate();
        renewed?.dispose?.();
        const error = e instanceof TsmError ? e : new TsmError('TSM_ERR_AGENT_UNREACHABLE', String(e));
        if (FATAL.has(error.code) || (error.code === 'TSM_ERR_TARGET_NOT_FOUND' && !this.#options.renew)) {
          this.#closedError = error;
          break;
        }
        if (!reasons.has(error.message)) {
          reasons.add(error.message);
          this.emit('retry', error);
        }
      }
    }
    if (!this.peer.closed) this.peer.abandon(why);
  }
}

/** A new session's connect options, and what ends its extras (its Session object). */
export interface RenewedSession {
  options: ConnectOptions;
  dispose?: () => void;
  /** What changed, said to the user ("now pod api-7d9f… on node b"). */
  note?: string;
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
  /**
   * How long the agent keeps the session for a resume when the connection drops
   * (--reconnect-grace), and the CLI tries to get it back. 0 or absent: the session ends
   * with its connection, as for `tsmirror env`.
   */
  reconnectGraceMs?: number | undefined;
  /** A new byte stream to the same agent (a new port-forward) for a resume. */
  reopen?: () => Promise<{ createConnection: () => Duplex; transportError: () => TsmError | undefined }>;
  /** Everything a new session for the same target needs (cluster: the target resolved again, a new Session object). */
  renew?: (() => Promise<RenewedSession>) | undefined;
  /** Called when this session is over or replaced (deletes its Session object). */
  dispose?: () => void;
}

/**
 * `promise`, or a TSM_ERR_AGENT_UNREACHABLE after `ms`; what it yields after that is handed to
 * `late` to be released. A reconnect step must never wait on an API call that hangs.
 */
function within<T>(promise: Promise<T>, ms: number, what: string, late: (value: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      reject(new TsmError('TSM_ERR_AGENT_UNREACHABLE', `${what} took longer than ${ms} ms`));
    }, ms);
    promise.then((value) => {
      clearTimeout(timer);
      if (timedOut) late(value);
      else resolve(value);
    }, (err: unknown) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function openWebSocket(options: ConnectOptions, createConnection: (() => Duplex) | undefined, timeoutMs: number): Promise<WebSocket> {
  const ws = new WebSocket(options.url, {
    maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, handshakeTimeout: timeoutMs, generateMask: zeroMask,
    ...(createConnection ? { createConnection: createConnection as never } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    // ws's handshakeTimeout reaches only a socket ws makes itself (Node's http arms it through
    // net.connect's `timeout`); a createConnection stream, the port-forward, never gets it, and an
    // upgrade nobody answered (an agent starting behind a kubelet's forward) waited until the far
    // end closed, 30 s and more. So the handshake is bounded here, whatever the transport.
    const timer = setTimeout(() => {
      ws.on('error', () => undefined);
      ws.terminate();
      reject(options.transportError?.() ?? new TsmError('TSM_ERR_AGENT_UNREACHABLE', `the agent at ${options.url} did not answer the WebSocket upgrade within ${timeoutMs} ms`,
        { hint: 'check that the agent is running and reachable (`tsmirror doctor`)' }));
    }, timeoutMs);
    ws.once('open', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.once('error', (err: Error & { code?: string }) => {
      clearTimeout(timer);
      const transport = options.transportError?.() ?? (err instanceof TsmError ? err : undefined);
      if (transport) {
        reject(transport);
        return;
      }
      reject(new TsmError('TSM_ERR_AGENT_UNREACHABLE', `cannot reach the agent at ${options.url}: ${err.code ?? err.message}`,
        { hint: 'check that the agent is running (`tsmirror agent --listen HOST:PORT`) and that the address is right' }));
    });
  });
  return ws;
}

/**
 * Sends `first` on a fresh WebSocket and waits for the agent's first answer (hello or
 * resumed). `onReply` runs synchronously on it, before the next frame is read: whatever
 * takes the WebSocket over must be listening by then.
 */
function exchange(ws: WebSocket, first: ClientMessage, timeoutMs: number, onReply: (m: AgentMessage, ws: WebSocket) => void): Promise<AgentMessage> {
  return new Promise<AgentMessage>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
      ws.off('error', onError);
    };
    const timer = setTimeout(() => {
      done();
      reject(new TsmError('TSM_ERR_HANDSHAKE', `the agent did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (data: Buffer, isBinary: boolean): void => {
      let m: AgentMessage;
      try {
        if (!isBinary) throw new TsmError('TSM_ERR_BAD_FRAME', 'frames must be binary msgpack');
        m = decodeAgentMessage(data);
      } catch (err) {
        done();
        reject(err);
        return;
      }
      if (m.type === 'ping' || m.type === 'pong') return;
      done();
      if (m.type === 'session.error') {
        reject(new TsmError(m.code, m.message));
        return;
      }
      try {
        onReply(m, ws);
      } catch (err) {
        reject(err);
        return;
      }
      resolve(m);
    };
    const onClose = (code: number): void => {
      done();
      reject(new TsmError('TSM_ERR_SESSION_CLOSED', `the agent closed the connection (${code})`));
    };
    const onError = (err: Error): void => {
      done();
      reject(new TsmError('TSM_ERR_AGENT_UNREACHABLE', err.message));
    };
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.on('error', onError);
    ws.send(encode(first), { binary: true });
  });
}

function helloMessage(options: ConnectOptions, reestablished = 0, replaces?: { session: string; token: string }): ClientHello {
  // An agent this user started by hand left its key where only this user can read it.
  const localKey = options.createConnection ? undefined : readAgentKey(options.url);
  return {
    type: 'hello',
    protocol: PROTOCOL_VERSION,
    capabilities: [...CAPABILITIES],
    target: options.target,
    client: { version: packageVersion, user: userInfo().username, host: hostname(), ...(reestablished > 0 ? { reestablished } : {}) },
    ...(options.session === undefined ? {} : { session: options.session, secret: options.secret }),
    ...(options.incoming === undefined ? {} : { incoming: options.incoming }),
    ...(options.files === undefined ? {} : { files: options.files }),
    ...(localKey === undefined ? {} : { key: localKey }),
    ...(options.reconnectGraceMs ? { reconnectGraceMs: options.reconnectGraceMs } : {}),
    ...(replaces === undefined ? {} : { replaces }),
  };
}

function checkVersion(m: AgentHello, peer: { close(): void }): void {
  if (m.protocol === PROTOCOL_VERSION) return;
  peer.close();
  throw new TsmError('TSM_ERR_VERSION', `the agent speaks protocol ${m.protocol} (tsmirror ${m.agent.version}) and this CLI speaks protocol ${PROTOCOL_VERSION} (tsmirror ${packageVersion})`,
    { hint: 'install the same tsmirror version on both sides' });
}

/** Opens a session on the agent at `url`. Fails with a TsmError that says what to do. */
export async function connectAgent(options: ConnectOptions): Promise<AgentConnection> {
  const timeoutMs = options.timeoutMs ?? 15000;
  mark('agent: connecting');
  const ws = await openWebSocket(options, options.createConnection, timeoutMs);
  mark('agent: WebSocket open');
  // A session that can resume gives up on a silent connection within 3 s; one that cannot
  // (env, --reconnect-grace 0) keeps the old 10 s, since giving up ends it.
  const peerOptions = options.peer ?? (options.reconnectGraceMs ? DEFAULT_PEER_OPTIONS : { ...DEFAULT_PEER_OPTIONS, heartbeatTimeoutMs: 10_000 });
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
        try {
          checkVersion(m, peer);
        } catch (err) {
          reject(err);
          return;
        }
        // Numbering starts with the frame after the agent's hello, on both sides.
        if (m.resume) peer.startResumable();
        resolve(m);
      }
    });
    peer.once('closed', (err: TsmError | undefined) => {
      clearTimeout(timer);
      reject(sessionError ?? options.transportError?.() ?? err ?? new TsmError('TSM_ERR_HANDSHAKE', 'the agent closed the connection during the hello'));
    });
    peer.send(helloMessage(options));
    mark('agent: hello sent');
  });
  mark('agent: hello answered');
  return new AgentConnection(peer, hello, options);
}
