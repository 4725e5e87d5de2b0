#!/usr/bin/env bash
# Instructions per request of `POST /plain` and `POST /idem` (the same route with
# `[route.idempotency]`, every request a first attempt with a fresh key), by valgrind's
# callgrind: a count, so two builds compare exactly on a noisy machine. Prints
# "route requests instructions/request callgrind-file", twice per route, alternated.
#
#   benches/load/idempotency_callgrind.sh target/release/payguard
#
# Valgrind hides SHA-NI: the two SHA-256 digests of an attempt run the portable code here
# (~10k instructions), a few hundred nanoseconds less on the real CPU. Needs valgrind, nginx,
# wrk, openssl, curl. Loopback only; the temporary directory is left for callgrind_annotate.
set -euo pipefail
bin=$(realpath "$1")
D=$(mktemp -d /tmp/payguard-cgidem.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(port) PORT=$(port)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$D/server.key" -out "$D/server.crt" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
mkdir -p "$D/rules"
cat >"$D/nginx.conf" <<NG
worker_processes 1; daemon on; pid $D/nginx.pid; error_log $D/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$BACKEND; location / { default_type application/json; return 200 '{"ok":true}'; } } }
NG
nginx -c "$D/nginx.conf"
cat > "$D/rules/00.toml" <<'R'
[[route]]
name = "plain"
match = { path = "/plain", methods = ["POST"] }
[[route]]
name = "idem"
match = { path = "/idem", methods = ["POST"] }
[route.idempotency]
key = "header:idempotency-key"
retention = "5s"
R
cat >"$D/payguard.toml" <<C
[server]
listen = "127.0.0.1:$PORT"
tls_cert = "$D/server.crt"
tls_key = "$D/server.key"
admin_listen = "off"
[upstream]
url = "http://127.0.0.1:$BACKEND"
[rules]
dir = "$D/rules"
[log]
level = "warn"
C
cat >"$D/keys.lua" <<'L'
math.randomseed(os.time())
local prefix = string.format("%d-%d-", os.time(), math.random(1, 1000000000))
local n = 0
local path = "/"
function init(args) path = args[1] end
wrk.method = "POST"
wrk.body = '{"amount":1250,"currency":"EUR","order":"bench"}'
wrk.headers["Content-Type"] = "application/json"
function request()
  n = n + 1
  wrk.headers["Idempotency-Key"] = prefix .. n
  return wrk.format(nil, path)
end
L
valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" "$bin" run --config "$D/payguard.toml" --threads 1 >"$D/log" 2>&1 &
vg=$!
trap 'kill $vg 2>/dev/null; kill "$(cat "$D/nginx.pid")" 2>/dev/null' EXIT
for _ in $(seq 1 300); do curl -sk -o /dev/null "https://127.0.0.1:$PORT/plain" -d x && break; sleep 0.2; done
for r in plain idem; do wrk -t1 -c4 -d3s -s "$D/keys.lua" "https://127.0.0.1:$PORT" -- /$r >/dev/null; done
for r in plain idem plain idem; do
  callgrind_control -z "$vg" >/dev/null
  res=$(wrk -t1 -c4 -d8s -s "$D/keys.lua" "https://127.0.0.1:$PORT" -- /$r)
  callgrind_control -d "$r" "$vg" >/dev/null
  n=$(awk '/requests in/ { print $1 }' <<<"$res")
  f=$(ls -t "$D"/cg.out.* | head -n1)
  echo "$r $n $(( $(sed -n 's/^summary: //p' "$f") / n )) $f"
done
