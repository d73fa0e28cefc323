//! The checks every kernel implementation must pass, as plain `no_std`
//! functions (no heap, fixed-size buffers on the stack, under 8 KiB), so the
//! host tests and a device firmware run the same suite:
//!
//! - [`block_sums`]`(isa)`: the q8_0 and q4_0 block sums of `isa`, through the
//!   quantized matvec, equal the scalar integer sums (extreme bytes included);
//! - [`block_sums_with`]`::<B>()`: the same for a [`BlockSums`] type directly
//!   (the DSP instruction emulation on hosts, the MVE asm `arm_mve::Mve` on Cortex-M55);
//! - [`matvecs`]`(isa)`: q8_0 and q4_0 matvecs on odd shapes bit-identical to the
//!   scalar references `q8_0::vec_dot_ref` / `q4_0::vec_dot_ref` / `q4_16::vec_dot_ref`;
//! - [`f32_matvecs`]: f32 matvecs equal one sequential sum per row;
//! - [`quantizer`]: activation quantization equals the portable quantizer;
//! - [`moderate`] and [`rope`]: the MVE guard test equals its definition, and
//!   RoPE's rotation as this target runs it equals the scalar expression;
//! - [`norms`]: RMSNorm's sum of squares, scaling and the residual add with it;
//! - [`dequantize`]: q8_0 rows back to f32 (the embedding lookup);
//! - [`attention`]: the attention and exp kernels this target selects,
//!   bit-identical to the portable loops;
//! - [`run_all`]: all of the above for every [`Isa`] this CPU runs.
//!
//! The host instantiates them per implementation with the `kernel_suite!` test
//! macro; a firmware calls [`run_all`] and reports the [`Failure`].

use super::generic;
use super::{q4_0, q4_16, q8_0, q8_act, BlockSums, Isa, Matrix, QK};
use crate::dtype::DType;

/// The first check that failed: its name and the case number within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Failure {
    /// Which check (`"block_sums.q8"`, `"matvecs.q4_0"`, ...).
    pub check: &'static str,
    /// The case within the check (a seed or shape index).
    pub case: u32,
    /// The instruction set under test (`None` for [`attention`] and [`block_sums_with`]).
    pub isa: Option<Isa>,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "kernel check {} failed at case {} ({:?})", self.check, self.case, self.isa)
    }
}

impl core::error::Error for Failure {}

/// Fails `check` at `case` unless `ok`.
fn ensure(ok: bool, check: &'static str, case: u32, isa: Option<Isa>) -> Result<(), Failure> {
    if ok {
        Ok(())
    } else {
        Err(Failure { check, case, isa })
    }
}

/// xorshift32 bytes, six in thirteen of them extremes (0x80, 0x7f, 0x00, 0xff, 0x0f, 0xf0).
pub fn bytes(out: &mut [u8], seed: u32) {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    for (i, b) in out.iter_mut().enumerate() {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        *b = match (i + seed as usize) % 13 {
            0 => 0x80,
            1 => 0x7f,
            2 => 0x00,
            3 => 0xff,
            4 => 0x0f,
            5 => 0xf0,
            _ => s as u8,
        };
    }
}

/// Values in [-1, 1) with an outlier (×6) every 37th (xorshift64*).
pub fn values(out: &mut [f32], seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (i, v) in out.iter_mut().enumerate() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let u = ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32;
        *v = (2.0 * u - 1.0) * if i % 37 == 5 { 6.0 } else { 1.0 };
    }
}

/// 32 signed bytes as one prepared activation block with scale 1.
fn prepared(x: &[u8; QK]) -> [u32; q8_act::BLOCK_WORDS] {
    let mut q8 = [0u8; q8_0::BLOCK_BYTES];
    q8[..2].copy_from_slice(&half::f16::ONE.to_le_bytes());
    q8[2..].copy_from_slice(x);
    let mut w = [0u32; q8_act::BLOCK_WORDS];
    q8_act::prepare_block(&q8, &mut w);
    w
}

/// Σ w\[i\]·x\[i\] over 32 signed bytes each.
fn scalar_q8(w: &[u8; QK], x: &[u8; QK]) -> i32 {
    w.iter().zip(x).map(|(&a, &b)| i32::from(a as i8) * i32::from(b as i8)).sum()
}

/// Σ nibble_i·x\[i\] for 16 nibble bytes (element i low, 16+i high) and 32 signed bytes.
fn scalar_q4(q: &[u8], x: &[u8; QK]) -> i32 {
    (0..QK).map(|i| i32::from(if i < 16 { q[i] & 15 } else { q[i - 16] >> 4 }) * i32::from(x[i] as i8)).sum()
}

/// The q4_16 half sums, offset included: (Σ_{j<16} (lo_j − 8)·x_j, Σ_{j<16} (hi_j − 8)·x_{16+j}).
fn scalar_q4_halves(q: &[u8], x: &[u8; QK]) -> (i32, i32) {
    let half = |h: usize| -> i32 {
        (0..16).map(|j| (i32::from((q[j] >> (4 * h)) & 15) - 8) * i32::from(x[16 * h + j] as i8)).sum()
    };
    (half(0), half(1))
}

/// Seeds per block-sum check (fewer under Miri, which interprets every step).
const SEEDS: u32 = if cfg!(miri) { 40 } else { 600 };

