//! `microlm inspect`: everything a model file says about itself.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use microlm::format::{Config, DType, KindDtypes, TensorEntry, TensorKind};
use microlm::{KvDtype, Model, Plan};
use std::io::Write;

use serde_json::json;

use microlm_cli::load::ModelFile;

/// Arguments of `microlm inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model file (.mlm).
    pub model: PathBuf,
    /// Context length for the memory plan (default the model's seq_len).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// KV cache dtype for the memory plan and the board fit.
    #[arg(long, default_value = "f32", value_parser = crate::values::kv())]
    pub kv: KvDtype,
    /// Show the fit on this board only (see the board table; default: all boards).
    #[arg(long, value_parser = crate::values::board())]
    pub board: Option<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Skip the CRC32 check (structural checks still run).
    #[arg(long)]
    pub no_checksum: bool,
}

/// Flash taken by the firmware besides the model file where a board has no
/// figure of its own: an estimate, the measured `.vector_table + .text +
/// .rodata` of the mps2-an386 firmware (124,500 bytes with stories260K's
/// runtime, rounded up to 122 KiB). A board with defmt logging instead of
/// formatted text may need less.
pub const FIRMWARE_FLASH_BYTES: u64 = 122 * 1024;

/// The lm3s6965evb firmware (`boards/qemu-lm3s6965evb`, built for size): its
/// `.vector_table + .text + .rodata` less the embedded model measured 60,908
/// bytes when this count was set (78,188 before it shrank: inlining threshold,
/// the SentencePiece encoder alone, the compact CRC table, no u64 division);
/// counted as 62 KiB, a bound the firmware stays under
/// (`tests/tests/qemu_boards.rs` holds it to that). A smaller count gives
/// `quantize --board lm3s6965evb` more flash for the model and changes the
/// README's quality table (`scripts/quality.sh`).
pub const LM3S6965EVB_FIRMWARE_BYTES: u64 = 62 * 1024;

/// The lm3s6965evb firmware's RAM besides the arena: the 6 KiB its memory.x keeps
/// for the stack and its other statics (command line, token ids: 3,108 bytes of
/// `.bss` measured), counted as 9,256 bytes (`tests/tests/qemu_boards.rs` holds
/// the firmware to it).
pub const LM3S6965EVB_RAM_RESERVED: u64 = 6 * 1024 + 3112;

/// RAM bound for the stack: the mps2-an386 firmware's measured peak is ~3 KB
/// (`stack_peak_bytes` = 3,424 for stories260K, every KV dtype); 4 KiB bounds it.
/// Firmware buffers other than the arena (command line, token ids) are board
/// specific and not included.
pub const STACK_BYTES: u64 = 4 * 1024;

/// A target board: its flash and the RAM a static arena can use.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    /// Name accepted by `--board`.
    pub name: &'static str,
    /// Flash (or XIP flash) bytes for firmware + model.
    pub flash: u64,
    /// SRAM bytes for arena + stack.
    pub ram: u64,
    /// Flash the firmware takes besides the model file.
    pub firmware: u64,
    /// RAM the firmware takes besides the arena (stack and statics).
    pub ram_reserved: u64,
    /// One-line note on the figures.
    pub note: &'static str,
}

