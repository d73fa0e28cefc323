//! `microlm eval`: perplexity of a model on text, and agreement with a reference model.
//!
//! Story splitting: the text is cut into paragraphs at blank lines; a story
//! starts at the beginning of the text and at every paragraph that begins with
//! "Once upon a time" (the opening of most TinyStories stories; the others
//! simply continue the previous story), and runs up to the next story's start,
//! paragraph breaks included. Each story is encoded as llama2.c does it (BOS,
//! dummy-prefix space, no EOS).
//!
//! Scoring: each story runs from position 0. A story longer than the context
//! is cut into windows of `ctx` tokens that overlap by one token, each window
//! starting again at position 0 with an empty KV cache; every token but the
//! story's BOS is predicted exactly once from the tokens before it in its
//! window. Perplexity is `exp(mean negative log-likelihood)` over all scored tokens.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use microlm::tokenizer::Tokenizer;
use microlm::{KvDtype, Model, Session};
use serde::Serialize;

use microlm_cli::load::{self, ModelFile};

/// Arguments of `microlm eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model files (.mlm) to evaluate, one after the other on the same tokens.
    #[arg(required = true, num_args = 1..)]
    pub models: Vec<PathBuf>,
    /// Text file of stories.
    #[arg(long)]
    pub text: PathBuf,
    /// Which part of the text to score: all, first (half) or second (half); see `quantize --calibrate-half`.
    #[arg(long, default_value = "all", value_parser = crate::values::half())]
    pub half: Half,
    /// Reference model (e.g. the f32 file): adds KL divergence, top-1 agreement and greedy agreement.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Window length in tokens (default the model's seq_len).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Stop after this many scored tokens (0 = the whole text).
    #[arg(long, default_value_t = 0)]
    pub max_tokens: usize,
    /// KV cache dtype of the evaluated model: f32, f16 or i8.
    #[arg(long, default_value = "f32", value_parser = crate::values::kv())]
    pub kv: KvDtype,
    /// KV cache dtype of the reference (e.g. `--kv i8 --reference SAME.mlm` measures what the i8 cache costs).
    #[arg(long, default_value = "f32", value_parser = crate::values::kv())]
    pub reference_kv: KvDtype,
    /// Print one JSON object with the results as the last stdout line (one line per model).
    #[arg(long)]
    pub json: bool,
    /// Draw ΔPPL against weight bytes for the evaluated files as an SVG (needs --reference).
    #[arg(long, value_name = "SVG", requires = "reference")]
    pub plot: Option<PathBuf>,
}

/// Results of `microlm eval`.
#[derive(Debug, Serialize)]
pub struct EvalOutput {
    /// The evaluated file.
    pub model: String,
    /// exp(mean negative log-likelihood) over the scored tokens.
    pub perplexity: f64,
    /// Mean negative log-likelihood in nats.
    pub nll: f64,
    /// Scored tokens.
    pub tokens: usize,
    /// Stored bytes of all tensors (weights and norms).
    pub weight_bytes: u64,
    /// Stories (fully or partly) scored.
    pub stories: usize,
    /// Window length.
    pub ctx: usize,
    /// The reference file, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Reference perplexity on the same tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_perplexity: Option<f64>,
    /// Mean KL(reference ‖ model) per scored token, in nats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_divergence: Option<f64>,
    /// Percentage of scored positions where both models' most likely token is the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_agreement: Option<f64>,
    /// Length of the common prefix of both models' 256-token greedy continuations of BOS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greedy_common_prefix: Option<usize>,
    /// Forward passes per second (both models counted once).
    pub tokens_per_s: f64,
}

/// A part of a text: all of it, or the half before or after its middle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Half {
    /// The whole text.
    #[default]
    All,
    /// From the start up to the first story start at or after the middle byte.
    First,
    /// From that story start to the end.
    Second,
}

impl Half {
    /// Every value, in `--help` order.
    pub const ALL: [Half; 3] = [Half::All, Half::First, Half::Second];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Half::All => "all",
            Half::First => "first",
            Half::Second => "second",
        }
    }
}

/// The part `half` of `text`: the cut is the first paragraph opening with "Once
/// upon a time" that starts at or after byte `len / 2` (the end of the text if none),
/// so that calibration on the first half and evaluation on the second never share a story.
pub fn half_of(text: &str, half: Half) -> &str {
    const OPENING: &str = "\n\nOnce upon a time";
    let mid = text.len() / 2;
    let mut from = mid;
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let cut = text[from..].find(OPENING).map_or(text.len(), |i| from + i + 2);
    match half {
        Half::All => text,
        Half::First => &text[..cut],
        Half::Second => &text[cut..],
    }
}

