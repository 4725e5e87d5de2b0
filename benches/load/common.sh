# Shared by the side-by-side scripts (benches/load/run.sh, latency.sh, handshakes.sh and
# benches/soak/run.sh): the three proxies' configurations, so that every measurement runs exactly
# the same set-up; CPU accounting from /proc; the quiet-machine wait; the summary statistics.
#
# Source it after defining log() and die() and ROOT; then call `bench_init` (temp dir, cleanup
# trap, certificate, backend) and `start_proxies` (every proxy in $PROXIES, checked with curl).
# Knobs it reads (with these defaults) are documented in benches/load/README.md.

: "${PROXIES:=nginx haproxy payguard}"
: "${GUARD:=0}"                 # 1: IP allow + never-triggering rate limit + header validation
: "${PROXY_CPU:=1}"             # core the proxies are pinned to
: "${CLIENT_CPU:=0}"            # core the load generator and the backend are pinned to
: "${BACKEND_PORT:=18080}"
: "${NGINX_PORT:=18443}"
: "${HAPROXY_PORT:=18444}"
: "${PAYGUARD_PORT:=18445}"
: "${PAYGUARD_ADMIN_PORT:=18901}"
# PROXIES may also name payguard_base: the same configuration on $PAYGUARD_BASE_BIN (an older
# build), to compare two builds side by side in one run.
: "${PAYGUARD_BASE_PORT:=18446}"
: "${PAYGUARD_BASE_ADMIN_PORT:=18902}"
# The floors of issue #16 (benches/floor/): bare forwarders, built by benches/floor/build.sh.
: "${FLOOR_HYPER_PORT:=18447}"
: "${FLOOR_BYTES_PORT:=18448}"
: "${FLOOR_URING_PORT:=18449}"
# Proxies that speak HTTP/1.1 only (ALPN http/1.1): run.sh gives them no HTTP/2 run.
# shellcheck disable=SC2034 # read by run.sh
H1_ONLY="floor_bytes floor_uring"
: "${QUIET_MAX:=15}"            # before each run, wait until both cores are below this busy % ...
: "${QUIET_TIMEOUT:=300}"       # ... for at most this many seconds, then measure anyway (and warn)
: "${PAYGUARD_SERVER_EXTRA:=}"  # more lines for payguard's [server] table
: "${MAX_CONNS:=}"              # connections each proxy takes at once (default: nginx 8192, haproxy 8000, payguard 10000)
# nginx closes idle keep-alive connections once fewer than 1/16 of its worker_connections are free.
NGINX_CONNS=${MAX_CONNS:+$((MAX_CONNS * 17 / 16 + 100))}
: "${CERT:=rsa}"                # the certificate all proxies share: rsa (RSA-2048) or ecdsa (P-256)
if [[ $CERT == ecdsa ]]; then CERT_NAME="ECDSA P-256"; else CERT_NAME="RSA-2048"; fi
: "${KEEP_TMP:=0}"              # 1: keep the temp dir (configs, logs) after the run
# Every client sends this User-Agent; GUARD=1 makes every proxy require the header.
BENCH_UA="payguard-bench"
CLK_TCK=$(getconf CLK_TCK)

# shellcheck source=../lib.sh
source "$ROOT/benches/lib.sh"

