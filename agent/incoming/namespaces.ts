/**
 * The pod network namespaces in which an agent takes incoming traffic: per namespace its
 * redirect rules and its port hubs, shared by every session whose target lives there.
 */
import type { PortHub } from './hub.js';
import { NetnsRedirect } from './redirect.js';

/** One pod network namespace: its redirect rules and a hub per subscribed port. */
export class NamespaceIncoming {
  readonly key: string;
  readonly redirect: NetnsRedirect;
  readonly hubs = new Map<number, PortHub>();
  readonly log: (line: string) => void;
  /** Client connections still relayed: they need the namespace fd for app connections. */
  connections = 0;
  readonly #onRelease: (ns: NamespaceIncoming) => void;
  #released = false;

  constructor(key: string, pid: number, log: (line: string) => void, onRelease: (ns: NamespaceIncoming) => void) {
    this.key = key;
    this.log = log;
    this.#onRelease = onRelease;
    this.redirect = new NetnsRedirect(pid, log);
  }

  /** Closes the namespace fd once no port is subscribed and no connection is relayed. */
  maybeRelease(): void {
    if (this.#released || this.hubs.size > 0 || this.connections > 0) return;
    this.#released = true;
    this.#onRelease(this);
    // No connection is relayed any more: the table can go (see NetnsRedirect.dropTable).
    void this.redirect.dropTable();
    void this.redirect.close();
  }
}

/**
 * Every namespace the agent redirects in, by key (device:inode of /proc/PID/ns/net). One
 * per agent process, made by the agent server and handed to its sessions: the redirect
 * table in a namespace belongs to the process (agent/incoming/redirect.ts), so the
 * sessions of one agent must share a namespace's rules.
 */
export class IncomingRegistry {
  readonly #namespaces = new Map<string, NamespaceIncoming>();

  get(key: string): NamespaceIncoming | undefined {
    return this.#namespaces.get(key);
  }

  /** The namespace `key`, opened through `pid` (whose netns it is) if this agent has not yet. */
  open(key: string, pid: number, log: (line: string) => void): NamespaceIncoming {
    let ns = this.#namespaces.get(key);
    if (!ns) {
      ns = new NamespaceIncoming(key, pid, log, (released) => {
        if (this.#namespaces.get(released.key) === released) this.#namespaces.delete(released.key);
      });
      this.#namespaces.set(key, ns);
    }
    return ns;
  }

  /** Lifts every redirect this agent holds (graceful shutdown). */
  async releaseAll(): Promise<void> {
    await Promise.all([...this.#namespaces.values()].map(async (ns) => {
      for (const [port, hub] of ns.hubs) {
        hub.close();
        await ns.redirect.remove(port).catch(() => undefined);
      }
      await ns.redirect.dropTable().catch(() => undefined);
      ns.hubs.clear();
      this.#namespaces.delete(ns.key);
    }));
  }
}
