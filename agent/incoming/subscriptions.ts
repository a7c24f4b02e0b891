/**
 * A session's incoming traffic: its subscriptions (mirror, steal, filtered steal) across
 * the port hubs of its pod's network namespace, and the rules for sharing a port with
 * other sessions (any number of mirrors and filtered steals; a steal of all traffic only
 * alone).
 */
import { PORT_CONFLICT_HINT } from '../../common/http-filter.js';
import { TsmError } from '../../protocol/errors.js';
import type { IncomingMode } from '../../protocol/messages.js';
import { compileFilter } from './filters.js';
import { compileRecordOptions } from './record.js';
import { PortHub, type IncomingClient, type Subscription } from './hub.js';
import type { IncomingRegistry } from './namespaces.js';

function describe(s: Subscription): string {
  const what = s.mode === 'mirror' ? 'mirror' : s.mode === 'record' ? `recording${s.filter ? ` (${s.filter.text})` : ''}` : s.filter ? `filtered steal (${s.filter.text})` : 'steal of all traffic';
  return `${s.client.user}@${s.client.host} (session ${s.client.id}, ${what})`;
}

/**
 * A session's view of incoming traffic: its subscriptions, across the namespace's hubs.
 * `nsKey` identifies the pod's network namespace (device:inode of /proc/PID/ns/net).
 */
export class SessionIncoming {
  readonly #registry: IncomingRegistry;
  readonly #client: IncomingClient;
  readonly #pid: number;
  readonly #nsKey: string;
  readonly #log: (line: string) => void;
  readonly #mine = new Map<number, Subscription>();
  /** Subscribe/unsubscribe run one at a time per session. */
  #chain: Promise<unknown> = Promise.resolve();

  constructor(registry: IncomingRegistry, client: IncomingClient, pid: number, nsKey: string, log: (line: string) => void) {
    this.#registry = registry;
    this.#client = client;
    this.#pid = pid;
    this.#nsKey = nsKey;
    this.#log = log;
  }

  subscribe(port: number, mode: IncomingMode, filterValue: unknown, recordValue?: unknown): Promise<{ port: number }> {
    return this.#serial(async () => {
      if (this.#pid <= 0) throw new TsmError('TSM_ERR_USAGE', 'incoming traffic needs a target pod (this session is targetless)');
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TsmError('TSM_ERR_USAGE', `port ${port} is not a TCP port`);
      if (mode !== 'mirror' && mode !== 'steal' && mode !== 'record') throw new TsmError('TSM_ERR_USAGE', `mode must be mirror, steal or record, not "${String(mode).slice(0, 32)}"`);
      const filter = mode === 'mirror' ? undefined : compileFilter(filterValue);
      const record = mode === 'record' ? compileRecordOptions(recordValue, filter) : undefined;
      if (this.#mine.has(port)) return { port };
      const ns = this.#registry.open(this.#nsKey, this.#pid, this.#log);
      const hub = ns.hubs.get(port);
      // A recording needs the app to answer every request: it cannot share a port with a steal.
      const recordConflict = hub?.subs.find((s) => (mode === 'record' && s.mode === 'steal') || (mode === 'steal' && s.mode === 'record'));
      if (recordConflict) {
        throw new TsmError('TSM_ERR_PORT_CONFLICT',
          `port ${port} of the pod is ${recordConflict.mode === 'record' ? 'being recorded' : 'stolen'} by ${describe(recordConflict)}; a recording needs the pod's app to answer every request, so it cannot share a port with a steal`,
          { hint: 'record while nobody steals that port, or mirror it' });
      }
      if (hub && mode === 'steal') {
        const holder = hub.subs.find((s) => s.mode === 'steal' && (!s.filter || !filter));
        if (holder) {
          throw new TsmError('TSM_ERR_PORT_CONFLICT',
            `port ${port} of the pod is already stolen by ${describe(holder)}; ${filter ? 'a filtered steal cannot share a port with a steal of all traffic' : 'a steal of all traffic needs the port to itself'}`,
            { hint: PORT_CONFLICT_HINT });
        }
      }
      const sub: Subscription = { client: this.#client, port, mode, filter, ...(record ? { record } : {}) };
      let created = false;
      let h = hub;
      if (!h) {
        h = new PortHub(ns, port);
        ns.hubs.set(port, h);
        created = true;
      }
      h.subs.push(sub);
      this.#mine.set(port, sub);
      if (created) {
        try {
          await ns.redirect.set(port, h.listenPort);
        } catch (err) {
          this.#drop(port);
          throw err;
        }
      }
      this.#log(`session ${this.#client.id}: ${describe(sub)} on port ${port}`);
      return { port };
    });
  }

  unsubscribe(port: number): Promise<{ port: number }> {
    return this.#serial(async () => {
      await this.#drop(port);
      return { port };
    });
  }

  /** Drops every subscription (the session ended); the last one out removes the rules. */
  dispose(): Promise<void> {
    return this.#serial(async () => {
      await Promise.all([...this.#mine.keys()].map((p) => this.#drop(p)));
    });
  }

  #serial<T>(step: () => Promise<T>): Promise<T> {
    const next = this.#chain.then(step);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  async #drop(port: number): Promise<void> {
    const sub = this.#mine.get(port);
    if (!sub) return;
    this.#mine.delete(port);
    const ns = this.#registry.get(this.#nsKey);
    const hub = ns?.hubs.get(port);
    if (!ns || !hub) return;
    const i = hub.subs.indexOf(sub);
    if (i >= 0) hub.subs.splice(i, 1);
    if (hub.subs.length > 0) return;
    // The redirect goes first and the listener after it: a connection redirected just
    // before would otherwise reach a closed listener and be reset. Meanwhile the hub
    // relays new connections to the app, as it does with no subscription.
    await ns.redirect.remove(port).catch((err: Error) => this.#log(`removing the redirect of port ${port}: ${err.message}`));
    if (hub.subs.length > 0) {
      // Another session subscribed the port meanwhile: it keeps the hub.
      await ns.redirect.set(port, hub.listenPort).catch((err: Error) => this.#log(`restoring the redirect of port ${port}: ${err.message}`));
      return;
    }
    ns.hubs.delete(port);
    hub.close();
    ns.maybeRelease();
  }
}
