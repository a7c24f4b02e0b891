/**
 * Whole connections relayed as bytes: a connection to the app (no steal, or not HTTP on
 * a filtered port), a connection stolen whole, and, after `101 Switching Protocols`, an
 * upgraded HTTP/1.1 connection.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { AppConnector } from './router.js';

/** Request bytes kept for a retry on the app if a session fails before answering. */
export const REPLAY_LIMIT = 1024 * 1024;

/** Relays a and b both ways with backpressure and half-close; returns a function that unlinks them. */
export function link(a: Duplex, b: Duplex): () => void {
  const onA = (chunk: Buffer): void => {
    if (!b.write(chunk)) a.pause();
  };
  const onB = (chunk: Buffer): void => {
    if (!a.write(chunk)) b.pause();
  };
  const drainA = (): void => void b.resume();
  const drainB = (): void => void a.resume();
  const endA = (): void => void b.end();
  const endB = (): void => void a.end();
  a.on('data', onA);
  b.on('data', onB);
  a.on('drain', drainA);
  b.on('drain', drainB);
  a.on('end', endA);
  b.on('end', endB);
  a.resume();
  b.resume();
  return () => {
    a.off('data', onA);
    b.off('data', onB);
    a.off('drain', drainA);
    b.off('drain', drainB);
    a.off('end', endA);
    b.off('end', endB);
  };
}

export function destroyQuietly(d: Duplex | undefined): void {
  if (d && !d.destroyed) d.destroy();
}

/**
 * A whole connection relayed to one upstream. With `replayToApp`, the client's bytes are
 * kept until the upstream answers; if it closes first, they go to the pod's app instead.
 */
export class RawRelay {
  constructor(hub: AppConnector, client: net.Socket, open: () => Duplex | undefined, replayToApp: boolean, start?: Buffer) {
    let upstream = open();
    if (!upstream) {
      upstream = hub.connectApp(client);
      replayToApp = false;
    }
    let replay: Buffer[] | undefined = replayToApp ? [] : undefined;
    let replayBytes = 0;
    if (start && start.byteLength > 0) {
      upstream.write(start);
      replay?.push(start);
      replayBytes += start.byteLength;
    }
    let unlink = link(client, upstream);
    const keep = (chunk: Buffer): void => {
      if (!replay) return;
      replayBytes += chunk.byteLength;
      if (replayBytes > REPLAY_LIMIT) replay = undefined;
      else replay.push(chunk);
    };
    client.on('data', keep);
    const answered = (): void => {
      replay = undefined;
      client.off('data', keep);
    };
    const watch = (up: Duplex): void => {
      up.once('data', answered);
      up.once('close', () => {
        if (replay && !client.destroyed) {
          // The session went away before answering: the app serves this connection.
          unlink();
          const saved = replay;
          answered();
          const app = hub.connectApp(client);
          for (const b of saved) app.write(b);
          if (client.readableEnded) app.end();
          unlink = link(client, app);
          upstream = app;
          watch(app);
          return;
        }
        if (!client.writableEnded) client.destroy();
      });
    };
    watch(upstream);
    client.once('close', () => destroyQuietly(upstream));
  }
}
