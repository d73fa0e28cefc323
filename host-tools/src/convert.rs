//! `microlm convert`: llama2.c checkpoint + tokenizer → `.mlm`.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use microlm::format::{DType, KindDtypes, TensorKind};
use microlm::write::{self, ModelSpec, WriteError};

use microlm_cli::llama2c;

/// Arguments of `microlm convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// llama2.c checkpoint (legacy or version 1 float export).
    pub input: PathBuf,
    /// llama2.c tokenizer.bin whose size matches the model's vocab_size.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Storage type for the weight matrices (norms stay f32).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: DType,
    /// Output .mlm file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

/// Parses a dtype name for clap.
pub fn parse_dtype(s: &str) -> Result<DType, String> {
    DType::from_name(s).ok_or_else(|| format!("unknown dtype '{s}' (expected f32 or f16)"))
}

/// Files above this size get a progress bar.
const PROGRESS_THRESHOLD: u64 = 4 << 20;

pub fn run(args: &ConvertArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("cannot read checkpoint {}", args.input.display()))?;
    let ckpt = llama2c::read_checkpoint(&bytes)
        .with_context(|| format!("{} is not a usable llama2.c checkpoint", args.input.display()))?;
    let tok_bytes = std::fs::read(&args.tokenizer)
        .with_context(|| format!("cannot read tokenizer {}", args.tokenizer.display()))?;
    let vocab = llama2c::read_tokenizer(&tok_bytes, &args.tokenizer)?;
    ensure!(
        vocab.pieces.len() == ckpt.config.vocab_size,
        "tokenizer {} has {} tokens but the model's vocab_size is {}: wrong tokenizer for this model",
        args.tokenizer.display(),
        vocab.pieces.len(),
        ckpt.config.vocab_size
    );

    let mut dtypes: KindDtypes = [args.dtype; 12];
    for kind in TensorKind::ALL.into_iter().filter(|k| k.is_norm()) {
        dtypes[kind.index()] = DType::F32;
    }
    let name = write::model_name(&args.input.to_string_lossy());
    let spec = ModelSpec { name: &name, config: ckpt.config, dtypes, vocab: &vocab };

    let progress = if bytes.len() as u64 > PROGRESS_THRESHOLD {
        let bar = ProgressBar::new(ckpt.config.tensor_count() as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} tensors")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message("encoding");
        bar
    } else {
        ProgressBar::hidden()
    };
    let out = write::write_model(&spec, |entry| {
        progress.inc(1);
        let values = ckpt.tensor(entry.kind, entry.layer as usize).ok_or(WriteError::TensorSize {
            kind: entry.kind.name(),
            layer: entry.layer,
            expected: (entry.rows * entry.cols) as usize,
            found: 0,
        })?;
        Ok(write::encode_tensor(entry.dtype, values))
    })
    .context("cannot build the model file")?;
    progress.finish_and_clear();

    write_file(&args.output, &out)?;
    eprintln!(
        "wrote {} ({} bytes, {} weights, {} tensors, vocab {}) from llama2.c version {} checkpoint",
        args.output.display(),
        out.len(),
        args.dtype.name(),
        ckpt.config.tensor_count(),
        vocab.pieces.len(),
        ckpt.version
    );
    Ok(())
}

/// Writes atomically: a temporary file renamed over the target.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("mlm.partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}