# ---------------------------------------------------------------- process and core accounting
# utime+stime (clock ticks) of a process and its direct children (nginx master + worker)
# CPU ticks of a process and its children: "user+system user".
proc_ticks() {
    local pid=$1 total=0 user=0 p line rest
    local -a f
    for p in "$pid" $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        line=$(cat /proc/"$p"/stat 2>/dev/null) || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
        user=$((user + f[11]))
    done
    echo "$total $user"
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

# Runs a load generator pinned to CLIENT_CPU; writes its CPU ticks (children of a wrapper shell,
# i.e. cutime+cstime after wait) to "$out.cpu". Several commands may run in parallel inside one
# `bash -c` given as the command: their CPU is summed the same way.
# The client runs in the background and is waited for, so that Ctrl-C / TERM reach the trap at
# once (bash defers traps while a foreground child runs); the cleanup then stops `timeout`, which
# passes the signal on to its whole process group (the client).
_CLIENT_PID=""
run_client() { # out timeout cmd...
    local out=$1 limit=$2 rc=0
    shift 2
    OUT=$out taskset -c "$CLIENT_CPU" timeout "$limit" bash -c '
        "$@"; rc=$?
        line=$(cat /proc/$$/stat); rest=${line##*) }; read -r -a f <<<"$rest"
        echo $((f[13] + f[14])) >"$OUT.cpu"
        exit $rc' _ "$@" >"$out" 2>"$out.err" </dev/null &
    _CLIENT_PID=$!
    wait "$_CLIENT_PID" || rc=$?
    _CLIENT_PID=""
    return "$rc"
}

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

# Measurement window bookkeeping: `window_start PID` before the client runs, `window_end PID`
# after; sets W_WALL (s), W_PCPU (proxy CPU %), W_PTICKS (of which W_PUTICKS in user space), W_BCPU (backend CPU %), W_PCORE and
# W_CCORE (busy % of the two cores) and W_OTHER (busy % of the proxy core not used by the proxy:
# above ~10 something else ran there and the run is disturbed).
window_start() {
    _w_pc0=$(core_sample "$PROXY_CPU"); _w_cc0=$(core_sample "$CLIENT_CPU")
    read -r _w_pt0 _w_pu0 < <(proc_ticks "$1"); read -r _w_bt0 _ < <(proc_ticks "$BACKEND_PID"); _w_t0=$(now)
}
# shellcheck disable=SC2034 # W_* are read by the scripts that source this file
window_end() {
    local t1 pt1 pu1 bt1 pc1 cc1
    t1=$(now); read -r pt1 pu1 < <(proc_ticks "$1"); read -r bt1 _ < <(proc_ticks "$BACKEND_PID")
    pc1=$(core_sample "$PROXY_CPU"); cc1=$(core_sample "$CLIENT_CPU")
    # shellcheck disable=SC2086
    W_PCORE=$(core_pct $_w_pc0 $pc1); W_CCORE=$(core_pct $_w_cc0 $cc1)
    W_WALL=$(awk -v a="$_w_t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    W_PTICKS=$((pt1 - _w_pt0)); W_PUTICKS=$((pu1 - _w_pu0))
    W_PCPU=$(pct "$W_PTICKS" "$W_WALL"); W_BCPU=$(pct $((bt1 - _w_bt0)) "$W_WALL")
    W_OTHER=$(awk -v a="$W_PCORE" -v b="$W_PCPU" 'BEGIN { if (a == "NA" || b == "NA") print "NA"; else printf "%.1f", a - b }')
    if awk -v o="$W_OTHER" 'BEGIN { exit !(o != "NA" && o > 10) }'; then
        log "WARNING: something else used ${W_OTHER}% of the proxy core during this run: the numbers are disturbed"
    fi
}
client_pct() { # out: CPU % of the client recorded by run_client over W_WALL
    if [[ -s $1.cpu ]]; then pct "$(cat "$1.cpu")" "$W_WALL"; else echo NA; fi
}

# ---------------------------------------------------------------- summary statistics
# stats proxy kind column [max_other]: "median min max n" of column (by header name) of $CSV over
# the rows whose 2nd column is proxy and 3rd is kind; with max_other, only the runs where
# something else used at most that % of the proxy core (column proxy_core_other_pct).
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
cell() { # proxy kind column decimals -> "median (min–max)"
    local a b c
    read -r a b c _ < <(stats "$1" "$2" "$3")
    fmt "$a" "$b" "$c" "$4"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "–"; else printf "%.2f\n", a / b }'; }
ratio_row() { # label kind column: "| label | payguard/nginx | payguard/haproxy |" from the medians
    local pg ng hp
    pg=$(stats payguard "$2" "$3" | cut -d' ' -f1)
    ng=$(stats nginx "$2" "$3" | cut -d' ' -f1)
    hp=$(stats haproxy "$2" "$3" | cut -d' ' -f1)
    echo "| $1 | $(ratio "$pg" "$ng") | $(ratio "$pg" "$hp") |"
}
disturbed_runs() { # runs of $CSV where something else used >10% of the proxy core
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "proxy_core_other_pct") oc = i; next }
        $oc != "NA" && $oc + 0 > 10 { n++ } END { print n + 0 }' "$CSV"
}

# ---------------------------------------------------------------- set-up
# bench_init tmp-prefix: temp dir, cleanup trap (stops every process in PIDS), the certificate
# ($CERT) shared by all proxies, free ports, nginx backend on CLIENT_CPU.
bench_init() {
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local newkey
    case $CERT in
        rsa) newkey=(-newkey rsa:2048) ;;
        ecdsa) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
        *) die "CERT: rsa or ecdsa, not '$CERT'" ;;
    esac
    log "generating $CERT_NAME self-signed certificate"
    openssl req -x509 "${newkey[@]}" -nodes -sha256 -days 2 \
        -keyout "$TMP/server.key" -out "$TMP/server.crt" -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
    cat "$TMP/server.crt" "$TMP/server.key" >"$TMP/haproxy.pem"

    local port
    for port in "$BACKEND_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$PAYGUARD_PORT" "$PAYGUARD_ADMIN_PORT"; do
        port_in_use "$port" && die "port $port is already in use (override with *_PORT env vars)"
    done

    start_backend "$BACKEND_PORT"
    [[ $(curl -s "http://127.0.0.1:$BACKEND_PORT/") == '{"ok":true}' ]] || die "backend does not answer {\"ok\":true}"
}

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    if [[ -n $_CLIENT_PID ]]; then kill -TERM "$_CLIENT_PID" 2>/dev/null || true; fi
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

