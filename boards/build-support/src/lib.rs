//! What the board build scripts share: memory.x on the linker search path, and
//! the arena sized from a model file's header with the runtime's own plan
//! (`microlm::plan_from_header`).
//!
//! Settings come from the environment, each read once here:
//! - `MICROLM_MODEL=FILE`: the model file (relative paths from the board's directory);
//! - `MICROLM_CTX=N`: context positions the arena is sized for (default: the model's seq_len);
//! - `MICROLM_KV=f32|f16|i8`: the KV cache dtype it is sized for (default f32);
//! - `MICROLM_ARENA_BYTES=N`: an explicit arena size (boards that load their model).
//!
//! A bad setting stops the build with one `error: MICROLM_...` line on stderr
//! (the `microlm qemu` CLI passes that line on).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

pub use microlm::KvDtype;

/// Stops the build with one line on stderr.
pub fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

/// The build script's `OUT_DIR`.
pub fn out_dir() -> PathBuf {
    PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
}

/// Copies the board's memory.x (`path`, relative to the package directory) to
/// `OUT_DIR`, puts it on the linker search path and links with cortex-m-rt's
/// `link.x`, which includes it.
pub fn link_memory_x(path: &str) {
    let out = out_dir();
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let bytes = fs::read(dir.join(path)).unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")));
    fs::write(out.join("memory.x"), bytes).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={path}");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
}

/// What the environment asks the arena to be sized for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `MICROLM_MODEL`, resolved against the board's directory.
    pub model: Option<PathBuf>,
    /// `MICROLM_CTX`.
    pub ctx: Option<usize>,
    /// `MICROLM_KV` (default f32).
    pub kv: KvDtype,
}

/// Reads `MICROLM_MODEL`, `MICROLM_CTX` and `MICROLM_KV` (and asks cargo to rerun when they change).
pub fn settings() -> Settings {
    for var in ["MICROLM_MODEL", "MICROLM_CTX", "MICROLM_KV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let kv = match env::var("MICROLM_KV").ok().as_deref().map(str::trim) {
        None | Some("") => KvDtype::F32,
        Some(name) => KvDtype::from_name(name.as_bytes())
            .unwrap_or_else(|| fail(&format!("MICROLM_KV={name:?} is not a KV dtype (f32, f16 or i8)"))),
    };
    let ctx = env::var("MICROLM_CTX").ok().filter(|v| !v.trim().is_empty()).map(|v| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| fail(&format!("MICROLM_CTX={v:?} is not a context length (a whole number from 1)")))
    });
    let model = env::var_os("MICROLM_MODEL")
        .filter(|p| !p.is_empty())
        .map(|p| Path::new(&env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join(p));
    if let Some(path) = &model {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Settings { model, ctx, kv }
}

/// Reads the model file at `path`, or stops the build.
pub fn read_model(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| fail(&format!("cannot read MICROLM_MODEL={}: {e}", path.display())))
}

/// The arena for `ctx` positions (default: the model's seq_len) and `kv`,
/// planned from the model's header: `(bytes, ctx)`. The error says whether the
/// header is not valid (`Format`) or the context does not suit it (`Session`).
pub fn plan(model: &[u8], ctx: Option<usize>, kv: KvDtype) -> Result<(usize, usize), microlm::PlanError> {
    let ctx = match ctx {
        Some(ctx) => ctx,
        None => microlm::config_from_header(model).map_err(microlm::PlanError::Format)?.seq_len,
    };
    Ok((microlm::plan_from_header(model, ctx, kv)?.total, ctx))
}

/// The arena of a board that loads its model at run time: `MICROLM_ARENA_BYTES`
/// if set; else, with `MICROLM_MODEL`, exactly that model's plan; else `default`.
pub fn loaded_arena_bytes(default: usize) -> usize {
    println!("cargo:rerun-if-env-changed=MICROLM_ARENA_BYTES");
    if let Ok(v) = env::var("MICROLM_ARENA_BYTES") {
        return v.trim().parse().unwrap_or_else(|_| fail(&format!("MICROLM_ARENA_BYTES={v:?} is not a byte count")));
    }
    let s = settings();
    let Some(path) = s.model else { return default };
    let (bytes, ctx) = plan(&read_model(&path), s.ctx, s.kv)
        .unwrap_or_else(|e| fail(&format!("MICROLM_MODEL={}: cannot plan its arena: {e}", path.display())));
    println!("cargo:warning=arena sized for {}: ctx {ctx}, {} KV cache, {bytes} bytes", path.display(), s.kv);
    bytes
}

/// Whether the model named by `MICROLM_MODEL` has a byte-level BPE tokenizer;
/// `false` without a model or when the file does not parse (the firmware
/// reports the parser's error when run).
pub fn model_has_bpe_tokenizer() -> bool {
    let Some(path) = settings().model else { return false };
    let bytes = read_model(&path);
    // `Model::parse` reads the file in place and wants it 4-byte aligned.
    let mut buf = vec![0u8; bytes.len() + 3];
    let at = buf.as_ptr().align_offset(4);
    let aligned = &mut buf[at..at + bytes.len()];
    aligned.copy_from_slice(&bytes);
    microlm::Model::parse(aligned).is_ok_and(|model| model.tokenizer().as_bpe().is_some())
}

