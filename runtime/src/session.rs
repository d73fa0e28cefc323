//! Inference state carved out of a caller-owned arena, and the forward pass.

use crate::error::SessionError;
use crate::format::{Config, TensorKind};
use crate::kernels::Matrix;
use crate::kv::{Dims, KvDtype, Store};
use crate::math;
use crate::model::Model;
pub use crate::plan::Plan;
use crate::sampler::Candidate;

/// Which cache slot a position writes and which slots it attends over.
#[derive(Clone, Copy, Debug)]
struct Slots {
    /// Slot that receives this position's key and value.
    write: usize,
    /// Slots 0..len are attended over.
    len: usize,
    /// Slots 0..sinks are attention sinks read with the query rotated to `sink_pos`
    /// (0 until a window wraps: then every slot uses the query at its true position).
    sinks: usize,
    /// The query's slot position, used for the sinks once the window has wrapped.
    sink_pos: usize,
}

impl Slots {
    /// Plain mode: position `pos` lives in slot `pos`.
    fn linear(pos: usize) -> Slots {
        Slots { write: pos, len: pos + 1, sinks: 0, sink_pos: pos }
    }

    /// Window mode (StreamingLLM): slots 0..sinks keep positions 0..sinks for
    /// ever; slots sinks..ctx_len are a ring of the most recent positions.
    fn window(pos: usize, ctx_len: usize, sinks: usize) -> Slots {
        if pos < ctx_len {
            return Slots::linear(pos);
        }
        let ring = ctx_len - sinks;
        Slots { write: sinks + (pos - sinks) % ring, len: ctx_len, sinks, sink_pos: ctx_len - 1 }
    }
}

/// Per-run state over a model: activations, KV cache, logits and sampler scratch.
#[derive(Debug)]
pub struct Session<'a> {
    model: &'a Model<'a>,
    ctx_len: usize,
    kv: KvDtype,
    /// Residual stream (dim).
    x: &'a mut [f32],
    /// Normed input / attention output (dim).
    xb: &'a mut [f32],
    /// Projection output (dim); during attention, the query rotated for sink slots.
    xb2: &'a mut [f32],
    /// Query for the current position (dim).
    q: &'a mut [f32],
    /// Key of the current position before it is stored (kv_dim).
    k: &'a mut [f32],
    /// Value of the current position before it is stored (kv_dim).
    v: &'a mut [f32],
    /// FFN gate activations (hidden_dim).
    hb: &'a mut [f32],
    /// FFN up activations (hidden_dim).
    hb2: &'a mut [f32],
    /// Attention scores of one head (ctx_len).
    att: &'a mut [f32],
    /// RoPE rotation of the current position, (cos, sin) per pair of a head (head_size).
    rope: &'a mut [f32],
    /// Key cache (n_layers, ctx_len, kv_dim), keys stored RoPE-rotated at their true position.
    key_cache: Store<'a>,
    /// Value cache (n_layers, ctx_len, kv_dim).
    value_cache: Store<'a>,
    /// Output logits (vocab_size).
    logits: &'a mut [f32],
    /// Sampler candidates (vocab_size).
    candidates: &'a mut [Candidate],
    /// Prepared q8_0 blocks of the current quantized matmul's input (ceil(max(dim, hidden_dim)/32) × 72 bytes, or empty).
    xq: &'a mut [u32],
}

/// Splits `n` values of `T` off the front of `rest`.
fn take<'a, T: bytemuck::Pod>(rest: &mut &'a mut [u8], n: usize) -> Result<&'a mut [T], SessionError> {
    let bytes = n.checked_mul(core::mem::size_of::<T>()).ok_or(SessionError::Internal)?;
    if bytes > rest.len() {
        return Err(SessionError::Internal);
    }
    let (head, tail) = core::mem::take(rest).split_at_mut(bytes);
    *rest = tail;
    bytemuck::try_cast_slice_mut(head).map_err(|_| SessionError::ArenaMisaligned)
}

