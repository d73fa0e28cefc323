//! microlm on the STM32F405RG (Cortex-M4F, 1 MiB flash, 128 KiB SRAM: ST's
//! boards, the Netduino Plus 2; QEMU's `netduinoplus2` machine). The model
//! file is embedded in flash at build time (MICROLM_MODEL) and the arena is a
//! static sized for it by build.rs. The story and the stats line go out on
//! USART1 (PA9 TX, PA10 RX, 115200 8N1); log lines go through defmt. The run
//! loop is `microlm_board::line_session`.
//!
//! - On the board (default features: `probe`): an 8 MHz HSE crystal (as on
//!   ST's Discovery and most F405 boards; the Netduino Plus 2's 25 MHz with
//!   feature `hse-25mhz`), 168 MHz from the PLL, defmt over RTT (`cargo run
//!   --release` flashes it with probe-rs and shows the log). Each line
//!   received on USART1 is a command line with the flags of `microlm
//!   generate` (`-p "Once upon a time" -n 64 -t 0`); each runs one
//!   generation, and the next line is awaited. Without `-s`, the seed is the
//!   cycle counter when the line ended.
//! - Under QEMU (`--no-default-features --features qemu`): the HSI only (QEMU
//!   models no RCC; its core clock is 168 MHz whatever the registers say),
//!   the command line, seed clock and exit code over semihosting, defmt frames
//!   on semihosting stdout. One run, then QEMU exits with 0, or 1 on an error.
#![no_std]
#![no_main]

#[cfg(all(feature = "qemu", feature = "probe"))]
compile_error!(
    "features `qemu` and `probe` exclude each other: build for QEMU with --no-default-features --features qemu"
);
#[cfg(not(any(feature = "qemu", feature = "probe")))]
compile_error!("enable `probe` (the board, the default) or `qemu` (QEMU netduinoplus2)");

use core::fmt;

use cortex_m_rt::entry;
use microlm_board::{Board, Encoders, SerialConsole, TickRate};
use panic_probe as _;
use static_cell::ConstStaticCell;
use stm32f4xx_hal::pac::{self, USART1};
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::serial::{Config, Tx};

#[cfg(feature = "probe")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

// MODEL, ARENA_WORDS and CTX, from build.rs (MICROLM_MODEL, MICROLM_CTX, MICROLM_KV).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// USART1's baud rate.
const BAUD: u32 = 115_200;
/// The board's crystal (HSE), in Hz: 8 MHz (ST's Discovery and most F405
/// boards), or 25 MHz on the Netduino Plus 2 (feature `hse-25mhz`).
#[cfg(all(feature = "probe", not(feature = "hse-25mhz")))]
const HSE_HZ: u32 = 8_000_000;
#[cfg(all(feature = "probe", feature = "hse-25mhz"))]
const HSE_HZ: u32 = 25_000_000;
/// The core clock from the PLL, in Hz (the F405's maximum).
#[cfg(feature = "probe")]
const SYSCLK_HZ: u32 = 168_000_000;

/// Every large buffer of a run (the arena, ids for the built-in context), in .bss.
type Buffers = microlm_board::LineBuffers<ARENA_WORDS, { microlm_board::ids_for(CTX) }>;
static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers::new());

static BOARD: Board = Board {
    // SysTick runs on the core clock, 168 MHz both on the board (PLL) and in
    // QEMU 7.2's netduinoplus2 (fixed): 1e9 / 168e6 = 125/21 ns per tick, so
    // under `-icount shift=0` each tick is 125/21 instructions.
    tick: TickRate { num: 125, den: 21 },
    default_ctx: CTX,
    // The model embedded in flash.
    model: || microlm_board::embedded_model(&MODEL.0),
    encoders: Encoders::All,
};

/// USART1 as the run loop's console: each byte is sent as it is written
/// (the transmitter blocks on TXE), so nothing is buffered.
type Usart = SerialConsole<Tx<USART1>>;

/// Sends `s` on USART1, blocking on TXE byte by byte.
fn write(tx: &mut Tx<USART1>, s: &str) -> fmt::Result {
    fmt::Write::write_str(tx, s)
}

/// Waits until the last byte has been shifted out.
fn flush(tx: &mut Tx<USART1>) {
    let _ = nb::block!(embedded_hal_nb::serial::Write::flush(tx));
}