/// Words of a `[u32]` arena holding `bytes` (4-byte aligned, as `Session::new` wants).
pub fn arena_words(bytes: usize) -> usize {
    bytes.div_ceil(4)
}

/// Writes `OUT_DIR/arena.rs` with `pub const ARENA_WORDS` for an arena of `bytes`.
pub fn write_arena_rs(bytes: usize) {
    let words = arena_words(bytes);
    let code = format!("/// Arena size in 32-bit words (build.rs).\npub const ARENA_WORDS: usize = {words};\n");
    fs::write(out_dir().join("arena.rs"), code).expect("write arena.rs");
}

/// A chip's memories, for [`check_fits`].
#[derive(Clone, Copy, Debug)]
pub struct Chip {
    /// The board crate, as the error line names it (`microlm-rp2350`).
    pub board: &'static str,
    /// The chip or board, for people (`RP2350`).
    pub name: &'static str,
    /// Flash bytes the image may use.
    pub flash: usize,
    /// SRAM bytes.
    pub ram: usize,
    /// SRAM bytes memory.x keeps for the stack.
    pub stack: usize,
}

/// Stops the build with one line naming the board and the bytes over when the
/// embedded model (`model_len` bytes) cannot fit in the chip's flash, or the
/// arena (`arena_bytes`) in its SRAM beside the stack reserve. These are lower
/// bounds (the code, .data and the other buffers come on top); the linker's
/// memory regions and memory.x's ASSERT catch the rest.
pub fn check_fits(chip: &Chip, model_len: usize, arena_bytes: usize) {
    if model_len > chip.flash {
        fail(&format!(
            "{}: the model ({model_len} bytes) does not fit in the {}'s {} KiB flash ({} bytes): {} bytes over",
            chip.board,
            chip.name,
            chip.flash / 1024,
            chip.flash,
            model_len - chip.flash
        ));
    }
    let room = chip.ram.saturating_sub(chip.stack);
    if arena_bytes > room {
        fail(&format!(
            "{}: the arena ({arena_bytes} bytes) does not fit in the {}'s {} KiB SRAM beside the {} KiB kept for \
             the stack ({room} bytes): {} bytes over; lower MICROLM_CTX or use MICROLM_KV=i8",
            chip.board,
            chip.name,
            chip.ram / 1024,
            chip.stack / 1024,
            arena_bytes - room
        ));
    }
}

/// The build script of a board with the model embedded in its image: writes
/// `model.rs` to `OUT_DIR` with `MODEL` (the file named by `MICROLM_MODEL`,
/// included as `microlm_board::Aligned` bytes; empty without it), `ARENA_WORDS`
/// (exactly `Model::plan(ctx, kv).total`, rounded up to words) and `CTX` (the
/// context the arena is sized for; `None` without a model or when its header
/// does not parse, so the firmware reports the parser's error when run).
/// With `chip`, a model or arena the chip cannot hold stops the build with
/// one line naming the board and the bytes over ([`check_fits`]).
pub fn embed_model(chip: Option<&Chip>) {
    use std::fmt::Write as _;
    let s = settings();
    let mut code = String::from("// Generated by build.rs from MICROLM_MODEL and MICROLM_CTX.\n");
    let (len, words, ctx) = match &s.model {
        None => {
            println!("cargo:warning=MICROLM_MODEL is not set: the firmware has no model (it says so when run)");
            (0, 0, s.ctx)
        }
        Some(path) => {
            let bytes = read_model(path);
            let (words, ctx) = match plan(&bytes, s.ctx, s.kv) {
                Ok((total, ctx)) => {
                    if let Some(chip) = chip {
                        check_fits(chip, bytes.len(), total);
                    }
                    (arena_words(total), Some(ctx))
                }
                Err(microlm::PlanError::Session(e)) => {
                    let ctx = s.ctx.map_or_else(|| "its seq_len".to_string(), |c| c.to_string());
                    fail(&format!("MICROLM_CTX={ctx} does not suit {}: {e}", path.display()))
                }
                Err(microlm::PlanError::Format(e)) => {
                    if let Some(chip) = chip {
                        check_fits(chip, bytes.len(), 0);
                    }
                    println!(
                        "cargo:warning={} is not a valid model file ({e}); the firmware will report it",
                        path.display()
                    );
                    (0, s.ctx)
                }
            };
            let _ = writeln!(
                code,
                "static MODEL: microlm_board::Aligned<[u8; {}]> = microlm_board::Aligned(*include_bytes!({:?}));",
                bytes.len(),
                path.display().to_string()
            );
            (bytes.len(), words, ctx)
        }
    };
    if len == 0 {
        let _ = writeln!(code, "static MODEL: microlm_board::Aligned<[u8; 0]> = microlm_board::Aligned([]);");
    }
    let _ = writeln!(code, "/// Arena size in 32-bit words: Model::plan(CTX, KV).total rounded up.");
    let _ = writeln!(code, "const ARENA_WORDS: usize = {words};");
    let _ = writeln!(code, "/// The context length the arena is sized for (None: no model, or it did not parse).");
    let _ = writeln!(code, "const CTX: Option<usize> = {ctx:?};");
    fs::write(out_dir().join("model.rs"), code).expect("write model.rs");
}