/// The (w, x) byte pairs of the block-sum checks: pseudo-random ones, then every
/// pair of all-equal extreme blocks.
fn case(seed: u32) -> ([u8; QK], [u8; QK]) {
    let (mut w, mut x) = ([0u8; QK], [0u8; QK]);
    if seed < SEEDS {
        bytes(&mut w, seed);
        bytes(&mut x, seed + 50_000);
    } else {
        let e = (seed - SEEDS) as usize;
        w = [[0x80u8, 0x7f, 0x00, 0xff, 0x0f, 0xf0][e / 4 % 6]; QK];
        x = [[0x80u8, 0x7f, 0x81, 0x01][e % 4]; QK];
    }
    (w, x)
}

/// Block-sum cases in all: the seeds and 6 × 4 extreme pairs.
const CASES: u32 = SEEDS + 24;

/// The block sums of `B` equal the scalar integer sums.
pub fn block_sums_with<B: BlockSums>() -> Result<(), Failure> {
    for c in 0..CASES {
        let (w, x) = case(c);
        let xp = prepared(&x);
        let pairs: &[u32; QK / 2] = xp[2..].try_into().unwrap_or(&[0; QK / 2]);
        let nibbles: &[u8; QK / 2] = w[..QK / 2].try_into().unwrap_or(&[0; QK / 2]);
        ensure(B::q8(&w, pairs) == scalar_q8(&w, &x), "block_sums.q8", c, None)?;
        ensure(B::q4(nibbles, pairs) == scalar_q4(nibbles, &x), "block_sums.q4", c, None)?;
        let sum: i32 = x.iter().map(|&b| i32::from(b as i8)).sum();
        ensure(B::q4_halves(nibbles, pairs, sum) == scalar_q4_halves(nibbles, &x), "block_sums.q4_halves", c, None)?;
    }
    Ok(())
}

/// The block sums of `isa` (seen through one-block matvecs with unit scales, so the
/// output is the integer sum) equal the scalar integer sums.
pub fn block_sums(isa: Isa) -> Result<(), Failure> {
    for c in 0..CASES {
        let (w, x) = case(c);
        let xq = prepared(&x);
        let mut row8 = [0u8; q8_0::BLOCK_BYTES];
        q8_0::BlockQ8_0 { d: half::f16::ONE.to_le_bytes(), qs: bytemuck::cast(w) }.write(&mut row8);
        let mut row4 = [0u8; q4_0::BLOCK_BYTES];
        let mut qs = [0u8; QK / 2];
        qs.copy_from_slice(&w[..QK / 2]);
        q4_0::BlockQ4_0 { d: half::f16::ONE.to_le_bytes(), qs }.write(&mut row4);
        let (mut o8, mut o4) = ([f32::NAN], [f32::NAN]);
        super::quantized_matvec_on(isa, DType::Q8_0, &row8, row8.len(), &xq, &mut o8);
        super::quantized_matvec_on(isa, DType::Q4_0, &row4, row4.len(), &xq, &mut o4);
        let sum: i32 = x.iter().map(|&b| i32::from(b as i8)).sum();
        ensure(o8[0] == scalar_q8(&w, &x) as f32, "block_sums.q8", c, Some(isa))?;
        // Two rows at once (the second reversed), as the paired q8_0 kernels run them.
        let mut wr = w;
        wr.reverse();
        let mut rows8 = [0u8; 2 * q8_0::BLOCK_BYTES];
        rows8[..q8_0::BLOCK_BYTES].copy_from_slice(&row8);
        q8_0::BlockQ8_0 { d: half::f16::ONE.to_le_bytes(), qs: bytemuck::cast(wr) }
            .write(&mut rows8[q8_0::BLOCK_BYTES..]);
        let mut o2 = [f32::NAN; 2];
        super::quantized_matvec_on(isa, DType::Q8_0, &rows8, row8.len(), &xq, &mut o2);
        let want = [scalar_q8(&w, &x) as f32, scalar_q8(&wr, &x) as f32];
        ensure(o2 == want, "block_sums.q8_rows2", c, Some(isa))?;
        ensure(o4[0] == (scalar_q4(&qs, &x) - 8 * sum) as f32, "block_sums.q4", c, Some(isa))?;
    }
    Ok(())
}

/// Largest matvec shape of [`matvecs`]: rows and columns.
const MAX_ROWS: usize = 5;
const MAX_COLS: usize = 300;
const MAX_BLOCKS: usize = MAX_COLS.div_ceil(QK);