# ---------------------------------------------------------------- proxies
declare -A PORT PID
PORT[nginx]=$NGINX_PORT
PORT[haproxy]=$HAPROXY_PORT
PORT[payguard]=$PAYGUARD_PORT
PORT[payguard_base]=$PAYGUARD_BASE_PORT
PORT[floor_hyper]=$FLOOR_HYPER_PORT
PORT[floor_bytes]=$FLOOR_BYTES_PORT
PORT[floor_uring]=$FLOOR_URING_PORT

NGINX_USER=""
if [[ $EUID == 0 ]]; then NGINX_USER="user root root;"; fi

# GUARD=1, the same three checks in each proxy, all passing for the benchmark's requests:
# - IP allow list 127.0.0.0/8 (403 otherwise);
# - a per-IP rate limit of 1,000,000/s with a burst of 1,000,000: never triggers;
# - header validation: only GET/HEAD, and a User-Agent header must be present (every client of
#   these scripts sends one). User-Agent, not Host: an HTTP/2 request carries :authority and
#   may have no Host header at all.
NGINX_GUARD_HTTP="" NGINX_GUARD_LOC="" HAPROXY_GUARD=""
if [[ $GUARD == 1 ]]; then
    NGINX_GUARD_HTTP="limit_req_zone \$binary_remote_addr zone=rl:10m rate=1000000r/s;"
    NGINX_GUARD_LOC="allow 127.0.0.0/8; deny all; limit_req zone=rl burst=1000000 nodelay;
            limit_except GET { deny all; }
            if (\$http_user_agent = \"\") { return 400; }"
    HAPROXY_GUARD="    stick-table type ip size 100k expire 30s store http_req_rate(1s)
    http-request deny deny_status 403 if !{ src 127.0.0.0/8 }
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1000000 }
    http-request deny deny_status 405 if !METH_GET
    http-request deny deny_status 400 if !{ req.hdr(user-agent) -m found }"
fi

start_nginx() {
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx.conf" <<EOF
$NGINX_USER
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections ${NGINX_CONNS:-8192}; }
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
    maxconn ${HAPROXY_MAXCONN:-${MAX_CONNS:-8000}}
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
    start_payguard_bin payguard "$PAYGUARD_BIN" "$PAYGUARD_PORT" "$PAYGUARD_ADMIN_PORT"
}

start_payguard_base() {
    [[ -x ${PAYGUARD_BASE_BIN:-} ]] || die "PROXIES names payguard_base: set PAYGUARD_BASE_BIN to an executable"
    start_payguard_bin payguard_base "$PAYGUARD_BASE_BIN" "$PAYGUARD_BASE_PORT" "$PAYGUARD_BASE_ADMIN_PORT"
}

# The floors of issue #16 (GUARD=0 only: a floor applies no rules), each on one thread:
# - floor_hyper: hyper + tokio-rustls + payguard's pool, nothing else;
# - floor_bytes: an HTTP/1.1 path of its own (httparse, heads forwarded as bytes) on tokio +
#   tokio-rustls; HTTP/1.1 only;
# - floor_uring: the same HTTP/1.1 path on monoio (io_uring, thread-per-core) + rustls; HTTP/1.1
#   only.
# FLOOR_BIN_DIR: where benches/floor/build.sh put the binaries.
start_floor() { # name binary port
    local name=$1 bin=${FLOOR_BIN_DIR:-$ROOT/benches/floor/target/release}/$2 port=$3
    [[ $GUARD == 0 ]] || die "$name applies no rules: run it with GUARD=0"
    [[ -x $bin ]] || die "$bin missing: run benches/floor/build.sh"
    port_in_use "$port" && die "port $port ($name) is already in use"
    taskset -c "$PROXY_CPU" "$bin" "127.0.0.1:$port" "$TMP/server.crt" "$TMP/server.key" "127.0.0.1:$BACKEND_PORT" >>"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("${PID[$name]}")
}
start_floor_hyper() { start_floor floor_hyper floor-hyper "$FLOOR_HYPER_PORT"; }
start_floor_bytes() { start_floor floor_bytes floor-bytes "$FLOOR_BYTES_PORT"; }
start_floor_uring() { start_floor floor_uring floor-uring "$FLOOR_URING_PORT"; }