/// The boards `inspect` reports against.
pub const BOARDS: &[Board] = &[
    Board {
        name: "lm3s6965evb",
        flash: 256 << 10,
        ram: 64 << 10,
        firmware: LM3S6965EVB_FIRMWARE_BYTES,
        ram_reserved: LM3S6965EVB_RAM_RESERVED,
        note: "TI Stellaris LM3S6965 (QEMU lm3s6965evb): the firmware measured, built for size",
    },
    Board {
        name: "nrf52840",
        flash: 1 << 20,
        ram: 256 << 10,
        firmware: FIRMWARE_FLASH_BYTES,
        ram_reserved: STACK_BYTES,
        note: "Nordic nRF52840",
    },
    Board {
        name: "stm32f411",
        flash: 512 << 10,
        ram: 128 << 10,
        firmware: FIRMWARE_FLASH_BYTES,
        ram_reserved: STACK_BYTES,
        note: "STM32F411 (Black Pill)",
    },
    Board {
        name: "stm32f405",
        firmware: FIRMWARE_FLASH_BYTES,
        ram_reserved: STACK_BYTES,
        flash: 1 << 20,
        ram: 128 << 10,
        note: "STM32F405RG (Netduino Plus 2, QEMU netduinoplus2): 128 KiB SRAM, the 64 KiB CCM not counted",
    },
    Board {
        name: "rp2350",
        firmware: FIRMWARE_FLASH_BYTES,
        ram_reserved: STACK_BYTES,
        flash: 4 << 20,
        ram: 520 << 10,
        note: "Raspberry Pi Pico 2: 4 MB QSPI flash (typical), 520 KB SRAM",
    },
    Board {
        name: "esp32-c3",
        flash: 4 << 20,
        ram: 400 << 10,
        firmware: FIRMWARE_FLASH_BYTES,
        ram_reserved: STACK_BYTES,
        note: "ESP32-C3: 4 MB flash (typical), 400 KB SRAM",
    },
    Board {
        name: "stm32h743",
        firmware: FIRMWARE_FLASH_BYTES,
        ram_reserved: STACK_BYTES,
        flash: 2 << 20,
        ram: 512 << 10,
        note: "STM32H743: 1 MB SRAM in total; the arena is contiguous, so the largest region (AXI SRAM, 512 KB) counts",
    },
    Board {
        name: "mps2-an386",
        firmware: FIRMWARE_FLASH_BYTES,
        ram_reserved: STACK_BYTES,
        flash: 4 << 20,
        ram: 4 << 20,
        note: "QEMU Cortex-M4F: 4 MB code SRAM, 4 MB data SRAM (model loaded into 16 MB PSRAM)",
    },
];

/// How a model fits one board.
#[derive(Debug, serde::Serialize)]
pub struct Fit {
    pub board: &'static str,
    pub flash_bytes: u64,
    pub ram_bytes: u64,
    /// Flash the firmware takes besides the model (the board's figure or the estimate).
    pub firmware_flash: u64,
    /// RAM the firmware takes besides the arena (the board's figure or the stack bound).
    pub ram_reserved: u64,
    /// Model file + firmware.
    pub flash_needed: u64,
    /// Arena at the requested context + the RAM reserved besides it.
    pub ram_needed: u64,
    pub fits: bool,
    /// Largest context (positions) whose arena + stack fit the RAM, if the flash fits (0 = none).
    pub max_ctx: usize,
    /// Largest context whose arena + stack fit the RAM, flash aside (0 = none).
    pub max_ctx_ram: usize,
    pub note: &'static str,
}

/// The fit of `model` at `ctx` positions with a `kv` cache on `board`.
pub fn fit(model: &Model<'_>, ctx: usize, kv: KvDtype, board: &Board) -> Result<Fit> {
    let flash_needed = model.file_len() as u64 + board.firmware;
    let (ram_needed, lo) = ram_fit(model.config(), &kind_dtypes(model), ctx, kv, board)?;
    let flash_fits = flash_needed <= board.flash;
    let max_ctx = if flash_fits { lo } else { 0 };
    Ok(Fit {
        board: board.name,
        flash_bytes: board.flash,
        ram_bytes: board.ram,
        firmware_flash: board.firmware,
        ram_reserved: board.ram_reserved,
        flash_needed,
        ram_needed,
        fits: flash_fits && ram_needed <= board.ram,
        max_ctx,
        max_ctx_ram: lo,
        note: board.note,
    })
}

/// The RAM side of [`fit`] for a model of `config` with weight `dtypes`: the bytes
/// needed at `ctx` (arena + the board's reserve) and the largest ctx whose arena
/// fits the board's RAM (the arena grows with ctx: a binary search).
pub fn ram_fit(config: &Config, dtypes: &KindDtypes, ctx: usize, kv: KvDtype, board: &Board) -> Result<(u64, usize)> {
    let needed = |c: usize| Plan::with_dtypes(config, dtypes, c, kv).map(|p| p.total as u64 + board.ram_reserved);
    let ram_needed = needed(ctx)?;
    let (mut lo, mut hi) = (0usize, config.seq_len);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if needed(mid).is_ok_and(|n| n <= board.ram) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok((ram_needed, lo))
}

