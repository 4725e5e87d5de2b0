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
GUARD=${GUARD:-0}                  # 1: every proxy also applies an IP allow rule + never-triggering rate limit
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

# ---------------------------------------------------------------- summary (also: SUMMARY_ONLY=<raw.csv>)
# median min max of column $3 for proxy $1 proto $2
# (optional $4: only runs where something else used at most $4 % of the proxy core; prints n too)
stats() {
    awk -F, -v p="$1" -v pr="$2" -v c="$3" -v maxo="${4:-}" '
        NR == 1 { for (i = 1; i <= NF; i++) { if ($i == c) col = i; if ($i == "proxy_core_other_pct") oc = i }; next }
        maxo != "" && ($oc == "NA" || $oc + 0 > maxo + 0) { next }
        $2 == p && $3 == pr && $col != "NA" && $col != "" { v[n++] = $col + 0 }
        END {
            if (n == 0) { print "NA NA NA 0"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            med = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
            print med, v[0], v[n - 1], n }' "$CSV"
}
fmt() { # median min max decimals
    awk -v m="$1" -v lo="$2" -v hi="$3" -v d="$4" 'BEGIN {
        if (m == "NA") { print "–"; exit }
        f = "%." d "f"; printf(f " (" f "–" f ")\n", m, lo, hi) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "–"; else printf "%.2f\n", a / b }'; }

summarize() {
    {
        echo "Medians over $REPS interleaved repetitions, min–max in parentheses. $(nproc) cores;"
        echo "proxies on core $PROXY_CPU, load generator + backend on core $CLIENT_CPU; TLS 1.3, RSA-2048; GUARD=$GUARD."
        echo
        echo "HTTP/1.1 keep-alive: \`wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s --latency\`"
        echo
        echo "| proxy | req/s | p50 ms | p99 ms | proxy CPU % | proxy CPU µs/req | proxy-core busy % | wrk CPU % | backend CPU % | errors |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        for p in $PROXIES; do
            read -r a b c _ < <(stats "$p" h1 rps); r=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 p50_ms); l50=$(fmt "$a" "$b" "$c" 2)
            read -r a b c _ < <(stats "$p" h1 p99_ms); l99=$(fmt "$a" "$b" "$c" 2)
            read -r a b c _ < <(stats "$p" h1 proxy_cpu_pct); pc=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 client_cpu_pct); cc=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 backend_cpu_pct); bc=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 proxy_core_busy_pct); kc=$(fmt "$a" "$b" "$c" 0)
            read -r a b c _ < <(stats "$p" h1 proxy_cpu_us_per_req); us=$(fmt "$a" "$b" "$c" 1)
            e=$(awk -F, -v p="$p" '$2 == p && $3 == "h1" { s += $13 + $14 } END { print s + 0 }' "$CSV")
            echo "| $p | $r | $l50 | $l99 | $pc | $us | $kc | $cc | $bc | $e |"
        done
        if [[ $H2 == 1 ]]; then
            echo
            echo "HTTP/2: \`h2load -c$H2_CONNS -m$H2_STREAMS -D$DURATION\` (h2load reports no percentiles: mean and max time per request)"
            echo
            echo "| proxy | req/s | mean ms | max ms | proxy CPU % | proxy CPU µs/req | proxy-core busy % | h2load CPU % | backend CPU % | errors |"
            echo "|---|---|---|---|---|---|---|---|---|---|"
            for p in $PROXIES; do
                read -r a b c _ < <(stats "$p" h2 rps); r=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 mean_ms); lm=$(fmt "$a" "$b" "$c" 2)
                read -r a b c _ < <(stats "$p" h2 max_ms); lx=$(fmt "$a" "$b" "$c" 1)
                read -r a b c _ < <(stats "$p" h2 proxy_cpu_pct); pc=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 client_cpu_pct); cc=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 backend_cpu_pct); bc=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 proxy_core_busy_pct); kc=$(fmt "$a" "$b" "$c" 0)
                read -r a b c _ < <(stats "$p" h2 proxy_cpu_us_per_req); us=$(fmt "$a" "$b" "$c" 1)
                e=$(awk -F, -v p="$p" '$2 == p && $3 == "h2" { s += $13 + $14 } END { print s + 0 }' "$CSV")
                echo "| $p | $r | $lm | $lx | $pc | $us | $kc | $cc | $bc | $e |"
            done
        fi
        disturbed=$(awk -F, 'NR > 1 && $18 != "NA" && $18 > 10 { n++ } END { print n + 0 }' "$CSV")
        echo
        echo "Runs where something else used >10% of the proxy core: $disturbed of $(($(wc -l <"$CSV") - 1))."
        if [[ " $PROXIES " == *" payguard "* ]]; then
            echo
            echo "Ratios of medians (payguard / peer; req/s higher is better, p99 and CPU µs/req lower is better):"
            echo
            echo "| | vs nginx | vs haproxy |"
            echo "|---|---|---|"
            row() { # label proto col
                local pg ng hp
                pg=$(stats payguard "$2" "$3" | cut -d' ' -f1)
                ng=$(stats nginx "$2" "$3" | cut -d' ' -f1)
                hp=$(stats haproxy "$2" "$3" | cut -d' ' -f1)
                echo "| $1 | $(ratio "$pg" "$ng") | $(ratio "$pg" "$hp") |"
            }
            row "HTTP/1.1 req/s" h1 rps
            row "HTTP/1.1 p99" h1 p99_ms
            row "HTTP/1.1 proxy CPU µs/req" h1 proxy_cpu_us_per_req
            if [[ $H2 == 1 ]]; then row "HTTP/2 req/s" h2 rps; row "HTTP/2 proxy CPU µs/req" h2 proxy_cpu_us_per_req; fi
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

