#!/usr/bin/env bash
# Builds each hardware board's firmware as the README's "Flash a real board"
# commands do (stories260K q8_0, int8 KV cache), measures flash and RAM, the
# largest context that fits and the instructions per token under QEMU, and
# writes the README's board table between its `board-sizes` markers; then the
# mps2-an386 firmware's `.text + .rodata` (no model) between its
# `an386-code-size` markers. tests/tests/board_sizes.rs (the same code, without
# MICROLM_WRITE_README) fails while either differs.
set -euo pipefail
cd "$(dirname "$0")/.."
MICROLM_WRITE_README=1 cargo test --release --locked -p microlm-tests --test board_sizes -- --nocapture
