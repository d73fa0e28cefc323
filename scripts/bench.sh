#!/usr/bin/env bash
# Measures the README performance table and writes it between its marker
# comments (<!-- bench:begin --> and <!-- bench:end -->): for stories260K in
# f32, q8_0, q4_0 and q4_16 with an f32 and an i8 KV cache, the mps2-an386 firmware's
# instructions per token (256 greedy tokens from BOS; exact under QEMU -icount,
# one QEMU run per figure), the instructions one more cache position adds (the
# averages over 256 and 128 tokens differ by 64 positions' worth) and the host's tokens/s (`microlm bench`, median of
# RUNS runs, one thread; timed, so machine-dependent and noisy).
#
# Usage: scripts/bench.sh [RUNS]     measure everything and rewrite the table
#        scripts/bench.sh --check    measure the instruction counts only and fail
#                                    (exit 1, naming each) where the README differs
# tests/tests/readme_figures.rs does what --check does, so a kernel change that
# moves a count fails the tests until this script is rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
fi
runs=${1:-7}
case "$runs" in '' | *[!0-9]*) echo "usage: scripts/bench.sh [--check] [RUNS]" >&2; exit 2 ;; esac
scripts/setup.sh
cargo build --release --locked -q -p microlm-cli
microlm=target/release/microlm
models=../shared/models
dir=target/bench
mkdir -p "$dir"

# The `instructions_per_token` field of the firmware's JSON line for $3 greedy tokens.
ipt() {
    local n
    n=$("$microlm" qemu "$1" -t 0 -n "$3" --kv "$2" --json | tail -1 |
        sed -n 's/.*"instructions_per_token":\([0-9]*\).*/\1/p')
    [ -n "$n" ] || { echo "error: no instructions_per_token from microlm qemu $1 --kv $2" >&2; exit 1; }
    echo "$n"
}

rows=()
for dtype in f32 q8_0 q4_0 q4_16; do
    model="$dir/stories260K-$dtype.mlm"
    "$microlm" convert "$models/stories260K.bin" --tokenizer "$models/tok512.bin" --dtype "$dtype" -o "$model" >/dev/null 2>"$dir/convert.log" ||
        { cat "$dir/convert.log" >&2; exit 1; }
    for kv in f32 i8; do
        count=$(ipt "$model" "$kv" 256)
        half=$(ipt "$model" "$kv" 128)
        per_position=$(((count - half) / 64))
        tps=-
        if [ "$check" = 0 ]; then
            tps=$("$microlm" bench "$model" --runs "$runs" --kv "$kv" --json | tail -1 |
                sed -n 's/.*"tokens_per_s_median":\([0-9]*\).*/\1/p')
        fi
        rows+=("$dtype $kv $count $per_position $tps")
        echo "$dtype weights, $kv cache: $count instructions per token, $per_position per position, host $tps tok/s" >&2
    done
done

BENCH_ROWS=$(printf '%s\n' "${rows[@]}") python3 - "$check" "$runs" README.md <<'PY'
import os, re, sys
check, runs, path = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
rows = [line.split() for line in os.environ["BENCH_ROWS"].splitlines() if line.strip()]
text = open(path).read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
if text.count(begin) != 1 or text.count(end) != 1:
    sys.exit(f"error: {path} needs one {begin} and one {end} line")
head, rest = text.split(begin)
table, tail = rest.split(end)
if check:
    want = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and all(re.fullmatch(r"[0-9,]+", c) for c in cells[2:4]):
            want[(cells[0], cells[1])] = (int(cells[2].replace(",", "")), int(cells[3].replace(",", "")))
    bad = 0
    for dtype, kv, count, per_position, _ in rows:
        if want.get((dtype, kv)) != (int(count), int(per_position)):
            print(f"{path}: {dtype} weights, {kv} cache: the table says {want.get((dtype, kv))}, "
                  f"measured {count} instructions per token and {per_position} per position", file=sys.stderr)
            bad = 1
    if bad:
        sys.exit("the README's instruction counts are stale: run scripts/bench.sh")
    print(f"{path}: the {len(rows)} instruction counts match", file=sys.stderr)
    sys.exit(0)
lines = [
    "",
    "| weights | KV cache | instructions per token (mps2-an386, exact) | per cache position | host tok/s (machine-dependent) |",
    "| --- | --- | ---: | ---: | ---: |",
]
for dtype, kv, count, per_position, tps in rows:
    lines.append(f"| {dtype} | {kv} | {int(count):,} | {int(per_position):,} | {int(tps):,} |")
lines.append("")
lines.append(f"stories260K, 256 greedy tokens from BOS; per cache position: (the average over 256 tokens − the "
             f"average over 128) / 64, the attention cost of one more position. Host: `microlm bench`, median of "
             f"{runs} runs, one thread.")
lines.append("")
open(path, "w").write(head + begin + "\n".join(lines) + "\n" + end + tail)
print(f"wrote the table of {path}", file=sys.stderr)
PY
