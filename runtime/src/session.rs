//! Inference state carved out of a caller-owned arena, and the forward pass.

use crate::error::SessionError;
use crate::format::{Config, DType, KindDtypes, TensorKind};
use crate::math;
use crate::model::Model;
use crate::sampler::Candidate;

const F32: usize = core::mem::size_of::<f32>();

/// Exact arena bytes for a model and context length, itemized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Plan {
    /// Context length the plan was made for.
    pub ctx_len: usize,
    /// Activation buffers: x, xb, xb2, q (dim each), hb, hb2 (hidden_dim each), att (ctx_len).
    pub activations: usize,
    /// Key and value caches: 2 × n_layers × ctx_len × kv_dim f32.
    pub kv_cache: usize,
    /// Output logits: vocab_size f32.
    pub logits: usize,
    /// Sampler candidates: vocab_size × 8 bytes.
    pub sampler: usize,
    /// q8_0 blocks of the input of a quantized matmul: ceil(max(dim, hidden_dim) / 32) × 34
    /// bytes when any weight matrix is quantized, else 0.
    pub act_quant: usize,
    /// Sum of the above: the arena size `Session::new` needs.
    pub total: usize,
}

impl Plan {
    /// Plans a session of `ctx_len` positions (1..=seq_len) for a model whose
    /// weights are all f32 or f16 (no activation quantization scratch).
    pub fn new(cfg: &Config, ctx_len: usize) -> Result<Plan, SessionError> {
        Plan::with_dtypes(cfg, &[DType::F32; 12], ctx_len)
    }

    /// Plans a session of `ctx_len` positions (1..=seq_len) for weights stored as `dtypes`.
    pub fn with_dtypes(cfg: &Config, dtypes: &KindDtypes, ctx_len: usize) -> Result<Plan, SessionError> {
        if ctx_len == 0 || ctx_len > cfg.seq_len {
            return Err(SessionError::BadContext { requested: ctx_len, max: cfg.seq_len });
        }
        let overflow = SessionError::BadContext { requested: ctx_len, max: cfg.seq_len };
        let floats = |n: Option<usize>| n.and_then(|n| n.checked_mul(F32)).ok_or(overflow);
        let activations = floats(
            cfg.dim
                .checked_mul(4)
                .and_then(|v| v.checked_add(cfg.hidden_dim.checked_mul(2)?))
                .and_then(|v| v.checked_add(ctx_len)),
        )?;
        let kv_cache = floats(
            cfg.n_layers.checked_mul(ctx_len).and_then(|v| v.checked_mul(cfg.kv_dim())).and_then(|v| v.checked_mul(2)),
        )?;
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
        Ok(Plan { ctx_len, activations, kv_cache, logits, sampler, act_quant, total })
    }
}

/// Per-run state over a model: activations, KV cache, logits and sampler scratch.
#[derive(Debug)]
pub struct Session<'a> {
    model: &'a Model<'a>,
    ctx_len: usize,
    /// Residual stream (dim).
    x: &'a mut [f32],
    /// Normed input / attention output (dim).
    xb: &'a mut [f32],
    /// Projection output (dim).
    xb2: &'a mut [f32],
    /// Query for the current position (dim).
    q: &'a mut [f32],
    /// FFN gate activations (hidden_dim).
    hb: &'a mut [f32],
    /// FFN up activations (hidden_dim).
    hb2: &'a mut [f32],
    /// Attention scores of one head (ctx_len).
    att: &'a mut [f32],
    /// Key cache (n_layers, ctx_len, kv_dim).
    key_cache: &'a mut [f32],
    /// Value cache (n_layers, ctx_len, kv_dim).
    value_cache: &'a mut [f32],
    /// Output logits (vocab_size).
    logits: &'a mut [f32],
    /// Sampler candidates (vocab_size).
    candidates: &'a mut [Candidate],
    /// q8_0 blocks of the current quantized matmul's input (ceil(max(dim, hidden_dim)/32) × 34 bytes, or empty).
    xq: &'a mut [u8],
}

