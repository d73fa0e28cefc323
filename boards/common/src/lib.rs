//! What every microlm board firmware shares: the command line ([`args`]),
//! instruction counting and stack painting on Cortex-M and RISC-V ([`measure`]), and the
//! run loop ([`run`]) that parses the model, runs the runtime's `Generation`
//! loop and streams each token to the board's [`Console`], then prints one
//! stats line:
//!
//! ```text
//! stats: tokens=N prompt_tokens=P stop=S instructions_per_token=X arena_bytes=A stack_peak_bytes=K ids=1,403,...
//! ```
//!
//! or one `error: ...` line. The loop knows nothing of where its command line
//! comes from or where its text goes: a board passes the line, a seed clock and
//! its console.
//!
//! With the `semihosting` feature (on by default), [`host`] does the I/O over
//! semihosting (the QEMU boards' stdout, command line, clock and exit code) and
//! [`start`] is the whole firmware over it. With `handlers` (on by default),
//! this crate also defines the fault, unexpected-exception and panic handlers,
//! which report over semihosting and exit 1; a board with its own handlers
//! (defmt, panic-probe) turns the default features off. A board crate keeps only
//! its memory map, how its model is found, its console, its buffer sizes and a
//! `#[entry]`.
#![no_std]

#[cfg(not(any(target_arch = "arm", target_arch = "riscv32")))]
compile_error!("microlm-board builds for Cortex-M (arm) and 32-bit RISC-V targets only");

pub mod args;
#[cfg(feature = "handlers")]
mod handlers;
#[cfg(feature = "semihosting")]
pub mod host;
#[cfg(feature = "link")]
pub mod link;
#[cfg(feature = "loaded-model")]
mod loaded;
pub mod measure;
mod num;
pub mod session;

#[cfg(feature = "semihosting")]
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
#[cfg(feature = "semihosting")]
use core::sync::atomic::{AtomicBool, Ordering};

use microlm::{
    FormatError, GenerateError, Generation, Model, Sampler, SamplerConfig, SamplerError, Session, SessionError, Step,
    Stop, Tokenizer, TokenizerError, Utf8Stream,
};

use crate::args::ArgError;
#[cfg(feature = "semihosting")]
use crate::host::Out;
pub use crate::measure::{TickRate, Timer};
#[cfg(feature = "semihosting")]
pub use crate::session::semihosting_line;
#[cfg(target_arch = "arm")]
pub use crate::session::{cycles, start_cycles};
pub use crate::session::{fault_text, ids_for, line_session, Buffers, LineBuffers, LineEvent, SerialConsole, LINE_MAX};

/// Where a board's text goes: the story as it streams, the stats line and the
/// error lines. Writes may be buffered until [`Console::flush`].
pub trait Console: Write {
    /// Sends out everything written so far (called after each token).
    fn flush(&mut self);
    /// Ends the current line if one is open, so the next line starts at column 0.
    fn end_line(&mut self);
}

#[cfg(feature = "loaded-model")]
pub use crate::loaded::loaded_model;

/// What the run loop needs to know about a board.
#[derive(Debug)]
pub struct Board {
    /// Nanoseconds per processor clock cycle, i.e. instructions per SysTick
    /// tick under `-icount shift=0` (1 ns of virtual time per instruction).
    pub tick: TickRate,
    /// Context length when the command line has no `--ctx`; `None` = the model's seq_len.
    pub default_ctx: Option<usize>,
    /// Finds the model file; called after the command line is parsed.
    pub model: fn() -> Result<&'static [u8], ModelError>,
    /// The prompt encoders the firmware links: [`Encoders::All`], or
    /// [`Encoders::SentencePiece`] for a board whose build script embeds a model
    /// with a SentencePiece tokenizer.
    pub encoders: Encoders,
}

