//! `microlm convert`: a llama2.c checkpoint + tokenizer, a GGUF file or a Hugging
//! Face folder → `.mlm`, with per-kind dtypes.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use microlm::format::{DType, KindDtypes, TensorEntry};
use microlm::write::{self, ModelSpec, WriteError};

use microlm_cli::load::ModelFile;
use microlm_cli::{gguf, hf, io, llama2c};

use crate::quantize::{self, QuantArgs};

/// Arguments of `microlm convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// llama2.c checkpoint (legacy, version 1 float or version 2 int8 export), a GGUF
    /// file (architecture llama, recognised by its magic), or a Hugging Face
    /// LlamaForCausalLM folder (config.json, safetensors, tokenizer.json).
    pub input: PathBuf,
    /// llama2.c tokenizer.bin whose size matches the model's vocab_size (llama2.c input only).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Weight dtypes and calibration (default dtype: f32, or q8_0 for version 2 checkpoints).
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Output .mlm file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Leave out the per-tensor report (the demo prints only its story).
    #[arg(skip)]
    pub quiet: bool,
}

/// Files above this size get a progress bar.
const PROGRESS_THRESHOLD: u64 = 4 << 20;

pub fn run(args: &ConvertArgs) -> Result<()> {
    if args.input.is_dir() {
        return run_hf(args);
    }
    match leading_magic(&args.input) {
        Some(m) if m == gguf::MAGIC => return run_gguf(args),
        Some(m) if m == microlm::format::MAGIC => anyhow::bail!(
            "{} is already a microlm model file: use `microlm quantize` to change its dtypes",
            args.input.display()
        ),
        _ => {}
    }
    let tokenizer = args.tokenizer.as_ref().context("--tokenizer is required for a llama2.c checkpoint")?;
    let output = quantize::create_output(&args.output, &[&args.input, tokenizer], &args.quant)?;
    let bytes = io::read(&args.input, io::CHECKPOINT)?;
    let ckpt = llama2c::read_checkpoint(&bytes)
        .with_context(|| format!("{} is not a usable llama2.c checkpoint", args.input.display()))?;
    let tok_bytes = io::read(tokenizer, io::TOKENIZER)?;
    let vocab = llama2c::read_tokenizer(&tok_bytes, tokenizer)?;
    ensure!(
        vocab.pieces.len() == ckpt.config.vocab_size,
        "tokenizer {} has {} tokens but the model's vocab_size is {}: wrong tokenizer for this model",
        tokenizer.display(),
        vocab.pieces.len(),
        ckpt.config.vocab_size
    );

    // First the f32 model (the reference every quantized tensor is measured against) ...
    let name = write::model_name(&args.input.to_string_lossy());
    let spec =
        ModelSpec { name: &name, source: "llama2.c", config: ckpt.config, dtypes: [DType::F32; 12], vocab: &vocab };
    let progress = tensor_progress(bytes.len(), ckpt.config.tensor_count());
    let f32_file = write::write_model(&spec, |entry| {
        progress.inc(1);
        encode_entry(entry, ckpt.tensor(entry.kind, entry.layer as usize))
    })
    .context("cannot build the model file")?;
    progress.finish_and_clear();
    let f32_file = ModelFile::from_bytes(&f32_file);
    let source = f32_file.parse(false).context("the converted f32 model does not parse")?;

    // ... then the requested dtypes, calibrated when asked.
    let base = args.quant.dtype.unwrap_or(if ckpt.version == 2 { DType::Q8_0 } else { DType::F32 });
    let dtypes = quantize::kind_dtypes(base, &args.quant, ckpt.config.shared_classifier)?;
    let passthrough = |entry: &TensorEntry, _: &[f32]| int8_as_q8_0(&ckpt, entry);
    let len = quantize_and_commit(args, output, &source, &name, dtypes, &passthrough)?;
    eprintln!(
        "wrote {} ({} bytes, {} weights, {} tensors, vocab {}) from llama2.c version {} checkpoint",
        io::display(&args.output),
        len,
        base.name(),
        ckpt.config.tensor_count(),
        vocab.pieces.len(),
        ckpt.version
    );
    Ok(())
}

