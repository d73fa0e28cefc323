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

use cortex_m_rt::{entry, exception, ExceptionFrame};
use defmt_rtt as _;
use hal::clocks::Clocks;
use hal::gpio::{p0, Level};
use hal::pac::{self, UARTE0};
use hal::uarte::{Baudrate, Parity, Pins, Uarte};
use microlm_board::{Board, Console, TickRate, Work};
use nrf52840_hal as hal;
use panic_probe as _;
use static_cell::ConstStaticCell;

// MODEL, ARENA_WORDS and CTX, from build.rs (MICROLM_MODEL, MICROLM_CTX, MICROLM_KV).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// Longest command line, in bytes (argv[0] included).
const CMDLINE_MAX: usize = 512;
/// Token ids one run records (BOS, then one per position of the context).
const IDS_MAX: usize = match CTX {
    Some(ctx) => ctx + 1,
    None => 1,
};
/// The core clock: 64 MHz, from the 32 MHz crystal (HFXO) once it is started.
const CORE_HZ: u32 = 64_000_000;

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
    // SysTick runs on the 64 MHz core clock: 1e9 / 64e6 = 125/8 ns per tick.
    // The stats line's instruction count is exact only under QEMU's -icount;
    // here it is core cycles x 125/8.
    tick: TickRate { num: 125, den: 8 },
    default_ctx: CTX,
    model,
};

/// UARTE0 as the run loop's console. EasyDMA reads only RAM, so the HAL
/// copies each write through a small stack buffer and waits for ENDTX: when a
/// write returns its bytes are out, and nothing is buffered here.
struct Serial {
    uarte: Uarte<UARTE0>,
    /// The last byte written, to know whether a line is open.
    last: u8,
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(&b) = s.as_bytes().last() {
            self.last = b;
        }
        self.uarte.write_str(s)
    }
}

impl Console for Serial {
    fn flush(&mut self) {
        // Every write has already waited for ENDTX.
    }

    fn end_line(&mut self) {
        if self.last != b'\n' {
            let _ = fmt::Write::write_str(self, "\n");
        }
    }
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
    let mut out = Serial { uarte, last: b'\n' };
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
    use core::fmt::Write as _;
    cp.DCB.enable_trace();
    cp.DWT.enable_cycle_counter();
    loop {
        let _ = out.write_str("> ");
        b.line.clear();
        // argv[0], which the parser skips.
        let _ = b.line.extend_from_slice(b"microlm ");
        let mut overflow = false;
        loop {
            // One byte per EasyDMA transfer, into RAM (this stack slot).
            let mut byte = [0u8; 1];
            if out.uarte.read(&mut byte).is_err() {
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
        let ok = microlm_board::run(&BOARD, out, &mut cp.SYST, &mut b.line, work, cycles);
        defmt::info!("run {}", if ok { "finished" } else { "failed" });
    }
}

/// The cycle counter, as a seed: when a typed line ended varies run to run.
fn cycles() -> u64 {
    u64::from(cortex_m::peripheral::DWT::cycle_count())
}

/// A fault: one error line on UARTE0 and in the log, then halt for the debugger.
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

/// Writes `error: WHAT` on its own line on UARTE0 without the HAL (whose
/// handle the interrupted code owns): one EasyDMA transfer from a RAM buffer.
fn fault_line(what: fmt::Arguments<'_>) {
    let mut line = heapless::String::<48>::new();
    let _ = fmt::Write::write_fmt(&mut line, format_args!("\nerror: {what}\n"));
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
