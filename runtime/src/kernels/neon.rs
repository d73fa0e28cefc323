//! aarch64 NEON block sums for the quantized matvecs (NEON is part of every
//! aarch64 target, so there is nothing to detect).
//!
//! Per block the weights are reordered into `q8_act` pair order with one table
//! lookup, widened to i16 and multiplied with the prepared activations by
//! widening multiply-accumulates into i32 lanes, then summed across. Integer
//! sums are exact, so they equal [`Portable`](super::Portable)'s; the f32 part
//! is the shared row loop of `q8_0` / `q4_0`.
#![allow(unsafe_code)]

use core::arch::aarch64::{
    int16x8_t, uint8x16_t, vaddvq_s32, vandq_u8, vdupq_n_u8, vget_high_s16, vget_low_s16, vget_low_s8, vget_low_u8,
    vld1q_s16, vld1q_u8, vmlal_s16, vmovl_high_s8, vmovl_high_u8, vmovl_s8, vmovl_u8, vmull_s16, vqtbl1q_u8,
    vreinterpretq_s16_u16, vreinterpretq_s8_u8, vshrq_n_u8,
};

use super::BlockSums;

/// The NEON block sums.
#[derive(Debug)]
pub struct Neon;

/// Byte indices taking each group of four bytes a, b, c, d to a, c, b, d (`q8_act` pair order).
const PAIR_ORDER: [u8; 16] = [0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15];

// Every aarch64 target has NEON; calling the `target_feature(enable = "neon")`
// functions below from the trait methods relies on it.
const _: () = assert!(cfg!(target_feature = "neon"));

/// 16 bytes of `b` reordered into pair order.
#[target_feature(enable = "neon")]
#[inline]
fn load_pair_order(b: &[u8; 16]) -> uint8x16_t {
    // SAFETY: reads the 16 bytes of the borrowed arrays; vld1q has no alignment requirement.
    unsafe { vqtbl1q_u8(vld1q_u8(b.as_ptr()), vld1q_u8(PAIR_ORDER.as_ptr())) }
}

/// Prepared activation i16 values `8k..8k + 8` (words `4k..4k + 4`, k < 4).
#[target_feature(enable = "neon")]
#[inline]
fn load_x(x: &[u32; 16], k: usize) -> int16x8_t {
    let part: &[u32; 4] = x[4 * (k & 3)..][..4].try_into().unwrap_or(&[0; 4]);
    // SAFETY: reads the 16 bytes of `part`, a borrowed [u32; 4] (little-endian: its i16
    // halves in order); vld1q has no alignment requirement beyond the element's.
    unsafe { vld1q_s16(part.as_ptr().cast()) }
}

/// Σ over 16 lanes of `a[i] · x[i]` for eight-lane i16 halves, exact in i32.
#[target_feature(enable = "neon")]
#[inline]
fn dot16(a_lo: int16x8_t, a_hi: int16x8_t, x_lo: int16x8_t, x_hi: int16x8_t) -> i32 {
    let acc = vmull_s16(vget_low_s16(a_lo), vget_low_s16(x_lo));
    let acc = vmlal_s16(acc, vget_high_s16(a_lo), vget_high_s16(x_lo));
    let acc = vmlal_s16(acc, vget_low_s16(a_hi), vget_low_s16(x_hi));
    let acc = vmlal_s16(acc, vget_high_s16(a_hi), vget_high_s16(x_hi));
    vaddvq_s32(acc)
}

/// [`BlockSums::q8`] with NEON.
#[target_feature(enable = "neon")]
#[inline]
fn block_q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
    let (w0, w1) = w.split_at(16);
    let w0 = vreinterpretq_s8_u8(load_pair_order(w0.try_into().unwrap_or(&[0; 16])));
    let w1 = vreinterpretq_s8_u8(load_pair_order(w1.try_into().unwrap_or(&[0; 16])));
    let first = dot16(vmovl_s8(vget_low_s8(w0)), vmovl_high_s8(w0), load_x(x, 0), load_x(x, 1));
    first + dot16(vmovl_s8(vget_low_s8(w1)), vmovl_high_s8(w1), load_x(x, 2), load_x(x, 3))
}

/// [`BlockSums::q4`] with NEON.
#[target_feature(enable = "neon")]
#[inline]
fn block_q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
    let q = load_pair_order(nibbles);
    // Elements 0..16 in the low nibbles, 16..32 in the high ones, all in pair order.
    let (lo, hi) = (vandq_u8(q, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(q));
    let (l0, l1) = (vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(lo))), vreinterpretq_s16_u16(vmovl_high_u8(lo)));
    let (h0, h1) = (vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(hi))), vreinterpretq_s16_u16(vmovl_high_u8(hi)));
    dot16(l0, l1, load_x(x, 0), load_x(x, 1)) + dot16(h0, h1, load_x(x, 2), load_x(x, 3))
}

impl BlockSums for Neon {
    #[inline(always)]
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        // SAFETY: NEON is enabled on every aarch64 target (asserted above).
        unsafe { block_q8(w, x) }
    }

    #[inline(always)]
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        // SAFETY: as above.
        unsafe { block_q4(nibbles, x) }
    }
}
