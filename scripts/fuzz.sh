#!/usr/bin/env bash
# Runs every fuzz target for a bounded time on nightly with libFuzzer.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
# Crashes land in fuzz/artifacts/<target>/; copy each into
# fuzz/regressions/<target>/ so the test suite replays it forever.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=${*:-parse_forward tokenizer llama2c_import gguf_reader safetensors_header link_server}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || { echo "cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 1; }

# Seeds: a tiny valid model, the real stories260K, tokenizer texts, tiny llama2.c checkpoints,
# small GGUF files and a small safetensors file.
cargo build --release -q -p microlm-cli
target/release/microlm convert ../shared/models/stories260K.bin --tokenizer ../shared/models/tok512.bin -o target/fuzz-stories260K.mlm
(cd fuzz && cargo +nightly run -q --release --bin make_seeds -- corpus-seeds ../target/fuzz-stories260K.mlm)

for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/corpus-seeds/$t" "fuzz/regressions/$t"
    log="target/fuzz-$t.log"
    echo "== $t: ${secs}s" >&2
    # Inputs are capped so mutation stays fast; encode is quadratic in the text (as llama2.c's is).
    case $t in tokenizer) max_len=128 ;; llama2c_import) max_len=16384 ;; *) max_len=65536 ;; esac
    (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" "corpus-seeds/$t" "regressions/$t" -- \
        -max_total_time="$secs" -max_len="$max_len" -rss_limit_mb=4096 -print_final_stats=1) >"$log" 2>&1 || {
        echo "$t: crash or error, see $log and fuzz/artifacts/$t/" >&2
        exit 1
    }
    grep -E '^(Done|stat::number_of_executed_units)' "$log" >&2 || tail -3 "$log" >&2
done
