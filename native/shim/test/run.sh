#!/bin/bash
# Runs the shim's checks against the fake session proxy (test/shim/fake-proxy.ts, run from
# dist/) with real programs (C test, curl, python, node).
# usage: native/shim/test/run.sh [path/to/libtsmirror.so]
#
# Prints one machine-readable line per check, which test/shim/shim.test.ts reads:
#   ok<TAB>SECTION / NAME
#   FAIL<TAB>SECTION / NAME<TAB>what was seen
# Any other line (build output, summaries) is for people.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
so=${1:-$root/build/Release/libtsmirror.so}
proxy=$root/dist/test/shim/fake-proxy.js
[ -f "$so" ] || { echo "no shim at $so (build with: npm run build:native)"; exit 2; }
[ -f "$proxy" ] || { echo "no fake proxy at $proxy (build with: npx tsc -p tsconfig.json)"; exit 2; }
work=$(mktemp -d /tmp/tsmirror-shimtest.XXXXXX)
sock=$work/proxy.sock
proxy_pid=
cleanup() { [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

node "$proxy" "$sock" "$work/proxy.log" > "$work/proxy.out" 2>&1 &
proxy_pid=$!
for _ in $(seq 50); do grep -q ready "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/proxy.out" || { echo "the fake proxy did not start:"; cat "$work/proxy.out"; exit 2; }

gcc -O1 -Wall -Wextra -Werror -Wno-unused-result -o "$work/shimtest" "$here/shimtest.c" -lpthread -lresolv || exit 2

shim_env=(LD_PRELOAD="$so" TSMIRROR_SHIM="$so" TSMIRROR_SOCK="$sock" TSMIRROR_SHIM_LOG="$work/shim.log")
failed=0
report() { # ok(0|1), name, detail
  if [ "$1" = 1 ]; then printf 'ok\t%s\n' "$2"; else printf 'FAIL\t%s\t%s\n' "$2" "${3//$'\n'/ | }"; failed=1; fi
}
check() { # name, expected substring, command...
  local name=$1 want=$2; shift 2
  local out; out=$(timeout 60 env "${shim_env[@]}" "$@" 2>&1)
  if [[ "$out" == *"$want"* ]]; then report 1 "programs / $name"; else report 0 "programs / $name" "$out"; fi
}
# shimtest prints its own lines; this says whether it got to the end (status 0 or 1).
finished() { # name, status
  if [ "$2" -le 1 ]; then report 1 "runs / $1"; else report 0 "runs / $1" "exit status $2"; fi
  [ "$2" = 0 ] || failed=1
}

# Sample replies of every shape, written from the TypeScript definition of the wire
# (protocol/shim-wire.ts): the fuzzers check the shim accepts each, then mutate them.
node "$root/dist/protocol/shim-wire-gen.js" seeds "$work/seeds" || { echo "cannot write the seeds (build dist/ with: npx tsc -p tsconfig.json)"; exit 2; }
gcc -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror \
  -o "$work/fuzz_proto" "$here/fuzz_proto.c" "$here/../proto.c" "$here/../addr.c" "$here/../replies.c" "$here/../msgpack.c" -lpthread || exit 2
"$work/fuzz_proto" 200000 "$work/seeds"; status=$?
report $((status == 0)) "fuzz / response parsers accept every reply shape from TypeScript and survive random and mutated frames" "exit status $status"
gcc -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror \
  -o "$work/fuzz_fsproto" "$here/fuzz_fsproto.c" "$here/../fsproto.c" "$here/../replies.c" "$here/../msgpack.c" -lpthread || exit 2
"$work/fuzz_fsproto" 200000 "$work/seeds"; status=$?
report $((status == 0)) "fuzz / file response parsers accept every reply shape from TypeScript and survive random and mutated frames" "exit status $status"

gcc -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Wall -Wextra -Werror \
  -o "$work/dump_requests" "$here/dump_requests.c" "$here/../proto.c" "$here/../addr.c" "$here/../fsproto.c" "$here/../replies.c" \
  "$here/../msgpack.c" -lpthread || exit 2
mkdir -p "$work/requests"
out=$("$work/dump_requests" "$work/requests" 2>&1 >/dev/null && node "$here/check-requests.mjs" "$root" "$work/requests" 2>&1); status=$?
report $((status == 0)) "fuzz / every request the shim sends decodes with the TypeScript definition" "$out"

timeout 300 env "${shim_env[@]}" "$work/shimtest"; finished "shimtest with the fake proxy finishes" $?
timeout 60 env LD_PRELOAD="$so" TSMIRROR_SOCK="$work/nobody.sock" "$work/shimtest" unreachable
finished "shimtest with an unreachable proxy finishes" $?
n_before=$(wc -l < "$work/proxy.log")
timeout 60 env LD_PRELOAD="$so" "$work/shimtest" inert; finished "shimtest without TSMIRROR_SOCK finishes" $?
n_after=$(wc -l < "$work/proxy.log")
report $((n_after == n_before)) "inert / the shim asked the proxy nothing" "the proxy logged $((n_after - n_before)) request(s)"

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
check "python: SIGALRM interrupts a blocking connect the pod never answers" "interrupted under 10 s, then ok" /usr/bin/python3 -c "
import signal, socket, time
class Alarm(Exception): pass
def on_alarm(*_): raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)
s = socket.socket(); t = time.monotonic(); signal.alarm(1)
try:
    s.connect(('10.250.0.3', 7)); print('connected?')
except Alarm:
    took = time.monotonic() - t
    # The next request opens a new channel: the dropped one's answer must not be read.
    e = socket.create_connection(('10.250.0.1', 7), timeout=5); e.sendall(b'n')
    print('interrupted', 'under 10 s' if took < 10 else 'after %.1f s' % took, end=', ')
    print('then ok' if e.recv(1) == b'n' else 'then no echo')
except OSError as err: print('error', err)"
check "python: with SA_RESTART a blocking connect goes on waiting" "restarted 1 b'r' True" /usr/bin/python3 -c "
import signal, socket, time
hits = []
signal.signal(signal.SIGALRM, lambda *_: hits.append(1)); signal.siginterrupt(signal.SIGALRM, False)
s = socket.socket(); t = time.monotonic(); signal.alarm(1)
s.connect(('10.250.0.4', 7)); s.sendall(b'r')
print('restarted', len(hits), s.recv(1), time.monotonic() - t > 2)"
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

# What the preload cannot see is reported (notice), once per kind; a program that uses
# libc reports nothing.
gcc -O1 -Wall -Wextra -Werror -o "$work/bypass" "$here/bypass.c" || exit 2
notices() { grep -c "\"op\":\"notice\",\"what\":\"$1\"" "$work/proxy.log"; }
n_io=$(notices io_uring); n_raw=$(notices raw-connect)
out=$(timeout 60 env "${shim_env[@]}" "$work/bypass" plain 2>&1)
report $(( $(notices io_uring) == n_io && $(notices raw-connect) == n_raw )) "unseen / a program that connects through libc reports nothing" "$out"
out=$(timeout 60 env "${shim_env[@]}" "$work/bypass" bypass 2>&1)
report $(( $(notices io_uring) == n_io + 1 )) "unseen / io_uring_setup through syscall() is reported once" \
  "$out; $(( $(notices io_uring) - n_io )) io_uring notice(s)"
report $(( $(notices raw-connect) == n_raw + 1 )) "unseen / connect through syscall() is reported once" \
  "$out; $(( $(notices raw-connect) - n_raw )) raw-connect notice(s)"

bad_frames=$(grep -c "sent a bad frame" "$work/proxy.log")
report $((bad_frames == 0)) "wire / every frame the shim sent is valid for protocol/shim-wire.ts" \
  "$(grep -m3 "sent a bad frame" "$work/proxy.log")"

if [ $failed = 0 ]; then echo "ALL PASSED"; else echo "SOME FAILED"; fi
exit $failed
