#!/usr/bin/env bash
# What `[route.idempotency]` costs: payguard's CPU time per request on an idempotent POST route
# against the same route without it, alternated REPS times, every request a first attempt with a
# fresh key. Two pairs: a bare route (`plain` / `idem`), and a typical payment route that
# validates its JSON body (`checkout` / `checkout-idem`). With redis-server installed, a third
# payguard keeps its keys on Redis: its CPU per request, and the Redis script calls per request
# (round trips). Each row also shows the client core's idle share and the rescheduling and
# function-call interrupts (IPIs) it took per request: at saturation a proxy that is slower per
# request leaves that core idle more often, and waking a task on an idle core costs the waker
# more kernel time (BENCHMARKS.md, "Idempotency (issue #14), 2026-12-08").
#
# Each idempotent measurement sees the store in its steady state: the same route runs WARM_EACH
# seconds (unmeasured) right before it, longer than `retention`, so the keys that run out during
# the measurement are its own route's, made at its own rate (one freed per key made). The routes
# without idempotency run in a payguard of their own (same binary, rules and pinning), so no
# key made by another route is freed on their time. SHARED=1 runs all four in one payguard
# without those warm-ups, as this script did before: a route is then charged for expired keys
# of the route measured before it.
#
#   benches/load/idempotency_cost.sh target/release/payguard
#   SECS=5 REPS=5 CONNS=16 WARM_EACH=10 benches/load/idempotency_cost.sh target/release/payguard
#   REDIS=0 ...    # the memory rows only
#
# Needs nginx (the backend), wrk, openssl, curl; redis-server for the Redis rows. Loopback only.
# payguard runs on one tokio thread pinned to PROXY_CPU (1); wrk, nginx and Redis to CLIENT_CPU (0).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[idempotency] $*" >&2; }
die() { log "$*"; exit 1; }
COST_NAME=idem
# shellcheck source=benches/load/cost_lib.sh
source "$ROOT/benches/load/cost_lib.sh"
cp "$ROOT/benches/load/idempotency_rules.toml" "$D/rules/00-bench.toml"

# Every request a first attempt: a key no run has used.
cp "$ROOT/benches/load/idempotency_keys.lua" "$D/keys.lua"
if [[ -n ${PACE_MS:-} ]]; then
    # Below saturation: each connection waits PACE_MS after each answer, so both routes see
    # about the same request rate and idle peers, and CPU per request compares like for like.
    echo "function delay() return $PACE_MS end" >>"$D/keys.lua"
fi

read -r pg_pid pg_port < <(start memory "[state]
max_idempotency_keys = 100000000")
pids+=("$pg_pid")
ready() { for _ in $(seq 1 100); do curl -sk -o /dev/null "https://127.0.0.1:$1/plain" -d x && return 0; sleep 0.1; done; return 1; }
ready "$pg_port" || die "payguard did not start: $(cat "$D/memory.log")"
if [[ -n ${SHARED:-} ]]; then
    pp_pid=$pg_pid pp_port=$pg_port
else
    read -r pp_pid pp_port < <(start plain)
    pids+=("$pp_pid")
    ready "$pp_port" || die "payguard did not start: $(cat "$D/plain.log")"
fi
contestants=("plain $pp_pid $pp_port" "idem $pg_pid $pg_port" "checkout $pp_pid $pp_port" "checkout-idem $pg_pid $pg_port")
redis_pid=""
if [[ ${REDIS:-1} != 0 ]] && command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    RPORT=$(port)
    taskset -c "$CLIENT_CPU" redis-server --port "$RPORT" --save "" --appendonly no --daemonize no >"$D/redis.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    for _ in $(seq 1 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    read -r pr_pid pr_port < <(start redis "[state]
backend = \"redis\"
redis_url = \"redis://127.0.0.1:$RPORT\"")
    pids+=("$pr_pid")
    ready "$pr_port" || die "payguard (redis) did not start: $(cat "$D/redis.log")"
    contestants+=("idem-redis $pr_pid $pr_port")
else
    log "no redis-server (or REDIS=0): Redis rows skipped"
fi
script_calls() { redis-cli -p "$RPORT" info commandstats | awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ { n += $3 } END { print n + 0 }'; }

# warm NAME PORT ROUTE SECS: unmeasured requests to ROUTE.
warm() {
    log "warm-up $1 for ${4}s"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${4}s" -s "$D/keys.lua" "https://127.0.0.1:$2" -- "/$3" >/dev/null
}
WARM_EACH=${WARM_EACH:-10}
if [[ -n ${SHARED:-} ]]; then
    # Every store reaches its steady size (keys made = keys swept) once, first.
    for c in "${contestants[@]}"; do
        read -r name pid p <<<"$c"
        [[ $name == idem* ]] && warm "$name" "$p" idem "${WARM:-17}"
    done
fi

out="$D/runs.csv"
: >"$out"
for rep in $(seq 1 "$REPS"); do
    for c in "${contestants[@]}"; do
        read -r name pid p <<<"$c"
        route=${name%-redis}
        [[ -z ${SHARED:-} && $name == *idem* ]] && warm "$name" "$p" "$route" "$WARM_EACH"
        calls0=0
        [[ $name == *redis ]] && calls0=$(script_calls)
        m=$(measure "$pid" "$p" "$D/keys.lua" "$route")
        read -r us rps reqs user idle ipis <<<"$m"
        per_call="-"
        [[ $name == *redis ]] && per_call=$(awk -v a="$calls0" -v b="$(script_calls)" -v n="$reqs" 'BEGIN { printf "%.2f", (b - a) / n }')
        echo "$name,$rep,$us,$rps,$per_call,$user,$idle,$ipis" >>"$out"
        log "rep $rep $name: $us µs CPU/request ($user user), $rps req/s, redis scripts/request $per_call," \
            "client core idle $idle%, its IPIs/request $ipis"
    done
done

echo "| route | payguard CPU µs/request, median (min–max) | user µs | req/s | Redis scripts/request | client core idle % | its IPIs/request |"
echo "|---|---|---|---|---|---|---|"
for c in "${contestants[@]}"; do
    read -r name _ <<<"$c"
    echo "| $name | $(spread "$name") | $(col "$name" 6 | median) | $(col "$name" 4 | median) | $(col "$name" 5 | head -1) |" \
        "$(col "$name" 7 | median) | $(col "$name" 8 | median) |"
done
for pair in "idem plain" "idem-redis plain" "checkout-idem checkout"; do
    read -r a b <<<"$pair"
    [[ -n $(col "$a" 3) ]] || continue
    awk -v x="$(col "$a" 3 | median)" -v y="$(col "$b" 3 | median)" -v a="$a" -v b="$b" 'BEGIN { printf "%s / %s: %.3f\n", a, b, x / y }'
    # Rep by rep (each against its partner of the same rep), less moved by the machine's load
    # changing between reps; and the user time alone.
    for c in 3 6; do
        awk -F, -v a="$a" -v b="$b" -v c="$c" '$1 == b { y[$2] = $c } $1 == a && y[$2] > 0 { print $c / y[$2] }' "$out" | sort -n |
            awk -v a="$a" -v b="$b" -v what="$([[ $c == 3 ]] && echo CPU || echo "user CPU")" '{ v[NR] = $1 } END {
                if (NR) printf "%s / %s, %s paired by rep: %.3f (%.3f–%.3f)\n", a, b, what,
                    NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'
    done
done
