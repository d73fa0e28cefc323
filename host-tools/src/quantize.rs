//! Weight quantization shared by `microlm convert` and `microlm quantize`: per-kind
//! dtype selection, optional calibrated (importance-weighted) block quantization,
//! writing the file, and the per-tensor error report.
//!
//! `microlm quantize` re-encodes an existing file. Tensors that are already
//! block-quantized are copied unchanged when their target dtype is the same,
//! and refused otherwise: re-quantizing q8_0/q4_0/q4_16 values would compound two
//! rounding errors, so the command asks for the original f32/f16 file instead.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use microlm::format::{DType, KindDtypes, TensorEntry, TensorKind};
use microlm::quant::{check_values, encode_rows, EncodeError, ErrorStats};
use microlm::write::{self, decode_tensor, Vocab, WriteError};
use microlm::Model;
use serde::Serialize;

use crate::calibrate::{self, Importance};
use microlm_cli::gptq;
use microlm_cli::io;
use microlm_cli::load::ModelFile;

/// Dtype and calibration flags shared by `convert` and `quantize`.
#[derive(Debug, Args, Clone, Default)]
pub struct QuantArgs {
    /// Storage type of the weight matrices: f32, f16, q8_0, q4_0 or q4_16 (norms stay f32).
    #[arg(long, value_parser = crate::values::dtype())]
    pub dtype: Option<DType>,
    /// Per-kind override KIND=DTYPE, repeatable (kinds: embedding wq wk wv wo w1 w2 w3 classifier).
    #[arg(long = "tensor-dtype", value_name = "KIND=DTYPE", value_parser = parse_kind_dtype)]
    pub tensor_dtype: Vec<(TensorKind, DType)>,
    /// Calibration text: run the model on it and quantize q4_0/q4_16/q8_0 blocks with an
    /// importance-weighted scale search (imatrix-style) instead of round-to-nearest.
    #[arg(long, value_name = "FILE")]
    pub calibrate: Option<PathBuf>,
    /// Tokens of calibration text to run (0 = all of it).
    #[arg(long, default_value_t = 16384)]
    pub calibrate_tokens: usize,
    /// Which part of the calibration text to use: all, first (half) or second (half),
    /// cut at the first story start after the middle (see `eval --half`).
    #[arg(long, default_value = "all", value_parser = crate::values::half())]
    pub calibrate_half: crate::eval::Half,
    /// GPTQ (needs --calibrate): quantize q4_0/q4_16/q8_0 tensors column by column with
    /// error feedback through the inverse input Hessian of each matmul.
    #[arg(long, requires = "calibrate")]
    pub gptq: bool,
    /// GPTQ dampening: fraction of the Hessian's mean diagonal added to it.
    #[arg(long, default_value_t = 0.01, requires = "gptq", allow_hyphen_values = true, value_parser = crate::values::non_negative_f64)]
    pub damp: f64,
    /// GPTQ block scales by the round-to-nearest rule on the updated weights instead
    /// of the Hessian-diagonal-weighted search.
    #[arg(long, requires = "gptq")]
    pub gptq_rtn_scales: bool,
    /// Print the per-tensor report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Clamp values beyond a dtype's range (f16: 65504; q8_0/q4_0/q4_16: a block scale of 65504)
    /// to its largest finite value instead of refusing them. NaN and infinities are always refused.
    #[arg(long)]
    pub saturate: bool,
}

/// Arguments of `microlm quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Model file (.mlm) with f32 or f16 weights.
    pub input: PathBuf,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Output .mlm file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Weight byte budget (170000, 170K = 170,000, 166KiB): choose q4_0, q4_16 or q8_0 per kind
    /// by measured sensitivity on the calibration text so the weights fit (needs --calibrate).
    #[arg(long, value_parser = crate::values::bytes, requires = "calibrate", conflicts_with = "board")]
    pub budget: Option<u64>,
    /// Choose the mix so the file fits this board's flash beside the firmware (see `inspect`'s board table).
    #[arg(long, value_parser = crate::values::board(), requires = "calibrate")]
    pub board: Option<String>,
    /// With --board: context length whose arena must fit the board's RAM (default the model's seq_len).
    #[arg(long, requires = "board", value_parser = crate::values::count)]
    pub ctx: Option<usize>,
    /// With --board: KV cache dtype of that arena.
    #[arg(long, default_value = "f32", requires = "board", value_parser = crate::values::kv())]
    pub kv: microlm::KvDtype,
    /// Calibration tokens scored per candidate mix of --budget / --board.
    #[arg(long, default_value_t = 4096, value_parser = crate::values::count)]
    pub budget_tokens: usize,
    /// Draw each tensor's relative RMSE (rmse / source rms) as an SVG bar chart.
    #[arg(long, value_name = "SVG")]
    pub plot: Option<PathBuf>,
    /// Fold each attention and FFN RMSNorm weight into the matrices it feeds (wq, wk, wv;
    /// w1, w3: column c times weight c) and store those norms as `ones`, no bytes
    /// (2 · layers · dim · 4 bytes less); the function is the same up to f32 rounding.
    #[arg(long)]
    pub fold_norms: bool,
}

