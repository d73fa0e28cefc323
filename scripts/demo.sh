#!/usr/bin/env bash
# The demo: stories260K tells a story on the default board, QEMU mps2-an386
# (Cortex-M4F). Extra arguments go to `microlm demo` (e.g. -t 0 for greedy,
# -p "Once upon a time"); MICROLM_DEMO_BOARD=host runs it on the host instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
board=${MICROLM_DEMO_BOARD:-mps2-an386}
if [ "$board" = host ]; then
    cargo run --release --locked -q -p microlm-cli -- demo "$@"
else
    # `microlm demo --board` builds the board firmware with cargo and runs it in QEMU.
    cargo run --release --locked -q -p microlm-cli -- demo --board "$board" "$@"
fi
