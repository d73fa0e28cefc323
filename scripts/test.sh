#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then builds and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --workspace --locked
cargo test --release --workspace --locked