impl QuantArgs {
    /// The GPTQ settings when `--gptq` is given.
    pub fn gptq_settings(&self) -> Option<gptq::Settings> {
        self.gptq.then_some(gptq::Settings { damp: self.damp, scale_search: !self.gptq_rtn_scales })
    }
}

/// Parses a dtype name for clap.
pub fn parse_dtype(s: &str) -> Result<DType, String> {
    DType::WEIGHTS
        .into_iter()
        .find(|d| d.name() == s)
        .ok_or_else(|| format!("unknown dtype '{s}' (expected f32, f16, q8_0, q4_0 or q4_16)"))
}

/// Parses `KIND=DTYPE` for clap.
pub fn parse_kind_dtype(s: &str) -> Result<(TensorKind, DType), String> {
    let (kind, dtype) = s.split_once('=').ok_or_else(|| format!("'{s}' is not KIND=DTYPE"))?;
    let kind = TensorKind::from_name(kind).ok_or_else(|| {
        let names: Vec<_> = TensorKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown tensor kind '{kind}' (expected one of {})", names.join(", "))
    })?;
    Ok((kind, parse_dtype(dtype)?))
}

/// The dtype of every kind: `base` for weight matrices, overrides on top, norms f32.
pub fn kind_dtypes(base: DType, args: &QuantArgs, shared_classifier: bool) -> Result<KindDtypes> {
    let mut dtypes: KindDtypes = [base; 12];
    for &(kind, dtype) in &args.tensor_dtype {
        let hint = if kind == TensorKind::FinalNorm { "" } else { " (--fold-norms folds it away)" };
        ensure!(!kind.is_norm() || dtype == DType::F32, "{} is a norm and always stored as f32{hint}", kind.name());
        ensure!(
            kind != TensorKind::Classifier || !shared_classifier,
            "this model's classifier is shared with the embedding: set embedding=DTYPE instead"
        );
        dtypes[kind.index()] = dtype;
    }
    for kind in TensorKind::ALL.into_iter().filter(|k| k.is_norm()) {
        dtypes[kind.index()] = DType::F32;
    }
    Ok(dtypes)
}

/// The per-tensor relative error of `report` as an SVG document (`path` names it in messages).
pub fn plot_report(path: &std::path::Path, report: &[TensorReport]) -> Result<String> {
    let bars: Vec<(String, f64)> = report
        .iter()
        .map(|r| (format!("{} {}", r.name, r.dtype), r.rmse / r.source_rms.max(f64::MIN_POSITIVE)))
        .collect();
    crate::plot::bars(path, "per-tensor quantization error", "rmse / rms of the source", &bars)
}

/// One line of the conversion report.
#[derive(Debug, Serialize)]
pub struct TensorReport {
    /// `embedding`, `layers.N.wq`, ...
    pub name: String,
    /// Stored dtype.
    pub dtype: &'static str,
    /// Stored bytes.
    pub bytes: u64,
    /// Root mean square error against the source.
    pub rmse: f64,
    /// Largest absolute error against the source.
    pub max_abs_error: f64,
    /// Cosine similarity with the source.
    pub cosine: f64,
    /// Root mean square of the source values.
    pub source_rms: f64,
}

/// The name `inspect` uses for a tensor.
pub fn tensor_name(kind: TensorKind, layer: u32) -> String {
    if kind.is_per_layer() {
        format!("layers.{layer}.{}", kind.name())
    } else {
        kind.name().to_string()
    }
}

/// Rebuilds the vocabulary stored in a model file.
pub fn vocab_of(model: &Model<'_>) -> Vocab {
    let tok = model.tokenizer();
    let ids = 0..tok.vocab_size() as u32;
    Vocab {
        pieces: ids.clone().map(|id| tok.piece(id).unwrap_or_default().to_vec()).collect(),
        scores: ids.map(|id| tok.as_sentencepiece().map_or(0.0, |t| t.score(id))).collect(),
    }
}

