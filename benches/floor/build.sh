#!/usr/bin/env bash
# Builds the floor forwarders of issue #16 (release, into benches/floor/target) and prints the
# directory of the binaries: FLOOR_BIN_DIR=$(benches/floor/build.sh).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet >&2
echo "$PWD/target/release"