/// q8_0, q4_0 and q4_16 matvecs with the block sums of `isa` on odd shapes (1 to 5
/// rows; 1 to 300 columns) are bit-identical to the scalar references.
pub fn matvecs(isa: Isa) -> Result<(), Failure> {
    const COLS: [usize; 9] = [1, 31, 32, 33, 64, 100, 172, 288, 300];
    let mut w = [0.0f32; MAX_COLS];
    let mut x = [0.0f32; MAX_COLS];
    let mut x8 = [0u8; MAX_BLOCKS * q8_0::BLOCK_BYTES];
    let mut xq = [0u32; MAX_BLOCKS * q8_act::BLOCK_WORDS];
    let mut data = [0u8; MAX_ROWS * MAX_BLOCKS * q8_0::BLOCK_BYTES];
    for (s, &cols) in COLS.iter().enumerate() {
        for rows in [1, 2, 4, MAX_ROWS] {
            let case = (s * 8 + rows) as u32;
            let x = &mut x[..cols];
            values(x, 1000 + u64::from(case));
            let nb = cols.div_ceil(QK);
            q8_0::quantize_row(x, &mut x8[..nb * q8_0::BLOCK_BYTES]);
            for (dtype, bb) in
                [(DType::Q8_0, q8_0::BLOCK_BYTES), (DType::Q4_0, q4_0::BLOCK_BYTES), (DType::Q4_16, q4_16::BLOCK_BYTES)]
            {
                let row_bytes = nb * bb;
                let data = &mut data[..rows * row_bytes];
                for (r, out) in data.chunks_exact_mut(row_bytes).enumerate() {
                    let w = &mut w[..cols];
                    values(w, 2000 + u64::from(case) * 8 + r as u64);
                    match dtype {
                        DType::Q8_0 => q8_0::quantize_row(w, out),
                        DType::Q4_16 => q4_16::quantize_row(w, out),
                        _ => q4_0::quantize_row(w, out),
                    }
                }
                let m = Matrix { dtype, rows, cols, data };
                let mut out = [f32::NAN; MAX_ROWS];
                let name = match dtype {
                    DType::Q8_0 => "matvecs.q8_0",
                    DType::Q4_16 => "matvecs.q4_16",
                    _ => "matvecs.q4_0",
                };
                ensure(m.matvec_on(isa, x, &mut out[..rows], &mut xq).is_ok(), name, case, Some(isa))?;
                for (o, row) in out.iter().zip(data.chunks_exact(row_bytes)) {
                    let x8 = &x8[..nb * q8_0::BLOCK_BYTES];
                    let want = match dtype {
                        DType::Q8_0 => q8_0::vec_dot_ref(row, x8),
                        DType::Q4_16 => q4_16::vec_dot_ref(row, x8),
                        _ => q4_0::vec_dot_ref(row, x8),
                    };
                    ensure(o.to_bits() == want.to_bits(), name, case, Some(isa))?;
                }
                // The prepared-word path too (`quantized_matvec_on`, what `vec_dot` takes; on
                // MVE the chunked loops whose row sums continue from `out`).
                if dtype != DType::Q4_16 {
                    q8_act::prepare_row(x, &mut xq[..nb * q8_act::BLOCK_WORDS]);
                    let mut out2 = [f32::NAN; MAX_ROWS];
                    super::quantized_matvec_on(isa, dtype, data, row_bytes, &xq, &mut out2[..rows]);
                    let same = out2[..rows].iter().zip(&out[..rows]).all(|(a, b)| a.to_bits() == b.to_bits());
                    ensure(same, "matvecs.prepared", case, Some(isa))?;
                }
            }
        }
    }
    Ok(())
}

/// [`super::mix_f32_head8`] over `scores` and the contiguous 8-value rows `values`
/// equals the portable formula (weights, sum and columns in slot order), with no
/// floor (−∞) and with the least score as the floor (which lets MVE skip the range
/// checks, and sum in lanes when the scores lie within 34.6 of the maximum).
fn mix_matches(scores: &[f32], values: &[f32], case: u32) -> Result<(), Failure> {
    let n = scores.len();
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let mut e = [0.0f32; 40];
    e[..n].copy_from_slice(scores);
    generic::exp_shifted(&mut e[..n], max);
    let (mut acc, mut sum) = ([0.0f32; 8], 0.0f32);
    for (&e, row) in e[..n].iter().zip(values.chunks_exact(8)) {
        sum += e;
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += e * v;
        }
    }
    let least = scores.iter().fold(f32::INFINITY, |m, &v| if v < m { v } else { m });
    for floor in [f32::NEG_INFINITY, least] {
        let (mut scratch, mut out) = ([0.0f32; 40], [0.0f32; 8]);
        scratch[..n].copy_from_slice(scores);
        let moderate = super::moderate(values);
        if super::mix_f32_head8(&mut scratch[..n], max, floor, values, moderate, &mut out).is_some() {
            let ok = out.iter().zip(&acc).all(|(o, a)| o.to_bits() == (a / sum).to_bits());
            ensure(ok, "attention.mix8", case, None)?;
        }
    }
    Ok(())
}