/// A tensor's f32 values as stored in `model` (dequantized when quantized).
pub fn source_values(model: &Model<'_>, kind: TensorKind, layer: usize) -> Result<(DType, Vec<f32>)> {
    let m = model.matrix(kind, layer).with_context(|| format!("cannot read tensor {}", kind.name()))?;
    Ok((m.dtype, decode_tensor(m.dtype, m.rows, m.cols, m.data)))
}

/// Encoded bytes for a tensor supplied directly by the importer (llama2.c int8 blocks).
pub type Passthrough<'p> = dyn Fn(&TensorEntry, &[f32]) -> Option<Vec<u8>> + 'p;

/// Writes `source` with `dtypes`, quantizing block types with `importance` when
/// given; returns the file and one report line per tensor (norms included).
/// Every writer goes through here: a NaN or infinity in the source, or a value
/// the target dtype cannot hold finitely, is refused naming the tensor, the
/// index and the value (with `saturate`, out-of-range values are clamped).
pub fn requantize(
    source: &Model<'_>,
    name: &str,
    dtypes: KindDtypes,
    importance: Option<&Importance>,
    gptq: Option<gptq::Settings>,
    passthrough: &Passthrough<'_>,
    saturate: bool,
) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    // The tokenizer is copied as it is, of either kind.
    let (vocab, bpe);
    let tokenizer = match source.tokenizer().as_bpe() {
        Some(t) => {
            bpe = write::BpeVocab::from_tokenizer(t);
            write::TokenizerSpec::Bpe(&bpe)
        }
        None => {
            vocab = vocab_of(source);
            write::TokenizerSpec::SentencePiece(&vocab)
        }
    };
    let mut report = Vec::new();
    let mut failure: Option<anyhow::Error> = None;
    let out = write::write_model_with(name, source.source(), source.config(), &dtypes, tokenizer, |entry| {
        let (kind, layer) = (entry.kind, entry.layer as usize);
        let (rows, cols) = (entry.rows as usize, entry.cols as usize);
        let name = tensor_name(kind, entry.layer);
        let fail = |e: anyhow::Error, failure: &mut Option<anyhow::Error>| {
            *failure = Some(e);
            WriteError::TensorSize { kind: kind.name(), layer: entry.layer, expected: 0, found: 0 }
        };
        let (src_dtype, values) = match source_values(source, kind, layer) {
            Ok(v) => v,
            Err(e) => return Err(fail(e, &mut failure)),
        };
        // Non-finite values never enter a file: refuse them in the source, and values the
        // target dtype cannot hold (unless saturating). Quantized sources are checked as
        // decoded (a hostile file's scale may be infinite).
        let checked = match check_values(entry.dtype, &values, saturate) {
            Ok(v) => v,
            Err(e) => return Err(fail(anyhow::anyhow!("cannot store tensor {name}: {e}{}", hint(&e)), &mut failure)),
        };
        let bytes = if src_dtype.is_quantized() {
            if src_dtype != entry.dtype {
                let e = anyhow::anyhow!(
                    "{name} is already {} and cannot be re-quantized to {} (that would round twice): \
                     quantize the original f32/f16 file, or keep {}={}",
                    src_dtype.name(),
                    entry.dtype.name(),
                    kind.name(),
                    src_dtype.name()
                );
                return Err(fail(e, &mut failure));
            }
            source.matrix(kind, layer).map(|m| m.data.to_vec()).unwrap_or_default()
        } else if let Some(bytes) =
            passthrough(entry, &values).filter(|b| all_finite(&decode_tensor(entry.dtype, rows, cols, b)))
        {
            bytes
        } else {
            match encode_weights(entry, &checked, importance, gptq) {
                Ok(bytes) => bytes,
                Err(e) => return Err(fail(anyhow::anyhow!("GPTQ failed on {name}: {e}"), &mut failure)),
            }
        };
        let decoded = decode_tensor(entry.dtype, rows, cols, &bytes);
        if let Some(index) = decoded.iter().position(|v| !v.is_finite()) {
            // Unreachable after check_values; kept so no writer can store a non-finite value.
            let e = anyhow::anyhow!(
                "cannot store tensor {name}: value {} at index {index} would be stored as {}",
                values[index],
                decoded[index]
            );
            return Err(fail(e, &mut failure));
        }
        let stats = ErrorStats::between(&values, &decoded);
        report.push(TensorReport {
            name,
            dtype: entry.dtype.name(),
            bytes: entry.length,
            rmse: stats.rmse,
            max_abs_error: stats.max_abs,
            cosine: stats.cosine,
            source_rms: (values.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / values.len().max(1) as f64)
                .sqrt(),
        });
        Ok(bytes)
    });
    match (out, failure) {
        (_, Some(e)) => Err(e),
        (Ok(out), None) => Ok((out, report)),
        (Err(e), None) => Err(e).context("cannot build the model file"),
    }
}

