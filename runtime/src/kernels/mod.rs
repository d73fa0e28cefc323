//! Matrix-vector kernels, one module per weight dtype.
//!
//! Every kernel computes `out[r] = Σ_c w[r][c] · x[c]` with one fixed
//! summation order (docs/ARCHITECTURE.md, numerics contract), so any optimized variant added later
//! must reproduce its scalar reference bit for bit:
//!
//! - `f32`, `f16`: one sequential f32 sum per row, left to right (llama2.c `matmul`).
//! - `q8_0`, `q4_0`: the input is quantized once per matvec to q8_0 blocks; per
//!   block an exact i32 dot of the quants, then blocks summed in f32 in index
//!   order (see each module's header). The exact block sums come from one
//!   [`BlockSums`] per instruction set: [`Portable`], `dsp` (Cortex-M4/M7),
//!   `x86` (SSE4.1/AVX2, picked at run time) and `neon` (aarch64).

pub mod act;
pub mod dsp;
pub mod f16;
pub mod f32;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod q4_0;
pub mod q8_0;
#[cfg(microlm_fpu)]
pub mod vfp;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use crate::error::SessionError;
use crate::format::DType;

/// Values per quantization block (q8_0 and q4_0).
pub const QK: usize = 32;

/// Bytes of prepared activation scratch ([`act`]) for an input of `cols` values.
pub fn act_scratch_bytes(cols: usize) -> Option<usize> {
    act::words(cols)?.checked_mul(4)
}

/// A binary16 scale (little-endian bytes) widened to f32, exactly as IEEE (and
/// the `half` crate) convert: the sign and the 15 other bits moved into f32
/// position, then scaled by 2^112, which is exact for normal and subnormal
/// halves alike. Infinities and NaNs (exponent 31) go through `half`.
#[inline(always)]
pub fn f16_to_f32(bytes: [u8; 2]) -> f32 {
    let h = u32::from(u16::from_le_bytes(bytes));
    if h & 0x7c00 == 0x7c00 {
        return half::f16::from_bits(h as u16).to_f32();
    }
    let bits = (h & 0x8000) << 16 | (h & 0x7fff) << 13;
    // 2^112 = 2^(127 - 15): rebias the exponent.
    f32::from_bits(bits) * f32::from_bits(0x7780_0000)
}

/// Exact integer sums of one weight block with prepared activations ([`act`]),
/// one implementation per instruction set: [`Portable`], `dsp::Dsp` on
/// Cortex-M4/M7, SSE4.1/AVX2 in `x86`. All return the same integers.
pub trait BlockSums {
    /// Σ_{i<32} w[i]·x[i] for a q8_0 block's 32 signed quants (element order).
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32;
    /// Σ_{i<32} nibble_i·x[i] for a q4_0 block's 16 nibble bytes (element i in
    /// the low nibble of byte i, 16+i in the high one); the −8 offset is the caller's.
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32;
}

/// The block sums as plain integer loops over the activation pairs (what a host
/// compiler vectorizes).
#[derive(Debug)]
pub struct Portable;

impl BlockSums for Portable {
    #[inline(always)]
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        let mut acc = 0i32;
        for (quad, pair) in w.chunks_exact(4).zip(x.chunks_exact(2)) {
            // Pair order: word 0 holds elements 0 and 2, word 1 holds 1 and 3.
            acc += i32::from(quad[0] as i8) * low(pair[0])
                + i32::from(quad[2] as i8) * high(pair[0])
                + i32::from(quad[1] as i8) * low(pair[1])
                + i32::from(quad[3] as i8) * high(pair[1]);
        }
        acc
    }

    #[inline(always)]
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        let (x_lo, x_hi) = x.split_at(8);
        let mut acc = 0i32;
        for ((quad, lo), hi) in nibbles.chunks_exact(4).zip(x_lo.chunks_exact(2)).zip(x_hi.chunks_exact(2)) {
            // Low nibbles are elements 0..16, high nibbles 16..32, each group in pair order.
            let (a, b, c, d) = (i32::from(quad[0]), i32::from(quad[1]), i32::from(quad[2]), i32::from(quad[3]));
            acc += (a & 15) * low(lo[0]) + (c & 15) * high(lo[0]) + (b & 15) * low(lo[1]) + (d & 15) * high(lo[1]);
            acc += (a >> 4) * low(hi[0]) + (c >> 4) * high(hi[0]) + (b >> 4) * low(hi[1]) + (d >> 4) * high(hi[1]);
        }
        acc
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

