/**
 * The node agent: a WebSocket server that serves many sessions at once. A defect in one
 * session (a bad frame, an unknown message, a dead client) ends that session only.
 * `GET /healthz` answers readiness probes; `GET /status` lists live sessions as JSON.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { hostname } from 'node:os';
import { WebSocketServer, type WebSocket } from 'ws';
import { packageVersion } from '../native/index.js';
import { MAX_FRAME_BYTES, decodeClientMessage } from '../protocol/codec.js';
import { TsmError } from '../protocol/errors.js';
import {
  CAPABILITIES, PROTOCOL_VERSION, type AgentMessage, type ClientHello, type ClientMessage, type ClientResume, type FilesMode, type IncomingMode, type TargetRef,
} from '../protocol/messages.js';
import { DEFAULT_PEER_OPTIONS, Peer, type PeerOptions } from '../protocol/peer.js';
import { AgentSession, type SessionInfo } from './session.js';
import { releaseTarget, resolveTarget, type ResolvedTarget } from './target.js';
import { keyMatches, writeAgentKey } from '../common/local-agent-key.js';
import { IncomingRegistry } from './incoming/namespaces.js';
import { removeStaleTables } from './incoming/redirect.js';

export interface AgentOptions {
  host: string;
  port: number;
  heartbeatMs: number;
  heartbeatTimeoutMs: number;
  /** A client must send its hello within this time. */
  helloTimeoutMs: number;
  log: (line: string) => void;
  /** This node's name (default: $NODE_NAME, else the hostname). */
  node?: string;
  /**
   * Decides each session at its open (the policy and the Session object, agent/policy.ts);
   * throws a TsmError to refuse it.
   */
  admit?: (request: { hello: ClientHello; target: TargetRef; pid: number; proc: string }) => Promise<ClusterAdmission>;
  /**
   * Without `admit` (local mode), sessions must present the key this agent writes for the
   * user who started it (common/local-agent-key.ts). False only with --insecure-no-auth.
   */
  localAuth: boolean;
  /** The home whose ~/.tsmirror/agents holds the key (default: this user's). */
  keyHome?: string;
  /**
   * What one session's streams may hold in the agent's memory together: above it the agent
   * stops reading that session's WebSocket until half has drained (--session-memory).
   */
  sessionMemoryBytes: number;
  /** The longest grace a client may ask for: a dropped session is kept at most this long (--max-reconnect-grace). */
  maxReconnectGraceMs: number;
}

/** What the agent knows of a session beyond AgentSession's own info: its resume state. */
interface SessionEntry {
  session: AgentSession;
  peer: Peer<ClientMessage, AgentMessage>;
  /** sha256 of the resume token; undefined: the session cannot be resumed. */
  tokenHash: Buffer | undefined;
  graceMs: number;
  /** Since when it has been disconnected (0: connected), and the timer that ends it. */
  disconnectedAt: number;
  graceTimer: NodeJS.Timeout | undefined;
  resumes: number;
  /** The longest and the last gap (ms). */
  longestGapMs: number;
  lastGapMs: number;
}

/** What /status reports per session on top of SessionInfo. */
export interface SessionLiveInfo {
  state: 'connected' | 'resuming';
  resumingSince?: number;
  resumes: number;
  bytesResent: number;
  longestGapMs: number;
  lastGapMs: number;
  mirrorDropped: number;
  /** Mirror copies cut because the session fell behind, and their bytes it never got (agent/incoming/mirror.ts). */
  mirrorCut: number;
  mirrorBytesDropped: number;
  /** Stolen connections sent to the app because too many already waited for the resume. */
  stealsToApp: number;
}

/** 64 MiB: 64 streams' full windows at once. */
export const DEFAULT_SESSION_MEMORY = 64 * 1024 * 1024;