/// Splits the storage of one `kv` cache of `rows` (layer, position) rows off `rest`.
/// `query_words` is the quantized query's size for an i8 key cache (0 for values).
/// An f32 store tracks whether its values are moderate where MVE's vector scores
/// and value sums use that.
fn take_store<'a>(
    rest: &mut &'a mut [u8],
    kv: KvDtype,
    rows: usize,
    query_words: usize,
    cfg: &Config,
) -> Result<Store<'a>, SessionError> {
    let n = rows.checked_mul(cfg.kv_dim()).ok_or(SessionError::Internal)?;
    Ok(match kv {
        KvDtype::F32 => Store::F32 { rows: take(rest, n)?, moderate: cfg!(microlm_mve) },
        KvDtype::F16 => Store::F16(take(rest, n.checked_mul(2).ok_or(SessionError::Internal)?)?),
        KvDtype::I8 => {
            let scales = take(rest, rows)?; // (n_layers, ctx_len)
            let query = take(rest, query_words)?; // (head_size i16)
            Store::I8 { scales, query, values: take(rest, n)? }
        }
    })
}

impl<'a> Session<'a> {
    /// Carves a session for `ctx_len` positions with a `kv` cache out of `arena`
    /// (4-byte aligned, at least `model.plan(ctx_len, kv)?.total` bytes; extra bytes are unused).
    pub fn new(
        model: &'a Model<'a>,
        arena: &'a mut [u8],
        ctx_len: usize,
        kv: KvDtype,
    ) -> Result<Session<'a>, SessionError> {
        let plan = model.plan(ctx_len, kv)?;
        if arena.len() < plan.total {
            return Err(SessionError::ArenaTooSmall { needed: plan.total, given: arena.len() });
        }
        if arena.as_ptr().align_offset(4) != 0 {
            return Err(SessionError::ArenaMisaligned);
        }
        let cfg = *model.config();
        let rows = cfg.n_layers * ctx_len;
        // Word-sized buffers first, then the caches (f32 scales before i8/f16 bytes), so every word stays aligned.
        let mut rest = &mut arena[..plan.total];
        let x = take(&mut rest, cfg.dim)?;
        let xb = take(&mut rest, cfg.dim)?;
        let xb2 = take(&mut rest, cfg.dim)?;
        let q = take(&mut rest, cfg.dim)?;
        let k = take(&mut rest, cfg.kv_dim())?;
        let v = take(&mut rest, cfg.kv_dim())?;
        let hb = take(&mut rest, cfg.hidden_dim)?;
        let hb2 = take(&mut rest, cfg.hidden_dim)?;
        let att = take(&mut rest, ctx_len)?;
        let rope = take(&mut rest, cfg.head_size())?;
        let logits = take(&mut rest, cfg.vocab_size)?;
        let candidates = take(&mut rest, cfg.vocab_size)?;
        let xq = take(&mut rest, plan.act_quant / 4)?;
        let key_cache = take_store(&mut rest, kv, rows, kv.query_bytes(cfg.head_size()) / 4, &cfg)?;
        let value_cache = take_store(&mut rest, kv, rows, 0, &cfg)?;
        Ok(Session {
            model,
            ctx_len,
            kv,
            x,
            xb,
            xb2,
            q,
            k,
            v,
            hb,
            hb2,
            att,
            rope,
            key_cache,
            value_cache,
            logits,
            candidates,
            xq,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &'a Model<'a> {
        self.model
    }

    /// Number of positions the KV cache holds.
    pub fn ctx_len(&self) -> usize {
        self.ctx_len
    }

    /// The KV cache dtype.
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv
    }

    /// Logits of the last forward pass, and the sampler scratch.
    pub fn logits_and_scratch(&mut self) -> (&mut [f32], &mut [Candidate]) {
        (&mut *self.logits, &mut *self.candidates)
    }

    /// Runs the transformer for `token` at `pos` (< ctx_len) and returns the logits (vocab_size).
    pub fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32], SessionError> {
        if pos >= self.ctx_len {
            return Err(SessionError::ContextFull { ctx_len: self.ctx_len });
        }
        self.run(token, pos, Slots::linear(pos), |_, _, _| {})
    }

