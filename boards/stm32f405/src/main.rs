//! microlm on the STM32F405RG (Netduino Plus 2: Cortex-M4F, 1 MiB flash,
//! 128 KiB SRAM; QEMU's `netduinoplus2` machine). The model file is embedded
//! in flash at build time (MICROLM_MODEL) and the arena is a static sized for
//! it by build.rs. The story and the stats line go out on USART1 (PA9 TX,
//! PA10 RX, 115200 8N1); log lines go through defmt. The run loop is
//! `microlm_board::run`.
//!
//! - On the board (default features: `probe`): 25 MHz HSE, 168 MHz PLL, defmt
//!   over RTT (`cargo run --release` flashes it with probe-rs and shows the
//!   log). Each line received on USART1 is a command line with the flags of
//!   `microlm generate` (`-p "Once upon a time" -n 64 -t 0`); each runs one
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

use cortex_m_rt::{entry, exception, ExceptionFrame};
use microlm_board::{Board, Console, TickRate, Work};
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

/// Longest command line, in bytes (argv[0] included).
const CMDLINE_MAX: usize = 512;
/// Token ids one run records (BOS, then one per position of the context).
const IDS_MAX: usize = match CTX {
    Some(ctx) => ctx + 1,
    None => 1,
};
/// USART1's baud rate.
const BAUD: u32 = 115_200;
/// The Netduino Plus 2's crystal (HSE), in Hz.
#[cfg(feature = "probe")]
const HSE_HZ: u32 = 25_000_000;

/// Every large buffer of a run, in .bss.
struct Buffers {
    /// Activations, KV cache, logits and sampler scratch (`Session::new`).
    arena: [u32; ARENA_WORDS],
    /// Prompt token ids: a prompt is shorter than the line holding it, plus BOS and slack.
    prompt: [u32; CMDLINE_MAX + 3],
    /// BOS then every next token, for the stats line.
    ids: [u32; IDS_MAX],
    /// The command line.
    line: heapless::Vec<u8, CMDLINE_MAX>,
}

static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers {
    arena: [0; ARENA_WORDS],
    prompt: [0; CMDLINE_MAX + 3],
    ids: [0; IDS_MAX],
    line: heapless::Vec::new(),
});

/// The model embedded in flash.
fn model() -> Result<&'static [u8], microlm_board::ModelError> {
    microlm_board::embedded_model(&MODEL.0)
}

static BOARD: Board = Board {
    // SysTick runs on the core clock, 168 MHz both on the board (PLL) and in
    // QEMU 7.2's netduinoplus2 (fixed): 1e9 / 168e6 = 125/21 ns per tick, so
    // under `-icount shift=0` each tick is 125/21 instructions.
    tick: TickRate { num: 125, den: 21 },
    default_ctx: CTX,
    model,
};

/// USART1 as the run loop's console: each byte is sent as it is written
/// (the transmitter blocks on TXE), so nothing is buffered.
struct Usart {
    tx: Tx<USART1>,
    /// The last byte written, to know whether a line is open.
    last: u8,
}

impl fmt::Write for Usart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(&b) = s.as_bytes().last() {
            self.last = b;
        }
        self.tx.write_str(s)
    }
}

impl Console for Usart {
    fn flush(&mut self) {
        // Bytes leave as they are written; wait until the last has been shifted out.
        let _ = nb::block!(embedded_hal_nb::serial::Write::flush(&mut self.tx));
    }

    fn end_line(&mut self) {
        if self.last != b'\n' {
            let _ = fmt::Write::write_str(self, "\n");
        }
    }
}

/// The board's clocks: 168 MHz from the 25 MHz crystal through the PLL.
#[cfg(feature = "probe")]
fn clocks(rcc: pac::RCC) -> stm32f4xx_hal::rcc::Clocks {
    rcc.constrain().cfgr.use_hse(HSE_HZ.Hz()).sysclk(168.MHz()).freeze()
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
    let mut out = Usart { tx, last: b'\n' };
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
    use core::fmt::Write as _;
    // The line is read into the full capacity, then cut to what the host wrote.
    let _ = b.line.resize_default(CMDLINE_MAX);
    let ok = match microlm_board::host::cmdline(&mut b.line) {
        Some(line) => {
            let len = line.len();
            defmt::info!("command line: {} bytes", len);
            let work = Work { arena: &mut b.arena, prompt: &mut b.prompt, ids: &mut b.ids };
            microlm_board::run(&BOARD, out, &mut cp.SYST, &mut b.line[..len], work, microlm_board::host::time)
        }
        None => {
            let _ = writeln!(out, "error: semihosting command line is longer than {CMDLINE_MAX} bytes");
            false
        }
    };
    out.flush();
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
    use core::fmt::Write as _;
    cp.DCB.enable_trace();
    cp.DWT.enable_cycle_counter();
    loop {
        let _ = out.write_str("> ");
        out.flush();
        b.line.clear();
        // argv[0], which the parser skips.
        let _ = b.line.extend_from_slice(b"microlm ");
        let mut overflow = false;
        loop {
            let Ok(byte) = nb::block!(embedded_hal_nb::serial::Read::read(&mut rx)) else { continue };
            if byte == b'\r' || byte == b'\n' {
                break;
            }
            overflow |= b.line.push(byte).is_err();
        }
        let _ = out.write_str("\n");
        if overflow {
            let _ = writeln!(out, "error: the command line is longer than {CMDLINE_MAX} bytes");
            continue;
        }
        defmt::info!("command line: {} bytes", b.line.len());
        let work = Work { arena: &mut b.arena, prompt: &mut b.prompt, ids: &mut b.ids };
        let ok = microlm_board::run(&BOARD, out, &mut cp.SYST, &mut b.line, work, cycles);
        defmt::info!("run {}", if ok { "finished" } else { "failed" });
    }
}

/// The cycle counter, as a seed: when a typed line ended varies run to run.
#[cfg(feature = "probe")]
fn cycles() -> u64 {
    u64::from(cortex_m::peripheral::DWT::cycle_count())
}

/// A fault: one error line on USART1 and in the log, then (under QEMU) exit 1.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    fault_line(format_args!("fault at pc {:#010x}", frame.pc()));
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    stop()
}

/// Any unexpected interrupt or exception: report it as a fault does.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    defmt::error!("unexpected exception {}", irqn);
    fault_line(format_args!("unexpected exception {irqn}"));
    stop()
}

/// Writes `error: WHAT` on its own line on USART1 without the HAL (whose
/// handle the interrupted code owns): the line the host takes as the run's error.
fn fault_line(what: fmt::Arguments<'_>) {
    let mut line = heapless::String::<48>::new();
    let _ = fmt::Write::write_fmt(&mut line, format_args!("\nerror: {what}\n"));
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
