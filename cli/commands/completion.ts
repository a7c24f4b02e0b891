/**
 * `tsmirror completion SHELL` (the script) and the hidden `tsmirror __complete` the script
 * calls (cli/completion.ts answers from the program's own command definitions).
 */
import type { Command } from 'commander';
import { SHELLS, complete, completionScript, type TargetLister } from '../completion.js';

/**
 * Names of targets in the cluster, for completion: what `tsmirror targets` lists, and
 * every pod for `pod/`. Gives up after 2 s (a shell must not hang on an unreachable cluster).
 */
const targetLister: TargetLister = async (prefix, flags) => {
  const { loadKube } = await import('../kube.js');
  const { listTargets } = await import('../targets.js');
  const kube = loadKube({
    ...(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}),
    ...(flags.context ? { context: flags.context } : {}),
    ...(flags.namespace ? { namespace: flags.namespace } : {}),
  });
  const work = (async (): Promise<string[]> => {
    const names = (await listTargets(kube, kube.namespace)).map((r) => r.target);
    if (prefix.startsWith('pod/')) {
      for (const p of (await kube.core.listNamespacedPod({ namespace: kube.namespace })).items) names.push(`pod/${p.metadata?.name ?? ''}`);
    }
    return [...new Set(names)].sort();
  })();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string[]>((resolve) => (timer = setTimeout(() => resolve([]), 2000)));
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
};

export function registerCompletion(program: Command): void {
  program.command('completion')
    .description('print the shell completion script for bash, zsh or fish')
    .argument('<shell>', `one of ${SHELLS.join(', ')}`)
    .addHelpText('after', `
Install:
  bash:  echo 'source <(tsmirror completion bash)' >> ~/.bashrc
  zsh:   echo 'source <(tsmirror completion zsh)' >> ~/.zshrc
  fish:  tsmirror completion fish > ~/.config/fish/completions/tsmirror.fish`)
    .action((shell: string) => {
      process.stdout.write(completionScript(shell));
    });
  program.command('__complete', { hidden: true })
    .argument('<index>')
    .argument('[words...]')
    .helpOption(false)
    .passThroughOptions()
    .allowUnknownOption()
    .action(async (index: string, words: string[]) => {
      const candidates = await complete(program, Number(index), words, targetLister);
      if (candidates.length > 0) process.stdout.write(`${candidates.join('\n')}\n`);
      process.exit(0); // a cluster request that timed out must not keep the shell waiting
    });
}
