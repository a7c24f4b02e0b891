/**
 * `tsmirror replay FILE.har`: send recorded requests to a local program and compare its
 * answers with the recorded ones (cli/replay/, loaded when the command runs).
 */
import type { Command } from 'commander';
import type { ReplayFlags } from '../replay/run.js';
import { collect, sessionOptions } from './options.js';

export function registerReplay(program: Command): Command {
  const replay = program.command('replay')
    .description("send the requests of a recording (HAR) to a local program and compare its answers with the pod's recorded ones")
    .argument('<file>', 'the HAR file (from tsmirror record, a browser or another tool)')
    .argument('[command...]', 'the program to start under tsmirror, after -- (or use --to)')
    .option('--to <url>', 'replay against a program already running, e.g. http://127.0.0.1:3000')
    .option('--concurrency <n>', 'requests in flight at once; each recorded connection still sends its requests in order, on one connection', '1')
    .option('--filter <expr>', "replay only matching entries (repeatable, all must match): method=POST, method=GET,HEAD, 'path=/api/*', path~REGEX, header:x-dev=alice, header:x-dev (present), status=5xx (recorded status); != and !~ negate", collect, [])
    .option('--ignore-header <regex>', 'do not compare headers whose name matches this (repeatable; Date, Server and per-hop headers never are)', collect, [])
    .option('--ignore-json-path <path>', 'do not compare this field of JSON bodies (repeatable): $.updatedAt, $.items[*].id, $..requestId (any depth)', collect, [])
    .option('--header <header>', "send this header value instead of the recorded one, given as 'NAME: VALUE' (repeatable; supplies values the recording redacted)", collect, [])
    .option('--report <file>', 'write every result, with the differences, to this JSON file')
    .option('--port <port>', 'with a command: the port the program listens on (default: the recorded port)')
    .option('--timeout <ms>', 'how long one request may take', '30000')
    .option('--start-timeout <ms>', 'with a command: how long the program may take to listen', '60000')
    .option('--max-body <size>', 'answers larger than this are compared by sha256 only (no field diff)', '16M')
    .option('--no-diff', 'do not print unified diffs of differing bodies (the DIFF lines still name each difference)');
  // With a command: the session it runs in (as for exec; the recording's target by default).
  sessionOptions(replay)
    .addHelpText('after', `
The program gets each recorded request as it was sent to the pod (method, path, headers,
body; HTTP/1.1 or HTTP/2 without TLS, as recorded), and its answer is compared with the
pod app's recorded answer:
  status;  headers (not Date, Server, Content-Length, per-hop headers or --ignore-header);
  trailers (gRPC status);  body: JSON compared as data (each differing field named by its
  path, minus --ignore-json-path), other bodies byte for byte, or by sha256 when the
  recording kept only that (above record's --max-body).
A recorded value that was redacted ("[redacted by tsmirror]") matches any answer; redacted
request headers are sent as the marker unless --header supplies the value.

Where to send:
  --to URL          a program you already run (any machine you can reach).
  -- COMMAND…       tsmirror starts it under \`tsmirror exec\` with the recording's target
                    (--target/-n/--agent override it), waits until it listens on the
                    recorded port on 127.0.0.1, replays, compares and stops it. The
                    program's listeners stay local (no live pod traffic mixes with the
                    replay); its output goes to stderr.

Order: one request at a time in recorded order by default; --concurrency N sends up to N
at once, but requests recorded on one connection go in order on one connection.

Examples:
  tsmirror replay checkout.har -- node server.js
  tsmirror replay checkout.har --to http://127.0.0.1:3000 --report report.json
  tsmirror replay checkout.har --to http://127.0.0.1:3000 --filter method=POST --filter 'path=/api/cart/*'
  tsmirror replay checkout.har --to http://127.0.0.1:3000 --ignore-header 'x-request-id|etag' --ignore-json-path '$..updatedAt'
  tsmirror replay checkout.har --header 'authorization: Bearer eyJ…' -- ./api
  tsmirror replay checkout.har --agent ws://127.0.0.1:7777 --target pid/4242 -- python3 app.py

Output: one line per difference ("DIFF #12 POST /api/cart: body $.total: 42 → 43") with a
unified diff of the body, one per failed request ("FAILED #13 …"), then a summary (same,
different, failed; recorded and replayed latency p50/p99).

Exit codes: 0 every answer is the same; 1 some differ; 2 some requests failed (no answer,
timeout, not replayable); 125 tsmirror failed (bad file or flags, program did not start).`)
    .action(async (file: string, command: string[], flags: ReplayFlags) => {
      const { runReplay } = await import('../replay/run.js');
      process.exitCode = await runReplay(file, command, flags);
    });
  return replay;
}
