//! aarch64 NEON block sums for the quantized matvecs (NEON is part of every
//! aarch64 target, so there is nothing to detect).
//!
//! Per block the weights are reordered into `q8_act` pair order with one table
//! lookup, widened to i16 and multiplied with the prepared activations by
//! widening multiply-accumulates into i32 lanes, then summed across. Integer
//! sums are exact, so they equal [`Portable`](super::Portable)'s; the f32 part
//! is the shared row loop of `q8_0` / `q4_0`.
//!
//! Row blocking: the f32 matvec (`matvec_f32`) runs sixteen rows at once and
//! the q8_0 matvec (`matvec_q8_0_neon`) eight, one row per f32 lane, so the
//! per-row sequential sums are independent dependency chains instead of one
//! latency-bound chain per row. Each lane still adds its row's terms one at a
//! time in the portable order, with separate multiplies and adds (FMUL, FADD;
//! no fused FMLA), so the results equal the portable kernels bit for bit
//! (tested against them below, under QEMU user mode on x86 hosts).
#![allow(unsafe_code)]

use core::arch::aarch64::{
    float32x4_t, int16x8_t, int32x4_t, uint8x16_t, vaddq_f32, vaddvq_s32, vandq_u8, vcvtq_f32_s32, vdupq_n_f32,
    vdupq_n_s32, vdupq_n_u8, vget_high_s16, vget_low_s16, vget_low_s8, vget_low_u8, vld1q_f32, vld1q_s16, vld1q_u8,
    vmlal_s16, vmovl_high_s8, vmovl_high_u8, vmovl_s8, vmovl_u8, vmull_s16, vmulq_f32, vpaddq_s32, vqtbl1q_u8,
    vreinterpretq_f32_f64, vreinterpretq_f64_f32, vreinterpretq_s16_u16, vreinterpretq_s8_u8, vshrq_n_u8, vst1q_f32,
    vtrn1q_f32, vtrn1q_f64, vtrn2q_f32, vtrn2q_f64,
};

use super::{f16_to_f32, q8_0, q8_act, quantized_matvec, BlockSums};
use crate::dtype::DType;

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

/// The 4 × 4 transpose of `r` (vector i of the result holds element i of every input).
#[target_feature(enable = "neon")]
#[inline]
fn transpose4(r: [float32x4_t; 4]) -> [float32x4_t; 4] {
    let t0 = vreinterpretq_f64_f32(vtrn1q_f32(r[0], r[1]));
    let t1 = vreinterpretq_f64_f32(vtrn2q_f32(r[0], r[1]));
    let t2 = vreinterpretq_f64_f32(vtrn1q_f32(r[2], r[3]));
    let t3 = vreinterpretq_f64_f32(vtrn2q_f32(r[2], r[3]));
    [
        vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)),
        vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)),
    ]
}

/// `out (4·G rows) = w (4·G rows, cols) · x (cols)` for f32 rows, `G` groups of
/// four rows at once, per row one sequential sum from 0.0, left to right.
#[target_feature(enable = "neon")]
#[inline]
fn rows_f32<const G: usize>(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    let body = cols / 4 * 4;
    if w.len() < 4 * G * cols || out.len() < 4 * G {
        return;
    }
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); G];
    let mut j = 0;
    while j < body {
        // SAFETY: j + 4 <= body <= cols = x.len().
        let xv = unsafe { vld1q_f32(xp.add(j)) };
        for (g, acc) in acc.iter_mut().enumerate() {
            let mut p = [vdupq_n_f32(0.0); 4];
            for (r, p) in p.iter_mut().enumerate() {
                // SAFETY: row 4g + r < 4G and j + 4 <= cols, so the 4 values lie inside w (checked above).
                *p = vmulq_f32(unsafe { vld1q_f32(wp.add((4 * g + r) * cols + j)) }, xv);
            }
            for pk in transpose4(p) {
                *acc = vaddq_f32(*acc, pk);
            }
        }
        j += 4;
    }
    for (g, acc) in acc.iter().enumerate() {
        let mut lanes = [0.0f32; 4];
        // SAFETY: writes the 4 values of the local array.
        unsafe { vst1q_f32(lanes.as_mut_ptr(), *acc) };
        for (r, mut a) in lanes.into_iter().enumerate() {
            let row = &w[(4 * g + r) * cols..][..cols];
            for (&wv, &xv) in row[body..].iter().zip(&x[body..]) {
                a += wv * xv;
            }
            out[4 * g + r] = a;
        }
    }
}

