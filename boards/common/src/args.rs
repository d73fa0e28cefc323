//! The command line (from semihosting, or a line a board reads on its serial
//! port), parsed without a heap: `microlm generate`'s flags with the same
//! names, meanings and defaults.

use core::fmt;

use microlm::KvDtype;

/// Most words the command line may hold (flags and values, argv[0] included).
pub const MAX_WORDS: usize = 64;

/// Flags this firmware knows, for the unknown-flag message.
const FLAGS: &str = "-p -n -t --top-p --top-k --min-p -s --ctx --kv --window --arena --help";

/// Usage, printed by `--help`.
pub const USAGE: &str = "usage: FIRMWARE [-p PROMPT] [-n STEPS] [-t TEMP] [--top-p P] [--top-k K] [--min-p P] \
                         [-s SEED] [--ctx N] [--kv f32|f16|i8] [--window SINKS] [--arena BYTES]\n\
                         the same flags and defaults as `microlm generate`; --arena uses only BYTES of the arena\n";

/// Generation settings from the command line.
#[derive(Debug)]
pub struct Args<'a> {
    /// Prompt text (`-p`), encoded with BOS like the host does.
    pub prompt: &'a [u8],
    /// Positions to run, prompt included; 0 = the whole context (`-n`, default 256).
    pub steps: usize,
    /// Temperature; 0 = greedy (`-t`, default 1.0).
    pub temperature: f32,
    /// Nucleus mass (`--top-p`, default 0.9).
    pub top_p: f32,
    /// Keep the K most likely tokens; 0 = off (`--top-k`, default 0).
    pub top_k: usize,
    /// Drop tokens below P × the top probability (`--min-p`, default 0).
    pub min_p: f32,
    /// RNG seed; `None` or 0 = from the host clock (`-s`).
    pub seed: Option<u64>,
    /// Context length; default the model's seq_len (`--ctx`).
    pub ctx: Option<usize>,
    /// KV cache dtype (`--kv`, default the one the firmware was built for: `MICROLM_KV`, else f32).
    pub kv: KvDtype,
    /// Window mode with this many attention sinks (`--window SINKS`): keep going when the context is full.
    pub window: Option<usize>,
    /// Use only this many bytes of the arena (`--arena`), to check a model fits a smaller device.
    pub arena: Option<usize>,
    /// `--help` was given.
    pub help: bool,
}

/// Why the command line was rejected.
#[derive(Debug)]
pub enum ArgError<'a> {
    /// More than [`MAX_WORDS`] words.
    TooManyWords,
    /// A quote was opened and never closed.
    UnterminatedQuote,
    /// A flag this firmware does not know.
    UnknownFlag(&'a [u8]),
    /// A word that is not a flag or a flag's value.
    Unexpected(&'a [u8]),
    /// A flag at the end of the line without its value.
    MissingValue(&'static str),
    /// A value that does not parse as the flag's type.
    BadValue { flag: &'static str, value: &'a [u8], expected: &'static str },
}

/// Shows bytes from the command line (they are UTF-8 unless the host sent otherwise).
fn text(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("<non-UTF-8 bytes>")
}

impl fmt::Display for ArgError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArgError::TooManyWords => write!(f, "command line has more than {MAX_WORDS} words"),
            ArgError::UnterminatedQuote => write!(f, "command line has an unterminated quote"),
            ArgError::UnknownFlag(flag) => write!(f, "unknown flag '{}' (flags: {FLAGS})", text(flag)),
            ArgError::Unexpected(word) => write!(f, "unexpected argument '{}' (flags: {FLAGS})", text(word)),
            ArgError::MissingValue(flag) => write!(f, "flag {flag} needs a value"),
            ArgError::BadValue { flag, value, expected } => {
                write!(f, "invalid value '{}' for {flag}: expected {expected}", text(value))
            }
        }
    }
}

/// Splits `line` into words in place, shell style: white space separates words,
/// "double" and 'single' quotes group them, and a backslash outside single
/// quotes takes the next byte literally. Returns the word spans in `line`.
fn split(line: &mut [u8], words: &mut [(usize, usize); MAX_WORDS]) -> Result<usize, ArgError<'static>> {
    let len = line.len();
    // Unquoting only drops bytes, so the write index never passes the read index.
    let (mut r, mut w, mut n) = (0usize, 0usize, 0usize);
    loop {
        while r < len && line[r].is_ascii_whitespace() {
            r += 1;
        }
        if r == len {
            return Ok(n);
        }
        let start = w;
        let mut quote: Option<u8> = None;
        while r < len {
            let b = line[r];
            match quote {
                None if b.is_ascii_whitespace() => break,
                None if b == b'"' || b == b'\'' => {
                    quote = Some(b);
                    r += 1;
                    continue;
                }
                Some(q) if b == q => {
                    quote = None;
                    r += 1;
                    continue;
                }
                // Backslash escapes: the next byte is taken as is.
                None | Some(b'"') if b == b'\\' && r + 1 < len => r += 1,
                _ => {}
            }
            line[w] = line[r];
            w += 1;
            r += 1;
        }
        if quote.is_some() {
            return Err(ArgError::UnterminatedQuote);
        }
        let slot = words.get_mut(n).ok_or(ArgError::TooManyWords)?;
        *slot = (start, w);
        n += 1;
    }
}

