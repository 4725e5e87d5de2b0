#!/usr/bin/env bash
# Soak: payguard alone (plus the nginx backend) under a fixed request rate for a long time,
# watching for leaks: its RSS (VmRSS) and open file descriptors are sampled every SAMPLE seconds
# into a CSV; the summary gives idle RSS (after start, before load), RSS under load (median), start
# / end / max of RSS and FDs, and the slope of RSS and FDs over the second half of the run (a
# leak shows as a steady positive slope once the caches and pools have warmed up).
#
# Same payguard configuration as the side-by-side runs (benches/load/common.sh): `--threads 1`
# on PROXY_CPU, TLS 1.3 RSA-2048, GUARD=1 (IP allow, never-triggering rate limit, header
# validation). The load is open-loop: `oha -q RATE --latency-correction` over keep-alive
# connections, on CLIENT_CPU with the backend. RATE defaults to RATE_FRACTION (50%) of
# payguard's max throughput, measured first with benches/load/run.sh (wrk).
#
#   benches/soak/run.sh                         # 10 minutes (plus ~30 s for the max measurement)
#   RATE=15000 DURATION=60 benches/soak/run.sh   # 1 minute at 15k req/s
#
# Knobs (environment):
#   DURATION=600      seconds of load
#   SAMPLE=10         seconds between samples
#   CHUNK=60          the load runs as consecutive oha runs of this many seconds (percentiles per chunk)
#   AFTER=30          seconds of sampling after the load stops (does memory come back down?)
#   RATE              fixed rate (req/s); unset: RATE_FRACTION x median max over MAX_REPS wrk runs
#   RATE_FRACTION=0.5, MAX_REPS=3, MAX_DURATION=10
#   MAX_CSV           raw.csv of an earlier benches/load/run.sh with the same GUARD (payguard's rows
#                     give the max) instead of measuring it again
#   PROTO=h1          h1 (keep-alive, -c CONNS) or h2 (--http2 -c H2_CONNS -p H2_PARALLEL)
#   CONNS=50, H2_CONNS=10, H2_PARALLEL=5
#   NEW_CONNS=0       1: oha --disable-keepalive (HTTP/1.1 only): a new TCP + TLS connection per
#                     request, which also soaks the accept / handshake / close path
#   GUARD=1           0: no rules
#   OHA, OHA_THREADS=1, PROXY_CPU=1, CLIENT_CPU=0, BACKEND_PORT, PAYGUARD_PORT,
#   PAYGUARD_ADMIN_PORT, QUIET_MAX, QUIET_TIMEOUT, KEEP_TMP, PAYGUARD_BIN, BUILD  (benches/load/README.md)
#   RESULTS_DIR       default benches/soak/results/<UTC timestamp>
#
# Output: RESULTS_DIR/samples.csv (RSS, FDs, CPU), chunks.csv (rate and latency per chunk), summary.md
# (also on stdout), oha's JSON per chunk.
# Only 127.0.0.1 is used; everything started is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
CHUNK=${CHUNK:-60}
AFTER=${AFTER:-30}
RATE=${RATE:-}
RATE_FRACTION=${RATE_FRACTION:-0.5}
MAX_REPS=${MAX_REPS:-3}
MAX_CSV=${MAX_CSV:-}
MAX_DURATION=${MAX_DURATION:-10}
PROTO=${PROTO:-h1}
CONNS=${CONNS:-50}
H2_CONNS=${H2_CONNS:-10}
H2_PARALLEL=${H2_PARALLEL:-5}
NEW_CONNS=${NEW_CONNS:-0}
GUARD=${GUARD:-1}
OHA_THREADS=${OHA_THREADS:-1}
# shellcheck disable=SC2034 # read by common.sh
PROXIES=payguard

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/benches/soak/results/$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z ${OHA:-} ]]; then
    OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
fi
[[ -x $OHA ]] || die "oha not found (cargo install oha, or OHA=/path/to/oha)"
for tool in nginx wrk openssl taskset curl timeout python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx wrk openssl curl python3)"
done
[[ $PROTO == h1 || $PROTO == h2 ]] || die "PROTO must be h1 or h2"
[[ $NEW_CONNS == 0 || $PROTO == h1 ]] || die "NEW_CONNS=1 needs PROTO=h1"
((SAMPLE >= 1 && CHUNK >= 1 && DURATION >= 1)) || die "SAMPLE, CHUNK and DURATION must be >= 1"

# shellcheck source=../load/common.sh
source "$ROOT/benches/load/common.sh"
find_payguard
mkdir -p "$RESULTS_DIR"

