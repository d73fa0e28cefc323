//! What a board with a serial console shares: the buffers of a run
//! ([`Buffers`]: arena, prompt ids, recorded ids and the command line) and the
//! line session ([`line_session`]): a `> ` prompt, one line read byte by byte,
//! one [`run`](crate::run), forever. A board keeps its clocks, its UART, how it
//! reads a byte and its fault handlers.

use core::fmt;

use crate::{run, Board, Console, Timer, Work};

/// Every large buffer of a run; in a `static` it lands in .bss.
///
/// - `ARENA_WORDS`: the arena in 32-bit words (activations, KV cache, logits,
///   sampler scratch; `Session::new`), e.g. the build script's `ARENA_WORDS`.
/// - `CMDLINE`: the longest command line in bytes, argv[0] included.
/// - `PROMPT`: prompt token slots, `CMDLINE + 3` (a prompt is shorter than the
///   line holding it, plus BOS and the tokenizer's slack).
/// - `IDS`: token ids one run records for the stats line: BOS, then one per position.
#[derive(Debug)]
pub struct Buffers<const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize> {
    arena: [u32; ARENA_WORDS],
    prompt: [u32; PROMPT],
    ids: [u32; IDS],
    line: heapless::Vec<u8, CMDLINE>,
}

impl<const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize>
    Buffers<ARENA_WORDS, CMDLINE, PROMPT, IDS>
{
    /// All zero, the line empty.
    pub const fn new() -> Self {
        Buffers { arena: [0; ARENA_WORDS], prompt: [0; PROMPT], ids: [0; IDS], line: heapless::Vec::new() }
    }

    /// The command line and the buffers of one run.
    pub fn parts(&mut self) -> (&mut heapless::Vec<u8, CMDLINE>, Work<'_>) {
        (&mut self.line, Work { arena: &mut self.arena, prompt: &mut self.prompt, ids: &mut self.ids })
    }
}

impl<const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize> Default
    for Buffers<ARENA_WORDS, CMDLINE, PROMPT, IDS>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Longest command line of a [`line_session`] board, in bytes (argv[0] included).
pub const LINE_MAX: usize = 512;

/// A [`line_session`] board's buffers: command lines up to [`LINE_MAX`]
/// bytes, an arena of `ARENA_WORDS` words, `IDS` recorded ids ([`ids_for`]).
pub type LineBuffers<const ARENA_WORDS: usize, const IDS: usize> =
    Buffers<ARENA_WORDS, LINE_MAX, { LINE_MAX + 3 }, IDS>;

/// What [`line_session`] tells the board's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// A command line of this many bytes (argv[0] included) is about to run.
    Line(usize),
    /// The run ended: whether it succeeded.
    Done(bool),
}

impl fmt::Display for LineEvent {
    /// `command line: N bytes`, `run finished` or `run failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LineEvent::Line(len) => write!(f, "command line: {len} bytes"),
            LineEvent::Done(ok) => f.write_str(if ok { "run finished" } else { "run failed" }),
        }
    }
}

/// Serves command lines on a console, forever: writes `> `, reads bytes with
/// `read_byte` (given the console, as a UART is often both; `None` = nothing
/// read, try again) until `\r` or `\n`, then runs the line as `microlm
/// generate`'s flags with [`run`](crate::run) and prints the text and the stats
/// line, or one `error: ...` line. A line longer than `CMDLINE` bytes (with the
/// `microlm ` argv[0] put in front) is the error `the command line is longer
/// than CMDLINE bytes` and is not run. `clock` seeds the sampler when the line
/// has no `-s`; `log` hears of each line and how its run ended.
pub fn line_session<C, const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize>(
    board: &Board,
    out: &mut C,
    timer: &mut Timer,
    buffers: &mut Buffers<ARENA_WORDS, CMDLINE, PROMPT, IDS>,
    clock: fn() -> u64,
    mut read_byte: impl FnMut(&mut C) -> Option<u8>,
    mut log: impl FnMut(LineEvent),
) -> !
where
    C: Console,
{
    let (line, work) = buffers.parts();
    loop {
        let _ = out.write_str("> ");
        out.flush();
        line.clear();
        // argv[0], which the parser skips.
        let _ = line.extend_from_slice(b"microlm ");
        let mut overflow = false;
        loop {
            let Some(byte) = read_byte(out) else { continue };
            if byte == b'\r' || byte == b'\n' {
                break;
            }
            overflow |= line.push(byte).is_err();
        }
        let _ = out.write_str("\n");
        if overflow {
            let _ = writeln!(out, "error: the command line is longer than {CMDLINE} bytes");
            out.flush();
            continue;
        }
        log(LineEvent::Line(line.len()));
        let run_work = Work { arena: &mut *work.arena, prompt: &mut *work.prompt, ids: &mut *work.ids };
        let ok = run(board, out, timer, line, run_work, clock);
        log(LineEvent::Done(ok));
    }
}

