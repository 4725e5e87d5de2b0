#!/usr/bin/env bash
# System calls per request of each proxy (strace -c on the process; nginx: its worker), under
# HTTP/2 (`h2load -c32 -m10`) and HTTP/1.1 keep-alive (`wrk -t1 -c50`), with the configurations
# of benches/load/run.sh (common.sh). What it answers: does a proxy cross into the kernel more
# often per request than its peers, and are the TLS records written to one HTTP/2 client
# coalesced across streams (fewer client-side writes than responses)?
#
# strace slows every proxy down (each system call stops it), so the request rates it runs at
# mean nothing; the counts per request are what it measures.
#
#   benches/load/syscalls.sh
#   PROXIES="haproxy payguard" SECS=4 GUARD=1 PAYGUARD_BIN=target/release/payguard benches/load/syscalls.sh
#
# Needs strace, h2load (nghttp2-client), wrk, nginx, haproxy, openssl, curl. Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
log() { printf '[syscalls %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
SECS=${SECS:-4}
for tool in strace h2load wrk nginx haproxy openssl curl; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
# shellcheck source=common.sh
source "$ROOT/benches/load/common.sh"
find_payguard
bench_init payguard-syscalls
start_proxies

echo "| proxy | protocol | requests | system calls per request | the most frequent, per request |"
echo "|---|---|---|---|---|"
for p in $PROXIES; do
    pid=${PID[$p]}
    # nginx: the worker serves; the master only waits.
    [[ $p == nginx ]] && pid=$(cat /proc/"$pid"/task/*/children | head -n1)
    for proto in h2 h1; do
        [[ $proto == h2 && " $H1_ONLY " == *" $p "* ]] && continue
        out=$TMP/$p-$proto.strace
        strace -c -f -p "$pid" -o "$out" &
        st=$!
        # strace prints nothing once attached: give it a moment (it only undercounts if short).
        sleep 0.5
        if [[ $proto == h2 ]]; then
            res=$(taskset -c "$CLIENT_CPU" h2load -c32 -m10 -D "$SECS" -H "user-agent: $BENCH_UA" "https://127.0.0.1:${PORT[$p]}/" 2>&1)
            n=$(awk '/^requests:/ { print $8 }' <<<"$res")
        else
            res=$(taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d"${SECS}s" -H "User-Agent: $BENCH_UA" "https://127.0.0.1:${PORT[$p]}/" 2>&1)
            n=$(awk '/requests in/ { print $1 }' <<<"$res")
        fi
        kill -INT "$st"
        wait "$st" 2>/dev/null || true
        [[ ${n:-0} -gt 0 ]] || die "$p $proto: no request succeeded: $res"
        # strace -c: "% time  seconds  usecs/call  calls  [errors]  syscall"; the last line is the total.
        total=$(awk -v n="$n" '$NF == "total" { printf "%.2f", $4 / n }' "$out")
        top=$(awk -v n="$n" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ { printf "%s %.3f\n", $NF, $4 / n }' "$out" |
            sort -k2 -rn | head -n4 | awk '{ printf "%s`%s` %s", (NR > 1 ? ", " : ""), $1, $2 }')
        echo "| $p | $proto | $n | $total | $top |"
    done
done
