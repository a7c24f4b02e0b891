/**
 * `tsmirror record`: write a pod's HTTP exchanges (requests and its app's answers) to a HAR
 * file while the pod keeps serving (cli/record.ts, loaded when the command runs).
 */
import type { Command } from 'commander';
import type { RecordFlags } from '../record.js';
import { collect } from './options.js';

export function registerRecord(program: Command): Command {
  return program.command('record')
    .description("record a pod's HTTP traffic (requests and the pod's own answers) to a HAR file; the pod keeps serving")
    .option('--agent <url>', 'the agent to use, e.g. ws://127.0.0.1:7777')
    .option('-t, --target <target>', 'the pod whose traffic to record: pod/NAME[/container/C], deployment/NAME (deploy/), statefulset/NAME, replicaset/NAME, daemonset/NAME, job/NAME, rollout/NAME; or pid/<N>, container/<id> with --agent')
    .option('-n, --namespace <namespace>', "the target's namespace (default: the kubeconfig context's)")
    .option('--context <context>', 'the kubeconfig context to use (default: the current one)')
    .option('--kubeconfig <path>', 'the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)')
    .option('-c, --container <name>', 'the container of the pod (default: its default-container annotation, the only one, or the first that is not a known sidecar)')
    .option('--node <node>', 'for a daemonset target: use its pod on this node')
    .option('--agent-namespace <namespace>', 'where the tsmirror agents run', 'tsmirror-system')
    .option('-p, --port <port>', "the pod's port to record (repeatable, or comma-separated)", collect, [])
    .option('-o, --output <file.har>', 'the HAR file to write (created 0600; written whole when the recording stops)')
    .option('--duration <time>', 'stop after this long: 30s, 5m, 1h (default: until Ctrl-C)')
    .option('--sample <percent>', 'keep this share of exchanges, each drawn on its own: 10%, 0.5%', '100%')
    .option('--max-requests <n>', 'stop once this many exchanges are written')
    .option('--max-body <size>', 'bodies above this are written as their size and sha256 only: 65536, 256KiB, 1MiB', '1MiB')
    .option('--http-header <header>', 'keep only exchanges whose request has this header, "NAME: VALUE" (repeatable, all must match; VALUE a regex matching the whole value)', collect, [])
    .option('--http-path <regex>', 'keep only exchanges whose request path (without the query) matches this regex whole')
    .option('--http-method <method>', 'keep only exchanges with this request method')
    .option('--redact-header <regex>', 'also replace the values of headers whose name matches this regex whole (case-insensitive; repeatable)', collect, [])
    .option('--redact-json-path <path>', 'replace this field of JSON bodies: $.password, $.items[*].card, $..token (repeatable)', collect, [])
    .option('--no-redact', 'keep Authorization, Cookie, Set-Cookie and Proxy-Authorization values too (they are redacted by default)')
    .option('-q, --quiet', 'print nothing but errors')
    .option('-v, --verbose', 'print stacks on errors')
    .addHelpText('after', `
What is recorded: each HTTP/1.1 exchange (keep-alive, chunked, pipelined) and each h2c
(HTTP/2 without TLS, gRPC) stream on the ports, with the pod app's own answer, timings and
the client's address. The pod's clients are answered by the app as always; nothing is
stolen. Other traffic on the ports (TLS, databases) is counted and skipped; the summary
says how much. The agent applies --sample, the filters, --max-body and the redaction on the
node, so what is not kept never leaves it.

Redaction: the values of Authorization, Cookie, Set-Cookie and Proxy-Authorization, of
headers matching --redact-header, and JSON fields named by --redact-json-path become
"[redacted by tsmirror]". --no-redact must be given to keep them.

Examples:
  tsmirror record --target deployment/api -n shop --port 8080 --duration 5m --sample 10% -o checkout.har
  tsmirror record --target pod/api-0 -p 8080 -p 50051 --http-path '/api/.*' -o api.har
  tsmirror record --target deploy/api -p 8080 --redact-header 'x-api-key' --redact-json-path '$..password' -o api.har
  tsmirror record --agent ws://127.0.0.1:7777 --target pid/4242 --port 8080 --max-requests 100 -o local.har

Then: tsmirror replay FILE.har -- node server.js  (compares your program's answers with the recorded ones)

A cluster's policy may refuse recording in some namespaces (recordDeniedNamespaces).
Exit code: 0 when the file was written; 125 when tsmirror failed (the file is still written
with what was recorded when the session ended mid-way).`)
    .action(async (flags: RecordFlags) => {
      const { runRecord } = await import('../record.js'); // loaded when needed
      process.exitCode = await runRecord(flags);
    });
}
