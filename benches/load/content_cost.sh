#!/usr/bin/env bash
# What the content guards of issue #15 cost: payguard's CPU time per request on a JSON POST route
# with all four on (defaults.hosts, card_data request = "reject" / response = "mask",
# [route.origin], [route.injection] on every value) against the same route without them, in one
# payguard process, alternated REPS times. Both routes validate the JSON body (content type and
# two fields), as a checkout route does; `defaults.hosts` is on for both (it is a defaults-level
# setting; its cost is one hash lookup per request).
#
#   SECS=5 REPS=5 CONNS=16 benches/load/content_cost.sh target/release/payguard
#
# Prints a table of medians, their ratio, and the ratio paired by rep (the median of each
# guarded rep against the checkout rep before it: on a noisy machine, more reps of fewer
# seconds, SECS=3 REPS=15, steady it).
#
# ROUTES="checkout guarded card origin injection" adds a route per guard, each alone, to see
# what each costs. PERF_ROUTE=NAME records a profile of payguard during that route's first run
# (perf record -g, to PERF_OUT, default /tmp/content.perf).
#
# Needs nginx (the backend), wrk, openssl, curl. Loopback only. payguard runs on one tokio
# thread pinned to PROXY_CPU (1); wrk and nginx on CLIENT_CPU (0).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[content] $*" >&2; }
die() { log "$*"; exit 1; }
COST_NAME=content
# shellcheck source=benches/load/cost_lib.sh
source "$ROOT/benches/load/cost_lib.sh"
# route NAME [GUARD...]: a JSON POST route with the same validation, plus the named guards.
route() {
    local name=$1 g
    shift
    printf '\n[[route]]\nname = "%s"\nmatch = { path = "/%s", methods = ["POST"] }\n' "$name" "$name"
    printf '[route.validate]\ncontent_type = ["application/json"]\nfields = [\n'
    printf '  { at = "/amount", type = "integer", min = 1 },\n'
    printf '  { at = "/currency", type = "string", pattern = "^[A-Z]{3}$" },\n]\n'
    for g in "$@"; do
        case $g in
            card) printf '[route.card_data]\nrequest = "reject"\nresponse = "mask"\n' ;;
            origin) printf '[route.origin]\nallow = ["https://pay.example.net"]\n' ;;
            injection) printf '[route.injection]\n' ;;
        esac
    done
}
{
    printf '[defaults]\nhosts = ["localhost", "127.0.0.1"]\n'
    route checkout
    route guarded card origin injection
    for one in card origin injection; do route "$one" "$one"; done
} >"$D/rules/00-bench.toml"

# A storefront's order: a name with an apostrophe, an address, a note, amounts; a browser's
# same-origin header.
cat >"$D/body.lua" <<'L'
local path = "/"
function init(args) path = args[1] end
wrk.method = "POST"
wrk.body = '{"amount":1250,"currency":"EUR","order":"A-1029-55","customer":{"name":"Ana O\'Brien","email":"ana@example.com"},"shipping":{"line1":"Flat 3 #12, 221B Baker St.","city":"London","zip":"NW1 6XE"},"note":"leave at the door","items":[{"sku":"TS-42","qty":2,"price":625}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
function request() return wrk.format(nil, path) end
L

read -r pg_pid pg_port < <(start memory "")
pids+=("$pg_pid")
ready() { for _ in $(seq 1 100); do curl -sk -o /dev/null "https://127.0.0.1:$1/checkout" -d x && return 0; sleep 0.1; done; return 1; }
ready "$pg_port" || die "payguard did not start: $(cat "$D/memory.log")"
contestants=()
for r in ${ROUTES:-checkout guarded}; do contestants+=("$r $pg_pid $pg_port"); done
WARM=${WARM:-5}
for c in "${contestants[@]}"; do
    read -r name pid p <<<"$c"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${WARM}s" -s "$D/body.lua" "https://127.0.0.1:$p" -- "/$name" >/dev/null
done

out="$D/runs.csv"
: >"$out"
for rep in $(seq 1 "$REPS"); do
    for c in "${contestants[@]}"; do
        read -r name pid p <<<"$c"
        m=$(measure "$pid" "$p" "$D/body.lua" "$name")
        read -r us rps _ <<<"$m"
        echo "$name,$rep,$us,$rps" >>"$out"
        log "rep $rep $name: $us µs CPU/request, $rps req/s"
    done
done

echo "| route | payguard CPU µs/request, median (min–max) | req/s, median |"
echo "|---|---|---|"
for c in "${contestants[@]}"; do
    read -r name _ <<<"$c"
    echo "| $name | $(spread "$name") | $(col "$name" 4 | median) |"
done
awk -v x="$(col guarded 3 | median)" -v y="$(col checkout 3 | median)" 'BEGIN { printf "guarded / checkout: %.3f\n", x / y }'
# The same ratio rep by rep (each guarded run against the checkout run just before it), whose
# median is less moved by the machine's load changing between reps.
awk -F, '$1 == "checkout" { c[$2] = $3 } $1 == "guarded" && c[$2] > 0 { print $3 / c[$2] }' "$out" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) printf "guarded / checkout, paired by rep: %.3f (%.3f–%.3f)\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'