/// The attention and exp kernels this target selects ([`super::scores_f32`],
/// [`super::exp_shifted`], [`super::mix_f32_head8`], [`super::sqrt`]) equal the portable loops bit
/// for bit, on 8-wide heads in contiguous rows (the f32 cache's head-major
/// layout) and in wider rows, on other head sizes, with scores that leave
/// exp's fast range (scores compare as values: a sum of zero products may be
/// −0.0 on one side, see [`super::scores_f32`]).
pub fn attention() -> Result<(), Failure> {
    const SLOTS: usize = 40;
    const STRIDE: usize = 24;
    let mut rows = [0.0f32; SLOTS * STRIDE];
    let mut q = [0.0f32; 16];
    let same = |x: f32, y: f32| x == y || (x.is_nan() && y.is_nan());
    for case in 0..10u32 {
        values(&mut rows, 3000 + u64::from(case));
        values(&mut q, 4000 + u64::from(case));
        let n = [1, 2, 7, 8, 33, SLOTS, 3, SLOTS, 37, 12][case as usize];
        let tiny = f32::from_bits((127 - 50) << 23); // 2^-50, the least moderate magnitude
        match case {
            // A zero query head and an all-zero row: every sum is a zero.
            6 => {
                q[..8].fill(0.0);
                rows[8..16].fill(0.0);
            }
            // Moderate values at the bottom of the range (products near 2^-100, sums
            // that cancel), and values near the top (products near 2^100).
            7 => {
                q.iter_mut().for_each(|v| *v = if *v < 0.0 { -tiny } else { tiny * 1.5 });
                rows.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 3 == 0 { -tiny } else { tiny });
            }
            8 => {
                q.iter_mut().for_each(|v| *v *= 1.0e14);
                rows.iter_mut().for_each(|v| *v *= 1.0e14);
            }
            // Not moderate: subnormal keys, whose products with a large query are normal
            // (vector lanes would flush the keys to zero).
            9 => {
                q.iter_mut().for_each(|v| *v *= 1.0e14);
                rows[16..64].iter_mut().for_each(|v| *v *= 1.0e-40);
            }
            _ => {}
        }
        for (stride, hs, offset) in
            [(8usize, 8usize, 0usize), (STRIDE, 8, 0), (STRIDE, 8, 16), (STRIDE, 16, 8), (STRIDE, 5, 3)]
        {
            let rows = &rows[..n * stride];
            let (mut a, mut b) = ([0.0f32; SLOTS], [0.0f32; SLOTS]);
            let moderate = super::moderate(rows);
            let mut floor = f32::INFINITY;
            let ninf = f32::NEG_INFINITY;
            let ma = super::scores_f32(&q[..hs], rows, stride, offset, 2.5, ninf, &mut a[..n], moderate, &mut floor);
            let mb = generic::scores_f32(&q[..hs], rows, stride, offset, 2.5, ninf, &mut b[..n]);
            ensure(same(ma, mb), "attention.scores_max", case, None)?;
            ensure(a.iter().zip(&b).all(|(&x, &y)| same(x, y)), "attention.scores", case, None)?;
            // The floor is −∞ or the least score.
            let least = b[..n].iter().fold(f32::INFINITY, |m, &v| if v < m { v } else { m });
            ensure(floor == ninf || floor == least, "attention.scores_floor", case, None)?;
        }
        // Scores with some far below the maximum (outside exp's fast range, some just
        // below its lower end) and a NaN-free max.
        let mut s = [0.0f32; SLOTS];
        values(&mut s[..n], 5000 + u64::from(case));
        for (i, v) in s[..n].iter_mut().enumerate() {
            *v *= match i % 5 {
                3 => 40.0,
                _ => 3.0,
            };
        }
        if case == 7 {
            // Scores around the smallest normals: differences and exponents of subnormals.
            s[..n].iter_mut().for_each(|v| *v *= 1.0e-38);
        }
        let top = s[..n].iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        if n > 4 {
            // Around exp's fast-range edge (-87.33) and the n = -126 edge below it (-87.68).
            s[1] = top - 87.5;
            s[2] = top - 87.7;
            s[4] = top - 87.329;
            // Far outside, where the vector exponent bits would wrap.
            s[3] = top - 150.0;
        }
        let max = s[..n].iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        let (mut e1, mut e2) = (s, s);
        let (s1, s2) = (super::exp_shifted(&mut e1[..n], max), generic::exp_shifted(&mut e2[..n], max));
        ensure(s1.to_bits() == s2.to_bits(), "attention.exp_sum", case, None)?;
        ensure(e1.iter().zip(&e2).all(|(x, y)| x.to_bits() == y.to_bits()), "attention.exp", case, None)?;
        // The fused value mix over contiguous 8-value rows against the portable formula,
        // as they are and with the scores 4 times closer (all e within MVE's vector range).
        mix_matches(&s[..n], &rows[..n * 8], case)?;
        let narrow = s.map(|v| v * 0.25);
        mix_matches(&narrow[..n], &rows[..n * 8], case)?;
    }
    // Values that cancel to zero, then one more product: a product of a far e (e^-55 ≈
    // 2^-79) and a moderate value is subnormal (scores spread beyond 34.6), as is one of
    // e = 1 and a subnormal value (values not moderate); vector lanes would flush both.
    let tiny = f32::from_bits((127 - 50) << 23);
    let sub = f32::from_bits(0x0000_1234);
    for (case, third_score, third_value) in [(20, -55.0f32, tiny), (21, 0.0, sub)] {
        let scores = [0.5f32, 0.5, 0.5 + third_score, -0.25, 0.5, 0.125];
        let mut values = [0.0f32; 48];
        for (row, v) in values.chunks_exact_mut(8).zip([tiny, -tiny, third_value, 0.0, 1.0, -1.0]) {
            row.fill(v);
        }
        mix_matches(&scores[..4], &values[..32], case)?;
        mix_matches(&scores, &values, case)?;
    }
    // The square root (RMSNorm, 1/√head_size) against libm, on every exponent.
    let mut x = 1.0e-45f32;
    let mut step = 0u32;
    while x.is_finite() {
        for v in [x, x * 1.37, x * 1.999_999, 0.0, -0.0, f32::INFINITY] {
            ensure(super::sqrt(v).to_bits() == libm::sqrtf(v).to_bits(), "attention.sqrt", step, None)?;
        }
        x *= 2.0;
        step += 1;
    }
    Ok(())
}