/// The block sums this target compiles in: the DSP asm on Cortex-M4/M7, NEON on
/// aarch64, else the portable loops (x86-64 picks SIMD sums at run time on top, in `x86`).
#[cfg(microlm_dsp)]
pub type Native = dsp::Dsp;
/// The block sums this target compiles in: the DSP asm on Cortex-M4/M7, NEON on
/// aarch64, else the portable loops (x86-64 picks SIMD sums at run time on top, in `x86`).
#[cfg(target_arch = "aarch64")]
pub type Native = neon::Neon;
/// The block sums this target compiles in: the DSP asm on Cortex-M4/M7, NEON on
/// aarch64, else the portable loops (x86-64 picks SIMD sums at run time on top, in `x86`).
#[cfg(not(any(microlm_dsp, target_arch = "aarch64")))]
pub type Native = Portable;

/// The row · activations dot product shared by q8_0 and q4_0 (see their
/// headers): blocks of `BLOCK` bytes, an f16 scale then quants, in index order,
/// `acc += sum(quants, x block) as f32 · (f32(w.d) · x.d)`.
#[inline(always)]
fn row_dot<const BLOCK: usize>(w: &[u8], x: &[u32], sum: impl Fn(&[u8], act::Block<'_>) -> i32) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(BLOCK).zip(act::blocks(x)) {
        let dw = f16_to_f32([wb[0], wb[1]]);
        acc += sum(&wb[2..], xb) as f32 * (dw * xb.d);
    }
    acc
}

/// `out (rows) = w (rows, cols) · x` for q8_0 or q4_0 rows of `row_bytes` bytes,
/// with `xq` the prepared activations and `B` the block sums.
#[inline(always)]
pub(crate) fn quantized_matvec<B: BlockSums>(dtype: DType, w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    if row_bytes == 0 {
        return out.fill(0.0);
    }
    let rows = out.iter_mut().zip(w.chunks_exact(row_bytes));
    if dtype == DType::Q4_0 {
        rows.for_each(|(o, row)| *o = q4_0::vec_dot_with::<B>(row, xq));
    } else {
        rows.for_each(|(o, row)| *o = q8_0::vec_dot_with::<B>(row, xq));
    }
}

/// A read-only weight matrix viewed in place in the model file.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    /// Storage type of `data`.
    pub dtype: DType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// rows × row_bytes(cols) bytes.
    pub data: &'a [u8],
}

impl Matrix<'_> {
    /// `out (rows) = self (rows, cols) · x (cols)`. Extra `out` or `x` entries are left alone / ignored.
    ///
    /// Quantized weights first quantize `x` to q8_0 blocks, prepared in `scratch`
    /// (words, so always aligned: at least [`act_scratch_bytes`]`(cols) / 4`; f32/f16 weights ignore it).
    pub fn matvec(&self, x: &[f32], out: &mut [f32], scratch: &mut [u32]) -> Result<(), SessionError> {
        let x = &x[..self.cols.min(x.len())];
        let rows = self.rows.min(out.len());
        let out = &mut out[..rows];
        match self.dtype {
            DType::F32 => f32::matvec(self.data, x, out),
            DType::F16 => f16::matvec(self.data, x, out),
            DType::Q8_0 | DType::Q4_0 => {
                let words = act::words(self.cols).ok_or(SessionError::Internal)?;
                let row_bytes = self.dtype.row_bytes(self.cols).ok_or(SessionError::Internal)?;
                let too_small = SessionError::ScratchTooSmall { needed: words * 4, given: scratch.len() * 4 };
                let xq = scratch.get_mut(..words).ok_or(too_small)?;
                // A short `x` leaves its missing tail at zero, like the row padding.
                xq.fill(0);
                act::prepare_row(x, xq);
                // x86-64: the same kernels with SIMD block sums, at the level detected once.
                #[cfg(target_arch = "x86_64")]
                x86::matvec(x86::detected(), self.dtype, self.data, row_bytes, xq, out);
                #[cfg(not(target_arch = "x86_64"))]
                quantized_matvec::<Native>(self.dtype, self.data, row_bytes, xq, out);
            }
        }
        Ok(())
    }

    /// Writes row `row` converted to f32 into `out` (cols); quantized rows are dequantized.
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        let Some(bytes) = self
            .dtype
            .row_bytes(self.cols)
            .and_then(|rb| self.data.get(row.checked_mul(rb)?..(row.checked_add(1)?).checked_mul(rb)?))
        else {
            return;
        };
        let n = self.cols.min(out.len());
        let out = &mut out[..n];
        match self.dtype {
            DType::F32 => f32::to_f32(bytes, out),
            DType::F16 => f16::to_f32(bytes, out),
            DType::Q8_0 => q8_0::dequantize_row(bytes, out),
            DType::Q4_0 => q4_0::dequantize_row(bytes, out),
        }
    }
}

