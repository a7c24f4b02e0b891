/**
 * Shell completion for bash, zsh and fish. The scripts are thin: they hand the words
 * typed so far to the hidden `tsmirror __complete INDEX WORD…` command, which answers
 * from the command definitions themselves (so every new flag completes with nothing to
 * keep in step) and, for --target, with the names of what can be targeted in the
 * cluster when it is reachable.
 */
import type { Command, Option } from 'commander';
import { TsmError } from '../protocol/errors.js';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

/** Target kinds offered before any name is typed. */
export const TARGET_KINDS = ['pod/', 'deployment/', 'statefulset/', 'daemonset/', 'replicaset/', 'job/', 'rollout/', 'pid/', 'container/'];

/**
 * Lists target names for a completion, e.g. ['deployment/api', 'pod/api-7d9f']. Set by
 * the Kubernetes support; it must answer quickly or give up (completion must not hang).
 */
export type TargetLister = (prefix: string, flags: Record<string, string>) => Promise<string[]>;

export function completionScript(shell: string, name = 'tsmirror'): string {
  switch (shell) {
    case 'bash':
      return `# bash completion for ${name}: add to ~/.bashrc:  source <(${name} completion bash)
_${name}_complete() {
  local IFS=$'\\n'
  local candidates
  candidates=$(${name} __complete "$COMP_CWORD" "\${COMP_WORDS[@]}" 2>/dev/null)
  if [ -z "$candidates" ]; then
    COMPREPLY=()
    return
  fi
  COMPREPLY=($(compgen -W "$candidates" -- "\${COMP_WORDS[COMP_CWORD]}"))
  [[ \${#COMPREPLY[@]} -eq 1 && \${COMPREPLY[0]} == */ ]] && compopt -o nospace 2>/dev/null
}
complete -o default -o bashdefault -F _${name}_complete ${name}
`;
    case 'zsh':
      return `#compdef ${name}
# zsh completion for ${name}: add to ~/.zshrc:  source <(${name} completion zsh)
_${name}_complete() {
  local -a candidates
  candidates=("\${(@f)$(${name} __complete $((CURRENT - 1)) "\${words[@]}" 2>/dev/null)}")
  if [[ -z "\${candidates[*]}" ]]; then
    _files
    return
  fi
  compadd -S '' -a candidates
}
if (( $+functions[compdef] )); then
  compdef _${name}_complete ${name}
fi
`;
    case 'fish':
      return `# fish completion for ${name}: ${name} completion fish > ~/.config/fish/completions/${name}.fish
function __${name}_complete
  set -l words (commandline -opc) (commandline -ct)
  ${name} __complete (math (count $words) - 1) $words 2>/dev/null
end
function __${name}_no_candidates
  test (count (__${name}_complete)) -eq 0
end
complete -c ${name} -f -a '(__${name}_complete)'
complete -c ${name} -n __${name}_no_candidates -F
`;
    default:
      throw new TsmError('TSM_ERR_USAGE', `no completion for shell "${shell}"`, { hint: `choose one of ${SHELLS.join(', ')}` });
  }
}

function takesValue(o: Option): boolean {
  return o.required || o.optional;
}

function findOption(cmd: Command, word: string): Option | undefined {
  const flag = word.split('=')[0];
  return cmd.options.find((o) => o.long === flag || o.short === flag);
}

function visibleCommands(cmd: Command): Command[] {
  return cmd.commands.filter((c) => !c.name().startsWith('_') && !(c as unknown as { _hidden?: boolean })._hidden);
}

/**
 * The candidates for word `index` of `words` (words[0] is the program name). An empty
 * list lets the shell fall back to file names (after `--`, or for a path option).
 */
export async function complete(program: Command, index: number, words: string[], listTargets?: TargetLister): Promise<string[]> {
  const current = words[index] ?? '';
  let cmd = program;
  const values: Record<string, string> = {};
  for (let i = 1; i < index; i++) {
    const w = words[i] ?? '';
    if (w === '--') return []; // the program and its arguments: the shell's own completion
    if (w.startsWith('-')) {
      const o = findOption(cmd, w);
      if (o && takesValue(o) && !w.includes('=')) {
        values[o.attributeName()] = words[i + 1] ?? '';
        i++;
      }
      continue;
    }
    const sub = cmd.commands.find((c) => c.name() === w || c.aliases().includes(w));
    if (sub) cmd = sub;
  }
  // Options typed after the cursor count too (`--target dep<TAB> -n shop`).
  for (let i = index + 1; i < words.length; i++) {
    const w = words[i] ?? '';
    if (w === '--') break;
    const o = w.startsWith('-') ? findOption(cmd, w) : undefined;
    if (o && takesValue(o) && !w.includes('=')) {
      values[o.attributeName()] = words[i + 1] ?? '';
      i++;
    }
  }
  const previous = index > 1 ? findOption(cmd, words[index - 1] ?? '') : undefined;
  if (previous && takesValue(previous) && !(words[index - 1] ?? '').includes('=')) {
    if (previous.argChoices) return previous.argChoices.filter((c) => c.startsWith(current));
    if (previous.attributeName() === 'target') return completeTarget(current, values, listTargets);
    return [];
  }
  if (current.startsWith('-')) {
    const flags = cmd.options.filter((o) => !o.hidden).flatMap((o) => [o.long, o.short]).filter((f): f is string => !!f);
    return [...flags, '--help'].filter((f) => f.startsWith(current));
  }
  const subs = visibleCommands(cmd).map((c) => c.name()).filter((n) => n.startsWith(current));
  return subs;
}

async function completeTarget(current: string, flags: Record<string, string>, listTargets?: TargetLister): Promise<string[]> {
  if (!current.includes('/')) return TARGET_KINDS.filter((k) => k.startsWith(current));
  if (!listTargets) return [];
  try {
    return (await listTargets(current, flags)).filter((t) => t.startsWith(current));
  } catch {
    return []; // the cluster is not reachable: no names, no error
  }
}
