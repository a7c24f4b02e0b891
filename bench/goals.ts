/**
 * The goals of issue 13 ("Performance"), printed beside each figure the benches measure:
 * the figure, the goal it is held to (absolute, or relative to the same operation in the
 * pod, measured in the same run), and whether it is met.
 */

/** One figure against its goal: `limit` is the most (`atMost`) or the least (`atLeast`) it may be. */
export interface Goal {
  what: string;
  value: number;
  unit: string;
  limit: number;
  kind: 'atMost' | 'atLeast';
  /** How the limit was made, e.g. "pod 17 µs + 150 µs". */
  rule: string;
}

export function met(g: Goal): boolean {
  return g.kind === 'atMost' ? g.value <= g.limit : g.value >= g.limit;
}

const num = (v: number): string => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1));

/** The table of goals, one line each, with a closing count. */
export function goalTable(title: string, goals: readonly Goal[]): string {
  const lines = [`\n${title}: goals (issue 13)`];
  for (const g of goals) {
    const sign = g.kind === 'atMost' ? '≤' : '≥';
    lines.push(`  ${g.what.padEnd(34)} ${`${num(g.value)} ${g.unit}`.padStart(13)}   goal ${sign} ${`${num(g.limit)} ${g.unit}`.padEnd(12)} (${g.rule})  ${met(g) ? 'met' : 'NOT met'}`);
  }
  lines.push(`  ${goals.filter(met).length} of ${goals.length} met`);
  return `${lines.join('\n')}\n`;
}
