#!/bin/bash
# Runs the shim's checks against fakeproxy.py with real programs (C test, curl, python,
# node). usage: native/shim/test/run.sh [path/to/libtsmirror.so]
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
so=${1:-$root/build/Release/libtsmirror.so}
[ -f "$so" ] || { echo "no shim at $so (build with: npx node-gyp rebuild)"; exit 2; }
work=$(mktemp -d /tmp/tsmirror-shimtest.XXXXXX)
sock=$work/proxy.sock
proxy_pid=
cleanup() { [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

/usr/bin/python3 "$here/fakeproxy.py" "$sock" "$work/proxy.log" > "$work/proxy.out" 2>&1 &
proxy_pid=$!
for _ in $(seq 50); do grep -q ready "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done

gcc -O1 -Wall -Wextra -Werror -Wno-unused-result -o "$work/shimtest" "$here/shimtest.c" -lpthread || exit 2

shim_env=(LD_PRELOAD="$so" TSMIRROR_SHIM="$so" TSMIRROR_SOCK="$sock" TSMIRROR_SHIM_LOG="$work/shim.log")
failed=0
check() { # name, expected substring, command...
  local name=$1 want=$2; shift 2
  local out; out=$(timeout 60 env "${shim_env[@]}" "$@" 2>&1)
  if [[ "$out" == *"$want"* ]]; then echo "ok   $name"; else echo "FAIL $name: $out"; failed=1; fi
}

# Sample replies of every shape, written from the TypeScript definition of the wire
# (protocol/shim-wire.ts): the fuzzers check the shim accepts each, then mutate them.
node "$root/dist/protocol/shim-wire-gen.js" seeds "$work/seeds" || { echo "cannot write the seeds (build dist/ with: npx tsc -p tsconfig.json)"; exit 2; }
gcc -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror \
  -o "$work/fuzz_proto" "$here/fuzz_proto.c" "$here/../proto.c" "$here/../replies.c" "$here/../msgpack.c" -lpthread || exit 2
"$work/fuzz_proto" 200000 "$work/seeds" && echo "ok   response parsers accept every reply shape from TypeScript and survive random and mutated frames" || failed=1
gcc -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror \
  -o "$work/fuzz_fsproto" "$here/fuzz_fsproto.c" "$here/../fsproto.c" "$here/../replies.c" "$here/../msgpack.c" -lpthread || exit 2
"$work/fuzz_fsproto" 200000 "$work/seeds" && echo "ok   file response parsers accept every reply shape from TypeScript and survive random and mutated frames" || failed=1

gcc -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror \
  -o "$work/dump_requests" "$here/dump_requests.c" "$here/../proto.c" "$here/../fsproto.c" "$here/../replies.c" \
  "$here/../msgpack.c" -lpthread || exit 2
mkdir -p "$work/requests" && "$work/dump_requests" "$work/requests" >/dev/null &&
  node "$here/check-requests.mjs" "$root" "$work/requests" &&
  echo "ok   every request the shim sends decodes with the TypeScript definition" || failed=1

timeout 300 env "${shim_env[@]}" "$work/shimtest" || failed=1
timeout 60 env LD_PRELOAD="$so" TSMIRROR_SOCK="$work/nobody.sock" "$work/shimtest" unreachable | grep -v '^PASSED' || failed=1
n_before=$(wc -l < "$work/proxy.log")
timeout 60 env LD_PRELOAD="$so" "$work/shimtest" inert | grep -v '^PASSED' || failed=1
[ "$(wc -l < "$work/proxy.log")" = "$n_before" ] && echo "ok   inert shim asked the proxy nothing" || { echo "FAIL inert shim talked to the proxy"; failed=1; }

check "curl by IP" "hello from remote /ip" curl -sS http://10.250.0.1/ip
check "curl by name" "hello from remote /name" curl -sS http://db/name
check "curl refused" "(7)" curl -sS http://10.250.0.1:81/
check "env -i curl" "hello from remote /envi" env -i curl -sS http://db/envi
check "bash -c curl" "hello from remote /bash" bash -c 'curl -sS http://web/bash'
check "python urllib" "hello from remote /py" /usr/bin/python3 -c \
  "import urllib.request; print(urllib.request.urlopen('http://db/py').read().decode())"
check "python subprocess env={}" "hello from remote /sub" /usr/bin/python3 -c \
  "import subprocess; print(subprocess.run(['curl','-sS','http://db/sub'], env={}, capture_output=True).stdout.decode())"
check "python non-blocking connect" "EINPROGRESS 0 ('10.250.0.1', 7) ('10.244.1.5'" /usr/bin/python3 -c "
import socket, errno, select
s = socket.socket(); s.setblocking(False)
r = s.connect_ex(('10.250.0.1', 7)); select.select([], [s], [], 5)
print(errno.errorcode[r], s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), s.getpeername(), s.getsockname())"
check "python UDP" "(b'x', ('10.250.0.1', 7))" /usr/bin/python3 -c "
import socket; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(b'x', ('10.250.0.1', 7)); print(u.recvfrom(10))"
check "python 16 threads x 50 connects, no fd leak" "ok 0 True" /usr/bin/python3 -c "
import os, socket, threading
def n(): return len(os.listdir('/proc/self/fd'))
bad = []
def work():
    for _ in range(50):
        try:
            s = socket.create_connection(('10.250.0.1', 7), timeout=5); s.sendall(b'p')
            if s.recv(1) != b'p': bad.append(1)
            s.close()
        except OSError as e: bad.append(e)
before = n(); ts = [threading.Thread(target=work) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
# Python's join returns before the OS thread has run its TLS destructors (which close
# the thread's channel to the proxy), so give exiting threads a moment.
import time
for _ in range(100):
    if n() == before: break
    time.sleep(0.02)
print('ok', len(bad), n() == before)"
check "node fetch/net/dgram/dns" "fetch 200 resolve4 10.250.0.1 lookup 10.250.0.1 dgram 10.250.0.1:7 net ECONNREFUSED" node -e "
const dgram = require('node:dgram'), dns = require('node:dns'), net = require('node:net');
(async () => {
  const r = await fetch('http://db/x');
  const out = ['fetch', r.status, 'resolve4', (await dns.promises.resolve4('any.example'))[0],
               'lookup', (await dns.promises.lookup('db')).address];
  const u = dgram.createSocket('udp4');
  out.push('dgram', await new Promise(res => { u.on('message', (m, ri) => res(ri.address + ':' + ri.port)); u.send('d', 7, '10.250.0.1'); }));
  u.close();
  out.push('net', await new Promise(res => net.connect(81, '10.250.0.1').on('error', e => res(e.code))));
  console.log(out.join(' '));
})();"
check "node child_process env {}" "hello from remote /nchild" node -e "
console.log(require('node:child_process').execFileSync('curl', ['-sS', 'http://db/nchild'], {env: {PATH: process.env.PATH}}).toString())"

if [ $failed = 0 ]; then echo "ALL PASSED"; else echo "SOME FAILED"; fi
exit $failed
