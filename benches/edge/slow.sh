#!/usr/bin/env bash
# Slow-client benchmark: the release payguard (TLS on 127.0.0.1, plain nginx backend) under
# slowhttptest's three attacks: slowloris (-H), slow POST (-B) and slow read (-X), each with
# $CONNS connections, while a fresh client (oha, a new TLS connection per request; a curl loop
# when oha is missing) measures latency, and payguard's RSS, open FDs and open connections are
# sampled. Then a connection flood past a small max_connections.
#
# Bounds checked (issue "Edge hardening", slow clients): every slow connection closed within its
# timeout + 2 s, fresh-client p99 < 100 ms, RSS < 256 MiB; flood refused cleanly, recovery < 2 s.
#
#   benches/edge/slow.sh                 # all modes, 1000 connections each
#   CONNS=300 MODES="slowloris" benches/edge/slow.sh
set -euo pipefail

# ---------------------------------------------------------------- knobs
CONNS=${CONNS:-1000}                 # slow connections per mode
RATE=${RATE:-500}                    # slowhttptest connections per second
MODES=${MODES:-"slowloris slowpost slowread flood"}
TIMEOUT=${TIMEOUT:-10}               # header_read_timeout = body_read_timeout = send_timeout (s)
FRESH_QPS=${FRESH_QPS:-20}           # fresh-client request rate during each attack
FLOOD_MAX=${FLOOD_MAX:-100}          # max_connections for the flood run
FLOOD_CONNS=${FLOOD_CONNS:-2000}     # connections the flood opens (held open)
PROXY_CPU=${PROXY_CPU:-1}            # core payguard is pinned to
CLIENT_CPU=${CLIENT_CPU:-0}          # core the attackers, the fresh client and the backend use
BACKEND_PORT=${BACKEND_PORT:-18180}
PAYGUARD_PORT=${PAYGUARD_PORT:-18543}
PAYGUARD_ADMIN_PORT=${PAYGUARD_ADMIN_PORT:-18903}
KEEP_TMP=${KEEP_TMP:-0}              # 1: keep the temp dir (configs, logs, slowhttptest CSVs)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/benches/edge/results/slow-$(date -u +%Y%m%dT%H%M%SZ)}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}

log() { printf '[slow %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in slowhttptest nginx openssl taskset curl timeout python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y slowhttptest nginx openssl curl python3)"
done
[[ -x $OHA ]] || { log "oha not found: the fresh client is a curl loop"; OHA=""; }

# slowhttptest, payguard and the flood each need a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= 4 * CONNS + 1000 )) || log "WARNING: ulimit -n is $(ulimit -n); raise it for $CONNS connections"

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d /tmp/payguard-slow.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=../lib.sh
source "$ROOT/benches/lib.sh"
find_payguard

for port in "$BACKEND_PORT" "$((BACKEND_PORT + 1))" "$PAYGUARD_PORT" "$PAYGUARD_ADMIN_PORT"; do
    port_in_use "$port" && die "port $port is already in use (override with *_PORT env vars)"
done
mkdir -p "$RESULTS_DIR"

log "generating RSA-2048 self-signed certificate"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
    -keyout "$TMP/server.key" -out "$TMP/server.crt" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1

# ---------------------------------------------------------------- backend
# The shared nginx backend answers {"ok":true}; a second server in it, payguard's upstream, also
# serves /big (4 MiB, so a reader that stops reading stalls payguard's writes) and reads request
# bodies like a real application would.
mkdir -p "$TMP/www"
head -c $((4 << 20)) /dev/zero >"$TMP/www/big"
start_backend "$BACKEND_PORT" "server {
        listen 127.0.0.1:$((BACKEND_PORT + 1)) backlog=4096;
        root $TMP/www;
        location = /big { default_type application/octet-stream; }
        location / { default_type application/json; return 200 '{\"ok\":true}'; }
    }"
wait_port "$((BACKEND_PORT + 1))" "$BACKEND_PID" backend
[[ $(curl -s "http://127.0.0.1:$((BACKEND_PORT + 1))/") == '{"ok":true}' ]] || die "backend does not answer"