/// The sampler's argmax loop this target selects ([`super::argmax8`]) equals the
/// portable `if v > best` scan from `x[0]`: the first of equal maxima, NaNs never
/// chosen (one first stays), −0.0 against +0.0, and the finiteness of what it covers.
pub fn argmax() -> Result<(), Failure> {
    let mut x = [0.0f32; 77];
    for case in 0..14u32 {
        values(&mut x, 9000 + u64::from(case));
        let n = [8, 16, 77, 64, 24, 40, 9, 72, 16, 40, 16, 24, 72, 77][case as usize];
        match case {
            3 => (x[5], x[40]) = (9.0, 9.0),
            4 => x[3] = f32::NAN,
            5 => x[17] = f32::INFINITY,
            6 => x[..9].copy_from_slice(&[-0.0, 0.0, -0.0, 0.0, -1.0, -0.0, 0.0, -2.0, 0.0]),
            7 => x[0] = f32::NAN,
            8 => x[9] = f32::NEG_INFINITY,
            // All negative; then positive subnormals with a tie (MVE's integer lanes take
            // them); a negative NaN among positive values; the maximum in a quad's last lane.
            9 => x.iter_mut().for_each(|v| *v = -libm::fabsf(*v) - 0.5),
            10 => {
                for (i, v) in x[..16].iter_mut().enumerate() {
                    *v = f32::from_bits([3, 9, 1, 12, 7, 12, 0, 5][i % 8] + i as u32 / 8);
                }
            }
            11 => x[7] = f32::from_bits(0xffc0_0000),
            12 => x[71] = 99.0,
            13 => (x[2], x[3]) = (f32::from_bits(0x7f80_0001), 50.0),
            _ => {}
        }
        let Some((i, v, finite)) = super::argmax8(&x[..n]) else { continue };
        let m = n / 8 * 8;
        let (mut best, mut best_v) = (0, x[0]);
        for (j, &w) in x[..m].iter().enumerate() {
            if w > best_v {
                (best, best_v) = (j, w);
            }
        }
        let all_finite = x[..m].iter().all(|w| w.is_finite());
        ensure(i == best && v.to_bits() == best_v.to_bits() && finite == all_finite, "argmax", case, None)?;
    }
    Ok(())
}

/// [`super::moderate`] (integer lanes on MVE) equals its definition, `v == 0` or
/// 2^-50 ≤ |v| ≤ 2^50 for every value, on 0 to 13 values with one edge value
/// (each bound, its neighbours, ±0, subnormals, ±∞, NaN) at each position.
pub fn moderate() -> Result<(), Failure> {
    let (lo, hi) = (f32::from_bits((127 - 50) << 23), f32::from_bits((127 + 50) << 23));
    let edges = [
        0.0,
        -0.0,
        lo,
        -lo,
        f32::from_bits(lo.to_bits() - 1),
        hi,
        -hi,
        f32::from_bits(hi.to_bits() + 1),
        f32::from_bits(1),
        -f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0xffc0_0001),
    ];
    let mut x = [0.0f32; 13];
    let mut case = 0;
    for n in 0..=x.len() {
        for (e, &edge) in edges.iter().enumerate() {
            for at in 0..n.max(1) {
                case += 1;
                values(&mut x, 9900 + (n * 31 + e) as u64);
                if at < n {
                    x[at] = edge;
                }
                let x = &x[..n];
                let want = x.iter().all(|&v| v == 0.0 || (lo..=hi).contains(&libm::fabsf(v)));
                ensure(super::moderate(x) == want, "moderate", case, None)?;
            }
        }
    }
    Ok(())
}

/// RoPE's pair rotation as this target runs it (`math::rope_rotate`: four pairs a
/// step in MVE lanes where its guard holds) equals `v0·cos − v1·sin`,
/// `v0·sin + v1·cos` per pair, bit for bit, for head sizes 8, 16 and 6, with values
/// and rotations whose products or results are subnormal, tiny or huge values,
/// zeros of both signs, ±∞ and a NaN with a payload.
pub fn rope() -> Result<(), Failure> {
    let (mut q, mut k) = ([0.0f32; 48], [0.0f32; 32]);
    let mut rotation = [0.0f32; 16];
    for case in 0..12u32 {
        let hs = [8, 16, 6][case as usize % 3];
        let (nq, nk) = (hs * (48 / hs), hs * (32 / hs / 2));
        values(&mut q, 9700 + u64::from(case));
        values(&mut k, 9800 + u64::from(case));
        values(&mut rotation, 9750 + u64::from(case));
        let at = (case as usize * 5) % nk;
        match case / 3 {
            // A product below 2^-126 beside a zero (a subnormal result on the scalar FPU),
            // then a subnormal value beside a zero.
            1 => {
                (q[at], q[at ^ 1]) = (f32::from_bits((127 - 70) << 23), 0.0);
                rotation[(at % hs) | 1] = f32::from_bits((127 - 60) << 23);
            }
            2 => (k[at], k[at ^ 1]) = (f32::from_bits(0x0000_0123), 0.0),
            // A NaN with a payload in q, ±0 and a huge value in k, a rotation of exact zeros.
            3 => {
                q[at] = f32::from_bits(0x7fc0_1234);
                (k[0], k[1], k[at]) = (-0.0, 0.0, 3e38);
                (rotation[0], rotation[3]) = (-0.0, 0.0);
            }
            _ => {}
        }
        let rot = &rotation[..hs];
        let want = |v: &[f32], i: usize| {
            let (p, j) = (i / 2 * 2, i % hs / 2 * 2);
            let (v0, v1, c, s) = (v[p], v[p + 1], rot[j], rot[j + 1]);
            if i.is_multiple_of(2) {
                v0 * c - v1 * s
            } else {
                v0 * s + v1 * c
            }
        };
        let (q0, k0) = (q, k);
        crate::math::rope_rotate(&mut q[..nq], &mut k[..nk], rot);
        let ok = (0..nq).all(|i| q[i].to_bits() == want(&q0, i).to_bits())
            && (0..nk).all(|i| k[i].to_bits() == want(&k0, i).to_bits());
        ensure(ok, "rope", case, None)?;
    }
    Ok(())
}

