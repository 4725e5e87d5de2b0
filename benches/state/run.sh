#!/usr/bin/env bash
# What shared state costs: payguard with [state] backend = "memory" vs "redis", side by side in
# one run, on a signed-callback route (replay store) and a rate-limited route (GCRA), plus the
# Redis round trips per request (INFO commandstats deltas) and the Redis memory per stored key.
#
# Layout (2 cores): payguard (`--threads 1`) pinned to PROXY_CPU; wrk, the nginx backend and
# redis-server pinned to CLIENT_CPU. Runs are interleaved (memory, redis, memory, ...), REPS
# repetitions, medians reported. Only 127.0.0.1 is used; every process is stopped on exit.
#
#   benches/state/run.sh                      # builds target/release/payguard if missing
#   PAYGUARD_BIN=/path/payguard REPS=3 DURATION=10 benches/state/run.sh
#
# Requires: apt-get install -y wrk nginx redis-server openssl curl python3; taskset.
set -euo pipefail

REPS=${REPS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BACKEND_PORT=${BACKEND_PORT:-18180}
PAYGUARD_PORT=${PAYGUARD_PORT:-18545}
ADMIN_PORT=${ADMIN_PORT:-18991}
REDIS_PORT=${REDIS_PORT:-18379}
CALLBACKS=${CALLBACKS:-600000}      # distinct signed callbacks (each may be accepted once)
MEMORY_KEYS=${MEMORY_KEYS:-100000}  # keys stored for the memory-per-key measurement
QUIET_MAX=${QUIET_MAX:-15}          # before each run, wait until both cores are below this busy % ...
QUIET_TIMEOUT=${QUIET_TIMEOUT:-600} # ... for at most this many seconds (then measure anyway, flagged)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/benches/state/results/$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[state-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in wrk nginx redis-server redis-cli openssl curl python3 taskset; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y wrk nginx redis-server openssl curl python3)"
done


TMP=$(mktemp -d /tmp/payguard-state-bench.XXXXXX)
PIDS=()
PG_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $PG_PID ]] && kill -TERM "$PG_PID" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}" $PG_PID; do kill -KILL "$pid" 2>/dev/null || true; done
    [[ $rc == 0 ]] && rm -rf "$TMP" || log "temp dir kept: $TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=../lib.sh
source "$ROOT/benches/lib.sh"
find_payguard
for port in "$BACKEND_PORT" "$PAYGUARD_PORT" "$ADMIN_PORT" "$REDIS_PORT"; do
    port_in_use "$port" && die "port $port is in use"
done
mkdir -p "$RESULTS_DIR"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# ------------------------------------------------------------------ fixtures
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout "$TMP/server.key" -out "$TMP/server.crt" \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
mkdir -p "$TMP/rules" "$TMP/backend"
printf 'bench-secret' >"$TMP/rules/hook.secret"
cat >"$TMP/rules/routes.toml" <<'EOF'
[[route]]
name = "cb"
match = { path = "/cb", methods = ["POST"] }
[route.signature]
provider = "hmac"
secrets = ["file:hook.secret"]

# A limit that never refuses at this load: measures the cost of the decision itself.
[[route]]
name = "rl"
match = { path = "/rl" }
rate_limit = { key = "ip", rate = "1000000/s", burst = 1000000 }
EOF
log "signing $CALLBACKS distinct callbacks"
python3 - "$TMP/callbacks.txt" "$CALLBACKS" <<'EOF'
import hmac, hashlib, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        body = '{"event":"payment.succeeded","order":"ORD-%09d","amount":4200,"currency":"EUR"}' % i
        f.write(hmac.new(b"bench-secret", body.encode(), hashlib.sha256).hexdigest() + " " + body + "\n")
