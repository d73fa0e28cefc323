#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh machine: the Rust
# targets listed in rust-toolchain.toml, and QEMU for the board tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# rustup installs the toolchain file's targets only with a new toolchain; add any that are missing.
targets=$(sed -n '/^targets/,/]/p' rust-toolchain.toml | grep -o '"[^"]*"' | tr -d '"')
installed=$(rustup target list --installed)
for t in $targets; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing qemu-system-arm with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm >/dev/null
    else
        echo "qemu-system-arm is missing: install it with 'sudo apt-get install qemu-system-arm'" >&2
        exit 1
    fi
fi