/// Encodes one tensor's checked values as its entry's dtype: GPTQ when `gptq` is
/// given and the calibration has the tensor's input Hessian, else round-to-nearest
/// or (with `importance`) the calibrated scale search.
pub fn encode_weights(
    entry: &TensorEntry,
    checked: &[f32],
    importance: Option<&Importance>,
    gptq: Option<gptq::Settings>,
) -> Result<Vec<u8>, gptq::GptqError> {
    let (kind, layer) = (entry.kind, entry.layer as usize);
    let (rows, cols) = (entry.rows as usize, entry.cols as usize);
    match (gptq, importance.and_then(|i| i.hessian(kind, layer))) {
        (Some(settings), Some(h)) if entry.dtype.is_quantized() => {
            gptq::quantize(entry.dtype, rows, cols, checked, h, settings)
        }
        _ => Ok(encode_rows(entry.dtype, cols, checked, importance.and_then(|i| i.get(kind, layer)))),
    }
}

fn all_finite(values: &[f32]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// What to do about an [`EncodeError`].
fn hint(e: &EncodeError) -> &'static str {
    match e {
        EncodeError::OutOfRange { .. } => " (--saturate clamps it to the largest finite value)",
        EncodeError::NonFinite { .. } => "",
    }
}

/// Runs the calibration text through `model` when `--calibrate` is given.
pub fn importance_for(model: &Model<'_>, args: &QuantArgs, dtypes: &KindDtypes) -> Result<Option<Importance>> {
    let Some(path) = &args.calibrate else { return Ok(None) };
    if !dtypes.iter().any(|d| d.is_quantized()) {
        eprintln!("warning: --calibrate only affects q8_0/q4_0/q4_16 tensors; none are requested");
    }
    let text = io::read_text(path, io::TEXT).context("cannot read the calibration text")?;
    let text = crate::eval::half_of(&text, args.calibrate_half);
    let imp = calibrate::collect(model, text, args.calibrate_tokens, args.gptq)
        .with_context(|| format!("calibration on {} failed", path.display()))?;
    eprintln!("calibrated on {} tokens of {} ({} part)", imp.tokens, path.display(), args.calibrate_half.name());
    Ok(Some(imp))
}

/// Prints the report table on stderr and, with `--json`, one JSON object on stdout.
pub fn print_report(output: &std::path::Path, file_bytes: usize, report: &[TensorReport], json: bool) -> Result<()> {
    eprintln!("{:<20} {:<5} {:>9} {:>11} {:>11} {:>10}", "tensor", "dtype", "bytes", "rmse", "max_abs", "cosine");
    for r in report {
        eprintln!(
            "{:<20} {:<5} {:>9} {:>11.3e} {:>11.3e} {:>10.6}",
            r.name, r.dtype, r.bytes, r.rmse, r.max_abs_error, r.cosine
        );
    }
    let weights: u64 = report.iter().map(|r| r.bytes).sum();
    eprintln!("{:<20} {:<5} {:>9}   (file {file_bytes} bytes)", "total", "", weights);
    if json {
        let j = serde_json::json!({
            "output": output.display().to_string(),
            "file_bytes": file_bytes,
            "weight_bytes": weights,
            "tensors": report,
        });
        println!("{j}");
    }
    Ok(())
}

