#!/usr/bin/env bash
# Memory of an idle proxy and of N idle keep-alive TLS connections: payguard vs nginx vs haproxy,
# one core each, the same certificate and configurations as benches/load/run.sh (common.sh).
#
# For each proxy in turn (all started first, as in run.sh; each answered one HTTP/1.1 and one
# HTTP/2 request when started):
#   1. idle (each repetition on a fresh process): its resident memory (VmRSS, summed over the process and its children: nginx's
#      master and worker);
#   2. N connections: idle_conns.py opens N TLS connections (full handshakes), sends one
#      HTTP/1.1 GET on each, reads the answer, and leaves them open; once all are open and the
#      proxy has stopped using CPU, its memory again, and its open file descriptors;
#   3. closed: the client closes them all; once the proxy has closed its side of them, its
#      memory a third time (does what N connections took go back?).
#
#   benches/load/idle.sh
#   N=10000 REPS=3 PAYGUARD_BIN=target/release/payguard benches/load/idle.sh
#
# Knobs (environment): N=10000 connections, REPS=3 (rounds over the proxies; every proxy's
# memory is read in each), CONCURRENT=64 handshakes at once, CERT, PROXIES, PROXY_CPU,
# CLIENT_CPU, GUARD, PAYGUARD_BIN, KEEP_TMP, RESULTS_DIR as in run.sh (README.md). MAX_CONNS is
# set to N + 100 for all three. Needs python3 (its ssl module), nginx, haproxy, openssl, curl;
# `ulimit -n` above N + 100 (haproxy wants twice that: under a lower hard limit it is given as
# many connections as the limit allows, and the run says so). Only 127.0.0.1; everything stopped on exit.
set -euo pipefail

N=${N:-10000}
REPS=${REPS:-3}
CONCURRENT=${CONCURRENT:-64}
GUARD=${GUARD:-0}
MAX_CONNS=$((N + 100))
# payguard closes an HTTP/1.1 keep-alive connection that sends no next request within
# header_read_timeout (10 s by default); the peers keep theirs for 300 s (common.sh).
PAYGUARD_SERVER_EXTRA='header_read_timeout = "300s"
idle_timeout = "300s"'

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/benches/load/results/idle-$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[idle %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in nginx haproxy openssl taskset curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx haproxy openssl curl python3)"
done
# haproxy asks for two descriptors per connection it may take (client and server side), and
# will not start if it cannot have them: under a lower hard limit it takes fewer connections
# (the table's bytes per connection divide by what each proxy held).
want=$((2 * MAX_CONNS + 1000))
[[ $(ulimit -n) -ge $want ]] || ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[[ $(ulimit -n) -gt $MAX_CONNS ]] || die "ulimit -n is $(ulimit -n): N=$N connections need more than $MAX_CONNS"
HAPROXY_MAXCONN=$(((($(ulimit -n) - 300) / 2) < MAX_CONNS ? ($(ulimit -n) - 300) / 2 : MAX_CONNS))
# conns PROXY: how many connections PROXY is given.
conns() { if [[ $1 == haproxy ]]; then echo $((HAPROXY_MAXCONN - 100 < N ? HAPROXY_MAXCONN - 100 : N)); else echo "$N"; fi; }

# shellcheck source=common.sh
source "$ROOT/benches/load/common.sh"
find_payguard
mkdir -p "$RESULTS_DIR"
bench_init payguard-idle
CSV=$RESULTS_DIR/raw.csv
SUMMARY=$RESULTS_DIR/summary.md
echo "rep,proxy,idle_kib,open_kib,closed_kib,per_conn_bytes,held,failed,fds_open,fds_closed" >"$CSV"
start_proxies
[[ " $PROXIES " != *" haproxy "* || $(conns haproxy) == "$N" ]] ||
    log "ulimit -n $(ulimit -n): haproxy is given $(conns haproxy) connections, not $N"