# ---------------------------------------------------------------- payguard
PG_PID=""
start_payguard() { # max_connections
    mkdir -p "$TMP/rules"
    # /slowpost buffers its body (validated form field), so payguard itself reads the dribble.
    cat >"$TMP/rules/00-slow.toml" <<EOF
[defaults]
max_body = "1MiB"

[[route]]
name = "slowpost"
match = { path = "/slowpost", methods = ["POST"] }
[route.validate]
fields = [{ at = "foo", type = "string", max_len = 100000 }]
EOF
    cat >"$TMP/payguard.toml" <<EOF
[server]
listen = "127.0.0.1:$PAYGUARD_PORT"
tls_cert = "$TMP/server.crt"
tls_key = "$TMP/server.key"
admin_listen = "127.0.0.1:$PAYGUARD_ADMIN_PORT"
max_connections = $1
handshake_timeout = "${TIMEOUT}s"
header_read_timeout = "${TIMEOUT}s"
body_read_timeout = "${TIMEOUT}s"
send_timeout = "${TIMEOUT}s"
idle_timeout = "60s"
shutdown_grace = "2s"

[upstream]
url = "http://127.0.0.1:$((BACKEND_PORT + 1))"

[rules]
dir = "$TMP/rules"

[log]
level = "warn"
EOF
    taskset -c "$PROXY_CPU" "$PAYGUARD_BIN" run --config "$TMP/payguard.toml" --threads 1 >>"$TMP/payguard.log" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    wait_port "$PAYGUARD_PORT" "$PG_PID" payguard
    [[ $(curl -sk "https://127.0.0.1:$PAYGUARD_PORT/") == '{"ok":true}' ]] || die "payguard does not answer"
}
stop_payguard() {
    kill -TERM "$PG_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
}

metric() { # name (with labels): its value on /metrics, 0 when absent
    curl -s "http://127.0.0.1:$PAYGUARD_ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }'
}
fds() { find /proc/"$PG_PID"/fd -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' /proc/"$PG_PID"/status; }

# Samples payguard every 0.5 s into $1: seconds, RSS KiB, FDs, open connections; and into
# $1.conns, "seconds client-port" for every established client connection (from ss).
sample() {
    local out=$1 t0 t
    t0=$(date +%s.%N)
    echo "t,rss_kib,fds,open" >"$out"
    : >"$out.conns"
    while kill -0 "$PG_PID" 2>/dev/null; do
        t=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
        echo "$t,$(awk '/^VmRSS:/ { print $2 }' /proc/"$PG_PID"/status),$(fds),$(metric payguard_open_connections)" >>"$out"
        ss -Htn state established "( sport = :$PAYGUARD_PORT )" | awk -v t="$t" '{ n = split($NF, a, ":"); print t, a[n] }' >>"$out.conns"
        sleep 0.5
    done
}

# Per connection, from the ss samples: last minus first time its client port was seen
# established (+0.5 s for the sampling step). Prints the longest, and how many connections
# lived longer than $2 seconds. An established connection is in every sample, so a port that
# reappears after a gap of more than 1.5 s is a new connection that reused it (fresh clients
# open hundreds), not one connection.
conn_lifetimes() { # samples.csv.conns bound
    awk -v bound="$2" '
        function done(p,   l) { l = last[p] - first[p] + 0.5; if (l > m) m = l; if (l > bound) over++; n++ }
        { if (($2 in last) && $1 - last[$2] > 1.5) { done($2); first[$2] = $1 }
          if (!($2 in first)) first[$2] = $1
          last[$2] = $1 }
        END { for (p in first) done(p); printf "%.1f %d %d\n", m, over, n }' "$1"
}

# Fresh clients for $1 seconds at $FRESH_QPS/s, a new TLS connection each; prints "p99_ms errors requests".
fresh_client() {
    local secs=$1 out=$TMP/fresh.$RANDOM
    if [[ -n $OHA ]]; then
        taskset -c "$CLIENT_CPU" "$OHA" -z "${secs}s" -q "$FRESH_QPS" -c 4 --disable-keepalive --insecure --no-tui \
            --output-format json "https://127.0.0.1:$PAYGUARD_PORT/" >"$out" 2>/dev/null || true
        python3 - "$out" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print("NA NA 0"); sys.exit()
p99 = (r.get("latencyPercentiles") or {}).get("p99")
codes = r.get("statusCodeDistribution") or {}
ok = int(codes.get("200", 0))
# Requests still in flight when -z ends are "aborted due to deadline": not failures.
errs = sum(v for k, v in (r.get("errorDistribution") or {}).items() if "deadline" not in k)
errs += sum(int(v) for k, v in codes.items() if k != "200")
print("NA" if p99 is None else "%.1f" % (p99 * 1000), errs, ok + errs)
PY
    else
        local end=$((SECONDS + secs))
        while ((SECONDS < end)); do
            curl -sk -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 5 "https://127.0.0.1:$PAYGUARD_PORT/" || echo "000 5"
            sleep "$(awk -v q="$FRESH_QPS" 'BEGIN { print 1 / q }')"
        done >"$out"
        awk '{ n++; if ($1 != 200) e++; t[n] = $2 * 1000 } END {
            if (n == 0) { print "NA NA 0"; exit }
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (t[j] < t[i]) { x = t[i]; t[i] = t[j]; t[j] = x }
            k = int(n * 0.99 + 0.999); if (k < 1) k = 1; printf "%.1f %d %d\n", t[k], e + 0, n }' "$out"
    fi
}

