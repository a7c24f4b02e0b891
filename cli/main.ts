/**
 * The `tsmirror` program as an ES module (what the ESM bundle, dist/cli-bundle, starts
 * from): cli/program.ts holds the commands and the error handling.
 */
import { runCli } from './program.js';

await runCli();
