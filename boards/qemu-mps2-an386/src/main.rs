//! microlm on QEMU's mps2-an386 (Cortex-M4F): reads a model that QEMU loaded
//! into PSRAM, takes `microlm generate`'s flags from the semihosting command
//! line, streams the story to semihosting stdout, then prints one stats line:
//!
//! ```text
//! stats: tokens=N prompt_tokens=P stop=S instructions_per_token=X arena_bytes=A stack_peak_bytes=K ids=1,403,...
//! ```
//!
//! Errors print `error: ...` and exit with code 1. Run it with `microlm qemu`,
//! or by hand (see the README, "Running a model on the board").
#![no_std]
#![no_main]

mod args;
mod host;
mod measure;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::{entry, exception, ExceptionFrame};
use microlm::{
    FormatError, GenerateError, Generation, Model, Sampler, SamplerConfig, SamplerError, Session, SessionError, Step,
    Stop, Tokenizer, TokenizerError, Utf8Stream,
};

use crate::args::ArgError;
use crate::host::Out;

// ARENA_WORDS, from build.rs (MICROLM_ARENA_BYTES).
include!(concat!(env!("OUT_DIR"), "/arena.rs"));

/// Longest semihosting command line, in bytes.
const CMDLINE_MAX: usize = 4096;
/// Most token ids one run records for the stats line (BOS included).
const IDS_MAX: usize = 8192;

/// Every large buffer, in .bss (zeroed by cortex-m-rt before `main`).
struct Buffers {
    /// Activations, KV cache, logits and sampler scratch (`Session::new`).
    arena: [u32; ARENA_WORDS],
    /// The semihosting command line.
    cmdline: [u8; CMDLINE_MAX],
    /// Prompt token ids; a prompt is shorter than the command line holding it.
    prompt: [u32; CMDLINE_MAX + 3],
    /// BOS then every next token, for the stats line.
    ids: [u32; IDS_MAX],
}

static mut BUFFERS: Buffers =
    Buffers { arena: [0; ARENA_WORDS], cmdline: [0; CMDLINE_MAX], prompt: [0; CMDLINE_MAX + 3], ids: [0; IDS_MAX] };

/// Hands out `BUFFERS` once.
fn take_buffers() -> Option<&'static mut Buffers> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: the flag above lets this run once, so this is the only reference
    // to BUFFERS; no interrupt handler touches it.
    Some(unsafe { &mut *core::ptr::addr_of_mut!(BUFFERS) })
}

extern "C" {
    // memory.x: the model file's length word and its first byte, in PSRAM.
    static _model_len_word: u32;
    static _model_start: u8;
    static _model_end: u8;
}

/// Why a run failed; printed as one `error: ...` line.
enum Error<'a> {
    /// The semihosting command line did not fit in `CMDLINE_MAX` bytes.
    Cmdline,
    Args(ArgError<'a>),
    /// The length word is zero: QEMU loaded no model.
    NoModel {
        len_at: usize,
        at: usize,
    },
    /// The length word says more than the PSRAM window holds.
    ModelTooLong {
        len: usize,
        max: usize,
    },
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
            Error::Cmdline => write!(f, "semihosting command line is longer than {CMDLINE_MAX} bytes"),
            Error::Args(e) => e.fmt(f),
            Error::NoModel { len_at, at } => write!(
                f,
                "no model loaded: the length word at {len_at:#010x} is 0 (load one with: -device loader,\
                 addr={len_at:#x},data=LENGTH,data-len=4 -device loader,file=MODEL.mlm,addr={at:#x},force-raw=on)"
            ),
            Error::ModelTooLong { len, max } => {
                write!(f, "model length word says {len} bytes; the PSRAM window holds {max}")
            }
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

/// The model file QEMU placed in PSRAM, as its length word describes it.
fn model_bytes() -> Result<&'static [u8], Error<'static>> {
    // Only the addresses of the linker symbols are taken, never their contents.
    let (len_word, start, end) = (
        core::ptr::addr_of!(_model_len_word),
        core::ptr::addr_of!(_model_start),
        core::ptr::addr_of!(_model_end) as usize,
    );
    // SAFETY: the length word is in PSRAM, always-mapped RAM that no section uses.
    let len = unsafe { core::ptr::read_volatile(len_word) } as usize;
    let max = end - start as usize;
    if len == 0 {
        return Err(Error::NoModel { len_at: len_word as usize, at: start as usize });
    }
    if len > max {
        return Err(Error::ModelTooLong { len, max });
    }
    // SAFETY: [start, start + len) lies in PSRAM (checked against `max` above),
    // which no section occupies and nothing writes after QEMU's loader at reset,
    // so an immutable 'static view of it is sound.
    Ok(unsafe { core::slice::from_raw_parts(start, len) })
}

fn run<'a>(out: &mut Out, buffers: &'a mut Buffers) -> Result<(), Error<'a>> {
    let Buffers { arena, cmdline, prompt, ids } = buffers;
    let line = host::cmdline(cmdline).ok_or(Error::Cmdline)?;
    let args = args::parse(line)?;
    if args.help {
        let _ = out.write_str(args::USAGE);
        return Ok(());
    }

    // The same steps in the same order as `microlm generate`.
    let bytes = model_bytes()?;
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
    let ctx = args.ctx.unwrap_or(config.seq_len);
    let plan = model.plan(ctx, args.kv)?;
    let arena: &mut [u8] = bytemuck::cast_slice_mut(arena.as_mut_slice());
    let available = arena.len();
    let limit = args.arena.unwrap_or(available);
    let arena = arena.get_mut(..limit).ok_or(Error::ArenaLimit { requested: limit, available })?;
    let mut session = Session::new(&model, arena, ctx, args.kv)?;
    let needed = Tokenizer::encode_capacity(args.prompt);
    // A prompt is shorter than the command line holding it, so this always fits.
    let prompt = prompt.get_mut(..needed).ok_or(Error::Cmdline)?;
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
    if positions >= IDS_MAX {
        return Err(Error::TooManyPositions { positions, max: IDS_MAX - 1 });
    }

    let tokenizer = model.tokenizer();
    let mut utf8 = Utf8Stream::new();
    ids[0] = prompt[0];
    let mut n_ids = 1;
    let syst = cortex_m::Peripherals::take().ok_or(Error::Peripherals)?.SYST;
    let counter = measure::Counter::start(syst);
    let stop = loop {
        match generation.step(&mut session, &mut sampler)? {
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

#[entry]
fn main() -> ! {
    measure::paint_stack();
    let mut out = Out::stdout();
    let ok = match take_buffers() {
        Some(buffers) => match run(&mut out, buffers) {
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
    // The fault may interrupt a line of text: start a new one.
    let _ = writeln!(out, "\nerror: panic: {info}");
    out.flush();
    host::exit(false)
}
