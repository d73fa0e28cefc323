//! `microlm quantize --budget BYTES` / `--board NAME`: the per-kind dtype mix
//! (q4_0, q4_16 or q8_0 for each weight kind) that fits a byte budget at the best
//! measured quality.
//!
//! Sensitivity: on the first `--budget-tokens` positions of the calibration text,
//! the mean KL(source ‖ mix) of the logits is measured for the cheapest mix (every
//! kind q4_0) and for that mix with one kind upgraded to q4_16 or to q8_0. Each
//! upgrade's gain (the KL it removes) per extra byte ranks it; the greedy choice
//! (a multiple-choice knapsack) repeatedly takes the step with the best gain per
//! byte, from a kind's present dtype to a larger one, while the mix fits. The
//! predicted KL assumes the gains add up; the chosen mix is then built and measured
//! on the same tokens. The file format stores one dtype per kind, so the choice is
//! per kind (all layers together). Each tensor is quantized once per dtype and
//! reused by every mix.

use anyhow::{bail, ensure, Context, Result};
use microlm::format::{DType, KindDtypes, TensorKind};
use microlm::{KvDtype, Model, Session};

use crate::calibrate::Importance;
use crate::eval;
use crate::quantize::{self, QuantArgs, TensorReport};
use microlm_cli::load::{self, ModelFile};

/// Log-probabilities of the source model at the scored positions.
struct Reference {
    /// Scored (story, position) pairs: the token fed and the next token.
    steps: Vec<(u32, usize, u32)>,
    /// steps × vocab log-probabilities.
    logp: Vec<f32>,
    vocab: usize,
    /// Mean negative log-likelihood of the next tokens.
    nll: f64,
}

/// log-softmax of `logits` into `out` (f64 sums).
fn log_softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let lse = f64::from(max) + logits.iter().map(|&v| (f64::from(v) - f64::from(max)).exp()).sum::<f64>().ln();
    for (o, &v) in out.iter_mut().zip(logits) {
        *o = (f64::from(v) - lse) as f32;
    }
}

/// Runs `model` over the steps (position 0 restarts the cache), calling `each` with the log-probs.
fn run(model: &Model<'_>, steps: &[(u32, usize, u32)], mut each: impl FnMut(usize, &[f32])) -> Result<()> {
    let ctx = model.config().seq_len;
    let mut arena = load::arena(model.plan(ctx, KvDtype::F32)?.total);
    let mut session = Session::new(model, bytemuck::cast_slice_mut(&mut arena), ctx, KvDtype::F32)?;
    let mut lp = vec![0.0f32; model.config().vocab_size];
    for (i, &(token, pos, _)) in steps.iter().enumerate() {
        let logits = session.forward(token, pos).context("forward pass failed")?;
        log_softmax(logits, &mut lp);
        each(i, &lp);
    }
    Ok(())
}

impl Reference {
    fn new(source: &Model<'_>, text: &str, tokens: usize) -> Result<Reference> {
        let ctx = source.config().seq_len;
        let mut steps = Vec::new();
        'stories: for story in eval::tokenize_stories(source, text)? {
            for (pos, pair) in story.windows(2).take(ctx - 1).enumerate() {
                if steps.len() == tokens {
                    break 'stories;
                }
                steps.push((pair[0], pos, pair[1]));
            }
        }
        ensure!(!steps.is_empty(), "the calibration text holds no tokens to score");
        let vocab = source.config().vocab_size;
        let mut logp = vec![0.0f32; steps.len() * vocab];
        let mut nll = 0.0;
        run(source, &steps, |i, lp| {
            logp[i * vocab..(i + 1) * vocab].copy_from_slice(lp);
            nll -= f64::from(lp[steps[i].2 as usize]);
        })?;
        let n = steps.len() as f64;
        Ok(Reference { steps, logp, vocab, nll: nll / n })
    }

    /// (mean KL(reference ‖ model) in nats, ΔPPL in percent) of `model` on the steps.
    fn score(&self, model: &Model<'_>) -> Result<(f64, f64)> {
        let (mut kl, mut nll) = (0.0f64, 0.0f64);
        run(model, &self.steps, |i, lp| {
            let r = &self.logp[i * self.vocab..(i + 1) * self.vocab];
            kl += r.iter().zip(lp).map(|(&r, &m)| f64::from(r).exp() * f64::from(r - m)).sum::<f64>();
            nll -= f64::from(lp[self.steps[i].2 as usize]);
        })?;
        let n = self.steps.len() as f64;
        Ok((kl / n, 100.0 * ((nll / n - self.nll).exp() - 1.0)))
    }
}

