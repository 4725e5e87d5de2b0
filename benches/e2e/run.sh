#!/usr/bin/env bash
# End-to-end cost of signature verification: the same ~1 KiB JSON POST through payguard to an
# unsigned route, a GitHub-style `hmac` route and a `wechatpay-v3` (RSA-2048) route.
#
# - backend: nginx, 1 worker, `return 200 '{"ok":true}'`, core CLIENT_CPU (0);
# - payguard: `run --threads 1`, TLS (RSA-2048 cert), core PROXY_CPU (1), `[log] level = "warn"`,
#   restarted before every run so its replay store starts empty;
# - wrk -t1 -cCONNS over TLS, core CLIENT_CPU, Lua script cycling through pre-generated raw
#   requests (examples/e2e_signed_requests.rs): every signed request is unique, so each one is
#   verified, reserved in the replay store and forwarded (non-2xx must be 0);
# - modes `hmac-replay` / `wechat-replay` send one signed request over and over: after the
#   first, each is fully verified and then refused 401 `replay` (verification + replay-store
#   lookup, no forwarding);
# - interleaved: rep 1 (all modes), rep 2, ...; 1 s un-measured warm-up on /unsigned after each
#   start; payguard CPU% from /proc/<pid>/stat.
#
# Usage: benches/e2e/run.sh   (env: PAYGUARD_BIN GEN_BIN REPS DURATION CONNS N_HMAC N_WECHAT MODES)
set -euo pipefail
cd "$(dirname "$0")/../.."

REPS=${REPS:-5}
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
N_HMAC=${N_HMAC:-400000}
N_WECHAT=${N_WECHAT:-200000}
MODES=${MODES:-"unsigned hmac wechat hmac-replay wechat-replay"}
PROXY_CPU=${PROXY_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BACKEND_PORT=${BACKEND_PORT:-18580}
PAYGUARD_PORT=${PAYGUARD_PORT:-18543}
TARGET=${CARGO_TARGET_DIR:-target}
PAYGUARD_BIN=${PAYGUARD_BIN:-$TARGET/release/payguard}
GEN_BIN=${GEN_BIN:-$TARGET/release/examples/e2e_signed_requests}
CLK_TCK=$(getconf CLK_TCK)
RESULTS_DIR=${RESULTS_DIR:-benches/e2e/results/$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x $PAYGUARD_BIN ]] || die "missing $PAYGUARD_BIN (cargo build --release)"
[[ -x $GEN_BIN ]] || die "missing $GEN_BIN (cargo build --release --example e2e_signed_requests)"