# Longest connection lifetime as slowhttptest saw it, from its per-second CSV (seconds, closed,
# pending, connected, ...), assuming connections close in the order they opened: the largest
# horizontal gap between the "opened" and "closed" cumulative curves (±1 s). The CSV lacks the
# last second when the test ends with "No open connections left": those close then. Prints NA
# when slowhttptest still counted connections open at its time limit (in slow-read mode it does
# not notice a reset while its receive buffer still holds data).
max_lifetime() { # csv log
    local end=NA
    grep -q 'No open connections left' "$2" && end=$(sed -n 's/.*Test ended on \([0-9]*\)th second.*/\1/p' "$2" | tail -n 1)
    awk -F, -v end="$end" 'NR > 1 && $1 ~ /^[0-9]+$/ {
            t = $1; closed = $2; opened = $2 + $3 + $4
            while (no < opened) open_at[++no] = t
            while (nc < closed) close_at[++nc] = t
        }
        END {
            if (end != "NA") while (nc < no) close_at[++nc] = end
            m = -1
            for (k = 1; k <= nc; k++) if (close_at[k] - open_at[k] > m) m = close_at[k] - open_at[k]
            if (m < 0 || nc < no) print "NA"; else print m
        }' "$1"
}

# From payguard's side (samples every 0.5 s): seconds from the first sample with more than
# $2 connections open to the last one; the fresh client alone never holds more than 4.
open_span() { # samples.csv threshold
    awk -F, -v th="$2" 'NR > 1 && $4 > th { if (first == "") first = $1; last = $1 }
        END { if (first == "") print "NA"; else printf "%.1f\n", last - first + 0.5 }' "$1"
}

SUMMARY=$RESULTS_DIR/summary.md
ROWS=()

