#!/usr/bin/env bash
# Tail latency at a fixed request rate: payguard vs nginx vs haproxy, side by side, same backend,
# same RSA-2048 certificate, same cores, same configurations as benches/load/run.sh (common.sh).
#
# wrk is closed-loop and understates the tail; this uses an open-loop generator, `oha -q RATE
# --latency-correction` (latency counted from when each request was due, so a stall is charged to
# every request that waited behind it), at a rate every contestant can sustain: by default
# RATE_FRACTION (50%) of the SLOWEST contestant's maximum throughput, measured first by
# benches/load/run.sh (wrk for HTTP/1.1, h2load for HTTP/2) with the same GUARD setting.
#
#   benches/load/latency.sh                      # max first (~3 reps), then 5 interleaved reps
#   RATE=20000 benches/load/latency.sh           # skip the max measurement, same rate for h1 and h2
#   PAYGUARD_BIN=target/release/payguard REPS=1 DURATION=3 MAX_REPS=1 MAX_DURATION=3 benches/load/latency.sh
#
# Knobs (environment):
#   REPS=5            interleaved repetitions (nginx, haproxy, payguard, nginx, ...) per protocol
#   DURATION=10       seconds per oha run
#   GUARD=1           1: every proxy applies IP allow + never-triggering rate limit + header
#                     validation (see common.sh); 0: plain proxying
#   RATE              fixed rate (req/s) for both protocols; RATE_H1 / RATE_H2 set one each.
#                     Unset: RATE_FRACTION x the slowest contestant's median max throughput
#   RATE_FRACTION=0.5
#   MAX_REPS=3, MAX_DURATION=10   the max-throughput run (benches/load/run.sh REPS/DURATION)
#   MAX_CSV           raw.csv of an earlier benches/load/run.sh with the same GUARD and H2: take the
#                     max throughput from it instead of measuring it again
#   CONNS=50          oha -c for HTTP/1.1 (keep-alive)
#   H2=1              0: HTTP/1.1 only
#   H2_CONNS=10, H2_PARALLEL=5    oha --http2 -c -p (50 concurrent streams)
#   WARMUP=2          seconds of un-measured wrk load per proxy before the first rep (0: none)
#   OHA               oha binary (default: oha on PATH, else ~/.cargo/bin/oha); `cargo install oha`
#   OHA_THREADS=1     oha --worker-threads (oha is pinned to CLIENT_CPU anyway)
#   PROXIES, PROXY_CPU=1, CLIENT_CPU=0, *_PORT, QUIET_MAX=15, QUIET_TIMEOUT=300, KEEP_TMP,
#   PAYGUARD_BIN, BUILD   as in benches/load/run.sh (README.md)
#   RESULTS_DIR       default benches/load/results/latency-<UTC timestamp>
#
# Output: markdown tables (stdout and RESULTS_DIR/summary.md): per proxy and protocol the target
# and achieved rate, p50/p99/p99.9/max, errors, non-2xx, proxy and oha CPU; ratios payguard/peer.
# Every run in RESULTS_DIR/raw.csv, oha's JSON per run, the max run in RESULTS_DIR/max/.
# Only 127.0.0.1 is used; everything started is stopped on exit.
set -euo pipefail

REPS=${REPS:-5}
DURATION=${DURATION:-10}
GUARD=${GUARD:-1}
RATE=${RATE:-}
RATE_H1=${RATE_H1:-$RATE}
RATE_H2=${RATE_H2:-$RATE}
RATE_FRACTION=${RATE_FRACTION:-0.5}
MAX_REPS=${MAX_REPS:-3}
MAX_CSV=${MAX_CSV:-}
MAX_DURATION=${MAX_DURATION:-10}
CONNS=${CONNS:-50}
H2=${H2:-1}
H2_CONNS=${H2_CONNS:-10}
H2_PARALLEL=${H2_PARALLEL:-5}
WARMUP=${WARMUP:-2}
OHA_THREADS=${OHA_THREADS:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/benches/load/results/latency-$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[latency %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z ${OHA:-} ]]; then
    OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
fi
[[ -x $OHA ]] || die "oha not found (cargo install oha, or OHA=/path/to/oha)"
for tool in nginx haproxy wrk openssl taskset curl timeout python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx haproxy wrk nghttp2-client openssl curl python3)"
done
if [[ $H2 == 1 ]]; then command -v h2load >/dev/null || die "h2load not found (apt-get install -y nghttp2-client)"; fi

