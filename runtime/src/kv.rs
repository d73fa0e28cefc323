//! The key/value cache: storage in three dtypes, and the attention reads over it.
//!
//! Layout, for each of K and V:
//!
//! - `F32`: the values as computed (llama2.c's cache; bit-identical to it),
//!   head-major `(n_layers, n_kv_heads, ctx_len, head_size)`: one KV head's
//!   keys (or values) over all positions are contiguous, so an attention pass
//!   walks one array (two 8-wide cache rows per load on hard-float Cortex-M).
//! - `F16`: each value rounded to IEEE binary16, little-endian bytes, in
//!   `(n_layers, ctx_len, kv_dim)` rows (row `(layer, slot)` holding the
//!   `n_kv_heads` head rows of `head_size` values).
//! - `I8`: symmetric int8 in `(n_layers, ctx_len, kv_dim)` rows as `F16`, one
//!   f32 scale per (layer, slot) row — all KV heads
//!   of a position share it — for K and one for V: `scale = max|x| / 127`,
//!   `q = round(x / scale)` in -127..=127, `x ≈ q · scale` (a zero row gets
//!   scale 0). A scale per head would cost 4 bytes per head_size values (50 %
//!   more for stories260K's 8-wide heads) and push the ctx-512 arena past
//!   200 KB; a row-wide scale keeps it at 195 KB and lets a 64 KB-SRAM board
//!   hold 128 positions.
//!
//! Reads never dequantize the cache: every attention score and every value
//! accumulation widens one element at a time, in one fixed order (docs/ARCHITECTURE.md,
//! numerics contract):
//!
//! - f32 and f16: score(slot) = (Σ_i q\[i\] · k\[i\]) / √head_size, the sum over
//!   `i` left to right in f32 (`k[i]` widened to f32 exactly), slots in index order;
//! - i8: the query head is quantized once per head to i16 (`q_scale = max|q| /
//!   32767`, `q16 = round(q / q_scale)`), then score(slot) = (Σ_i q16\[i\] · k\[i\]
//!   as an exact i32, two SMLAD per four keys on Cortex-M4/M7) as f32 ·
//!   (q_scale · k_scale) / √head_size;
//! - softmax without its division: e(slot) = exp(score(slot) − max score),
//!   `sum` = Σ e in slot order; then out\[i\] = (Σ_slot (e(slot) · v_scale) · v\[i\])
//!   / sum, slots in index order (`v_scale` = 1 for f32 and f16).
//!
//! For f32 the scores are exactly llama2.c's; its value sum divides each
//! weight by `sum` first, this one divides the head's output once (the same
//! up to rounding in the last bits, one division instead of one per slot).

use core::ops::Range;

use half::f16;

use crate::error::SessionError;
use crate::kernels;

/// Storage type of the key/value cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KvDtype {
    /// 4 bytes per value, exactly the computed keys and values (llama2.c parity).
    #[default]
    F32,
    /// 2 bytes per value (IEEE binary16).
    F16,
    /// 1 byte per value plus one f32 scale per (layer, position).
    I8,
}

impl KvDtype {
    /// All dtypes, widest first.
    pub const ALL: [KvDtype; 3] = [KvDtype::F32, KvDtype::F16, KvDtype::I8];

    /// Bytes per cached value (scales not included).
    pub const fn value_bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
            KvDtype::I8 => 1,
        }
    }

    /// Bytes of scale per (layer, position), for K and for V each.
    pub const fn scale_bytes(self) -> usize {
        match self {
            KvDtype::I8 => 4,
            KvDtype::F32 | KvDtype::F16 => 0,
        }
    }

    /// Bytes of the i16 query an i8 key cache scores with (`head_size` values, in
    /// 4-byte words); 0 for f32 and f16.
    pub const fn query_bytes(self, head_size: usize) -> usize {
        match self {
            KvDtype::I8 => head_size.div_ceil(2) * 4,
            KvDtype::F32 | KvDtype::F16 => 0,
        }
    }

    /// The name used on command lines: `f32`, `f16` or `i8`.
    pub const fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::I8 => "i8",
        }
    }

    /// Parses `f32`, `f16` or `i8`.
    pub fn from_name(name: &[u8]) -> Option<KvDtype> {
        KvDtype::ALL.into_iter().find(|d| d.name().as_bytes() == name)
    }
}

impl core::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for KvDtype {
    type Err = UnknownKvDtype;
    fn from_str(s: &str) -> Result<KvDtype, UnknownKvDtype> {
        KvDtype::from_name(s.as_bytes()).ok_or(UnknownKvDtype)
    }
}

/// A KV dtype name other than `f32`, `f16` or `i8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnknownKvDtype;