# ---------------------------------------------------------------- payguard binary
if [[ -z ${PAYGUARD_BIN:-} ]]; then
    PAYGUARD_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/payguard
    if [[ ! -x $PAYGUARD_BIN || ${BUILD:-0} == 1 ]]; then
        log "building payguard (cargo build --release) in $ROOT"
        (cd "$ROOT" && timeout 1800 cargo build --release) || die "cargo build failed"
    fi
fi
[[ -x $PAYGUARD_BIN ]] || die "PAYGUARD_BIN=$PAYGUARD_BIN is not an executable"

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d /tmp/payguard-bench.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then
        log "temp dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$RESULTS_DIR"
CSV=$RESULTS_DIR/raw.csv
SUMMARY=$RESULTS_DIR/summary.md
echo "rep,proxy,proto,rps,p50_ms,p99_ms,mean_ms,max_ms,proxy_cpu_pct,client_cpu_pct,backend_cpu_pct,requests,errors,non2xx,wall_s,proxy_core_busy_pct,client_core_busy_pct,proxy_core_other_pct,proxy_cpu_us_per_req" >"$CSV"

# ---------------------------------------------------------------- helpers
# shellcheck source=../lib.sh
source "$ROOT/benches/lib.sh"

# utime+stime (clock ticks) of a process and its direct children (nginx master + worker)
proc_ticks() {
    local pid=$1 total=0 p line rest
    local -a f
    for p in "$pid" $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        line=$(cat /proc/"$p"/stat 2>/dev/null) || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

now() { date +%s.%N; }
# "busy total" jiffies of one core from /proc/stat (busy = everything but idle and iowait)
core_sample() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
core_pct() { # busy0 total0 busy1 total1
    awk -v b0="$1" -v t0="$2" -v b1="$3" -v t1="$4" 'BEGIN { if (t1 > t0) printf "%.1f", 100 * (b1 - b0) / (t1 - t0); else print "NA" }'
}
pct() { awk -v t="$1" -v w="$2" -v hz="$CLK_TCK" 'BEGIN { if (w > 0) printf "%.1f", 100 * t / hz / w; else print "NA" }'; }
to_ms() { # "1.23ms" / "850.00us" / "1.02s" -> ms
    awk -v v="$1" 'BEGIN {
        if (v == "" ) { print "NA"; exit }
        n = v + 0
        if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n = n * 60000; else if (v ~ /s$/) n = n * 1000
        printf "%.3f", n }'
}

