#!/usr/bin/env bash
# Full TLS handshakes per second (no resumption): payguard vs nginx vs haproxy, one core each,
# the same certificate (RSA-2048, or ECDSA P-256 with CERT=ecdsa) and the same configurations as
# benches/load/run.sh (common.sh).
#
# wrk and h2load resume TLS sessions when they reconnect; `openssl s_time -new` never does: every
# connection is a full handshake (ECDHE + a signature by the server), then closed.
# PARALLEL s_time processes run at once on CLIENT_CPU; handshakes/s = the connections they
# completed together / the wall time of the run. The client's CPU is recorded so a run bound by
# the client, not the proxy, shows: OpenSSL 3.0's s_time costs about as much CPU per handshake
# as the server's side (measured here: ~600 µs client vs ~370-500 µs proxy on a loaded machine),
# so on two cores the clients may saturate first. The proxy's CPU time per handshake (and the
# capacity of one core derived from it, 10^6 / µs) does not depend on that and is reported too.
#
#   benches/load/handshakes.sh
#   PAYGUARD_BIN=target/release/payguard REPS=1 DURATION=3 benches/load/handshakes.sh
#
# Knobs (environment):
#   REPS=5               interleaved repetitions (nginx, haproxy, payguard, nginx, ...) per TLS version
#   DURATION=10          s_time -time (seconds; s_time itself rounds up to the next whole second)
#   PARALLEL=4           concurrent s_time processes
#   TLS_VERSIONS="1.3 1.2"
#   GUARD=0              as in run.sh (irrelevant here: no request is sent)
#   PROXIES, PROXY_CPU=1, CLIENT_CPU=0, *_PORT, QUIET_MAX=15, QUIET_TIMEOUT=300, KEEP_TMP,
#   CERT=rsa             rsa (RSA-2048) or ecdsa (P-256): the certificate all three proxies share
#   PAYGUARD_BIN, BUILD   as in benches/load/run.sh (README.md)
#   RESULTS_DIR          default benches/load/results/handshakes-<UTC timestamp>
#
# Output: a markdown table (stdout and RESULTS_DIR/summary.md) of handshakes/s, proxy CPU per
# handshake, client CPU, with the negotiated protocol/cipher/group per proxy, and the
# payguard/peer ratios; every run in RESULTS_DIR/raw.csv. Only 127.0.0.1; all stopped on exit.
set -euo pipefail

