//! q8_0: blocks of 32 values as an f16 scale and 32 signed bytes (ggml `block_q8_0`).
//!
//! ```text
//! byte  0..2   d    f16 little-endian scale
//! byte  2..34  qs   32 × i8, value[i] = d · qs[i]
//! ```
//!
//! A row of `cols` values is `ceil(cols / 32)` blocks; the last block is padded
//! with zeros (quant 0), so padding contributes exactly nothing to a dot product.
//!
//! The same block holds the quantized *activations* of every quantized matmul:
//! the input vector is quantized once per matvec ([`quantize_row`], stored
//! widened as `q8_act` describes) and each weight row is dotted with it block by block.
//!
//! Accumulation order (docs/ARCHITECTURE.md, numerics contract), for one output row:
//!
//! ```text
//! acc = 0.0f32
//! for block b in 0..nblocks (index order):
//!     sumi = Σ_{i<32} w.qs[i] · x.qs[i]          exact, in i32 (|sumi| ≤ 32·127·127 < 2^24)
//!     acc += (sumi as f32) · (f32(w.d) · f32(x.d))
//! ```
//!
//! The integer sum is exact in any order and converts to f32 exactly, so every
//! implementation that keeps the block order gives bit-identical results.

use half::f16;

use crate::dtype::QK;

pub use crate::dtype::BlockQ8_0;

/// Bytes of one q8_0 block.
pub const BLOCK_BYTES: usize = crate::dtype::Q8_0_BLOCK_BYTES;

/// Quantizes up to 32 values (missing ones are zero) into one block at `out[..34]`,
/// exactly as ggml `quantize_row_q8_0_ref`: `d = max|x| / 127`, `q = round(x / d)`
/// (half away from zero), using the f32 `d` for the quants and storing it as f16.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let x = &x[..x.len().min(QK)];
    let amax = crate::scalar::max_abs(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut block = BlockQ8_0 { d: f16::from_f32(d).to_le_bytes(), qs: [0; QK] };
    for (q, &v) in block.qs.iter_mut().zip(x) {
        // |v · id| ≤ 127 up to rounding; the clamp keeps an overshoot in range (rounding
        // then stays in range, and clamping first gives what rounding first would).
        *q = crate::scalar::round_half_away((v * id).clamp(-127.0, 127.0)) as i8;
    }
    block.write(out);
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
    for (chunk, b) in out.chunks_mut(QK).zip(BlockQ8_0::slice(bytes)) {
        // Cortex-M55: a whole block with a finite scale in MVE lanes (the same products).
        #[cfg(microlm_mve)]
        if let Ok(chunk) = <&mut [f32; QK]>::try_from(&mut *chunk) {
            if super::arm_mve::dequantize_block_q8(b, chunk) {
                continue;
            }
        }
        let d = b.scale();
        for (o, &q) in chunk.iter_mut().zip(&b.qs) {
            *o = d * f32::from(q);
        }
    }
}

/// Dot product of one q8_0 weight row with prepared activations ([`q8_act`](super::q8_act),
/// same block count), in the order documented at the top of this file, with the
/// block sums of [`Isa::best`](super::Isa::best).
#[inline]
pub fn vec_dot(w: &[u8], x: &[u32]) -> f32 {
    let mut out = [0.0f32];
    super::quantized_matvec_on(super::Isa::best(), crate::dtype::DType::Q8_0, w, w.len(), x, &mut out);
    out[0]
}

/// [`vec_dot`] with the integer block sums of `B` (every `B` gives the same bits).
#[inline(always)]
pub fn vec_dot_with<B: super::BlockSums>(w: &[u8], x: &[u32]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in BlockQ8_0::slice(w).iter().zip(super::q8_act::blocks(x)) {
        let sumi = B::q8(bytemuck::cast_ref(&wb.qs), xb.pairs);
        acc += sumi as f32 * (super::f16_to_f32(wb.d) * xb.d);
    }
    acc
}

/// Scalar reference for [`vec_dot`]: the same contract written with block
/// structs and f32 arithmetic on the quants (exact below 2^24), for tests and
/// for checking optimized kernels.
pub fn vec_dot_ref(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in BlockQ8_0::slice(w).iter().zip(BlockQ8_0::slice(x)) {
        let mut sum = 0.0f32;
        for (&a, &b) in wb.qs.iter().zip(&xb.qs) {
            sum += f32::from(a) * f32::from(b);
        }
        acc += sum * (wb.scale() * xb.scale());
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantize(x: &[f32]) -> std::vec::Vec<u8> {
        let mut out = std::vec![0u8; x.len().div_ceil(QK) * BLOCK_BYTES];
        quantize_row(x, &mut out);
        out
    }

    #[test]
    fn layout_is_scale_then_quants() {
        let mut x = [0.0f32; QK];
        x[0] = 1.0;
        x[5] = -0.5;
        let b = quantize(&x);
        assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), f16::from_f32(1.0 / 127.0).to_f32());
        assert_eq!(b[2] as i8, 127);
        assert_eq!(b[2 + 5] as i8, -64); // -63.5 rounds away from zero
        assert!(b[3..].iter().enumerate().all(|(i, &q)| i == 4 || q == 0));
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let b = quantize(&[0.0; 7]);
        assert_eq!(b, std::vec![0u8; BLOCK_BYTES]);
    }

    // Round to nearest: error ≤ half a step of amax / 127 (plus the f16 rounding of d).
    crate::kernels::quant_tests!(super, crate::format::DType::Q8_0, 0.5 / 127.0);
}