/// One tensor of the f32 file from the importer's values; a tensor the
/// importer does not have is a `TensorSize` error with 0 values found.
fn encode_entry(entry: &TensorEntry, values: Option<&[f32]>) -> Result<Vec<u8>, WriteError> {
    let values = values.ok_or(WriteError::TensorSize {
        kind: entry.kind.name(),
        layer: entry.layer,
        expected: (entry.rows * entry.cols) as usize,
        found: 0,
    })?;
    Ok(write::encode_tensor(entry.dtype, values))
}

/// The converted f32 file `source` stored as `dtypes` (calibrated when
/// asked; `passthrough` may supply a tensor's bytes as they are), written to
/// `output`, with the per-tensor report unless `--quiet`. Returns the file's
/// length in bytes.
fn quantize_and_commit(
    args: &ConvertArgs,
    output: io::Output,
    source: &microlm::Model<'_>,
    name: &str,
    dtypes: microlm::format::KindDtypes,
    passthrough: &quantize::Passthrough<'_>,
) -> Result<usize> {
    let importance = quantize::importance_for(source, &args.quant, &dtypes)?;
    let (out, report) = quantize::requantize(
        source,
        name,
        dtypes,
        importance.as_ref(),
        args.quant.gptq_settings(),
        passthrough,
        args.quant.saturate,
    )?;
    output.commit(&out)?;
    if !args.quiet {
        quantize::print_report(&args.output, out.len(), &report, args.quant.json)?;
    }
    Ok(out.len())
}

/// `microlm convert DIR`: a Hugging Face Llama folder (see [`hf`]) → `.mlm`.
fn run_hf(args: &ConvertArgs) -> Result<()> {
    let output = quantize::create_output(&args.output, &[&args.input], &args.quant)?;
    let m = hf::read_dir(&args.input)
        .with_context(|| format!("{} is not a usable Hugging Face Llama folder", args.input.display()))?;
    let name = write::model_name(&args.input.to_string_lossy());
    let spec =
        ModelSpec { name: &name, source: "huggingface", config: m.config, dtypes: [DType::F32; 12], vocab: &m.vocab };
    let f32_file = write::write_model(&spec, |entry| encode_entry(entry, m.tensor(entry.kind, entry.layer as usize)))
        .context("cannot build the model file")?;
    let f32_file = ModelFile::from_bytes(&f32_file);
    let source = f32_file.parse(false).context("the converted f32 model does not parse")?;
    let base = args.quant.dtype.unwrap_or(DType::F32);
    let dtypes = quantize::kind_dtypes(base, &args.quant, m.config.shared_classifier)?;
    let len = quantize_and_commit(args, output, &source, &name, dtypes, &|_: &TensorEntry, _: &[f32]| None)?;
    eprintln!(
        "wrote {} ({} bytes, {} weights, {} tensors, vocab {}) from a Hugging Face Llama folder",
        io::display(&args.output),
        len,
        base.name(),
        m.config.tensor_count(),
        m.vocab.pieces.len()
    );
    Ok(())
}

/// The first four bytes of `path` when it is a regular file that long (checked by
/// content, not by name: the GGUF and microlm magics).
fn leading_magic(path: &std::path::Path) -> Option<[u8; 4]> {
    use std::io::Read;
    // Only a regular file is opened: opening a FIFO or a device could block
    // (io::read refuses those with a clear error afterwards).
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path).ok()?.read_exact(&mut magic).ok()?;
    Some(magic)
}

/// The microlm dtype a ggml type goes to when `--dtype` is not given: the same
/// when microlm has it (Q8_0 and Q4_0 blocks are copied as they are), f16 for
/// BF16, and q8_0 for the other block types (their exact values re-rounded to
/// 8 bits: the nearest microlm format that loses little).
fn gguf_default_dtype(type_name: &str) -> DType {
    match type_name {
        "F32" => DType::F32,
        "F16" | "BF16" => DType::F16,
        "Q4_0" => DType::Q4_0,
        _ => DType::Q8_0,
    }
}

