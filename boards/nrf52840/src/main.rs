//! microlm on the nRF52840 (nRF52840-DK: Cortex-M4F at 64 MHz, 1 MiB flash,
//! 256 KiB RAM). The model file is embedded in flash at build time
//! (MICROLM_MODEL) and read where it lies; the arena is a static sized for it
//! by build.rs. The story and the stats line go out on UARTE0 through the
//! DK's J-Link virtual COM port (P0.06 TX, P0.08 RX, 115200 8N1); log lines
//! go through defmt over RTT. The run loop is `microlm_board::run`.
//!
//! Each line received on UARTE0 is a command line with the flags of `microlm
//! generate` (`-p "Once upon a time" -n 64 -t 0`); each runs one generation,
//! and the next line is awaited. Without `-s`, the seed is the cycle counter
//! when the line ended.
#![no_std]
#![no_main]

use core::fmt;

use cortex_m_rt::entry;
use defmt_rtt as _;
use hal::clocks::Clocks;
use hal::gpio::{p0, Level};
use hal::pac::{self, UARTE0};
use hal::uarte::{Baudrate, Parity, Pins, Uarte};
use microlm_board::{Board, Encoders, SerialConsole, TickRate};
use nrf52840_hal as hal;
use panic_probe as _;
use static_cell::ConstStaticCell;

// MODEL, ARENA_WORDS and CTX, from build.rs (MICROLM_MODEL, MICROLM_CTX, MICROLM_KV).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// The core clock: 64 MHz, from the 32 MHz crystal (HFXO) once it is started.
const CORE_HZ: u32 = 64_000_000;

/// Every large buffer of a run (the arena, ids for the built-in context), in .bss.
type Buffers = microlm_board::LineBuffers<ARENA_WORDS, { microlm_board::ids_for(CTX) }>;
static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers::new());

static BOARD: Board = Board {
    // SysTick runs on the 64 MHz core clock: 1e9 / 64e6 = 125/8 ns per tick.
    // The stats line's instruction count is exact only under QEMU's -icount;
    // here it is core cycles x 125/8.
    tick: TickRate { num: 125, den: 8 },
    default_ctx: CTX,
    // The model embedded in flash.
    model: || microlm_board::embedded_model(&MODEL.0),
    encoders: Encoders::All,
};

/// UARTE0 as the run loop's console. EasyDMA reads only RAM, so the HAL
/// copies each write through a small stack buffer and waits for ENDTX: when a
/// write returns its bytes are out, and nothing is buffered here.
type Serial = SerialConsole<Uarte<UARTE0>>;

/// Sends `s` through a small RAM buffer (EasyDMA reads only RAM), waiting for ENDTX.
fn write(port: &mut Uarte<UARTE0>, s: &str) -> fmt::Result {
    fmt::Write::write_str(port, s)
}

/// Nothing to wait for: each write returns when its bytes are out.
fn flush(_port: &mut Uarte<UARTE0>) {
    // Every write has already waited for ENDTX.
}

#[entry]
fn main() -> ! {
    microlm_board::measure::paint_stack();
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::panic!("peripherals already taken");
    };
    // The crystal: UARTE baud rates from the internal RC oscillator drift with temperature.
    let _clocks = Clocks::new(dp.CLOCK).enable_ext_hfosc();
    let port0 = p0::Parts::new(dp.P0);
    let pins = Pins {
        txd: port0.p0_06.into_push_pull_output(Level::High).degrade(),
        rxd: port0.p0_08.into_floating_input().degrade(),
        cts: None,
        rts: None,
    };
    let uarte = Uarte::new(dp.UARTE0, pins, Parity::EXCLUDED, Baudrate::BAUD115200);
    let mut out = Serial::new(uarte, write, flush);
    let buffers = BUFFERS.take();
    defmt::info!(
        "microlm on nRF52840: core {} Hz, model {} bytes at {=usize:#010x}, arena {} bytes, ctx {}",
        CORE_HZ,
        MODEL.0.len(),
        MODEL.0.as_ptr() as usize,
        ARENA_WORDS * 4,
        CTX.unwrap_or(0)
    );
    session(&mut out, &mut cp, buffers)
}

/// Each line on UARTE0 is a command line: run it, then wait for the next.
fn session(out: &mut Serial, cp: &mut cortex_m::Peripherals, b: &'static mut Buffers) -> ! {
    microlm_board::start_cycles(&mut cp.DCB, &mut cp.DWT);
    // One byte per EasyDMA transfer, into RAM (a stack slot).
    let read = |s: &mut Serial| {
        let mut byte = [0u8; 1];
        s.port.read(&mut byte).ok().map(|()| byte[0])
    };
    let log = |event| defmt::info!("{}", defmt::Display2Format(&event));
    microlm_board::line_session(&BOARD, out, &mut cp.SYST, b, microlm_board::cycles, read, log)
}

// A fault: one error line on UARTE0 and in the log, then stop().
microlm_board::fault_handlers!(fault_line, stop);

/// Writes `error: WHAT` on its own line on UARTE0 without the HAL (whose
/// handle the interrupted code owns): one EasyDMA transfer from a RAM buffer.
fn fault_line(what: fmt::Arguments<'_>) {
    let line = microlm_board::fault_text(what);
    let bytes = line.as_bytes();
    // SAFETY: the fault handler never returns, so the interrupted owner of
    // UARTE0 never touches it again.
    let uarte = unsafe { &*UARTE0::ptr() };
    // A transfer the fault interrupted is stopped first.
    // SAFETY: writing 1 triggers a task; 0 clears an event.
    uarte.tasks_stoptx.write(|w| unsafe { w.bits(1) });
    // SAFETY: `bytes` is in RAM (this stack frame) and outlives the transfer,
    // which is waited for below; its length fits the 16-bit MAXCNT.
    uarte.txd.ptr.write(|w| unsafe { w.bits(bytes.as_ptr() as u32) });
    // SAFETY: as above.
    uarte.txd.maxcnt.write(|w| unsafe { w.bits(bytes.len() as u32) });
    // SAFETY: as above.
    uarte.events_endtx.write(|w| unsafe { w.bits(0) });
    // SAFETY: as above.
    uarte.tasks_starttx.write(|w| unsafe { w.bits(1) });
    while uarte.events_endtx.read().bits() == 0 {}
}

/// After a fault: halt for the debugger.
fn stop() -> ! {
    loop {
        cortex_m::asm::bkpt();
    }
}