impl core::fmt::Display for UnknownKvDtype {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("unknown KV cache dtype (expected f32, f16 or i8)")
    }
}

impl core::error::Error for UnknownKvDtype {}

/// Runs `$body` with `$hs` bound to a literal for the usual head sizes (8 and
/// 64 everywhere, 32 and 48 too on hosts), so the loops over one head unroll
/// with the query in registers; any other size runs the same body with the
/// runtime value.
macro_rules! with_head_size {
    ($n:expr, $hs:ident => $body:expr) => {
        match $n {
            8 => {
                let $hs: usize = 8;
                $body
            }
            // Hosts also unroll the 32- and 48-wide heads (llama2.c's 15M shape); a
            // microcontroller's flash keeps the two sizes its models use.
            #[cfg(not(target_os = "none"))]
            32 => {
                let $hs: usize = 32;
                $body
            }
            #[cfg(not(target_os = "none"))]
            48 => {
                let $hs: usize = 48;
                $body
            }
            64 => {
                let $hs: usize = 64;
                $body
            }
            n => {
                let $hs = n;
                $body
            }
        }
    };
}

/// Cache storage for K or V, carved from the arena by `Session::new`.
#[derive(Debug)]
pub(crate) enum Store<'a> {
    /// (n_layers, n_kv_heads, ctx_len, head_size) f32, and whether every value written
    /// so far is moderate ([`kernels::moderate`]); tracked only where a kernel uses it
    /// (MVE's vector scores, so the key cache), false elsewhere: once false, writes
    /// skip the check.
    F32 { rows: &'a mut [f32], moderate: bool },
    /// (n_layers, ctx_len, kv_dim) binary16, 2 little-endian bytes each.
    F16(&'a mut [u8]),
    /// Values (n_layers, ctx_len, kv_dim) i8 as bytes, scales (n_layers, ctx_len) f32,
    /// and for the key cache the query head quantized to i16 for the integer Q·K
    /// (head_size i16 as words, `act` pair order per group of four; empty for values).
    I8 { values: &'a mut [u8], scales: &'a mut [f32], query: &'a mut [u32] },
}

/// Shape of one cache, to find rows in a [`Store`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub ctx_len: usize,
    pub kv_dim: usize,
    pub head_size: usize,
}

impl Dims {
    /// Index of row `(layer, slot)`'s first value (the `(n_layers, ctx_len, kv_dim)` layouts).
    fn row(&self, layer: usize, slot: usize) -> usize {
        (layer * self.ctx_len + slot) * self.kv_dim
    }

    /// Index of head `kv_head`'s first value at `slot` in the head-major f32 layout
    /// `(n_layers, n_kv_heads, ctx_len, head_size)`.
    fn head_row(&self, layer: usize, kv_head: usize, slot: usize) -> usize {
        let n_kv_heads = self.kv_dim / self.head_size.max(1);
        ((layer * n_kv_heads + kv_head) * self.ctx_len + slot) * self.head_size
    }

    /// Where head `kv_head`'s rows for slots `slots` lie in a cache of this shape:
    /// (first index, last index + 1, stride between slots, the head's offset in a
    /// slot's row), in values.
    fn head_span(&self, head_major: bool, layer: usize, kv_head: usize, slots: Range<usize>) -> Span {
        if head_major {
            let (start, end) = (self.head_row(layer, kv_head, slots.start), self.head_row(layer, kv_head, slots.end));
            Span { start, end, stride: self.head_size, offset: 0 }
        } else {
            let (start, end) = (self.row(layer, slots.start), self.row(layer, slots.end));
            Span { start, end, stride: self.kv_dim, offset: kv_head * self.head_size }
        }
    }
}

/// One KV head's rows over a run of slots, in values (see [`Dims::head_span`]).
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
    stride: usize,
    offset: usize,
}