/// Which prompt encoders a firmware links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoders {
    /// Both tokenizer kinds (`Tokenizer::encode`).
    All,
    /// The SentencePiece encoder only (`SpmTokenizer::encode`, what `Tokenizer::encode`
    /// runs for that kind): the byte-level BPE encoder and its Unicode tables, about
    /// 4.3 KB of flash, are left out, and a BPE tokenizer is [`EncodeError::BpeLeftOut`].
    SentencePiece,
}

/// Why a prompt did not encode.
#[derive(Clone, Copy, Debug)]
pub enum EncodeError {
    /// The tokenizer's own error.
    Tokenizer(TokenizerError),
    /// The model's tokenizer is byte-level BPE and the firmware has only the SentencePiece encoder.
    BpeLeftOut,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Tokenizer(e) => e.fmt(f),
            EncodeError::BpeLeftOut => f.write_str(
                "the model's tokenizer is byte-level BPE; this firmware was built with the SentencePiece encoder only",
            ),
        }
    }
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

/// A static value handed out (mutably) at most once.
#[cfg(feature = "semihosting")]
#[derive(Debug)]
pub struct Once<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `take` hands out the only reference to `value`, once, whichever
// context calls it first; no other access to `value` exists.
#[cfg(feature = "semihosting")]
unsafe impl<T: Send> Sync for Once<T> {}

#[cfg(feature = "semihosting")]
impl<T> Once<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Once { taken: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// The value, the first time only.
    // A `&'static mut` from `&'static self` is sound here: the flag hands it out once.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        // A critical section, not `swap`: rv32imc has atomic loads and stores only.
        let taken = critical_section::with(|_| {
            let taken = self.taken.load(Ordering::Acquire);
            self.taken.store(true, Ordering::Release);
            taken
        });
        if taken {
            return None;
        }
        // SAFETY: the flag above (tested and set in one critical section) lets this run once, so this is the only
        // reference to the value for the rest of the program.
        Some(unsafe { &mut *self.value.get() })
    }
}

/// The buffers of one run ([`run`]), without their sizes.
#[derive(Debug)]
pub struct Work<'a> {
    /// Activations, KV cache, logits and sampler scratch (`Session::new`).
    pub arena: &'a mut [u32],
    /// Prompt token ids: at least the prompt's bytes + 3
    /// (`Tokenizer::encode_capacity`), so the command line's length + 3 always does.
    pub prompt: &'a mut [u32],
    /// BOS then every next token, for the stats line: positions + 1.
    pub ids: &'a mut [u32],
}

/// Why a run failed; printed as one `error: ...` line.
enum Error<'a> {
    /// The prompt needs more token slots than the board's buffer has.
    Prompt {
        needed: usize,
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
    Encode(EncodeError),
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
}

impl fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Prompt { needed, max } => {
                write!(f, "the prompt needs {needed} token slots; this firmware holds {max}")
            }
            Error::Args(e) => e.fmt(f),
            Error::Source(e) => e.fmt(f),
            Error::Model { at, len, error } => {
                write!(f, "model at {at:#010x} ({len} bytes) is not a valid model file: {error}")
            }
            Error::Sampler(e) => write!(f, "invalid sampling settings: {e}"),
            Error::Session(e) => e.fmt(f),
            Error::Encode(e) => e.fmt(f),
            Error::Generate(e) => e.fmt(f),
            Error::ArenaLimit { requested, available } => {
                write!(f, "--arena {requested} is larger than the board's arena ({available} bytes)")
            }
            Error::TooManyPositions { positions, max } => {
                write!(f, "{positions} positions requested; this firmware records at most {max} per run")
            }
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

