/**
 * A program's own resolver (Go's pure-Go one, busybox nslookup, a raw UDP socket) sending
 * its queries to the pod's nameserver: the session proxy's DNS relay answers each plain
 * query through the agent's dns.query and the session's packet cache (cli/proxy/udp-relay.ts,
 * dns-packet-cache.ts), with no UDP flow opened in the pod. The cluster DNS (dnsmasq)
 * answers with a TTL of 3 s here and logs each query it gets, so the tests count what
 * reached it; the assertions bound what a cache may do in the time that actually passed,
 * never how fast anything is.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Harness, type Pod } from '../harness/harness.js';
import { expectAskedOncePerTtl, expectNeverServedPastTtl } from './dns-ttl.js';
import { buildGoFixture, startAgentProcess, stopAll, tsmExec, type AgentProcess, type Result } from './tsm.js';

const BUSYBOX = '/bin/busybox';
const PY = '/usr/bin/python3';
const TTL = 3;
const haveTools = existsSync('/usr/bin/go') && existsSync(BUSYBOX);
/** SRV records too many for Go's 1232-byte EDNS answers: the nameserver truncates (TC), and the program asks again over TCP. */
const BIG_SRV = 60;

let harness: Harness;
let agent: AgentProcess;
let client: Pod;
let db: Pod;
let work: string;
let gonet: string;

/** What the session proxy counted (`--verbose`): UDP flows opened in the pod, DNS relays, their queries, TCP connections. */
function counts(r: Result): { tcp: number; udpFlows: number; dnsFlows: number; dnsQueries: number } {
  const m = /(\d+) TCP connections .*? and (\d+) UDP flows through the pod, .*?, (\d+) DNS flows answered by the proxy \((\d+) queries\)/.exec(r.stderr);
  if (!m) throw new Error(`no session counts in: ${r.stderr}`);
  return { tcp: Number(m[1]), udpFlows: Number(m[2]), dnsFlows: Number(m[3]), dnsQueries: Number(m[4]) };
}

const exec = (command: string[], flags: string[] = []) => tsmExec(agent.url, `pid/${client.pid}`, command, ['--verbose', ...flags], { timeoutMs: 120_000 });

beforeAll(async () => {
  if (!haveTools) return;
  work = mkdtempSync(join(tmpdir(), 'tsm-seccomp-dns-'));
  gonet = join(work, 'gonet');
  await buildGoFixture('go-net', gonet, { cgo: false, gopath: join(work, 'gopath') });
  harness = await Harness.create({
    name: 'seccomp-dns', dnsTtl: TTL, logQueries: true,
    srvRecords: Array.from({ length: BIG_SRV }, (_, i) => ({ name: '_big._tcp.db.default.svc.cluster.local', target: `replica-${i}.db-headless.default.svc.cluster.local`, port: 9000 + i })),
  });
  agent = await startAgentProcess();
  [client, db] = await Promise.all([
    harness.addPod({ name: 'client', namespace: 'default', command: ['sleep', 'infinity'] }),
    harness.addPod({ name: 'db', namespace: 'default', command: ['sleep', 'infinity'] }),
  ]);
  copyFileSync(gonet, join(client.dataDir, 'gonet'));
}, 600_000);

afterAll(async () => {
  await stopAll({ agent, harness });
  if (work) rmSync(work, { recursive: true, force: true });
});

