#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then builds and tests.
# The QEMU tests (tests/tests/qemu.rs) build the board firmware with cargo in a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --workspace --locked
cargo test --release --workspace --locked
# The runtime's own tests for aarch64 (its NEON kernels), run in QEMU user mode
# (linker and runner in .cargo/config.toml).
cargo test --release --locked -p microlm --lib --target aarch64-unknown-linux-gnu
