#!/usr/bin/env bash
# Side-by-side load benchmark: payguard vs nginx vs haproxy as TLS-terminating
# reverse proxies in front of the same nginx backend, same certificate, same cores.
# See benches/load/README.md for the knobs.
set -euo pipefail

# ---------------------------------------------------------------- knobs
REPS=${REPS:-5}                    # interleaved repetitions (nginx, haproxy, payguard, nginx, ...)
DURATION=${DURATION:-10}           # seconds per wrk run and per h2load run
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-50}
H2_CONNS=${H2_CONNS:-32}
H2_STREAMS=${H2_STREAMS:-10}
H2=${H2:-1}                        # 0: skip the HTTP/2 (h2load) runs
WARMUP=${WARMUP:-2}                # seconds of wrk warm-up per proxy before measuring (0: none)
PROXIES=${PROXIES:-"nginx haproxy payguard"}
GUARD=${GUARD:-0}                  # 1: every proxy also applies an IP allow rule, a never-triggering rate limit and header validation (GET/HEAD only, User-Agent required)
PROXY_CPU=${PROXY_CPU:-1}          # core the proxies are pinned to
CLIENT_CPU=${CLIENT_CPU:-0}        # core the load generator and the backend are pinned to
BACKEND_PORT=${BACKEND_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18443}
HAPROXY_PORT=${HAPROXY_PORT:-18444}
PAYGUARD_PORT=${PAYGUARD_PORT:-18445}
PAYGUARD_ADMIN_PORT=${PAYGUARD_ADMIN_PORT:-18901}
QUIET_MAX=${QUIET_MAX:-15}          # before each run, wait until both cores are below this busy % (other processes)
QUIET_TIMEOUT=${QUIET_TIMEOUT:-300} # ... but at most this many seconds, then measure anyway (and warn)
KEEP_TMP=${KEEP_TMP:-0}            # 1: keep the temp dir (configs, logs) after the run

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/benches/load/results/$(date -u +%Y%m%dT%H%M%SZ)}
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in nginx haproxy wrk openssl taskset curl timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx haproxy wrk nghttp2-client openssl curl)"
done
if [[ $H2 == 1 ]]; then command -v h2load >/dev/null || die "h2load not found (apt-get install -y nghttp2-client)"; fi

# shellcheck source=common.sh
source "$ROOT/benches/load/common.sh"