/// Per-kind dtypes for a GGUF import. With `--dtype`, that dtype (and the
/// `--tensor-dtype` overrides); without it, each kind keeps the precision of
/// its most precise GGUF tensor (files such as Q4_K_M mix types across
/// layers), then the overrides.
fn gguf_dtypes(g: &gguf::Gguf<'_>, config: &microlm::format::Config, quant: &QuantArgs) -> Result<KindDtypes> {
    use microlm::format::TensorKind;
    if let Some(base) = quant.dtype {
        return quantize::kind_dtypes(base, quant, config.shared_classifier);
    }
    // Most precise first.
    let rank = |d: DType| [DType::F32, DType::F16, DType::Q8_0, DType::Q4_16, DType::Q4_0].iter().position(|&x| x == d);
    let mut per_kind = Vec::new();
    for kind in TensorKind::ALL.into_iter().filter(|k| !k.is_norm()) {
        if kind == TensorKind::Classifier && config.shared_classifier {
            continue;
        }
        let layers = if kind.is_per_layer() { config.n_layers } else { 1 };
        let best = (0..layers)
            .filter_map(|l| g.tensor(&gguf::tensor_name(kind, l)))
            .map(|t| gguf_default_dtype(t.type_name))
            .min_by_key(|&d| rank(d));
        if let Some(d) = best {
            per_kind.push((kind, d));
        }
    }
    per_kind.extend(quant.tensor_dtype.iter().copied());
    let with_defaults = QuantArgs { tensor_dtype: per_kind, ..quant.clone() };
    quantize::kind_dtypes(DType::F32, &with_defaults, config.shared_classifier)
}

