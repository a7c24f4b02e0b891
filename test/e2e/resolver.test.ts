/**
 * glibc's resolver functions (res_search, res_query, res_querydomain, res_send and their
 * res_n* forms), which since glibc 2.34 read /etc/resolv.conf and send from inside libc,
 * past every hook: under tsmirror they answer as in the pod (the shim's res.c, the wire's
 * res.config and res.send, the agent's dns.config and dns.query). Real programs: a C
 * program compiled here, and PHP's dns_get_record and checkdnsrr. Each runs under
 * tsmirror and inside the pod (nsenter, like kubectl exec), and the two must print the
 * same; run plainly on this machine, it does not see the cluster.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { httpServerCommand } from '../harness/demo-pods.js';
import { run, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

const PHP = '/usr/bin/php';
const tools = existsSync('/usr/bin/gcc') && existsSync(PHP);

// Prints the resolver state after res_init, or the answer records of one res_search/res_query.
const RESCHECK_C = String.raw`
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "conf")) {
    res_init();
    printf("ndots %d search", _res.ndots);
    for (int i = 0; i < MAXDNSRCH && _res.dnsrch[i]; i++) printf(" %s", _res.dnsrch[i]);
    printf(" nameserver %s\n", inet_ntoa(_res.nsaddr_list[0].sin_addr));
    return 0;
  }
  if (argc != 4) return 2;
  unsigned char ans[8192];
  int type = !strcmp(argv[3], "SRV") ? ns_t_srv : !strcmp(argv[3], "AAAA") ? ns_t_aaaa : ns_t_a;
  int n = !strcmp(argv[1], "search") ? res_search(argv[2], C_IN, type, ans, sizeof ans)
        : !strcmp(argv[1], "querydomain") ? res_querydomain(argv[2], "svc.cluster.local", C_IN, type, ans, sizeof ans)
        : res_query(argv[2], C_IN, type, ans, sizeof ans);
  if (n < 0) {
    printf("failed: h_errno %d\n", h_errno);
    return 1;
  }
  ns_msg m;
  if (ns_initparse(ans, n, &m) < 0) return 3;
  for (int i = 0; i < ns_msg_count(m, ns_s_an); i++) {
    ns_rr rr;
    char text[NS_MAXDNAME];
    if (ns_parserr(&m, ns_s_an, i, &rr) < 0) return 3;
    const unsigned char *rd = ns_rr_rdata(rr);
    if (ns_rr_type(rr) == ns_t_a) {
      printf("%s A %s\n", ns_rr_name(rr), inet_ntop(AF_INET, rd, text, sizeof text));
    } else if (ns_rr_type(rr) == ns_t_aaaa) {
      printf("%s AAAA %s\n", ns_rr_name(rr), inet_ntop(AF_INET6, rd, text, sizeof text));
    } else if (ns_rr_type(rr) == ns_t_srv) {
      if (dn_expand(ans, ans + n, rd + 6, text, sizeof text) < 0) return 3;
      printf("%s SRV %u %u %u %s\n", ns_rr_name(rr), ns_get16(rd), ns_get16(rd + 2), ns_get16(rd + 4), text);
    }
  }
  return 0;
}
`;

// dns_get_record and checkdnsrr (res_ninit + res_nsearch on a state of PHP's own).
const PHP_SCRIPT = `
$a = dns_get_record("db", DNS_A);
$s = dns_get_record("_http._tcp.db", DNS_SRV);
echo json_encode([
  "a" => array_map(fn($r) => [$r["host"], $r["ip"]], $a ?: []),
  "srv" => array_map(fn($r) => [$r["host"], $r["port"], $r["target"]], $s ?: []),
  "checkdnsrr_db" => checkdnsrr("db", "A"),
  "checkdnsrr_srv" => checkdnsrr("_http._tcp.db.default.svc.cluster.local", "SRV"),
  "checkdnsrr_unknown" => checkdnsrr("nothing-here", "A"),
  "unknown" => dns_get_record("nothing-here.default.svc.cluster.local", DNS_A),
]), "\\n";
`;

let harness: Harness;
let db: Pod;
let client: Pod;
let agent: AgentProcess;
let work: string;
let rescheck: string;

beforeAll(async () => {
  harness = await Harness.create({
    name: 'resolver',
    srvRecords: [
      { name: '_http._tcp.db.default.svc.cluster.local', target: 'db.default.svc.cluster.local', port: 8080, priority: 10, weight: 5 },
      // An answer too large for a 512-byte UDP message: the nameserver sets TC, and the
      // query is asked again over TCP (glibc in the pod; the agent under tsmirror).
      ...Array.from({ length: 24 }, (_, i) => ({ name: '_big._tcp.db.default.svc.cluster.local', target: `replica-${i}.db-headless.default.svc.cluster.local`, port: 9000 + i })),
    ],
  });
  [db, client] = await Promise.all([
    harness.addPod({ name: 'db', namespace: 'default', command: httpServerCommand(8080), ipv6: true, readyPort: 8080 }),
    harness.addPod({ name: 'client', namespace: 'default', command: httpServerCommand(8080), readyPort: 8080 }),
  ]);
  agent = await startAgentProcess();
  // Under /var/tmp, which the pods see too (their /tmp is their own).
  work = mkdtempSync('/var/tmp/tsmirror-resolver-');
  rescheck = join(work, 'rescheck');
  writeFileSync(`${rescheck}.c`, RESCHECK_C);
  execFileSync('gcc', ['-O1', '-Wall', '-Werror', '-o', rescheck, `${rescheck}.c`, '-lresolv']);
});

afterAll(async () => {
  await stopAll({ agent, harness });
  if (work) rmSync(work, { recursive: true, force: true });
});

const viaTsmirror = (command: string[]) => tsmExec(agent.url, `pid/${client.pid}`, command, [], { timeoutMs: 60000 });
const inPod = (command: string[]) => harness.exec(client, command, { timeoutMs: 30000 });

describe.skipIf(!tools)("glibc's resolver functions answer as in the pod", () => {
  it("res_init: the pod's search list, ndots and nameserver", async () => {
    const pod = await inPod([rescheck, 'conf']);
    expect(pod.stdout).toBe(`ndots 5 search default.svc.cluster.local svc.cluster.local cluster.local nameserver ${harness.dnsIp}\n`);
    const r = await viaTsmirror([rescheck, 'conf']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(pod.stdout);
  });

  it('res_search, res_query and res_querydomain of A, AAAA and SRV records, and unknown names', async () => {
    const cases: Array<[string, string, string, string | RegExp]> = [
      ['search', 'db', 'A', `db.default.svc.cluster.local A ${db.ip}\n`],
      ['search', 'db', 'AAAA', `db.default.svc.cluster.local AAAA ${db.ipv6 ?? ''}\n`],
      ['search', '_http._tcp.db', 'SRV', '_http._tcp.db.default.svc.cluster.local SRV 10 5 8080 db.default.svc.cluster.local\n'],
      ['search', '_big._tcp.db', 'SRV', /(_big\._tcp\.db\.default\.svc\.cluster\.local SRV 0 0 9\d{3} replica-\d+\.db-headless\.default\.svc\.cluster\.local\n){24}/],
      ['query', 'db.default.svc.cluster.local', 'A', `db.default.svc.cluster.local A ${db.ip}\n`],
      ['querydomain', 'db.default', 'A', `db.default.svc.cluster.local A ${db.ip}\n`],
      // res_query applies no search list: "db" alone does not exist (HOST_NOT_FOUND is 1).
      ['query', 'db', 'A', 'failed: h_errno 1\n'],
      ['search', 'nothing-here', 'A', 'failed: h_errno 1\n'],
      ['query', 'nothing-here.default.svc.cluster.local', 'SRV', 'failed: h_errno 1\n'],
    ];
    for (const [mode, name, type, want] of cases) {
      const pod = await inPod([rescheck, mode, name, type]);
      if (typeof want === 'string') expect(pod.stdout, `in the pod: ${mode} ${name} ${type}`).toEqual(want);
      else expect(pod.stdout, `in the pod: ${mode} ${name} ${type}`).toMatch(want);
      const r = await viaTsmirror([rescheck, mode, name, type]);
      // The same records; a nameserver may order a large set differently each time.
      expect(r.stdout.split('\n').sort(), `under tsmirror: ${mode} ${name} ${type}\n${r.stderr}`).toEqual(pod.stdout.split('\n').sort());
      expect(r.code).toBe(pod.code);
    }
  });

  it('without tsmirror the same program does not see the cluster', async () => {
    const plain = await run(rescheck, ['search', 'db', 'A'], { timeoutMs: 30000 });
    expect(plain.stdout).not.toContain(db.ip);
  });

  it("PHP's dns_get_record and checkdnsrr", async () => {
    const pod = await inPod([PHP, '-r', PHP_SCRIPT]);
    expect(JSON.parse(pod.stdout)).toEqual({
      a: [['db.default.svc.cluster.local', db.ip]],
      srv: [['_http._tcp.db.default.svc.cluster.local', 8080, 'db.default.svc.cluster.local']],
      checkdnsrr_db: true,
      checkdnsrr_srv: true,
      checkdnsrr_unknown: false,
      unknown: [],
    });
    const r = await viaTsmirror([PHP, '-r', PHP_SCRIPT]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(pod.stdout);
  });
});
