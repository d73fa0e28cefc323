#!/usr/bin/env bash
# Prints the performance table of docs/PERFORMANCE.md: for stories260K in
# f32, q8_0 and q4_0 with an f32 and an i8 KV cache, the mps2-an386 firmware's
# instructions per token (256 greedy tokens, exact under -icount), the added
# instructions per cache position (from the 128- and 256-token runs), and the
# host's tokens/s (`microlm bench`, median of RUNS runs, one thread; timed, so
# noisy). Then the firmware's .text. Usage: scripts/bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
runs=${1:-7}
cargo build --release --locked -q -p microlm-cli
microlm=target/release/microlm
models=../shared/models
dir=target/bench
mkdir -p "$dir"

# The `instructions_per_token` field of the firmware's JSON line.
ipt() {
    "$microlm" qemu "$1" -t 0 -n "$2" --kv "$3" --json 2>/dev/null | tail -1 |
        sed -n 's/.*"instructions_per_token":\([0-9]*\).*/\1/p'
}

printf '| weights | KV cache | instructions per token | per position | host tok/s |\n'
printf '| --- | --- | ---: | ---: | ---: |\n'
for dtype in f32 q8_0 q4_0; do
    model="$dir/stories260K-$dtype.mlm"
    "$microlm" convert "$models/stories260K.bin" --tokenizer "$models/tok512.bin" --dtype "$dtype" -o "$model" >/dev/null 2>&1
    for kv in f32 i8; do
        full=$(ipt "$model" 256 "$kv")
        half=$(ipt "$model" 128 "$kv")
        # Token p costs base + slope · p, so the averages over 256 and 128 tokens differ by slope · 64.
        slope=$(((full - half) / 64))
        tps=$("$microlm" bench "$model" --runs "$runs" --kv "$kv" --json | tail -1 |
            sed -n 's/.*"tokens_per_s_median":\([0-9]*\).*/\1/p')
        printf '| %s | %s | %s | %s | %s |\n' "$dtype" "$kv" "$full" "$slope" "$tps"
    done
done

firmware=$(find boards/qemu-mps2-an386/target -path '*release/microlm-qemu-mps2-an386' -type f | head -1)
if command -v llvm-size >/dev/null && [ -n "$firmware" ]; then
    echo
    llvm-size "$firmware"
fi