/// RMSNorm's parts as this target runs them (`math::sum_squares`,
/// `math::add_in_place_squares`, `math::rmsnorm_from` and `rmsnorm_in_place_from`: FPU loops of eight on
/// Cortex-M55) equal the scalar expressions bit for bit (`ss += v · v` left to right,
/// `x += d`, `w · (s · x)`), on 0 to 45 values including subnormals, values whose
/// squares or products are subnormal, ±0, ±∞ and a NaN with a payload.
pub fn norms() -> Result<(), Failure> {
    let (mut x, mut d, mut w) = ([0.0f32; 45], [0.0f32; 45], [0.0f32; 45]);
    for case in 0..10u32 {
        let n = [45, 8, 0, 17, 40, 16, 3, 44, 24, 45][case as usize];
        values(&mut x, 9300 + u64::from(case));
        values(&mut d, 9400 + u64::from(case));
        values(&mut w, 9450 + u64::from(case));
        let at = case as usize * 7 % 45;
        match case % 5 {
            1 => (x[at], d[at / 2], w[at / 3]) = (f32::from_bits(0x0000_0321), -1e-30, 1e-30),
            2 => (x[at], x[at / 2]) = (-0.0, 3e-20),
            3 => (d[at], w[at / 2]) = (f32::INFINITY, f32::from_bits(0x7fc0_0abc)),
            4 => x.iter_mut().for_each(|v| *v *= 1e-25),
            _ => {}
        }
        let (x, d, w) = (&mut x[..n], &d[..n], &w[..n]);
        let mut want_ss = 0.0f32;
        for &v in x.iter() {
            want_ss += v * v;
        }
        let mut ok = crate::math::sum_squares(x).to_bits() == want_ss.to_bits();
        let mut want_x = [0.0f32; 45];
        let mut want_ss = 0.0f32;
        for i in 0..n {
            want_x[i] = x[i] + d[i];
            want_ss += want_x[i] * want_x[i];
        }
        let ss = crate::math::add_in_place_squares(x, d);
        ok &= ss.to_bits() == want_ss.to_bits() && (0..n).all(|i| x[i].to_bits() == want_x[i].to_bits());
        let mut out = [0.0f32; 45];
        crate::math::rmsnorm_from(&mut out[..n], x, w, ss, 1e-5);
        let s = 1.0 / crate::kernels::sqrt(ss / n.max(1) as f32 + 1e-5);
        ok &= (0..n).all(|i| out[i].to_bits() == (w[i] * (s * x[i])).to_bits());
        let mut y = [0.0f32; 45];
        y[..n].copy_from_slice(x);
        crate::math::rmsnorm_in_place_from(&mut y[..n], w, ss, 1e-5);
        ok &= (0..n).all(|i| y[i].to_bits() == out[i].to_bits());
        ensure(ok, "norms", case, None)?;
    }
    Ok(())
}

/// q8_0 rows dequantized as this target does it (`q8_0::dequantize_row`: whole blocks
/// in MVE lanes on Cortex-M55) equal `f32(d) · q` per value, bit for bit, with f16
/// scales normal, subnormal, ±0, ±∞ and NaN with a payload, the extreme quants, and a
/// partial last block.
pub fn dequantize() -> Result<(), Failure> {
    const SCALES: [u16; 8] = [0x3c00, 0x0001, 0x8000, 0x7bff, 0xfc00, 0x7e01, 0x2e66, 0x83ff];
    let mut row = [0u8; 3 * q8_0::BLOCK_BYTES];
    let mut quants = [0u8; 3 * QK];
    for case in 0..SCALES.len() as u32 {
        bytes(&mut quants, 9200 + case);
        (quants[5], quants[40]) = (0x80, 0x7f);
        for (b, block) in row.chunks_exact_mut(q8_0::BLOCK_BYTES).enumerate() {
            let d = SCALES[(case as usize + b) % SCALES.len()];
            block[..2].copy_from_slice(&d.to_le_bytes());
            block[2..].copy_from_slice(&quants[b * QK..(b + 1) * QK]);
        }
        let n = 3 * QK - case as usize % 5;
        let mut out = [0.0f32; 3 * QK];
        q8_0::dequantize_row(&row, &mut out[..n]);
        let ok = (0..n).all(|i| {
            let block = &row[i / QK * q8_0::BLOCK_BYTES..];
            let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
            out[i].to_bits() == (d * f32::from(block[2 + i % QK] as i8)).to_bits()
        });
        ensure(ok, "dequantize", case, None)?;
    }
    Ok(())
}

