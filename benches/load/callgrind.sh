#!/usr/bin/env bash
# Instructions per request of one payguard build with the full guard stack (GUARD=1 rules), by
# valgrind's callgrind: a count, not a time, so two builds compare exactly on a noisy machine.
#
#   benches/load/callgrind.sh target/release/payguard [N]
#   RULES=my-rules.toml benches/load/callgrind.sh target/release/payguard   # other rules: the
#       cost of one guard is the difference between two runs (see BENCHMARKS.md)
#   RULES=r.toml REQ_PATH=/checkout DATA=order.json benches/load/callgrind.sh BIN   # a POST of
#       DATA (as application/json, from a same-origin page) to REQ_PATH instead of GET /
#
# Needs valgrind, nginx (the backend), h2load (nghttp2-client), openssl, curl. Loopback only.
# Prints "http1 <instructions/request>" and "http2 <instructions/request>"; the callgrind files
# stay in the printed directory for callgrind_annotate.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[callgrind] $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=common.sh
source "$ROOT/benches/load/common.sh"
bin=$(realpath "$1")
N=${2:-3000}
D=$(mktemp -d /tmp/payguard-callgrind.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(port) PORT=$(port)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$D/server.key" -out "$D/server.crt" -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
mkdir -p "$D/rules"
cat >"$D/nginx.conf" <<NG
worker_processes 1; daemon on; pid $D/nginx.pid; error_log $D/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$BACKEND; location / { default_type application/json; return 200 '{"ok":true}'; } } }
NG
nginx -c "$D/nginx.conf"
if [[ -n ${RULES:-} ]]; then cp "$RULES" "$D/rules/00-bench.toml"; else guard_rules >"$D/rules/00-bench.toml"; fi
cat >"$D/payguard.toml" <<C
[server]
listen = "127.0.0.1:$PORT"
tls_cert = "$D/server.crt"
tls_key = "$D/server.key"
admin_listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:$BACKEND"
[rules]
dir = "$D/rules"
[log]
level = "warn"
C
valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" "$bin" run --config "$D/payguard.toml" --threads 1 >"$D/log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null; kill "$(cat "$D/nginx.pid")" 2>/dev/null' EXIT
for _ in $(seq 1 300); do
    curl -sk -o /dev/null -H 'User-Agent: x' "https://127.0.0.1:$PORT/" && break
    sleep 0.2
done
url="https://127.0.0.1:$PORT${REQ_PATH:-/}"
req=(-H 'User-Agent: bench')
if [[ -n ${DATA:-} ]]; then
    req+=(-d "$(realpath "$DATA")" -H 'Content-Type: application/json' -H 'Sec-Fetch-Site: same-origin')
fi
h2load --h1 -n 500 -c 4 "${req[@]}" "$url" >/dev/null
h2load -n 500 -c 4 -m 4 "${req[@]}" "$url" >/dev/null
measure() { # NAME h2load-args...
    local name=$1; shift
    callgrind_control -z $vg >/dev/null
    h2load "$@" "${req[@]}" "$url" | grep -q "$N succeeded" || { echo "$name: not every request succeeded" >&2; exit 1; }
    callgrind_control -d "$name" $vg >/dev/null
    local f; f=$(ls -t "$D"/cg.out.* | head -n1)
    echo "$name $(( $(sed -n 's/^summary: //p' "$f") / N ))"
}
measure http1 --h1 -n "$N" -c 4
measure http2 -n "$N" -c 4 -m 4
echo "callgrind files: $D"