/// Cuts `text` into stories (see the module docs).
pub fn split_stories(text: &str) -> Vec<&str> {
    const OPENING: &str = "Once upon a time";
    let mut starts = vec![0usize];
    let mut at = 0usize;
    for line in text.split_inclusive('\n') {
        let next = at + line.len();
        // A paragraph starts after a blank line.
        let after_blank = text[..at].ends_with("\n\n") || text[..at].ends_with("\n\r\n");
        if at > 0 && after_blank && line.starts_with(OPENING) {
            starts.push(at);
        }
        at = next;
    }
    starts.push(text.len());
    starts.windows(2).map(|w| text[w[0]..w[1]].trim()).filter(|s| !s.is_empty()).collect()
}

/// Encodes `text` with `Tokenizer::encode` given only `encode_capacity` slots (the O(n²) merges).
#[cfg(test)]
fn encode(tok: &Tokenizer<'_>, text: &str, bos: bool) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; Tokenizer::encode_capacity(text.as_bytes())];
    let n = tok.encode(text.as_bytes(), bos, false, &mut ids)?;
    ids.truncate(n);
    Ok(ids)
}

/// Encodes `text` with BOS, giving `Tokenizer::encode` the workspace with which
/// it merges in O(n log n) (a 400 KB evaluation text would take minutes in O(n²)).
fn encode_story(tok: &Tokenizer<'_>, text: &str) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; Tokenizer::encode_workspace(text.as_bytes())];
    let n = tok.encode(text.as_bytes(), true, false, &mut ids)?;
    ids.truncate(n);
    Ok(ids)
}

/// Encodes every story with BOS as llama2.c does.
pub fn tokenize_stories(model: &Model<'_>, text: &str) -> Result<Vec<Vec<u32>>> {
    let tok = model.tokenizer();
    split_stories(text).into_iter().map(|story| encode_story(tok, story)).collect()
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} tokens ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(msg);
    bar
}

/// log-softmax of `logits` in f64.
fn log_softmax(logits: &[f32], out: &mut Vec<f64>) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| (f64::from(v) - f64::from(max)).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    out.clear();
    out.extend(logits.iter().map(|&v| f64::from(v) - lse));
}

/// Index of the largest value (first on ties), as the greedy sampler picks it.
fn argmax(v: &[f32]) -> u32 {
    microlm::sampler::argmax(v)
}

/// One model with its session.
struct Runner<'m> {
    session: Session<'m>,
}