# ---------------------------------------------------------------- the rate
RATE_NOTE="given"
if [[ -z $RATE ]]; then
    if [[ -z $MAX_CSV ]]; then
        h2=0
        if [[ $PROTO == h2 ]]; then h2=1; fi
        log "measuring payguard's max throughput: benches/load/run.sh PROXIES=payguard REPS=$MAX_REPS DURATION=$MAX_DURATION GUARD=$GUARD"
        REPS=$MAX_REPS DURATION=$MAX_DURATION GUARD=$GUARD H2=$h2 PROXIES=payguard RESULTS_DIR=$RESULTS_DIR/max \
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
    # shellcheck disable=SC2034 # read by stats (common.sh)
    CSV=$MAX_CSV
    MAX_REPS=$(awk -F, 'NR > 1 && $2 == "payguard" { print $1 }' "$CSV" | sort -n | tail -n 1)
    max=$(stats payguard "$PROTO" rps | cut -d' ' -f1)
    [[ $max != NA ]] || die "no max throughput measured (see $RESULTS_DIR/max.out)"
    RATE=$(awk -v m="$max" -v f="$RATE_FRACTION" 'BEGIN { printf "%d", m * f }')
    RATE_NOTE="$RATE_FRACTION × payguard's median max of $max req/s over $MAX_REPS runs"
    log "fixed rate: $RATE req/s ($RATE_NOTE)"
fi
[[ $RATE =~ ^[0-9]+$ && $RATE -gt 0 ]] || die "bad RATE '$RATE'"

