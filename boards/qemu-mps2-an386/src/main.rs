//! microlm on QEMU's mps2-an386 (Cortex-M4F): reads a model that QEMU loaded
//! into PSRAM (see memory.x), takes `microlm generate`'s flags from the
//! semihosting command line and streams the story to semihosting stdout, then
//! one stats line (the run loop is `microlm_board::start`). Run it with
//! `microlm qemu`, or by hand (see docs/BOARDS.md, "Running a model on the board").
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use microlm_board::{Board, Buffers, Encoders, Once, TickRate};

// ARENA_WORDS, from build.rs (MICROLM_ARENA_BYTES).
include!(concat!(env!("OUT_DIR"), "/arena.rs"));

/// Longest semihosting command line, in bytes.
const CMDLINE_MAX: usize = 4096;
/// Most token ids one run records for the stats line (BOS included).
const IDS_MAX: usize = 8192;

static BUFFERS: Once<Buffers<ARENA_WORDS, CMDLINE_MAX, { CMDLINE_MAX + 3 }, IDS_MAX>> = Once::new(Buffers::new());

static BOARD: Board = Board {
    // SysTick runs on the 25 MHz processor clock: 40 ns per tick.
    tick: TickRate::whole(40),
    default_ctx: None,
    model: microlm_board::loaded_model,
    encoders: Encoders::All,
};

#[entry]
fn main() -> ! {
    microlm_board::start(&BOARD, &BUFFERS)
}