run_attack() { # mode
    local mode=$1 args url secs
    case $mode in
        slowloris) url="https://127.0.0.1:$PAYGUARD_PORT/"; args=(-H -i 2 -x 24) ;;
        slowpost) url="https://127.0.0.1:$PAYGUARD_PORT/slowpost"; args=(-B -i 2 -s 8192 -x 10) ;;
        slowread) url="https://127.0.0.1:$PAYGUARD_PORT/big"; args=(-X -k 3 -w 1 -y 64 -n 5 -z 16) ;;
    esac
    # Open all connections, let them live to their timeout, plus margin.
    secs=$((CONNS / RATE + TIMEOUT + 15))
    start_payguard 10000
    sample "$TMP/$mode.samples.csv" &
    local sampler=$!
    log "$mode: $CONNS connections at $RATE/s for ${secs}s against $url"
    fresh_client "$secs" >"$TMP/$mode.fresh" &
    local fresh=$!
    # The attacker runs at the lowest priority: on this 2-core box it shares a core with the
    # fresh client, and spinning over its thousand sockets it would otherwise starve that client
    # and make its latency a measure of the attacker's machine, not of payguard.
    taskset -c "$CLIENT_CPU" nice -n 19 slowhttptest "${args[@]}" -c "$CONNS" -r "$RATE" -l "$secs" -p 3 -g -o "$TMP/$mode" \
        -u "$url" >"$TMP/$mode.slowhttptest.log" 2>&1 || true
    wait "$fresh" || true
    # Every slow connection must be gone by now; count what is left.
    local open_after fds_after hwm lifetime span p99 errs reqs timeouts
    sleep 1
    open_after=$(metric payguard_open_connections)
    fds_after=$(fds)
    hwm=$(hwm_kib)
    lifetime=$(max_lifetime "$TMP/$mode.csv" "$TMP/$mode.slowhttptest.log")
    span=$(open_span "$TMP/$mode.samples.csv" 4)
    local max_life over seen
    read -r max_life over seen < <(conn_lifetimes "$TMP/$mode.samples.csv.conns" "$((TIMEOUT + 2))")
    read -r p99 errs reqs <"$TMP/$mode.fresh"
    timeouts=$(curl -s "http://127.0.0.1:$PAYGUARD_ADMIN_PORT/metrics" |
        sed -n 's/^payguard_connection_timeouts_total{kind="\([a-z]*\)"} \([0-9]*\).*/\1=\2/p' | tr '\n' ' ')
    local s408
    s408=$(curl -s "http://127.0.0.1:$PAYGUARD_ADMIN_PORT/metrics" | awk '/^payguard_requests_total/ && /status="408"/ { s += $2 } END { print s + 0 }')
    local peak_fds peak_open
    peak_fds=$(awk -F, 'NR > 1 && $3 > m { m = $3 } END { print m + 0 }' "$TMP/$mode.samples.csv")
    peak_open=$(awk -F, 'NR > 1 && $4 > m { m = $4 } END { print m + 0 }' "$TMP/$mode.samples.csv")
    kill "$sampler" 2>/dev/null || true
    cp "$TMP/$mode.csv" "$TMP/$mode.samples.csv" "$TMP/$mode.slowhttptest.log" "$RESULTS_DIR/" 2>/dev/null || true
    log "$mode: longest connection at payguard ${max_life}s, $over of $seen over timeout + 2 s; max lifetime ${lifetime}s seen by slowhttptest, slow connections open for ${span}s at payguard incl. a $((CONNS / RATE))s ramp (timeout ${TIMEOUT}s); fresh p99 ${p99} ms ($errs errors / $reqs); peak RSS $((hwm / 1024)) MiB; peak open $peak_open, peak FDs $peak_fds, FDs after $fds_after, open after $open_after; timeouts: $timeouts; 408s: $s408"
    ROWS+=("| $mode | $CONNS | ${TIMEOUT} s | ${max_life} s | $over of $seen | ${lifetime} s | ${span} s | $((CONNS / RATE)) s | $p99 | $errs / $reqs | $((hwm / 1024)) | $peak_open | $peak_fds | $fds_after | ${timeouts}408=$s408 |")
    stop_payguard
}

