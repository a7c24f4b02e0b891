import { defineConfig } from 'vitest/config';

// Unit tests sit next to what they test; the harness-driven suites (root, namespaces,
// netfilter) run one file at a time so their pods, agents and timings don't interfere.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['protocol/**/*.test.ts', 'common/**/*.test.ts', 'cli/**/*.test.ts', 'agent/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 60000,
          hookTimeout: 120000,
        },
      },
    ],
  },
});