# ---------------------------------------------------------------- set-up
bench_init payguard-soak
start_proxies
PG=${PID[payguard]}

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$PG/status" 2>/dev/null || echo NA; }
threads() { awk '$1 == "Threads:" { print $2 }' "/proc/$PG/status" 2>/dev/null || echo NA; }
fds() { find "/proc/$PG/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

SAMPLES=$RESULTS_DIR/samples.csv
echo "t_s,phase,rss_kib,fds,threads,payguard_cpu_pct,proxy_core_busy_pct,client_core_busy_pct" >"$SAMPLES"
_s_t=0 _s_pg=0 _s_pc="" _s_cc=""
sample() { # phase t0: appends one row to $SAMPLES (CPU % since the previous sample of this shell)
    local t pg pc cc wall pgc=NA pcb=NA ccb=NA row
    t=$(now); read -r pg _ < <(proc_ticks "$PG")
    pc=$(core_sample "$PROXY_CPU"); cc=$(core_sample "$CLIENT_CPU")
    if [[ -n $_s_pc ]]; then
        wall=$(awk -v a="$_s_t" -v b="$t" 'BEGIN { printf "%.3f", b - a }')
        pgc=$(pct $((pg - _s_pg)) "$wall")
        # shellcheck disable=SC2086 # "busy total" pairs
        pcb=$(core_pct $_s_pc $pc); ccb=$(core_pct $_s_cc $cc)
    fi
    _s_t=$t _s_pg=$pg _s_pc=$pc _s_cc=$cc
    row="$(awk -v a="$2" -v b="$t" 'BEGIN { printf "%.1f", b - a }'),$1,$(rss_kib),$(fds),$(threads),$pgc,$pcb,$ccb"
    echo "$row" >>"$SAMPLES"
    log "sample $row"
}

# Idle: after start-up and the sanity requests, before any load.
T0=$(now)
for _ in 1 2 3; do sample idle "$T0"; sleep 1; done
kill -0 "$PG" 2>/dev/null || die "payguard exited"

wait_quiet

# ---------------------------------------------------------------- load
# oha runs in consecutive CHUNK-second pieces (its memory grows with every request it records,
# and per-chunk percentiles show whether latency drifts over the soak); a background sampler
# records RSS / FDs / CPU every SAMPLE seconds meanwhile.
url="https://127.0.0.1:$PAYGUARD_PORT/"
args=(-q "$RATE" --latency-correction --insecure --no-tui --output-format json --worker-threads "$OHA_THREADS")
if [[ $PROTO == h2 ]]; then
    args+=(--http2 -c "$H2_CONNS" -p "$H2_PARALLEL")
else
    args+=(-c "$CONNS")
    if [[ $NEW_CONNS == 1 ]]; then args+=(--disable-keepalive); fi
fi
log "load: oha -z ${CHUNK}s ${args[*]} $url, repeated for ${DURATION}s at $RATE req/s"
T0=$(now)
(
    # CPU baselines at the start; rows at T0 + (k + 1/2) * SAMPLE, i.e. never right at a chunk
    # boundary, where oha is reconnecting.
    _s_t=$(now) _s_pc=$(core_sample "$PROXY_CPU") _s_cc=$(core_sample "$CLIENT_CPU")
    read -r _s_pg _ < <(proc_ticks "$PG")
    k=0
    while :; do
        next=$(awk -v t0="$T0" -v k="$k" -v s="$SAMPLE" 'BEGIN { printf "%.3f", t0 + (k + 0.5) * s }')
        while awk -v n="$next" -v t="$(now)" 'BEGIN { exit !(t < n) }'; do sleep 0.2; done
        sample load "$T0"
        k=$((k + 1))
    done
) &
SAMPLER=$!
PIDS+=("$SAMPLER")

CHUNKS=$RESULTS_DIR/chunks.csv
echo "chunk,t_start_s,seconds,rps,p50_ms,p99_ms,p999_ms,max_ms,responses,errors,non2xx,aborted_at_deadline,oha_cpu_pct" >"$CHUNKS"
parse_oha() {
    python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, pc = d["summary"], d.get("latencyPercentiles") or {}
ms = lambda v: "NA" if v is None else "%.3f" % (v * 1000)
codes = d.get("statusCodeDistribution") or {}
errs = d.get("errorDistribution") or {}
aborted = sum(n for e, n in errs.items() if "deadline" in e)
ok = sum(n for c, n in codes.items() if c.startswith("2"))
print(",".join(str(x) for x in ("%.1f" % (s.get("requestsPerSec") or 0), ms(pc.get("p50")), ms(pc.get("p99")),
      ms(pc.get("p99.9")), ms(s.get("slowest")), sum(codes.values()), sum(errs.values()) - aborted,
      sum(codes.values()) - ok, aborted)))
PY
}
done_s=0 c=0
while ((done_s < DURATION)); do
    c=$((c + 1))
    len=$((DURATION - done_s < CHUNK ? DURATION - done_s : CHUNK))
    out=$RESULTS_DIR/oha-$(printf %03d "$c").json
    ts=$(awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    t1=$(now)
    rc=0
    run_client "$out" $((len + 60)) "$OHA" -z "${len}s" "${args[@]}" "$url" || rc=$?
    # shellcheck disable=SC2034 # read by client_pct (common.sh)
    W_WALL=$(awk -v a="$t1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
    row=$(parse_oha "$out" 2>/dev/null) || row="NA,NA,NA,NA,NA,NA,NA,NA,NA"
    [[ $rc == 0 ]] || log "WARNING: oha exited $rc in chunk $c: $(tail -n 5 "$out.err" 2>/dev/null)"
    echo "$c,$ts,$len,$row,$(client_pct "$out")" >>"$CHUNKS"
    log "chunk $c ($len s): rps,p50,p99,p99.9,max,responses,errors,non2xx,aborted = $row"
    rm -f "$out.cpu"
    [[ -s $out.err ]] || rm -f "$out.err"
    kill -0 "$PG" 2>/dev/null || die "payguard DIED under load; log: $(tail -n 30 "$TMP/payguard.log")"
    done_s=$((done_s + len))
done
LOAD_END=$(awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
kill -TERM "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
_s_pc=""
for t in $(seq 0 "$SAMPLE" "$AFTER"); do
    ((t == 0)) || sleep "$SAMPLE"
    sample after "$T0"
done

# ---------------------------------------------------------------- summary
# col phase -> "first last min max median n" of a column over the samples of a phase
colstats() {
    awk -F, -v c="$1" -v ph="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next }
        $2 == ph && $col != "NA" { v[n++] = $col + 0; if (n == 1) first = $col; last = $col }
        END { if (n == 0) { print "NA NA NA NA NA 0"; exit }
              for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
              med = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
              print first, last, v[0], v[n - 1], med, n }' "$SAMPLES"
}
# least-squares slope per minute of a column over the load samples with t >= from
slope() {
    awk -F, -v c="$1" -v from="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next }
        $2 == "load" && $1 + 0 >= from + 0 && $col != "NA" { x = $1 / 60; y = $col; n++; sx += x; sy += y; sxx += x * x; sxy += x * y }
        END { d = n * sxx - sx * sx; if (n < 3 || d == 0) print "NA"; else printf "%.1f", (n * sxy - sx * sy) / d }' "$SAMPLES"
}
mib() { awk -v k="$1" 'BEGIN { if (k == "NA") print "NA"; else printf "%.1f", k / 1024 }'; }

read -r _ idle_rss _ _ _ _ < <(colstats rss_kib idle)
read -r _ idle_fds _ _ _ _ < <(colstats fds idle)
read -r rss_start rss_end rss_min rss_max rss_med n_load < <(colstats rss_kib load)
read -r fd_start fd_end fd_min fd_max fd_med _ < <(colstats fds load)
read -r _ rss_after _ _ _ _ < <(colstats rss_kib after)
read -r _ fd_after _ _ _ _ < <(colstats fds after)
read -r _ _ _ _ cpu_med _ < <(colstats payguard_cpu_pct load)
# over the chunks: total responses / errors, median of the per-chunk percentiles
chunkstat() { # column -> "median min max"
    awk -F, -v c="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next }
        $col != "NA" { v[n++] = $col + 0 }
        END { if (n == 0) { print "NA NA NA"; exit }
              for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
              print ((n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2), v[0], v[n - 1] }' "$CHUNKS"
}
cfmt() { local a b c; read -r a b c < <(chunkstat "$1"); fmt "$a" "$b" "$c" "$2"; }
csum() { awk -F, -v c="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next } { s += $col } END { print s + 0 }' "$CHUNKS"; }
half=$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')
rss_slope=$(slope rss_kib "$half")
fd_slope=$(slope fds "$half")
{
    echo "Soak: payguard alone, \`--threads 1\` on core $PROXY_CPU, GUARD=$GUARD; oha + nginx backend on core $CLIENT_CPU."
    conn="keep-alive -c$CONNS"
    if [[ $PROTO == h2 ]]; then conn="HTTP/2 -c$H2_CONNS -p$H2_PARALLEL"; fi
    if [[ $NEW_CONNS == 1 ]]; then conn="a new connection per request (-c$CONNS --disable-keepalive)"; fi
    echo "Load: ${DURATION}s (ran ${LOAD_END}s) at $RATE req/s ($RATE_NOTE), open loop with latency correction, $conn;"
    echo "$n_load samples every ${SAMPLE}s, then ${AFTER}s after the load."
    echo
    echo "| | RSS MiB | open FDs |"
    echo "|---|---|---|"
    echo "| idle (after start, before load) | $(mib "$idle_rss") | $idle_fds |"
    echo "| under load: median | $(mib "$rss_med") | $fd_med |"
    echo "| under load: start (first sample, t = $(awk -F, '$2 == "load" { print $1; exit }' "$SAMPLES") s) | $(mib "$rss_start") | $fd_start |"
    echo "| under load: end (last sample) | $(mib "$rss_end") | $fd_end |"
    echo "| under load: min – max | $(mib "$rss_min") – $(mib "$rss_max") | $fd_min – $fd_max |"
    echo "| slope over the second half (t ≥ ${half}s), per minute | $(awk -v s="$rss_slope" 'BEGIN { if (s == "NA") print "NA"; else printf "%+.1f KiB", s }') | $(awk -v s="$fd_slope" 'BEGIN { if (s == "NA") print "NA"; else printf "%+.2f", s }') |"
    echo "| ${AFTER}s after the load | $(mib "$rss_after") | $fd_after |"
    echo
    echo "Load per ${CHUNK}s chunk (oha; latencies in ms; medians over $(($(wc -l <"$CHUNKS") - 1)) chunks, min–max):"
    echo "achieved $(cfmt rps 0) req/s of $RATE; p50 $(cfmt p50_ms 2), p99 $(cfmt p99_ms 2), p99.9 $(cfmt p999_ms 2), max $(cfmt max_ms 1);"
    echo "$(csum responses) responses, $(csum non2xx) non-2xx, $(csum errors) errors ($(csum aborted_at_deadline) in flight at a chunk's end, not counted); oha CPU $(cfmt oha_cpu_pct 0) %."
    echo "payguard CPU (median of samples): $cpu_med %. payguard threads: $(awk -F, 'NR > 1 { print $5 }' "$SAMPLES" | sort -n | uniq | paste -sd/ -)."
    echo
    echo "| chunk | from s | req/s | p50 ms | p99 ms | p99.9 ms | max ms | non-2xx | errors |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk -F, 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $4, $5, $6, $7, $8, $11, $10 }' "$CHUNKS"
    echo
    echo "Other load on the proxy core: median proxy-core busy $(colstats proxy_core_busy_pct load | cut -d' ' -f5) % vs payguard $cpu_med % (per sample in samples.csv)."
} >"$RESULTS_DIR/summary.md"

save_configs
echo
cat "$RESULTS_DIR/summary.md"
echo
log "samples: $SAMPLES"
log "summary: $RESULTS_DIR/summary.md"