    /// [`Session::forward`], calling `observe(kind, layer, input)` with the input
    /// vector of every weight matmul just before it runs (wq, wk and wv share one
    /// call with kind `Wq`; the classifier reports layer 0). Host tools use it to
    /// collect activation statistics for calibrated quantization.
    pub fn forward_observed(
        &mut self,
        token: u32,
        pos: usize,
        observe: impl FnMut(TensorKind, usize, &[f32]),
    ) -> Result<&mut [f32], SessionError> {
        if pos >= self.ctx_len {
            return Err(SessionError::ContextFull { ctx_len: self.ctx_len });
        }
        self.run(token, pos, Slots::linear(pos), observe)
    }
    /// Like [`forward`](Self::forward), but any `pos` works: once the cache is
    /// full, slots `0..sinks` keep the first positions (attention sinks) and the
    /// other slots hold the most recent `ctx_len - sinks` positions.
    ///
    /// Positions follow StreamingLLM: a key is attended as if it sat at its
    /// cache slot, with the query in the last slot. Keys are stored rotated by
    /// their true position, so for the ring the query is rotated by its true
    /// position too (distance = true distance = distance in slots), and for the
    /// sinks a second copy of the query is rotated to slot position ctx_len - 1.
    /// Before the cache is full this is exactly `forward`.
    pub fn forward_window(&mut self, token: u32, pos: usize, sinks: usize) -> Result<&mut [f32], SessionError> {
        if sinks >= self.ctx_len {
            return Err(SessionError::BadWindow { sinks, ctx_len: self.ctx_len });
        }
        self.run(token, pos, Slots::window(pos, self.ctx_len, sinks), |_, _, _| {})
    }

    /// The forward pass for `token` at true position `pos`, cached as `slots` says.
    fn run(
        &mut self,
        token: u32,
        pos: usize,
        slots: Slots,
        mut observe: impl FnMut(TensorKind, usize, &[f32]),
    ) -> Result<&mut [f32], SessionError> {
        let m = self.model;
        let cfg = *m.config();
        if token as usize >= cfg.vocab_size {
            return Err(SessionError::TokenOutOfRange { token, vocab_size: cfg.vocab_size });
        }
        let dims = Dims { ctx_len: self.ctx_len, kv_dim: cfg.kv_dim(), head_size: cfg.head_size() };

        m.matrix(TensorKind::Embedding, 0)?.row_to_f32(token as usize, self.x);
        // The rotation depends on the position only: computed once for all layers and heads.
        for (pair, cs) in self.rope.chunks_exact_mut(2).enumerate() {
            (cs[0], cs[1]) = math::rope_rotation(pair * 2, pos, dims.head_size, cfg.rope_theta);
        }

        // Σ x² of the residual stream, for the next RMSNorm (after each block, from its add).
        let mut ss = math::sum_squares(self.x);
        for layer in 0..cfg.n_layers {
            // Attention block: xb = rmsnorm(x); q, k, v projections; k and v go into the cache.
            math::rmsnorm_from(self.xb, self.x, m.norm(TensorKind::AttnNorm, layer)?, ss, cfg.norm_eps);
            observe(TensorKind::Wq, layer, self.xb);
            let (wq, wk, wv) =
                (m.matrix(TensorKind::Wq, layer)?, m.matrix(TensorKind::Wk, layer)?, m.matrix(TensorKind::Wv, layer)?);
            // One quantization of xb for the three projections.
            Matrix::matvecs([(wq, &mut *self.q), (wk, &mut *self.k), (wv, &mut *self.v)], self.xb, self.xq)?;
            if slots.sinks > 0 {
                // The query as seen from the sink slots (window mode, wrapped).
                self.xb2.copy_from_slice(self.q);
                math::rope(self.xb2, slots.sink_pos, dims.head_size, cfg.rope_theta);
            }
            // q (dim) and k (kv_dim) rotated by the position's (cos, sin) per pair (head_size).
            math::rope_rotate(self.q, self.k, self.rope);
            self.key_cache.write(dims, layer, slots.write, self.k)?;
            self.value_cache.write(dims, layer, slots.write, self.v)?;
            let queries = Queries { q: self.q, sink_q: self.xb2, sinks: slots.sinks };
            attention(
                &mut self.key_cache,
                &self.value_cache,
                dims,
                layer,
                &cfg,
                queries,
                &mut self.att[..slots.len],
                self.xb,
            );
            observe(TensorKind::Wo, layer, self.xb);
            m.matrix(TensorKind::Wo, layer)?.matvec(self.xb, self.xb2, self.xq)?;
            ss = math::add_in_place_squares(self.x, self.xb2);

            // FFN block: x += w2 · (silu(w1 · xb) * (w3 · xb)), xb = rmsnorm(x).
            math::rmsnorm_from(self.xb, self.x, m.norm(TensorKind::FfnNorm, layer)?, ss, cfg.norm_eps);
            observe(TensorKind::W1, layer, self.xb);
            let (w1, w3) = (m.matrix(TensorKind::W1, layer)?, m.matrix(TensorKind::W3, layer)?);
            Matrix::matvecs([(w1, &mut *self.hb), (w3, &mut *self.hb2)], self.xb, self.xq)?;
            math::swiglu(self.hb, self.hb2);
            observe(TensorKind::W2, layer, self.hb);
            m.matrix(TensorKind::W2, layer)?.matvec(self.hb, self.xb, self.xq)?;
            ss = math::add_in_place_squares(self.x, self.xb);
        }

        math::rmsnorm_in_place_from(self.x, m.norm(TensorKind::FinalNorm, 0)?, ss, cfg.norm_eps);
        observe(TensorKind::Classifier, 0, self.x);
        m.matrix(TensorKind::Classifier, 0)?.matvec(self.x, self.logits, self.xq)?;
        Ok(&mut *self.logits)
    }
}