/// `--fold-norms`: `source` as an f32 file whose attention and FFN RMSNorm weights
/// are 1 and folded into the matrices they feed: `W[r][c] · g[c]` for wq, wk, wv
/// (g the layer's attention norm) and w1, w3 (its FFN norm). RMSNorm multiplies
/// its output by g element-wise before those matmuls, so `W (g ⊙ x̂) = (W diag g) x̂`.
pub fn fold_norms(source: &Model<'_>) -> Result<Vec<u8>> {
    ensure!(
        source.dtype(TensorKind::AttnNorm) == DType::F32,
        "--fold-norms: the norms of this file are already folded"
    );
    for kind in [TensorKind::Wq, TensorKind::Wk, TensorKind::Wv, TensorKind::W1, TensorKind::W3] {
        ensure!(
            !source.dtype(kind).is_quantized(),
            "--fold-norms needs f32 or f16 wq, wk, wv, w1 and w3: {} is {} (quantize the original file)",
            kind.name(),
            source.dtype(kind).name()
        );
    }
    let norm_of = |kind: TensorKind| match kind {
        TensorKind::Wq | TensorKind::Wk | TensorKind::Wv => Some(TensorKind::AttnNorm),
        TensorKind::W1 | TensorKind::W3 => Some(TensorKind::FfnNorm),
        _ => None,
    };
    let folded = |entry: &TensorEntry, values: &[f32]| -> Option<Vec<u8>> {
        let layer = entry.layer as usize;
        let cols = entry.cols as usize;
        let scaled: Vec<f32> = if matches!(entry.kind, TensorKind::AttnNorm | TensorKind::FfnNorm) {
            vec![1.0; values.len()]
        } else {
            let g = source.norm(norm_of(entry.kind)?, layer).ok()?;
            values.iter().enumerate().map(|(i, &w)| w * g[i % cols]).collect()
        };
        Some(scaled.iter().flat_map(|v| v.to_le_bytes()).collect())
    };
    let shared = source.config().shared_classifier;
    let dtypes = kind_dtypes(DType::F32, &QuantArgs::default(), shared)?;
    let (bytes, _) =
        requantize(source, source.name(), dtypes, None, None, &folded, false).context("cannot fold the norms")?;
    Ok(bytes)
}

/// The dtypes with the attention and FFN norms stored as `ones` (after [`fold_norms`]).
pub fn with_folded_norms(mut dtypes: KindDtypes) -> KindDtypes {
    dtypes[TensorKind::AttnNorm.index()] = DType::Ones;
    dtypes[TensorKind::FfnNorm.index()] = DType::Ones;
    dtypes
}

/// The files a `convert` or `quantize` run reads, which its output must not be.
pub fn inputs<'a>(files: &[&'a std::path::Path], args: &'a QuantArgs) -> Vec<&'a std::path::Path> {
    files.iter().copied().chain(args.calibrate.as_deref()).collect()
}

/// Opens the model output of a `convert` or `quantize` run reading `files`
/// (see [`io::Output::create`]). The file is written front to back from memory,
/// so stdout (`-o -`, `-o /dev/stdout`) takes it too, but not with `--json`,
/// whose report would follow the model's bytes on stdout.
pub fn create_output(output: &std::path::Path, files: &[&std::path::Path], args: &QuantArgs) -> Result<io::Output> {
    let out = io::Output::create(output, &inputs(files, args))?;
    ensure!(
        !(out.is_stdout() && args.json),
        "-o {} writes the model on stdout, where --json prints the report: write the model to a file with --json",
        output.display()
    );
    Ok(out)
}

