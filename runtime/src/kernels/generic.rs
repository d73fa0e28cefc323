//! The portable implementations of the kernel interfaces in [`super`]: plain
//! Rust loops in the documented orders, the reference every ISA variant equals
//! bit for bit (and what runs where no variant exists).

use crate::scalar::{exp_at_most_zero, exp_branch_free};

use super::BlockSums;

/// The block sums as plain integer loops over the activation pairs (what a host
/// compiler vectorizes).
#[derive(Debug)]
pub struct Portable;

impl BlockSums for Portable {
    // Index loops over the fixed-size arrays (no bounds checks remain): a
    // size-optimized build keeps no iterator adapters to call per block.
    #[inline(always)]
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        let mut acc = 0i32;
        for i in 0..8 {
            let (quad, pair) = (4 * i, 2 * i);
            // Pair order: word 0 holds elements 0 and 2, word 1 holds 1 and 3.
            acc += i32::from(w[quad] as i8) * low(x[pair])
                + i32::from(w[quad + 2] as i8) * high(x[pair])
                + i32::from(w[quad + 1] as i8) * low(x[pair + 1])
                + i32::from(w[quad + 3] as i8) * high(x[pair + 1]);
        }
        acc
    }

    #[inline(always)]
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        let mut acc = 0i32;
        for i in 0..4 {
            let (quad, lo, hi) = (4 * i, 2 * i, 8 + 2 * i);
            // Low nibbles are elements 0..16, high nibbles 16..32, each group in pair order.
            let (a, b, c, d) = (
                i32::from(nibbles[quad]),
                i32::from(nibbles[quad + 1]),
                i32::from(nibbles[quad + 2]),
                i32::from(nibbles[quad + 3]),
            );
            acc +=
                (a & 15) * low(x[lo]) + (c & 15) * high(x[lo]) + (b & 15) * low(x[lo + 1]) + (d & 15) * high(x[lo + 1]);
            acc +=
                (a >> 4) * low(x[hi]) + (c >> 4) * high(x[hi]) + (b >> 4) * low(x[hi + 1]) + (d >> 4) * high(x[hi + 1]);
        }
        acc
    }

    #[inline(always)]
    fn q4_halves(nibbles: &[u8; 16], x: &[u32; 16], _x_sum: i32) -> (i32, i32) {
        let (x_lo, x_hi) = x.split_at(8);
        let (mut lo_acc, mut hi_acc) = (0i32, 0i32);
        for ((quad, lo), hi) in nibbles.chunks_exact(4).zip(x_lo.chunks_exact(2)).zip(x_hi.chunks_exact(2)) {
            let n = |i: usize, shift: u32| i32::from((quad[i] >> shift) & 15) - 8;
            lo_acc += n(0, 0) * low(lo[0]) + n(2, 0) * high(lo[0]) + n(1, 0) * low(lo[1]) + n(3, 0) * high(lo[1]);
            hi_acc += n(0, 4) * low(hi[0]) + n(2, 4) * high(hi[0]) + n(1, 4) * low(hi[1]) + n(3, 4) * high(hi[1]);
        }
        (lo_acc, hi_acc)
    }
}

/// The low i16 half of a pair word, widened.
#[inline(always)]
fn low(word: u32) -> i32 {
    i32::from(word as u16 as i16)
}

/// The high i16 half of a pair word, widened.
#[inline(always)]
fn high(word: u32) -> i32 {
    i32::from((word >> 16) as u16 as i16)
}

/// [`super::scores_f32`] as a plain loop: each slot's head dot product left to
/// right from 0.0, divided by `sqrt_head`, the maximum taken as `if v > max`.
#[inline(always)]
pub fn scores_f32(
    q: &[f32],
    rows: &[f32],
    stride: usize,
    offset: usize,
    sqrt_head: f32,
    max_in: f32,
    out: &mut [f32],
) -> f32 {
    let mut max = max_in;
    let head = offset..offset + q.len();
    for (score, row) in out.iter_mut().zip(rows.chunks_exact(stride)) {
        let v = super::f32::dot(q, &row[head.clone()]) / sqrt_head;
        *score = v;
        if v > max {
            max = v;
        }
    }
    max
}

/// [`super::exp_shifted`] in one scalar pass (scalar cores).
#[inline]
pub fn exp_shifted(x: &mut [f32], max: f32) -> f32 {
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = exp_at_most_zero(*v - max);
        sum += *v;
    }
    sum
}

