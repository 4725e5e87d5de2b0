#!/usr/bin/env bash
# Instructions per request of `POST /plain` and `POST /idem` (the same route with
# `[route.idempotency]`, every request a first attempt with a fresh key), by valgrind's
# callgrind: a count, so two builds compare exactly on a noisy machine. Prints
# "route requests instructions/request callgrind-file", twice per route, alternated.
#
#   benches/load/idempotency_callgrind.sh target/release/payguard
#   ROUTES="checkout checkout-idem" benches/load/idempotency_callgrind.sh target/release/payguard
#
# Valgrind hides SHA-NI: the two SHA-256 digests of an attempt run the portable code here
# (~10k instructions), a few hundred nanoseconds less on the real CPU. Needs valgrind, nginx,
# wrk, openssl, curl. Loopback only; the temporary directory is left for callgrind_annotate.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[idempotency-callgrind] $*" >&2; }
die() { log "$*"; exit 1; }
command -v valgrind >/dev/null || die "missing valgrind"
COST_NAME=cgidem KEEP_DIR=1
# shellcheck source=benches/load/cost_lib.sh
source "$ROOT/benches/load/cost_lib.sh"
cp "$ROOT/benches/load/idempotency_rules.toml" "$D/rules/00-bench.toml"
cp "$ROOT/benches/load/idempotency_keys.lua" "$D/keys.lua"
PORT=$(port)
config payguard "$PORT"
valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" "$bin" run --config "$D/payguard.toml" --threads 1 >"$D/log" 2>&1 &
vg=$!
pids+=("$vg")
for _ in $(seq 1 300); do curl -sk -o /dev/null "https://127.0.0.1:$PORT/plain" -d x && break; sleep 0.2; done
read -r -a routes <<<"${ROUTES:-plain idem}"
for r in "${routes[@]}"; do wrk -t1 -c4 -d3s -s "$D/keys.lua" "https://127.0.0.1:$PORT" -- "/$r" >/dev/null; done
for r in "${routes[@]}" "${routes[@]}"; do
    callgrind_control -z "$vg" >/dev/null
    res=$(wrk -t1 -c4 -d8s -s "$D/keys.lua" "https://127.0.0.1:$PORT" -- "/$r")
    callgrind_control -d "$r" "$vg" >/dev/null
    n=$(awk '/requests in/ { print $1 }' <<<"$res")
    f=$(ls -t "$D"/cg.out.* | head -n1)
    echo "$r $n $(($(sed -n 's/^summary: //p' "$f") / n)) $f"
done
