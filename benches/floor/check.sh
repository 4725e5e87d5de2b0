#!/usr/bin/env bash
# Correctness checks of the floors' HTTP/1.1 forwarding before they are measured: each floor in
# front of a test backend (check/backend.py: Content-Length, chunked with a trailer,
# close-delimited, POST echo, the request headers), with curl and a raw TLS client
# (check/check.py). Needs the binaries of build.sh, curl, openssl and python3.
#
# Usage: benches/floor/check.sh [floor-bytes floor-uring floor-hyper]   (default: all three)
# Ports: CHECK_BACKEND_PORT (19080) and the ones after CHECK_FLOOR_PORT (19447).
set -euo pipefail
cd "$(dirname "$0")"
BIN=${FLOOR_BIN_DIR:-$PWD/target/release}
FLOORS=${*:-floor-bytes floor-uring floor-hyper}
BACKEND_PORT=${CHECK_BACKEND_PORT:-19080}
# One port per floor: a killed io_uring process's listening socket can outlive it for a moment
# (the kernel tears the ring down asynchronously), so the next floor does not reuse its port.
FLOOR_PORT=${CHECK_FLOOR_PORT:-19447}
TMP=$(mktemp -d /tmp/floor-check.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -s $TMP/backend.pid ]]; then kill "$(cat "$TMP/backend.pid")" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout "$TMP/key.pem" -out "$TMP/cert.pem" \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
python3 check/backend.py "$BACKEND_PORT" >"$TMP/backend.log" 2>&1 &
echo $! >"$TMP/backend.pid"
wait_port "$BACKEND_PORT"
head -c 300000 /dev/urandom >"$TMP/body.bin"

failed=0
ok() { echo "  ok   $*"; }
bad() { echo "  FAIL $*"; failed=$((failed + 1)); }
for floor in $FLOORS; do
    echo "== $floor"
    FLOOR_PORT=$((FLOOR_PORT + 1))
    "$BIN/$floor" "127.0.0.1:$FLOOR_PORT" "$TMP/cert.pem" "$TMP/key.pem" "127.0.0.1:$BACKEND_PORT" >"$TMP/$floor.log" 2>&1 &
    fp=$!
    PIDS+=("$fp")
    wait_port "$FLOOR_PORT"
    url=https://127.0.0.1:$FLOOR_PORT
    # The backend's answer byte for byte: Content-Length, chunked, 1 MiB, close-delimited.
    for path in / /chunked /big /close; do
        curl -sk --http1.1 "$url$path" -o "$TMP/got" -H 'X-Payguard-Verified: forged' -H 'Connection: X-Drop' -H 'X-Drop: 1'
        curl -s "http://127.0.0.1:$BACKEND_PORT$path" -o "$TMP/want"
        if cmp -s "$TMP/got" "$TMP/want"; then ok "GET $path: the backend's body byte for byte ($(wc -c <"$TMP/got") bytes)"; else bad "GET $path differs"; fi
    done
    # Several requests on one connection.
    out=$(curl -sk --http1.1 "$url/" "$url/chunked" "$url/big" "$url/" -o /dev/null -o /dev/null -o /dev/null -o /dev/null -w '%{http_code}:%{num_connects} ')
    if [[ $out == "200:1 200:0 200:0 200:0 " ]]; then ok "4 requests on one connection ($out)"; else bad "4 requests on one connection: $out"; fi
    # Headers the backend sees: hop-by-hop and x-payguard-* gone, forwarding headers added.
    seen=$(curl -sk --http1.1 "$url/headers" -H 'X-Payguard-Verified: forged' -H 'Connection: X-Drop' -H 'X-Drop: 1' -H 'X-Forwarded-Proto: http' -H 'TE: trailers' -H 'Keep-Alive: 5')
    want='{"accept": "*/*", "host": "127.0.0.1:'$FLOOR_PORT'", "user-agent": "curl/'
    if [[ $floor == floor-hyper ]]; then
        ok "headers seen by the backend (floor-hyper edits none): $seen"
    elif [[ $seen == "$want"*'", "x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "https"}' ]]; then
        ok "headers seen by the backend: $seen"
    else
        bad "headers seen by the backend: $seen"
    fi
    # Request bodies: small, 300 KB with Expect: 100-continue, 300 KB chunked.
    got=$(curl -sk --http1.1 "$url/" -d 'a=1&b=2')
    if [[ $got == 'a=1&b=2' ]]; then ok "POST, small body echoed"; else bad "POST small: $got"; fi
    t=$(curl -sk --http1.1 "$url/" --data-binary @"$TMP/body.bin" -o "$TMP/got" -w '%{time_total}')
    if cmp -s "$TMP/got" "$TMP/body.bin"; then ok "POST 300 KB (Expect: 100-continue) echoed byte for byte in ${t}s"; else bad "POST 300 KB differs"; fi
    t=$(curl -sk --http1.1 "$url/" --data-binary @"$TMP/body.bin" -H 'Transfer-Encoding: chunked' -o "$TMP/got" -w '%{time_total}')
    if cmp -s "$TMP/got" "$TMP/body.bin"; then ok "POST 300 KB chunked echoed byte for byte in ${t}s"; else bad "POST chunked differs"; fi
    # The chunked answer's trailer gets through; HEAD has no body.
    if [[ $floor == floor-hyper ]]; then
        : # hyper's server sends trailers only to a client that asked for them (TE: trailers)
    elif curl -sk --http1.1 -D - -o /dev/null "$url/chunked" | tr -d '\r' | grep -q '^X-Trailer: t$'; then
        ok "chunked answer's trailer forwarded"
    else
        bad "chunked trailer missing"
    fi
    out=$(curl -sk --http1.1 -I "$url/" "$url/" -w '%{http_code}:%{size_download} ' -o /dev/null -o /dev/null)
    if [[ $out == "200:0 200:0 " ]]; then ok "HEAD twice on one connection"; else bad "HEAD: $out"; fi
    if [[ $floor != floor-hyper ]]; then
        python3 check/check.py "$FLOOR_PORT" "$BACKEND_PORT" "$TMP/backend.pid" || failed=$((failed + 1))
        wait_port "$BACKEND_PORT"
    fi
    kill "$fp"; wait "$fp" 2>/dev/null || true
done
echo
if [[ $failed == 0 ]]; then echo "all checks passed"; else echo "$failed check(s) failed"; exit 1; fi