/// The board's clocks: 168 MHz from the crystal (`HSE_HZ`) through the PLL;
/// stm32f4xx-hal picks the PLL's dividers and the flash wait states.
#[cfg(feature = "probe")]
fn clocks(rcc: pac::RCC) -> stm32f4xx_hal::rcc::Clocks {
    let clocks = rcc.constrain().cfgr.use_hse(HSE_HZ.Hz()).sysclk(SYSCLK_HZ.Hz()).freeze();
    if clocks.sysclk().raw() != SYSCLK_HZ {
        defmt::panic!("the PLL gives {} Hz from the {} Hz crystal, not {}", clocks.sysclk().raw(), HSE_HZ, SYSCLK_HZ);
    }
    clocks
}

/// QEMU: the HSI as it is out of reset (QEMU models no RCC, so no PLL would
/// ever report ready); this only tells the HAL the USART's input clock.
#[cfg(feature = "qemu")]
fn clocks(rcc: pac::RCC) -> stm32f4xx_hal::rcc::Clocks {
    rcc.constrain().cfgr.freeze()
}

#[entry]
fn main() -> ! {
    microlm_board::measure::paint_stack();
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::panic!("peripherals already taken");
    };
    let clocks = clocks(dp.RCC);
    let gpioa = dp.GPIOA.split();
    let serial = match dp.USART1.serial((gpioa.pa9, gpioa.pa10), Config::default().baudrate(BAUD.bps()), &clocks) {
        Ok(serial) => serial,
        Err(_) => defmt::panic!("USART1 cannot run at {} baud from {} Hz", BAUD, clocks.pclk2().raw()),
    };
    let (tx, rx) = serial.split();
    let mut out = Usart::new(tx, write, flush);
    let buffers = BUFFERS.take();
    defmt::info!(
        "microlm on STM32F405: sysclk {} Hz, model {} bytes, arena {} bytes, ctx {}",
        clocks.sysclk().raw(),
        MODEL.0.len(),
        ARENA_WORDS * 4,
        CTX.unwrap_or(0)
    );
    session(&mut out, rx, &mut cp, buffers)
}

/// QEMU: one run with the semihosting command line, then exit.
#[cfg(feature = "qemu")]
fn session(
    out: &mut Usart,
    _rx: stm32f4xx_hal::serial::Rx<USART1>,
    cp: &mut cortex_m::Peripherals,
    b: &'static mut Buffers,
) -> ! {
    let ok = microlm_board::semihosting_line(&BOARD, out, &mut cp.SYST, b);
    if ok {
        defmt::info!("run finished");
    } else {
        defmt::error!("run failed");
    }
    microlm_board::host::exit(ok)
}

/// The board: each line on USART1 is a command line; run it, then wait for the next.
#[cfg(feature = "probe")]
fn session(
    out: &mut Usart,
    mut rx: stm32f4xx_hal::serial::Rx<USART1>,
    cp: &mut cortex_m::Peripherals,
    b: &'static mut Buffers,
) -> ! {
    microlm_board::start_cycles(&mut cp.DCB, &mut cp.DWT);
    let read = |_: &mut Usart| nb::block!(embedded_hal_nb::serial::Read::read(&mut rx)).ok();
    let log = |event| defmt::info!("{}", defmt::Display2Format(&event));
    microlm_board::line_session(&BOARD, out, &mut cp.SYST, b, microlm_board::cycles, read, log)
}

// A fault: one error line on USART1 and in the log, then stop().
microlm_board::fault_handlers!(fault_line, stop);

/// Writes `error: WHAT` on its own line on USART1 without the HAL (whose
/// handle the interrupted code owns): the line the host takes as the run's error.
fn fault_line(what: fmt::Arguments<'_>) {
    let line = microlm_board::fault_text(what);
    // SAFETY: the fault handler never returns, so the interrupted owner of
    // USART1 never writes again; only the data and status registers are used.
    let usart = unsafe { &*USART1::ptr() };
    for &b in line.as_bytes() {
        while usart.sr().read().txe().bit_is_clear() {}
        // SAFETY: any byte is a valid DR value.
        usart.dr().write(|w| unsafe { w.bits(u32::from(b)) });
    }
}

/// After a fault: exit 1 under QEMU; on the board, halt for the debugger.
fn stop() -> ! {
    #[cfg(feature = "qemu")]
    microlm_board::host::exit(false);
    #[cfg(not(feature = "qemu"))]
    loop {
        cortex_m::asm::bkpt();
    }
}
