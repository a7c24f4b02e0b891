/**
 * A unified diff of two texts, line by line (Myers' O((N+M)·D) algorithm), for showing how
 * a replayed body differs from the recorded one. Bounded: past `maxEdits` edits the diff
 * gives up on alignment and shows the rest as replaced, and the output stops after
 * `maxLines` lines, saying how many were left out.
 */

export interface DiffOptions {
  /** Lines of context around each change (3, as `diff -u`). */
  context?: number;
  /** Past this many inserted + deleted lines, the middle is shown as one replacement. */
  maxEdits?: number;
  /** At most this many lines of output (headers included). */
  maxLines?: number;
  /** Names on the --- and +++ lines. */
  from?: string;
  to?: string;
}

type Op = { kind: ' ' | '-' | '+'; line: string };

function splitLines(text: string): string[] {
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** The edit script from a to b (Myers), or undefined when it needs more than maxEdits edits. */
function myers(a: string[], b: string[], maxEdits: number): Op[] | undefined {
  const n = a.length;
  const m = b.length;
  const max = Math.min(n + m, maxEdits);
  const offset = max + 1;
  let v = new Int32Array(2 * max + 3);
  // trace[d]: the frontier at the start of step d, for k in [-d-1, d+1] (at k + d + 1).
  const trace: Int32Array[] = [];
  let found = -1;
  for (let d = 0; d <= max; d++) {
    trace.push(v.slice(offset - d - 1, offset + d + 2));
    const next = v.slice();
    for (let k = -d; k <= d; k += 2) {
      let x: number;
      if (k === -d || (k !== d && v[offset + k - 1]! < v[offset + k + 1]!)) x = v[offset + k + 1]!;
      else x = v[offset + k - 1]! + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      next[offset + k] = x;
      if (x >= n && y >= m) {
        found = d;
        break;
      }
    }
    v = next;
    if (found >= 0) break;
  }
  if (found < 0) return undefined;
  // Walk back through the saved frontiers.
  const ops: Op[] = [];
  let x = n;
  let y = m;
  for (let d = found; d > 0; d--) {
    const prev = trace[d]!; // the frontier before step d
    const at = (k: number): number => prev[k + d + 1]!;
    const k = x - y;
    const prevK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1;
    const prevX = at(prevK);
    const prevY = prevX - prevK;
    while (x > prevX && y > prevY) ops.push({ kind: ' ', line: a[--x]! }), y--;
    if (x === prevX) ops.push({ kind: '+', line: b[--y]! });
    else ops.push({ kind: '-', line: a[--x]! });
  }
  while (x > 0 && y > 0) ops.push({ kind: ' ', line: a[--x]! }), y--;
  return ops.reverse();
}

/** Common prefix and suffix kept, the middle replaced: the fallback for very different texts. */
function replaceMiddle(a: string[], b: string[]): Op[] {
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
  let suf = 0;
  while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) suf++;
  return [
    ...a.slice(0, pre).map((line): Op => ({ kind: ' ', line })),
    ...a.slice(pre, a.length - suf).map((line): Op => ({ kind: '-', line })),
    ...b.slice(pre, b.length - suf).map((line): Op => ({ kind: '+', line })),
    ...a.slice(a.length - suf).map((line): Op => ({ kind: ' ', line })),
  ];
}

/** `diff -u` of two texts; '' when they are equal. */
export function unifiedDiff(a: string, b: string, options: DiffOptions = {}): string {
  if (a === b) return '';
  const context = options.context ?? 3;
  const maxLines = options.maxLines ?? 200;
  const al = splitLines(a);
  const bl = splitLines(b);
  // Very long texts are not aligned (the cost grows with lines × edits).
  const ops = (al.length + bl.length <= 40_000 ? myers(al, bl, options.maxEdits ?? 1000) : undefined) ?? replaceMiddle(al, bl);
  const out: string[] = [`--- ${options.from ?? 'recorded'}`, `+++ ${options.to ?? 'replay'}`];
  // Hunks: runs of changes with up to `context` equal lines around (merged when close).
  let i = 0;
  const posA: number[] = [];
  const posB: number[] = [];
  let pa = 0;
  let pb = 0;
  for (const op of ops) {
    posA.push(pa);
    posB.push(pb);
    if (op.kind !== '+') pa++;
    if (op.kind !== '-') pb++;
  }
  let total = 0;
  while (i < ops.length) {
    while (i < ops.length && ops[i]!.kind === ' ') i++;
    if (i >= ops.length) break;
    const start = Math.max(0, i - context);
    let end = i;
    // Extend while the next change is within 2·context equal lines.
    for (;;) {
      while (end < ops.length && ops[end]!.kind !== ' ') end++;
      let eq = end;
      while (eq < ops.length && ops[eq]!.kind === ' ') eq++;
      if (eq < ops.length && eq - end <= 2 * context) {
        end = eq;
        continue;
      }
      end = Math.min(ops.length, end + context);
      break;
    }
    const hunk = ops.slice(start, end);
    const countA = hunk.filter((o) => o.kind !== '+').length;
    const countB = hunk.filter((o) => o.kind !== '-').length;
    const fromA = countA === 0 ? posA[start]! : posA[start]! + 1;
    const fromB = countB === 0 ? posB[start]! : posB[start]! + 1;
    out.push(`@@ -${fromA},${countA} +${fromB},${countB} @@`);
    for (const o of hunk) out.push(`${o.kind}${o.line}`);
    total += hunk.filter((o) => o.kind !== ' ').length;
    i = end;
  }
  if (out.length > maxLines) {
    const dropped = out.length - maxLines;
    return `${out.slice(0, maxLines).join('\n')}\n… ${dropped} more diff lines (${total} changed lines in all)\n`;
  }
  return `${out.join('\n')}\n`;
}