/// [`super::exp_shifted`] as a branch-free pass the compiler vectorizes, then
/// the sum in index order (SIMD hosts; the same bits as [`exp_shifted`]).
#[inline]
pub fn exp_shifted_branch_free(x: &mut [f32], max: f32) -> f32 {
    for v in x.iter_mut() {
        *v = exp_branch_free(*v - max);
    }
    let mut sum = 0.0f32;
    for &v in x.iter() {
        sum += v;
    }
    sum
}

/// `out[i] = (q · K_i[offset..offset + q.len()]) / sqrt_head` for an f16 cache:
/// `rows` holds whole cache rows of `stride` values (2 little-endian bytes each),
/// one per slot; the products summed left to right in f32. Returns the maximum of
/// `max_in` and the scores (NaN scores are skipped).
#[inline(always)]
pub fn scores_f16(
    q: &[f32],
    rows: &[u8],
    stride: usize,
    offset: usize,
    sqrt_head: f32,
    max_in: f32,
    out: &mut [f32],
) -> f32 {
    let mut max = max_in;
    let head = offset * 2..(offset + q.len()) * 2;
    for (score, row) in out.iter_mut().zip(rows.chunks_exact(stride * 2)) {
        let mut acc = 0.0f32;
        for (&qv, b) in q.iter().zip(row[head.clone()].chunks_exact(2)) {
            acc += qv * half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        }
        let v = acc / sqrt_head;
        *score = v;
        if v > max {
            max = v;
        }
    }
    max
}

/// A slot's softmax weight for the value mixes: with `EXP`, computes
/// e = exp(score − max), stores it over the score and adds it to `sum`;
/// without, the score already holds it.
#[inline(always)]
fn weight<const EXP: bool>(score: &mut f32, max: f32, sum: &mut f32) -> f32 {
    if EXP {
        *score = exp_at_most_zero(*score - max);
        *sum += *score;
    }
    *score
}

/// The value mix of an f32 cache over W columns: `out (W) = Σ_slot e(slot) ·
/// rows[slot][col..col + W]`, `rows` whole cache rows of `stride` values, W sums
/// in registers, slots in index order. With `EXP`, e(slot) = exp(scores\[slot\] − max)
/// is computed here, stored back and summed (the sum is returned, else 0);
/// without, `scores` already holds it.
#[inline(always)]
pub fn mix_f32<const W: usize, const EXP: bool>(
    rows: &[f32],
    stride: usize,
    col: usize,
    scores: &mut [f32],
    max: f32,
    out: &mut [f32],
) -> f32 {
    let (mut acc, mut sum) = ([0.0f32; W], 0.0f32);
    for (s, row) in scores.iter_mut().zip(rows.chunks_exact(stride)) {
        let a = weight::<EXP>(s, max, &mut sum);
        for (o, &v) in acc.iter_mut().zip(&row[col..col + W]) {
            *o += a * v;
        }
    }
    out.copy_from_slice(&acc);
    sum
}

/// [`mix_f32`] for an f16 cache (`rows`: whole rows of `stride` little-endian f16 values).
#[inline(always)]
pub fn mix_f16<const W: usize, const EXP: bool>(
    rows: &[u8],
    stride: usize,
    col: usize,
    scores: &mut [f32],
    max: f32,
    out: &mut [f32],
) -> f32 {
    let (mut acc, mut sum) = ([0.0f32; W], 0.0f32);
    for (s, row) in scores.iter_mut().zip(rows.chunks_exact(stride * 2)) {
        let a = weight::<EXP>(s, max, &mut sum);
        for (o, b) in acc.iter_mut().zip(row[col * 2..(col + W) * 2].chunks_exact(2)) {
            *o += a * half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        }
    }
    out.copy_from_slice(&acc);
    sum
}

/// [`mix_f32`] for an i8 cache: `rows` whole rows of `stride` signed bytes,
/// `row_scales` one f32 scale per row (slot), folded into the weight once per slot.
#[inline(always)]
pub fn mix_i8<const W: usize, const EXP: bool>(
    rows: &[u8],
    row_scales: &[f32],
    stride: usize,
    col: usize,
    scores: &mut [f32],
    max: f32,
    out: &mut [f32],
) -> f32 {
    let (mut acc, mut sum) = ([0.0f32; W], 0.0f32);
    for ((s, row), &scale) in scores.iter_mut().zip(rows.chunks_exact(stride)).zip(row_scales) {
        let a = weight::<EXP>(s, max, &mut sum) * scale;
        for (o, &v) in acc.iter_mut().zip(&row[col..col + W]) {
            *o += a * f32::from(v as i8);
        }
    }
    out.copy_from_slice(&acc);
    sum
}
