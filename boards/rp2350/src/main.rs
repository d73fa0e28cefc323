//! microlm on the RP2350 (Raspberry Pi Pico 2: Cortex-M33 at 150 MHz, 4 MiB
//! QSPI flash read in place through the XIP cache, 520 KiB SRAM). The model
//! file is embedded in flash at build time (MICROLM_MODEL) and read where it
//! lies; the arena is a static sized for it by build.rs. The story and the
//! stats line go out on UART0 (GPIO0 TX, GPIO1 RX, 115200 8N1); log lines go
//! through defmt over RTT. The run loop is `microlm_board::run`.
//!
//! Each line received on UART0 is a command line with the flags of `microlm
//! generate` (`-p "Once upon a time" -n 64 -t 0`); each runs one generation,
//! and the next line is awaited. Without `-s`, the seed is the cycle counter
//! when the line ended. Only core 0 runs.
#![no_std]
#![no_main]

use core::fmt;

use defmt_rtt as _;
use hal::clocks::Clock as _;
use hal::fugit::RateExtU32 as _;
use hal::gpio::{bank0, FunctionUart, Pin, PullDown};
use hal::pac::{self, UART0};
use hal::uart::{DataBits, Enabled, StopBits, UartConfig, UartPeripheral};
use microlm_board::{Board, Encoders, SerialConsole, TickRate};
use panic_probe as _;
use rp235x_hal as hal;
use static_cell::ConstStaticCell;

// MODEL, ARENA_WORDS and CTX, from build.rs (MICROLM_MODEL, MICROLM_CTX, MICROLM_KV).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// The block the boot ROM looks for in the first 4 KiB of flash (memory.x's
/// `.start_block`): a secure-mode Arm executable.
#[link_section = ".start_block"]
#[used]
pub static IMAGE_DEF: hal::block::ImageDef = hal::block::ImageDef::secure_exe();

/// UART0's baud rate.
const BAUD: u32 = 115_200;
/// The Pico 2's crystal (XOSC), in Hz.
const XTAL_HZ: u32 = 12_000_000;

/// Every large buffer of a run (the arena, ids for the built-in context), in .bss.
type Buffers = microlm_board::LineBuffers<ARENA_WORDS, { microlm_board::ids_for(CTX) }>;
static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers::new());

static BOARD: Board = Board {
    // SysTick runs on the core clock, 150 MHz (the PLL as rp235x-hal sets it
    // up): 1e9 / 150e6 = 20/3 ns per tick. The stats line's instruction count
    // is exact only under QEMU's -icount; here it is core cycles x 20/3.
    tick: TickRate { num: 20, den: 3 },
    default_ctx: CTX,
    // The model embedded in flash.
    model: || microlm_board::embedded_model(&MODEL.0),
    encoders: Encoders::All,
};

/// UART0's pins: GPIO0 TX, GPIO1 RX.
type Pins = (Pin<bank0::Gpio0, FunctionUart, PullDown>, Pin<bank0::Gpio1, FunctionUart, PullDown>);
type Uart = UartPeripheral<Enabled, UART0, Pins>;

/// UART0 as the run loop's console: each byte goes into the 32-byte FIFO as it
/// is written (blocking while it is full), so nothing is buffered here.
type Serial = SerialConsole<Uart>;

/// Puts `s` into UART0's 32-byte FIFO, blocking while it is full.
fn write(port: &mut Uart, s: &str) -> fmt::Result {
    port.write_full_blocking(s.as_bytes());
    Ok(())
}

/// Waits until the FIFO has drained and the last byte has been shifted out.
fn flush(port: &mut Uart) {
    let _ = nb::block!(embedded_hal_nb::serial::Write::flush(port));
}

#[hal::entry]
fn main() -> ! {
    microlm_board::measure::paint_stack();
    let (Some(mut dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::panic!("peripherals already taken");
    };
    let mut watchdog = hal::Watchdog::new(dp.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XTAL_HZ,
        dp.XOSC,
        dp.CLOCKS,
        dp.PLL_SYS,
        dp.PLL_USB,
        &mut dp.RESETS,
        &mut watchdog,
    ) else {
        defmt::panic!("the {} Hz crystal or a PLL did not start", XTAL_HZ);
    };
    let sio = hal::Sio::new(dp.SIO);
    let pins = hal::gpio::Pins::new(dp.IO_BANK0, dp.PADS_BANK0, sio.gpio_bank0, &mut dp.RESETS);
    let uart_pins: Pins = (pins.gpio0.into_function(), pins.gpio1.into_function());
    let config = UartConfig::new(BAUD.Hz(), DataBits::Eight, None, StopBits::One);
    let peripheral_hz = clocks.peripheral_clock.freq();
    let uart = match UartPeripheral::new(dp.UART0, uart_pins, &mut dp.RESETS).enable(config, peripheral_hz) {
        Ok(uart) => uart,
        Err(_) => defmt::panic!("UART0 cannot run at {} baud from {} Hz", BAUD, peripheral_hz.to_Hz()),
    };
    let mut out = Serial::new(uart, write, flush);
    let buffers = BUFFERS.take();
    defmt::info!(
        "microlm on RP2350: sysclk {} Hz, model {} bytes at {=usize:#010x}, arena {} bytes, ctx {}",
        clocks.system_clock.freq().to_Hz(),
        MODEL.0.len(),
        MODEL.0.as_ptr() as usize,
        ARENA_WORDS * 4,
        CTX.unwrap_or(0)
    );
    session(&mut out, &mut cp, buffers)
}

/// Each line on UART0 is a command line: run it, then wait for the next.
fn session(out: &mut Serial, cp: &mut cortex_m::Peripherals, b: &'static mut Buffers) -> ! {
    microlm_board::start_cycles(&mut cp.DCB, &mut cp.DWT);
    let read = |s: &mut Serial| nb::block!(embedded_hal_nb::serial::Read::read(&mut s.port)).ok();
    let log = |event| defmt::info!("{}", defmt::Display2Format(&event));
    microlm_board::line_session(&BOARD, out, &mut cp.SYST, b, microlm_board::cycles, read, log)
}

// A fault: one error line on UART0 and in the log, then stop().
microlm_board::fault_handlers!(fault_line, stop);

/// Writes `error: WHAT` on its own line on UART0 without the HAL (whose handle
/// the interrupted code owns): the PL011's flag and data registers only.
fn fault_line(what: fmt::Arguments<'_>) {
    let line = microlm_board::fault_text(what);
    // SAFETY: the fault handler never returns, so the interrupted owner of
    // UART0 never writes again; only the flag and data registers are used.
    let uart = unsafe { &*UART0::ptr() };
    for &b in line.as_bytes() {
        while uart.uartfr().read().txff().bit_is_set() {}
        // SAFETY: any byte is a valid data value.
        uart.uartdr().write(|w| unsafe { w.bits(u32::from(b)) });
    }
}

/// After a fault: halt for the debugger.
fn stop() -> ! {
    loop {
        cortex_m::asm::bkpt();
    }
}
