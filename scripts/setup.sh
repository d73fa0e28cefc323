#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh machine: the Rust
# targets listed in rust-toolchain.toml, QEMU for the board tests, and an
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
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing: install them with 'sudo apt-get install ${missing[*]}'" >&2
        exit 1
    fi
fi

# flip-link, the linker wrapper every board uses (boards/*/.cargo/config.toml):
# the stack goes at the bottom of RAM, so an overflow faults instead of
# overwriting the arena. About 6 s to build from crates.io.
command -v flip-link >/dev/null 2>&1 || cargo install --locked flip-link