run_flood() {
    start_payguard "$FLOOD_MAX"
    sample "$TMP/flood.samples.csv" &
    local sampler=$!
    log "flood: $FLOOD_CONNS connections held open against max_connections = $FLOOD_MAX"
    # The attacker: opens FLOOD_CONNS TCP connections as fast as it can and holds them; reports
    # how many were closed by payguard (EOF or reset) within 2 s and how many it still holds.
    taskset -c "$CLIENT_CPU" python3 - "$PAYGUARD_PORT" "$FLOOD_CONNS" >"$TMP/flood.attacker" <<'PY' &
import select, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks, refused_fast, slowest = [], 0, 0.0
t0 = time.time()
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append((s, time.time()))
# Watch them for 3 s: a refused one reads EOF or a reset.
alive = {s.fileno(): (s, t) for s, t in socks}
poll = select.poll()
for fd in alive:
    poll.register(fd, select.POLLIN)
deadline = time.time() + 3
while alive and time.time() < deadline:
    for fd, _ in poll.poll(100):
        poll.unregister(fd)
        s, t = alive.pop(fd)
        try:
            data = s.recv(1)
        except OSError:
            data = b""
        if data == b"":
            refused_fast += 1
            slowest = max(slowest, time.time() - t)
print(refused_fast, len(alive), "%.3f" % slowest, flush=True)
time.sleep(2)  # hold the rest while the fresh client probes, then the flood ends
for s, _ in socks:
    s.close()
PY
    local attacker=$!
    sleep 3.5
    local during
    during=$(curl -sk -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 "https://127.0.0.1:$PAYGUARD_PORT/" || true)
    wait "$attacker" || true
    local t_end recovered="NA"
    t_end=$(date +%s.%N)
    for _ in $(seq 100); do
        if [[ $(curl -sk --max-time 2 "https://127.0.0.1:$PAYGUARD_PORT/" 2>/dev/null) == '{"ok":true}' ]]; then
            recovered=$(awk -v a="$(date +%s.%N)" -v b="$t_end" 'BEGIN { printf "%.2f", a - b }')
            break
        fi
        sleep 0.05
    done
    local refused held slowest
    read -r refused held slowest <"$TMP/flood.attacker"
    local refused_metric peak_open peak_fds hwm
    refused_metric=$(metric payguard_connections_refused_total)
    peak_open=$(awk -F, 'NR > 1 && $4 > m { m = $4 } END { print m + 0 }' "$TMP/flood.samples.csv")
    peak_fds=$(awk -F, 'NR > 1 && $3 > m { m = $3 } END { print m + 0 }' "$TMP/flood.samples.csv")
    hwm=$(hwm_kib)
    sleep 1
    local fds_after
    fds_after=$(fds)
    kill "$sampler" 2>/dev/null || true
    log "flood: $refused of $FLOOD_CONNS closed by payguard within 3 s (slowest ${slowest}s), $held held; refused_total $refused_metric; a fresh client during the flood: $during; fresh client served ${recovered}s after the flood ended; peak open $peak_open, peak FDs $peak_fds, FDs after $fds_after"
    FLOOD_ROW="| flood | $FLOOD_CONNS vs max_connections $FLOOD_MAX | $refused closed within 3 s (slowest ${slowest} s), $held held | refused_total $refused_metric | fresh client during flood: \`$during\` | served again ${recovered} s after the flood | peak RSS $((hwm / 1024)) MiB | peak open $peak_open, peak FDs $peak_fds, FDs after $fds_after |"
    cp "$TMP/flood.samples.csv" "$RESULTS_DIR/" 2>/dev/null || true
    stop_payguard
}

FLOOD_ROW=""
for mode in $MODES; do
    case $mode in
        slowloris | slowpost | slowread) run_attack "$mode" ;;
        flood) run_flood ;;
        *) die "unknown mode $mode" ;;
    esac
done

{
    echo "payguard $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') on $(nproc) cores (payguard pinned to core $PROXY_CPU, attackers + backend + fresh client on core $CLIENT_CPU)."
    echo "header_read_timeout = body_read_timeout = send_timeout = ${TIMEOUT}s; slowhttptest $(slowhttptest -h 2>&1 | awk '/version/ { print $NF; exit }'), $RATE connections/s."
    echo "Fresh client: $([[ -n $OHA ]] && echo "oha, $FRESH_QPS req/s, a new TLS connection per request" || echo "curl loop, $FRESH_QPS req/s")."
    echo "Longest connection at payguard: per client port, first to last 0.5 s sample (ss) in which it was established, + 0.5 s (a port seen again after a gap of over 1.5 s counts as a new connection)."
    echo "Max lifetime (slowhttptest): from its per-second CSV, connections assumed to close in the order they opened (±1 s); NA: it did not see them close."
    echo "Open at payguard: first to last 0.5 s sample with more than 4 connections open (the ramp opening all of them included)."
    echo
    if ((${#ROWS[@]})); then
        echo "| mode | connections | timeout | longest connection at payguard | connections over timeout + 2 s | max lifetime (slowhttptest) | slow connections open at payguard | of which ramp | fresh p99 ms | fresh errors / requests | peak RSS MiB | peak open conns | peak FDs | FDs after | timeouts by kind, 408s |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        printf '%s\n' "${ROWS[@]}"
    fi
    if [[ -n $FLOOD_ROW ]]; then
        echo
        echo "| mode | connections | closed by payguard | metric | during | recovery | memory | FDs |"
        echo "|---|---|---|---|---|---|---|---|"
        echo "$FLOOD_ROW"
    fi
} >"$SUMMARY"
cat "$SUMMARY"
log "results in $RESULTS_DIR"