/// [`super::f32::matvec`] with NEON when `w` is f32-aligned (always for a parsed
/// model), sixteen then four rows at a time: returns whether it ran.
pub(crate) fn matvec_f32(w: &[u8], x: &[f32], out: &mut [f32]) -> bool {
    let Ok(w) = bytemuck::try_cast_slice::<u8, f32>(w) else { return false };
    let cols = x.len();
    if cols == 0 {
        return false;
    }
    let rows = out.len().min(w.len() / cols);
    let out = &mut out[..rows];
    let mut done = 0;
    while done + 16 <= out.len() {
        // SAFETY: NEON is enabled on every aarch64 target (asserted above).
        unsafe { rows_f32::<4>(&w[done * cols..], x, &mut out[done..]) };
        done += 16;
    }
    while done + 4 <= out.len() {
        // SAFETY: as above.
        unsafe { rows_f32::<1>(&w[done * cols..], x, &mut out[done..]) };
        done += 4;
    }
    for (o, row) in out[done..].iter_mut().zip(w[done * cols..].chunks_exact(cols)) {
        *o = super::f32::dot(row, x);
    }
    true
}

/// One row's q8_0 block quants (32 bytes at `qs`) times the prepared activations,
/// as four i32 lanes of partial sums.
///
/// # Safety
/// `qs` must point to 32 readable bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q8_partials(qs: *const u8, x: [int16x8_t; 4]) -> int32x4_t {
    // SAFETY: the caller guarantees 32 readable bytes.
    let (w0, w1) = unsafe { (&*qs.cast::<[u8; 16]>(), &*qs.add(16).cast::<[u8; 16]>()) };
    let w0 = vreinterpretq_s8_u8(load_pair_order(w0));
    let w1 = vreinterpretq_s8_u8(load_pair_order(w1));
    let (a0, a1, a2, a3) = (vmovl_s8(vget_low_s8(w0)), vmovl_high_s8(w0), vmovl_s8(vget_low_s8(w1)), vmovl_high_s8(w1));
    let acc = vmull_s16(vget_low_s16(a0), vget_low_s16(x[0]));
    let acc = vmlal_s16(acc, vget_high_s16(a0), vget_high_s16(x[0]));
    let acc = vmlal_s16(acc, vget_low_s16(a1), vget_low_s16(x[1]));
    let acc = vmlal_s16(acc, vget_high_s16(a1), vget_high_s16(x[1]));
    let acc = vmlal_s16(acc, vget_low_s16(a2), vget_low_s16(x[2]));
    let acc = vmlal_s16(acc, vget_high_s16(a2), vget_high_s16(x[2]));
    let acc = vmlal_s16(acc, vget_low_s16(a3), vget_low_s16(x[3]));
    vmlal_s16(acc, vget_high_s16(a3), vget_high_s16(x[3]))
}

