//! Activation statistics for calibrated quantization (llama.cpp imatrix-style).
//!
//! The model runs over calibration text; for every weight matmul the mean
//! square of each input column, `E[x_c²]`, is accumulated. For a weight row w
//! the expected squared output error of a quantized row ŵ is
//! `E[((w − ŵ)·x)²] ≈ Σ_c E[x_c²] (w_c − ŵ_c)²` (dropping cross terms), so
//! these vectors are the per-column weights the block scale search minimizes.
//! With `hessians`, the full second moments `E[x xᵀ]` are kept as well (GPTQ).

use std::collections::HashMap;

use anyhow::{Context, Result};
use microlm::format::TensorKind;
use microlm::{Model, Session};

use crate::eval;
use microlm_cli::gptq::Hessian;
use microlm_cli::load;

/// Per (kind, layer) mean square of each input column.
#[derive(Debug, Default)]
pub struct Importance {
    /// Keyed by (kind index, layer) of the kind whose matmul reported the input (Wq for wq/wk/wv, W1 for w1/w3).
    means: HashMap<(usize, usize), Vec<f32>>,
    /// Same keys: `Σ x xᵀ` of the inputs, when collected.
    hessians: HashMap<(usize, usize), Hessian>,
    /// Forward passes the statistics cover.
    pub tokens: usize,
}

impl Importance {
    /// The importance vector (cols) for the weights of `kind` in `layer`.
    pub fn get(&self, kind: TensorKind, layer: usize) -> Option<&[f32]> {
        self.means.get(&Self::key(kind, layer)?).map(Vec::as_slice)
    }

    /// The input Hessian (cols × cols) of the weights of `kind` in `layer`, when collected.
    pub fn hessian(&self, kind: TensorKind, layer: usize) -> Option<&Hessian> {
        self.hessians.get(&Self::key(kind, layer)?)
    }

    /// The (kind index, layer) under which the matmul feeding `kind` reported its input.
    fn key(kind: TensorKind, layer: usize) -> Option<(usize, usize)> {
        let key = match kind {
            TensorKind::Wq | TensorKind::Wk | TensorKind::Wv => (TensorKind::Wq, layer),
            TensorKind::W1 | TensorKind::W3 => (TensorKind::W1, layer),
            TensorKind::Wo | TensorKind::W2 => (kind, layer),
            // The embedding table is only a matmul when it doubles as the classifier;
            // `collect` stores the classifier's statistics under both kinds then.
            TensorKind::Classifier | TensorKind::Embedding => (kind, 0),
            _ => return None,
        };
        Some((key.0.index(), key.1))
    }
}

/// Runs `model` over the stories of `text` (at most `max_tokens` positions, 0 = all)
/// and returns the mean square of every matmul input column (and with `hessians`
/// every matmul's `Σ x xᵀ`).
pub fn collect(model: &Model<'_>, text: &str, max_tokens: usize, hessians: bool) -> Result<Importance> {
    let stories = eval::tokenize_stories(model, text)?;
    let total: usize = stories.iter().map(Vec::len).sum();
    let budget = if max_tokens == 0 { total } else { total.min(max_tokens) };
    anyhow::ensure!(budget > 0, "the calibration text holds no tokens");
    let ctx = model.config().seq_len;
    let plan = model.plan(ctx, microlm::KvDtype::F32)?;
    let mut arena = load::arena(plan.total);
    let mut session = Session::new(model, bytemuck::cast_slice_mut(&mut arena), ctx, microlm::KvDtype::F32)?;
    let bar = eval::progress(budget as u64, "calibrating");
    let mut sums: HashMap<(usize, usize), Vec<f64>> = HashMap::new();
    let mut hess: HashMap<(usize, usize), Hessian> = HashMap::new();
    let mut done = 0usize;
    'stories: for story in &stories {
        for (pos, &token) in story.iter().take(ctx).enumerate() {
            if done == budget {
                break 'stories;
            }
            session
                .forward_observed(token, pos, |kind, layer, x| {
                    let acc = sums.entry((kind.index(), layer)).or_insert_with(|| vec![0.0; x.len()]);
                    for (a, &v) in acc.iter_mut().zip(x) {
                        *a += f64::from(v) * f64::from(v);
                    }
                    if hessians {
                        hess.entry((kind.index(), layer)).or_insert_with(|| Hessian::new(x.len())).add(x);
                    }
                })
                .context("forward pass failed")?;
            done += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut imp = Importance { means: HashMap::new(), hessians: hess, tokens: done };
    for (key, acc) in sums {
        imp.means.insert(key, acc.iter().map(|&s| (s / done as f64) as f32).collect());
    }
    if model.config().shared_classifier {
        if let Some(v) = imp.means.get(&(TensorKind::Classifier.index(), 0)).cloned() {
            imp.means.insert((TensorKind::Embedding.index(), 0), v);
        }
        if let Some(h) = imp.hessians.get(&(TensorKind::Classifier.index(), 0)).cloned() {
            imp.hessians.insert((TensorKind::Embedding.index(), 0), h);
        }
    }
    Ok(imp)
}