// Raw DNS over a connected UDP socket to the pod's nameserver (from the pod's
// /etc/resolv.conf): hostile datagrams first, then queries under random ids with a
// mixed-case name, twice on one socket and once on a new one. Prints what came back.
const RAW = String.raw`
import json, random, socket, struct
ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
def query(qid, name, flags=0x0100):
    out = struct.pack('>HHHHHH', qid, flags, 1, 0, 0, 0)
    for label in name.split('.'): out += bytes([len(label)]) + label.encode()
    return out + b'\0' + struct.pack('>HH', 1, 1)
def ask(s, name):
    qid = random.randrange(65536); q = query(qid, name); s.send(q); other = []
    while True:
        m = s.recv(4096)
        if m[:2] == q[:2]: break
        other.append(m[:4].hex())
    an = struct.unpack('>H', m[6:8])[0]; at = len(q); addrs = []
    for _ in range(an):
        at += 2; rtype, _, ttl, rdlen = struct.unpack('>HHIH', m[at:at + 10]); at += 10
        if rtype == 1: addrs.append([socket.inet_ntoa(m[at:at + 4]), ttl])
        at += rdlen
    return {'id_ok': True, 'flags': m[2:4].hex(), 'question_echoed': m[12:len(q)] == q[12:], 'addrs': addrs, 'other': other}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.connect((ns, 53))
for junk in [b'', b'\xff' * 11, b'\xc0' * 1400, query(7, 'db')[:20], query(8, 'db', 0x8180), query(9, 'db', 0x2100)]:
    s.send(junk)
out = [ask(s, 'DB.Default.SVC.cluster.local'), ask(s, 'db.DEFAULT.svc.cluster.local')]
s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s2.settimeout(5); s2.connect((ns, 53))
out.append(ask(s2, 'Db.default.svc.cluster.local'))
print(json.dumps(out))
`;