/// The weight dtype of each tensor kind of `model`.
pub fn kind_dtypes(model: &Model<'_>) -> KindDtypes {
    let mut dtypes = [DType::F32; TensorKind::ALL.len()];
    for k in TensorKind::ALL {
        dtypes[k.index()] = model.dtype(k);
    }
    dtypes
}

/// The boards selected by `--board` (all without it).
fn boards(name: Option<&str>) -> Result<Vec<&'static Board>> {
    match name {
        None => Ok(BOARDS.iter().collect()),
        Some(n) => match BOARDS.iter().find(|b| b.name == n) {
            Some(b) => Ok(vec![b]),
            None => {
                let known = BOARDS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ");
                anyhow::bail!("unknown board '{n}' (known: {known})")
            }
        },
    }
}

fn tensor_name(e: &TensorEntry) -> String {
    if e.kind.is_per_layer() {
        format!("layers.{}.{}", e.layer, e.kind.name())
    } else {
        e.kind.name().to_string()
    }
}

fn shape(e: &TensorEntry) -> Vec<u32> {
    if e.kind.is_norm() {
        vec![e.cols]
    } else {
        vec![e.rows, e.cols]
    }
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let file = ModelFile::read(&args.model)?;
    let model = file.parse(args.no_checksum)?;
    let c = *model.config();
    let ctx = args.ctx.unwrap_or(c.seq_len);
    let plan = model.plan(ctx, args.kv)?;
    let fits =
        boards(args.board.as_deref())?.into_iter().map(|b| fit(&model, ctx, args.kv, b)).collect::<Result<Vec<_>>>()?;
    let tensors: Vec<TensorEntry> = model.tensors().collect();
    let weight_bytes: u64 = tensors.iter().map(|t| t.length).sum();
    // Written through one handle so a closed pipe (`| head`) is an error, not a panic.
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let tok = model.tokenizer();
    let tokenizer_kind = match tok.as_bpe() {
        Some(_) => "byte-level BPE",
        None => "SentencePiece",
    };
    let bpe = tok.as_bpe();

    if args.json {
        let j = json!({
            "file": args.model.display().to_string(),
            "name": model.name(),
            "source": model.source(),
            "arch": "llama",
            "file_bytes": model.file_len(),
            "crc32": format!("{:08x}", model.crc32()),
            "config": {
                "dim": c.dim, "hidden_dim": c.hidden_dim, "n_layers": c.n_layers, "n_heads": c.n_heads,
                "n_kv_heads": c.n_kv_heads, "head_size": c.head_size(), "vocab_size": c.vocab_size,
                "seq_len": c.seq_len, "norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
                "bos_id": c.bos_id, "eos_id": c.eos_id, "shared_classifier": c.shared_classifier,
            },
            "tokenizer": {
                "kind": tokenizer_kind, "vocab_size": tok.vocab_size(), "bytes": model.tokenizer_len(),
                "adds_bos": tok.adds_bos(), "bos_id": tok.bos_id(), "eos_id": tok.eos_id(),
                "pre_tokenizer": bpe.map(|b| b.pre_tokenizer().name()),
                "merges": bpe.map(|b| b.merge_count()), "special_tokens": bpe.map(|b| b.special_count()),
                "unk_id": bpe.and_then(|b| b.unk_id()), "pad_id": bpe.and_then(|b| b.pad_id()),
                "eot_id": bpe.and_then(|b| b.eot_id()),
            },
            "weight_bytes": weight_bytes,
            "tensors": tensors.iter().map(|t| json!({
                "name": tensor_name(t), "kind": t.kind.name(), "layer": t.layer, "dtype": t.dtype.name(),
                "shape": shape(t), "offset": t.offset, "bytes": t.length,
            })).collect::<Vec<_>>(),
            "plan": {
                "ctx_len": plan.ctx_len, "kv": plan.kv.name(), "activations": plan.activations, "kv_cache": plan.kv_cache,
                "logits": plan.logits, "sampler": plan.sampler, "act_quant": plan.act_quant, "arena_bytes": plan.total,
            },
            "arena_bytes": plan.total,
            "firmware_flash_estimate": FIRMWARE_FLASH_BYTES,
            "stack_bytes": STACK_BYTES,
            "boards": fits,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&j)?)?;
        return Ok(());
    }

    writeln!(out, "file        {} ({} bytes, crc32 {:08x})", args.model.display(), model.file_len(), model.crc32())?;
    writeln!(out, "name        {}", model.name())?;
    writeln!(
        out,
        "source      {}",
        if model.source().is_empty() { "not recorded (format version 1)" } else { model.source() }
    )?;
    writeln!(out, "arch        llama")?;
    writeln!(
        out,
        "config      dim {}  hidden_dim {}  layers {}  heads {}  kv_heads {}  head_size {}",
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.head_size()
    )?;
    writeln!(
        out,
        "            vocab {}  seq_len {}  norm_eps {:e}  rope_theta {}  bos {}  eos {}  shared classifier {}",
        c.vocab_size, c.seq_len, c.norm_eps, c.rope_theta, c.bos_id, c.eos_id, c.shared_classifier
    )?;
    writeln!(out, "tokenizer   {tokenizer_kind}, {} tokens, {} bytes", tok.vocab_size(), model.tokenizer_len())?;
    match bpe {
        Some(b) => {
            let id = |v: Option<u32>| v.map_or("none".to_string(), |v| v.to_string());
            writeln!(
                out,
                "            pre-tokenizer {}  merges {}  special tokens {}  adds BOS {}  bos {}  eos {}  unk {}  pad {}  eot {}",
                b.pre_tokenizer().name(),
                b.merge_count(),
                b.special_count(),
                if b.add_bos() { "yes" } else { "no" },
                b.bos_id(),
                b.eos_id(),
                id(b.unk_id()),
                id(b.pad_id()),
                id(b.eot_id())
            )?;
        }
        None => writeln!(
            out,
            "            scores and <0xNN> byte fallback  adds BOS yes  bos {}  eos {}",
            tok.bos_id(),
            tok.eos_id()
        )?,
    }
    writeln!(out)?;
    writeln!(out, "{:<22} {:<6} {:>12} {:>10} {:>10}", "tensor", "dtype", "shape", "offset", "bytes")?;
    for t in &tensors {
        let shape = shape(t).iter().map(u32::to_string).collect::<Vec<_>>().join("x");
        writeln!(out, "{:<22} {:<6} {:>12} {:>10} {:>10}", tensor_name(t), t.dtype.name(), shape, t.offset, t.length)?;
    }
    writeln!(out, "{:<22} {:<6} {:>12} {:>10} {:>10}", "total", "", "", "", weight_bytes)?;
    writeln!(out)?;
    writeln!(out, "arena plan for ctx {}, {} KV cache:", plan.ctx_len, plan.kv)?;
    writeln!(out, "  activations {:>10} bytes", plan.activations)?;
    writeln!(out, "  kv cache    {:>10} bytes", plan.kv_cache)?;
    writeln!(out, "  logits      {:>10} bytes", plan.logits)?;
    writeln!(out, "  sampler     {:>10} bytes", plan.sampler)?;
    writeln!(out, "  act quant   {:>10} bytes", plan.act_quant)?;
    writeln!(out, "  arena_bytes {:>10} bytes", plan.total)?;
    writeln!(out)?;
    writeln!(
        out,
        "board fit at ctx {ctx}, {} KV: flash = file + firmware ({} KiB estimated; lm3s6965evb {} KiB measured), \
         RAM = arena + {} KiB stack (lm3s6965evb: {} bytes of stack and statics, measured)",
        args.kv,
        FIRMWARE_FLASH_BYTES >> 10,
        LM3S6965EVB_FIRMWARE_BYTES >> 10,
        STACK_BYTES >> 10,
        LM3S6965EVB_RAM_RESERVED
    )?;
    writeln!(
        out,
        "{:<12} {:>12} {:>12} {:>10} {:>10} {:>5} {:>8} {:>10}",
        "board", "flash need", "flash", "RAM need", "RAM", "fits", "max ctx", "ctx (RAM)"
    )?;
    for f in &fits {
        writeln!(
            out,
            "{:<12} {:>12} {:>12} {:>10} {:>10} {:>5} {:>8} {:>10}",
            f.board,
            f.flash_needed,
            f.flash_bytes,
            f.ram_needed,
            f.ram_bytes,
            if f.fits { "yes" } else { "no" },
            f.max_ctx,
            f.max_ctx_ram
        )?;
    }
    Ok(())
}