# Resident KiB of a process and its children.
rss_kib() {
    local p total=0 kb
    for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        kb=$(awk '/^VmRSS:/ { print $2 }' /proc/"$p"/status 2>/dev/null) || continue
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
fds() {
    local p total=0
    for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        total=$((total + $(find /proc/"$p"/fd -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
    done
    echo "$total"
}
# Waits (at most 30 s) until the process has used no CPU for half a second: the handshakes and
# whatever they left to do (frees, timers) are done.
settle() {
    local pid=$1 a b
    for _ in $(seq 60); do
        a=$(proc_ticks "$pid" | cut -d' ' -f1)
        sleep 0.5
        b=$(proc_ticks "$pid" | cut -d' ' -f1)
        [[ $a == "$b" ]] && return 0
    done
    log "WARNING: pid $pid still busy after 30 s"
}

measure() { # rep proxy
    local rep=$1 p=$2 pid=${PID[$2]} idle open closed fd0 fdn fdc held failed="0" line
    settle "$pid"
    idle=$(rss_kib "$pid")
    fd0=$(fds "$pid")
    coproc CLIENT { taskset -c "$CLIENT_CPU" python3 "$ROOT/benches/load/idle_conns.py" "${PORT[$p]}" "$(conns "$p")" "$CONCURRENT"; }
    while IFS= read -r -t 600 line <&"${CLIENT[0]}"; do
        case $line in
            failed*) failed=${line#failed }; failed=${failed%% *}; log "$p: $line" ;;
            open*) held=${line#open }; break ;;
        esac
    done
    [[ -n ${held:-} ]] || die "$p: the client did not report its connections"
    settle "$pid"
    open=$(rss_kib "$pid")
    fdn=$(fds "$pid")
    echo >&"${CLIENT[1]}"
    IFS= read -r -t 60 line <&"${CLIENT[0]}" || true
    log "$p: client $line (of $held)"
    wait "$CLIENT_PID" 2>/dev/null || true
    # Its backend connections may outnumber those it had idle: wait for the clients' to go.
    for _ in $(seq 100); do [[ $(fds "$pid") -le $((fdn - held * 9 / 10)) ]] && break; sleep 0.1; done
    settle "$pid"
    closed=$(rss_kib "$pid")
    fdc=$(fds "$pid")
    local per
    per=$(awk -v a="$idle" -v b="$open" -v n="$held" 'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1024 / n; else print "NA" }')
    echo "$rep,$p,$idle,$open,$closed,$per,$held,$failed,$fdn,$fdc" >>"$CSV"
    log "rep $rep $p: idle $((idle / 1024)) MiB, $held connections $((open / 1024)) MiB ($per bytes each, $fdn fds)," \
        "closed $((closed / 1024)) MiB ($fdc fds); $failed failed"
}

# A proxy keeps what it freed (allocators hold on to it): each repetition after the first
# starts each proxy afresh, with the same two requests start_proxies sent it.
restart() {
    local p=$1 v
    kill -TERM "${PID[$p]}" 2>/dev/null || true
    wait "${PID[$p]}" 2>/dev/null || true
    "start_$p"
    wait_port "${PORT[$p]}" "${PID[$p]}" "$p"
    for v in --http1.1 --http2; do
        timeout 10 curl -sk "$v" -A "$BENCH_UA" -o /dev/null "https://127.0.0.1:${PORT[$p]}/" || die "$p: curl $v failed after restart"
    done
}

for rep in $(seq "$REPS"); do
    for p in $PROXIES; do
        [[ $rep == 1 ]] || restart "$p"
        measure "$rep" "$p"
    done
done

mib() { awk '{ printf "%.1f", $1 / 1024 }'; }
med() { # proxy column
    awk -F, -v p="$1" -v c="$2" 'NR > 1 && $2 == p { print $c }' "$CSV" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
{
    echo "Resident memory (VmRSS of the process and its children), medians of $REPS; $N idle keep-alive TLS"
    echo "connections (HTTP/1.1, one GET answered on each), $CERT_NAME certificate, GUARD=$GUARD."
    echo
    echo "| proxy | idle MiB | connections held | with them MiB | more, MiB | bytes per connection | after they closed MiB | failed |"
    echo "|---|---|---|---|---|---|---|---|"
    for p in $PROXIES; do
        i=$(med "$p" 3) o=$(med "$p" 4) c=$(med "$p" 5)
        echo "| $p | $(mib <<<"$i") | $(med "$p" 7) | $(mib <<<"$o") | $(awk -v a="$i" -v b="$o" 'BEGIN { printf "%.1f", (b - a) / 1024 }') |" \
            "$(med "$p" 6) | $(mib <<<"$c") | $(awk -F, -v p="$p" 'NR > 1 && $2 == p { s += $8 } END { print s + 0 }' "$CSV") |"
    done
} >"$SUMMARY"

save_configs
echo
cat "$SUMMARY"
log "raw results: $CSV"