# shellcheck source=common.sh
source "$ROOT/benches/load/common.sh"
find_payguard
mkdir -p "$RESULTS_DIR"

PROTOS="h1"
if [[ $H2 == 1 ]]; then PROTOS="h1 h2"; fi

# ---------------------------------------------------------------- the rate
# Maximum throughput first, with the side-by-side run itself (same configs, same GUARD), unless
# the rates are given.
if [[ -z $RATE_H1 || ($H2 == 1 && -z $RATE_H2) ]]; then
    if [[ -z $MAX_CSV ]]; then
        log "measuring max throughput: benches/load/run.sh REPS=$MAX_REPS DURATION=$MAX_DURATION GUARD=$GUARD"
        REPS=$MAX_REPS DURATION=$MAX_DURATION GUARD=$GUARD H2=$H2 PROXIES=$PROXIES RESULTS_DIR=$RESULTS_DIR/max \
            PROXY_CPU=$PROXY_CPU CLIENT_CPU=$CLIENT_CPU BACKEND_PORT=$BACKEND_PORT NGINX_PORT=$NGINX_PORT \
            HAPROXY_PORT=$HAPROXY_PORT PAYGUARD_PORT=$PAYGUARD_PORT PAYGUARD_ADMIN_PORT=$PAYGUARD_ADMIN_PORT \
            QUIET_MAX=$QUIET_MAX QUIET_TIMEOUT=$QUIET_TIMEOUT "$ROOT/benches/load/run.sh" >"$RESULTS_DIR/max.out" ||
            die "max-throughput run failed (see $RESULTS_DIR/max.out)"
        MAX_CSV=$RESULTS_DIR/max/raw.csv
    else
        [[ -s $MAX_CSV ]] || die "MAX_CSV=$MAX_CSV: no such file"
        log "max throughput from $MAX_CSV"
        cp "$MAX_CSV" "$RESULTS_DIR/max-raw.csv"
    fi
    CSV=$MAX_CSV
    MAX_REPS=$(awk -F, 'NR > 1 { print $1 }' "$CSV" | sort -n | tail -n 1)
    slowest() { # proto -> "rate proxy max" for the contestant with the lowest median req/s
        local p m best="" bp=""
        for p in $PROXIES; do
            m=$(stats "$p" "$1" rps | cut -d' ' -f1)
            [[ $m == NA ]] && die "no max throughput for $p $1 (see $RESULTS_DIR/max.out)"
            if [[ -z $best ]] || awk -v a="$m" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$m; bp=$p; fi
        done
        echo "$(awk -v m="$best" -v f="$RATE_FRACTION" 'BEGIN { printf "%d", m * f }') $bp $best"
    }
    if [[ -z $RATE_H1 ]]; then
        read -r RATE_H1 who max < <(slowest h1)
        log "HTTP/1.1: slowest is $who at $max req/s (median of $MAX_REPS); fixed rate $RATE_H1 req/s"
        RATE_NOTE_H1="$RATE_FRACTION × $who's median max of $max req/s (wrk -c50, $MAX_REPS reps)"
    fi
    if [[ $H2 == 1 && -z $RATE_H2 ]]; then
        read -r RATE_H2 who max < <(slowest h2)
        log "HTTP/2: slowest is $who at $max req/s (median of $MAX_REPS); fixed rate $RATE_H2 req/s"
        RATE_NOTE_H2="$RATE_FRACTION × $who's median max of $max req/s (h2load -c32 -m10, $MAX_REPS reps)"
    fi
fi
: "${RATE_NOTE_H1:=given}" "${RATE_NOTE_H2:=given}"
[[ $RATE_H1 =~ ^[0-9]+$ && $RATE_H1 -gt 0 ]] || die "bad HTTP/1.1 rate '$RATE_H1'"
if [[ $H2 == 1 ]]; then [[ $RATE_H2 =~ ^[0-9]+$ && $RATE_H2 -gt 0 ]] || die "bad HTTP/2 rate '$RATE_H2'"; fi

