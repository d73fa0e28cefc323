#!/usr/bin/env bash
# Formatting, lints and docs, as CI holds them: any rustfmt difference, clippy
# warning or rustdoc warning fails. Run by scripts/test.sh before the tests;
# runs alone too (after scripts/setup.sh has installed the targets).
#
#   host workspace        cargo fmt --check, clippy --all-targets, rustdoc
#   runtime, Cortex-M4F   clippy and rustdoc for thumbv7em-none-eabihf (where the asm kernels compile)
#   runtime, Cortex-M55   clippy for thumbv8m.main-none-eabihf with target-cpu=cortex-m55 (the MVE kernels)
#   every board crate     cargo fmt --check and clippy for the board's own target
#                         (boards/stm32f405 also with its `qemu` feature set;
#                         boards/common also for riscv32imc-unknown-none-elf;
#                         boards/rp2350 for thumbv8m.main-none-eabihf and
#                         boards/nrf52840 for thumbv7em-none-eabihf, hardware only)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf 'lint: %s\n' "$*" >&2; }

step "cargo fmt --check (workspace, fuzz, boards)"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)
for board in boards/*/; do
    (cd "$board" && cargo fmt --check)
done

step "clippy -D warnings (host workspace, all targets)"
cargo clippy --release --workspace --all-targets --locked --quiet -- -D warnings

step "clippy -D warnings (runtime for thumbv7em-none-eabihf)"
cargo clippy --release --locked --quiet -p microlm --target thumbv7em-none-eabihf -- -D warnings

# The Cortex-M55 build (boards/qemu-mps3-an547's rustflags), where the MVE kernels compile.
step "clippy -D warnings (runtime for thumbv8m.main-none-eabihf, target-cpu=cortex-m55)"
RUSTFLAGS="-C target-cpu=cortex-m55 -C no-vectorize-loops -C no-vectorize-slp" cargo clippy --release --locked --quiet -p microlm --target thumbv8m.main-none-eabihf -- -D warnings

for board in boards/*/; do
    step "clippy -D warnings ($board, its own target)"
    (cd "$board" && cargo clippy --release --locked --quiet -- -D warnings)
done
# The shared board crate is checked for thumbv7m by its config; the RISC-V boards build it for rv32.
step "clippy -D warnings (boards/common/, riscv32imc-unknown-none-elf)"
(cd boards/common && cargo clippy --release --locked --quiet --target riscv32imc-unknown-none-elf -- -D warnings)
# The STM32F405's QEMU build swaps its clocks, logger and command-line source.
step "clippy -D warnings (boards/stm32f405/, --features qemu)"
(cd boards/stm32f405 && cargo clippy --release --locked --quiet --no-default-features --features qemu -- -D warnings)
# Its link firmware (src/bin/link.rs), on the board and under QEMU.
step "clippy -D warnings (boards/stm32f405/, --features link; --features qemu,link)"
(cd boards/stm32f405 && cargo clippy --release --locked --quiet --features link -- -D warnings)
(cd boards/stm32f405 && cargo clippy --release --locked --quiet --no-default-features --features qemu,link -- -D warnings)
# The Netduino Plus 2's 25 MHz crystal instead of the default 8 MHz.
step "clippy -D warnings (boards/stm32f405/, --features hse-25mhz)"
(cd boards/stm32f405 && cargo clippy --release --locked --quiet --features hse-25mhz -- -D warnings)
# The mps2-an386 link firmware (boards/common's `link` feature: UART, heap arena).
step "clippy -D warnings (boards/qemu-mps2-an386/, --features link)"
(cd boards/qemu-mps2-an386 && cargo clippy --release --locked --quiet --features link --all-targets -- -D warnings)

step "rustdoc -D warnings (host workspace, runtime for thumbv7em-none-eabihf)"
# The CLI's binary is named like the runtime's library: document the libraries, then the binary.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --lib --locked --quiet
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet -p microlm-cli --bin microlm
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet -p microlm --target thumbv7em-none-eabihf
