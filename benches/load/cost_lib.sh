# Shared by the per-request cost scripts (benches/load/idempotency_cost.sh, content_cost.sh):
# sourced after they define log() and die(). Takes the payguard binary as $1; sets up $D (a
# temporary directory removed on exit), an nginx backend on $BACKEND pinned to CLIENT_CPU, a
# certificate, and the helpers below. Fills $D/rules with the script's own rules before start().
bin=$(realpath "${1:?usage: $0 PAYGUARD_BINARY}")
SECS=${SECS:-5} REPS=${REPS:-5} CONNS=${CONNS:-16}
PROXY_CPU=${PROXY_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
CLK_TCK=$(getconf CLK_TCK)
for tool in nginx wrk openssl curl; do command -v "$tool" >/dev/null || die "missing $tool (apt-get install nginx wrk openssl curl)"; done
D=$(mktemp -d "/tmp/payguard-${COST_NAME:-cost}.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $D/nginx.pid ]] && kill "$(cat "$D/nginx.pid")" 2>/dev/null || true
    # KEEP_DIR=1: left for the caller's tools (callgrind_annotate).
    [[ -n ${KEEP_DIR:-} ]] || rm -rf "$D"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# ticks PID: "user+system user" clock ticks of PID so far.
ticks() { local rest; rest=$(cut -d')' -f2- "/proc/$1/stat"); awk '{ print $12 + $13, $12 }' <<<"$rest"; }
# peer: "idle_ticks all_ticks ipis" of CLIENT_CPU so far: its idle and busy time, and the
# rescheduling and function-call interrupts it took (a wake-up of a task there, sent from the
# proxy's core among others). A proxy that is slower per request leaves the client core idle
# more, and each wake-up of an idle core costs its sender more: see BENCHMARKS.md.
peer() {
    awk -v c="cpu$CLIENT_CPU" '$1 == c { s = 0; for (i = 2; i <= NF; i++) s += $i; printf "%d %d ", $5 + $6, s }' /proc/stat
    awk -v col=$((CLIENT_CPU + 2)) '$1 == "RES:" || $1 == "CAL:" { n += $col } END { print n + 0 }' /proc/interrupts
}

BACKEND=$(port)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$D/server.key" -out "$D/server.crt" -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
cat >"$D/nginx.conf" <<NG
worker_processes 1; daemon on; pid $D/nginx.pid; error_log $D/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$BACKEND; location / { default_type application/json; return 200 '{"ok":true}'; } } }
NG
taskset -c "$CLIENT_CPU" nginx -c "$D/nginx.conf"
mkdir -p "$D/rules"

# config NAME PORT [STATE_TABLE]: writes $D/NAME.toml, a payguard on PORT in front of the
# backend with $D/rules.
config() {
    local name=$1 p=$2 state=${3:-}
    cat >"$D/$name.toml" <<C
[server]
listen = "127.0.0.1:$p"
tls_cert = "$D/server.crt"
tls_key = "$D/server.key"
admin_listen = "off"
[upstream]
url = "http://127.0.0.1:$BACKEND"
[rules]
dir = "$D/rules"
watch = false
[log]
level = "warn"
$state
C
}

# start NAME [STATE_TABLE]: a payguard on THREADS (1) worker threads pinned to CPUS (PROXY_CPU);
# echoes its pid and port.
start() {
    local name=$1 p
    p=$(port)
    config "$name" "$p" "${2:-}"
    taskset -c "${CPUS:-$PROXY_CPU}" "$bin" run --config "$D/$name.toml" --threads "${THREADS:-1}" >"$D/$name.log" 2>&1 &
    echo "$! $p"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# col NAME COLUMN: the column of NAME's rows in $out (name,rep,µs,req/s,...).
col() { awk -F, -v n="$1" -v c="$2" '$1 == n { print $c }' "$out"; }

# measure PID PORT SCRIPT ROUTE: one wrk run of SECS seconds against /ROUTE, every answer 2xx
# (call it as m=$(measure ...), so that a failure stops the script); prints "µs_of_CPU_per_request
# req/s requests µs_of_user_CPU_per_request client_core_idle_% client_core_IPIs_per_request".
# PERF_ROUTE=ROUTE records a profile of the first such run (perf record -g, to PERF_OUT).
measure() {
    local pid=$1 p=$2 script=$3 route=$4 t0 t1 u0 u1 i0 i1 a0 a1 q0 q1 res reqs bad rps
    read -r i0 a0 q0 < <(peer)
    read -r t0 u0 < <(ticks "$pid")
    if [[ ${PERF_ROUTE:-} == "$route" && ! -e $D/perf.done ]]; then
        touch "$D/perf.done"
        perf record -q -e cpu-clock -g -p "$pid" -o "${PERF_OUT:-/tmp/${COST_NAME:-cost}.perf}" -- sleep "$SECS" 2>/dev/null &
    fi
    res=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$script" "https://127.0.0.1:$p" -- "/$route")
    read -r t1 u1 < <(ticks "$pid")
    read -r i1 a1 q1 < <(peer)
    reqs=$(awk '/requests in/ { print $1 }' <<<"$res")
    bad=$(awk '/Non-2xx/ { print $NF }' <<<"$res")
    [[ -z $bad ]] || die "$route: $bad answers were not 2xx: $res"
    rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$res")
    awk -v t=$((t1 - t0)) -v u=$((u1 - u0)) -v n="$reqs" -v hz="$CLK_TCK" -v r="$rps" \
        -v idle=$((i1 - i0)) -v all=$((a1 - a0)) -v ipi=$((q1 - q0)) \
        'BEGIN { printf "%.2f %s %d %.2f %.1f %.3f\n", t * 1e6 / hz / n, r, n, u * 1e6 / hz / n, all ? 100 * idle / all : 0, ipi / n }'
}

# spread NAME: "median (min–max)" of NAME's µs/request in $out.
spread() {
    echo "$(col "$1" 3 | median) ($(col "$1" 3 | sort -n | head -1)–$(col "$1" 3 | sort -n | tail -1))"
}