/// Tests shared by the block formats (`quant_tests!(module, dtype, bound)`): round trips
/// within `bound × block max|x|`, the kernel bit-identical to its scalar
/// reference, and the matvec against f32 on odd shapes.
#[cfg(test)]
macro_rules! quant_tests {
    ($m:path, $dtype:expr, $bound:expr) => {
        mod shared {
            use std::vec;
            use std::vec::Vec;

            use $crate::kernels::{q8_0, QK};
            use $m as q;

            use $crate::kernels::test_data::values;

            fn encode(x: &[f32]) -> Vec<u8> {
                let mut out = vec![0u8; x.len().div_ceil(QK) * q::BLOCK_BYTES];
                q::quantize_row(x, &mut out);
                out
            }

            fn encode_act(x: &[f32]) -> Vec<u8> {
                let mut out = vec![0u8; x.len().div_ceil(QK) * q8_0::BLOCK_BYTES];
                q8_0::quantize_row(x, &mut out);
                out
            }

            /// q8_0 activation blocks as the kernels take them.
            fn prepared(q8: &[u8]) -> Vec<u32> {
                let mut out = vec![0u32; q8.len() / q8_0::BLOCK_BYTES * $crate::kernels::act::BLOCK_WORDS];
                for (b, w) in
                    q8.chunks_exact(q8_0::BLOCK_BYTES).zip(out.chunks_exact_mut($crate::kernels::act::BLOCK_WORDS))
                {
                    $crate::kernels::act::prepare_block(b, w);
                }
                out
            }

            const SHAPES: [usize; 8] = [1, 31, 32, 33, 64, 100, 172, 300];

            #[test]
            fn round_trip_within_bound() {
                for (s, &n) in SHAPES.iter().enumerate() {
                    let x = values(n, s as u64 + 1);
                    let b = encode(&x);
                    assert_eq!(b.len(), n.div_ceil(QK) * q::BLOCK_BYTES);
                    let mut y = vec![f32::NAN; n];
                    q::dequantize_row(&b, &mut y);
                    for (xc, yc) in x.chunks(QK).zip(y.chunks(QK)) {
                        let amax = xc.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        // f16 scale rounding adds up to 2^-11 relative on top of the format's own bound.
                        let tol = $bound * amax * (1.0 + 2e-3) + amax * 1e-3;
                        for (a, b) in xc.iter().zip(yc) {
                            assert!((a - b).abs() <= tol, "n={n}: {a} -> {b} (tol {tol})");
                        }
                    }
                    // Re-quantizing dequantized values is (nearly) idempotent: the error does not grow.
                    let mut z = vec![0.0f32; n];
                    q::dequantize_row(&encode(&y), &mut z);
                    let e1: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
                    let e2: f32 = x.iter().zip(&z).map(|(a, b)| (a - b) * (a - b)).sum();
                    assert!(e2 <= e1 * 1.05 + 1e-9, "n={n}: {e1} then {e2}");
                }
            }

            #[test]
            fn kernel_matches_scalar_reference_bit_for_bit() {
                for (s, &n) in SHAPES.iter().enumerate() {
                    for rep in 0..4u64 {
                        let w = encode(&values(n, 100 + s as u64 * 7 + rep));
                        let x = encode_act(&values(n, 200 + s as u64 * 7 + rep));
                        let (a, b) = (q::vec_dot(&w, &prepared(&x)), q::vec_dot_ref(&w, &x));
                        assert_eq!(a.to_bits(), b.to_bits(), "n={n}: {a} vs {b}");
                    }
                }
            }

            #[test]
            fn kernel_equals_dot_of_dequantized_blocks() {
                // Padding must contribute nothing: compare with the f32 dot of what the blocks hold.
                for (s, &n) in SHAPES.iter().enumerate() {
                    let w = encode(&values(n, 300 + s as u64));
                    let x = encode_act(&values(n, 400 + s as u64));
                    let (mut wd, mut xd) = (vec![0.0f32; n], vec![0.0f32; n]);
                    q::dequantize_row(&w, &mut wd);
                    q8_0::dequantize_row(&x, &mut xd);
                    let exact: f64 = wd.iter().zip(&xd).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
                    let mag: f64 = wd.iter().zip(&xd).map(|(&a, &b)| f64::from((a * b).abs())).sum();
                    let got = f64::from(q::vec_dot(&w, &prepared(&x)));
                    assert!((got - exact).abs() <= 1e-5 * mag + 1e-6, "n={n}: {got} vs {exact}");
                }
            }

            #[test]
            fn matvec_close_to_f32() {
                use $crate::format::DType;
                use $crate::kernels::Matrix;
                for (s, &cols) in SHAPES.iter().enumerate() {
                    let rows = 7;
                    let w = values(rows * cols, 500 + s as u64);
                    let x = values(cols, 600 + s as u64);
                    let data: Vec<u8> = w.chunks(cols).flat_map(|r| encode(r)).collect();
                    let dtype: DType = $dtype;
                    let m = Matrix { dtype, rows, cols, data: &data };
                    let mut out = vec![0.0f32; rows];
                    let mut scratch = vec![0u32; $crate::kernels::act_scratch_bytes(cols).unwrap() / 4];
                    m.matvec(&x, &mut out, &mut scratch).unwrap();
                    for (r, &o) in out.iter().enumerate() {
                        let row = &w[r * cols..(r + 1) * cols];
                        let exact: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
                        // Each product errs by at most |x|·δw + |w|·δx with δ the per-block bounds.
                        let mut tol = 1e-5f32;
                        for (wc, xc) in row.chunks(QK).zip(x.chunks(QK)) {
                            let wa = wc.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                            let xa = xc.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                            tol += wc.len() as f32 * wa * xa * (1.01 * $bound + 0.51 / 127.0 + 4e-3);
                        }
                        assert!((o - exact).abs() <= tol, "cols={cols} row={r}: {o} vs {exact} (tol {tol})");
                    }
                    // Too little scratch is an error, not a panic.
                    let mut small = vec![0u32; 1];
                    assert!(m.matvec(&x, &mut out, &mut small).is_err());
                }
            }
        }
    };
}
#[cfg(test)]
pub(crate) use quant_tests;

