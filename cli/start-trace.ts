/**
 * TSM_TRACE_START=1: the CLI prints, on stderr at exit, when each step of its start and
 * end happened, in ms since the process started (Node's own steps from
 * `performance.nodeTiming`, then the marks below). For profiling `exec` start time
 * (docs/ARCHITECTURE.md, "Performance"); without the variable a mark costs one test.
 */
const marks: Array<[string, number]> | undefined = process.env.TSM_TRACE_START ? [] : undefined;

if (marks) {
  process.once('exit', () => {
    const t = performance.nodeTiming;
    const lines = [
      ['node: V8 started', t.v8Start],
      ['node: environment ready', t.environment],
      ['node: bootstrap complete', t.bootstrapComplete],
      ...performance.getEntriesByType('mark').map((m): [string, number] => [m.name, m.startTime]),
      ...marks,
      ['process exit', performance.now()],
    ] as Array<[string, number]>;
    process.stderr.write(lines.map(([what, at]) => `tsmirror start: ${at.toFixed(1).padStart(7)} ms ${what}\n`).join(''));
  });
}

/** Notes that `what` happened now (only with TSM_TRACE_START). */
export function mark(what: string): void {
  marks?.push([what, performance.now()]);
}
