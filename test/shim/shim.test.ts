/**
 * The preloaded shim against the fake session proxy (test/shim/fake-proxy.ts, from
 * dist/), with real programs (a C test program, curl, python3, node). The checks
 * themselves live in native/shim/test/run.sh and shimtest.c so they can also be run by
 * hand while working on the C code; the suite runs once and every check it prints
 * ("ok<TAB>SECTION / NAME" or "FAIL<TAB>SECTION / NAME<TAB>detail") is one test here.
 * The list below is every check there is: one that stops being reported fails.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const shim = join(root, 'build', 'Release', 'libtsmirror.so');
const runner = join(root, 'native', 'shim', 'test', 'run.sh');
const tools = ['/usr/bin/python3', '/usr/bin/gcc', '/usr/bin/curl'].every((p) => existsSync(p));

/** Every check run.sh reports, by section (shimtest.c's test_* functions, then run.sh's own). */
const checks: Record<string, string[]> = {
  fuzz: [
    'response parsers accept every reply shape from TypeScript and survive random and mutated frames',
    'file response parsers accept every reply shape from TypeScript and survive random and mutated frames',
    'every request the shim sends decodes with the TypeScript definition',
  ],
  tcp: [
    'blocking connect succeeds, errno preserved',
    'getpeername reports the requested address',
    'getsockname reports the pod-side address',
    'getpeername with a short buffer reports the full length',
    'peer length follows the family',
    'dup copies the peer',
    'F_DUPFD_CLOEXEC copies the peer',
    'remote refusal is ECONNREFUSED',
    "proxy's errno passes through",
    'AF_INET6 socket to a v4-mapped address',
    'data flows on the v6 socket',
  ],
  nonblocking: [
    'non-blocking connect gives EINPROGRESS',
    'socket stays non-blocking',
    'connection completes',
    'second connect does not open a new remote connection',
    'third connect: EISCONN',
  ],
  udp: [
    'sendto/recvfrom through the relay, source rewritten',
    'sendmsg/recvmsg',
    'sendmmsg sends both',
    'recvmmsg rewrites every source',
    'connected UDP socket: write + recvfrom, getpeername',
    'AF_UNSPEC connect dissolves the association',
    'UDP to loopback stays local',
  ],
  getaddrinfo: [
    "getaddrinfo(db) has glibc's shape for 10.250.0.1, every hint",
    "AI_CANONNAME gives the pod's canonical name",
    'AI_V4MAPPED maps v4 answers',
    'missing name: EAI_NONAME',
    'EAI_AGAIN passes through',
    'AI_NUMERICHOST goes to the real resolver',
    "NULL node + AI_PASSIVE: glibc's answer",
    'local names use the real resolver, errno preserved',
  ],
  hostent: [
    'gethostbyname',
    'gethostbyname2 AF_INET6',
    'gethostbyname miss: HOST_NOT_FOUND',
    'gethostbyname: TRY_AGAIN',
    'gethostbyname_r',
    'gethostbyname_r small buffer: ERANGE',
    'gethostbyname_r miss',
    'gethostbyname2_r wrong family: NO_DATA',
    'gethostbyaddr',
    'gethostbyaddr_r',
    'getnameinfo remote',
    'getnameinfo small host buffer: EAI_OVERFLOW',
    'getnameinfo no PTR: numeric fallback',
    'getnameinfo NI_NAMEREQD: EAI_NONAME',
  ],
  threads: ['32 threads x 100 connects', 'no fd leak after threads exit'],
  processes: [
    'forked child gets its own channel',
    "parent's channel still fine after fork",
    'vfork + execle with an empty environment',
    'posix_spawnp with an empty environment',
    'posix_spawn with a foreign LD_PRELOAD and a wrong TSMIRROR_SOCK',
    'clearenv + execlp sh -c curl',
  ],
  fds: [
    'round trip before',
    "found the shim's fds, above 2",
    'shim fd is close-on-exec',
    'close(shim fd) pretends EBADF',
    'dup(shim fd) pretends EBADF',
    'F_DUPFD(shim fd) pretends EBADF',
    'dup2 onto a shim fd succeeds',
    'channel still works after dup2 onto a shim fd',
    'dup3 onto a shim fd succeeds',
    'channel still works after dup3 onto a shim fd',
    'close_range(3, ~0U)',
    'channel survives close_range',
    'no fd leak',
  ],
  listen: [
    'listen subscribes (proxy: remote), errno preserved',
    'bind to a port taken here succeeds elsewhere',
    'getsockname shows the port asked for',
    'listen refused by the proxy fails with its errno',
    'connect to the listener',
    'accept reports the pod client',
    'getpeername agrees',
    'getsockname is the pod side',
    'a plain local connection is reported as it is',
    'bind to a taken port (deferred)',
    'connect of a socket whose port is still taken: EADDRINUSE',
    'close() unsubscribed: the port can be subscribed again',
  ],
  codec: [
    '100 addresses: the first 64 are kept',
    'a refusal with a 320-character message',
    'a 214-character reverse name',
  ],
  closed_unseen: [
    'round trip before',
    "closefrom(3) leaves the shim's fds open",
    'after closefrom(3) a remote connect reaches the proxy',
    'after closefrom(3) a remote getaddrinfo reaches the proxy',
    "the program's files get the shim's old numbers",
    'after a raw close_range a remote connect still works',
    'after a raw close_range a remote getaddrinfo still works',
    'a new channel was opened',
    "the program's file at a shim's old number holds only what it wrote",
    "the program can close its file at a shim's old number",
  ],
  res: [
    'res_init succeeds, errno preserved',
    "_res holds the pod's nameservers (IPv6 where glibc keeps them)",
    "_res holds the pod's search list and ndots",
    'res_search(db, A) applies the search list, errno preserved',
    'res_query(db) asks the name as is: HOST_NOT_FOUND',
    'res_query of the full name',
    'res_querydomain',
    'res_search of an unknown name: HOST_NOT_FOUND',
    'res_search of a type the name lacks: NO_DATA',
    'SERVFAIL: TRY_AGAIN',
    'no nameserver answers: TRY_AGAIN, errno ETIMEDOUT',
    "res_ninit of the program's own state gets the pod's settings",
    'res_nsearch(db, SRV): port and target',
    "the program's options are honoured (no RES_DEFNAMES: no search)",
    'a state never initialised is set up on first use',
    "res_send of res_mkquery's message: the answer with its id",
    'an answer larger than the buffer is cut to it with TC set',
    '8 threads x 50 res_search, each with its own _res; no fd leak',
    "a thread's _res that glibc set up itself gets the pod's settings on first use",
    'res_init keeps the options of a state already set up',
    'RES_USE_EDNS0: the query carries an OPT record',
  ],
  unreachable: [
    'connect fails with ENETUNREACH', 'getaddrinfo gives EAI_AGAIN', 'gethostbyname gives TRY_AGAIN',
    "res_search gives TRY_AGAIN (this machine's nameserver is not asked)",
  ],
  inert: [
    'loopback connect works',
    'numeric getaddrinfo works',
    'the shim opened no fds',
    "res_init is glibc's",
    'the shim asked the proxy nothing',
  ],
  runs: [
    'shimtest with the fake proxy finishes',
    'shimtest with an unreachable proxy finishes',
    'shimtest without TSMIRROR_SOCK finishes',
  ],
  unseen: [
    'a program that connects through libc reports nothing',
    'io_uring_setup through syscall() is reported once',
    'connect through syscall() is reported once',
  ],
  wire: ['every frame the shim sent is valid for protocol/shim-wire.ts'],
  programs: [
    'curl by IP',
    'curl by name',
    'curl refused',
    'env -i curl',
    'bash -c curl',
    'python urllib',
    'python subprocess env={}',
    'python non-blocking connect',
    'python: SIGALRM interrupts a blocking connect the pod never answers',
    'python: with SA_RESTART a blocking connect goes on waiting',
    'python UDP',
    'python 16 threads x 50 connects, no fd leak',
    'node fetch/net/dgram/dns',
    'node child_process env {}',
  ],
};