/// `microlm convert model.gguf`: a GGUF file of architecture `llama` (see [`gguf`]) → `.mlm`.
fn run_gguf(args: &ConvertArgs) -> Result<()> {
    ensure!(args.tokenizer.is_none(), "a GGUF file carries its own tokenizer: leave out --tokenizer");
    let output = quantize::create_output(&args.output, &[&args.input], &args.quant)?;
    let bytes = io::read(&args.input, io::CHECKPOINT)?;
    let what = || format!("{} is not a usable GGUF llama model", args.input.display());
    let g = gguf::parse(&bytes).with_context(what)?;
    let mut config = gguf::llama_config(&g).with_context(what)?;
    gguf::check_llama_tensors(&g, &config).with_context(what)?;
    // The tokenizer the file names: SentencePiece (`llama`) or byte-level BPE (`gpt2`).
    let tokenizer_model = match g.get("tokenizer.ggml.model") {
        Some(gguf::Value::Str(s)) => String::from_utf8_lossy(s).into_owned(),
        _ => String::new(),
    };
    let (vocab, bpe) = if tokenizer_model == "gpt2" {
        (write::Vocab::default(), Some(gguf::gpt2_bpe_vocab(&g).with_context(what)?))
    } else {
        (gguf::llama_vocab(&g).with_context(what)?, None)
    };
    let tokenizer = match &bpe {
        Some(b) => write::TokenizerSpec::Bpe(b),
        None => write::TokenizerSpec::SentencePiece(&vocab),
    };
    let vocab_len = bpe.as_ref().map_or(vocab.pieces.len(), |b| b.pieces.len());
    // An output.weight identical to the embedding (as llama2.c exports have) is a tied classifier.
    if let (Some(e), Some(o)) = (g.tensor("token_embd.weight"), g.tensor("output.weight")) {
        if e.ty == o.ty && e.dims == o.dims && g.data(e) == g.data(o) {
            config.shared_classifier = true;
        }
    }
    let name = write::model_name(&args.input.to_string_lossy());
    let progress = tensor_progress(bytes.len(), config.tensor_count());
    // The first tensor the file lacks, shapes otherwise or cannot dequantize.
    let mut bad: Option<anyhow::Error> = None;
    let f32_file = write::write_model_with(&name, "gguf", &config, &[DType::F32; 12], tokenizer, |entry| {
        progress.inc(1);
        let (rows, cols) = (entry.rows as usize, entry.cols as usize);
        match gguf::tensor_values(&g, entry.kind, entry.layer as usize, rows, cols) {
            Ok(v) => Ok(write::encode_tensor(entry.dtype, &v)),
            Err(e) => {
                bad.get_or_insert(e);
                encode_entry(entry, None)
            }
        }
    });
    progress.finish_and_clear();
    if let Some(e) = bad {
        return Err(e).with_context(what);
    }
    let f32_file = f32_file.with_context(what)?;
    let f32_file = ModelFile::from_bytes(&f32_file);
    let source = f32_file.parse(false).context("the converted f32 model does not parse")?;
    let source_type = gguf::dominant_type(&g);
    let dtypes = gguf_dtypes(&g, &config, &args.quant)?;
    let base = dtypes[microlm::format::TensorKind::Wq.index()];
    // Q8_0 and Q4_0 blocks go through unchanged when the target dtype is the same.
    let passthrough = |entry: &TensorEntry, _: &[f32]| {
        let ty = match entry.dtype {
            DType::Q8_0 => gguf::TYPE_Q8_0,
            DType::Q4_0 => gguf::TYPE_Q4_0,
            _ => return None,
        };
        gguf::tensor_blocks(&g, entry.kind, entry.layer as usize, entry.rows as usize, entry.cols as usize, ty)
            .map(<[u8]>::to_vec)
    };
    let len = quantize_and_commit(args, output, &source, &name, dtypes, &passthrough)?;
    eprintln!(
        "wrote {} ({} bytes, {} weights, {} tensors, vocab {} {}) from a GGUF v{} file ({} weights)",
        io::display(&args.output),
        len,
        base.name(),
        config.tensor_count(),
        vocab_len,
        if bpe.is_some() { "byte-level BPE" } else { "SentencePiece" },
        g.version,
        source_type.unwrap_or("no")
    );
    Ok(())
}

/// A progress bar over the tensors of a conversion whose input is `bytes` long
/// (hidden for small files).
fn tensor_progress(bytes: usize, tensors: usize) -> ProgressBar {
    if bytes as u64 <= PROGRESS_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(tensors as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} tensors")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("reading");
    bar
}

/// A version 2 (int8) tensor stored as q8_0 without re-rounding its values:
/// possible when every 32-value block of every row lies inside one scale group
/// (group size a multiple of 32 and rows a multiple of 32 long). Each block
/// takes its group's scale (as f16) and the int8 values unchanged. `None`
/// otherwise: the caller dequantizes and re-quantizes.
fn int8_as_q8_0(ckpt: &llama2c::Checkpoint, entry: &TensorEntry) -> Option<Vec<u8>> {
    use microlm::kernels::{q8_0, QK};
    if entry.dtype != DType::Q8_0 {
        return None;
    }
    let t = ckpt.int8(entry.kind, entry.layer as usize)?;
    let cols = entry.cols as usize;
    if t.group_size % QK != 0 || !cols.is_multiple_of(QK) {
        return None;
    }
    let mut out = vec![0u8; t.q.len() / QK * q8_0::BLOCK_BYTES];
    for (b, (qs, block)) in t.q.chunks_exact(QK).zip(out.chunks_exact_mut(q8_0::BLOCK_BYTES)).enumerate() {
        let scale = *t.scales.get(b * QK / t.group_size)?;
        let mut blk = q8_0::BlockQ8_0 { d: half_bytes(scale), qs: [0; QK] };
        blk.qs.copy_from_slice(qs);
        blk.write(block);
    }
    Some(out)
}

/// f16 little-endian bytes of `v`.
fn half_bytes(v: f32) -> [u8; 2] {
    microlm::write::f16_bytes(v)
}
