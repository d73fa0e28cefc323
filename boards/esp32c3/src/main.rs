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
use microlm_board::{Board, Console, TickRate, Timer, Work};
use static_cell::ConstStaticCell;

// The application descriptor the ESP-IDF second-stage bootloader checks.
esp_bootloader_esp_idf::esp_app_desc!();

// MODEL, ARENA_WORDS and CTX, from build.rs (MICROLM_MODEL, MICROLM_CTX, MICROLM_KV).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// Longest command line, in bytes (argv[0] included).
const CMDLINE_MAX: usize = 512;
/// Token ids one run records (BOS, then one per position of the context).
const IDS_MAX: usize = match CTX {
    Some(ctx) => ctx + 1,
    None => 1,
};
/// CPU clock (esp-hal's default for the ESP32-C3), in MHz: cycles per microsecond.
const CPU_MHZ: u64 = 160;

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
    // The counter is esp-hal's microsecond clock: 160 cycles per count.
    tick: TickRate::whole(CPU_MHZ),
    default_ctx: CTX,
    model,
};

/// Microseconds since boot (esp-hal's SYSTIMER-based clock).
fn micros() -> u64 {
    esp_hal::time::Instant::now().duration_since_epoch().as_micros()
}

/// UART0 as the run loop's console: bytes go to the transmit FIFO as they are
/// written, and `flush` waits until they have left.
struct Serial {
    tx: UartTx<'static, Blocking>,
    /// The last byte written, to know whether a line is open.
    last: u8,
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            let n = self.tx.write(bytes).map_err(|_| fmt::Error)?;
            bytes = &bytes[n..];
        }
        if let Some(&b) = s.as_bytes().last() {
            self.last = b;
        }
        Ok(())
    }
}

impl Console for Serial {
    fn flush(&mut self) {
        let _ = self.tx.flush();
    }

    fn end_line(&mut self) {
        if self.last != b'\n' {
            let _ = fmt::Write::write_str(self, "\n");
        }
    }
}

#[esp_hal::main]
fn main() -> ! {
    use core::fmt::Write as _;
    microlm_board::measure::paint_stack();
    let peripherals = esp_hal::init(esp_hal::Config::default());
    let uart = match Uart::new(peripherals.UART0, uart::Config::default()) {
        Ok(uart) => uart.with_tx(peripherals.GPIO21).with_rx(peripherals.GPIO20),
        Err(_) => defmt::panic!("UART0 cannot run at 115200 baud"),
    };
    let (mut rx, tx) = uart.split();
    let mut out = Serial { tx, last: b'\n' };
    let b = BUFFERS.take();
    defmt::info!(
        "microlm on ESP32-C3: model {} bytes, arena {} bytes, ctx {}",
        MODEL.0.len(),
        ARENA_WORDS * 4,
        CTX.unwrap_or(0)
    );
    let mut timer = Timer::new(micros);
    loop {
        let _ = out.write_str("> ");
        out.flush();
        b.line.clear();
        // argv[0], which the parser skips.
        let _ = b.line.extend_from_slice(b"microlm ");
        let mut overflow = false;
        loop {
            let mut byte = [0u8; 1];
            if !matches!(rx.read(&mut byte), Ok(1)) {
                continue;
            }
            if byte[0] == b'\r' || byte[0] == b'\n' {
                break;
            }
            overflow |= b.line.push(byte[0]).is_err();
        }
        let _ = out.write_str("\n");
        if overflow {
            let _ = writeln!(out, "error: the command line is longer than {CMDLINE_MAX} bytes");
            continue;
        }
        defmt::info!("command line: {} bytes", b.line.len());
        let work = Work { arena: &mut b.arena, prompt: &mut b.prompt, ids: &mut b.ids };
        let ok = microlm_board::run(&BOARD, &mut out, &mut timer, &mut b.line, work, micros);
        defmt::info!("run {}", if ok { "finished" } else { "failed" });
    }
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