/// The q8_0 matvec with NEON, eight rows at a time (two f32 vectors, lane = row):
/// per block the rows' exact integer sums, then per row
/// `acc += sumi as f32 · (f32(w.d) · x.d)` in block order (the `q8_0` contract);
/// the last `rows % 8` rows take the one-row loop.
#[target_feature(enable = "neon")]
fn matvec_q8_0_neon(w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    if row_bytes == 0 {
        return out.fill(0.0);
    }
    let nblocks = (row_bytes / q8_0::BLOCK_BYTES).min(xq.len() / q8_act::BLOCK_WORDS);
    for (out8, w8) in out.chunks_exact_mut(8).zip(w.chunks_exact(8 * row_bytes)) {
        let wp = w8.as_ptr();
        let mut acc = [vdupq_n_f32(0.0); 2];
        for (b, xw) in xq.chunks_exact(q8_act::BLOCK_WORDS).take(nblocks).enumerate() {
            let xb = q8_act::Block::view(xw.try_into().unwrap_or(&[0; q8_act::BLOCK_WORDS]));
            let x = [load_x(xb.pairs, 0), load_x(xb.pairs, 1), load_x(xb.pairs, 2), load_x(xb.pairs, 3)];
            let at = b * q8_0::BLOCK_BYTES;
            for (h, acc) in acc.iter_mut().enumerate() {
                let mut s = [vdupq_n_s32(0); 4];
                let mut d = [0.0f32; 4];
                for r in 0..4 {
                    let block = (4 * h + r) * row_bytes + at;
                    // SAFETY: block b < nblocks of row 4h + r < 8 lies inside the 8 rows of `w8`
                    // (34 bytes: the f16 scale, then the 32 quants).
                    unsafe {
                        s[r] = q8_partials(wp.add(block + 2), x);
                        d[r] = f16_to_f32([*wp.add(block), *wp.add(block + 1)]);
                    }
                }
                // Lane r: the sum of the four lanes of s[r].
                let sums = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
                // SAFETY: reads the 4 values of the local array.
                let scale = vmulq_f32(unsafe { vld1q_f32(d.as_ptr()) }, vdupq_n_f32(xb.d));
                // |sumi| < 2^24, so the conversion is exact, as `sumi as f32`.
                *acc = vaddq_f32(*acc, vmulq_f32(vcvtq_f32_s32(sums), scale));
            }
        }
        // SAFETY: writes the 8 values of `out8`, an 8-element chunk.
        unsafe {
            vst1q_f32(out8.as_mut_ptr(), acc[0]);
            vst1q_f32(out8.as_mut_ptr().add(4), acc[1]);
        }
    }
    let done = out.len() / 8 * 8;
    let tail = w.get(done * row_bytes..).unwrap_or(&[]);
    quantized_matvec::<Neon>(DType::Q8_0, tail, row_bytes, xq, &mut out[done..]);
}

/// `out[r] = vec_dot(row r of w, xq)` for q8_0 or q4_0 `dtype` with NEON
/// (q8_0 eight rows at a time; q4_0 one row at a time with the NEON block sums).
pub(crate) fn matvec(dtype: DType, w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    if dtype == DType::Q8_0 {
        // SAFETY: NEON is enabled on every aarch64 target (asserted above).
        unsafe { matvec_q8_0_neon(w, row_bytes, xq, out) }
    } else {
        quantized_matvec::<Neon>(dtype, w, row_bytes, xq, out)
    }
}

#[cfg(test)]
mod tests {
    use std::vec;

    use super::*;
    use crate::kernels::test_data::{bits, f32_matvec_matches, q8_0_case};
    use crate::kernels::Portable;

    const ROWS: [usize; 10] = [1, 3, 4, 5, 7, 8, 9, 16, 17, 33];
    const COLS: [usize; 9] = [1, 3, 4, 5, 31, 32, 64, 100, 288];

    #[test]
    fn f32_row_blocks_equal_the_portable_loop_bit_for_bit() {
        for &rows in &ROWS {
            for &cols in &COLS {
                f32_matvec_matches(rows, cols, matvec_f32);
            }
        }
    }

    #[test]
    fn q8_0_row_blocks_equal_the_portable_loop_bit_for_bit() {
        for &rows in &ROWS {
            for &cols in &COLS {
                let (data, row_bytes, x8, xq) = q8_0_case(rows, cols);
                let (mut fast, mut slow) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
                matvec(DType::Q8_0, &data, row_bytes, &xq, &mut fast);
                quantized_matvec::<Portable>(DType::Q8_0, &data, row_bytes, &xq, &mut slow);
                assert_eq!(bits(&fast), bits(&slow), "rows {rows} cols {cols}");
                for (o, row) in fast.iter().zip(data.chunks_exact(row_bytes)) {
                    assert_eq!(o.to_bits(), q8_0::vec_dot_ref(row, &x8).to_bits(), "rows {rows} cols {cols}");
                }
            }
        }
    }
}
