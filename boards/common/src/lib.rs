//! What every microlm board firmware shares: the semihosting command line
//! ([`args`]), host I/O ([`host`]), instruction counting and stack painting
//! ([`measure`]), and the run loop ([`start`]) that parses the model, runs the
//! runtime's `Generation` loop and streams each token over semihosting, then
//! prints one stats line:
//!
//! ```text
//! stats: tokens=N prompt_tokens=P stop=S instructions_per_token=X arena_bytes=A stack_peak_bytes=K ids=1,403,...
//! ```
//!
//! Errors print `error: ...` and exit with code 1; so do faults, unexpected
//! exceptions and panics (this crate defines their handlers). A board crate
//! keeps only its memory map, how its model is found, its buffer sizes and a
//! `#[entry]` that calls [`start`].
#![no_std]

pub mod args;
pub mod host;
#[cfg(feature = "loaded-model")]
mod loaded;
pub mod measure;

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::{exception, ExceptionFrame};
use microlm::{
    FormatError, GenerateError, Generation, Model, Sampler, SamplerConfig, SamplerError, Session, SessionError, Step,
    Stop, Tokenizer, TokenizerError, Utf8Stream,
};

use crate::args::ArgError;
use crate::host::Out;

#[cfg(feature = "loaded-model")]
pub use crate::loaded::loaded_model;

/// What the run loop needs to know about a board.
#[derive(Debug)]
pub struct Board {
    /// Nanoseconds per processor clock cycle, i.e. instructions per SysTick
    /// tick under `-icount shift=0` (1 ns of virtual time per instruction).
    pub instructions_per_tick: u64,
    /// Context length when the command line has no `--ctx`; `None` = the model's seq_len.
    pub default_ctx: Option<usize>,
    /// Finds the model file; called after the command line is parsed.
    pub model: fn() -> Result<&'static [u8], ModelError>,
}

/// Why a board found no usable model file.
#[derive(Clone, Copy, Debug)]
pub enum ModelError {
    /// The loader's length word is zero: QEMU loaded no model.
    NoModel {
        /// Address of the length word.
        len_at: usize,
        /// Address the file is expected at.
        at: usize,
    },
    /// The length word says more than the window holds.
    TooLong {
        /// The length word.
        len: usize,
        /// Bytes the window holds.
        max: usize,
    },
    /// The firmware was built without a model to embed.
    NotEmbedded,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ModelError::NoModel { len_at, at } => write!(
                f,
                "no model loaded: the length word at {len_at:#010x} is 0 (load one with: -device loader,\
                 addr={len_at:#x},data=LENGTH,data-len=4 -device loader,file=MODEL.mlm,addr={at:#x},force-raw=on)"
            ),
            ModelError::TooLong { len, max } => {
                write!(f, "model length word says {len} bytes; the PSRAM window holds {max}")
            }
            ModelError::NotEmbedded => {
                write!(f, "no model embedded: build the firmware with MICROLM_MODEL=FILE.mlm (as `microlm qemu` does)")
            }
        }
    }
}

/// Bytes aligned to 32, for a model file embedded with `include_bytes!` (the
/// runtime reads 32-byte aligned tensors in place).
#[derive(Debug)]
#[repr(C, align(32))]
pub struct Aligned<T: ?Sized>(pub T);

/// An embedded model file: the bytes, or [`ModelError::NotEmbedded`] when empty.
pub fn embedded_model(bytes: &'static [u8]) -> Result<&'static [u8], ModelError> {
    if bytes.is_empty() {
        Err(ModelError::NotEmbedded)
    } else {
        Ok(bytes)
    }
}

/// Every large buffer a run needs; in a `static` it lands in .bss (zeroed by
/// cortex-m-rt before `main`).
#[derive(Debug)]
pub struct Buffers<const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize> {
    /// Activations, KV cache, logits and sampler scratch (`Session::new`).
    arena: [u32; ARENA_WORDS],
    /// The semihosting command line.
    cmdline: [u8; CMDLINE],
    /// Prompt token ids; at most CMDLINE + 3 (a prompt is shorter than the
    /// command line holding it, plus BOS and the tokenizer's slack).
    prompt: [u32; PROMPT],
    /// BOS then every next token, for the stats line.
    ids: [u32; IDS],
}

impl<const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize>
    Buffers<ARENA_WORDS, CMDLINE, PROMPT, IDS>
{
    /// All zero.
    pub const fn new() -> Self {
        Buffers { arena: [0; ARENA_WORDS], cmdline: [0; CMDLINE], prompt: [0; PROMPT], ids: [0; IDS] }
    }

    fn parts(&mut self) -> Parts<'_> {
        Parts { arena: &mut self.arena, cmdline: &mut self.cmdline, prompt: &mut self.prompt, ids: &mut self.ids }
    }
}

