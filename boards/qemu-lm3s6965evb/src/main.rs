//! microlm on QEMU's lm3s6965evb (TI Stellaris LM3S6965: Cortex-M3, 256 KiB
//! flash, 64 KiB SRAM). The model file is embedded in flash at build time
//! (MICROLM_MODEL) and the arena is a static sized for it by build.rs; the
//! flags of `microlm generate` come from the semihosting command line and the
//! story streams to semihosting stdout, then one stats line (the run loop is
//! `microlm_board::start`). Run it with `microlm qemu FILE --machine
//! lm3s6965evb`, which builds it with FILE embedded.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use microlm_board::{Board, Buffers, Encoders, Once, TickRate};

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

/// The model embedded in flash.
fn model() -> Result<&'static [u8], microlm_board::ModelError> {
    microlm_board::embedded_model(&MODEL.0)
}

static BOARD: Board = Board {
    // QEMU 7.2 runs the Stellaris core (and SysTick) at 12.5 MHz with the
    // clock registers as reset (this firmware leaves them): 80 ns per tick,
    // which agrees with an exact count (../shared/tools/qemu-insn-count).
    tick: TickRate::whole(80),
    default_ctx: CTX,
    model,
    // The encoder of the embedded model's tokenizer kind (build.rs sets
    // `microlm_bpe` for byte-level BPE): the BPE one is otherwise left out of the flash.
    encoders: if cfg!(microlm_bpe) { Encoders::All } else { Encoders::SentencePiece },
};

#[entry]
fn main() -> ! {
    microlm_board::start(&BOARD, &BUFFERS)
}
