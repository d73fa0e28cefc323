#!/usr/bin/env bash
# Measures the README's quantization quality table and writes it between its
# marker comments (<!-- quality:begin --> and <!-- quality:end -->), with the
# ΔPPL-against-bytes plot docs/quality.svg: stories260K quantized by each row's
# `microlm quantize` flags, calibrated on the first half of tinystories_dev.txt,
# scored on the first 30,000 tokens of the second half against the f32 file.
# Every step is deterministic (GPTQ in f64, bit-identical kernels), so the
# figures are the same on every machine.
#
# Usage: scripts/quality.sh            measure and rewrite the table and the plot
#        scripts/quality.sh --check    measure and fail (exit 1, naming each row)
#                                      where the README differs
# tests/tests/readme_figures.rs runs --check.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[ "${1:-}" = "--check" ] && check=1
cargo build --release --locked -q -p microlm-cli
microlm=$PWD/target/release/microlm
models=$PWD/../shared/models
text=$PWD/../shared/data/tinystories_dev.txt
dir=target/quality
mkdir -p "$dir"
calibrate=(--calibrate "$text" --calibrate-half first --calibrate-tokens 0)

# name | row label | quantize flags (after the f32 file)
rows=(
    "q8_0|q8_0|--dtype q8_0"
    "q8_0-gptq|q8_0, GPTQ|--dtype q8_0 ${calibrate[*]} --gptq"
    "q4_0|q4_0|--dtype q4_0"
    "q4_0-q8emb|q4_0 + q8_0 embedding|--dtype q4_0 --tensor-dtype embedding=q8_0"
    "q4_0-q8emb-imatrix|q4_0 + q8_0 embedding, calibrated (imatrix search)|--dtype q4_0 --tensor-dtype embedding=q8_0 ${calibrate[*]}"
    "q4_0-gptq|q4_0, GPTQ|--dtype q4_0 ${calibrate[*]} --gptq"
    "q4_0-q8emb-gptq|q4_0 + q8_0 embedding, GPTQ|--dtype q4_0 --tensor-dtype embedding=q8_0 ${calibrate[*]} --gptq"
    "q4_16|q4_16|--dtype q4_16"
    "q4_16-gptq|q4_16, GPTQ|--dtype q4_16 ${calibrate[*]} --gptq"
    "budget-170K|\`--budget 170K\`, GPTQ|--budget 170K ${calibrate[*]} --gptq"
    "budget-150K|\`--budget 150K --fold-norms\`, GPTQ|--budget 150K --fold-norms ${calibrate[*]} --gptq"
    "board-lm3s|\`--board lm3s6965evb --kv i8 --ctx 129\`, GPTQ|--board lm3s6965evb --kv i8 --ctx 129 ${calibrate[*]} --gptq"
)

f32="$dir/stories260K-f32.mlm"
"$microlm" convert "$models/stories260K.bin" --tokenizer "$models/tok512.bin" --dtype f32 -o "$f32" >/dev/null 2>"$dir/log" ||
    { cat "$dir/log" >&2; exit 1; }
files=()
labels=()
for row in "${rows[@]}"; do
    IFS='|' read -r name label flags <<<"$row"
    out="$dir/$name.mlm"
    # shellcheck disable=SC2086 # the flags are words
    "$microlm" quantize "$f32" $flags -o "$out" >/dev/null 2>"$dir/$name.log" || { cat "$dir/$name.log" >&2; exit 1; }
    mix=$(sed -n 's/^budget: chose //p' "$dir/$name.log")
    [ -n "$mix" ] && label="$label: $mix"
    files+=("$out")
    labels+=("$label")
    echo "quantized $name" >&2
done
plot=()
[ "$check" = 0 ] && plot=(--plot docs/quality.svg)
"$microlm" eval "${files[@]}" --text "$text" --half second --max-tokens 30000 --reference "$f32" --json "${plot[@]}" \
    2>"$dir/eval.log" | grep '^{' >"$dir/eval.jsonl" || { cat "$dir/eval.log" >&2; exit 1; }

LABELS=$(printf '%s\n' "${labels[@]}") python3 - "$check" README.md "$dir/eval.jsonl" <<'PY'
import json, os, sys
check, path, results = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
labels = os.environ["LABELS"].splitlines()
evals = [json.loads(line) for line in open(results)]
assert len(evals) == len(labels), (len(evals), len(labels))
ref = evals[0]["reference_perplexity"]
lines = [
    "",
    f"| file | weight bytes | perplexity | ΔPPL | KLD (nats) | top-1 |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
]
for label, e in zip(labels, evals):
    dppl = 100.0 * (e["perplexity"] / ref - 1.0)
    lines.append(f"| {label} | {e['weight_bytes']:,} | {e['perplexity']:.4f} | {dppl:+.2f}% "
                 f"| {e['kl_divergence']:.5f} | {e['top1_agreement']:.1f}% |")
lines.append("")
lines.append(f"Reference: the f32 file, perplexity {ref:.4f} on the same {evals[0]['tokens']:,} tokens.")
lines.append("")
table = "\n".join(lines) + "\n"
text = open(path).read()
begin, end = "<!-- quality:begin -->", "<!-- quality:end -->"
if text.count(begin) != 1 or text.count(end) != 1:
    sys.exit(f"error: {path} needs one {begin} and one {end} line")
head, rest = text.split(begin)
old, tail = rest.split(end)
if check:
    if old != table:
        want = [l for l in table.splitlines() if l not in old.splitlines()]
        print("measured rows that the README does not have:\n" + "\n".join(want), file=sys.stderr)
        sys.exit("the README's quality table is stale: run scripts/quality.sh")
    print(f"{path}: the {len(labels)} quality rows match", file=sys.stderr)
    sys.exit(0)
open(path, "w").write(head + begin + table + end + tail)
print(f"wrote the quality table of {path} and docs/quality.svg", file=sys.stderr)
PY
