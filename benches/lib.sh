# Shared by the benchmark scripts (benches/*/run.sh): sourced after they define log(), die(),
# $TMP, $CLIENT_CPU and the PIDS array their cleanup trap kills.

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port pid name: wait until name (pid) listens on port; its log is $TMP/name.log
    local port=$1 pid=$2 name=$3
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) exited during start-up; log: $(tail -n 20 "$TMP/$name.log" 2>/dev/null)"
        port_in_use "$port" && return 0
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within 30 s; log: $(tail -n 20 "$TMP/$name.log" 2>/dev/null)"
}

# start_backend port [extra http directives]: nginx with one worker answering {"ok":true} to
# everything, pinned to $CLIENT_CPU; much faster than any proxy, so it never is the bottleneck.
start_backend() {
    local port=$1 extra=${2:-}
    mkdir -p "$TMP/backend"
    cat >"$TMP/backend.conf" <<CONF
$([[ $EUID == 0 ]] && echo "user root root;")
worker_processes 1;
daemon off;
pid $TMP/backend.pid;
error_log $TMP/backend.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    $extra
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { default_type application/json; return 200 '{"ok":true}'; }
    }
}
CONF
    taskset -c "$CLIENT_CPU" nginx -p "$TMP/backend" -e "$TMP/backend.log" -c "$TMP/backend.conf" >>"$TMP/backend.log" 2>&1 &
    BACKEND_PID=$!
    PIDS+=("$BACKEND_PID")
    wait_port "$port" "$BACKEND_PID" backend
}

# find_payguard: $PAYGUARD_BIN, or the release build under $ROOT (built when missing or BUILD=1).
find_payguard() {
    if [[ -z ${PAYGUARD_BIN:-} ]]; then
        PAYGUARD_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/payguard
        if [[ ! -x $PAYGUARD_BIN || ${BUILD:-0} == 1 ]]; then
            log "building payguard (cargo build --release) in $ROOT"
            (cd "$ROOT" && timeout 1800 cargo build --release) || die "cargo build failed"
        fi
    fi
    [[ -x $PAYGUARD_BIN ]] || die "PAYGUARD_BIN=$PAYGUARD_BIN is not an executable"
    export PAYGUARD_BIN
}