/// SwiGLU as this target runs it (`math::swiglu`: four values a step in an FPU
/// loop on hard-float Cortex-M) equals `v · (1 / (1 + exp(−v))) · u` per value,
/// with values at and beyond both ends of exp's fast range, NaN and ±∞.
pub fn swiglu() -> Result<(), Failure> {
    let (mut gate, mut up) = ([0.0f32; 45], [0.0f32; 45]);
    for case in 0..12u32 {
        values(&mut gate, 9500 + u64::from(case));
        values(&mut up, 9600 + u64::from(case));
        let n = [45, 8, 3, 44, 40, 17, 44, 45, 44, 45, 40, 41][case as usize];
        for (i, g) in gate.iter_mut().enumerate() {
            *g *= 4.0;
            // (Cases 8 on keep every |v| ≤ 87.33, MVE's loop without a test per step.)
            if case < 8 && (i + case as usize) % 9 == 4 {
                // exp(−v) near its fast range's ends: −v from -87.9 to -87.1 and 88.2 to 88.8.
                let k = (i % 5) as f32 / 5.0;
                *g = if i % 2 == 0 { 87.1 + 0.8 * k } else { -88.2 - 0.6 * k };
            }
        }
        if case == 4 {
            (gate[5], gate[6], gate[7], gate[30]) = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -200.0);
        }
        if case == 6 {
            // Subnormal gates (e = 1, v / 2 subnormal), and products that underflow.
            gate.iter_mut().step_by(2).for_each(|g| *g *= 1.0e-39);
            up.iter_mut().skip(1).step_by(3).for_each(|u| *u *= 1.0e-30);
        }
        if case == 7 || case == 9 {
            // Small gates times small ups: subnormal results.
            gate.iter_mut().for_each(|g| *g *= 1.0e-20);
            up.iter_mut().for_each(|u| *u *= 1.0e-19);
        }
        if case == 9 {
            // Subnormal gates, and an up of ±∞.
            (gate[2], gate[9], up[4], up[5]) = (f32::from_bits(5), -f32::from_bits(0x0040_0000), f32::INFINITY, -1e-45);
        }
        if case == 10 {
            // At the bound: ±87.33 (no test per step), and extremes of exp(−v) there.
            (gate[0], gate[7], gate[38]) = (87.33, -87.33, -87.32);
        }
        if case == 11 {
            // Just past the bound (the loop with its test): 87.33's successor, −88.
            (gate[3], gate[20]) = (f32::from_bits(87.33f32.to_bits() + 1), -88.0);
        }
        let mut expected = gate;
        for (g, &u) in expected[..n].iter_mut().zip(&up) {
            let v = *g;
            *g = v * (1.0 / (1.0 + crate::math::exp(-v))) * u;
        }
        let mut got = gate;
        crate::math::swiglu(&mut got[..n], &up[..n]);
        let same = got.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        ensure(same, "swiglu", case, None)?;
    }
    Ok(())
}

/// f32 matvecs as this target runs them (`Matrix::matvec`: four rows at a time
/// on hard-float Cortex-M) equal one left-to-right sum per row (llama2.c
/// `matmul`), on 1 to 9 rows and 1 to 300 columns.
pub fn f32_matvecs() -> Result<(), Failure> {
    const ROWS: usize = 9;
    let mut w = [0.0f32; ROWS * MAX_COLS];
    let mut x = [0.0f32; MAX_COLS];
    for (s, &cols) in [1usize, 7, 8, 9, 64, 172, 300].iter().enumerate() {
        for rows in [1, 3, 4, 5, 8, ROWS] {
            let case = (s * 16 + rows) as u32;
            let (w, x) = (&mut w[..rows * cols], &mut x[..cols]);
            values(w, 7000 + u64::from(case));
            values(x, 8000 + u64::from(case));
            let m = Matrix { dtype: DType::F32, rows, cols, data: bytemuck::cast_slice(w) };
            let mut out = [f32::NAN; ROWS];
            ensure(m.matvec(x, &mut out[..rows], &mut []).is_ok(), "f32_matvecs", case, None)?;
            for (o, row) in out.iter().zip(w.chunks_exact(cols)) {
                let mut acc = 0.0f32;
                for (&a, &b) in row.iter().zip(x.iter()) {
                    acc += a * b;
                }
                ensure(o.to_bits() == acc.to_bits(), "f32_matvecs", case, None)?;
            }
        }
    }
    Ok(())
}

/// A block of 32 activations for the quantizer checks, by case: random, exact
/// ties (d = 1), a tie at the maximum, subnormal and huge scales, zeros, one NaN
/// or infinity, values near k + 0.5 steps.
pub fn quant_block(case: u32) -> [f32; QK] {
    let mut x = [0.0f32; QK];
    values(&mut x, u64::from(case) + 77);
    match case % 8 {
        1 => {
            for (i, v) in x.iter_mut().enumerate() {
                *v = (i as f32 - 16.0) * 2.5 + 0.5;
            }
            x[31] = if case % 16 == 1 { 127.0 } else { -127.0 };
        }
        2 => x[3] = 127.0 * 0.0625 * if case % 16 == 2 { 1.0 } else { -1.0 },
        3 if case % 16 == 3 => x.iter_mut().for_each(|v| *v *= 1e-37),
        // d at 2^-125 (MVE's vector quantizer's lower end) or just below, with the other
        // values subnormal or tiny: a flushed subnormal must round to 0 there too.
        3 => {
            x.iter_mut().for_each(|v| *v *= f32::from_bits(1 << 23)); // 2^-126
            x[case as usize / 16 % 32] = 127.0 * f32::from_bits(2 << 23) * if case % 32 == 11 { 1.0 } else { 0.999 };
        }
        4 => x.iter_mut().for_each(|v| *v *= 3e36),
        5 => x = [0.0; QK],
        6 => x[(case / 8 % 32) as usize] = if case % 16 == 6 { f32::NAN } else { f32::INFINITY },
        7 => x.iter_mut().for_each(|v| *v = libm::roundf(*v * 254.0) / 2.0),
        _ => {}
    }
    x
}