impl Store<'_> {
    /// Writes `x` (kv_dim, f32) as row `(layer, slot)`, converting or quantizing the whole row.
    pub(crate) fn write(&mut self, d: Dims, layer: usize, slot: usize, x: &[f32]) -> Result<(), SessionError> {
        let at = d.row(layer, slot);
        let n = d.kv_dim;
        match self {
            Store::F32 { rows: c, moderate } => {
                #[cfg(microlm_mve)]
                {
                    *moderate = *moderate && kernels::moderate(&x[..n]);
                }
                #[cfg(not(microlm_mve))]
                let _ = moderate;
                // Head h's values go to its own contiguous run of rows.
                for (h, head) in x[..n].chunks_exact(d.head_size.max(1)).enumerate() {
                    let at = d.head_row(layer, h, slot);
                    c.get_mut(at..at + head.len()).ok_or(SessionError::Internal)?.copy_from_slice(head);
                }
            }
            Store::F16(c) => {
                let row = c.get_mut(at * 2..(at + n) * 2).ok_or(SessionError::Internal)?; // (kv_dim × 2 bytes)
                for (b, &v) in row.chunks_exact_mut(2).zip(x) {
                    b.copy_from_slice(&f16::from_f32(v).to_le_bytes());
                }
            }
            Store::I8 { values, scales, .. } => {
                let row = values.get_mut(at..at + n).ok_or(SessionError::Internal)?; // (kv_dim)
                let scale = scales.get_mut(layer * d.ctx_len + slot).ok_or(SessionError::Internal)?;
                *scale = quantize_i8(&x[..n], row);
            }
        }
        Ok(())
    }

    /// `scores[i] = (q · K[layer, first + i, kv_head]) / sqrt_head` for each `i`, and
    /// returns their maximum (−∞ when empty; NaN scores are skipped); lowers `floor` to
    /// a lower bound of the scores where the kernel knows one, else sets it to −∞
    /// (see [`kernels::scores_f32`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn scores(
        &mut self,
        d: Dims,
        layer: usize,
        kv_head: usize,
        q: &[f32],
        first: usize,
        sqrt_head: f32,
        scores: &mut [f32],
        floor: &mut f32,
    ) -> f32 {
        let mut max = f32::NEG_INFINITY;
        if scores.is_empty() {
            return max;
        }
        // The head's rows (slots first.., `stride` values apart), walked without per-slot index arithmetic.
        let span = d.head_span(self.head_major(), layer, kv_head, first..first + scores.len());
        let (start, end, stride, offset) = (span.start, span.end, span.stride, span.offset);
        // One loop per dtype, so the per-slot work has no dispatch; f32 and i8 unroll per head size.
        match self {
            Store::F32 { rows: c, moderate } => with_head_size!(d.head_size, hs => {
                max = kernels::scores_f32(&q[..hs], &c[start..end], stride, offset, sqrt_head, max, scores, *moderate, floor);
            }),
            Store::F16(c) => {
                *floor = f32::NEG_INFINITY;
                let hs = d.head_size;
                max = kernels::scores_f16(&q[..hs], &c[start * 2..end * 2], stride, offset, sqrt_head, max, scores);
            }
            Store::I8 { values, scales, query } => {
                *floor = f32::NEG_INFINITY;
                let q_scale = quantize_query(&q[..d.head_size], query);
                with_head_size!(d.head_size, hs => {
                    let row_scales = &scales[start / stride..end / stride];
                    let (query, rows) = (&query[..hs.div_ceil(2)], &values[start..end]);
                    max = kernels::scores_i8(query, q_scale, rows, row_scales, stride, offset, hs, sqrt_head, max, scores);
                })
            }
        }
        max
    }

    /// Whether this store keeps the head-major layout (f32) rather than whole rows.
    fn head_major(&self) -> bool {
        matches!(self, Store::F32 { .. })
    }

    /// The attention output of one head: with e(slot) = exp(scores\[slot\] − max),
    /// out (head_size) = (Σ_slot e(slot) · V\[layer, slot, kv_head\]) / Σ_slot e(slot),
    /// both sums over slots in index order. `scores` may be overwritten with the e(slot).
    /// `floor` is a lower bound of the scores or −∞ ([`Store::scores`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mix(
        &self,
        d: Dims,
        layer: usize,
        kv_head: usize,
        scores: &mut [f32],
        max: f32,
        floor: f32,
        out: &mut [f32],
    ) {
        let span = d.head_span(self.head_major(), layer, kv_head, 0..scores.len());
        let hs = d.head_size;
        let out = &mut out[..hs];
        // f32 cache, 8-wide heads: the fused kernel where the target has one (hard-float Cortex-M).
        if let (Store::F32 { rows: c, moderate }, Ok(out)) = (self, <&mut [f32; 8]>::try_from(&mut *out)) {
            if let Some(values) = c.get(span.start..span.end) {
                if kernels::mix_f32_head8(scores, max, floor, values, *moderate, out).is_some() {
                    return;
                }
            }
        }
        // SIMD hosts take the exponentials in a pass of their own, which vectorizes; scalar
        // cores compute them inside the first column group's loop. Same values, same sum.
        let vector_exp = kernels::EXP_SEPARATE_PASS;
        let mut sum = if vector_exp { kernels::exp_shifted(scores, max) } else { 0.0 };
        let mut exps_pending = !vector_exp;
        // Eight output values at a time stay in registers over all slots; then the rest one by one.
        let split = hs - hs % 8;
        let (wide, narrow) = out.split_at_mut(split);
        for (i, out) in wide.chunks_exact_mut(8).enumerate() {
            let col = span.offset + 8 * i;
            if exps_pending {
                sum = self.mix_columns::<8, true>(span, col, scores, max, out);
                exps_pending = false;
            } else {
                self.mix_columns::<8, false>(span, col, scores, max, out);
            }
        }
        for (i, out) in narrow.chunks_exact_mut(1).enumerate() {
            let col = span.offset + split + i;
            if exps_pending {
                sum = self.mix_columns::<1, true>(span, col, scores, max, out);
                exps_pending = false;
            } else {
                self.mix_columns::<1, false>(span, col, scores, max, out);
            }
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }

    /// out (W) = Σ_slot e(slot) · `V[slot][col..col + W]` over the head's rows
    /// `span` (`col` counted from the start of each `span.stride`-value row): the
    /// dtype's value-mix kernel (`kernels::mix_f32`, `mix_f16`, `mix_i8`; with
    /// `EXP` they compute and sum the e(slot)).
    #[inline(always)]
    fn mix_columns<const W: usize, const EXP: bool>(
        &self,
        span: Span,
        col: usize,
        scores: &mut [f32],
        max: f32,
        out: &mut [f32],
    ) -> f32 {
        let (start, end, stride) = (span.start, span.end, span.stride);
        match self {
            Store::F32 { rows: c, .. } => kernels::mix_f32::<W, EXP>(&c[start..end], stride, col, scores, max, out),
            Store::F16(c) => kernels::mix_f16::<W, EXP>(&c[start * 2..end * 2], stride, col, scores, max, out),
            Store::I8 { values: v8, scales, .. } => {
                let row_scales = &scales[start / stride..end / stride];
                kernels::mix_i8::<W, EXP>(&v8[start..end], row_scales, stride, col, scores, max, out)
            }
        }
    }
}

