//! q4_0: blocks of 32 values as an f16 scale and 16 bytes of nibbles (ggml `block_q4_0`).
//!
//! ```text
//! byte  0..2   d    f16 little-endian scale
//! byte  2..18  qs   16 bytes; byte j holds element j in its low nibble and
//!                   element j + 16 in its high nibble; value = d · (nibble − 8)
//! ```
//!
//! A row of `cols` values is `ceil(cols / 32)` blocks; padding elements are
//! stored as nibble 8 (value 0), so they contribute exactly nothing.
//!
//! The matmul input is quantized once per matvec to q8_0 blocks
//! (`q8_0::quantize_row`). Accumulation order (docs/ARCHITECTURE.md, numerics contract), for one
//! output row:
//!
//! ```text
//! acc = 0.0f32
//! for block b in 0..nblocks (index order):
//!     sumi = Σ_{j<16} (lo(qs[j]) − 8) · x.qs[j] + (hi(qs[j]) − 8) · x.qs[j + 16]   exact, in i32
//!     acc += (sumi as f32) · (f32(w.d) · f32(x.d))
//! ```
//!
//! `|sumi| ≤ 32 · 8 · 127 < 2^24`, so the integer sum is exact in any order and
//! converts to f32 exactly: kernels that keep the block order are bit-identical.

use half::f16;

use super::q8_0;
use crate::dtype::QK;

pub use crate::dtype::BlockQ4_0;

/// Bytes of one q4_0 block.
pub const BLOCK_BYTES: usize = crate::dtype::Q4_0_BLOCK_BYTES;

/// Packs 32 quants in 0..=15 (element order) into a block with scale `d`.
pub fn pack(d: f32, nibbles: &[u8; QK], out: &mut [u8]) {
    let mut block = BlockQ4_0 { d: f16::from_f32(d).to_le_bytes(), qs: [0; QK / 2] };
    for (j, q) in block.qs.iter_mut().enumerate() {
        *q = (nibbles[j] & 0x0f) | (nibbles[j + QK / 2] << 4);
    }
    block.write(out);
}

/// Quantizes up to 32 values (missing ones are zero) into one block at `out[..18]`,
/// exactly as ggml `quantize_row_q4_0_ref` (round to nearest): the value of
/// largest magnitude maps to quant −8, `d = max / −8`, `q = min(15, trunc(x/d + 8.5))`.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let x = &x[..x.len().min(QK)];
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < libm::fabsf(v) {
            amax = libm::fabsf(v);
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut nibbles = [8u8; QK];
    for (n, &v) in nibbles.iter_mut().zip(x) {
        // v·id lies in [-8, 8]: +8.5 then truncation rounds to nearest; the clamp
        // keeps NaN (→ 0 → nibble 0) and the +8 edge in range.
        *n = ((v * id + 8.5) as i32).clamp(0, 15) as u8;
    }
    pack(d, &nibbles, out);
}

/// Quantizes `x` (n values) into `ceil(n / 32)` blocks at the start of `out`.
/// Writes as many whole blocks as fit.
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    for (chunk, block) in x.chunks(QK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block(chunk, block);
    }
}

/// Dequantizes the blocks in `bytes` into `out` (`out.len()` values; padding is dropped).
pub fn dequantize_row(bytes: &[u8], out: &mut [f32]) {
    for (chunk, b) in out.chunks_mut(QK).zip(BlockQ4_0::slice(bytes)) {
        let d = b.scale();
        for (i, o) in chunk.iter_mut().enumerate() {
            let byte = b.qs[i % (QK / 2)];
            let nibble = if i < QK / 2 { byte & 0x0f } else { byte >> 4 };
            *o = d * (f32::from(nibble) - 8.0);
        }
    }
}

/// Dot product of one q4_0 weight row with prepared activations ([`q8_act`](super::q8_act),
/// same block count), in the order documented at the top of this file:
/// Σ (nibble − 8)·x computed exactly as Σ nibble·x − 8·Σx, with the block sums of
/// [`Isa::best`](super::Isa::best).
#[inline]
pub fn vec_dot(w: &[u8], x: &[u32]) -> f32 {
    let mut out = [0.0f32];
    super::quantized_matvec_on(super::Isa::best(), crate::dtype::DType::Q4_0, w, w.len(), x, &mut out);
    out[0]
}

/// [`vec_dot`] with the integer block sums of `B` (every `B` gives the same bits).
#[inline(always)]
pub fn vec_dot_with<B: super::BlockSums>(w: &[u8], x: &[u32]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in BlockQ4_0::slice(w).iter().zip(super::q8_act::blocks(x)) {
        let sumi = B::q4(&wb.qs, xb.pairs) - 8 * xb.sum;
        acc += sumi as f32 * (super::f16_to_f32(wb.d) * xb.d);
    }
    acc
}

/// Scalar reference for [`vec_dot`]: the same contract written with block
/// structs, element order and f32 arithmetic on the quants (exact below 2^24).
pub fn vec_dot_ref(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in BlockQ4_0::slice(w).iter().zip(q8_0::BlockQ8_0::slice(x)) {
        let mut sum = 0.0f32;
        for (i, &b) in xb.qs.iter().enumerate() {
            sum += wb.quant(i) as f32 * f32::from(b);
        }
        acc += sum * (wb.scale() * xb.scale());
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibble_order_is_ggml() {
        // Element i is (i − 16) / 2: the largest magnitude is element 0 (−8), so d = −8 / −8 = 1.
        let x: std::vec::Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        let block = BlockQ4_0::read(&b).unwrap();
        assert_eq!(block.scale(), 1.0);
        // Element 0 (-8) → nibble 0 in the low half of byte 0; element 16 (0) → nibble 8 in its high half.
        assert_eq!(b[2], 0x80);
        // Element 15 (-0.5) → -0.5 rounds to nibble 8 (trunc(7.5 + 0.5)); element 31 (7.5) → nibble 15 (clamped).
        assert_eq!(b[2 + 15] & 0x0f, 8);
        assert_eq!(b[2 + 15] >> 4, 15);
        for i in 0..32 {
            assert_eq!(block.quant(i), i32::from(if i < 16 { b[2 + i] & 15 } else { b[2 + i - 16] >> 4 }) - 8);
        }
    }

    #[test]
    fn padding_is_zero_valued() {
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&[1.0, -2.0, 3.0], &mut b);
        let mut out = [9.0f32; QK];
        dequantize_row(&b, &mut out);
        assert!(out[3..].iter().all(|&v| v == 0.0));
    }

    // The value of largest magnitude maps to −8, so its opposite-sign peer may clamp at +7: error ≤ amax / 8.
    crate::kernels::quant_tests!(super, crate::format::DType::Q4_0, 1.0 / 8.0);
}
