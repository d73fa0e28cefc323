#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then builds and tests.
# The QEMU tests (tests/tests/qemu.rs) build the board firmware with cargo in a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."
# The cheap check first: the tests compare with the models, data and llama2.c
# references in ../shared beside the checkout; say so before minutes of building.
need=(models/stories260K.bin models/tok512.bin models/tokenizer.bin data/tinystories_dev.txt
      reference/stories260K_generate.json reference/stories260K_greedy_logits_f32le.bin reference/tokenizer_encode.json)
missing=()
for f in "${need[@]}"; do
    [ -e "../shared/$f" ] || missing+=("../shared/$f")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "error: the tests need ../shared beside the checkout (models, data and llama2.c references; see README, Models); missing: ${missing[*]}" >&2
    exit 1
fi
scripts/setup.sh
# Formatting, clippy and rustdoc warnings fail the run (host, runtime on thumbv7em, every board).
scripts/lint.sh
cargo build --release --workspace --locked
cargo test --release --workspace --locked
# The runtime's own tests for aarch64 (its NEON kernels), run in QEMU user mode
# (linker and runner in .cargo/config.toml).
cargo test --release --locked -p microlm --lib --target aarch64-unknown-linux-gnu
