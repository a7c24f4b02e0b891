/** The median of `xs` (0 for none). */
export function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/**
 * `rounds` paired runs of `a` and `b` after one warm-up pair (the agent's and each new
 * proxy's JIT start cold, and whichever runs first pays), the order swapped each round so
 * neither always runs on the other's heels.
 */
export async function pairedRounds<T>(rounds: number, a: () => Promise<T>, b: () => Promise<T>): Promise<Array<[T, T]>> {
  await a();
  await b();
  const pairs: Array<[T, T]> = [];
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0) {
      const first = await a();
      pairs.push([first, await b()]);
    } else {
      const second = await b();
      pairs.push([await a(), second]);
    }
  }
  return pairs;
}

/** Runs a bench's `main`: a failure prints its stack and exits 1 (what every bench does). */
export function runBench(main: () => Promise<void>): void {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