# ---------------------------------------------------------------- set-up
bench_init payguard-latency
CSV=$RESULTS_DIR/raw.csv
SUMMARY=$RESULTS_DIR/summary.md
echo "rep,proxy,proto,rate,rps,p50_ms,p99_ms,p999_ms,max_ms,requests,errors,non2xx,aborted_at_deadline,proxy_cpu_pct,client_cpu_pct,backend_cpu_pct,wall_s,proxy_core_busy_pct,client_core_busy_pct,proxy_core_other_pct,proxy_cpu_us_per_req" >"$CSV"
start_proxies

if [[ $WARMUP != 0 ]]; then
    for p in $PROXIES; do
        log "warm-up $p (${WARMUP}s)"
        taskset -c "$CLIENT_CPU" timeout $((WARMUP + 20)) wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "User-Agent: $BENCH_UA" "https://127.0.0.1:${PORT[$p]}/" >/dev/null 2>&1 || log "warm-up of $p failed"
    done
fi

# oha's JSON -> "rps p50 p99 p99.9 max requests errors non2xx aborted" (latencies in ms)
parse_oha() {
    python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
s, pc = d["summary"], d.get("latencyPercentiles") or {}
ms = lambda v: "NA" if v is None else "%.3f" % (v * 1000)
codes = d.get("statusCodeDistribution") or {}
errs = d.get("errorDistribution") or {}
aborted = sum(n for e, n in errs.items() if "deadline" in e)
errors = sum(errs.values()) - aborted
ok = sum(n for c, n in codes.items() if c.startswith("2"))
non2xx = sum(codes.values()) - ok
print("%.1f" % (s.get("requestsPerSec") or 0), ms(pc.get("p50")), ms(pc.get("p99")), ms(pc.get("p99.9")),
      ms(s.get("slowest")), sum(codes.values()), errors, non2xx, aborted)
EOF
}