/// One run with the semihosting command line (QEMU): reads it into the
/// buffers' line, runs it with [`run`](crate::run) on `out` (seeded by the host
/// clock), and returns whether it succeeded; a line longer than `CMDLINE`
/// bytes is the error `semihosting command line is longer than CMDLINE bytes`.
#[cfg(feature = "semihosting")]
pub fn semihosting_line<C, const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize>(
    board: &Board,
    out: &mut C,
    timer: &mut Timer,
    buffers: &mut Buffers<ARENA_WORDS, CMDLINE, PROMPT, IDS>,
) -> bool
where
    C: Console,
{
    let (line, work) = buffers.parts();
    // The host writes into the full capacity; the line is then cut to what it wrote.
    let _ = line.resize_default(CMDLINE);
    let ok = match crate::host::cmdline(line) {
        Some(text) => {
            let len = text.len();
            line.truncate(len);
            run(board, out, timer, line, work, crate::host::time)
        }
        None => {
            let _ = writeln!(out, "error: semihosting command line is longer than {CMDLINE} bytes");
            false
        }
    };
    out.flush();
    ok
}

/// A serial port as a [`Console`]: `write` sends a string (blocking until the
/// port has taken it), `flush` waits until the last byte has left; the console
/// remembers the last byte written so that [`Console::end_line`] knows whether
/// a line is open. `port` stays reachable, e.g. for [`line_session`]'s `read_byte`.
pub struct SerialConsole<P> {
    /// The port: the HAL's UART or its transmitter.
    pub port: P,
    write: fn(&mut P, &str) -> fmt::Result,
    flush: fn(&mut P),
    last: u8,
}

impl<P> SerialConsole<P> {
    /// A console on `port`, at the start of a line.
    pub const fn new(port: P, write: fn(&mut P, &str) -> fmt::Result, flush: fn(&mut P)) -> Self {
        SerialConsole { port, write, flush, last: b'\n' }
    }
}

impl<P> fmt::Debug for SerialConsole<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialConsole").field("last", &self.last).finish_non_exhaustive()
    }
}

impl<P> fmt::Write for SerialConsole<P> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        (self.write)(&mut self.port, s)?;
        if let Some(&b) = s.as_bytes().last() {
            self.last = b;
        }
        Ok(())
    }
}

impl<P> Console for SerialConsole<P> {
    fn flush(&mut self) {
        (self.flush)(&mut self.port);
    }

    fn end_line(&mut self) {
        if self.last != b'\n' {
            let _ = fmt::Write::write_str(self, "\n");
        }
    }
}

/// Starts the Cortex-M cycle counter (DWT CYCCNT), which [`cycles`] reads as a seed clock.
#[cfg(target_arch = "arm")]
pub fn start_cycles(dcb: &mut cortex_m::peripheral::DCB, dwt: &mut cortex_m::peripheral::DWT) {
    dcb.enable_trace();
    dwt.enable_cycle_counter();
}

/// The cycle counter (after [`start_cycles`]), as a seed: when a typed line ended varies run to run.
#[cfg(target_arch = "arm")]
pub fn cycles() -> u64 {
    u64::from(cortex_m::peripheral::DWT::cycle_count())
}

/// Token ids one run records for a context of `ctx` positions (the firmware's
/// default; `None` = none built in): BOS, then one per position.
pub const fn ids_for(ctx: Option<usize>) -> usize {
    match ctx {
        Some(ctx) => ctx + 1,
        None => 1,
    }
}

/// The line a fault handler writes: `\nerror: WHAT\n`, cut at 48 bytes.
pub fn fault_text(what: fmt::Arguments<'_>) -> heapless::String<48> {
    let mut line = heapless::String::new();
    let _ = fmt::Write::write_fmt(&mut line, format_args!("\nerror: {what}\n"));
    line
}

/// Defines a Cortex-M board's `HardFault` and `DefaultHandler` (cortex-m-rt
/// exceptions): each calls the board's `fault_line: fn(core::fmt::Arguments<'_>)`,
/// which writes `error: WHAT` on the board's console without its HAL (see
/// [`fault_text`]), logs `WHAT` with `defmt::error!`, then calls the board's
/// `stop: fn() -> !`. `WHAT` is `fault at pc 0x...` or `unexpected exception N`.
/// The board crate depends on `cortex-m-rt` and `defmt`.
#[cfg(target_arch = "arm")]
#[macro_export]
macro_rules! fault_handlers {
    ($fault_line:path, $stop:path) => {
        /// A fault: the board's error line and log line, then stop.
        #[cortex_m_rt::exception]
        unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
            $fault_line(format_args!("fault at pc {:#010x}", frame.pc()));
            defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
            $stop()
        }

        /// Any unexpected interrupt or exception: reported as a fault is.
        #[cortex_m_rt::exception]
        unsafe fn DefaultHandler(irqn: i16) {
            $fault_line(format_args!("unexpected exception {irqn}"));
            defmt::error!("unexpected exception {}", irqn);
            $stop()
        }
    };
}
