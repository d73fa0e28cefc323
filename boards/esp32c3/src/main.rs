//! microlm on the ESP32-C3 (RV32IMC at 160 MHz, no FPU; 4 MiB flash, 313 KiB
//! of data RAM for esp-hal's program). The model file is embedded in flash
//! at build time (MICROLM_MODEL; the DROM window maps it, read in place) and
//! the arena is a static in DRAM sized for it by build.rs. Each line received
//! on UART0 (GPIO21 TX, GPIO20 RX, 115200 8N1) is a command line with the
//! flags of `microlm generate`; the story and the stats line go out on UART0,
//! then the next line is awaited. Log lines go through defmt on the
//! USB-Serial-JTAG port (esp-println; `espflash flash --monitor --log-format
//! defmt` decodes them). The run loop is `microlm_board::run`.
//!
//! The ESP32-C3 has no `minstret`: the stats line's `instructions_per_token`
//! is CPU cycles per token here (the 1 MHz esp-hal clock × 160), not an
//! instruction count. Without `-s` the seed is that clock when the line ended.
#![no_std]
#![no_main]

use core::fmt;

use esp_hal::uart::{self, Uart, UartTx};
use esp_hal::Blocking;
use esp_println as _;
use microlm_board::{Board, Encoders, SerialConsole, TickRate, Timer};
use static_cell::ConstStaticCell;

// The application descriptor the ESP-IDF second-stage bootloader checks.
esp_bootloader_esp_idf::esp_app_desc!();

// MODEL, ARENA_WORDS and CTX, from build.rs (MICROLM_MODEL, MICROLM_CTX, MICROLM_KV).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// CPU clock (esp-hal's default for the ESP32-C3), in MHz: cycles per microsecond.
const CPU_MHZ: u64 = 160;

/// Every large buffer of a run (the arena, ids for the built-in context), in .bss.
type Buffers = microlm_board::LineBuffers<ARENA_WORDS, { microlm_board::ids_for(CTX) }>;
static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers::new());

static BOARD: Board = Board {
    // The counter is esp-hal's microsecond clock: 160 cycles per count.
    tick: TickRate::whole(CPU_MHZ),
    default_ctx: CTX,
    // The model embedded in flash.
    model: || microlm_board::embedded_model(&MODEL.0),
    encoders: Encoders::All,
};

/// Microseconds since boot (esp-hal's SYSTIMER-based clock).
fn micros() -> u64 {
    esp_hal::time::Instant::now().duration_since_epoch().as_micros()
}

/// UART0 as the run loop's console: bytes go to the transmit FIFO as they are
/// written, and `flush` waits until they have left.
type Serial = SerialConsole<UartTx<'static, Blocking>>;

/// Puts `s` into the transmit FIFO, as much at a time as it takes.
fn write(tx: &mut UartTx<'static, Blocking>, s: &str) -> fmt::Result {
    let mut bytes = s.as_bytes();
    while !bytes.is_empty() {
        let n = tx.write(bytes).map_err(|_| fmt::Error)?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Waits until the transmit FIFO has drained.
fn flush(tx: &mut UartTx<'static, Blocking>) {
    let _ = tx.flush();
}

#[esp_hal::main]
fn main() -> ! {
    microlm_board::measure::paint_stack();
    let peripherals = esp_hal::init(esp_hal::Config::default());
    let uart = match Uart::new(peripherals.UART0, uart::Config::default()) {
        Ok(uart) => uart.with_tx(peripherals.GPIO21).with_rx(peripherals.GPIO20),
        Err(_) => defmt::panic!("UART0 cannot run at 115200 baud"),
    };
    let (mut rx, tx) = uart.split();
    let mut out = Serial::new(tx, write, flush);
    let b = BUFFERS.take();
    defmt::info!(
        "microlm on ESP32-C3: model {} bytes, arena {} bytes, ctx {}",
        MODEL.0.len(),
        ARENA_WORDS * 4,
        CTX.unwrap_or(0)
    );
    let mut timer = Timer::new(micros);
    let read = |_: &mut Serial| {
        let mut byte = [0u8; 1];
        matches!(rx.read(&mut byte), Ok(1)).then_some(byte[0])
    };
    let log = |event| defmt::info!("{}", defmt::Display2Format(&event));
    microlm_board::line_session(&BOARD, &mut out, &mut timer, b, micros, read, log)
}

/// A panic is a bug (bad input gets error values): log where, then halt.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => defmt::error!("panic at {}:{}", at.file(), at.line()),
        None => defmt::error!("panic"),
    }
    loop {
        core::hint::spin_loop();
    }
}
