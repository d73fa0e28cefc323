#!/usr/bin/env bash
# The demo: stories260K tells a story. Extra arguments go to `microlm demo`
# (e.g. -t 0 for greedy, -p "Once upon a time").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --release --locked -q -p microlm-cli -- demo "$@"