/// Parses `value` as `T`, naming the flag and the expected type on failure.
fn value<'a, T: core::str::FromStr>(
    flag: &'static str,
    value: Option<&'a [u8]>,
    expected: &'static str,
) -> Result<T, ArgError<'a>> {
    let value = value.ok_or(ArgError::MissingValue(flag))?;
    core::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).ok_or(ArgError::BadValue { flag, value, expected })
}

/// Parses `value` as an f32 with [`microlm::scalar::parse_f32`] (the value
/// `str::parse` gives, without core's table of powers of five: 10 KB of flash),
/// naming the flag on failure.
fn real<'a>(flag: &'static str, value: Option<&'a [u8]>) -> Result<f32, ArgError<'a>> {
    let value = value.ok_or(ArgError::MissingValue(flag))?;
    microlm::scalar::parse_f32(value).map_err(|e| ArgError::BadValue {
        flag,
        value,
        expected: match e {
            microlm::scalar::ParseFloatError::Invalid => "a number",
            microlm::scalar::ParseFloatError::TooManyDigits => "a number of at most 19 significant digits",
        },
    })
}

/// The default of `--kv`: the dtype the firmware was built for (`MICROLM_KV`
/// when cargo built it, as build.rs sized the arena), else f32. Read at compile
/// time: the name without the white space around it (what build.rs accepted:
/// `f32`, `f16` or `i8`; any byte outside ASCII is white space there, as
/// build.rs fails on other characters).
const BUILT_KV: KvDtype = {
    let mut name = match option_env!("MICROLM_KV") {
        Some(name) => name.as_bytes(),
        None => b"",
    };
    while let [first, rest @ ..] = name {
        if !(first.is_ascii_whitespace() || *first >= 0x80) {
            break;
        }
        name = rest;
    }
    while let [rest @ .., last] = name {
        if !(last.is_ascii_whitespace() || *last >= 0x80) {
            break;
        }
        name = rest;
    }
    match name {
        b"f16" => KvDtype::F16,
        b"i8" => KvDtype::I8,
        _ => KvDtype::F32,
    }
};

/// Parses a command line. Word 0 is the program name (QEMU puts
/// the kernel file name there) and is skipped.
pub fn parse(line: &mut [u8]) -> Result<Args<'_>, ArgError<'_>> {
    let mut spans = [(0usize, 0usize); MAX_WORDS];
    let n = split(line, &mut spans)?;
    let line: &[u8] = line;
    let mut words = spans[..n].iter().map(|&(a, b)| &line[a..b]).skip(1);
    let mut args = Args {
        prompt: b"",
        steps: 256,
        temperature: 1.0,
        top_p: 0.9,
        top_k: 0,
        min_p: 0.0,
        seed: None,
        ctx: None,
        kv: BUILT_KV,
        window: None,
        arena: None,
        help: false,
    };
    while let Some(word) = words.next() {
        // `--flag=value` carries its value inline; otherwise the value is the next word.
        let (name, inline) = match word.iter().position(|&b| b == b'=') {
            Some(eq) if word.starts_with(b"--") => (&word[..eq], Some(&word[eq + 1..])),
            _ => (word, None),
        };
        let mut next = || inline.or_else(|| words.next());
        match name {
            b"-p" | b"--prompt" => args.prompt = next().ok_or(ArgError::MissingValue("-p"))?,
            b"-n" | b"--steps" => args.steps = value("-n", next(), "a whole number")?,
            b"-t" | b"--temperature" => args.temperature = real("-t", next())?,
            b"--top-p" => args.top_p = real("--top-p", next())?,
            b"--top-k" => args.top_k = value("--top-k", next(), "a whole number")?,
            b"--min-p" => args.min_p = real("--min-p", next())?,
            b"-s" | b"--seed" => args.seed = Some(value("-s", next(), "a whole number")?),
            b"--ctx" => args.ctx = Some(value("--ctx", next(), "a whole number")?),
            b"--kv" => args.kv = value("--kv", next(), "f32, f16 or i8")?,
            b"--window" => args.window = Some(value("--window", next(), "a whole number of sinks")?),
            b"--arena" => args.arena = Some(value("--arena", next(), "a byte count")?),
            b"-h" | b"--help" => args.help = true,
            _ if word.first() == Some(&b'-') => return Err(ArgError::UnknownFlag(word)),
            _ => return Err(ArgError::Unexpected(word)),
        }
    }
    Ok(args)
}