/// Deterministic test inputs shared by the kernel tests.
#[cfg(test)]
pub(crate) mod test_data {
    use std::vec::Vec;

    use super::{act, q8_0, QK};

    /// Values in [-1, 1) with an outlier (×6) every 37th (xorshift64*).
    pub fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                let u = ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * if i % 37 == 5 { 6.0 } else { 1.0 }
            })
            .collect()
    }

    /// xorshift32 bytes, six in thirteen of them extremes (0x80, 0x7f, 0x00, 0xff, 0x0f, 0xf0).
    pub fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                match (i + seed as usize) % 13 {
                    0 => 0x80,
                    1 => 0x7f,
                    2 => 0x00,
                    3 => 0xff,
                    4 => 0x0f,
                    5 => 0xf0,
                    _ => s as u8,
                }
            })
            .collect()
    }

    /// 32 signed bytes as prepared activation pairs (`act` pair order).
    pub fn pairs(x: &[u8]) -> [u32; 16] {
        let mut q8 = [0u8; q8_0::BLOCK_BYTES];
        q8[2..].copy_from_slice(x);
        let mut w = [0u32; act::BLOCK_WORDS];
        act::prepare_block(&q8, &mut w);
        w[2..].try_into().unwrap()
    }

    /// Σ w[i]·x[i] over 32 signed bytes each.
    pub fn scalar_q8(w: &[u8], x: &[u8]) -> i32 {
        w.iter().zip(x).map(|(&a, &b)| i32::from(a as i8) * i32::from(b as i8)).sum()
    }

    /// Σ nibble_i·x[i] for 16 nibble bytes (element i low, 16+i high) and 32 signed bytes.
    pub fn scalar_q4(q: &[u8], x: &[u8]) -> i32 {
        (0..QK).map(|i| i32::from(if i < 16 { q[i] & 15 } else { q[i - 16] >> 4 }) * i32::from(x[i] as i8)).sum()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn f16_to_f32_equals_half_for_every_value() {
        // Miri interprets every step: every 61st value there.
        for h in (0..=u16::MAX).step_by(if cfg!(miri) { 61 } else { 1 }) {
            let (ours, theirs) = (super::f16_to_f32(h.to_le_bytes()), half::f16::from_bits(h).to_f32());
            assert!(ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()), "{h:#06x}");
        }
    }
}