measure() { # rep proxy proto
    local rep=$1 p=$2 proto=$3 url="https://127.0.0.1:${PORT[$2]}/"
    local out="$TMP/oha-$rep-$p-$proto.json" rate rc=0
    local -a args=(-z "${DURATION}s" --latency-correction --insecure --no-tui --output-format json --worker-threads "$OHA_THREADS")
    if [[ $proto == h1 ]]; then
        rate=$RATE_H1; args+=(-q "$RATE_H1" -c "$CONNS")
    else
        rate=$RATE_H2; args+=(-q "$RATE_H2" --http2 -c "$H2_CONNS" -p "$H2_PARALLEL")
    fi
    window_start "${PID[$p]}"
    run_client "$out" $((DURATION + 60)) "$OHA" "${args[@]}" "$url" || rc=$?
    window_end "${PID[$p]}"
    kill -0 "${PID[$p]}" 2>/dev/null || log "$p DIED during rep $rep $proto; log: $(tail -n 30 "$TMP/$p.log")"
    local ccpu rps p50 p99 p999 max reqs errs non2xx aborted uspr
    ccpu=$(client_pct "$out")
    if [[ $rc != 0 ]] || ! read -r rps p50 p99 p999 max reqs errs non2xx aborted < <(parse_oha "$out" 2>/dev/null); then
        log "WARNING: oha for $p $proto exited $rc or gave no JSON: $(tail -n 5 "$out.err" 2>/dev/null)"
        rps=NA p50=NA p99=NA p999=NA max=NA reqs=NA errs=NA non2xx=NA aborted=NA
    fi
    uspr=$(awk -v t="$W_PTICKS" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { if (n + 0 > 0) printf "%.1f", t * 1e6 / hz / n; else print "NA" }')
    echo "$rep,$p,$proto,$rate,$rps,$p50,$p99,$p999,$max,$reqs,$errs,$non2xx,$aborted,$W_PCPU,$ccpu,$W_BCPU,$W_WALL,$W_PCORE,$W_CCORE,$W_OTHER,$uspr" >>"$CSV"
    log "rep $rep $p $proto @ $rate/s: achieved $rps req/s p50=$p50 p99=$p99 p99.9=$p999 max=$max ms; errors=$errs non-2xx=$non2xx; cpu proxy=$W_PCPU% oha=$ccpu% backend=$W_BCPU%; core$CLIENT_CPU busy=$W_CCORE%"
    if awk -v a="$rps" -v r="$rate" 'BEGIN { exit !(a == "NA" || a < 0.95 * r) }'; then
        log "WARNING: $p $proto did not sustain $rate req/s (achieved $rps): the proxy or the client core is saturated; latencies include queueing"
    fi
    if awk -v c="$ccpu" -v b="$W_BCPU" 'BEGIN { exit !(c != "NA" && b != "NA" && c + b > 85) }'; then
        log "WARNING: oha + backend used $ccpu% + $W_BCPU% of core $CLIENT_CPU: the latencies may include the client side's own queueing"
    elif awk -v c="$W_CCORE" 'BEGIN { exit !(c != "NA" && c > 90) }'; then
        log "WARNING: core $CLIENT_CPU was ${W_CCORE}% busy (other processes than oha and the backend): the latencies may include their interference"
    fi
    if [[ ${errs:-0} != 0 || ${non2xx:-0} != 0 ]]; then log "WARNING: $p $proto rep $rep: $errs errors, $non2xx non-2xx"; fi
    cp "$out" "$RESULTS_DIR/" 2>/dev/null || true
}

for rep in $(seq "$REPS"); do
    for proto in $PROTOS; do
        for p in $PROXIES; do
            wait_quiet
            measure "$rep" "$p" "$proto"
        done
    done
done

# ---------------------------------------------------------------- summary
{
    echo "Fixed-rate latency, open loop with latency correction (\`oha -q RATE --latency-correction\`)."
    echo "Medians over $REPS interleaved repetitions of ${DURATION}s, min–max in parentheses. $(nproc) cores; proxies on"
    echo "core $PROXY_CPU, oha + backend on core $CLIENT_CPU; TLS 1.3, $CERT_NAME; GUARD=$GUARD."
    echo "HTTP/1.1: keep-alive, \`-c$CONNS\`, rate $RATE_H1 req/s = $RATE_NOTE_H1."
    if [[ $H2 == 1 ]]; then echo "HTTP/2: \`--http2 -c$H2_CONNS -p$H2_PARALLEL\`, rate $RATE_H2 req/s = $RATE_NOTE_H2."; fi
    echo
    echo "| proxy | proto | rate req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | non-2xx | proxy CPU % | proxy CPU µs/req | oha CPU % | client-core busy % |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for proto in $PROTOS; do
        rate=$RATE_H1; [[ $proto == h2 ]] && rate=$RATE_H2
        for p in $PROXIES; do
            e=$(awk -F, -v p="$p" -v pr="$proto" '$2 == p && $3 == pr { s += $11 } END { print s + 0 }' "$CSV")
            n=$(awk -F, -v p="$p" -v pr="$proto" '$2 == p && $3 == pr { s += $12 } END { print s + 0 }' "$CSV")
            echo "| $p | $proto | $rate | $(cell "$p" "$proto" rps 0) | $(cell "$p" "$proto" p50_ms 2) | $(cell "$p" "$proto" p99_ms 2) | $(cell "$p" "$proto" p999_ms 2) | $(cell "$p" "$proto" max_ms 1) | $e | $n | $(cell "$p" "$proto" proxy_cpu_pct 0) | $(cell "$p" "$proto" proxy_cpu_us_per_req 1) | $(cell "$p" "$proto" client_cpu_pct 0) | $(cell "$p" "$proto" client_core_busy_pct 0) |"
        done
    done
    echo
    echo "Runs where something else used >10% of the proxy core: $(disturbed_runs) of $(($(wc -l <"$CSV") - 1))."
    echo "Runs that did not sustain the rate (achieved < 95%): $(awk -F, 'NR > 1 && ($5 == "NA" || $5 < 0.95 * $4) { n++ } END { print n + 0 }' "$CSV")."
    if [[ " $PROXIES " == *" payguard "* ]]; then
        echo
        echo "Ratios of medians (payguard / peer; lower is better):"
        echo
        echo "| | vs nginx | vs haproxy |"
        echo "|---|---|---|"
        for proto in $PROTOS; do
            name="HTTP/1.1"; [[ $proto == h2 ]] && name="HTTP/2"
            ratio_row "$name p50" "$proto" p50_ms
            ratio_row "$name p99" "$proto" p99_ms
            ratio_row "$name p99.9" "$proto" p999_ms
            ratio_row "$name proxy CPU at this rate" "$proto" proxy_cpu_pct
        done
    fi
} >"$SUMMARY"

save_configs
echo
cat "$SUMMARY"
echo
log "raw results: $CSV"
log "summary:     $SUMMARY"