/// The kinds whose dtype the budget chooses (the classifier follows the embedding when shared).
fn choosable(shared_classifier: bool) -> Vec<TensorKind> {
    TensorKind::ALL
        .into_iter()
        .filter(|k| !(k.is_norm() || shared_classifier && *k == TensorKind::Classifier))
        .collect()
}

/// Encoded tensors by (kind index, layer, dtype), so each is quantized once.
type Cache = std::cell::RefCell<std::collections::HashMap<(usize, u32, usize), Vec<u8>>>;

/// A mix built in memory: its bytes, weight bytes and report.
fn build(
    source: &Model<'_>,
    dtypes: KindDtypes,
    imp: &Importance,
    args: &QuantArgs,
    cache: &Cache,
) -> Result<(Vec<u8>, u64, Vec<TensorReport>)> {
    let gptq = args.gptq_settings();
    // A tensor already in the cache is copied; a new one is quantized as
    // `requantize` quantizes it (`quantize::encode_weights`) and remembered.
    let cached = |entry: &microlm::format::TensorEntry, values: &[f32]| -> Option<Vec<u8>> {
        if !entry.dtype.is_quantized() {
            return None;
        }
        let key = (entry.kind.index(), entry.layer, entry.dtype as usize);
        if let Some(bytes) = cache.borrow().get(&key) {
            return Some(bytes.clone());
        }
        let checked = microlm::quant::check_values(entry.dtype, values, args.saturate).ok()?;
        let bytes = quantize::encode_weights(entry, &checked, Some(imp), gptq).ok()?;
        cache.borrow_mut().insert(key, bytes.clone());
        Some(bytes)
    };
    let (bytes, report) = quantize::requantize(source, source.name(), dtypes, Some(imp), gptq, &cached, args.saturate)?;
    let weights = report.iter().map(|r| r.bytes).sum();
    Ok((bytes, weights, report))
}

fn measure(reference: &Reference, bytes: &[u8]) -> Result<(f64, f64)> {
    let file = ModelFile::from_bytes(bytes);
    let model = file.parse(false)?;
    reference.score(&model)
}

/// One dtype a kind may take: the dtype, its extra weight bytes and the KL it
/// removes, both against every kind q4_0.
type KindOption = (DType, u64, f64);

/// The dtypes a kind may be raised to from q4_0, cheapest first.
const UPGRADES: [DType; 2] = [DType::Q4_16, DType::Q8_0];

/// What the budget counts.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// Stored weight bytes (every tensor, norms included).
    Weights(u64),
    /// Whole-file bytes (a board's flash less the firmware).
    File(u64),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Weights(b) => write!(f, "the budget of {b} weight bytes"),
            Limit::File(b) => write!(f, "the {b} file bytes the board's flash leaves beside the firmware"),
        }
    }
}

impl Limit {
    fn fits(self, file: usize, weights: u64) -> bool {
        match self {
            Limit::Weights(b) => weights <= b,
            Limit::File(b) => file as u64 <= b,
        }
    }
}