# Runs a load generator pinned to CLIENT_CPU; prints its CPU ticks (children of a wrapper shell,
# i.e. cutime+cstime after wait) as the last line of "$out.cpu".
run_client() { # out timeout cmd...
    local out=$1 limit=$2
    shift 2
    taskset -c "$CLIENT_CPU" timeout "$limit" bash -c '
        "$@"; rc=$?
        line=$(cat /proc/$$/stat); rest=${line##*) }; read -r -a f <<<"$rest"
        echo $((f[13] + f[14])) >"$OUT.cpu"
        exit $rc' _ "$@" >"$out" 2>"$out.err" </dev/null && return 0
    return 1
}
export OUT

# ---------------------------------------------------------------- certificate
log "generating RSA-2048 self-signed certificate"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
    -keyout "$TMP/server.key" -out "$TMP/server.crt" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
cat "$TMP/server.crt" "$TMP/server.key" >"$TMP/haproxy.pem"

for port in "$BACKEND_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$PAYGUARD_PORT" "$PAYGUARD_ADMIN_PORT"; do
    port_in_use "$port" && die "port $port is already in use (override with *_PORT env vars)"
done

# ---------------------------------------------------------------- backend
start_backend "$BACKEND_PORT"
[[ $(curl -s "http://127.0.0.1:$BACKEND_PORT/") == '{"ok":true}' ]] || die "backend does not answer {\"ok\":true}"

NGINX_USER=""
if [[ $EUID == 0 ]]; then NGINX_USER="user root root;"; fi

# ---------------------------------------------------------------- proxies
declare -A PORT PID
PORT[nginx]=$NGINX_PORT
PORT[haproxy]=$HAPROXY_PORT
PORT[payguard]=$PAYGUARD_PORT

NGINX_GUARD_HTTP="" NGINX_GUARD_LOC="" HAPROXY_GUARD=""
if [[ $GUARD == 1 ]]; then
    NGINX_GUARD_HTTP="limit_req_zone \$binary_remote_addr zone=rl:10m rate=1000000r/s;"
    NGINX_GUARD_LOC="allow 127.0.0.0/8; deny all; limit_req zone=rl burst=1000000 nodelay;"
    HAPROXY_GUARD="    stick-table type ip size 100k expire 30s store http_req_rate(1s)
    http-request deny deny_status 403 if !{ src 127.0.0.0/8 }
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1000000 }"
fi

start_nginx() {
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx.conf" <<EOF
$NGINX_USER
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    $NGINX_GUARD_HTTP
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl http2 backlog=4096;
        ssl_certificate $TMP/server.crt;
        ssl_certificate_key $TMP/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            $NGINX_GUARD_LOC
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" nginx -p "$TMP/nginx" -e "$TMP/nginx.log" -c "$TMP/nginx.conf" >>"$TMP/nginx.log" 2>&1 &
    PID[nginx]=$!
    PIDS+=("${PID[nginx]}")
}

start_haproxy() {
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 300s
    option http-keep-alive
    option forwardfor
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT ssl crt $TMP/haproxy.pem alpn h2,http/1.1
$HAPROXY_GUARD
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:$BACKEND_PORT
EOF
    taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" >>"$TMP/haproxy.log" 2>&1 &
    PID[haproxy]=$!
    PIDS+=("${PID[haproxy]}")
}

