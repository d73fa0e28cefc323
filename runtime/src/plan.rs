//! The arena plan: the exact bytes a session needs for a model, a context
//! length and a KV cache dtype, itemized (docs/ARCHITECTURE.md, no allocation). Computed from
//! the configuration alone, so a board's build script can size a `static` arena.

use crate::error::SessionError;
use crate::format::{Config, DType, KindDtypes, TensorKind};
use crate::kv::KvDtype;
use crate::sampler::Candidate;

const F32: usize = core::mem::size_of::<f32>();

/// Exact arena bytes for a model, context length and KV cache dtype, itemized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Plan {
    /// Context length the plan was made for.
    pub ctx_len: usize,
    /// KV cache dtype the plan was made for.
    pub kv: KvDtype,
    /// Activation buffers, f32: x, xb, xb2, q (dim each), k, v (kv_dim each),
    /// hb, hb2 (hidden_dim each), att (ctx_len), rope (head_size).
    pub activations: usize,
    /// Key and value caches: 2 × n_layers × ctx_len × kv_dim values of `kv`'s
    /// size, plus for i8 2 × n_layers × ctx_len f32 scales (one per row) and the
    /// query head quantized to i16 for the integer Q·K (head_size × 2 bytes, in words).
    pub kv_cache: usize,
    /// Output logits: vocab_size f32.
    pub logits: usize,
    /// Sampler candidates: vocab_size × 8 bytes.
    pub sampler: usize,
    /// Prepared q8_0 blocks of the input of a quantized matmul (`kernels::q8_act`):
    /// ceil(max(dim, hidden_dim) / 32) × 72 bytes when any weight matrix is quantized, else 0.
    pub act_quant: usize,
    /// Sum of the above: the arena size `Session::new` needs.
    pub total: usize,
}

impl Plan {
    /// Plans a session of `ctx_len` positions (1..=seq_len) with a `kv` cache, for a
    /// model whose weights are all f32 or f16 (no activation quantization scratch).
    pub fn new(cfg: &Config, ctx_len: usize, kv: KvDtype) -> Result<Plan, SessionError> {
        Plan::with_dtypes(cfg, &[DType::F32; 12], ctx_len, kv)
    }

    /// Plans a session of `ctx_len` positions (1..=seq_len) with a `kv` cache for weights stored as `dtypes`.
    pub fn with_dtypes(cfg: &Config, dtypes: &KindDtypes, ctx_len: usize, kv: KvDtype) -> Result<Plan, SessionError> {
        if ctx_len == 0 || ctx_len > cfg.seq_len {
            return Err(SessionError::BadContext { requested: ctx_len, max: cfg.seq_len });
        }
        let overflow = SessionError::BadContext { requested: ctx_len, max: cfg.seq_len };
        let floats = |n: Option<usize>| n.and_then(|n| n.checked_mul(F32)).ok_or(overflow);
        let activations = floats(
            cfg.dim
                .checked_mul(4)
                .and_then(|v| v.checked_add(cfg.kv_dim().checked_mul(2)?))
                .and_then(|v| v.checked_add(cfg.hidden_dim.checked_mul(2)?))
                .and_then(|v| v.checked_add(ctx_len))
                .and_then(|v| v.checked_add(cfg.head_size())),
        )?;
        // Per cache (K or V): rows (layer, position) of kv_dim values and, for i8, one scale each.
        let rows = cfg.n_layers.checked_mul(ctx_len).ok_or(overflow)?;
        let values = rows.checked_mul(cfg.kv_dim()).and_then(|v| v.checked_mul(kv.value_bytes()));
        let scales = rows.checked_mul(kv.scale_bytes());
        let kv_cache = values
            .and_then(|v| v.checked_add(scales?))
            .and_then(|v| v.checked_mul(2))
            .and_then(|v| v.checked_add(kv.query_bytes(cfg.head_size())))
            .ok_or(overflow)?;
        let logits = floats(Some(cfg.vocab_size))?;
        let sampler = cfg.vocab_size.checked_mul(core::mem::size_of::<Candidate>()).ok_or(overflow)?;
        // The classifier reads the embedding's dtype when shared; norms are never matmuls.
        let quantized = TensorKind::ALL
            .into_iter()
            .filter(|&k| !k.is_norm())
            .filter(|&k| k != TensorKind::Classifier || !cfg.shared_classifier)
            .any(|k| dtypes[k.index()].is_quantized());
        let act_quant = if quantized {
            crate::kernels::act_scratch_bytes(cfg.dim.max(cfg.hidden_dim)).ok_or(overflow)?
        } else {
            0
        };
        let total = activations
            .checked_add(kv_cache)
            .and_then(|v| v.checked_add(logits))
            .and_then(|v| v.checked_add(sampler))
            .and_then(|v| v.checked_add(act_quant))
            .ok_or(overflow)?;
        Ok(Plan { ctx_len, kv, activations, kv_cache, logits, sampler, act_quant, total })
    }
}
