/**
 * A loopback port on this machine that leads to a port on a pod's own loopback, the way
 * kubelet's port-forward enters a pod's network namespace: each accepted connection is
 * paired with a socket made inside the pod's netns (by tsmirror's addon) and connected
 * to 127.0.0.1:PORT there.
 */
import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import { loadAddon } from '../../native/index.js';
import type { Pod } from './harness.js';

export interface Forward {
  port: number;
  close: () => Promise<void>;
}

export async function forwardToPod(pod: Pod, podPort: number): Promise<Forward> {
  const nsFd = openSync(`/run/netns/${pod.netns}`, 'r');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((local) => {
    const remote = new net.Socket({ fd: loadAddon().netnsSocket(nsFd, 4, 'tcp'), readable: true, writable: true });
    for (const s of [local, remote]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
      s.on('error', () => {
        local.destroy();
        remote.destroy();
      });
    }
    remote.connect(podPort, '127.0.0.1', () => {
      local.pipe(remote);
      remote.pipe(local);
    });
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
  return {
    port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      closeSync(nsFd);
    },
  };
}