/** What run.sh said about one check: how often it passed, and each failure's detail. */
interface Outcome {
  passes: number;
  failures: string[];
}

let outcomes = new Map<string, Outcome>();
let transcript = '';

function parse(stdout: string): Map<string, Outcome> {
  const found = new Map<string, Outcome>();
  for (const line of stdout.split('\n')) {
    const [verdict, name, detail] = line.split('\t');
    if ((verdict !== 'ok' && verdict !== 'FAIL') || !name) continue;
    const outcome = found.get(name) ?? { passes: 0, failures: [] };
    if (verdict === 'ok') outcome.passes++;
    else outcome.failures.push(detail ?? '');
    found.set(name, outcome);
  }
  return found;
}

describe.skipIf(!tools)('libtsmirror shim', () => {
  beforeAll(() => {
    const run = spawnSync('bash', [runner, shim], { encoding: 'utf8', timeout: 300_000 });
    transcript = `${run.stdout}${run.stderr}`;
    outcomes = parse(run.stdout);
  }, 300_000);

  for (const [section, names] of Object.entries(checks)) {
    describe(section, () => {
      for (const name of names) {
        it(name, () => {
          const outcome = outcomes.get(`${section} / ${name}`);
          expect(outcome, `run.sh did not report this check; its output:\n${transcript.slice(-4000)}`).toBeDefined();
          expect(outcome?.failures).toEqual([]);
          expect(outcome?.passes).toBeGreaterThan(0);
        });
      }
    });
  }

  it('run.sh reports no check this file does not list', () => {
    const listed = new Set(Object.entries(checks).flatMap(([section, names]) => names.map((n) => `${section} / ${n}`)));
    expect([...outcomes.keys()].filter((name) => !listed.has(name))).toEqual([]);
  });
});
