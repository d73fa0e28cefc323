//! microlm on QEMU's riscv32 virt machine (RV32IMC as the ESP32-C3 has it,
//! 16 MiB of DRAM at 0x80000000). The model file is embedded in the image at
//! build time (MICROLM_MODEL; QEMU's `-kernel` loads it to RAM) and the arena
//! is a static sized for it by build.rs; the flags of `microlm generate` come
//! from the semihosting command line and the story streams to semihosting
//! stdout, then one stats line (the run loop is `microlm_board::start`;
//! `minstret` counts the instructions). Run it with `microlm qemu FILE
//! --machine riscv32-virt`, which builds it with FILE embedded.
#![no_std]
#![no_main]

use microlm_board::{Board, Buffers, Encoders, Once, TickRate};
use riscv_rt::entry;

// MODEL, ARENA_WORDS and CTX, from build.rs (MICROLM_MODEL, MICROLM_CTX).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// Longest semihosting command line, in bytes.
const CMDLINE_MAX: usize = 512;
/// Token ids one run records (BOS, then one per position of the context).
const IDS_MAX: usize = match CTX {
    Some(ctx) => ctx + 1,
    None => 1,
};

static BUFFERS: Once<Buffers<ARENA_WORDS, CMDLINE_MAX, { CMDLINE_MAX + 3 }, IDS_MAX>> = Once::new(Buffers::new());

/// The model embedded in the image.
fn model() -> Result<&'static [u8], microlm_board::ModelError> {
    microlm_board::embedded_model(&MODEL.0)
}

static BOARD: Board = Board {
    // minstret counts instructions retired: one per count.
    tick: TickRate::whole(1),
    default_ctx: CTX,
    model,
    encoders: Encoders::All,
};

#[entry]
fn main() -> ! {
    microlm_board::start(&BOARD, &BUFFERS)
}