TMP=$(mktemp -d /tmp/payguard-e2e.XXXXXX)
PIDS=()
PG_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in $PG_PID "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    [[ ${KEEP_TMP:-0} == 1 ]] && log "temp dir kept: $TMP" || rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=../lib.sh
source benches/lib.sh
ticks() { local line rest; line=$(cat /proc/"$1"/stat); rest=${line##*) }; read -r -a f <<<"$rest"; echo $((f[11] + f[12])); }

mkdir -p "$RESULTS_DIR"
CSV=$RESULTS_DIR/raw.csv
echo "rep,mode,rps,p50_ms,p99_ms,requests,non2xx,socket_errors,payguard_cpu_pct,payguard_cpu_us_per_req" >"$CSV"

log "generating certificate and requests in $TMP"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout "$TMP/server.key" -out "$TMP/server.crt" \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
"$GEN_BIN" "$TMP" "127.0.0.1:$PAYGUARD_PORT" "$N_HMAC" "$N_WECHAT" >&2

cat >"$TMP/req.lua" <<'EOF'
-- Cycles through NUL-separated raw requests from $REQ_FILE.
local reqs, n, i = {}, 0, 0
function init(args)
    local f = assert(io.open(os.getenv("REQ_FILE"), "rb"))
    local data = f:read("*a")
    f:close()
    for r in string.gmatch(data, "([^%z]+)%z") do
        n = n + 1
        reqs[n] = r
    end
end
function request()
    i = i + 1
    if i > n then i = 1 end
    return reqs[i]
end
EOF

port_in_use "$BACKEND_PORT" && die "port $BACKEND_PORT in use"
port_in_use "$PAYGUARD_PORT" && die "port $PAYGUARD_PORT in use"
start_backend "$BACKEND_PORT" "client_body_buffer_size 64k;"

cat >"$TMP/payguard.toml" <<EOF
[server]
listen = "127.0.0.1:$PAYGUARD_PORT"
tls_cert = "$TMP/server.crt"
tls_key = "$TMP/server.key"

[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"

[rules]
dir = "$TMP/rules"
watch = false

[log]
level = "warn"
EOF

start_payguard() {
    taskset -c "$PROXY_CPU" "$PAYGUARD_BIN" run --config "$TMP/payguard.toml" --threads 1 >>"$TMP/payguard.log" 2>&1 &
    PG_PID=$!
    wait_port "$PAYGUARD_PORT" "$PG_PID" payguard
}
stop_payguard() {
    kill -TERM "$PG_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
    PG_PID=""
}
wrk_run() { # req-file duration out
    REQ_FILE=$1 taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$2s" --timeout 5s --latency -s "$TMP/req.lua" \
        "https://127.0.0.1:$PAYGUARD_PORT/" >"$3" 2>&1
}
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

# Sanity: one request of each kind gets 200 from a fresh payguard.
start_payguard
for m in unsigned hmac wechat; do
    python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(d[:d.index(b"\0")])' \
        "$TMP/$m.req" >"$TMP/one.req"
    code=$( { cat "$TMP/one.req"; } | timeout 5 openssl s_client -quiet -connect "127.0.0.1:$PAYGUARD_PORT" 2>/dev/null | head -1 | tr -d '\r') || true
    log "sanity $m: $code"
    [[ $code == *" 200"* ]] || die "$m: expected 200, got '$code'; log: $(tail -n 5 "$TMP/payguard.log")"
done
stop_payguard

for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        start_payguard
        wrk_run "$TMP/unsigned.req" 1 "$TMP/warmup.out" || true
        t0=$(ticks "$PG_PID")
        out=$RESULTS_DIR/wrk-$mode-$rep.txt
        wrk_run "$TMP/$mode.req" "$DURATION" "$out" || log "wrk failed for $mode"
        t1=$(ticks "$PG_PID")
        stop_payguard
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        reqs=$(awk '/requests in/ {print $1}' "$out")
        non2xx=$(awk '/Non-2xx/ {print $NF}' "$out"); non2xx=${non2xx:-0}
        serr=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out"); serr=${serr:-0}
        p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
        p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
        cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN { printf "%.1f", 100 * t / hz / d }')
        us=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${reqs:-0}" 'BEGIN { if (n > 0) printf "%.1f", 1e6 * t / hz / n; else print "NA" }')
        echo "$rep,$mode,$rps,$p50,$p99,$reqs,$non2xx,$serr,$cpu,$us" >>"$CSV"
        log "rep $rep $mode: $rps req/s, p99 $p99 ms, non-2xx $non2xx, payguard CPU $cpu%, $us us/req"
        if [[ $mode != *-replay && $non2xx != 0 ]]; then
            log "WARNING: $mode: $non2xx non-2xx; more requests than distinct signed ones (N_HMAC=$N_HMAC, N_WECHAT=$N_WECHAT)? A repeated one is refused as a replay"
        fi
    done
done

# Summary: median (min–max) per mode, ratio of medians vs unsigned.
awk -F, 'NR > 1 { v[$2] = v[$2] " " $3; c[$2] = c[$2] " " $9; u[$2] = u[$2] " " $10; e[$2] += $7 }
    function med(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        lo = a[1]; hi = a[n]; return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    END {
        base = med(v["unsigned"])
        print "| mode | req/s median (min–max) | vs unsigned | payguard CPU % | payguard µs/req | non-2xx (all reps) |"
        print "|---|---|---|---|---|---|"
        split("unsigned hmac wechat hmac-replay wechat-replay", order, " ")
        for (k = 1; k <= 5; k++) { m = order[k]; if (!(m in v)) continue
            r = med(v[m]); rl = lo; rh = hi; cm = med(c[m]); um = med(u[m])
            printf "| %s | %.0f (%.0f–%.0f) | %.2f | %.0f | %.1f | %d |\n", m, r, rl, rh, r / base, cm, um, e[m] }
    }' "$CSV" | tee "$RESULTS_DIR/summary.md"
