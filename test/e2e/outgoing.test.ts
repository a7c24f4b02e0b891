/**
 * The outgoing path end to end, on the local node harness, with real programs: the
 * program runs on this machine; its connections, lookups and environment are the pod's.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, Pod } from '../harness/harness.js';
import { buildDemoNode, udpEchoCommand } from '../harness/demo-pods.js';
import { pollUntil, run, startAgentProcess, stopAll, tsmExec, type AgentProcess } from './tsm.js';

let harness: Harness;
let db: Pod;
let api: Pod;
let udp: Pod;
let pg: Pod;
let slow: Pod;
let agent: AgentProcess;
const PY = '/usr/bin/python3';

// Accepts connections and never closes them, not even after the client's FIN.
const HOLD = `
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 7000)); s.listen(16)
held = []
while True:
    c, _ = s.accept(); held.append(c)
`;

// Answers one line of HTTP on 9100; the tests make the port silent or refusing with nft.
const LATE = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 9100)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nlate\\n'); c.close()
`;

/** Replaces the slow pod's filter of incoming port 9100 ('' lets everything in). */
function filterSlowPort(verdict: '' | 'drop' | 'reject with tcp reset'): void {
  const script = [
    'table inet tsmtest {', '  chain in {', '    type filter hook input priority 0; policy accept;', '  }', '}',
    'flush chain inet tsmtest in', ...(verdict ? [`add rule inet tsmtest in tcp dport 9100 counter ${verdict}`] : []), '',
  ].join('\n');
  const r = spawnSync('nsenter', ['-t', String(slow.pid), '-n', 'nft', '-f', '-'], { input: script, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`nft in the slow pod failed: ${r.stderr}`);
}

/** Waits until the slow pod's rule has dropped a SYN: the program's connect is then pending in the pod. */
async function synDropped(): Promise<void> {
  const dropped = () => {
    const r = spawnSync('nsenter', ['-t', String(slow.pid), '-n', 'nft', 'list', 'chain', 'inet', 'tsmtest', 'in'], { encoding: 'utf8' });
    return Number(/counter packets (\d+)/.exec(r.stdout)?.[1] ?? 0) > 0;
  };
  expect(await pollUntil(dropped, 30_000)).toBe(true);
}

beforeAll(async () => {
  ({ harness, db, api } = await buildDemoNode({ name: 'outgoing' }));
  [udp, pg, , slow] = await Promise.all([
    harness.addPod({ name: 'udp', namespace: 'default', command: udpEchoCommand(9999) }),
    harness.addPostgres({ name: 'pg', namespace: 'default' }),
    harness.addPod({ name: 'hold', namespace: 'default', command: [PY, '-c', HOLD], readyPort: 7000 }),
    harness.addPod({ name: 'slow', namespace: 'default', command: [PY, '-c', LATE], readyPort: 9100 }),
  ]);
  agent = await startAgentProcess();
});

afterAll(() => stopAll({ agent, harness }));

const exec = (command: string[], flags: string[] = [], target = `pid/${api.pid}`) => tsmExec(agent.url, target, command, flags, { timeoutMs: 60000 });

describe('outgoing TCP and DNS through the pod', () => {
  it('curl reaches a service by short and full name; without tsmirror it fails', async () => {
    for (const url of ['http://db:8080/', 'http://db.default.svc.cluster.local:8080/', `http://${db.ip}:8080/`]) {
      const r = await exec(['curl', '-sS', '--max-time', '10', url]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('hello from db\n');
      expect(r.code).toBe(0);
    }
    const plain = await run('curl', ['-sS', '--max-time', '5', 'http://db:8080/']);
    expect(plain.code).not.toBe(0);
  });

  it('python urllib and a raw socket, node fetch and net', async () => {
    const urllib = await exec([PY, '-c', "import urllib.request;print(urllib.request.urlopen('http://db:8080/').read().decode(),end='')"]);
    expect(urllib.stdout).toBe('hello from db\n');
    const raw = await exec([PY, '-c', [
      'import socket', "s=socket.create_connection(('db.default.svc.cluster.local',8080))",
      "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')", "d=b''",
      'while True:\n  c=s.recv(4096)\n  if not c: break\n  d+=c',
      "print(s.getpeername()[0]==socket.gethostbyname('db'), d.split(b'\\r\\n\\r\\n',1)[1].decode(),end='')",
    ].join('\n')]);
    expect(raw.stdout).toBe('True hello from db\n');
    const fetchOut = await exec(['node', '-e', "fetch('http://db:8080/').then(r=>r.text()).then(t=>process.stdout.write(t))"]);
    expect(fetchOut.stdout).toBe('hello from db\n');
    const net = await exec(['node', '-e', [
      "let peer;const s=require('net').connect(8080,'db',()=>{peer=s.remoteAddress;s.end('GET / HTTP/1.0\\r\\n\\r\\n')});",
      "let d='';s.on('data',c=>d+=c);s.on('close',()=>process.stdout.write(peer+' '+d.split('\\r\\n\\r\\n')[1]));",
    ].join('')]);
    expect(net.stdout).toBe(`${db.ip} hello from db\n`);
  });

  it('psql (libpq) reaches PostgreSQL in a pod by name', async () => {
    const r = await exec(['psql', '-h', 'pg', '-U', 'postgres', '-Atc', 'select 40 + 2']);
    expect(r.stdout.trim()).toBe('42');
    const full = await exec(['psql', '-h', 'pg.default.svc.cluster.local', '-U', 'postgres', '-Atc', 'select 1']);
    expect(full.stdout.trim()).toBe('1');
  });

  it('a refused port is ECONNREFUSED (curl 7); an unknown name is a fast resolver error (curl 6)', async () => {
    const refused = await exec(['curl', '-sS', '--max-time', '10', 'http://db:8081/']);
    expect(refused.code).toBe(7);
    const unknown = await exec(['curl', '-sS', '--max-time', '10', 'http://no-such-service:8080/']);
    expect(unknown.code).toBe(6);
    expect(unknown.ms).toBeLessThan(8000);
  });

  it('IPv6 works where the pod has it', async () => {
    expect(db.ipv6).toBeDefined();
    const r = await exec(['curl', '-sS', '-g', '--max-time', '10', `http://[${db.ipv6}]:8080/`]);
    expect(r.stdout).toBe('hello from db\n');
  });

  it('targets by container id as well as by pid', async () => {
    const r = await exec(['curl', '-sS', 'http://db:8080/'], [], `container/${api.containerId}`);
    expect(r.stdout).toBe('hello from db\n');
  });
});

describe('UDP', () => {
  it('a python client exchanges datagrams with a UDP echo server in a pod', async () => {
    const r = await exec([PY, '-c', [
      'import socket', 's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)', 's.settimeout(5)',
      "out=[]",
      "for i in range(3):\n  s.sendto(b'ping%d'%i,('udp',9999))\n  d,a=s.recvfrom(100)\n  out.append(d.decode()+'@'+str(a[1]))",
      "print(' '.join(out))",
    ].join('\n')]);
    expect(r.stdout.trim()).toBe('echo:ping0@9999 echo:ping1@9999 echo:ping2@9999');
  });

  // A socket per exchange, as Go's resolver makes one per query: each gets a relay in the
  // CLI (and, for the echo server, a socket in the pod). The program counts the CLI's and the
  // agent's descriptors before, at the peak, and until they are back (30 s at most).
  // Finds the tsmirror CLI (the nearest ancestor running bin/tsmirror.js) and counts its and
  // the agent's descriptors before BODY, at its end, and once they are back (30 s at most).
  const measured = (body: string): string => String.raw`
import socket, os, time, json, struct
def ancestor():  # the tsmirror CLI: the nearest ancestor running bin/tsmirror.js
    pid = os.getppid()
    while pid > 1:
        if open('/proc/%d/cmdline' % pid, 'rb').read().split(b'\0')[1].endswith(b'/bin/tsmirror.js'): return pid
        pid = int(next(l.split()[1] for l in open('/proc/%d/status' % pid) if l.startswith('PPid:')))
    raise SystemExit('no tsmirror ancestor')
cli, agent = ancestor(), int(os.environ['AGENT_PID'])
fds = lambda pid: len(os.listdir('/proc/%d/fd' % pid))
ns = next(l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver'))
echo = socket.gethostbyname('udp')
before = {'cli': fds(cli), 'agent': fds(agent)}
` + body + String.raw`
peak = {'cli': fds(cli), 'agent': fds(agent)}
deadline = time.time() + 30
while (fds(cli) > before['cli'] + 4 or fds(agent) > before['agent'] + 4) and time.time() < deadline: time.sleep(0.2)
print(json.dumps({'before': before, 'peak': peak, 'after': {'cli': fds(cli), 'agent': fds(agent)}}))
`;
  const SOCKET_PER_EXCHANGE = measured(String.raw`
q = struct.pack('>HHHHHH', 7, 0x100, 1, 0, 0, 0) + b'\x02db\x07default\x03svc\x07cluster\x05local\x00' + struct.pack('>HH', 1, 1)
for i in range(40):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.connect((ns, 53)); s.send(q); assert s.recv(512)[:2] == q[:2]; s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
    u.sendto(b'x', (echo, 9999)); u.recvfrom(100); u.close()`);
  // Go's way to learn its outgoing address: a UDP connect, getsockname, close, never a send.
  const CONNECT_ONLY = measured(String.raw`
for i in range(40):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect((echo, 9999)); u.getsockname(); u.close()`);

  for (const [how, flags] of [['the preload', []], ['seccomp', ['--intercept', 'seccomp']]] as const) {
    const cases = [
      // 40 relays to the echo server, which also had 40 sockets in the pod (the 40 DNS
      // sockets share the nameserver's one relay), gone with the program's sockets, long
      // before they would have idled out (120 s)...
      ["a UDP socket's relay and its socket in the pod close soon after the program closes the socket", SOCKET_PER_EXCHANGE],
      // ...and so are flows whose socket never sent: the relay was told which socket it
      // serves (attach), so the sweep could look it up.
      ['a UDP flow through the pod whose socket never sends closes soon after the socket does', CONNECT_ONLY],
    ] as const;
    for (const [what, script] of cases) {
      it(`under ${how}, ${what}`, async () => {
        const r = await exec([PY, '-c', script], [...flags, '--env', `AGENT_PID=${agent.child.pid}`]);
        expect(r.stderr).toBe('');
        const { before, peak, after } = JSON.parse(r.stdout) as Record<'before' | 'peak' | 'after', { cli: number; agent: number }>;
        expect(peak.cli).toBeGreaterThanOrEqual(before.cli + 35);
        expect(peak.agent).toBeGreaterThanOrEqual(before.agent + 35);
        expect(after.cli).toBeLessThanOrEqual(before.cli + 4);
        expect(after.agent).toBeLessThanOrEqual(before.agent + 4);
      }, 90_000);
    }
  }

  it("node's dns.promises.resolve4 (c-ares, its own UDP) resolves a cluster name", async () => {
    const r = await exec(['node', '-e', "require('dns').promises.resolve4('db.default.svc.cluster.local').then(a=>console.log(a.join(',')))"]);
    expect(r.stdout.trim()).toBe(db.ip);
  });
});

describe('children and environment', () => {
  it('bash -c, python subprocess, fork, and env -i are all still intercepted', async () => {
    const bash = await exec(['bash', '-c', 'curl -sS http://db:8080/']);
    expect(bash.stdout).toBe('hello from db\n');
    const sub = await exec([PY, '-c', "import subprocess;print(subprocess.run(['curl','-sS','http://db:8080/'],capture_output=True,env={}).stdout.decode(),end='')"]);
    expect(sub.stdout).toBe('hello from db\n');
    const fork = await exec([PY, '-c', [
      'import os,urllib.request', 'pid=os.fork()',
      "if pid==0:\n  print('child',urllib.request.urlopen('http://db:8080/').read().decode(),end='',flush=True)\n  os._exit(0)",
      'os.waitpid(pid,0)', "print('parent',urllib.request.urlopen('http://db:8080/').read().decode(),end='')",
    ].join('\n')]);
    expect(fork.stdout).toBe('child hello from db\nparent hello from db\n');
    const envi = await exec(['env', '-i', '/usr/bin/curl', '-sS', 'http://db:8080/']);
    expect(envi.stdout).toBe('hello from db\n');
  });

  it("imports the pod's environment, keeping local machine variables", async () => {
    const r = await exec(['sh', '-c', 'echo "$DB_URL|$API_MODE|$HOME|$FROM_FLAG"'], ['--env', 'FROM_FLAG=yes', '--env-exclude', 'API_*']);
    expect(r.stdout.trim()).toBe(`http://db:8080/||${process.env.HOME}|yes`);
    const env = await run(process.execPath, ['bin/tsmirror.js', 'env', '--agent', agent.url, '--target', `pid/${api.pid}`, '--format', 'json']);
    expect(JSON.parse(env.stdout)).toMatchObject({ DB_URL: 'http://db:8080/', API_MODE: 'demo' });
  });

  it('ends when the program exits, even if a pod server keeps its connections open', async () => {
    const r = await tsmExec(agent.url, `pid/${api.pid}`, [PY, '-c', [
      'import socket', "a=socket.create_connection(('hold',7000))", "b=socket.create_connection(('hold',7000))",
      "a.sendall(b'x'); b.shutdown(socket.SHUT_WR); print('done')",
    ].join('\n')], [], { timeoutMs: 20000 });
    expect(r.stdout).toBe('done\n');
    expect(r.signal).toBeNull(); // not killed by the timeout
    expect(r.code).toBe(0);
  });

  it('passes the exit code through, and 128+N for a signal', async () => {
    expect((await exec(['sh', '-c', 'exit 3'])).code).toBe(3);
    expect((await exec(['sh', '-c', 'kill -TERM $$'])).code).toBe(143);
  });
});

describe('non-blocking connects to slow and silent hosts', () => {
  const url = () => `http://${slow.ip}:9100/`;
  afterAll(() => filterSlowPort(''));

  it("a silent host: the program's own connect timeout applies, and its event loop keeps running", async () => {
    filterSlowPort('drop');
    // The pod's kernel would retry the SYN for about two minutes; the program gives up first.
    const curl = await exec(['curl', '-sS', '--connect-timeout', '2', url()]);
    expect(curl.code, curl.stderr).toBe(28);
    expect(curl.ms).toBeLessThan(15000);
    const py = await exec([PY, '-c', `import socket\ntry:\n  socket.create_connection(('${slow.ip}', 9100), timeout=1)\nexcept TimeoutError:\n  print('timed out')`]);
    expect(py.stdout, py.stderr).toBe('timed out\n');
    const node = await exec(['node', '-e', `let ticks = 0; const tick = setInterval(() => ticks++, 50);
      const s = require('net').connect(9100, '${slow.ip}'); s.on('error', () => {});
      setTimeout(() => { console.log(ticks >= 10 ? 'event loop alive' : 'event loop frozen: ' + ticks); s.destroy(); clearInterval(tick); }, 1000);`]);
    expect(node.stdout, node.stderr).toBe('event loop alive\n');
  }, 60000);

  it("under seccomp, a blocking connect waiting for a silent host does not hold up the program's other calls", async () => {
    filterSlowPort('drop');
    // One thread's blocking connect waits (the supervisor's connect of its copy waits for
    // the proxy, which holds it while the pod's SYNs go unanswered); the other's GET must
    // not wait behind it.
    const r = await exec([PY, '-c', [
      'import socket, threading, time, urllib.request',
      'def slow():',
      '  s = socket.socket()',
      '  try:',
      `    s.connect(('${slow.ip}', 9100))`,
      '  except OSError:',
      '    pass',
      'threading.Thread(target=slow, daemon=True).start()',
      'time.sleep(1)',
      'body = urllib.request.urlopen("http://db:8080/", timeout=20).read().decode().strip()',
      'print(body, threading.active_count())',
    ].join('\n')], ['--intercept', 'seccomp']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from db 2\n'); // and the slow thread still waiting
  }, 60000);

  it('a connect the pod completes late completes in the program too', async () => {
    filterSlowPort('drop');
    const pending = exec(['curl', '-sS', '--connect-timeout', '20', url()], ['--verbose']);
    await synDropped(); // the connect is pending in the pod, however slowly the CLI started
    filterSlowPort(''); // the pod's next SYN (about 1 s after the first) gets through
    const curl = await pending;
    expect(curl.stdout, curl.stderr).toBe('late\n');
    expect(curl.stderr).toContain('(1 answered before the pod\'s connect was done)');
  }, 60000);

  it('a connect the pod has refused late is refused in the program', async () => {
    filterSlowPort('drop');
    const pending = exec(['curl', '-sS', '--connect-timeout', '30', url()], ['--verbose']);
    await synDropped(); // the connect is pending in the pod, however slowly the CLI started
    filterSlowPort('reject with tcp reset');
    const curl = await pending;
    expect(curl.code, curl.stderr).toBe(7);
    expect(curl.stderr).toContain('(1 answered before the pod\'s connect was done)');
    expect(curl.ms).toBeLessThan(20000);
  }, 60000);
});

describe('robustness', () => {
  it('32 threads doing 100 connects each all succeed and leak no fds', async () => {
    const r = await exec([PY, '-c', [
      'import os,socket,threading', "before=len(os.listdir('/proc/self/fd'))", 'ok=[0]', 'lock=threading.Lock()',
      "def work():\n  for _ in range(100):\n    s=socket.create_connection(('db',8080),timeout=20)\n    s.close()\n    with lock: ok[0]+=1",
      'ts=[threading.Thread(target=work) for _ in range(32)]', '[t.start() for t in ts]', '[t.join() for t in ts]',
      // join returns before an OS thread has run the TLS destructor that closes its channel
      "import time\nfor _ in range(100):\n  after=len(os.listdir('/proc/self/fd'))\n  if after==before: break\n  time.sleep(0.02)",
      "print(ok[0], after-before)",
    ].join('\n')]);
    expect(r.stderr).toBe('');
    const [ok, leaked] = r.stdout.trim().split(' ').map(Number);
    expect(ok).toBe(3200);
    // The shim opens one channel per thread; threads that ended have closed theirs.
    expect(leaked).toBe(0);
  }, 120000);

  it('a statically linked program is refused under --intercept preload, with the documented message', async () => {
    const r = await exec(['/bin/busybox', 'true'], ['--intercept', 'preload']);
    expect(r.code).toBe(126);
    expect(r.stderr).toMatch(/statically linked/);
    expect(r.stderr).toMatch(/TSM_ERR_STATIC_BINARY/);
  });

  it('SIGKILL of the CLI: the agent drops the session after its reconnect grace and keeps nothing of it', async () => {
    const status = async () => ((await (await fetch(`${agent.url.replace('ws:', 'http:')}/status`)).json()) as { sessions: unknown[] }).sessions.length;
    const fdsBefore = readdirSync(`/proc/${agent.child.pid}/fd`).length;
    const { spawn } = await import('node:child_process');
    // A temp folder of this test's own: any other CLI on the machine (other test files run
    // at the same time) would sweep the killed CLI's private folder from the shared one.
    const tmp = mkdtempSync(join(tmpdir(), 'tsm-outgoing-kill-'));
    const env = { ...process.env, TMPDIR: tmp };
    const cli = spawn(process.execPath, ['bin/tsmirror.js', 'exec', '-q', '--reconnect-grace', '1', '--agent', agent.url, '--target', `pid/${api.pid}`, '--', 'sleep', '60'], { stdio: 'ignore', env });
    await pollUntil(async () => (await status()) !== 0, 10000);
    expect(await status()).toBe(1);
    // The CLI makes its private folder just after the session opens: kill it once it has.
    expect(await pollUntil(() => readdirSync(tmp).some((n) => n.startsWith(`tsmirror-${cli.pid}-`)), 30000, 10)).toBe(true);
    cli.kill('SIGKILL');
    await pollUntil(async () => (await status()) === 0, 15000);
    expect(await status()).toBe(0);
    // Sockets of the session close asynchronously; wait for the count to settle.
    await pollUntil(() => readdirSync(`/proc/${agent.child.pid}/fd`).length <= fdsBefore, 3000, 100);
    expect(readdirSync(`/proc/${agent.child.pid}/fd`).length).toBeLessThanOrEqual(fdsBefore);
    await run('pkill', ['-KILL', '-f', '^sleep 60$']);
    // The killed CLI could not remove its private folder; the next session does.
    const left = () => readdirSync(tmp).filter((n) => n.startsWith(`tsmirror-${cli.pid}-`));
    expect(left()).toHaveLength(1);
    expect((await tsmExec(agent.url, `pid/${api.pid}`, ['true'], [], { env })).code).toBe(0);
    expect(left()).toHaveLength(0);
    rmSync(tmp, { recursive: true, force: true });
  });

  /** Whether `pid` has ended (gone, or a zombie nobody has reaped yet). */
  const ended = (pid: number): boolean => {
    try {
      return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return true;
    }
  };
  /** The CLI's child once it runs `comm` (the launcher has become the program). */
  const programOf = (cliPid: number, comm: string): number | undefined => {
    const children = readFileSync(`/proc/${cliPid}/task/${cliPid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return children.find((pid) => existsSync(`/proc/${pid}/comm`) && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm);
  };

  for (const flags of [[], ['--watch', '.']]) {
    it(`SIGKILL of the CLI takes its program with it within 1 s${flags.length ? ' (--watch)' : ''}`, async () => {
      const { spawn } = await import('node:child_process');
      const cli = spawn(process.execPath, ['bin/tsmirror.js', 'exec', '-q', ...flags, '--agent', agent.url, '--target', `pid/${api.pid}`, '--', 'sleep', '600'], { stdio: 'ignore' });
      let program: number | undefined;
      await pollUntil(() => (program = programOf(cli.pid ?? 0, 'sleep')) !== undefined, 15000, 20);
      expect(program).toBeDefined();
      const pid = program ?? 0;
      cli.kill('SIGKILL');
      const killedAt = Date.now();
      const gone = await pollUntil(() => ended(pid), 5000, 10); // bounded: a hang detector
      const ms = Date.now() - killedAt;
      if (!gone) process.kill(pid, 'SIGKILL');
      expect(gone).toBe(true);
      expect(ms).toBeLessThan(1000);
    }, 30000);
  }
});