fn generate<'a, C: Console>(
    board: &Board,
    out: &mut C,
    syst: &mut Timer,
    line: &'a mut [u8],
    work: Work<'_>,
    clock: fn() -> u64,
) -> Result<(), Error<'a>> {
    let Work { arena, prompt, ids } = work;
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
        _ => clock().max(1),
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
    let max = prompt.len();
    let prompt = prompt.get_mut(..needed).ok_or(Error::Prompt { needed, max })?;
    // A constant per board (`BOARD` is a static): the encoder not chosen is not linked.
    let n = match (board.encoders, model.tokenizer()) {
        (Encoders::All, tokenizer) => tokenizer.encode(args.prompt, true, false, prompt),
        (Encoders::SentencePiece, Tokenizer::SentencePiece(t)) => t.encode(args.prompt, true, false, prompt),
        (Encoders::SentencePiece, Tokenizer::Bpe(_)) => return Err(Error::Encode(EncodeError::BpeLeftOut)),
    }
    .map_err(|e| Error::Encode(EncodeError::Tokenizer(e)))?;
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
    // A model that adds no BOS starts with a text token: print it too, as `microlm generate` does.
    if prompt[0] != tokenizer.bos_id() {
        utf8.push(tokenizer.decode(tokenizer.bos_id(), prompt[0]), |s| {
            let _ = out.write_str(s);
        });
    }
    let counter = measure::Counter::start(syst, board.tick);
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
    // u64 division and formatting through `num`: core's would link 1.1 KB more.
    let per_token = if tokens == 0 { 0 } else { num::div_rem(instructions + tokens as u64 / 2, tokens as u64).0 };
    let stop = match stop {
        Stop::Steps => "steps",
        Stop::Bos => "bos",
        Stop::Eos => "eos",
        Stop::ContextFull => "context_full",
    };
    let _ = write!(
        out,
        "\nstats: tokens={tokens} prompt_tokens={} stop={stop} instructions_per_token={} arena_bytes={} \
         stack_peak_bytes={} ids=",
        prompt.len(),
        num::Decimal(per_token),
        plan.total,
        measure::stack_peak(),
    );
    for (i, id) in ids[..n_ids].iter().enumerate() {
        let _ = write!(out, "{}{id}", if i == 0 { "" } else { "," });
    }
    let _ = out.write_str("\n");
    Ok(())
}

/// One generation as the command line `line` asks (word 0 is the program
/// name), streamed to `out`: the text, then the stats line, or one
/// `error: ...` line. `clock` seeds the sampler when the line has no `-s`
/// (or `-s 0`); `syst` (SysTick on Cortex-M, `minstret` on RISC-V) counts the instructions. Returns whether the
/// run succeeded. Call [`measure::paint_stack`] once at boot for the stack figure.
pub fn run<C: Console>(
    board: &Board,
    out: &mut C,
    syst: &mut Timer,
    line: &mut [u8],
    work: Work<'_>,
    clock: fn() -> u64,
) -> bool {
    let ok = match generate(board, out, syst, line, work, clock) {
        Ok(()) => true,
        Err(e) => {
            // Text already streamed ends its line before the error.
            out.end_line();
            let _ = writeln!(out, "error: {e}");
            false
        }
    };
    out.flush();
    ok
}

/// The firmware of a QEMU board: paints the stack, runs one generation as the
/// semihosting command line asks, prints the text and the stats line (or one
/// error line) on semihosting stdout, and ends the QEMU run with exit code 0
/// (or 1). Call it first thing from the board's `#[entry]`.
#[cfg(feature = "semihosting")]
pub fn start<const ARENA_WORDS: usize, const CMDLINE: usize, const PROMPT: usize, const IDS: usize>(
    board: &Board,
    buffers: &'static Once<Buffers<ARENA_WORDS, CMDLINE, PROMPT, IDS>>,
) -> ! {
    measure::paint_stack();
    let mut out = Out::stdout();
    #[cfg(target_arch = "arm")]
    let timer = cortex_m::Peripherals::take().map(|core| core.SYST);
    #[cfg(target_arch = "riscv32")]
    let timer = Some(Timer::MINSTRET);
    let ok = match (buffers.take(), timer) {
        (Some(buffers), Some(mut timer)) => semihosting_line(board, &mut out, &mut timer, buffers),
        _ => false,
    };
    Console::flush(&mut out);
    host::exit(ok)
}