# ---------------------------------------------------------------- summary (also: SUMMARY_ONLY=<raw.csv>)
summarize() {
    {
        echo "Medians over $REPS interleaved repetitions, min–max in parentheses. $(nproc) cores;"
        echo "proxies on core $PROXY_CPU, load generator + backend on core $CLIENT_CPU; TLS 1.3, $CERT_NAME; GUARD=$GUARD."
        echo
        echo "HTTP/1.1 keep-alive: \`wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s --latency\`"
        echo
        echo "| proxy | req/s | p50 ms | p99 ms | proxy CPU % | proxy CPU µs/req | of which user space | proxy-core busy % | wrk CPU % | backend CPU % | errors |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|"
        for p in $PROXIES; do
            read -r a b c _ < <(stats "$p" h1 rps); r=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 p50_ms); l50=$(fmt "$a" "$b" "$c" 2)
            read -r a b c _ < <(stats "$p" h1 p99_ms); l99=$(fmt "$a" "$b" "$c" 2)
            read -r a b c _ < <(stats "$p" h1 proxy_cpu_pct); pc=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 client_cpu_pct); cc=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 backend_cpu_pct); bc=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 proxy_core_busy_pct); kc=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 proxy_cpu_us_per_req); us=$(fmt "$a" "$b" "$c" 1)
            read -r a b c _ < <(stats "$p" h1 proxy_user_us_per_req); uu=$(fmt "$a" "$b" "$c" 1)
            e=$(awk -F, -v p="$p" '$2 == p && $3 == "h1" { s += $13 + $14 } END { print s + 0 }' "$CSV")
            echo "| $p | $r | $l50 | $l99 | $pc | $us | $uu | $kc | $cc | $bc | $e |"
        done
        if [[ $H2 == 1 ]]; then
            echo
            echo "HTTP/2: \`h2load -c$H2_CONNS -m$H2_STREAMS -D$DURATION\` (h2load reports no percentiles: mean and max time per request)"
            echo
            echo "| proxy | req/s | mean ms | max ms | proxy CPU % | proxy CPU µs/req | of which user space | proxy-core busy % | h2load CPU % | backend CPU % | errors |"
            echo "|---|---|---|---|---|---|---|---|---|---|---|"
            for p in $PROXIES; do
                read -r a b c _ < <(stats "$p" h2 rps); r=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 mean_ms); lm=$(fmt "$a" "$b" "$c" 2)
                read -r a b c _ < <(stats "$p" h2 max_ms); lx=$(fmt "$a" "$b" "$c" 1)
                read -r a b c _ < <(stats "$p" h2 proxy_cpu_pct); pc=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 client_cpu_pct); cc=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 backend_cpu_pct); bc=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 proxy_core_busy_pct); kc=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 proxy_cpu_us_per_req); us=$(fmt "$a" "$b" "$c" 1)
                read -r a b c _ < <(stats "$p" h2 proxy_user_us_per_req); uu=$(fmt "$a" "$b" "$c" 1)
                e=$(awk -F, -v p="$p" '$2 == p && $3 == "h2" { s += $13 + $14 } END { print s + 0 }' "$CSV")
                echo "| $p | $r | $lm | $lx | $pc | $us | $uu | $kc | $cc | $bc | $e |"
            done
        fi
        disturbed=$(disturbed_runs)
        echo
        echo "Runs where something else used >10% of the proxy core: $disturbed of $(($(wc -l <"$CSV") - 1))."
        if [[ " $PROXIES " == *" payguard "* ]]; then
            echo
            echo "Ratios of medians (payguard / peer; req/s higher is better, p99 and CPU µs/req lower is better):"
            echo
            echo "| | vs nginx | vs haproxy |"
            echo "|---|---|---|"
            ratio_row "HTTP/1.1 req/s" h1 rps
            ratio_row "HTTP/1.1 p99" h1 p99_ms
            ratio_row "HTTP/1.1 proxy CPU µs/req" h1 proxy_cpu_us_per_req
            if [[ $H2 == 1 ]]; then ratio_row "HTTP/2 req/s" h2 rps; ratio_row "HTTP/2 proxy CPU µs/req" h2 proxy_cpu_us_per_req; fi
        fi
        if [[ $disturbed != 0 ]]; then
            echo
            echo "Undisturbed runs only (something else used ≤10% of the proxy core): median req/s (min–max) [runs]"
            echo
            echo "| proxy | HTTP/1.1 req/s | HTTP/2 req/s |"
            echo "|---|---|---|"
            for p in $PROXIES; do
                read -r a b c n < <(stats "$p" h1 rps 10); r1="$(fmt "$a" "$b" "$c" 0) [$n]"
                r2="–"
                if [[ $H2 == 1 ]]; then read -r a b c n < <(stats "$p" h2 rps 10); r2="$(fmt "$a" "$b" "$c" 0) [$n]"; fi
                echo "| $p | $r1 | $r2 |"
            done
        fi
    } >"$SUMMARY"
}

if [[ -n ${SUMMARY_ONLY:-} ]]; then
    CSV=$SUMMARY_ONLY
    SUMMARY=$(dirname "$CSV")/summary.md
    REPS=$(awk -F, 'NR > 1 { print $1 }' "$CSV" | sort -n | tail -n 1)
    PROXIES=$(awk -F, 'NR > 1 && !seen[$2]++ { printf "%s ", $2 }' "$CSV")
    summarize
    cat "$SUMMARY"
    exit 0
fi

# ---------------------------------------------------------------- set-up (common.sh)
find_payguard
bench_init payguard-bench

mkdir -p "$RESULTS_DIR"
CSV=$RESULTS_DIR/raw.csv
SUMMARY=$RESULTS_DIR/summary.md
echo "rep,proxy,proto,rps,p50_ms,p99_ms,mean_ms,max_ms,proxy_cpu_pct,client_cpu_pct,backend_cpu_pct,requests,errors,non2xx,wall_s,proxy_core_busy_pct,client_core_busy_pct,proxy_core_other_pct,proxy_cpu_us_per_req,proxy_user_us_per_req" >"$CSV"

start_proxies