/// The rotated queries of one position.
#[derive(Clone, Copy)]
struct Queries<'q> {
    /// Query rotated at its true position (dim).
    q: &'q [f32],
    /// Query rotated at its slot position, for slots 0..sinks (dim; unused when sinks = 0).
    sink_q: &'q [f32],
    /// Number of leading slots read with `sink_q`.
    sinks: usize,
}

/// Multi-head attention of one layer over slots 0..att.len(): each query head
/// attends over its shared key/value head; out (dim) gets the heads' outputs.
#[allow(clippy::too_many_arguments)]
fn attention(
    keys: &mut Store<'_>,
    values: &Store<'_>,
    dims: Dims,
    layer: usize,
    cfg: &Config,
    queries: Queries<'_>,
    att: &mut [f32],
    out: &mut [f32],
) {
    let hs = dims.head_size;
    let kv_mul = cfg.n_heads / cfg.n_kv_heads;
    let sqrt_head = crate::kernels::sqrt(hs as f32);
    // Slots 0..sinks are read with the sink query, the rest with the true one.
    let sinks = queries.sinks.min(att.len());
    for h in 0..cfg.n_heads {
        let head = h * hs..(h + 1) * hs;
        let kv_head = h / kv_mul;
        let (sink_att, ring_att) = att.split_at_mut(sinks);
        // A lower bound of both parts' scores where the kernels know one, else −∞.
        let mut floor = f32::INFINITY;
        let sink_q = &queries.sink_q[head.clone()];
        let sink_max = keys.scores(dims, layer, kv_head, sink_q, 0, sqrt_head, sink_att, &mut floor);
        let ring_max =
            keys.scores(dims, layer, kv_head, &queries.q[head.clone()], sinks, sqrt_head, ring_att, &mut floor);
        let max = if ring_max > sink_max { ring_max } else { sink_max };
        values.mix(dims, layer, kv_head, att, max, floor, &mut out[head]);
    }
}
