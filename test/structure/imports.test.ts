/**
 * The import boundaries between the components: the CLI and the agent meet only in the
 * shared modules (protocol/, common/, native/index.ts), never in each other's code, and
 * the shared modules depend on neither. The one crossing allowed is the CLI's lazy load
 * of the agent command (cli/commands/agent.ts → agent/command.ts), which is what
 * `tsmirror agent` runs.
 *
 * Every import form counts: `import … from`, `export … from`, `import type`, `import x =
 * require(…)`, `import('…')` and `typeof import('…')`.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** What the files under each folder must not import. */
const FORBIDDEN: Record<string, readonly string[]> = {
  cli: ['agent'],
  agent: ['cli'],
  protocol: ['cli', 'agent'],
  common: ['cli', 'agent'],
  native: ['cli', 'agent'],
};

/** Allowed crossings: [importing file, imported file, how]. */
const ALLOWED: ReadonlyArray<readonly [string, string, 'dynamic']> = [
  ['cli/commands/agent.ts', 'agent/command.ts', 'dynamic'],
];

interface ImportSite {
  file: string;
  line: number;
  specifier: string;
  dynamic: boolean;
}

function tsFilesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return tsFilesUnder(path);
    return path.endsWith('.ts') && !path.endsWith('.d.ts') ? [path] : [];
  });
}

function importsOf(file: string): ImportSite[] {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const sites: ImportSite[] = [];
  const add = (node: ts.Node, specifier: ts.Node | undefined, dynamic: boolean): void => {
    if (!specifier || !ts.isStringLiteralLike(specifier)) return;
    const line = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
    sites.push({ file: relative(repoRoot, file), line, specifier: specifier.text, dynamic });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) add(node, node.moduleSpecifier, false);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) add(node, node.moduleReference.expression, false);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) add(node, node.arguments[0], true);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) add(node, node.argument.literal, false);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return sites;
}

/** The repository path an import resolves to (`…/x.js` is `…/x.ts`), or undefined for a package. */
function resolveImport(site: ImportSite): string | undefined {
  if (!site.specifier.startsWith('.')) return undefined;
  const path = relative(repoRoot, resolve(repoRoot, dirname(site.file), site.specifier));
  return path.replace(/\.js$/, '.ts').split(sep).join('/');
}

function topFolder(path: string): string {
  return path.split('/')[0] ?? '';
}

function checkedFiles(): string[] {
  const files = ['cli', 'agent', 'protocol', 'common'].flatMap((dir) => tsFilesUnder(join(repoRoot, dir)));
  const nativeIndex = join(repoRoot, 'native', 'index.ts');
  if (existsSync(nativeIndex)) files.push(nativeIndex);
  return files;
}

function boundaryViolations(files: readonly string[]): string[] {
  const violations: string[] = [];
  for (const file of files) {
    for (const site of importsOf(file)) {
      const target = resolveImport(site);
      if (target === undefined) continue;
      const from = site.file.split(sep).join('/');
      if (!(FORBIDDEN[topFolder(from)] ?? []).includes(topFolder(target))) continue;
      if (ALLOWED.some(([f, t, how]) => f === from && t === target && (how === 'dynamic') === site.dynamic)) continue;
      violations.push(`${from}:${site.line}: ${site.dynamic ? `import('${site.specifier}')` : `import from '${site.specifier}'`} (${topFolder(from)}/ must not import ${topFolder(target)}/)`);
    }
  }
  return violations;
}

describe('import boundaries', () => {
  it('finds the files it checks', () => {
    const files = checkedFiles();
    expect(files.length).toBeGreaterThan(20);
    for (const dir of ['cli', 'agent', 'protocol']) {
      expect(files.some((f) => relative(repoRoot, f).startsWith(`${dir}${sep}`)), `no .ts file found under ${dir}/`).toBe(true);
    }
  });

  it('sees every import form, on its line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsmirror-imports-'));
    try {
      const file = join(dir, 'sample.ts');
      writeFileSync(file, [
        "import { a } from './a.js';",
        "import type { B } from './b.js';",
        "export { c } from './c.js';",
        "import d = require('./d.js');",
        "const e = await import('./e.js');",
        "type F = typeof import('./f.js');",
        "import 'g';",
      ].join('\n'));
      expect(importsOf(file).map((s) => [s.line, s.specifier, s.dynamic])).toEqual([
        [1, './a.js', false], [2, './b.js', false], [3, './c.js', false], [4, './d.js', false],
        [5, './e.js', true], [6, './f.js', false], [7, 'g', false],
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the CLI, the agent and the shared modules apart', () => {
    const violations = boundaryViolations(checkedFiles());
    expect(violations, `imports across component boundaries:\n${violations.join('\n')}\n`).toEqual([]);
  }, 60_000); // parses every source file: ~5 s on a loaded machine
});
