import { configDefaults, defineConfig } from 'vitest/config';

// Unit tests sit next to what they test (test/structure: checks of the source tree itself);
// the harness-driven suites (root, namespaces, netfilter) run one file at a time so their
// pods, agents and timings don't interfere.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['protocol/**/*.test.ts', 'cli/**/*.test.ts', 'agent/**/*.test.ts', 'common/**/*.test.ts', 'test/structure/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, 'test/structure/**'],
          fileParallelism: false,
          testTimeout: 60000,
          hookTimeout: 120000,
        },
      },
    ],
  },
});
