//! q4_16: q4_0's 4-bit quants with one f16 scale per 16 values, stored as blocks
//! of 32 values (not a ggml type; microlm format version 3).
//!
//! ```text
//! byte  0..2   d[0]  f16 little-endian scale of elements 0..16
//! byte  2..4   d[1]  f16 little-endian scale of elements 16..32
//! byte  4..20  qs    16 bytes; byte j holds element j in its low nibble and
//!                    element j + 16 in its high nibble (q4_0's order);
//!                    value = d[i / 16] · (nibble − 8)
//! ```
//!
//! 20 bytes per 32 values: 5 bits per value, against q4_0's 4.5 and q8_0's 8.5.
//! Each half of a block is one 16-value group with its own scale, so a block
//! lines up with one q8_0 activation block and every instruction set's
//! [`BlockSums`](super::BlockSums) serve it unchanged. A row of `cols` values is
//! `ceil(cols / 32)` blocks; padding elements are nibble 8 (value 0).
//!
//! Accumulation order (docs/ARCHITECTURE.md, numerics contract), for one output row:
//!
//! ```text
//! acc = 0.0f32
//! for block b in 0..nblocks (index order):
//!     lo = Σ_{j<16} (lo(qs[j]) − 8) · x.qs[j]          exact, in i32
//!     hi = Σ_{j<16} (hi(qs[j]) − 8) · x.qs[j + 16]     exact, in i32
//!     acc += (lo as f32) · (f32(w.d[0]) · f32(x.d))
//!     acc += (hi as f32) · (f32(w.d[1]) · f32(x.d))
//! ```
//!
//! `|lo|, |hi| ≤ 16 · 8 · 127 < 2^24`: exact in any order and as f32, so kernels
//! that keep the block and half order are bit-identical.

use half::f16;

use super::q8_0;
use crate::dtype::{QK, QK4_16};

pub use crate::dtype::BlockQ4_16;

/// Bytes of one q4_16 block.
pub const BLOCK_BYTES: usize = crate::dtype::Q4_16_BLOCK_BYTES;

/// Packs 32 quants in 0..=15 (element order) into a block with scales `d` (elements 0..16, 16..32).
pub fn pack(d: [f32; 2], nibbles: &[u8; QK], out: &mut [u8]) {
    let mut block =
        BlockQ4_16 { d: [f16::from_f32(d[0]).to_le_bytes(), f16::from_f32(d[1]).to_le_bytes()], qs: [0; QK / 2] };
    for (j, q) in block.qs.iter_mut().enumerate() {
        *q = (nibbles[j] & 0x0f) | (nibbles[j + QK / 2] << 4);
    }
    block.write(out);
}

/// Quantizes up to 32 values (missing ones are zero) into one block at `out[..20]`,
/// each 16-value half by q4_0's round-to-nearest rule (ggml `quantize_row_q4_0_ref`
/// on 16 values): the value of largest magnitude maps to quant −8, `d = max / −8`,
/// `q = min(15, trunc(x/d + 8.5))`.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let x = &x[..x.len().min(QK)];
    let mut nibbles = [8u8; QK];
    let mut d = [0.0f32; 2];
    for (h, half) in x.chunks(QK4_16).enumerate() {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in half {
            if amax < libm::fabsf(v) {
                amax = libm::fabsf(v);
                max = v;
            }
        }
        d[h] = max / -8.0;
        let id = if d[h] != 0.0 { 1.0 / d[h] } else { 0.0 };
        for (n, &v) in nibbles[h * QK4_16..].iter_mut().zip(half) {
            // As q4_0: v·id lies in [-8, 8]; the clamp keeps NaN and the +8 edge in range.
            *n = ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        }
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
    for (chunk, b) in out.chunks_mut(QK).zip(BlockQ4_16::slice(bytes)) {
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = b.scale(i) * b.quant(i) as f32;
        }
    }
}

/// Dot product of one q4_16 weight row with prepared activations ([`q8_act`](super::q8_act),
/// same block count), in the order documented at the top of this file, with the
/// block sums of [`Isa::best`](super::Isa::best).
#[inline]
pub fn vec_dot(w: &[u8], x: &[u32]) -> f32 {
    let mut out = [0.0f32];
    super::quantized_matvec_on(super::Isa::best(), crate::dtype::DType::Q4_16, w, w.len(), x, &mut out);
    out[0]
}

/// [`vec_dot`] with the integer block sums of `B` (every `B` gives the same bits):
/// each block's two half sums from [`BlockSums::q4_halves`](super::BlockSums::q4_halves).
#[inline(always)]
pub fn vec_dot_with<B: super::BlockSums>(w: &[u8], x: &[u32]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in BlockQ4_16::slice(w).iter().zip(super::q8_act::blocks(x)) {
        let (lo, hi) = B::q4_halves(&wb.qs, xb.pairs, xb.sum);
        acc += lo as f32 * (super::f16_to_f32(wb.d[0]) * xb.d);
        acc += hi as f32 * (super::f16_to_f32(wb.d[1]) * xb.d);
    }
    acc
}

/// Scalar reference for [`vec_dot`]: the same contract written with block
/// structs, element order and f32 arithmetic on the quants (exact below 2^24).
pub fn vec_dot_ref(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in BlockQ4_16::slice(w).iter().zip(q8_0::BlockQ8_0::slice(x)) {
        for h in 0..2 {
            let mut sum = 0.0f32;
            for i in h * QK4_16..(h + 1) * QK4_16 {
                sum += wb.quant(i) as f32 * f32::from(xb.qs[i]);
            }
            acc += sum * (wb.scale(h * QK4_16) * xb.scale());
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_have_their_own_scales() {
        // Elements 0..16 in [-8, 7.5] (scale 1), 16..32 a tenth of that (scale 0.1).
        let x: std::vec::Vec<f32> =
            (0..32).map(|i| if i < 16 { i as f32 - 8.0 } else { (i as f32 - 24.0) * 0.1 }).collect();
        let mut b = [0u8; BLOCK_BYTES];
        quantize_block(&x, &mut b);
        let block = BlockQ4_16::read(&b).unwrap();
        assert_eq!((block.scale(0), block.scale(16)), (1.0, f16::from_f32(0.1).to_f32()));
        // Element 0 (-8) → nibble 0 low in byte 4; element 16 (-0.8) → nibble 0 high in byte 4.
        assert_eq!(b[4], 0x00);
        let mut y = [0.0f32; 32];
        dequantize_row(&b, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 0.1 * 0.5 + 1e-3 || (a - b).abs() <= 0.5 + 1e-6 && a.abs() >= 1.0, "{a} {b}");
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

    // As q4_0 within each half: error ≤ amax / 8 of the half, so of the block.
    crate::kernels::quant_tests!(super, crate::format::DType::Q4_16, 1.0 / 8.0);
}
