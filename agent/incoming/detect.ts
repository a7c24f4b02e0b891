/**
 * Protocol detection on a port with filtered steals: the first bytes of a connection say
 * whether its requests can be routed one by one (HTTP/1.x, or HTTP/2 with prior
 * knowledge) or whether it goes to the pod's app whole (TLS, databases, anything else).
 */
import type net from 'node:net';
import { looksLikeHttp1 } from './http1.js';
import { looksLikeH2 } from './http2.js';

/** Detection waits at most this long for the first bytes. */
export const DETECT_MS = 1000;

export type DetectedProtocol = 'http1' | 'h2' | 'other';

/**
 * Waits for the first bytes of a connection (at most `waitMs`) and says whether they are
 * HTTP/1.x, h2c or other. `decide` gets the bytes read so far, with the client paused.
 */
export function detectHttp(client: net.Socket, decide: (start: Buffer, kind: DetectedProtocol) => void, waitMs = DETECT_MS): void {
  let start = Buffer.alloc(0);
  let done = false;
  const finish = (kind: DetectedProtocol): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    client.off('data', onData);
    client.off('end', onEnd);
    client.pause();
    decide(start, kind);
  };
  const onData = (chunk: Buffer): void => {
    start = Buffer.concat([start, chunk]);
    const h2 = looksLikeH2(start);
    if (h2 === 'yes') return finish('h2');
    if (h2 === 'maybe') return undefined; // "PRI * HTTP/2.0…" so far: wait for the whole preface
    const v = looksLikeHttp1(start);
    if (v !== 'maybe') finish(v === 'yes' ? 'http1' : 'other');
    return undefined;
  };
  const onEnd = (): void => finish('other');
  // Server-speaks-first protocols send nothing: after the wait they go to the app.
  const timer = setTimeout(() => finish('other'), waitMs);
  client.on('data', onData);
  client.once('end', onEnd);
  client.resume();
}