/// Splits `n` f32 values off the front of `rest`.
fn take_f32<'a>(rest: &mut &'a mut [u8], n: usize) -> Result<&'a mut [f32], SessionError> {
    let bytes = n.checked_mul(F32).ok_or(SessionError::Internal)?;
    let (head, tail) = core::mem::take(rest).split_at_mut(bytes);
    *rest = tail;
    bytemuck::try_cast_slice_mut(head).map_err(|_| SessionError::ArenaMisaligned)
}

impl<'a> Session<'a> {
    /// Carves a session for `ctx_len` positions out of `arena` (4-byte aligned,
    /// at least `model.plan(ctx_len)?.total` bytes; extra bytes are unused).
    pub fn new(model: &'a Model<'a>, arena: &'a mut [u8], ctx_len: usize) -> Result<Session<'a>, SessionError> {
        let plan = model.plan(ctx_len)?;
        if arena.len() < plan.total {
            return Err(SessionError::ArenaTooSmall { needed: plan.total, given: arena.len() });
        }
        if arena.as_ptr().align_offset(4) != 0 {
            return Err(SessionError::ArenaMisaligned);
        }
        let cfg = *model.config();
        let kv = cfg.n_layers * ctx_len * cfg.kv_dim();
        let mut rest = &mut arena[..plan.total];
        let x = take_f32(&mut rest, cfg.dim)?;
        let xb = take_f32(&mut rest, cfg.dim)?;
        let xb2 = take_f32(&mut rest, cfg.dim)?;
        let q = take_f32(&mut rest, cfg.dim)?;
        let hb = take_f32(&mut rest, cfg.hidden_dim)?;
        let hb2 = take_f32(&mut rest, cfg.hidden_dim)?;
        let att = take_f32(&mut rest, ctx_len)?;
        let key_cache = take_f32(&mut rest, kv)?;
        let value_cache = take_f32(&mut rest, kv)?;
        let logits = take_f32(&mut rest, cfg.vocab_size)?;
        let (candidates, xq) = core::mem::take(&mut rest).split_at_mut(plan.sampler);
        let candidates = bytemuck::try_cast_slice_mut(candidates).map_err(|_| SessionError::ArenaMisaligned)?;
        Ok(Session { model, ctx_len, x, xb, xb2, q, hb, hb2, att, key_cache, value_cache, logits, candidates, xq })
    }

    /// The model this session runs.
    pub fn model(&self) -> &'a Model<'a> {
        self.model
    }

    /// Number of positions the KV cache holds.
    pub fn ctx_len(&self) -> usize {
        self.ctx_len
    }

    /// Logits of the last forward pass, and the sampler scratch.
    pub fn logits_and_scratch(&mut self) -> (&mut [f32], &mut [Candidate]) {
        (&mut *self.logits, &mut *self.candidates)
    }

    /// Runs the transformer for `token` at `pos` and returns the logits (vocab_size).
    pub fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32], SessionError> {
        self.forward_observed(token, pos, |_, _, _| {})
    }