/// Activation quantization as this target runs it (`q8_act::prepare_row`, the FPU
/// quantizer on hard-float Cortex-M with DSP) equals `q8_0::quantize_block` then
/// `q8_act::prepare_block`, word for word, on whole and partial blocks (on MVE also
/// `arm_mve::prepare_row_narrow`, the i8 blocks of its matvec).
pub fn quantizer() -> Result<(), Failure> {
    for case in 0..2000u32 {
        let x = quant_block(case);
        let n = if case % 5 == 4 { 1 + case as usize % 31 } else { QK };
        let mut q8 = [0u8; q8_0::BLOCK_BYTES];
        q8_0::quantize_block(&x[..n], &mut q8);
        let mut want = [0u32; q8_act::BLOCK_WORDS];
        q8_act::prepare_block(&q8, &mut want);
        let mut got = [0u32; q8_act::BLOCK_WORDS];
        q8_act::prepare_row(&x[..n], &mut got);
        ensure(got == want, "quantizer", case, None)?;
        // MVE's matvec quantizes into i8 blocks: the same scale (widened) and quants.
        #[cfg(microlm_mve)]
        {
            let mut narrow = [u32::MAX; q8_act::BLOCK_WORDS];
            super::arm_mve::prepare_row_narrow(&x[..n], &mut narrow);
            let qs: &[u8] = bytemuck::cast_slice(&narrow[1..9]);
            ensure(narrow[0] == want[0] && qs == &q8[2..], "quantizer.narrow", case, None)?;
        }
    }
    Ok(())
}

/// Every check, for every instruction set this CPU runs: what a device test
/// firmware calls (`Ok(())` or the first [`Failure`]).
pub fn run_all() -> Result<(), Failure> {
    block_sums_with::<generic::Portable>()?;
    block_sums_with::<super::arm_dsp::Emulated>()?;
    #[cfg(microlm_mve)]
    block_sums_with::<super::arm_mve::Mve>()?;
    for &isa in Isa::ALL.iter().filter(|isa| isa.available()) {
        block_sums(isa)?;
        matvecs(isa)?;
    }
    quantizer()?;
    f32_matvecs()?;
    argmax()?;
    moderate()?;
    rope()?;
    norms()?;
    dequantize()?;
    swiglu()?;
    attention()
}

/// `kernel_suite!(name, isa)`: the suite as `#[test]`s in a module `name` for one
/// [`Isa`] expression (skipped when the CPU lacks it).
#[cfg(test)]
macro_rules! kernel_suite {
    ($name:ident, $isa:expr) => {
        mod $name {
            use $crate::kernels::suite;

            fn isa() -> Option<$crate::kernels::Isa> {
                let isa = $isa;
                isa.available().then_some(isa)
            }

            #[test]
            fn block_sums() {
                if let Some(isa) = isa() {
                    suite::block_sums(isa).unwrap();
                }
            }

            #[test]
            fn matvecs() {
                if let Some(isa) = isa() {
                    suite::matvecs(isa).unwrap();
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    kernel_suite!(portable, crate::kernels::Isa::Portable);
    #[cfg(target_arch = "x86_64")]
    kernel_suite!(sse41, crate::kernels::Isa::Sse41);
    #[cfg(target_arch = "x86_64")]
    kernel_suite!(avx2, crate::kernels::Isa::Avx2);
    #[cfg(target_arch = "aarch64")]
    kernel_suite!(neon, crate::kernels::Isa::Neon);

    #[test]
    fn portable_block_sums() {
        block_sums_with::<generic::Portable>().unwrap();
    }

    #[test]
    fn dsp_emulation_block_sums() {
        block_sums_with::<crate::kernels::arm_dsp::Emulated>().unwrap();
    }

    #[test]
    fn f32_matvecs_equal_sequential_sums() {
        f32_matvecs().unwrap();
    }

    #[test]
    fn quantizer_equals_portable() {
        quantizer().unwrap();
    }

    #[test]
    fn argmax_kernel() {
        super::argmax().unwrap();
    }

    #[test]
    fn moderate_test() {
        super::moderate().unwrap();
    }

    #[test]
    fn dequantize_kernel() {
        super::dequantize().unwrap();
    }

    #[test]
    fn norms_kernels() {
        super::norms().unwrap();
    }

    #[test]
    fn rope_kernel() {
        super::rope().unwrap();
    }

    #[test]
    fn swiglu_kernel() {
        super::swiglu().unwrap();
    }

    #[test]
    fn attention_kernels() {
        attention().unwrap();
    }

    #[test]
    fn run_all_passes() {
        run_all().unwrap();
        std::println!(
            "kernel suite passed for {:?}",
            crate::kernels::Isa::ALL.iter().filter(|i| i.available()).collect::<std::vec::Vec<_>>()
        );
    }
}