/// `--budget` / `--board`: the mix chosen by [`crate::budget::choose`].
fn run_budget(args: &QuantizeArgs, model: &Model<'_>) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    use crate::budget::Limit;
    let folded = args.fold_norms || model.dtype(TensorKind::AttnNorm) == DType::Ones;
    ensure!(
        args.quant.dtype.is_none() && args.quant.tensor_dtype.is_empty(),
        "--budget and --board choose every dtype: leave out --dtype and --tensor-dtype"
    );
    let board = match &args.board {
        Some(name) => Some(
            crate::inspect::BOARDS
                .iter()
                .find(|b| b.name == name)
                .with_context(|| format!("unknown board '{name}'"))?,
        ),
        None => None,
    };
    let limit = match (args.budget, board) {
        (Some(b), _) => Limit::Weights(b),
        (None, Some(b)) => Limit::File(b.flash.saturating_sub(b.firmware)),
        (None, None) => bail!("internal: no budget"),
    };
    let Some(path) = &args.quant.calibrate else { bail!("--budget and --board need --calibrate TEXT") };
    if let Some(b) = board {
        // --ctx and the RAM are checked before the calibration runs, for the file it will
        // write: every matrix quantized (so with the activation-quantization scratch).
        let ctx = args.ctx.unwrap_or(model.config().seq_len);
        let mut dtypes = crate::inspect::kind_dtypes(model);
        for k in TensorKind::ALL.into_iter().filter(|k| !k.is_norm()) {
            dtypes[k.index()] = DType::Q8_0;
        }
        let (ram_needed, max_ctx) = crate::inspect::ram_fit(model.config(), &dtypes, ctx, args.kv, b)?;
        ensure!(
            ram_needed <= b.ram,
            "{}'s RAM holds {} bytes, and the arena at ctx {ctx} with the {} KV cache (with the firmware's stack and statics) needs {ram_needed}: use --ctx {max_ctx} or less{}",
            b.name,
            b.ram,
            args.kv.name(),
            if args.kv == microlm::KvDtype::I8 { "" } else { ", or --kv i8" }
        );
    }
    let all = [DType::Q4_0; 12];
    let imp = importance_for(model, &args.quant, &all)?.context("--budget needs --calibrate")?;
    let text = io::read_text(path, io::TEXT).context("cannot read the calibration text")?;
    let text = crate::eval::half_of(&text, args.quant.calibrate_half);
    let (out, report) =
        crate::budget::choose(model, &args.quant, &imp, text, limit, args.budget_tokens.max(1), folded)?;
    if let Some(b) = board {
        let file = ModelFile::from_bytes(&out);
        let m = file.parse(false)?;
        let ctx = args.ctx.unwrap_or(m.config().seq_len);
        let fit = crate::inspect::fit(&m, ctx, args.kv, b)?;
        ensure!(
            fit.fits,
            "the chosen file fits {}'s flash but its arena at ctx {ctx} with the {} KV cache needs {} of {} RAM bytes: try a smaller --ctx{}",
            b.name,
            args.kv.name(),
            fit.ram_needed,
            b.ram,
            if args.kv == microlm::KvDtype::I8 { "" } else { " or --kv i8" }
        );
        eprintln!(
            "board {}: flash {} of {} bytes, RAM {} of {} bytes at ctx {ctx}",
            b.name, fit.flash_needed, b.flash, fit.ram_needed, b.ram
        );
    }
    Ok((out, report))
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let output = create_output(&args.output, &[&args.input], &args.quant)?;
    // A chart on stdout is fine, unless the model or the JSON report goes there too.
    if let Some(plot) = args.plot.as_deref().filter(|p| io::names_stdout(p)) {
        ensure!(
            !output.is_stdout() && !args.quant.json,
            "--plot {} writes the chart on stdout, where {} too: choose a file for the plot",
            plot.display(),
            if output.is_stdout() { "the model goes" } else { "--json prints the report" }
        );
    }
    let file = ModelFile::read(&args.input)?;
    let model = file.parse(false)?;
    // With --fold-norms every later step (calibration, GPTQ, the budget) works on the folded model.
    let folded_file;
    let model = if args.fold_norms {
        folded_file = ModelFile::from_bytes(&fold_norms(&model)?);
        folded_file.parse(false)?
    } else {
        model
    };
    let (out, report) = if args.budget.is_some() || args.board.is_some() {
        run_budget(args, &model)?
    } else {
        let Some(base) = args.quant.dtype else {
            bail!("--dtype is required (f32, f16, q8_0, q4_0 or q4_16), or --budget / --board to choose the mix");
        };
        let mut dtypes = kind_dtypes(base, &args.quant, model.config().shared_classifier)?;
        // A file whose norms are folded keeps them folded.
        if args.fold_norms || model.dtype(TensorKind::AttnNorm) == DType::Ones {
            dtypes = with_folded_norms(dtypes);
        }
        let importance = importance_for(&model, &args.quant, &dtypes)?;
        let gptq = args.quant.gptq_settings();
        requantize(&model, model.name(), dtypes, importance.as_ref(), gptq, &|_, _| None, args.quant.saturate)?
    };
    // The plot is drawn and its file opened before the model is written, so a
    // plot that cannot be written leaves no model behind; it may not be an input
    // or the model's output.
    let plot = match &args.plot {
        Some(path) => {
            let same = |a: &std::path::Path, b: &std::path::Path| {
                std::path::absolute(a).ok().zip(std::path::absolute(b).ok()).is_some_and(|(a, b)| a == b)
            };
            ensure!(
                !same(path, &args.output),
                "--plot {} is the model's output too: choose another file for the plot",
                path.display()
            );
            let mut taken = inputs(&[&args.input], &args.quant);
            taken.push(&args.output);
            Some((io::Output::create(path, &taken)?, plot_report(path, &report)?, path))
        }
        None => None,
    };
    output.commit(&out)?;
    print_report(&args.output, out.len(), &report, args.quant.json)?;
    if let Some((file, svg, path)) = plot {
        file.commit(svg.as_bytes())?;
        eprintln!("wrote {}", io::display(path));
    }

    eprintln!("wrote {} ({} bytes)", io::display(&args.output), out.len());
    Ok(())
}
