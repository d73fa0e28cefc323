#!/usr/bin/env bash
# Runs the runtime's tests under Miri (nightly; all but one slow search test), which checks for undefined
# behaviour and out-of-bounds access. libm's soft-float path replaces its
# x86 inline assembly (same correctly rounded sqrt), which Miri cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup +nightly component list --installed 2>/dev/null | grep -q '^miri' || rustup +nightly component add miri rust-src
# The scale-search test runs thousands of candidate quantizations: too slow to interpret.
cargo +nightly miri test -p microlm --features std,libm/force-soft-floats "$@" -- --skip weighted_search