REPS=${REPS:-5}
DURATION=${DURATION:-10}
PARALLEL=${PARALLEL:-4}
TLS_VERSIONS=${TLS_VERSIONS:-"1.3 1.2"}
GUARD=${GUARD:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/benches/load/results/handshakes-$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[handshakes %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in nginx haproxy openssl taskset curl timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx haproxy openssl curl)"
done
for v in $TLS_VERSIONS; do [[ $v == 1.2 || $v == 1.3 ]] || die "TLS_VERSIONS: only 1.2 and 1.3, not '$v'"; done

# shellcheck source=common.sh
source "$ROOT/benches/load/common.sh"
find_payguard
mkdir -p "$RESULTS_DIR"
bench_init payguard-handshakes
CSV=$RESULTS_DIR/raw.csv
SUMMARY=$RESULTS_DIR/summary.md
echo "rep,proxy,tls,handshakes_per_s,connections,failed_clients,proxy_cpu_pct,client_cpu_pct,proxy_cpu_us_per_handshake,capacity_per_core,wall_s,proxy_core_busy_pct,client_core_busy_pct,proxy_core_other_pct" >"$CSV"
start_proxies

flag() { if [[ $1 == 1.3 ]]; then echo -tls1_3; else echo -tls1_2; fi; }

# What each proxy negotiates per version (same certificate, comparable suites and groups).
declare -A NEGOTIATED
for v in $TLS_VERSIONS; do
    for p in $PROXIES; do
        info=$(echo | timeout 10 openssl s_client "$(flag "$v")" -connect "127.0.0.1:${PORT[$p]}" 2>/dev/null |
            awk '/^New, / { sub(",", "", $2); proto = $2; c = $NF } /Server Temp Key:/ { sub(/^.*Server Temp Key: /, ""); sub(/,.*/, ""); g = $0 }
                 /Peer signature type:/ { s = $NF } END { print proto, c, g, s }') || true
        [[ $info == TLSv$v* ]] || die "$p does not negotiate TLS $v (got '$info')"
        NEGOTIATED[$p-$v]=$info
        log "  $p TLS $v: $info"
    done
done

measure() { # rep proxy version
    local rep=$1 p=$2 v=$3 out="$TMP/stime-$1-$2-$3" rc=0
    window_start "${PID[$p]}"
    # PARALLEL s_time processes inside one wrapper, whose children's CPU run_client records.
    run_client "$out.txt" $((DURATION + 60)) bash -c '
        n=$1 port=$2 t=$3 f=$4 out=$5 failed=0
        for i in $(seq "$n"); do openssl s_time -connect "127.0.0.1:$port" -new -time "$t" "$f" >"$out.$i" 2>&1 & done
        for i in $(seq "$n"); do wait -n || failed=$((failed + 1)); done
        echo "failed=$failed"' _ "$PARALLEL" "${PORT[$p]}" "$DURATION" "$(flag "$v")" "$out" || rc=$?
    window_end "${PID[$p]}"
    kill -0 "${PID[$p]}" 2>/dev/null || log "$p DIED during rep $rep TLS $v; log: $(tail -n 30 "$TMP/$p.log")"
    local conns failed hps ccpu us cap
    conns=$(cat "$out".[0-9]* 2>/dev/null | awk '/connections in .* real seconds/ { s += $1 } END { print s + 0 }')
    failed=$(sed -n 's/^failed=//p' "$out.txt"); failed=${failed:-$PARALLEL}
    hps=$(awk -v c="$conns" -v w="$W_WALL" 'BEGIN { if (w > 0) printf "%.1f", c / w; else print "NA" }')
    ccpu=$(client_pct "$out.txt")
    us=$(awk -v t="$W_PTICKS" -v hz="$CLK_TCK" -v n="$conns" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "NA" }')
    cap=$(awk -v u="$us" 'BEGIN { if (u == "NA" || u == 0) print "NA"; else printf "%.0f", 1e6 / u }')
    echo "$rep,$p,$v,$hps,$conns,$failed,$W_PCPU,$ccpu,$us,$cap,$W_WALL,$W_PCORE,$W_CCORE,$W_OTHER" >>"$CSV"
    log "rep $rep $p TLS $v: $hps handshakes/s ($conns in ${W_WALL}s, $PARALLEL clients, $failed failed); cpu proxy=$W_PCPU% (${us} us/handshake) clients=$ccpu%; core$CLIENT_CPU busy=$W_CCORE%"
    if [[ $rc != 0 || $failed != 0 ]]; then
        log "WARNING: $failed of $PARALLEL s_time clients failed for $p TLS $v: $(cat "$out".[0-9]* | grep -iv '^\(collecting\|\*\)' | grep -i -m3 'error\|unable' || true)"
    fi
    if awk -v c="$ccpu" 'BEGIN { exit !(c != "NA" && c > 85) }'; then
        log "WARNING: the s_time clients used $ccpu% of core $CLIENT_CPU: this run may measure the client, not $p"
    fi
    for f in "$out".[0-9]*; do cp "$f" "$RESULTS_DIR/$(basename "$f").txt" 2>/dev/null || true; done
}

for rep in $(seq "$REPS"); do
    for v in $TLS_VERSIONS; do
        for p in $PROXIES; do
            wait_quiet
            measure "$rep" "$p" "$v"
        done
    done
done

# ---------------------------------------------------------------- summary
{
    echo "Full TLS handshakes per second, no resumption: $PARALLEL × \`openssl s_time -new -time $DURATION\` in parallel"
    echo "on core $CLIENT_CPU, proxy on core $PROXY_CPU, $CERT_NAME certificate ($(openssl version | cut -d' ' -f1-2) client)."
    echo "Medians over $REPS interleaved repetitions, min–max in parentheses."
    echo
    echo "| proxy | TLS | negotiated (protocol, cipher, group, signature) | handshakes/s | proxy CPU % | proxy CPU µs/handshake | capacity of one core (10⁶ / µs) | client CPU % | proxy-core busy % | failed clients |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for v in $TLS_VERSIONS; do
        for p in $PROXIES; do
            f=$(awk -F, -v p="$p" -v v="$v" '$2 == p && $3 == v { s += $6 } END { print s + 0 }' "$CSV")
            echo "| $p | $v | ${NEGOTIATED[$p-$v]} | $(cell "$p" "$v" handshakes_per_s 0) | $(cell "$p" "$v" proxy_cpu_pct 0) | $(cell "$p" "$v" proxy_cpu_us_per_handshake 0) | $(cell "$p" "$v" capacity_per_core 0) | $(cell "$p" "$v" client_cpu_pct 0) | $(cell "$p" "$v" proxy_core_busy_pct 0) | $f |"
        done
    done
    echo
    echo "Runs where something else used >10% of the proxy core: $(disturbed_runs) of $(($(wc -l <"$CSV") - 1))."
    echo "Runs where the clients used >85% of their core (client-bound): $(awk -F, 'NR > 1 && $8 != "NA" && $8 > 85 { n++ } END { print n + 0 }' "$CSV")."
    echo "When the proxy is below ~95% CPU (client-bound runs), handshakes/s measures the clients; the proxy's CPU"
    echo "per handshake, and the capacity of one core derived from it, still compare the proxies."
    if [[ " $PROXIES " == *" payguard "* ]]; then
        echo
        echo "Ratios of medians (payguard / peer; handshakes/s higher is better, CPU µs/handshake lower is better):"
        echo
        echo "| | vs nginx | vs haproxy |"
        echo "|---|---|---|"
        for v in $TLS_VERSIONS; do
            ratio_row "TLS $v handshakes/s" "$v" handshakes_per_s
            ratio_row "TLS $v proxy CPU µs/handshake" "$v" proxy_cpu_us_per_handshake
            ratio_row "TLS $v capacity of one core" "$v" capacity_per_core
        done
    fi
} >"$SUMMARY"

save_configs
echo
cat "$SUMMARY"
echo
log "raw results: $CSV"
log "summary:     $SUMMARY"