EOF
cat >"$TMP/cb.lua" <<EOF
local sigs, bodies, i = {}, {}, 0
for line in io.lines("$TMP/callbacks.txt") do
  local sig, body = line:match("^(%x+) (.*)$")
  sigs[#sigs + 1] = sig
  bodies[#bodies + 1] = body
end
request = function()
  i = i + 1
  if i > #sigs then i = 1 end
  return wrk.format("POST", "/cb", { ["x-hub-signature-256"] = "sha256=" .. sigs[i],
    ["content-type"] = "application/json" }, bodies[i])
end
EOF

start_backend "$BACKEND_PORT"

taskset -c "$CLIENT_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$TMP" >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" "${PIDS[-1]}" redis

start_payguard() { # backend
    cat >"$TMP/payguard.toml" <<EOF
[server]
listen = "127.0.0.1:$PAYGUARD_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
tls_cert = "server.crt"
tls_key = "server.key"
[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"
[rules]
dir = "rules"
watch = false
[state]
backend = "$1"
redis_url = "redis://127.0.0.1:$REDIS_PORT"
[log]
level = "warn"
EOF
    taskset -c "$PROXY_CPU" "$PAYGUARD_BIN" run --config "$TMP/payguard.toml" --threads 1 >"$TMP/payguard.log" 2>&1 &
    PG_PID=$!
    wait_port "$PAYGUARD_PORT" "$PG_PID" payguard
    [[ $(curl -sk "https://127.0.0.1:$PAYGUARD_PORT/rl") == '{"ok":true}' ]] || die "payguard does not forward"
    if [[ $1 == redis ]]; then
        for _ in $(seq 50); do curl -s "http://127.0.0.1:$ADMIN_PORT/healthz" | grep -q '"ok":true' && break; sleep 0.1; done
    fi
}
stop_payguard() {
    kill -TERM "$PG_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PG_PID" 2>/dev/null || true
    PG_PID=""
}
calls() { # command -> calls so far
    rcli info commandstats | tr -d '\r' | awk -F'[=,:]' -v c="cmdstat_$1" '$1 == c { print $3; f = 1 } END { if (!f) print 0 }'
}
to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

core_busy() { # core -> busy % over one second
    local a b
    a=$(awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat)
    sleep 1
    b=$(awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); if (y[2] > x[2]) printf "%d", 100 * (y[1] - x[1]) / (y[2] - x[2]); else print 0 }'
}
wait_quiet() { # sets QUIET to "quiet" or "busy" (runs in this shell, so Ctrl-C stops it at once)
    local deadline=$((SECONDS + QUIET_TIMEOUT))
    while ((SECONDS < deadline)); do
        if (($(core_busy "$PROXY_CPU") <= QUIET_MAX && $(core_busy "$CLIENT_CPU") <= QUIET_MAX)); then
            QUIET=quiet
            return
        fi
        log "cores busy with other work; waiting (QUIET_MAX=$QUIET_MAX%)"
        sleep 5
    done
    QUIET=busy
}

CSV=$RESULTS_DIR/raw.csv
echo "rep,backend,route,rps,p50_ms,p99_ms,requests,non2xx,evalsha,set,del,get,ping,script,pg_cpu_us_per_req,other_load,before" >"$CSV"
CLK_TCK=$(getconf CLK_TCK)
pg_ticks() { local line rest; line=$(cat /proc/"$PG_PID"/stat); rest=${line##*) }; read -r -a f <<<"$rest"; echo $((f[11] + f[12])); }
for rep in $(seq "$REPS"); do
    for backend in memory redis; do
        for route in cb rl; do
            wait_quiet
            start_payguard "$backend"
            # Warm-up (connections, caches) on the route without state writes that matter.
            taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d2s "https://127.0.0.1:$PAYGUARD_PORT/rl" >/dev/null 2>&1 || true
            rcli flushall >/dev/null
            rcli config resetstat >/dev/null
            if [[ $route == cb ]]; then script=(-s "$TMP/cb.lua"); else script=(); fi
            out=$TMP/wrk-$rep-$backend-$route.txt
            t0=$(pg_ticks)
            taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${script[@]}" \
                "https://127.0.0.1:$PAYGUARD_PORT/$route" >"$out" 2>&1
            t1=$(pg_ticks)
            rps=$(awk '/^Requests\/sec/ { print $2 }' "$out")
            p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
            p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
            reqs=$(awk '/requests in/ { print $1 }' "$out")
            non2xx=$(awk '/Non-2xx/ { print $NF }' "$out"); non2xx=${non2xx:-0}
            row="$rep,$backend,$route,$rps,$p50,$p99,$reqs,$non2xx"
            for c in evalsha set del get ping script; do row="$row,$(calls "$c")"; done
            # payguard's own CPU per request (independent of how busy the client core was), and
            # the 1-minute load average as a hint that something else was running.
            row="$row,$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'),$(cut -d' ' -f1 /proc/loadavg),$QUIET"
            echo "$row" >>"$CSV"
            log "$row"
            stop_payguard
        done
    done
done

# ------------------------------------------------------------------ memory per key
# Keys exactly as payguard writes them: a replay key for an hmac callback (route|provider|64-hex
# signature) and a rate-limit bucket (scope fingerprint : client key, value = TAT in µs).
rcli flushall >/dev/null
mem() { rcli info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'; }
m0=$(mem)
python3 - "$MEMORY_KEYS" replay <<'EOF' | rcli --pipe >/dev/null
import hashlib, sys
for i in range(int(sys.argv[1])):
    k = "payguard:replay:stripe-callbacks|hmac|" + hashlib.sha256(str(i).encode()).hexdigest()
    parts = ["SET", k, "1", "PX", "600000"]
    sys.stdout.write("*%d\r\n" % len(parts) + "".join("$%d\r\n%s\r\n" % (len(p), p) for p in parts))
EOF
m1=$(mem)
rcli flushall >/dev/null
m2=$(mem)
python3 - "$MEMORY_KEYS" rl <<'EOF' | rcli --pipe >/dev/null
import sys
for i in range(int(sys.argv[1])):
    k = "payguard:rl:8c3a5f0e2b1d4c97:%x" % (0xC0000000 + i)
    parts = ["SET", k, "1763000000123456", "PX", "600000"]
    sys.stdout.write("*%d\r\n" % len(parts) + "".join("$%d\r\n%s\r\n" % (len(p), p) for p in parts))
EOF
m3=$(mem)
echo "replay_bytes_per_key,$(( (m1 - m0) / MEMORY_KEYS ))" >"$RESULTS_DIR/memory.csv"
echo "rate_limit_bytes_per_key,$(( (m3 - m2) / MEMORY_KEYS ))" >>"$RESULTS_DIR/memory.csv"
cat "$RESULTS_DIR/memory.csv"

# ------------------------------------------------------------------ summary
median() { # backend route column
    awk -F, -v b="$1" -v r="$2" -v c="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next }
        $2 == b && $3 == r { v[n++] = $col + 0 }
        END { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
              m = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2; printf "%.2f (%.2f–%.2f)", m, v[0], v[n - 1] }' "$CSV"
}
per_req() { # backend route expr-columns...
    awk -F, -v b="$1" -v r="$2" -v cols="$3" 'NR == 1 { for (i = 1; i <= NF; i++) idx[$i] = i; next }
        $2 == b && $3 == r { split(cols, cs, "+"); s = 0; for (k in cs) s += $(idx[cs[k]]); t += s; q += $(idx["requests"]) }
        END { if (q) printf "%.3f", t / q; else print "–" }' "$CSV"
}
{
    echo "Medians of $REPS runs (min–max). \`wrk -t1 -c$CONNS -d${DURATION}s --latency\`, payguard \`--threads 1\` on core $PROXY_CPU;"
    echo "wrk, nginx backend and redis-server on core $CLIENT_CPU."
    echo
    echo "| route | backend | req/s | p50 ms | p99 ms | payguard CPU µs/request | Redis round trips / request |"
    echo "|---|---|---|---|---|---|---|"
    for route in cb rl; do
        for backend in memory redis; do
            if [[ $route == cb ]]; then rt=$(per_req "$backend" cb "set+del"); else rt=$(per_req "$backend" rl "evalsha+script"); fi
            [[ $backend == memory ]] && rt="0"
            echo "| $route | $backend | $(median "$backend" "$route" rps) | $(median "$backend" "$route" p50_ms) | $(median "$backend" "$route" p99_ms) | $(median "$backend" "$route" pg_cpu_us_per_req) | $rt |"
        done
    done
    echo
    echo "Redis memory per key ($MEMORY_KEYS keys, used_memory delta): replay key $(( (m1 - m0) / MEMORY_KEYS )) B, rate-limit key $(( (m3 - m2) / MEMORY_KEYS )) B."
    echo "Runs started on busy cores (other work above $QUIET_MAX% after waiting $QUIET_TIMEOUT s): $(awk -F, 'NR > 1 && $17 == "busy" { n++ } END { print n + 0 }' "$CSV")."
    echo "Non-2xx responses over all runs: $(awk -F, 'NR > 1 { s += $8 } END { print s + 0 }' "$CSV")."
} >"$RESULTS_DIR/summary.md"
cat "$RESULTS_DIR/summary.md"