/// Chooses the mix (see the module docs) and returns the built file and its report.
pub fn choose(
    source: &Model<'_>,
    args: &QuantArgs,
    imp: &Importance,
    text: &str,
    limit: Limit,
    tokens: usize,
    folded: bool,
) -> Result<(Vec<u8>, Vec<TensorReport>)> {
    let shared = source.config().shared_classifier;
    let kinds = choosable(shared);
    let set = |mut d: KindDtypes, kind: TensorKind, dtype: DType| {
        d[kind.index()] = dtype;
        if shared && kind == TensorKind::Embedding {
            d[TensorKind::Classifier.index()] = dtype;
        }
        d
    };
    let cache = Cache::default();
    let mut base = quantize::kind_dtypes(DType::Q4_0, &QuantArgs::default(), shared)?;
    if folded {
        base = quantize::with_folded_norms(base);
    }
    let (base_bytes, base_weights, base_report) = build(source, base, imp, args, &cache)?;
    if !limit.fits(base_bytes.len(), base_weights) {
        let cfg = source.config();
        let norms = 2 * cfg.n_layers * cfg.dim * 4;
        let hint = if folded { String::new() } else { format!(" (--fold-norms stores {norms} bytes less)") };
        bail!(
            "the cheapest mix (every weight q4_0) is {base_weights} weight bytes in a {} byte file: it does not fit {limit}{hint}",
            base_bytes.len()
        );
    }
    let reference = Reference::new(source, text, tokens)?;
    let (base_kl, base_dppl) = measure(&reference, &base_bytes)?;
    eprintln!(
        "budget: scoring on {} calibration tokens; every weight q4_0: {base_weights} weight bytes, KL {base_kl:.5}, ΔPPL {base_dppl:+.2}%",
        reference.steps.len()
    );
    // Per kind, the options from cheapest: (dtype, extra bytes, KL removed) against every kind q4_0.
    let mut options: Vec<(TensorKind, Vec<KindOption>)> = Vec::new();
    for &kind in &kinds {
        let mut opts = vec![(DType::Q4_0, 0u64, 0.0f64)];
        for dtype in UPGRADES {
            let (bytes, weights, _) = build(source, set(base, kind, dtype), imp, args, &cache)?;
            let (kl, _) = measure(&reference, &bytes)?;
            let cost = weights.saturating_sub(base_weights).max(1);
            eprintln!(
                "  {:<10} {:<5}: +{cost:>6} bytes, KL {kl:.5} (gain {:.5}, {:.3e}/byte)",
                kind.name(),
                dtype.name(),
                base_kl - kl,
                (base_kl - kl) / cost as f64
            );
            opts.push((dtype, cost, base_kl - kl));
        }
        options.push((kind, opts));
    }
    // Greedy multiple-choice knapsack: the step (a kind from its present option to a
    // larger one) with the best gain per byte that fits, until none is left.
    let mut at = vec![0usize; options.len()];
    let (mut dtypes, mut predicted) = (base, base_kl);
    let (mut file_len, mut weights) = (base_bytes.len(), base_weights);
    loop {
        let mut best: Option<(usize, usize, f64)> = None;
        for (k, (_, opts)) in options.iter().enumerate() {
            let (_, cost0, gain0) = opts[at[k]];
            for (o, &(_, cost, gain)) in opts.iter().enumerate().skip(at[k] + 1) {
                let (dc, dg) = (cost - cost0, gain - gain0);
                if dg <= 0.0 || !limit.fits(file_len + dc as usize, weights + dc) {
                    continue;
                }
                let ratio = dg / dc.max(1) as f64;
                if best.is_none_or(|(_, _, r)| ratio > r) {
                    best = Some((k, o, ratio));
                }
            }
        }
        let Some((k, o, _)) = best else { break };
        let (kind, opts) = &options[k];
        let ((_, cost0, gain0), (dtype, cost, gain)) = (opts[at[k]], opts[o]);
        dtypes = set(dtypes, *kind, dtype);
        file_len += (cost - cost0) as usize;
        weights += cost - cost0;
        predicted -= gain - gain0;
        at[k] = o;
    }
    let (bytes, report) = if at.iter().all(|&o| o == 0) {
        (base_bytes, base_report)
    } else {
        let (bytes, _, report) = build(source, dtypes, imp, args, &cache)?;
        (bytes, report)
    };
    let weights: u64 = report.iter().map(|r| r.bytes).sum();
    ensure!(limit.fits(bytes.len(), weights), "internal: the chosen mix does not fit ({weights} weight bytes)");
    let (kl, dppl) = measure(&reference, &bytes)?;
    // The gains of several steps overlap, so their sum can pass the KL there is to remove.
    let predicted = predicted.max(0.0);
    let mix: Vec<String> = kinds.iter().map(|k| format!("{}={}", k.name(), dtypes[k.index()].name())).collect();
    eprintln!("budget: chose {}", mix.join(" "));
    eprintln!(
        "budget: {weights} weight bytes ({} file); KL predicted {predicted:.5}, measured {kl:.5}; ΔPPL measured {dppl:+.2}% (calibration tokens)",
        bytes.len()
    );
    Ok((bytes, report))
}