    /// [`Session::forward`], calling `observe(kind, layer, input)` with the input
    /// vector of every weight matmul just before it runs (wq, wk and wv share one
    /// call with kind `Wq`; the classifier reports layer 0). Host tools use it to
    /// collect activation statistics for calibrated quantization.
    pub fn forward_observed(
        &mut self,
        token: u32,
        pos: usize,
        mut observe: impl FnMut(TensorKind, usize, &[f32]),
    ) -> Result<&mut [f32], SessionError> {
        let m = self.model;
        let cfg = *m.config();
        if token as usize >= cfg.vocab_size {
            return Err(SessionError::TokenOutOfRange { token, vocab_size: cfg.vocab_size });
        }
        if pos >= self.ctx_len {
            return Err(SessionError::ContextFull { ctx_len: self.ctx_len });
        }
        let (kv_dim, head_size) = (cfg.kv_dim(), cfg.head_size());
        let kv_mul = cfg.n_heads / cfg.n_kv_heads;
        let sqrt_head = libm::sqrtf(head_size as f32);

        m.matrix(TensorKind::Embedding, 0)?.row_to_f32(token as usize, self.x);

        for layer in 0..cfg.n_layers {
            // Attention block: xb = rmsnorm(x); q, k, v projections; k and v go straight into the cache.
            math::rmsnorm(self.xb, self.x, m.norm(TensorKind::AttnNorm, layer)?, cfg.norm_eps);
            let layer_base = layer * self.ctx_len * kv_dim;
            let row = layer_base + pos * kv_dim;
            let k = &mut self.key_cache[row..row + kv_dim]; // (kv_dim)
            let v = &mut self.value_cache[row..row + kv_dim]; // (kv_dim)
            observe(TensorKind::Wq, layer, self.xb);
            m.matrix(TensorKind::Wq, layer)?.matvec(self.xb, self.q, self.xq)?;
            m.matrix(TensorKind::Wk, layer)?.matvec(self.xb, k, self.xq)?;
            m.matrix(TensorKind::Wv, layer)?.matvec(self.xb, v, self.xq)?;
            rope_qk(self.q, k, pos, head_size, cfg.rope_theta);

            // Each query head attends over positions 0..=pos of its shared key/value head.
            let keys = &self.key_cache[layer_base..layer_base + (pos + 1) * kv_dim]; // (pos+1, kv_dim)
            let values = &self.value_cache[layer_base..layer_base + (pos + 1) * kv_dim]; // (pos+1, kv_dim)
            for h in 0..cfg.n_heads {
                let q = &self.q[h * head_size..(h + 1) * head_size]; // (head_size)
                let kv_off = (h / kv_mul) * head_size;
                let att = &mut self.att[..=pos]; // (pos+1)
                for (score, k) in att.iter_mut().zip(keys.chunks_exact(kv_dim)) {
                    *score = crate::kernels::f32::dot(q, &k[kv_off..kv_off + head_size]) / sqrt_head;
                }
                math::softmax(att);
                let out = &mut self.xb[h * head_size..(h + 1) * head_size]; // (head_size)
                out.fill(0.0);
                for (&a, v) in att.iter().zip(values.chunks_exact(kv_dim)) {
                    for (o, &vv) in out.iter_mut().zip(&v[kv_off..kv_off + head_size]) {
                        *o += a * vv;
                    }
                }
            }
            observe(TensorKind::Wo, layer, self.xb);
            m.matrix(TensorKind::Wo, layer)?.matvec(self.xb, self.xb2, self.xq)?;
            for (x, &d) in self.x.iter_mut().zip(self.xb2.iter()) {
                *x += d;
            }

            // FFN block: x += w2 · (silu(w1 · xb) * (w3 · xb)), xb = rmsnorm(x).
            math::rmsnorm(self.xb, self.x, m.norm(TensorKind::FfnNorm, layer)?, cfg.norm_eps);
            observe(TensorKind::W1, layer, self.xb);
            m.matrix(TensorKind::W1, layer)?.matvec(self.xb, self.hb, self.xq)?;
            m.matrix(TensorKind::W3, layer)?.matvec(self.xb, self.hb2, self.xq)?;
            math::swiglu(self.hb, self.hb2);
            observe(TensorKind::W2, layer, self.hb);
            m.matrix(TensorKind::W2, layer)?.matvec(self.hb, self.xb, self.xq)?;
            for (x, &d) in self.x.iter_mut().zip(self.xb.iter()) {
                *x += d;
            }
        }

        math::rmsnorm_in_place(self.x, m.norm(TensorKind::FinalNorm, 0)?, cfg.norm_eps);
        observe(TensorKind::Classifier, 0, self.x);
        m.matrix(TensorKind::Classifier, 0)?.matvec(self.x, self.logits, self.xq)?;
        Ok(&mut *self.logits)
    }
}

/// Applies RoPE to q (dim) and k (kv_dim), computing each pair's rotation once for all heads.
fn rope_qk(q: &mut [f32], k: &mut [f32], pos: usize, head_size: usize, theta: f32) {
    for pair in 0..head_size / 2 {
        let i = pair * 2;
        let (fcr, fci) = math::rope_rotation(i, pos, head_size, theta);
        for head in q.chunks_exact_mut(head_size).chain(k.chunks_exact_mut(head_size)) {
            let (v0, v1) = (head[i], head[i + 1]);
            head[i] = v0 * fcr - v1 * fci;
            head[i + 1] = v0 * fci + v1 * fcr;
        }
    }
}
