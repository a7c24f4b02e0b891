/**
 * Mirror copies (agent/incoming/mirror.ts): batched, and cut, counted, when the session
 * falls behind; the client's side only ever hands over references.
 */
import { describe, expect, it } from 'vitest';
import { streamPair } from '../../common/stream-pair.js';
import { MIRROR_BATCH_MS, MIRROR_COPY_BACKLOG, MIRROR_SESSION_BACKLOG, MIRROR_TRANSPORT_BACKLOG, MirrorAccount, MirrorCopy } from './mirror.js';

const MiB = 1024 * 1024;
const batch = (): Promise<void> => new Promise((r) => setTimeout(r, MIRROR_BATCH_MS * 5));

/** A copy whose session end reads (`reading`) or never does; what it read, and why the copy was cut. */
function copyOf(account: MirrorAccount, reading: boolean): { copy: MirrorCopy; read: Buffer[]; cuts: string[]; session: ReturnType<typeof streamPair>[1] } {
  const [mine, session] = streamPair();
  const read: Buffer[] = [];
  if (reading) session.on('data', (d: Buffer) => read.push(d));
  const cuts: string[] = [];
  return { copy: new MirrorCopy(account, mine, (why) => cuts.push(why)), read, cuts, session };
}

describe('mirror copies', () => {
  it('leave in one batch after the handler returns, in order, and end after the last byte', async () => {
    const account = new MirrorAccount(() => 0);
    const c = copyOf(account, true);
    const ended = new Promise<void>((r) => c.session.once('end', () => r()));
    c.copy.push(Buffer.from('GET / HTTP/1.1\r\n'));
    c.copy.push(Buffer.from('\r\n'));
    c.copy.end();
    expect(c.read).toHaveLength(0); // nothing written in the client's handler
    await ended;
    expect(Buffer.concat(c.read).toString()).toBe('GET / HTTP/1.1\r\n\r\n');
    expect(account.cut).toBe(0);
  });

  it('a copy more than 16 MiB behind is cut and counted; the others go on', async () => {
    const account = new MirrorAccount(() => 0);
    const stuck = copyOf(account, false);
    const fine = copyOf(account, true);
    for (let i = 0; i < MIRROR_COPY_BACKLOG / MiB + 1; i++) stuck.copy.push(Buffer.alloc(MiB));
    fine.copy.push(Buffer.from('still here'));
    await batch();
    expect(stuck.cuts).toEqual([expect.stringMatching(/its copy of a connection fell \d+ bytes behind/)]);
    expect(account.cut).toBe(1);
    expect(account.bytesDropped).toBeGreaterThan(MIRROR_COPY_BACKLOG);
    expect(Buffer.concat(fine.read).toString()).toBe('still here');
    const droppedAtCut = account.bytesDropped;
    stuck.copy.push(Buffer.from('after the cut'));
    await batch();
    expect(account.cut).toBe(1); // a cut copy takes nothing more; what it is not sent is counted
    expect(account.bytesDropped).toBe(droppedAtCut + 'after the cut'.length);
  });

  it('all of a session\'s copies together: the one that goes over 32 MiB is cut; the backlog is given back when copies close', async () => {
    const account = new MirrorAccount(() => 0);
    const each = 12 * MiB;
    const copies = [copyOf(account, false), copyOf(account, false), copyOf(account, false)];
    for (const c of copies) {
      c.copy.push(Buffer.alloc(each));
      await batch();
    }
    expect(copies.map((c) => c.cuts.length)).toEqual([0, 0, 1]);
    expect(copies[2]?.cuts[0]).toMatch(/its copies together fell \d+ bytes behind/);
    expect(account.backlog).toBeLessThanOrEqual(MIRROR_SESSION_BACKLOG);
    for (const c of copies) c.session.destroy();
    await batch();
    expect(account.backlog).toBe(0);
  });

  it('a session whose WebSocket cannot send has its copies cut', async () => {
    let unsent = 0;
    const account = new MirrorAccount(() => unsent);
    const c = copyOf(account, true);
    c.copy.push(Buffer.from('a'));
    await batch();
    unsent = MIRROR_TRANSPORT_BACKLOG + 1;
    c.copy.push(Buffer.from('b'));
    await batch();
    expect(c.cuts).toEqual([expect.stringMatching(/its WebSocket holds \d+ bytes it could not send yet/)]);
    expect(Buffer.concat(c.read).toString()).toBe('a');
    expect(account).toMatchObject({ cut: 1, bytesDropped: 1 });
  });
});