impl<const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize> Default
    for Buffers<ARENA_WORDS, CMDLINE, PROMPT, IDS>
{
    fn default() -> Self {
        Self::new()
    }
}

/// A static value handed out (mutably) at most once.
#[derive(Debug)]
pub struct Once<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `take` hands out the only reference to `value`, once, whichever
// context calls it first; no other access to `value` exists.
unsafe impl<T: Send> Sync for Once<T> {}

impl<T> Once<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Once { taken: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// The value, the first time only.
    // A `&'static mut` from `&'static self` is sound here: the flag hands it out once.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag above lets this run once, so this is the only
        // reference to the value for the rest of the program.
        Some(unsafe { &mut *self.value.get() })
    }
}

/// The buffers of one run, without their sizes.
struct Parts<'a> {
    arena: &'a mut [u32],
    cmdline: &'a mut [u8],
    prompt: &'a mut [u32],
    ids: &'a mut [u32],
}

/// Why a run failed; printed as one `error: ...` line.
enum Error<'a> {
    /// The semihosting command line did not fit in the buffer.
    Cmdline {
        max: usize,
    },
    Args(ArgError<'a>),
    Source(ModelError),
    Model {
        at: usize,
        len: usize,
        error: FormatError,
    },
    Sampler(SamplerError),
    Session(SessionError),
    Tokenizer(TokenizerError),
    Generate(GenerateError),
    /// `--arena` asked for more than the board has.
    ArenaLimit {
        requested: usize,
        available: usize,
    },
    /// More positions than the ids buffer records.
    TooManyPositions {
        positions: usize,
        max: usize,
    },
    /// The core peripherals were already taken (a bug).
    Peripherals,
}

impl fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cmdline { max } => write!(f, "semihosting command line is longer than {max} bytes"),
            Error::Args(e) => e.fmt(f),
            Error::Source(e) => e.fmt(f),
            Error::Model { at, len, error } => {
                write!(f, "model at {at:#010x} ({len} bytes) is not a valid model file: {error}")
            }
            Error::Sampler(e) => write!(f, "invalid sampling settings: {e}"),
            Error::Session(e) => e.fmt(f),
            Error::Tokenizer(e) => e.fmt(f),
            Error::Generate(e) => e.fmt(f),
            Error::ArenaLimit { requested, available } => {
                write!(f, "--arena {requested} is larger than the board's arena ({available} bytes)")
            }
            Error::TooManyPositions { positions, max } => {
                write!(f, "{positions} positions requested; this firmware records at most {max} per run")
            }
            Error::Peripherals => write!(f, "internal error: core peripherals already taken"),
        }
    }
}

impl<'a> From<ArgError<'a>> for Error<'a> {
    fn from(e: ArgError<'a>) -> Self {
        Error::Args(e)
    }
}

impl From<SessionError> for Error<'_> {
    fn from(e: SessionError) -> Self {
        Error::Session(e)
    }
}

impl From<GenerateError> for Error<'_> {
    fn from(e: GenerateError) -> Self {
        Error::Generate(e)
    }
}