start_payguard() {
    mkdir -p "$TMP/rules"
    if [[ $GUARD == 1 ]]; then
        cat >"$TMP/rules/00-bench.toml" <<EOF
[defaults]
ip_allow = ["127.0.0.0/8"]
rate_limit = { key = "ip", rate = "1000000/s", burst = 1000000 }
EOF
    fi
    cat >"$TMP/payguard.toml" <<EOF
[server]
listen = "127.0.0.1:$PAYGUARD_PORT"
tls_cert = "$TMP/server.crt"
tls_key = "$TMP/server.key"
admin_listen = "127.0.0.1:$PAYGUARD_ADMIN_PORT"

[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"

[rules]
dir = "$TMP/rules"

[log]
level = "warn"
EOF
    taskset -c "$PROXY_CPU" "$PAYGUARD_BIN" run --config "$TMP/payguard.toml" --threads 1 >>"$TMP/payguard.log" 2>&1 &
    PID[payguard]=$!
    PIDS+=("${PID[payguard]}")
}

for p in $PROXIES; do
    log "starting $p on 127.0.0.1:${PORT[$p]} (core $PROXY_CPU)"
    "start_$p"
    wait_port "${PORT[$p]}" "${PID[$p]}" "$p"
    # sanity: HTTP/1.1 and HTTP/2 through the proxy, TLS 1.3
    for v in --http1.1 --http2; do
        body=$(timeout 10 curl -sk "$v" -w ' %{http_version}' "https://127.0.0.1:${PORT[$p]}/") || die "$p: curl $v failed; log: $(tail -n 20 "$TMP/$p.log")"
        [[ $body == '{"ok":true}'* ]] || die "$p: unexpected answer to curl $v: $body"
        log "  $p curl $v -> $body"
    done
    tlsv=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:${PORT[$p]}" -alpn h2 2>/dev/null | awk '/^New, /{sub(",","",$2); v=$2} END{print v}') || true
    log "  $p negotiates ${tlsv:-?}"
done

# ---------------------------------------------------------------- measurement
# Between runs nothing of ours is busy: if a core is, someone else (a compile, a test suite) is
# using the machine. Wait for it to go quiet so the runs are not disturbed.
wait_quiet() {
    local waited=0 a0 a1 b0 b1 ba bb
    while :; do
        a0=$(core_sample "$PROXY_CPU"); b0=$(core_sample "$CLIENT_CPU")
        sleep 1
        a1=$(core_sample "$PROXY_CPU"); b1=$(core_sample "$CLIENT_CPU")
        # shellcheck disable=SC2086
        ba=$(core_pct $a0 $a1); bb=$(core_pct $b0 $b1)
        if awk -v a="$ba" -v b="$bb" -v m="$QUIET_MAX" 'BEGIN { exit !(a < m && b < m) }'; then
            return 0
        fi
        if ((waited == 0)); then log "machine busy while idle (core$PROXY_CPU $ba%, core$CLIENT_CPU $bb%): waiting up to ${QUIET_TIMEOUT}s"; fi
        waited=$((waited + 1))
        if ((waited >= QUIET_TIMEOUT)); then
            log "WARNING: machine still busy after ${QUIET_TIMEOUT}s; measuring anyway"
            return 0
        fi
    done
}

measure() { # rep proxy proto
    local rep=$1 p=$2 proto=$3 url="https://127.0.0.1:${PORT[$2]}/"
    local out="$TMP/run-$rep-$p-$proto.txt"
    local t0 t1 pt0 pt1 bt0 bt1 wall rc=0
    OUT=$out
    local pc0 pc1 cc0 cc1
    pc0=$(core_sample "$PROXY_CPU"); cc0=$(core_sample "$CLIENT_CPU")
    pt0=$(proc_ticks "${PID[$p]}"); bt0=$(proc_ticks "$BACKEND_PID"); t0=$(now)
    if [[ $proto == h1 ]]; then
        run_client "$out" $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --timeout 5s --latency "$url" || rc=$?
    else
        run_client "$out" $((DURATION + 30)) h2load -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DURATION" "$url" || rc=$?
    fi
    t1=$(now); pt1=$(proc_ticks "${PID[$p]}"); bt1=$(proc_ticks "$BACKEND_PID")
    pc1=$(core_sample "$PROXY_CPU"); cc1=$(core_sample "$CLIENT_CPU")
    local pcore ccore
    # shellcheck disable=SC2086
    pcore=$(core_pct $pc0 $pc1); ccore=$(core_pct $cc0 $cc1)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    kill -0 "${PID[$p]}" 2>/dev/null || { log "$p DIED during rep $rep $proto; log: $(tail -n 30 "$TMP/$p.log")"; }
    local pcpu bcpu ccpu
    pcpu=$(pct $((pt1 - pt0)) "$wall"); bcpu=$(pct $((bt1 - bt0)) "$wall")
    ccpu=NA; [[ -s $out.cpu ]] && ccpu=$(pct "$(cat "$out.cpu")" "$wall")
    local other
    other=$(awk -v a="$pcore" -v b="$pcpu" 'BEGIN { if (a == "NA" || b == "NA") print "NA"; else printf "%.1f", a - b }')
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
    local uspr
    uspr=$(awk -v t=$((pt1 - pt0)) -v hz="$CLK_TCK" -v n="${reqs:-0}" 'BEGIN { if (n + 0 > 0) printf "%.1f", t * 1e6 / hz / n; else print "NA" }')
    if [[ $rc != 0 ]]; then log "WARNING: $proto client for $p exited $rc: $(tail -n 5 "$out.err" 2>/dev/null)"; fi
    if [[ -n ${errs:-} && ${errs:-0} != 0 ]]; then log "WARNING: $p $proto rep $rep: $errs errors: $(grep -E 'Socket errors|^requests:' "$out")"; fi
    if [[ -n ${non2xx:-} && ${non2xx:-0} != 0 ]]; then log "WARNING: $p $proto rep $rep: $non2xx non-2xx responses"; fi
    echo "$rep,$p,$proto,${rps:-NA},${p50:-NA},${p99:-NA},${mean:-NA},${max:-NA},$pcpu,$ccpu,$bcpu,${reqs:-NA},${errs:-0},${non2xx:-0},$wall,$pcore,$ccore,$other,$uspr" >>"$CSV"
    log "rep $rep $p $proto: ${rps:-NA} req/s p50=${p50} p99=${p99} mean=${mean} ms; cpu proxy=$pcpu% (${uspr} us/req) client=$ccpu% backend=$bcpu%; core$PROXY_CPU busy=$pcore% core$CLIENT_CPU busy=$ccore%"
    if awk -v o="$other" 'BEGIN { exit !(o != "NA" && o > 10) }'; then
        log "WARNING: something else used ${other}% of the proxy core during this run: the numbers are disturbed"
    fi
    cp "$out" "$RESULTS_DIR/" 2>/dev/null || true
}

if [[ $WARMUP != 0 ]]; then
    for p in $PROXIES; do
        log "warm-up $p (${WARMUP}s)"
        taskset -c "$CLIENT_CPU" timeout $((WARMUP + 20)) wrk -t1 -c"$WRK_CONNS" -d"${WARMUP}s" "https://127.0.0.1:${PORT[$p]}/" >/dev/null 2>&1 || log "warm-up of $p failed"
    done
fi

PROTOS="h1"
if [[ $H2 == 1 ]]; then PROTOS="h1 h2"; fi
for rep in $(seq "$REPS"); do
    for proto in $PROTOS; do
        for p in $PROXIES; do
            wait_quiet
            measure "$rep" "$p" "$proto"
        done
    done
done

summarize

cp "$TMP"/*.conf "$TMP"/*.cfg "$TMP"/payguard.toml "$RESULTS_DIR/" 2>/dev/null || true
for p in $PROXIES backend; do cp "$TMP/$p.log" "$RESULTS_DIR/$p.log" 2>/dev/null || true; done
echo
cat "$SUMMARY"
echo
log "raw results: $CSV"
log "summary:     $SUMMARY"
