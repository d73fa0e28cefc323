//! Activations prepared for the quantized kernels.
//!
//! A quantized matvec quantizes its input once to q8_0 blocks, exactly as
//! [`q8_0::quantize_block`] (the numerics contract is stated on q8_0 blocks),
//! and stores each block widened for the block dot products, so no row of the
//! matrix repeats that work. One block is [`BLOCK_WORDS`] 32-bit words:
//!
//! ```text
//! word 0       d     the f16 scale of the q8_0 block, widened to f32 (bits)
//! word 1       sum   Σ of the 32 quants, i32 (q4_0 subtracts 8 · sum)
//! word 2..18   qs    the 32 quants as i16 pairs in pair order: word 2 + 2g holds
//!                    elements 4g (low half) and 4g + 2 (high half), word 3 + 2g
//!                    holds 4g + 1 and 4g + 3
//! ```
//!
//! Pair order is what SXTB16 makes of a word of four weight bytes: bytes 0 and
//! 2, then (rotated by 8) bytes 1 and 3, so each SMLAD multiplies matching
//! elements. Other targets read the same words as 32 i16 in that order.

use half::f16;

use super::{q8_0, QK};

/// 32-bit words per prepared block: scale, quant sum and 16 words of i16 pairs.
pub const BLOCK_WORDS: usize = 2 + QK / 2;

/// Words of prepared activations for an input of `cols` values.
pub fn words(cols: usize) -> Option<usize> {
    cols.div_ceil(QK).checked_mul(BLOCK_WORDS)
}

/// Index in element order of the value stored at pair-order position `i` (an involution).
pub const fn element_of(i: usize) -> usize {
    match i % 4 {
        1 => i + 1,
        2 => i - 1,
        _ => i,
    }
}

/// One prepared block, borrowed from the scratch words.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    /// Scale of the block (the q8_0 f16 scale, widened).
    pub d: f32,
    /// Σ of the 32 quants.
    pub sum: i32,
    /// Quants as i16 pairs in pair order (16 words).
    pub pairs: &'a [u32; QK / 2],
}

impl<'a> Block<'a> {
    /// Views the block at the start of `words` (at least [`BLOCK_WORDS`] long).
    #[inline(always)]
    pub fn view(words: &'a [u32; BLOCK_WORDS]) -> Block<'a> {
        let (head, pairs) = words.split_at(2);
        let pairs: &[u32; QK / 2] = pairs.try_into().unwrap_or(&[0; QK / 2]);
        Block { d: f32::from_bits(head[0]), sum: head[1] as i32, pairs }
    }

    /// Quant at pair-order position `i` (0..32).
    #[inline(always)]
    pub fn quant(&self, i: usize) -> i32 {
        let word = self.pairs[i / 2];
        i32::from(if i.is_multiple_of(2) { word as u16 as i16 } else { (word >> 16) as u16 as i16 })
    }
}

/// Iterates over the prepared blocks in `words`.
#[inline(always)]
pub fn blocks(words: &[u32]) -> impl Iterator<Item = Block<'_>> {
    words.chunks_exact(BLOCK_WORDS).map(|w| Block::view(w.try_into().unwrap_or(&[0; BLOCK_WORDS])))
}

/// Stores one q8_0 block (34 bytes) prepared into `out` ([`BLOCK_WORDS`] words).
pub fn prepare_block(q8: &[u8], out: &mut [u32]) {
    let (Some(q8), Some(out)) = (q8.get(..q8_0::BLOCK_BYTES), out.get_mut(..BLOCK_WORDS)) else { return };
    let qs = &q8[2..];
    out[0] = f16::from_le_bytes([q8[0], q8[1]]).to_f32().to_bits();
    out[1] = qs.iter().map(|&q| i32::from(q as i8)).sum::<i32>() as u32;
    for (pair, quad) in out[2..].chunks_exact_mut(2).zip(qs.chunks_exact(4)) {
        let half = |b: u8| u32::from(i16::from(b as i8) as u16);
        pair[0] = half(quad[0]) | half(quad[2]) << 16;
        pair[1] = half(quad[1]) | half(quad[3]) << 16;
    }
}

/// Quantizes `x` to q8_0 and prepares it into `out` (`words(x.len())` words;
/// a block whose values run out is zero-padded, as in the weights).
pub fn prepare_row(x: &[f32], out: &mut [u32]) {
    let mut q8 = [0u8; q8_0::BLOCK_BYTES];
    for (chunk, block) in x.chunks(QK).zip(out.chunks_exact_mut(BLOCK_WORDS)) {
        // Hard-float Cortex-M with DSP: the FPU quantizer where it applies (the same words).
        #[cfg(all(microlm_dsp, microlm_fpu))]
        {
            let mut padded: [f32; QK];
            // A whole block is read in place; the last, partial one from a zero-padded copy
            // (zeroed only then: clearing it for every block cost more than the quantizer's loads).
            let values: &[f32; QK] = match <&[f32; QK]>::try_from(chunk) {
                Ok(whole) => whole,
                Err(_) => {
                    padded = [0.0f32; QK];
                    padded[..chunk.len()].copy_from_slice(chunk);
                    &padded
                }
            };
            if let Ok(block) = <&mut [u32; BLOCK_WORDS]>::try_from(&mut *block) {
                // MVE (Cortex-M55): vector lanes where its flush to zero cannot matter.
                #[cfg(microlm_mve)]
                if super::arm_mve::prepare_block(values, block) {
                    continue;
                }
                if super::arm_fpu::prepare_block(values, block) {
                    continue;
                }
            }
        }
        q8_0::quantize_block(chunk, &mut q8);
        prepare_block(&q8, block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_order_puts_sxtb16_partners_together() {
        let mut q8 = [0u8; q8_0::BLOCK_BYTES];
        q8[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for (i, b) in q8[2..].iter_mut().enumerate() {
            *b = (i as i8 - 16) as u8;
        }
        let mut w = [0u32; BLOCK_WORDS];
        prepare_block(&q8, &mut w);
        let b = Block::view(&w);
        assert_eq!(b.d, 0.5);
        assert_eq!(b.sum, (0..32).map(|i| i - 16).sum::<i32>());
        for i in 0..QK {
            assert_eq!(b.quant(i), element_of(i) as i32 - 16, "position {i}");
            assert_eq!(element_of(element_of(i)), i);
        }
        // Word 2 holds elements 0 and 2; word 3 holds 1 and 3.
        assert_eq!(w[2], u32::from(-16i16 as u16) | (u32::from(-14i16 as u16) << 16));
        assert_eq!(w[3], u32::from(-15i16 as u16) | (u32::from(-13i16 as u16) << 16));
    }

    #[test]
    fn prepare_row_equals_q8_0_blocks() {
        let x: std::vec::Vec<f32> = (0..70).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.17).collect();
        let mut q8 = std::vec![0u8; 3 * q8_0::BLOCK_BYTES];
        q8_0::quantize_row(&x, &mut q8);
        let mut words = std::vec![0u32; super::words(x.len()).unwrap()];
        prepare_row(&x, &mut words);
        for (b, q) in blocks(&words).zip(q8.chunks_exact(q8_0::BLOCK_BYTES)) {
            let q8b = q8_0::BlockQ8_0::read(q).unwrap();
            assert_eq!(b.d, q8b.scale());
            for i in 0..QK {
                assert_eq!(b.quant(i), i32::from(q8b.qs[element_of(i)]));
            }
        }
    }
}