describe.skipIf(process.getuid?.() !== 0 || !haveTools)("a program's own DNS queries to the pod's nameserver", () => {
  it('Go (CGO_ENABLED=0) under seccomp: LookupHost and LookupSRV answer as in the pod with no UDP flow opened in the pod; unknown names fail', async () => {
    const host = await exec([gonet, 'lookup', 'db']);
    expect(host.stdout.trim(), host.stderr).toBe(db.ip);
    const c = counts(host);
    expect(c.udpFlows).toBe(0); // no udp.open at the agent: every query went through a DNS relay
    expect(c.dnsFlows).toBeGreaterThanOrEqual(2); // A and AAAA, each on its own socket
    expect(c.dnsQueries).toBeGreaterThanOrEqual(c.dnsFlows);
    // The same program run inside the pod prints the same.
    const inPod = await harness.exec(client, ['/data/gonet', 'lookup', 'db'], { timeoutMs: 60_000 });
    expect(inPod.stdout).toBe(host.stdout);
    const srv = await exec([gonet, 'srv', 'big', 'tcp', 'db']);
    expect(srv.code, srv.stderr).toBe(0);
    const targets = srv.stdout.trim().split(' ');
    expect(targets).toHaveLength(BIG_SRV);
    expect(targets).toContain('replica-0.db-headless.default.svc.cluster.local.:9000');
    // The truncated UDP answer made Go ask again over TCP, through the pod like any connection.
    expect(counts(srv)).toMatchObject({ udpFlows: 0 });
    expect(counts(srv).tcp).toBeGreaterThanOrEqual(1);
    const bad = await exec([gonet, 'lookup', 'nope']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/no such host/);
    expect(counts(bad).udpFlows).toBe(0);
  }, 240_000);

  it('busybox nslookup under seccomp: the pod\'s answer, no UDP flow in the pod; an unknown name fails', async () => {
    const r = await exec([BUSYBOX, 'nslookup', 'db.default.svc.cluster.local']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(db.ip);
    expect(counts(r)).toMatchObject({ udpFlows: 0 });
    expect(counts(r).dnsQueries).toBeGreaterThanOrEqual(1);
    const bad = await exec([BUSYBOX, 'nslookup', 'nope.default.svc.cluster.local']);
    expect(bad.code).not.toBe(0);
    expect(`${bad.stdout}${bad.stderr}`).toMatch(/NXDOMAIN|can't find/i);
  });

  it('repeated lookups within the TTL reach the cluster DNS at most once per TTL', async () => {
    const r = await expectAskedOncePerTtl(harness, TTL, () => exec([gonet, 'lookups', 'burst', '20']));
    expect(counts(r).udpFlows).toBe(0);
  }, 120_000);

  it('an answer is never served past its TTL, and another session does not get it', async () => {
    await expectNeverServedPastTtl(harness, TTL, () => exec([gonet, 'watchname', 'mover', 'flag']), () => exec([gonet, 'lookup', 'mover']));
  }, 240_000);

  // A socket per query to the pod's nameserver, as Go's resolver makes: python under the
  // preload, Go under seccomp.
  const SOCKET_PER_QUERY = String.raw`
import socket, struct
ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
for i in range(10):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.connect((ns, 53))
    s.send(struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0) + b'\x02db\x07default\x03svc\x07cluster\x05local\x00' + struct.pack('>HH', 1, 1))
    assert s.recv(4096)[:2] == struct.pack('>H', i)
    s.close()
print('ok')
`;
  for (const [intercept, command] of [['preload', [PY, '-c', SOCKET_PER_QUERY]], ['seccomp', () => [gonet, 'lookups', 'db', '10']]] as const) {
    it(`a socket per query (--intercept ${intercept}): the relay for the nameserver is asked for once, not for every socket, and each socket is answered`, async () => {
      const log = join(work, `shim-${intercept}.log`);
      const argv = typeof command === 'function' ? command() : [...command];
      const r = await tsmExec(agent.url, `pid/${client.pid}`, argv, ['--verbose', '--intercept', intercept], { timeoutMs: 120_000, env: { ...process.env, TSMIRROR_SHIM_LOG: log } });
      expect(r.code, r.stderr).toBe(0);
      const c = counts(r);
      expect(c.dnsFlows).toBeGreaterThanOrEqual(10); // sockets the proxy answered
      expect(c.udpFlows).toBe(0);
      // Each time the shim or the supervisor asked: the first socket (Go's A and AAAA may race), then none.
      const asked = readFileSync(log, 'utf8').split('\n').filter((l) => /connect udp \S+:53 -> proxy/.test(l));
      expect(asked.length).toBeGreaterThanOrEqual(1);
      expect(asked.length).toBeLessThanOrEqual(2);
      expect(asked[0]).toContain('(shared)');
    }, 120_000);
  }

  // As root, then as nobody (a server dropping its privileges): its sockets are not the
  // session's uid, so they get DNS relays of their own rather than the shared one.
  const DROPS_PRIVILEGES = String.raw`
import os, socket, struct
socket.gethostbyname('db')  # the shim's channel is open before the drop
ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
os.setgroups([]); os.setgid(65534); os.setuid(65534)
for i in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.connect((ns, 53))
    s.send(struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0) + b'\x02db\x07default\x03svc\x07cluster\x05local\x00' + struct.pack('>HH', 1, 1))
    assert s.recv(4096)[:2] == struct.pack('>H', i)
    s.close()
print('ok', os.getuid())
`;
  for (const intercept of ['seccomp', 'preload'] as const) {
    it(`a program that dropped its privileges still gets its own DNS queries answered (--intercept ${intercept})`, async () => {
      const r = await exec([PY, '-c', DROPS_PRIVILEGES], ['--intercept', intercept]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe('ok 65534');
      expect(counts(r).udpFlows).toBe(0);
    }, 60_000);
  }

  for (const intercept of ['seccomp', 'preload'] as const) {
    it(`raw UDP queries (--intercept ${intercept}): answered under the query's id with its question as sent, TTLs aged from the cache; hostile datagrams crash nothing`, async () => {
      const r = await exec([PY, '-c', RAW], ['--intercept', intercept]);
      expect(r.code, r.stderr).toBe(0);
      const answers = JSON.parse(r.stdout) as Array<{ flags: string; question_echoed: boolean; addrs: Array<[string, number]>; other: string[] }>;
      expect(answers).toHaveLength(3);
      for (const a of answers) {
        expect(a.question_echoed).toBe(true);
        expect(parseInt(a.flags, 16) & 0x800f).toBe(0x8000); // a response, NOERROR
        expect(a.addrs.map(([address]) => address)).toEqual([db.ip]);
        for (const [, ttl] of a.addrs) expect(ttl).toBeLessThanOrEqual(TTL);
        // What came back for the hostile datagrams is the pod's nameserver's (through a pod flow): never under our ids.
        for (const o of a.other) expect(['0007', '0008', '0009', 'ffff', 'c0c0']).toContain(o.slice(0, 4));
      }
      const c = counts(r);
      expect(c.dnsQueries).toBeGreaterThanOrEqual(3);
      // The proxy survived and answered; only the datagrams that are not plain queries needed a flow in the pod.
      expect(c.udpFlows).toBeLessThanOrEqual(1);
    }, 120_000);
  }
});