impl<'m> Runner<'m> {
    fn new(model: &'m Model<'m>, arena: &'m mut [u32], ctx: usize, kv: KvDtype) -> Result<Runner<'m>> {
        Ok(Runner { session: Session::new(model, bytemuck::cast_slice_mut(arena), ctx, kv)? })
    }

    fn forward(&mut self, token: u32, pos: usize) -> Result<&[f32]> {
        Ok(self.session.forward(token, pos).context("forward pass failed")?)
    }
}

/// The common prefix length of both models' greedy continuations of BOS.
fn greedy_common_prefix(a: &mut Runner<'_>, b: &mut Runner<'_>, bos: u32, steps: usize) -> Result<usize> {
    let (mut ta, mut tb) = (bos, bos);
    for pos in 0..steps {
        let na = argmax(a.forward(ta, pos)?);
        let nb = argmax(b.forward(tb, pos)?);
        if na != nb {
            return Ok(pos);
        }
        (ta, tb) = (na, nb);
    }
    Ok(steps)
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if let Some(plot) = &args.plot {
        anyhow::ensure!(
            !microlm_cli::io::names_stdout(plot),
            "--plot {} writes the chart on stdout, where eval prints its results: choose a file for the plot",
            plot.display()
        );
    }
    let mut points = Vec::new();
    for path in &args.models {
        let out = run_one(args, path)?;
        if let Some(rp) = out.reference_perplexity {
            let label = path.file_name().map_or(out.model.clone(), |n| n.to_string_lossy().into_owned());
            points.push(crate::plot::QualityPoint {
                label,
                weight_bytes: out.weight_bytes,
                delta_ppl: 100.0 * (out.perplexity / rp - 1.0),
            });
        }
    }
    if let Some(plot) = &args.plot {
        let svg = crate::plot::quality(plot, &points)?;
        // Never over a model, the reference or the text.
        let mut inputs: Vec<&std::path::Path> = args.models.iter().map(PathBuf::as_path).collect();
        inputs.push(&args.text);
        inputs.extend(args.reference.as_deref());
        microlm_cli::io::write(plot, svg.as_bytes(), &inputs)?;
        eprintln!("wrote {}", plot.display());
    }
    Ok(())
}

/// Evaluates one model file.
fn run_one(args: &EvalArgs, path: &std::path::Path) -> Result<EvalOutput> {
    let file = ModelFile::read(path)?;
    let model = file.parse(false)?;
    let ref_file = args.reference.as_ref().map(|p| ModelFile::read(p)).transpose()?;
    let ref_model = ref_file.as_ref().map(|f| f.parse(false)).transpose()?;
    if let Some(r) = &ref_model {
        let (a, b) = (model.config(), r.config());
        ensure!(
            a.vocab_size == b.vocab_size && a.seq_len == b.seq_len,
            "reference model has vocab {} / seq_len {}, the model {} / {}: they must match",
            b.vocab_size,
            b.seq_len,
            a.vocab_size,
            a.seq_len
        );
    }
    let ctx = args.ctx.unwrap_or(model.config().seq_len);
    ensure!(ctx >= 2, "--ctx must be at least 2 to score a token");
    let text = microlm_cli::io::read_text(&args.text, microlm_cli::io::TEXT)?;
    let stories = tokenize_stories(&model, half_of(&text, args.half))?;
    let scorable: usize = stories.iter().map(|s| s.len().saturating_sub(1)).sum();
    ensure!(scorable > 0, "{} holds no text to score", args.text.display());
    let budget = if args.max_tokens == 0 { scorable } else { scorable.min(args.max_tokens) };

    let mut arena = load::arena(model.plan(ctx, args.kv)?.total);
    let mut runner = Runner::new(&model, &mut arena, ctx, args.kv)?;
    let mut ref_arena = match &ref_model {
        Some(r) => load::arena(r.plan(ctx, args.reference_kv)?.total),
        None => Vec::new(),
    };
    let mut ref_runner = match &ref_model {
        Some(r) => Some(Runner::new(r, &mut ref_arena, ctx, args.reference_kv)?),
        None => None,
    };

    let bar = progress(budget as u64, "evaluating");
    let start = Instant::now();
    let (mut nll, mut ref_nll, mut kl, mut agree) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    let (mut scored, mut forwards, mut stories_seen) = (0usize, 0usize, 0usize);
    let (mut lp, mut ref_lp) = (Vec::new(), Vec::new());
    'stories: for story in &stories {
        if story.len() < 2 {
            continue;
        }
        stories_seen += 1;
        // Windows of ctx tokens overlapping by one: [0, ctx), [ctx-1, 2ctx-1), ...
        let mut start_tok = 0usize;
        while start_tok + 1 < story.len() {
            let window = &story[start_tok..story.len().min(start_tok + ctx)];
            for (pos, pair) in window.windows(2).enumerate() {
                if scored == budget {
                    break 'stories;
                }
                let (token, next) = (pair[0], pair[1] as usize);
                let logits = runner.forward(token, pos)?;
                log_softmax(logits, &mut lp);
                let top = argmax(logits);
                nll -= lp[next];
                forwards += 1;
                if let Some(r) = ref_runner.as_mut() {
                    let ref_logits = r.forward(token, pos)?;
                    log_softmax(ref_logits, &mut ref_lp);
                    ref_nll -= ref_lp[next];
                    // KL(ref ‖ model) = Σ p_ref (log p_ref − log p_model).
                    kl += ref_lp.iter().zip(&lp).map(|(&r, &m)| r.exp() * (r - m)).sum::<f64>();
                    agree += usize::from(argmax(ref_logits) == top);
                }
                scored += 1;
                bar.inc(1);
            }
            start_tok += ctx - 1;
        }
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();

    let greedy = match ref_runner.as_mut() {
        Some(r) => Some(greedy_common_prefix(&mut runner, r, model.config().bos_id, 256.min(ctx))?),
        None => None,
    };
    let n = scored as f64;
    let out = EvalOutput {
        model: path.display().to_string(),
        weight_bytes: model.tensors().map(|t| t.length).sum(),
        perplexity: (nll / n).exp(),
        nll: nll / n,
        tokens: scored,
        stories: stories_seen,
        ctx,
        reference: args.reference.as_ref().map(|p| p.display().to_string()),
        reference_perplexity: ref_runner.as_ref().map(|_| (ref_nll / n).exp()),
        kl_divergence: ref_runner.as_ref().map(|_| kl / n),
        top1_agreement: ref_runner.as_ref().map(|_| 100.0 * agree as f64 / n),
        greedy_common_prefix: greedy,
        tokens_per_s: if elapsed > 0.0 { forwards as f64 / elapsed } else { 0.0 },
    };
    println!("model       {}", out.model);
    println!("tokens      {} scored in {} stories, ctx {}", out.tokens, out.stories, out.ctx);
    println!("perplexity  {:.4}", out.perplexity);
    if let (Some(rp), Some(kl), Some(top1), Some(g)) =
        (out.reference_perplexity, out.kl_divergence, out.top1_agreement, out.greedy_common_prefix)
    {
        println!(
            "reference   {} (perplexity {rp:.4}, Δ {:+.2}%)",
            out.reference.as_deref().unwrap_or(""),
            100.0 * (out.perplexity / rp - 1.0)
        );
        println!("kl          {kl:.6} nats/token");
        println!("top-1       {top1:.2}%");
        println!("greedy      {g} common tokens of {}", 256.min(ctx));
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_encoder_equals_tokenizer_encode() {
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
        let (Ok(ckpt), Ok(tok), Ok(text)) = (
            std::fs::read(shared.join("models/stories260K.bin")),
            std::fs::read(shared.join("models/tok512.bin")),
            std::fs::read_to_string(shared.join("data/tinystories_dev.txt")),
        ) else {
            panic!("../shared/models and ../shared/data are needed beside the checkout");
        };
        let ckpt = microlm_cli::llama2c::read_checkpoint(&ckpt).unwrap();
        let vocab = microlm_cli::llama2c::read_tokenizer(&tok, std::path::Path::new("tok512.bin")).unwrap();
        let spec = microlm::write::ModelSpec {
            name: "t",
            source: "llama2.c",
            config: ckpt.config,
            dtypes: [microlm::DType::F32; 12],
            vocab: &vocab,
        };
        let bytes = microlm::write::write_model(&spec, |e| {
            Ok(microlm::write::encode_tensor(e.dtype, ckpt.tensor(e.kind, e.layer as usize).unwrap()))
        })
        .unwrap();
        let file = microlm_cli::load::ModelFile::from_bytes(&bytes);
        let model = file.parse(false).unwrap();
        let tok = model.tokenizer();
        let stories = split_stories(&text);
        for story in stories.iter().take(3).chain(stories.iter().rev().take(2)) {
            assert_eq!(encode_story(tok, story).unwrap(), encode(tok, story, true).unwrap());
        }
        for odd in ["", "a", "é€😀 \n\n x", "Once  upon   a time\u{7f}\u{0}"] {
            assert_eq!(encode_story(tok, odd).unwrap(), encode(tok, odd, true).unwrap(), "{odd:?}");
        }
    }

    #[test]
    fn halves_cut_at_a_story_start_after_the_middle() {
        let text = "Once upon a time, a.\n\nThe end.\n\nOnce upon a time, b.\n\nOnce upon a time, c.\n";
        let (first, second) = (half_of(text, Half::First), half_of(text, Half::Second));
        assert_eq!(format!("{first}{second}"), text);
        assert!(second.starts_with("Once upon a time, c."), "{second:?}");
        assert!(first.len() >= text.len() / 2);
        assert_eq!(half_of(text, Half::All), text);
        assert_eq!(half_of("no stories", Half::Second), "");
    }

    #[test]
    fn stories_start_at_once_upon_a_time_paragraphs() {
        let text = "tail of a story.\n\nOnce upon a time, a cat.\n\nThe cat ran.\n\nOnce upon a time, a dog.\nOnce upon a time inline.\n";
        let s = split_stories(text);
        assert_eq!(
            s,
            vec![
                "tail of a story.",
                "Once upon a time, a cat.\n\nThe cat ran.",
                "Once upon a time, a dog.\nOnce upon a time inline."
            ]
        );
    }
}