/** What cluster mode decided about a session at its open (agent/policy.ts). */
export interface ClusterAdmission {
  /** The user its Session object names (the API server's admission tied it to its creator). */
  user: string;
  pod: { namespace: string; name: string; container: string };
  /** The modes its Session object declared: they replace the hello's. */
  files: FilesMode;
  incoming: { mode: 'none' | 'mirror' | 'steal'; filtered: boolean };
  authorizeIncoming: (mode: IncomingMode, filtered: boolean) => void;
  /** Watches the Session object; `ended` when it is deleted. Returns the stop. */
  watch: (ended: (why: TsmError) => void) => () => void;
}

export const DEFAULT_AGENT_OPTIONS: AgentOptions = {
  host: '127.0.0.1',
  port: 7777,
  heartbeatMs: DEFAULT_PEER_OPTIONS.heartbeatMs,
  // The CLI notices a stall within 3 s and resumes on a new connection (the agent takes it
  // over then); the agent itself need not be quick to give up on a client.
  heartbeatTimeoutMs: 10_000,
  helloTimeoutMs: 10000,
  localAuth: true,
  sessionMemoryBytes: DEFAULT_SESSION_MEMORY,
  maxReconnectGraceMs: 10 * 60_000,
  log: (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
};

export interface RunningAgent {
  server: Server;
  url: string;
  sessions(): Array<SessionInfo & SessionLiveInfo>;
  close(): Promise<void>;
}

function parseTargetRef(value: unknown): TargetRef {
  const t = value as { kind?: unknown; pid?: unknown; id?: unknown };
  if (t.kind === 'pid' && typeof t.pid === 'number') return { kind: 'pid', pid: t.pid };
  if (t.kind === 'container' && typeof t.id === 'string') return { kind: 'container', id: t.id };
  if (t.kind === 'none') return { kind: 'none' };
  throw new TsmError('TSM_ERR_BAD_FRAME', 'hello has a malformed target');
}

/** The hello's declared incoming mode (mirror or steal, filtered or not), when well-formed. */
function incomingOf(hello: ClientHello): { incoming?: { mode: 'mirror' | 'steal'; filtered: boolean } } {
  const i = hello.incoming as { mode?: unknown; filtered?: unknown } | undefined;
  if (!i || (i.mode !== 'mirror' && i.mode !== 'steal') || typeof i.filtered !== 'boolean') return {};
  return { incoming: { mode: i.mode, filtered: i.filtered } };
}

export async function startAgent(options: Partial<AgentOptions> = {}): Promise<RunningAgent> {
  const opts: AgentOptions = { ...DEFAULT_AGENT_OPTIONS, ...options };
  const sessions = new Map<string, SessionEntry>();
  const describe = (e: SessionEntry): SessionInfo & SessionLiveInfo => ({
    ...e.session.info, streams: e.session.streams,
    state: e.disconnectedAt > 0 ? 'resuming' : 'connected',
    ...(e.disconnectedAt > 0 ? { resumingSince: e.disconnectedAt } : {}),
    resumes: e.resumes, bytesResent: e.peer.stats.resentBytes, longestGapMs: e.longestGapMs, lastGapMs: e.lastGapMs,
    mirrorDropped: e.session.mirrorDropped, mirrorCut: e.session.mirror.cut, mirrorBytesDropped: e.session.mirror.bytesDropped, stealsToApp: e.session.stealsToApp,
  });
  const incoming = new IncomingRegistry();
  const peerOptions: PeerOptions = {
    heartbeatMs: opts.heartbeatMs, heartbeatTimeoutMs: opts.heartbeatTimeoutMs, mux: { peerIds: 'client' }, sessionBudget: opts.sessionMemoryBytes,
  };
  const node = opts.node ?? process.env.NODE_NAME ?? hostname();
  // Local mode: only whoever can read this agent's key file (its user) may open sessions.
  const localAuth = opts.admit === undefined && opts.localAuth;
  let localKey: ReturnType<typeof writeAgentKey> | undefined;

  const server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (req.url === '/status') {
      const auth = opts.admit ? 'cluster' : localAuth ? 'local-key' : 'none';
      const body = { version: packageVersion, protocol: PROTOCOL_VERSION, node, auth, sessions: [...sessions.values()].map(describe) };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    } else {
      res.writeHead(404).end();
    }
  });
  const wss = new WebSocketServer({ server, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
  // ws re-emits the HTTP server's errors; a failed listen is reported by listenOn below.
  wss.on('error', () => undefined);

  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    const peer = new Peer<ClientMessage, AgentMessage>(ws, decodeClientMessage, peerOptions);
    const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
    let session: AgentSession | undefined;
    /** The target's process while the session is being set up (the session owns it after). */
    let held: ResolvedTarget | undefined;
    const helloTimer = setTimeout(() => peer.fail('TSM_ERR_HANDSHAKE', `no hello within ${opts.helloTimeoutMs} ms`), opts.helloTimeoutMs);

    peer.once('closed', (err: TsmError | undefined) => {
      clearTimeout(helloTimer);
      if (session) {
        const entry = sessions.get(session.info.id);
        clearTimeout(entry?.graceTimer);
        sessions.delete(session.info.id);
        session.dispose();
        opts.log(`session ${session.info.id} closed${err ? `: ${err.code} ${err.message}` : ''}`);
      } else if (err) {
        opts.log(`connection from ${remote} failed before its session began: ${err.code} ${err.message}`);
      }
    });

    peer.once('message', (first: ClientMessage) => {
      clearTimeout(helloTimer);
      if (first.type === 'resume') {
        resume(peer, first, remote);
        return;
      }
      void (async () => {
        if (first.type !== 'hello') {
          peer.fail('TSM_ERR_HANDSHAKE', `the first message must be hello, got "${first.type}"`);
          return;
        }
        const hello: ClientHello = first;
        if (hello.protocol !== PROTOCOL_VERSION) {
          peer.fail('TSM_ERR_VERSION', `the CLI speaks protocol ${hello.protocol} and this agent (tsmirror ${packageVersion}) speaks protocol ${PROTOCOL_VERSION}; install matching versions of the CLI and the agent`);
          return;
        }
        if (localAuth && !(localKey !== undefined && keyMatches(hello.key, localKey.key))) {
          opts.log(`refused a session from ${remote} (${String((hello.client as { user?: unknown }).user).slice(0, 64)}): ${hello.key === undefined ? 'no key' : 'wrong key'}`);
          peer.fail('TSM_ERR_UNAUTHENTICATED', `this agent was started by hand (local mode) and serves only the user who started it (uid ${process.getuid?.() ?? '?'}): ${hello.key === undefined ? 'no key came with the session' : 'the key that came with the session is not this agent\'s'}; run tsmirror as that user (its key is in ~/.tsmirror/agents/), or start an agent of your own`);
          return;
        }
        const replaces = hello.replaces as { session?: unknown; token?: unknown } | undefined;
        if (replaces && typeof replaces.session === 'string' && typeof replaces.token === 'string') {
          const old = sessions.get(replaces.session);
          if (old?.tokenHash && timingSafeEqual(sha256(replaces.token), old.tokenHash)) {
            opts.log(`session ${replaces.session} is replaced by a new session of its CLI`);
            old.peer.abandon(new TsmError('TSM_ERR_SESSION_CLOSED', 'replaced by a new session of its CLI'));
          }
        }
        try {
          const ref = parseTargetRef(hello.target);
          const target = await resolveTarget(ref);
          held = target;
          const admitted = opts.admit ? await opts.admit({ hello, target: ref, pid: target.pid, proc: target.proc }) : undefined;
          if (admitted) {
            // From here the Session is this connection's: watched while it lives, deleted when
            // it closes, however it closes (a failure below included).
            const stopWatch = admitted.watch((why) => peer.fail(why.code, why.message));
            if (peer.closed) stopWatch();
            else peer.once('closed', stopWatch);
          }
          const client = hello.client as { user?: unknown; host?: unknown; reestablished?: unknown };
          const id = randomUUID().slice(0, 8);
          session = new AgentSession(peer, target, {
            id,
            user: admitted?.user ?? (typeof client.user === 'string' ? client.user.slice(0, 128) : '?'),
            host: typeof client.host === 'string' ? client.host.slice(0, 128) : '?',
            target: admitted ? `pod ${admitted.pod.namespace}/${admitted.pod.name} container ${admitted.pod.container}: ${target.description}` : target.description,
            startedAt: Date.now(),
            // In cluster mode the Session object says what the session may do, not the hello.
            ...(admitted ? (admitted.incoming.mode === 'none' ? {} : { incoming: { mode: admitted.incoming.mode, filtered: admitted.incoming.filtered } }) : incomingOf(hello)),
            files: admitted ? admitted.files : hello.files?.mode === 'write' ? 'write' : 'read',
            ...(typeof client.reestablished === 'number' && Number.isSafeInteger(client.reestablished) && client.reestablished > 0 ? { reestablished: client.reestablished } : {}),
          }, incoming, admitted?.authorizeIncoming);
          if (peer.closed) {
            session.dispose();
            return;
          }
          const graceMs = Math.min(hello.reconnectGraceMs ?? 0, opts.maxReconnectGraceMs);
          const token = graceMs > 0 ? randomBytes(32).toString('base64url') : undefined;
          const entry: SessionEntry = {
            session, peer, tokenHash: token === undefined ? undefined : sha256(token), graceMs,
            disconnectedAt: 0, graceTimer: undefined, resumes: 0, longestGapMs: 0, lastGapMs: 0,
          };
          sessions.set(id, entry);
          const dns = await session.resolvConf();
          if (peer.closed) return;
          const capabilities = CAPABILITIES.filter((c) => hello.capabilities.includes(c));
          peer.send({
            type: 'hello', protocol: PROTOCOL_VERSION, capabilities, session: id, agent: { version: packageVersion, node },
            target: { pid: target.pid, description: target.description, nameservers: dns.nameservers, search: dns.search },
            ...(token === undefined ? {} : { resume: { token, graceMs } }),
          });
          if (token !== undefined) {
            peer.startResumable();
            peer.on('disconnected', (why: TsmError, ended: boolean) => disconnected(entry, why, ended));
          }
          opts.log(`session ${id} opened: ${session.info.user}@${session.info.host} → ${target.description}`);
        } catch (err) {
          if (!session && held) releaseTarget(held);
          const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_INTERNAL', String(err));
          peer.fail(e.code, e.message);
        }
      })();
    });
  });

  /** A resumable session lost its connection: kept for its grace, then released as a closed one. */
  function disconnected(entry: SessionEntry, why: TsmError, ended: boolean): void {
    const id = entry.session.info.id;
    if (ended) {
      entry.peer.abandon(why);
      return;
    }
    entry.disconnectedAt = Date.now();
    opts.log(`session ${id} lost its connection (${why.code} ${why.message}); kept ${entry.graceMs} ms for the CLI to resume it`);
    clearTimeout(entry.graceTimer);
    entry.graceTimer = setTimeout(() => {
      opts.log(`session ${id} was not resumed within ${entry.graceMs} ms; releasing it`);
      entry.peer.abandon(new TsmError('TSM_ERR_SESSION_CLOSED', `not resumed within ${entry.graceMs} ms`));
    }, entry.graceMs);
    entry.graceTimer.unref();
  }

  /**
   * A new connection that takes over a session (its first frame is `resume`). Synchronous
   * from the frame to attach(): the CLI's frames that follow go to the session's peer.
   */
  function resume(conn: Peer<ClientMessage, AgentMessage>, m: ClientResume, remote: string): void {
    const refuse = (why: string): void => {
      opts.log(`refused to resume a session for ${remote}: ${why}`);
      conn.fail('TSM_ERR_RESUME_REFUSED', 'this agent holds no such session (it restarted, or the session was not resumed within its grace): open a new one');
    };
    if (m.protocol !== PROTOCOL_VERSION) {
      conn.fail('TSM_ERR_VERSION', `the CLI speaks protocol ${m.protocol} and this agent (tsmirror ${packageVersion}) speaks protocol ${PROTOCOL_VERSION}`);
      return;
    }
    if (localAuth && !(localKey !== undefined && keyMatches(m.key, localKey.key))) {
      conn.fail('TSM_ERR_UNAUTHENTICATED', 'this agent was started by hand (local mode) and serves only the user who started it: the resume came without its key');
      return;
    }
    const entry = sessions.get(m.session);
    if (!entry || entry.tokenHash === undefined || entry.peer.closed) {
      refuse(entry ? 'that session cannot be resumed' : 'no such session');
      return;
    }
    if (!timingSafeEqual(sha256(m.token), entry.tokenHash)) {
      refuse(`wrong token for session ${m.session}`);
      return;
    }
    const ws = conn.release();
    if (!ws) return;
    const gap = entry.disconnectedAt > 0 ? Date.now() - entry.disconnectedAt : 0;
    try {
      const { resentBytes } = entry.peer.attach(ws, m.received, { type: 'resumed', received: entry.peer.received });
      clearTimeout(entry.graceTimer);
      entry.graceTimer = undefined;
      entry.disconnectedAt = 0;
      entry.resumes++;
      entry.lastGapMs = gap;
      entry.longestGapMs = Math.max(entry.longestGapMs, gap);
      opts.log(`session ${m.session} resumed from ${remote} after ${gap} ms; ${resentBytes} bytes sent again`);
    } catch (err) {
      const e = err instanceof TsmError ? err : new TsmError('TSM_ERR_INTERNAL', String(err));
      ws.close(4000, `${e.code}: ${e.message}`.slice(0, 120));
      entry.peer.fail(e.code, e.message);
    }
  }

  // Redirect tables left by an agent that was killed are removed before serving.
  const stale = await removeStaleTables(opts.log);
  if (stale > 0) opts.log(`removed ${stale} redirect table(s) left by an earlier agent`);

  const port = await listenOn(server, opts.host, opts.port, '--listen');
  const url = `ws://${hostForUrl(opts.host)}:${port}`;
  if (localAuth) localKey = writeAgentKey(url, port, opts.keyHome);
  opts.log(`tsmirror agent ${packageVersion} listening on ${url} (node ${node})${localAuth ? `; sessions need the key in ${localKey?.path}` : opts.admit ? '' : '; WARNING: --insecure-no-auth: any local user can use this agent'}`);

  return {
    server,
    url,
    sessions: () => [...sessions.values()].map(describe),
    close: async () => {
      localKey?.remove();
      // Sessions kept for a resume end with the agent, like the connected ones.
      for (const e of [...sessions.values()]) e.peer.abandon(new TsmError('TSM_ERR_SESSION_CLOSED', 'the agent stopped'));
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await incoming.releaseAll();
    },
  };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** `host` as it stands in a URL (IPv6 in brackets). */
export function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * Listens on HOST:PORT (port 0: any free one) and returns the port taken. A port in use or
 * not allowed is a usage error naming the flag, not an internal one.
 */
export async function listenOn(server: Server, host: string, port: number, flag: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException): void => {
      const why = err.code === 'EADDRINUSE' ? 'that port is already in use' : err.code === 'EACCES' ? 'that port needs privileges this process lacks' : err.code === 'EADDRNOTAVAIL' ? 'that address is not on this machine' : err.message;
      reject(new TsmError('TSM_ERR_USAGE', `cannot listen on ${hostForUrl(host)}:${port} (${flag}): ${why}; choose another ${flag}, or port 0 for any free one`, { cause: err }));
    };
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      resolve();
    });
  });
  const address = server.address();
  return typeof address === 'object' && address ? address.port : port;
}