# ---------------------------------------------------------------- measurement
measure() { # rep proxy proto
    local rep=$1 p=$2 proto=$3 url="https://127.0.0.1:${PORT[$2]}/"
    local out="$TMP/run-$rep-$p-$proto.txt"
    local rc=0
    window_start "${PID[$p]}"
    if [[ $proto == h1 ]]; then
        run_client "$out" $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --timeout 5s --latency -H "User-Agent: $BENCH_UA" "$url" || rc=$?
    else
        run_client "$out" $((DURATION + 30)) h2load -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DURATION" -H "user-agent: $BENCH_UA" "$url" || rc=$?
    fi
    window_end "${PID[$p]}"
    kill -0 "${PID[$p]}" 2>/dev/null || { log "$p DIED during rep $rep $proto; log: $(tail -n 30 "$TMP/$p.log")"; }
    local pcpu=$W_PCPU bcpu=$W_BCPU ccpu pcore=$W_PCORE ccore=$W_CCORE other=$W_OTHER wall=$W_WALL
    ccpu=$(client_pct "$out")
    local rps=NA p50=NA p99=NA mean=NA max=NA reqs=NA errs=0 non2xx=0
    if [[ $proto == h1 ]]; then
        rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
        p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
        p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
        mean=$(to_ms "$(awk '$1=="Latency" && NF>=5 {print $2; exit}' "$out")")
        max=$(to_ms "$(awk '$1=="Latency" && NF>=5 {print $4; exit}' "$out")")
        reqs=$(awk '/requests in/{print $1}' "$out")
        errs=$(awk '/Socket errors/{gsub(",","");s=0;for(i=1;i<=NF;i++) if($i ~ /^[0-9]+$/) s+=$i; print s}' "$out")
        non2xx=$(awk '/Non-2xx/{print $NF}' "$out")
    else
        rps=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$out")
        mean=$(to_ms "$(awk '/^time for request:/{print $6}' "$out")")
        max=$(to_ms "$(awk '/^time for request:/{print $5}' "$out")")
        reqs=$(awk '/^requests:/{for(i=2;i<=NF;i++) if($i ~ /^succeeded/) print $(i-1)}' "$out")
        errs=$(awk '/^requests:/{for(i=1;i<=NF;i++){if($i ~ /^failed/)f=$(i-1); if($i ~ /^errored/)e=$(i-1)}; print f+e}' "$out")
        non2xx=$(awk '/^status codes:/{gsub(",","");print $5+$7+$9}' "$out")
        grep -q 'Application protocol: h2' "$out" || log "WARNING: $p did not negotiate h2 for h2load"
    fi
    local uspr usr
    uspr=$(awk -v t="$W_PTICKS" -v hz="$CLK_TCK" -v n="${reqs:-0}" 'BEGIN { if (n + 0 > 0) printf "%.1f", t * 1e6 / hz / n; else print "NA" }')
    usr=$(awk -v t="$W_PUTICKS" -v hz="$CLK_TCK" -v n="${reqs:-0}" 'BEGIN { if (n + 0 > 0) printf "%.1f", t * 1e6 / hz / n; else print "NA" }')
    if [[ $rc != 0 ]]; then log "WARNING: $proto client for $p exited $rc: $(tail -n 5 "$out.err" 2>/dev/null)"; fi
    if [[ -n ${errs:-} && ${errs:-0} != 0 ]]; then log "WARNING: $p $proto rep $rep: $errs errors: $(grep -E 'Socket errors|^requests:' "$out")"; fi
    if [[ -n ${non2xx:-} && ${non2xx:-0} != 0 ]]; then log "WARNING: $p $proto rep $rep: $non2xx non-2xx responses"; fi
    echo "$rep,$p,$proto,${rps:-NA},${p50:-NA},${p99:-NA},${mean:-NA},${max:-NA},$pcpu,$ccpu,$bcpu,${reqs:-NA},${errs:-0},${non2xx:-0},$wall,$pcore,$ccore,$other,$uspr,$usr" >>"$CSV"
    log "rep $rep $p $proto: ${rps:-NA} req/s p50=${p50} p99=${p99} mean=${mean} ms; cpu proxy=$pcpu% (${uspr} us/req, ${usr} in user space) client=$ccpu% backend=$bcpu%; core$PROXY_CPU busy=$pcore% core$CLIENT_CPU busy=$ccore%"
    cp "$out" "$RESULTS_DIR/" 2>/dev/null || true
}

if [[ $WARMUP != 0 ]]; then
    for p in $PROXIES; do
        log "warm-up $p (${WARMUP}s)"
        taskset -c "$CLIENT_CPU" timeout $((WARMUP + 20)) wrk -t1 -c"$WRK_CONNS" -d"${WARMUP}s" -H "User-Agent: $BENCH_UA" "https://127.0.0.1:${PORT[$p]}/" >/dev/null 2>&1 || log "warm-up of $p failed"
    done
fi

PROTOS="h1"
if [[ $H2 == 1 ]]; then PROTOS="h1 h2"; fi
for rep in $(seq "$REPS"); do
    for proto in $PROTOS; do
        for p in $PROXIES; do
            if [[ $proto == h2 && " $H1_ONLY " == *" $p "* ]]; then continue; fi
            wait_quiet
            measure "$rep" "$p" "$proto"
        done
    done
done

summarize

save_configs
echo
cat "$SUMMARY"
echo
log "raw results: $CSV"
log "summary:     $SUMMARY"
