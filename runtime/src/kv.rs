//! The key/value cache: storage in three dtypes, and the attention reads over it.
//!
//! Layout, for each of K and V: `(n_layers, ctx_len, kv_dim)` values, row
//! `(layer, slot)` holding the `n_kv_heads` head rows of `head_size` values.
//!
//! - `F32`: the values as computed (llama2.c's cache; bit-identical to it).
//! - `F16`: each value rounded to IEEE binary16, little-endian bytes.
//! - `I8`: symmetric int8, one f32 scale per (layer, slot) row — all KV heads
//!   of a position share it — for K and one for V: `scale = max|x| / 127`,
//!   `q = round(x / scale)` in -127..=127, `x ≈ q · scale` (a zero row gets
//!   scale 0). A scale per head would cost 4 bytes per head_size values (50 %
//!   more for stories260K's 8-wide heads) and push the ctx-512 arena past
//!   200 KB; a row-wide scale keeps it at 195 KB and lets a 64 KB-SRAM board
//!   hold 128 positions.
//!
//! Reads never dequantize the cache: every attention score and every value
//! accumulation widens one element at a time, in one fixed order (DESIGN.md
//! contract 3):
//!
//! - score(slot) = (Σ_i q[i] · k[i]) · k_scale / √head_size, the sum over `i`
//!   left to right in f32 (`k[i]` widened to f32 exactly; `k_scale` = 1 for f32
//!   and f16), slots in index order;
//! - out[i] += (a(slot) · v_scale) · v[i], slots in index order.
//!
//! For f32 that is exactly llama2.c's loop, so f32 output does not change.

use crate::error::SessionError;
use half::f16;

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

#[cfg(feature = "std")]
impl std::error::Error for UnknownKvDtype {}

/// Cache storage for K or V, carved from the arena by `Session::new`.
#[derive(Debug)]
pub(crate) enum Store<'a> {
    /// (n_layers, ctx_len, kv_dim) f32.
    F32(&'a mut [f32]),
    /// (n_layers, ctx_len, kv_dim) binary16, 2 little-endian bytes each.
    F16(&'a mut [u8]),
    /// Values (n_layers, ctx_len, kv_dim) i8 as bytes, scales (n_layers, ctx_len) f32.
    I8 { values: &'a mut [u8], scales: &'a mut [f32] },
}

/// Shape of one cache, to find rows in a [`Store`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub ctx_len: usize,
    pub kv_dim: usize,
    pub head_size: usize,
}

impl Dims {
    /// Index of row `(layer, slot)`'s first value.
    fn row(&self, layer: usize, slot: usize) -> usize {
        (layer * self.ctx_len + slot) * self.kv_dim
    }
}

