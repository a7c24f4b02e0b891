/**
 * streamPair: two cross-wired Duplex ends. An end that closes cleanly must not take away
 * what the other end still holds unread (issue 16: a mux stream lost the tail of its data
 * when the app's end closed while the bytes waited for the stream's credit).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { streamPair } from './stream-pair.js';

const closed = (s: NodeJS.EventEmitter): Promise<void> => new Promise((r) => s.once('close', () => r()));

describe('streamPair', () => {
  it('an end that closes after both directions are done leaves the other end its unread bytes', async () => {
    const [app, side] = streamPair();
    // The side ends its direction first; the app reads that to the end.
    app.resume();
    side.end();
    await new Promise((r) => app.once('end', r));
    // The app writes and ends; nobody reads the side yet (a mux stream waiting for credit).
    // (Less than a readable's buffer, so the write completes at once and the app end finishes.)
    const payload = randomBytes(8 * 1024);
    app.end(payload);
    await closed(app); // both directions done: the app end closes itself
    expect(side.destroyed).toBe(false);
    const got: Buffer[] = [];
    const sideClosed = closed(side);
    side.on('data', (c: Buffer) => got.push(c));
    await new Promise((r) => side.once('end', r));
    expect(Buffer.concat(got).equals(payload)).toBe(true);
    await sideClosed; // and then the side closes too
  });

  it('destroying an end before it is done resets the other end', async () => {
    const [a, b] = streamPair();
    const bClosed = closed(b);
    a.write('x');
    a.destroy();
    await bClosed;
    expect(b.destroyed).toBe(true);
  });
});
