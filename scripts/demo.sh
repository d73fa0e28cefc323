#!/usr/bin/env bash
# The demo: stories260K tells a story on the default board, QEMU mps2-an386
# (Cortex-M4F). Extra arguments go to `microlm demo` (e.g. -t 0 for greedy,
# -p "Once upon a time"); MICROLM_DEMO_BOARD=host runs it on the host instead.
# The models come from $MICROLM_MODELS or ../shared/models, else `microlm demo`
# downloads them from the Hugging Face hub (checked by SHA-256) before it builds
# the firmware.
set -euo pipefail
cd "$(dirname "$0")/.."
board=${MICROLM_DEMO_BOARD:-mps2-an386}
# Cheap checks first, before installing or building anything.
case "$board" in
    host | mps2-an386 | mps2-an505 | lm3s6965evb) ;;
    *)
        echo "error: MICROLM_DEMO_BOARD=$board is not a board (host, mps2-an386, mps2-an505 or lm3s6965evb)" >&2
        exit 1
        ;;
esac
models=${MICROLM_MODELS:-../shared/models}
if [ ! -f "$models/stories260K.bin" ] || [ ! -f "$models/tok512.bin" ]; then
    echo "stories260K.bin and tok512.bin are not in $models: the demo downloads them from https://huggingface.co/karpathy/tinyllamas (or set MICROLM_MODELS=DIR)" >&2
fi
if [ "$board" = host ]; then
    cargo run --release --locked -q -p microlm-cli -- demo "$@"
else
    scripts/setup.sh
    # `microlm demo --board` finds the models, then builds the board firmware with cargo and runs it in QEMU.
    cargo run --release --locked -q -p microlm-cli -- demo --board "$board" "$@"
fi