impl Store<'_> {
    /// Writes `x` (kv_dim, f32) as row `(layer, slot)`, converting or quantizing the whole row.
    pub(crate) fn write(&mut self, d: Dims, layer: usize, slot: usize, x: &[f32]) -> Result<(), SessionError> {
        let at = d.row(layer, slot);
        let n = d.kv_dim;
        match self {
            Store::F32(c) => c.get_mut(at..at + n).ok_or(SessionError::Internal)?.copy_from_slice(&x[..n]),
            Store::F16(c) => {
                let row = c.get_mut(at * 2..(at + n) * 2).ok_or(SessionError::Internal)?; // (kv_dim × 2 bytes)
                for (b, &v) in row.chunks_exact_mut(2).zip(x) {
                    b.copy_from_slice(&f16::from_f32(v).to_le_bytes());
                }
            }
            Store::I8 { values, scales } => {
                let row = values.get_mut(at..at + n).ok_or(SessionError::Internal)?; // (kv_dim)
                let scale = scales.get_mut(layer * d.ctx_len + slot).ok_or(SessionError::Internal)?;
                *scale = quantize_i8(&x[..n], row);
            }
        }
        Ok(())
    }

    /// score[slot] = q · K[layer, slot, head] for `slot in 0..scores.len()` (unscaled by √head_size).
    ///
    /// `q_for(slot)` picks the query (head_size) used for that slot (window mode
    /// rotates the query differently for attention-sink slots).
    pub(crate) fn scores<'q>(
        &self,
        d: Dims,
        layer: usize,
        kv_head: usize,
        scores: &mut [f32],
        q_for: impl Fn(usize) -> &'q [f32],
    ) {
        let hs = d.head_size;
        // Start of (layer, slot)'s head row.
        let at = |slot: usize| d.row(layer, slot) + kv_head * hs;
        // One loop per dtype, so the per-slot work has no dispatch.
        match self {
            Store::F32(c) => {
                // The layer's rows (slots, kv_dim), walked without per-slot bounds checks.
                let rows = c[d.row(layer, 0)..d.row(layer, scores.len())].chunks_exact(d.kv_dim);
                for (slot, (score, row)) in scores.iter_mut().zip(rows).enumerate() {
                    *score = crate::kernels::f32::dot(q_for(slot), &row[kv_head * hs..(kv_head + 1) * hs]);
                }
            }
            Store::F16(c) => {
                for (slot, score) in scores.iter_mut().enumerate() {
                    let at = at(slot);
                    let mut acc = 0.0f32;
                    for (&qv, b) in q_for(slot).iter().zip(c[at * 2..(at + hs) * 2].chunks_exact(2)) {
                        acc += qv * f16::from_le_bytes([b[0], b[1]]).to_f32();
                    }
                    *score = acc;
                }
            }
            Store::I8 { values, scales } => {
                for (slot, score) in scores.iter_mut().enumerate() {
                    let at = at(slot);
                    let mut acc = 0.0f32;
                    for (&qv, &kv) in q_for(slot).iter().zip(&values[at..at + hs]) {
                        acc += qv * f32::from(kv as i8);
                    }
                    *score = acc * scales[at / d.kv_dim];
                }
            }
        }
    }

    /// out (head_size) = Σ_slot weights[slot] · V[layer, slot, head], slots in index order.
    pub(crate) fn mix(&self, d: Dims, layer: usize, kv_head: usize, weights: &[f32], out: &mut [f32]) {
        let hs = d.head_size;
        let at = |slot: usize| d.row(layer, slot) + kv_head * hs;
        out.fill(0.0);
        match self {
            Store::F32(c) => {
                let rows = c[d.row(layer, 0)..d.row(layer, weights.len())].chunks_exact(d.kv_dim);
                for (&a, row) in weights.iter().zip(rows) {
                    for (o, &v) in out.iter_mut().zip(&row[kv_head * hs..(kv_head + 1) * hs]) {
                        *o += a * v;
                    }
                }
            }
            Store::F16(c) => {
                for (slot, &a) in weights.iter().enumerate() {
                    let at = at(slot);
                    for (o, b) in out.iter_mut().zip(c[at * 2..(at + hs) * 2].chunks_exact(2)) {
                        *o += a * f16::from_le_bytes([b[0], b[1]]).to_f32();
                    }
                }
            }
            Store::I8 { values, scales } => {
                for (slot, &a) in weights.iter().enumerate() {
                    let at = at(slot);
                    // The row's scale folds into the weight once per slot.
                    let a = a * scales[at / d.kv_dim];
                    for (o, &v) in out.iter_mut().zip(&values[at..at + hs]) {
                        *o += a * f32::from(v as i8);
                    }
                }
            }
        }
    }
}

/// Quantizes `x` (one cache row) into `q` (same length, i8 as bytes); returns the scale.
pub fn quantize_i8(x: &[f32], q: &mut [u8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, &v| m.max(libm::fabsf(v)));
    let scale = amax / 127.0;
    // A zero (or non-finite) row stores zeros with scale 0 rather than dividing by it.
    let inv = if scale > 0.0 && scale.is_finite() { 1.0 / scale } else { 0.0 };
    for (o, &v) in q.iter_mut().zip(x) {
        // `as` saturates (and maps NaN to 0), so the clamp is only for clarity.
        *o = (libm::roundf(v * inv).clamp(-127.0, 127.0) as i8) as u8;
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
