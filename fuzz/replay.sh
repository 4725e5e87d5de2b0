#!/usr/bin/env bash
# Replays every fuzz target over its committed seed corpus (fuzz/corpus/<target>/) once:
# no fuzzing, no new inputs (`-runs=0`). For CI: fails if any seed crashes a target.
#
#   fuzz/replay.sh                 # all targets
#   fuzz/replay.sh path_normalize  # some targets
#
# Needs cargo-fuzz (installed with cargo install if missing). Works on stable Rust through
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only -Z flags). Environment:
#   CARGO_TARGET_DIR  build directory (default: fuzz/target)
#   FUZZ_SANITIZER    address (default) or none
set -euo pipefail
cd "$(dirname "$0")"

export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "replay.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

# -a: debug assertions (integer overflow checks) on, as in the fuzzing runs.
cargo fuzz build -O -a --sanitizer "$sanitizer"

failed=0
passed=0
for t in "${targets[@]}"; do
    dir="corpus/$t"
    if [ ! -d "$dir" ]; then
        echo "replay.sh: no corpus for $t ($dir)" >&2
        failed=$((failed + 1))
        continue
    fi
    echo "== $t ($(find "$dir" -type f | wc -l) seeds)"
    if cargo fuzz run -O -a --sanitizer "$sanitizer" "$t" "$dir" -- -runs=0 -rss_limit_mb=2048 -timeout=30; then
        passed=$((passed + 1))
    else
        echo "replay.sh: $t FAILED" >&2
        failed=$((failed + 1))
    fi
done
echo "fuzz-replay: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
