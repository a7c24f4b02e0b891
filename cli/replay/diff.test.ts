import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { unifiedDiff } from './diff.js';

/** Applies a unified diff to `a` (our own hunks only): proves the hunks are right. */
function applyDiff(a: string, diff: string): string {
  const lines = a === '' ? [] : a.replace(/\n$/, '').split('\n');
  const out: string[] = [];
  let pos = 0;
  const body = diff.split('\n').slice(2);
  for (let i = 0; i < body.length; i++) {
    const m = /^@@ -(\d+),(\d+) \+(\d+),(\d+) @@$/.exec(body[i]!);
    if (!m) continue;
    const start = Number(m[2]) === 0 ? Number(m[1]) : Number(m[1]) - 1;
    while (pos < start) out.push(lines[pos++]!);
    for (i++; i < body.length && /^[ +-]/.test(body[i]!); i++) {
      const l = body[i]!;
      if (l[0] === ' ') {
        expect(lines[pos]).toBe(l.slice(1));
        out.push(lines[pos++]!);
      } else if (l[0] === '-') {
        expect(lines[pos]).toBe(l.slice(1));
        pos++;
      } else out.push(l.slice(1));
    }
    i--;
  }
  while (pos < lines.length) out.push(lines[pos++]!);
  return out.length ? `${out.join('\n')}\n` : '';
}

describe('unified diff', () => {
  it('is empty for equal texts and shows one changed line with 3 lines of context', () => {
    expect(unifiedDiff('a\nb\n', 'a\nb\n')).toBe('');
    const a = 'l1\nl2\nl3\nl4\nl5\nl6\nl7\nl8\n';
    const b = 'l1\nl2\nl3\nl4\nX5\nl6\nl7\nl8\n';
    expect(unifiedDiff(a, b)).toBe('--- recorded\n+++ replay\n@@ -2,7 +2,7 @@\n l2\n l3\n l4\n-l5\n+X5\n l6\n l7\n l8\n');
  });

  it('agrees with diff -u on the changed lines, and its hunks rebuild the new text', () => {
    let seed = 7;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    const dir = mkdtempSync(join(tmpdir(), 'tsm-diff-'));
    try {
      for (let round = 0; round < 40; round++) {
        const a = Array.from({ length: rnd(30) }, () => `line ${rnd(8)}`);
        const b = a.filter(() => rnd(5) > 0).flatMap((l) => (rnd(6) === 0 ? [l, `new ${rnd(8)}`] : [l]));
        if (rnd(3) === 0) b.unshift('head');
        const ta = a.length ? `${a.join('\n')}\n` : '';
        const tb = b.length ? `${b.join('\n')}\n` : '';
        const ours = unifiedDiff(ta, tb, { maxLines: 10_000 });
        expect(applyDiff(ta, ours)).toBe(tb);
        writeFileSync(join(dir, 'a'), ta);
        writeFileSync(join(dir, 'b'), tb);
        const theirs = spawnSync('diff', ['-u', join(dir, 'a'), join(dir, 'b')], { encoding: 'utf8' }).stdout;
        const count = (d: string, c: string): number => d.split('\n').slice(2).filter((l) => l.startsWith(c)).length;
        // Both are minimal edit scripts: the same number of lines removed and added.
        expect([count(ours, '-'), count(ours, '+')]).toEqual([count(theirs, '-'), count(theirs, '+')]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stays bounded for large, very different texts', () => {
    const a = Array.from({ length: 5000 }, (_, i) => `a${i}`).join('\n');
    const b = Array.from({ length: 5000 }, (_, i) => `b${i}`).join('\n');
    const d = unifiedDiff(a, b, { maxEdits: 100, maxLines: 50 });
    expect(d.split('\n')).toHaveLength(52);
    expect(d).toMatch(/… \d+ more diff lines \(10000 changed lines in all\)\n$/);
  });
});