/// Quantizes a query head `q` (head_size) to i16 words for [`kernels::dot_i16_i8`]
/// (`act` pair order per whole group of four, the rest in element order); returns the scale
/// `max|q| / 32767` (0 for a zero or non-finite head, which then scores 0).
fn quantize_query(q: &[f32], out: &mut [u32]) -> f32 {
    let amax = crate::scalar::max_abs(q);
    let scale = amax / 32767.0;
    let inv = if scale > 0.0 && scale.is_finite() { 1.0 / scale } else { 0.0 };
    let full = q.len() / 4 * 4;
    out.fill(0);
    for (i, &v) in q.iter().enumerate() {
        let at = if i < full { kernels::q8_act::element_of(i) } else { i };
        let half = u32::from(crate::scalar::round_half_away((v * inv).clamp(-32767.0, 32767.0)) as i16 as u16);
        if let Some(word) = out.get_mut(at / 2) {
            *word |= half << (16 * (at % 2));
        }
    }
    if inv == 0.0 {
        0.0
    } else {
        scale
    }
}

/// Quantizes `x` (one cache row) into `q` (same length, i8 as bytes); returns the scale.
pub fn quantize_i8(x: &[f32], q: &mut [u8]) -> f32 {
    let amax = crate::scalar::max_abs(x);
    let scale = amax / 127.0;
    // A zero (or non-finite) row stores zeros with scale 0 rather than dividing by it.
    let inv = if scale > 0.0 && scale.is_finite() { 1.0 / scale } else { 0.0 };
    for (o, &v) in q.iter_mut().zip(x) {
        // `as` saturates (and maps NaN to 0), so the clamp is only for clarity.
        *o = (crate::scalar::round_half_away((v * inv).clamp(-127.0, 127.0)) as i8) as u8;
    }
    if inv == 0.0 {
        0.0
    } else {
        scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i8_round_trip_within_half_a_step() {
        let x = [0.5f32, -1.25, 2.0, 0.125, -3.0, 4.5, 0.0, -0.01];
        let mut q = [0u8; 8];
        let s = quantize_i8(&x, &mut q);
        assert_eq!(s, 4.5 / 127.0);
        for (&v, &qv) in x.iter().zip(&q) {
            assert!((f32::from(qv as i8) * s - v).abs() <= s / 2.0 + 1e-7);
        }
        assert_eq!(q[5] as i8, 127);
        assert_eq!(quantize_i8(&[0.0; 4], &mut q[..4]), 0.0);
        assert_eq!(&q[..4], &[0; 4]);
    }

    #[test]
    fn names_round_trip() {
        for d in KvDtype::ALL {
            assert_eq!(d.name().parse::<KvDtype>(), Ok(d));
        }
        assert!("q4".parse::<KvDtype>().is_err());
    }
}