# The GUARD=1 rules for payguard: the same three checks the peers get, all passing.
guard_rules() {
    cat <<EOF
[defaults]
ip_allow = ["127.0.0.0/8"]
rate_limit = { key = "ip", rate = "1000000/s", burst = 1000000 }

# Covers every path; takes ip_allow and rate_limit from [defaults].
[[route]]
name = "bench"
match = { path = "/*", methods = ["GET", "HEAD"] }

[route.validate]
required_headers = ["User-Agent"]
EOF
}

# start_payguard_bin NAME BINARY PORT ADMIN_PORT
start_payguard_bin() {
    local name=$1 bin=$2 port=$3 admin=$4
    mkdir -p "$TMP/rules"
    if [[ $GUARD == 1 ]]; then
        guard_rules >"$TMP/rules/00-bench.toml"
    fi
    cat >"$TMP/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
tls_cert = "$TMP/server.crt"
tls_key = "$TMP/server.key"
admin_listen = "127.0.0.1:$admin"
${MAX_CONNS:+max_connections = $MAX_CONNS}
${PAYGUARD_SERVER_EXTRA:-}

[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"

[rules]
dir = "$TMP/rules"

[log]
level = "warn"
EOF
    "$bin" check --config "$TMP/$name.toml" >>"$TMP/$name.log" 2>&1 ||
        die "$name check refused the bench config: $(tail -n 20 "$TMP/$name.log")"
    taskset -c "$PROXY_CPU" "$bin" run --config "$TMP/$name.toml" --threads 1 >>"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("${PID[$name]}")
}

# Starts every proxy in $PROXIES and checks each: HTTP/1.1 and HTTP/2 answer {"ok":true} (an
# HTTP/1.1-only proxy answers curl --http2 over HTTP/1.1); with GUARD=1 also that its header
# validation refuses a request without User-Agent and a POST.
start_proxies() {
    local p v body tlsv code
    for p in $PROXIES; do
        log "starting $p on 127.0.0.1:${PORT[$p]} (core $PROXY_CPU)"
        "start_$p"
        wait_port "${PORT[$p]}" "${PID[$p]}" "$p"
        for v in --http1.1 --http2; do
            body=$(timeout 10 curl -sk "$v" -A "$BENCH_UA" -w ' %{http_version}' "https://127.0.0.1:${PORT[$p]}/") || die "$p: curl $v failed; log: $(tail -n 20 "$TMP/$p.log")"
            [[ $body == '{"ok":true}'* ]] || die "$p: unexpected answer to curl $v: $body"
            log "  $p curl $v -> $body"
            if [[ $GUARD == 1 ]]; then
                code=$(timeout 10 curl -sk "$v" -H 'User-Agent:' -o /dev/null -w '%{http_code}' "https://127.0.0.1:${PORT[$p]}/") || true
                [[ $code == 400 ]] || die "$p: GUARD=1 but a request without User-Agent got $code (expected 400)"
                code=$(timeout 10 curl -sk "$v" -A "$BENCH_UA" -X POST -o /dev/null -w '%{http_code}' "https://127.0.0.1:${PORT[$p]}/") || true
                [[ $code == 4* ]] || die "$p: GUARD=1 but a POST got $code (expected 4xx)"
            fi
        done
        tlsv=$(echo | timeout 10 openssl s_client -connect "127.0.0.1:${PORT[$p]}" -alpn h2 2>/dev/null | awk '/^New, /{sub(",","",$2); v=$2} END{print v}') || true
        log "  $p negotiates ${tlsv:-?}"
    done
}

# Copies configs and logs of the run into $RESULTS_DIR.
save_configs() {
    cp "$TMP"/*.conf "$TMP"/*.cfg "$TMP"/payguard.toml "$RESULTS_DIR/" 2>/dev/null || true
    [[ -d $TMP/rules ]] && cp -r "$TMP/rules" "$RESULTS_DIR/" 2>/dev/null || true
    local p
    for p in $PROXIES backend; do cp "$TMP/$p.log" "$RESULTS_DIR/$p.log" 2>/dev/null || true; done
}
