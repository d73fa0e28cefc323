//! microlm on QEMU's mps3-an547 (Cortex-M55 with MVE/Helium, Secure state): reads a model
//! that QEMU loaded into DDR (see memory.x), takes `microlm generate`'s flags from the
//! semihosting command line and streams the story to semihosting stdout, then
//! one stats line (the run loop is `microlm_board::start`). The runtime is built
//! for `target-cpu=cortex-m55` (.cargo/config.toml), so its quantized matvecs run
//! the MVE block sums. Run it with `microlm qemu FILE --machine mps3-an547`, or by
//! hand (see docs/BOARDS.md, "Boards").
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
    // SysTick runs on the 32 MHz processor clock (the SSE-300 wires no
    // reference clock): 31.25 ns per tick.
    tick: TickRate { num: 125, den: 4 },
    default_ctx: None,
    model: microlm_board::loaded_model,
    encoders: Encoders::All,
};

#[entry]
fn main() -> ! {
    microlm_board::start(&BOARD, &BUFFERS)
}
