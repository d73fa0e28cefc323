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
//! widened as `act` describes) and each weight row is dotted with it block by block.
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

use super::QK;

/// Bytes of one q8_0 block.
pub const BLOCK_BYTES: usize = 34;

/// One q8_0 block, as laid out in the file (no padding, alignment 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale, binary16 little-endian.
    pub d: [u8; 2],
    /// Quants: value i = d · qs[i].
    pub qs: [i8; QK],
}

// The struct is the documented layout: scale first, then 32 quants, 34 bytes.
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == BLOCK_BYTES);
const _: () = assert!(BLOCK_BYTES == 2 + QK);

impl BlockQ8_0 {
    /// Reads a block from the first [`BLOCK_BYTES`] of `b` (`None` when shorter).
    pub fn read(b: &[u8]) -> Option<BlockQ8_0> {
        let b: &[u8; BLOCK_BYTES] = b.get(..BLOCK_BYTES)?.try_into().ok()?;
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(&b[2..]) {
            *q = v as i8;
        }
        Some(BlockQ8_0 { d: [b[0], b[1]], qs })
    }

    /// Writes the block into the first [`BLOCK_BYTES`] of `out` (nothing when shorter).
    pub fn write(&self, out: &mut [u8]) {
        let Some(out) = out.get_mut(..BLOCK_BYTES) else { return };
        out[..2].copy_from_slice(&self.d);
        for (o, &q) in out[2..].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
    }

    /// The scale as f32.
    pub fn scale(&self) -> f32 {
        f16::from_le_bytes(self.d).to_f32()
    }
}

/// Quantizes up to 32 values (missing ones are zero) into one block at `out[..34]`,
/// exactly as ggml `quantize_row_q8_0_ref`: `d = max|x| / 127`, `q = round(x / d)`
/// (half away from zero), using the f32 `d` for the quants and storing it as f16.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let x = &x[..x.len().min(QK)];
    let amax = crate::math::max_abs(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut block = BlockQ8_0 { d: f16::from_f32(d).to_le_bytes(), qs: [0; QK] };
    for (q, &v) in block.qs.iter_mut().zip(x) {
        // |v · id| ≤ 127 up to rounding; the clamp keeps an overshoot in range (rounding
        // then stays in range, and clamping first gives what rounding first would).
        *q = crate::math::round_half_away((v * id).clamp(-127.0, 127.0)) as i8;
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
    for (chunk, b) in out.chunks_mut(QK).zip(bytes.chunks_exact(BLOCK_BYTES)) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        for (o, &q) in chunk.iter_mut().zip(&b[2..]) {
            *o = d * f32::from(q as i8);
        }
    }
}

/// Dot product of one q8_0 weight row with prepared activations (`act`, same
/// block count), in the order documented at the top of this file, with this
/// target's block sums.
#[inline]
pub fn vec_dot(w: &[u8], x: &[u32]) -> f32 {
    vec_dot_with::<super::Native>(w, x)
}

/// [`vec_dot`] with the integer block sums of `B` (every `B` gives the same bits).
#[inline(always)]
pub fn vec_dot_with<B: super::BlockSums>(w: &[u8], x: &[u32]) -> f32 {
    super::row_dot::<BLOCK_BYTES>(w, x, |qs, xb| qs.try_into().map_or(0, |qs| B::q8(qs, xb.pairs)))
}

/// Scalar reference for [`vec_dot`]: the same contract written with block
/// structs and f32 arithmetic on the quants (exact below 2^24), for tests and
/// for checking optimized kernels.
pub fn vec_dot_ref(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(BLOCK_BYTES).zip(x.chunks_exact(BLOCK_BYTES)) {
        let (Some(wb), Some(xb)) = (BlockQ8_0::read(wb), BlockQ8_0::read(xb)) else { break };
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
