#!/usr/bin/env bash
# What a second worker thread costs per request (issue #16: "CPU per request at --threads 2 no
# more than 10% above --threads 1"): one payguard build run twice, `--threads 1` pinned to
# PROXY_CPU (1) and `--threads 2` on both cores, the same rules, backend (nginx) and client
# (wrk, pinned to CLIENT_CPU, 0), alternated REPS times. Every request is a POST; two routes:
# `plain` (no route rules) and `checkout` (JSON body validated). On this two-core machine the
# two-thread payguard shares core 0 with wrk and nginx, so its req/s says little; its CPU per
# request is the measure (and how much of it is kernel time: cross-core wake-ups).
#
#   benches/load/threads_cost.sh target/release/payguard
#   SECS=5 REPS=5 CONNS=50 benches/load/threads_cost.sh target/release/payguard
#
# Needs nginx, wrk, openssl, curl. Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[threads] $*" >&2; }
die() { log "$*"; exit 1; }
COST_NAME=threads
CONNS=${CONNS:-50}
# shellcheck source=benches/load/cost_lib.sh
source "$ROOT/benches/load/cost_lib.sh"
cp "$ROOT/benches/load/idempotency_rules.toml" "$D/rules/00-bench.toml"
cp "$ROOT/benches/load/idempotency_keys.lua" "$D/keys.lua"

read -r p1_pid p1_port < <(start t1)
pids+=("$p1_pid")
read -r p2_pid p2_port < <(THREADS=2 CPUS="$CLIENT_CPU,$PROXY_CPU" start t2)
pids+=("$p2_pid")
ready() { for _ in $(seq 1 100); do curl -sk -o /dev/null "https://127.0.0.1:$1/plain" -d x && return 0; sleep 0.1; done; return 1; }
ready "$p1_port" || die "payguard did not start: $(cat "$D/t1.log")"
ready "$p2_port" || die "payguard did not start: $(cat "$D/t2.log")"
workers=$(ls "/proc/$p2_pid/task" | while read -r t; do cat "/proc/$p2_pid/task/$t/comm"; done | grep -c tokio-rt-worker || true)
# (tokio names its blocking threads as its workers: at least two.)
((workers >= 2)) || die "the --threads 2 payguard runs $workers worker threads"

out="$D/runs.csv"
: >"$out"
for rep in $(seq 1 "$REPS"); do
    for route in plain checkout; do
        for c in "t1 $p1_pid $p1_port" "t2 $p2_pid $p2_port"; do
            read -r name pid p <<<"$c"
            m=$(measure "$pid" "$p" "$D/keys.lua" "$route")
            read -r us rps _ user _ <<<"$m"
            echo "$route-$name,$rep,$us,$rps,$user" >>"$out"
            log "rep $rep $route --threads ${name#t}: $us µs CPU/request ($user user), $rps req/s"
        done
    done
done

echo "| route | threads | payguard CPU µs/request, median (min–max) | user µs | req/s |"
echo "|---|---|---|---|---|"
for route in plain checkout; do
    for t in 1 2; do
        echo "| $route | $t | $(spread "$route-t$t") | $(col "$route-t$t" 5 | median) | $(col "$route-t$t" 4 | median) |"
    done
done
for route in plain checkout; do
    awk -F, -v a="$route-t2" -v b="$route-t1" '$1 == b { y[$2] = $3 } $1 == a && y[$2] > 0 { print $3 / y[$2] }' "$out" | sort -n |
        awk -v r="$route" '{ v[NR] = $1 } END { if (NR) printf "%s: --threads 2 / --threads 1, CPU per request paired by rep: %.3f (%.3f–%.3f)\n", r,
            NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'
done