fn run<'a>(board: &Board, out: &mut Out, buffers: Parts<'a>) -> Result<(), Error<'a>> {
    let Parts { arena, cmdline, prompt, ids } = buffers;
    let max = cmdline.len();
    let line = host::cmdline(cmdline).ok_or(Error::Cmdline { max })?;
    let args = args::parse(line)?;
    if args.help {
        let _ = out.write_str(args::USAGE);
        return Ok(());
    }

    // The same steps in the same order as `microlm generate`.
    let bytes = (board.model)().map_err(Error::Source)?;
    let model =
        Model::parse(bytes).map_err(|error| Error::Model { at: bytes.as_ptr() as usize, len: bytes.len(), error })?;
    let config = model.config();
    let seed = match args.seed {
        Some(seed) if seed != 0 => seed,
        _ => host::time().max(1),
    };
    let settings =
        SamplerConfig { temperature: args.temperature, top_p: args.top_p, top_k: args.top_k, min_p: args.min_p, seed };
    let mut sampler = Sampler::new(settings, config.vocab_size).map_err(Error::Sampler)?;
    let ctx = args.ctx.or(board.default_ctx).unwrap_or(config.seq_len);
    let plan = model.plan(ctx, args.kv)?;
    let arena: &mut [u8] = bytemuck::cast_slice_mut(arena);
    let available = arena.len();
    let limit = args.arena.unwrap_or(available);
    let arena = arena.get_mut(..limit).ok_or(Error::ArenaLimit { requested: limit, available })?;
    let mut session = Session::new(&model, arena, ctx, args.kv)?;
    let needed = Tokenizer::encode_capacity(args.prompt);
    // A prompt is shorter than the command line holding it, so this always fits.
    let prompt = prompt.get_mut(..needed).ok_or(Error::Cmdline { max })?;
    let n = model.tokenizer().encode(args.prompt, true, false, prompt).map_err(Error::Tokenizer)?;
    let prompt = &prompt[..n];
    let mut generation = Generation::new(&session, prompt, args.steps)?;
    if let Some(sinks) = args.window {
        generation = generation.with_window(sinks);
    }
    // Positions that will run: `steps` (0 = the context), bounded by the context unless in window mode.
    let positions = match (args.steps, args.window) {
        (0, _) => ctx,
        (steps, Some(_)) => steps,
        (steps, None) => steps.min(ctx),
    };
    if positions >= ids.len() {
        return Err(Error::TooManyPositions { positions, max: ids.len().saturating_sub(1) });
    }

    let tokenizer = model.tokenizer();
    let mut utf8 = Utf8Stream::new();
    ids[0] = prompt[0];
    let mut n_ids = 1;
    let syst = cortex_m::Peripherals::take().ok_or(Error::Peripherals)?.SYST;
    let counter = measure::Counter::start(syst, board.instructions_per_tick);
    // Called through an opaque pointer so the forward pass is never inlined here:
    // this crate is built for size, the runtime (the per-token code) for speed.
    let step: fn(&mut _, &mut _, &mut _) -> _ = Generation::step;
    let step = core::hint::black_box(step);
    let stop = loop {
        match step(&mut generation, &mut session, &mut sampler)? {
            Step::Token { prev, token, .. } => {
                // Capacity was checked above: at most `positions` tokens follow BOS.
                if let Some(slot) = ids.get_mut(n_ids) {
                    *slot = token;
                    n_ids += 1;
                }
                utf8.push(tokenizer.decode(prev, token), |s| {
                    let _ = out.write_str(s);
                });
                // Stream each token as it comes.
                out.flush();
            }
            Step::Done(stop) => break stop,
        }
    };
    let instructions = counter.instructions();
    utf8.finish(|s| {
        let _ = out.write_str(s);
    });
    let tokens = generation.pos();
    let per_token = if tokens == 0 { 0 } else { (instructions + tokens as u64 / 2) / tokens as u64 };
    let stop = match stop {
        Stop::Steps => "steps",
        Stop::Bos => "bos",
        Stop::Eos => "eos",
        Stop::ContextFull => "context_full",
    };
    let _ = write!(
        out,
        "\nstats: tokens={tokens} prompt_tokens={} stop={stop} instructions_per_token={per_token} arena_bytes={} \
         stack_peak_bytes={} ids=",
        prompt.len(),
        plan.total,
        measure::stack_peak(),
    );
    for (i, id) in ids[..n_ids].iter().enumerate() {
        let _ = write!(out, "{}{id}", if i == 0 { "" } else { "," });
    }
    let _ = out.write_str("\n");
    Ok(())
}

/// The firmware: paints the stack, runs one generation as the semihosting
/// command line asks, prints the text and the stats line (or one error line),
/// and ends the QEMU run with exit code 0 (or 1). Call it first thing from the
/// board's `#[entry]`.
pub fn start<const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize>(
    board: &Board,
    buffers: &'static Once<Buffers<ARENA_WORDS, CMDLINE, PROMPT, IDS>>,
) -> ! {
    measure::paint_stack();
    let mut out = Out::stdout();
    let ok = match buffers.take() {
        Some(buffers) => match run(board, &mut out, buffers.parts()) {
            Ok(()) => true,
            Err(e) => {
                // Text already streamed ends its line before the error.
                out.end_line();
                let _ = writeln!(out, "error: {e}");
                false
            }
        },
        None => false,
    };
    out.flush();
    host::exit(ok)
}

/// Reports a fault as an error line and exits 1 instead of hanging.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    let mut out = Out::stdout();
    // The fault may interrupt a line of text: start a new one.
    let _ = writeln!(out, "\nerror: HardFault at pc {:#010x}", frame.pc());
    out.flush();
    host::exit(false)
}

/// Any unexpected interrupt or exception: report and exit 1.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    let mut out = Out::stdout();
    // The fault may interrupt a line of text: start a new one.
    let _ = writeln!(out, "\nerror: unexpected exception {irqn}");
    out.flush();
    host::exit(false)
}

/// A panic is a bug (bad input gets error values); report it and exit 1.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut out = Out::stdout();
    // The fault may interrupt a line of text: start a new one. Only the place
    // is printed: formatting the message would keep core::fmt's panic code.
    let _ = out.write_str("\nerror: panic");
    if let Some(at) = info.location() {
        let _ = out.write_str(" at ");
        let _ = out.write_str(at.file());
        for n in [at.line(), at.column()] {
            let _ = out.write_str(":");
            let mut digits = [0u8; 10];
            let mut i = digits.len();
            let mut n = n;
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            let _ = out.write_str(core::str::from_utf8(&digits[i..]).unwrap_or(""));
        }
    }
    let _ = out.write_str("\n");
    out.flush();
    host::exit(false)
}
