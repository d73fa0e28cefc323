//! x86-64 SIMD versions of the quantized matvecs (SSE4.1 and AVX2).
//!
//! Only the exact integer block sums are vectorized: per block the weights are
//! reordered into `q8_act` pair order with one byte shuffle, widened to i16 and
//! multiplied with the prepared activations by `pmaddwd`, then summed
//! horizontally. Integer sums are exact (|sum| < 2^24), so any order of that
//! math equals [`Portable`]. The f32 part stays the
//! scalar contract of `q8_0` / `q4_0`: per row, blocks in index order,
//! `acc += sumi as f32 * (dw * xd)` (separate multiply and add, no FMA).
//!
//! Row blocking (AVX2): the f32 matvec (`matvec_f32`) and the q8_0 matvec
//! (`matvec_q8_0_avx2`) run eight rows at once, one row per f32 lane, so the
//! eight sequential per-row sums are eight independent dependency chains in one
//! register instead of one latency-bound chain per row. Each lane still adds
//! its row's terms one at a time, left to right, with the same rounding (a
//! separate multiply and add, no FMA), so the results equal the portable
//! kernels bit for bit (tested against them below). Matrices too large to stay
//! in cache take sixteen rows at once where the CPU has AVX-512F
//! (`rows16_f32_streamed`: one cache line of each row per step, the products
//! transposed 16 × 16), measured 20–25 % faster per token than eight rows on
//! the 110M shape.
//!
//! The instruction set is chosen once per process: under the `std` feature (and in
//! tests) by runtime detection (`Isa::best`, AVX2 → SSE4.1 → portable),
//! without it from the compile-time target features.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, __m256, __m256i, _mm256_abs_epi8, _mm256_add_epi32, _mm256_add_ps, _mm256_castps128_ps256,
    _mm256_castsi256_si128, _mm256_cvtepi32_ps, _mm256_cvtepi8_epi16, _mm256_cvtepu8_epi16, _mm256_cvtph_ps,
    _mm256_div_ps, _mm256_extracti128_si256, _mm256_hadd_epi32, _mm256_insertf128_ps, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps, _mm256_packs_epi16,
    _mm256_permute2f128_ps, _mm256_permute2x128_si256, _mm256_permute4x64_epi64, _mm256_set1_epi16, _mm256_set1_ps,
    _mm256_set_epi8, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_shuffle_ps, _mm256_sign_epi8,
    _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps, _mm512_add_ps, _mm512_loadu_ps, _mm512_mul_ps,
    _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps, _mm512_unpackhi_ps,
    _mm512_unpacklo_ps, _mm_add_epi32, _mm_and_si128, _mm_cvtepi8_epi16, _mm_cvtepu8_epi16, _mm_cvtsi128_si32,
    _mm_loadu_ps, _mm_loadu_si128, _mm_madd_epi16, _mm_prefetch, _mm_set1_epi8, _mm_set_epi8, _mm_shuffle_epi32,
    _mm_shuffle_epi8, _mm_srli_epi16, _mm_srli_si128, _MM_HINT_T0,
};

use super::{f16_to_f32, q8_0, q8_act, quantized_matvec, BlockSums, Isa, Portable};
use crate::dtype::DType;

#[cfg(any(test, feature = "std"))]
pub(crate) fn has_sse41() -> bool {
    std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("sse4.1")
}
#[cfg(any(test, feature = "std"))]
pub(crate) fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}
#[cfg(any(test, feature = "std"))]
pub(crate) fn has_avx512f() -> bool {
    std::is_x86_feature_detected!("avx512f")
}
#[cfg(not(any(test, feature = "std")))]
pub(crate) fn has_avx512f() -> bool {
    cfg!(target_feature = "avx512f")
}
#[cfg(any(test, feature = "std"))]
pub(crate) fn has_f16c() -> bool {
    std::is_x86_feature_detected!("f16c")
}
#[cfg(not(any(test, feature = "std")))]
pub(crate) fn has_sse41() -> bool {
    cfg!(all(target_feature = "ssse3", target_feature = "sse4.1"))
}
#[cfg(not(any(test, feature = "std")))]
pub(crate) fn has_avx2() -> bool {
    cfg!(target_feature = "avx2")
}
#[cfg(not(any(test, feature = "std")))]
pub(crate) fn has_f16c() -> bool {
    cfg!(target_feature = "f16c")
}

/// The fastest available instruction set (AVX2 → SSE4.1 → portable), detected once and cached.
pub(crate) fn detected() -> Isa {
    use core::sync::atomic::{AtomicU8, Ordering};
    // 0: not yet detected, else 1 + index in Isa::ALL.
    static LEVEL: AtomicU8 = AtomicU8::new(0);
    match LEVEL.load(Ordering::Relaxed) {
        1 => Isa::Portable,
        2 => Isa::Sse41,
        3 => Isa::Avx2,
        _ => {
            let isa = if has_avx2() {
                Isa::Avx2
            } else if has_sse41() {
                Isa::Sse41
            } else {
                Isa::Portable
            };
            let code = match isa {
                Isa::Sse41 => 2,
                Isa::Avx2 => 3,
                Isa::Portable => 1,
            };
            LEVEL.store(code, Ordering::Relaxed);
            isa
        }
    }
}

/// Byte shuffle taking each group of four bytes a, b, c, d to a, c, b, d (`q8_act` pair order).
macro_rules! pair_order {
    ($set:ident) => {
        $set(15, 13, 14, 12, 11, 9, 10, 8, 7, 5, 6, 4, 3, 1, 2, 0)
    };
}

/// Sum of the four i32 lanes.
#[target_feature(enable = "sse4.1")]
#[inline]
fn hsum(v: __m128i) -> i32 {
    let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
    let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b10_11_00_01>(v));
    _mm_cvtsi128_si32(v)
}

/// The 16 bytes of `b`.
#[target_feature(enable = "sse4.1")]
#[inline]
fn load128(b: &[u8; 16]) -> __m128i {
    // SAFETY: reads the 16 bytes of the borrowed array; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Prepared activation words `4k..4k + 4` (k < 4).
#[target_feature(enable = "sse4.1")]
#[inline]
fn load_x128(x: &[u32; 16], k: usize) -> __m128i {
    let part: &[u32; 4] = x[4 * (k & 3)..][..4].try_into().unwrap_or(&[0; 4]);
    // SAFETY: reads the 16 bytes of `part`, a borrowed [u32; 4]; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(part.as_ptr().cast()) }
}

/// Prepared activation words `8k..8k + 8` (k < 2).
#[target_feature(enable = "avx2")]
#[inline]
fn load_x256(x: &[u32; 16], k: usize) -> __m256i {
    let part: &[u32; 8] = x[8 * (k & 1)..][..8].try_into().unwrap_or(&[0; 8]);
    // SAFETY: reads the 32 bytes of `part`, a borrowed [u32; 8]; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(part.as_ptr().cast()) }
}

/// [`BlockSums::q8`] with SSSE3/SSE4.1.
#[target_feature(enable = "ssse3,sse4.1")]
#[inline]
fn block_q8_sse41(w: &[u8; 32], x: &[u32; 16]) -> i32 {
    let shuf = pair_order!(_mm_set_epi8);
    let (w0, w1) = w.split_at(16);
    let w0 = _mm_shuffle_epi8(load128(w0.try_into().unwrap_or(&[0; 16])), shuf);
    let w1 = _mm_shuffle_epi8(load128(w1.try_into().unwrap_or(&[0; 16])), shuf);
    let p0 = _mm_madd_epi16(_mm_cvtepi8_epi16(w0), load_x128(x, 0));
    let p1 = _mm_madd_epi16(_mm_cvtepi8_epi16(_mm_srli_si128::<8>(w0)), load_x128(x, 1));
    let p2 = _mm_madd_epi16(_mm_cvtepi8_epi16(w1), load_x128(x, 2));
    let p3 = _mm_madd_epi16(_mm_cvtepi8_epi16(_mm_srli_si128::<8>(w1)), load_x128(x, 3));
    hsum(_mm_add_epi32(_mm_add_epi32(p0, p1), _mm_add_epi32(p2, p3)))
}

/// [`BlockSums::q4`] with SSSE3/SSE4.1.
#[target_feature(enable = "ssse3,sse4.1")]
#[inline]
fn block_q4_sse41(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
    let q = _mm_shuffle_epi8(load128(nibbles), pair_order!(_mm_set_epi8));
    let mask = _mm_set1_epi8(0x0f);
    // Elements 0..16 in the low nibbles, 16..32 in the high ones, all in pair order.
    let lo = _mm_and_si128(q, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
    let p0 = _mm_madd_epi16(_mm_cvtepu8_epi16(lo), load_x128(x, 0));
    let p1 = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128::<8>(lo)), load_x128(x, 1));
    let p2 = _mm_madd_epi16(_mm_cvtepu8_epi16(hi), load_x128(x, 2));
    let p3 = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128::<8>(hi)), load_x128(x, 3));
    hsum(_mm_add_epi32(_mm_add_epi32(p0, p1), _mm_add_epi32(p2, p3)))
}

/// Sum of the eight i32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum256(v: __m256i) -> i32 {
    hsum(_mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)))
}

/// [`BlockSums::q8`] with AVX2.
#[target_feature(enable = "avx2")]
#[inline]
fn block_q8_avx2(w: &[u8; 32], x: &[u32; 16]) -> i32 {
    // SAFETY: reads the 32 bytes of the borrowed array; loadu has no alignment requirement.
    let w = unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
    let shuf = _mm256_set_epi8(
        15, 13, 14, 12, 11, 9, 10, 8, 7, 5, 6, 4, 3, 1, 2, 0, 15, 13, 14, 12, 11, 9, 10, 8, 7, 5, 6, 4, 3, 1, 2, 0,
    );
    // The shuffle works per 128-bit lane, which is all pair order needs (groups of four).
    let w = _mm256_shuffle_epi8(w, shuf);
    let p0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(w)), load_x256(x, 0));
    let p1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(w)), load_x256(x, 1));
    hsum256(_mm256_add_epi32(p0, p1))
}

/// [`BlockSums::q4`] with AVX2.
#[target_feature(enable = "avx2")]
#[inline]
fn block_q4_avx2(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
    let q = _mm_shuffle_epi8(load128(nibbles), pair_order!(_mm_set_epi8));
    let mask = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
    let p0 = _mm256_madd_epi16(_mm256_cvtepu8_epi16(lo), load_x256(x, 0));
    let p1 = _mm256_madd_epi16(_mm256_cvtepu8_epi16(hi), load_x256(x, 1));
    hsum256(_mm256_add_epi32(p0, p1))
}

/// The SSE4.1 block sums, for [`matvec_sse41`] only.
struct Sse41;

impl BlockSums for Sse41 {
    #[inline(always)]
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        // SAFETY: `Sse41` is used only inside `matvec_sse41`, which runs only on CPUs with SSSE3 and SSE4.1.
        unsafe { block_q8_sse41(w, x) }
    }
    #[inline(always)]
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        // SAFETY: as above.
        unsafe { block_q4_sse41(nibbles, x) }
    }
}

/// The AVX2 block sums, for [`matvec_avx2`] only.
struct Avx2;

impl BlockSums for Avx2 {
    #[inline(always)]
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        // SAFETY: `Avx2` is used only inside `matvec_avx2`, which runs only on CPUs with AVX2.
        unsafe { block_q8_avx2(w, x) }
    }
    #[inline(always)]
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        // SAFETY: as above.
        unsafe { block_q4_avx2(nibbles, x) }
    }
}

/// The quantized matvec compiled with SSSE3/SSE4.1, so the block sums inline.
#[target_feature(enable = "ssse3,sse4.1")]
fn matvec_sse41(dtype: DType, w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    quantized_matvec::<Sse41>(dtype, w, row_bytes, xq, out);
}

/// The quantized matvec compiled with AVX2, so the block sums inline.
#[target_feature(enable = "avx2")]
fn matvec_avx2(dtype: DType, w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    quantized_matvec::<Avx2>(dtype, w, row_bytes, xq, out);
}

/// `out[r] = vec_dot(row r of w, xq)` for q8_0 or q4_0 `dtype`, with the block
/// sums of `isa`; one the CPU lacks falls back to the portable sums.
pub(crate) fn matvec(isa: Isa, dtype: DType, w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    match isa {
        // SAFETY: the CPU supports AVX2 and F16C (checked just before).
        Isa::Avx2 if dtype == DType::Q8_0 && has_avx2() && has_f16c() => unsafe {
            matvec_q8_0_avx2_f16c(w, row_bytes, xq, out)
        },
        // SAFETY: the CPU supports AVX2 (checked just before).
        Isa::Avx2 if dtype == DType::Q8_0 && has_avx2() => unsafe { matvec_q8_0_avx2(w, row_bytes, xq, out) },
        // SAFETY: the CPU supports SSSE3 and SSE4.1 (checked just before).
        Isa::Sse41 if has_sse41() => unsafe { matvec_sse41(dtype, w, row_bytes, xq, out) },
        // SAFETY: the CPU supports AVX2 (checked just before).
        Isa::Avx2 if has_avx2() => unsafe { matvec_avx2(dtype, w, row_bytes, xq, out) },
        _ => quantized_matvec::<Portable>(dtype, w, row_bytes, xq, out),
    }
}

/// The 8 × 8 transpose of `r` (row i of the result holds element i of every input).
#[target_feature(enable = "avx2")]
#[inline]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // Per 128-bit lane: pairs of rows interleaved, then groups of four rows.
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    // Columns c (low lane) and c + 4 (high lane) of rows 0..4, then of rows 4..8.
    let c04 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let c15 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let c26 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let c37 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let d04 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let d15 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let d26 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let d37 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(c04, d04),
        _mm256_permute2f128_ps::<0x20>(c15, d15),
        _mm256_permute2f128_ps::<0x20>(c26, d26),
        _mm256_permute2f128_ps::<0x20>(c37, d37),
        _mm256_permute2f128_ps::<0x31>(c04, d04),
        _mm256_permute2f128_ps::<0x31>(c15, d15),
        _mm256_permute2f128_ps::<0x31>(c26, d26),
        _mm256_permute2f128_ps::<0x31>(c37, d37),
    ]
}

/// `out (8·G rows) = w (8·G rows, cols) · x (cols)` for f32 rows, `G` groups of
/// eight rows at once (each group one register of eight per-row sums, so `8·G`
/// independent dependency chains), per row one sequential sum from 0.0, left to right.
/// `CACHED` (a matrix small enough to stay in cache from token to token) takes
/// each row's eight columns as two halves and transposes 4 × 4 blocks of
/// weights (16 shuffles per 64 values, the shuffle port being the limit there);
/// otherwise the products of whole 32-byte rows are transposed 8 × 8 (24
/// shuffles, but half the loads, which streaming from memory favours: measured
/// about 10 % faster on the 15M and 110M shapes).
#[target_feature(enable = "avx2")]
#[inline]
fn rows_f32<const G: usize, const CACHED: bool>(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    let body = cols / 8 * 8;
    if w.len() < 8 * G * cols || out.len() < 8 * G {
        return;
    }
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); G];
    let mut j = 0;
    while j < body {
        // Stream in the next rows' bytes as far ahead as this pass reads them:
        // 64·G floats (4·G cache lines) of the next 8·G rows per step of eight columns.
        let ahead = wp.wrapping_add(8 * G * cols + 8 * G * j);
        for line in 0..4 * G {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16 * line).cast());
        }
        if CACHED {
            for (g, acc) in acc.iter_mut().enumerate() {
                // Columns j..j + 8 of the eight rows, row r in lane r: rows r and r + 4
                // loaded as the two halves of one register (the second half's load is
                // part of VINSERTF128), then a 4 × 4 transpose in each half (8 shuffles
                // per four columns, against 12 for the products' full 8 × 8 transpose).
                let base = wp.wrapping_add(8 * g * cols + j);
                // SAFETY: rows 8g + r and 8g + r + 4 (< 8G) at columns j + h..j + h + 4
                // (h = 0 or 4; j + 8 <= cols) lie inside w (checked above).
                let half = |r: usize, h: usize| unsafe {
                    _mm256_insertf128_ps::<1>(
                        _mm256_castps128_ps256(_mm_loadu_ps(base.add(r * cols + h))),
                        _mm_loadu_ps(base.add((r + 4) * cols + h)),
                    )
                };
                for h in [0, 4] {
                    let (a0, a1, a2, a3) = (half(0, h), half(1, h), half(2, h), half(3, h));
                    let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
                    let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
                    let cols4 = [
                        _mm256_shuffle_ps::<0x44>(t0, t2),
                        _mm256_shuffle_ps::<0xEE>(t0, t2),
                        _mm256_shuffle_ps::<0x44>(t1, t3),
                        _mm256_shuffle_ps::<0xEE>(t1, t3),
                    ];
                    for (k, c) in cols4.into_iter().enumerate() {
                        // The products w[r][j + h + k] · x[j + h + k] (rounded as the scalar
                        // multiply), added in column order.
                        // SAFETY: j + h + k < cols = x.len().
                        let xk = _mm256_set1_ps(unsafe { *xp.add(j + h + k) });
                        *acc = _mm256_add_ps(*acc, _mm256_mul_ps(c, xk));
                    }
                }
            }
        } else {
            // SAFETY: j + 8 <= body <= cols = x.len().
            let xv = unsafe { _mm256_loadu_ps(xp.add(j)) };
            for (g, acc) in acc.iter_mut().enumerate() {
                // Products w[r][j..j + 8] · x[j..j + 8] of each row (rounded as the scalar
                // multiply), turned so vector k holds column j + k of the eight rows.
                let mut p = [_mm256_setzero_ps(); 8];
                for (r, p) in p.iter_mut().enumerate() {
                    // SAFETY: row 8g + r < 8G and j + 8 <= cols, so the 8 values lie inside w (checked above).
                    *p = _mm256_mul_ps(unsafe { _mm256_loadu_ps(wp.add((8 * g + r) * cols + j)) }, xv);
                }
                let p = transpose8(p);
                for pk in p {
                    *acc = _mm256_add_ps(*acc, pk);
                }
            }
        }
        j += 8;
    }
    for (g, acc) in acc.iter().enumerate() {
        let mut lanes = [0.0f32; 8];
        // SAFETY: writes the 8 values of the local array; storeu has no alignment requirement.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *acc) };
        finish_rows(&lanes, &w[8 * g * cols..], x, body, &mut out[8 * g..]);
    }
}

/// Row r's sum so far `sums[r]` (columns `..body`) plus its columns `body..`, left
/// to right, into `out[r]`, for the rows of `w` (`cols` = x.len() values each).
#[inline]
fn finish_rows(sums: &[f32], w: &[f32], x: &[f32], body: usize, out: &mut [f32]) {
    let cols = x.len();
    for ((&s, row), o) in sums.iter().zip(w.chunks_exact(cols)).zip(out) {
        let mut a = s;
        for (&wv, &xv) in row[body..].iter().zip(&x[body..]) {
            a += wv * xv;
        }
        *o = a;
    }
}

/// [`rows_f32`]'s streamed path with AVX-512: sixteen rows, one register of
/// sixteen per-row sums, per sixteen columns the products of each row's 64 bytes
/// (one cache line) with x, transposed 16 × 16 (64 shuffles: per 128-bit lane
/// pairs and quads of rows, then two rounds of `VSHUFF32X4` over the lanes), then
/// added in column order: per row one sequential sum from 0.0, left to right.
#[target_feature(enable = "avx512f")]
#[inline]
fn rows16_f32_streamed(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    let body = cols / 16 * 16;
    if w.len() < 16 * cols || out.len() < 16 {
        return;
    }
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = _mm512_setzero_ps();
    let mut j = 0;
    while j < body {
        // The next sixteen rows' lines at these columns, one group ahead.
        let ahead = wp.wrapping_add(16 * cols + j);
        for r in 0..16 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(r * cols).cast());
        }
        // SAFETY: j + 16 <= body <= cols = x.len().
        let xv = unsafe { _mm512_loadu_ps(xp.add(j)) };
        let mut p = [_mm512_setzero_ps(); 16];
        for (r, p) in p.iter_mut().enumerate() {
            // SAFETY: row r < 16 and j + 16 <= cols, so the 16 values lie inside w (checked above).
            *p = _mm512_mul_ps(unsafe { _mm512_loadu_ps(wp.add(r * cols + j)) }, xv);
        }
        // Per 128-bit lane L: rows interleaved in pairs, then u[4g + k] holds rows
        // 4g..4g + 4 at column 4L + k.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(p[2 * i], p[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(p[2 * i], p[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a0, a1, a2, a3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm512_shuffle_ps::<0x44>(a0, a2);
            u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a0, a2);
            u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(a1, a3);
            u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(a1, a3);
        }
        // For each k, the 4 × 4 transpose of the 128-bit lanes of u[k], u[4 + k], u[8 + k],
        // u[12 + k]: column 4L + k of all sixteen rows.
        let mut c = [_mm512_setzero_ps(); 16];
        for k in 0..4 {
            let (a0, a1, a2, a3) = (u[k], u[4 + k], u[8 + k], u[12 + k]);
            let b0 = _mm512_shuffle_f32x4::<0x88>(a0, a1);
            let b1 = _mm512_shuffle_f32x4::<0xDD>(a0, a1);
            let b2 = _mm512_shuffle_f32x4::<0x88>(a2, a3);
            let b3 = _mm512_shuffle_f32x4::<0xDD>(a2, a3);
            c[k] = _mm512_shuffle_f32x4::<0x88>(b0, b2);
            c[8 + k] = _mm512_shuffle_f32x4::<0xDD>(b0, b2);
            c[4 + k] = _mm512_shuffle_f32x4::<0x88>(b1, b3);
            c[12 + k] = _mm512_shuffle_f32x4::<0xDD>(b1, b3);
        }
        for ck in c {
            acc = _mm512_add_ps(acc, ck);
        }
        j += 16;
    }
    let mut lanes = [0.0f32; 16];
    // SAFETY: writes the 16 values of the local array; storeu has no alignment requirement.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
    finish_rows(&lanes, w, x, body, out);
}

/// `out (rows) = w (rows, cols) · x (cols)` for f32 weights with AVX2, eight
/// rows at a time (sixteen, `rows_f32::<2, _>`, measured slower: more concurrent
/// streams for the prefetchers; but with AVX-512F, matrices too large for the
/// cache take sixteen rows a step in one register, [`rows16_f32_streamed`]) ([`super::f32::matvec`]'s order: per row one
/// sequential sum from 0.0, left to right); the last `rows % 8` rows take the portable dot.
#[target_feature(enable = "avx2")]
fn matvec_f32_avx2(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    let mut done = 0;
    // Matrices of at most 256 KiB (stories260K's) stay in cache between tokens.
    let cached = w.len() <= 64 * 1024;
    if !cached && has_avx512f() {
        while done + 16 <= out.len() {
            // SAFETY: the CPU has AVX-512F (checked just before).
            unsafe { rows16_f32_streamed(&w[done * cols..], x, &mut out[done..]) };
            done += 16;
        }
    }
    while done + 8 <= out.len() {
        if cached {
            rows_f32::<1, true>(&w[done * cols..], x, &mut out[done..]);
        } else {
            rows_f32::<1, false>(&w[done * cols..], x, &mut out[done..]);
        }
        done += 8;
    }
    for (o, row) in out[done..].iter_mut().zip(w[done * cols..].chunks_exact(cols)) {
        *o = super::f32::dot(row, x);
    }
}

/// [`super::f32::matvec`] with AVX2 when the CPU has it and `w` is f32-aligned
/// (always for a parsed model): returns whether it ran. Bit-identical to the portable loop.
pub(crate) fn matvec_f32(w: &[u8], x: &[f32], out: &mut [f32]) -> bool {
    let Ok(w) = bytemuck::try_cast_slice::<u8, f32>(w) else { return false };
    if x.is_empty() || !has_avx2() {
        return false;
    }
    let rows = out.len().min(w.len() / x.len());
    // SAFETY: the CPU supports AVX2 (checked just before).
    unsafe { matvec_f32_avx2(w, x, &mut out[..rows]) };
    true
}

/// [`super::scores_f32`] for 8-wide heads in contiguous rows (the head-major f32
/// cache) with AVX2, eight slots at once: the products k\[j\] · q\[j\] of eight rows
/// (one multiply per row), transposed so lane i holds slot i's, then summed from
/// 0.0 left to right in the lanes (separate multiply and add, as the portable
/// dot), divided by `sqrt_head` and stored; the maximum is taken over the stored
/// scores as the portable loop takes it. The last `n % 8` slots take the portable
/// loop. `None` without AVX2.
pub(crate) fn scores8(q: &[f32; 8], keys: &[f32], sqrt_head: f32, max_in: f32, out: &mut [f32]) -> Option<f32> {
    if !has_avx2() || keys.len() / 8 < out.len() {
        return None;
    }
    // SAFETY: the CPU supports AVX2 (checked just before).
    Some(unsafe { scores8_avx2(q, keys, sqrt_head, max_in, out) })
}

#[target_feature(enable = "avx2")]
fn scores8_avx2(q: &[f32; 8], keys: &[f32], sqrt_head: f32, max_in: f32, out: &mut [f32]) -> f32 {
    let n = out.len();
    let groups = n / 8;
    // SAFETY: reads the 8 floats of `q`.
    let qv = unsafe { _mm256_loadu_ps(q.as_ptr()) };
    let div = _mm256_set1_ps(sqrt_head);
    let mut max = max_in;
    for g in 0..groups {
        let rows = &keys[64 * g..64 * g + 64];
        let mut p = [_mm256_setzero_ps(); 8];
        for (r, p) in p.iter_mut().enumerate() {
            // SAFETY: row r of the group: 8 floats inside `rows` (64 long).
            *p = _mm256_mul_ps(unsafe { _mm256_loadu_ps(rows.as_ptr().add(8 * r)) }, qv);
        }
        let p = transpose8(p);
        let mut acc = _mm256_setzero_ps();
        for pk in p {
            acc = _mm256_add_ps(acc, pk);
        }
        let s = _mm256_div_ps(acc, div);
        let dst = &mut out[8 * g..8 * g + 8];
        // SAFETY: writes the 8 floats of `dst`.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), s) };
        for &v in dst.iter() {
            if v > max {
                max = v;
            }
        }
    }
    let done = 8 * groups;
    super::generic::scores_f32(q, &keys[8 * done..], 8, 0, sqrt_head, max, &mut out[done..])
}

/// [`super::mix_f32_head8`] with AVX2: the exponentials in one branch-free pass
/// (`scalar::exp_branch_free`, the same bits as the portable `exp_at_most_zero`;
/// eight lanes), written over `scores`, then one pass over the slots that adds e to
/// Σe and e · row to the eight sums in one register, two independent chains in
/// slot order (separate multiply and add, as the portable loops). `false`
/// without AVX2.
pub(crate) fn mix8(scores: &mut [f32], max: f32, values: &[f32], out: &mut [f32; 8]) -> bool {
    if !has_avx2() || values.len() / 8 < scores.len() {
        return false;
    }
    // SAFETY: the CPU supports AVX2 (checked just before).
    unsafe { mix8_avx2(scores, max, values, out) };
    true
}

#[target_feature(enable = "avx2")]
fn mix8_avx2(scores: &mut [f32], max: f32, values: &[f32], out: &mut [f32; 8]) {
    for v in scores.iter_mut() {
        *v = crate::scalar::exp_branch_free(*v - max);
    }
    let (mut sum, mut acc) = (0.0f32, _mm256_setzero_ps());
    for (&e, row) in scores.iter().zip(values.chunks_exact(8)) {
        sum += e;
        // SAFETY: `row` holds 8 floats.
        let v = unsafe { _mm256_loadu_ps(row.as_ptr()) };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(e), v));
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: writes the 8 floats of the local array.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    for (o, a) in out.iter_mut().zip(lanes) {
        *o = a / sum;
    }
}

/// One row's q8_0 block `qs` (32 quant bytes at `qs`) times the prepared
/// activations `x0`, `x1`: eight i32 lanes of partial sums.
///
/// # Safety
/// `qs` must point to 32 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn q8_partials(qs: *const u8, x0: __m256i, x1: __m256i) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes; loadu has no alignment requirement.
    let w = unsafe { _mm256_loadu_si256(qs.cast()) };
    let shuf = _mm256_set_epi8(
        15, 13, 14, 12, 11, 9, 10, 8, 7, 5, 6, 4, 3, 1, 2, 0, 15, 13, 14, 12, 11, 9, 10, 8, 7, 5, 6, 4, 3, 1, 2, 0,
    );
    let w = _mm256_shuffle_epi8(w, shuf);
    let p0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(w)), x0);
    let p1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(w)), x1);
    _mm256_add_epi32(p0, p1)
}

/// Lane r = the sum of the eight lanes of `s[r]`.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum8x8(s: [__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(s[0], s[1]);
    let h23 = _mm256_hadd_epi32(s[2], s[3]);
    let h45 = _mm256_hadd_epi32(s[4], s[5]);
    let h67 = _mm256_hadd_epi32(s[6], s[7]);
    // Per 128-bit lane: rows 0..4 (resp. 4..8), each the sum of its half of the lanes.
    let h0123 = _mm256_hadd_epi32(h01, h23);
    let h4567 = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(h0123, h4567), _mm256_permute2x128_si256::<0x31>(h0123, h4567))
}

/// The q8_0 matvec with AVX2, eight rows at a time: per block the eight rows'
/// exact integer sums, then per row `acc += sumi as f32 · (f32(w.d) · x.d)` in
/// block order (the `q8_0` contract) in eight f32 lanes; the last `rows % 8`
/// rows take the one-row loop.
#[target_feature(enable = "avx2")]
fn matvec_q8_0_avx2(w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    if row_bytes == 0 {
        return out.fill(0.0);
    }
    let nblocks = (row_bytes / q8_0::BLOCK_BYTES).min(xq.len() / q8_act::BLOCK_WORDS);
    let mut groups = out.chunks_exact_mut(8).zip(w.chunks_exact(8 * row_bytes));
    for (out8, w8) in &mut groups {
        let wp = w8.as_ptr();
        let mut acc = _mm256_setzero_ps();
        for (b, xw) in xq.chunks_exact(q8_act::BLOCK_WORDS).take(nblocks).enumerate() {
            let xb = q8_act::Block::view(xw.try_into().unwrap_or(&[0; q8_act::BLOCK_WORDS]));
            let (x0, x1) = (load_x256(xb.pairs, 0), load_x256(xb.pairs, 1));
            let at = b * q8_0::BLOCK_BYTES;
            // The next eight rows' bytes, as far ahead as this pass reads these.
            let ahead = wp.wrapping_add(8 * row_bytes + 8 * at);
            for line in 0..5 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line).cast());
            }
            let mut s = [_mm256_setzero_si256(); 8];
            let mut d = [0.0f32; 8];
            for r in 0..8 {
                let block = r * row_bytes + at;
                // SAFETY: block b < nblocks of row r < 8 lies inside the 8 rows of `w8`
                // (34 bytes: the f16 scale, then the 32 quants).
                unsafe {
                    s[r] = q8_partials(wp.add(block + 2), x0, x1);
                    d[r] = f16_to_f32([*wp.add(block), *wp.add(block + 1)]);
                }
            }
            let sums = hsum8x8(s);
            // SAFETY: reads the 8 values of the local array; loadu has no alignment requirement.
            let scale = _mm256_mul_ps(unsafe { _mm256_loadu_ps(d.as_ptr()) }, _mm256_set1_ps(xb.d));
            // |sumi| < 2^24, so the conversion is exact, as `sumi as f32`.
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), scale));
        }
        // SAFETY: writes the 8 values of `out8`, an 8-element chunk; storeu has no alignment requirement.
        unsafe { _mm256_storeu_ps(out8.as_mut_ptr(), acc) };
    }
    let done = out.len() / 8 * 8;
    let tail = w.get(done * row_bytes..).unwrap_or(&[]);
    quantized_matvec::<Avx2>(DType::Q8_0, tail, row_bytes, xq, &mut out[done..]);
}

/// A prepared activation block's 32 quants as i8 in element order: the 16 pair
/// words narrowed (PACKSSWB: |q| ≤ 127 already), the lanes put back in order,
/// then each group of four from pair order (0, 2, 1, 3) to element order.
#[target_feature(enable = "avx2")]
#[inline]
fn x_i8(x: &[u32; 16]) -> __m256i {
    let packed = _mm256_packs_epi16(load_x256(x, 0), load_x256(x, 1));
    let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
    _mm256_shuffle_epi8(ordered, pair_order!(set_epi8_both_lanes))
}

/// `_mm256_set_epi8` with the same 16 bytes in both lanes.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn set_epi8_both_lanes(
    b15: i8,
    b14: i8,
    b13: i8,
    b12: i8,
    b11: i8,
    b10: i8,
    b9: i8,
    b8: i8,
    b7: i8,
    b6: i8,
    b5: i8,
    b4: i8,
    b3: i8,
    b2: i8,
    b1: i8,
    b0: i8,
) -> __m256i {
    _mm256_set_epi8(
        b15, b14, b13, b12, b11, b10, b9, b8, b7, b6, b5, b4, b3, b2, b1, b0, b15, b14, b13, b12, b11, b10, b9, b8, b7,
        b6, b5, b4, b3, b2, b1, b0,
    )
}

/// One row's q8_0 quants (32 bytes at `qs`, element order) times the activations
/// `x` (i8, element order): eight i32 lanes of partial sums. PMADDUBSW multiplies
/// |w| (unsigned) by x with w's sign (PSIGNB) and adds pairs into i16 without
/// saturating (|2 · 128 · 127| < 2^15), PMADDWD by ones widens to i32: exact.
///
/// # Safety
/// `qs` must point to 32 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn q8_partials_i8(qs: *const u8, x: __m256i) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes; loadu has no alignment requirement.
    let w = unsafe { _mm256_loadu_si256(qs.cast()) };
    let products = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    _mm256_madd_epi16(products, _mm256_set1_epi16(1))
}

/// [`matvec_q8_0_avx2`] with i8 activations and F16C: per block the activations are
/// narrowed to i8 once for all rows ([`x_i8`]), each row's integer sum takes
/// PMADDUBSW ([`q8_partials_i8`]), and the eight rows' f16 scales widen with one
/// VCVTPH2PS (exact, as `f16_to_f32`). The same integer sums and the same f32
/// operations per row, in block order, so the same bits.
#[target_feature(enable = "avx2,f16c")]
fn matvec_q8_0_avx2_f16c(w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    if row_bytes == 0 {
        return out.fill(0.0);
    }
    let nblocks = (row_bytes / q8_0::BLOCK_BYTES).min(xq.len() / q8_act::BLOCK_WORDS);
    let mut groups = out.chunks_exact_mut(8).zip(w.chunks_exact(8 * row_bytes));
    for (out8, w8) in &mut groups {
        let wp = w8.as_ptr();
        let mut acc = _mm256_setzero_ps();
        for (b, xw) in xq.chunks_exact(q8_act::BLOCK_WORDS).take(nblocks).enumerate() {
            let xb = q8_act::Block::view(xw.try_into().unwrap_or(&[0; q8_act::BLOCK_WORDS]));
            let x = x_i8(xb.pairs);
            let at = b * q8_0::BLOCK_BYTES;
            // The next eight rows' bytes, as far ahead as this pass reads these.
            let ahead = wp.wrapping_add(8 * row_bytes + 8 * at);
            for line in 0..5 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line).cast());
            }
            let mut s = [_mm256_setzero_si256(); 8];
            let mut d = [0u16; 8];
            for r in 0..8 {
                let block = r * row_bytes + at;
                // SAFETY: block b < nblocks of row r < 8 lies inside the 8 rows of `w8`
                // (34 bytes: the f16 scale, then the 32 quants).
                unsafe {
                    s[r] = q8_partials_i8(wp.add(block + 2), x);
                    d[r] = u16::from_le_bytes([*wp.add(block), *wp.add(block + 1)]);
                }
            }
            let sums = hsum8x8(s);
            // SAFETY: reads the 16 bytes of the local array; loadu has no alignment requirement.
            let dw = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().cast()) });
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(xb.d));
            // |sumi| < 2^24, so the conversion is exact, as `sumi as f32`.
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), scale));
        }
        // SAFETY: writes the 8 values of `out8`, an 8-element chunk; storeu has no alignment requirement.
        unsafe { _mm256_storeu_ps(out8.as_mut_ptr(), acc) };
    }
    let done = out.len() / 8 * 8;
    let tail = w.get(done * row_bytes..).unwrap_or(&[]);
    quantized_matvec::<Avx2>(DType::Q8_0, tail, row_bytes, xq, &mut out[done..]);
}

#[cfg(test)]
mod tests {
    use std::vec;

    use super::*;
    use crate::kernels::test_data::{awkward, bits, f32_matvec_matches, q8_0_case, values};

    const ROWS: [usize; 9] = [1, 7, 8, 9, 15, 16, 17, 24, 31];
    const COLS: [usize; 9] = [1, 7, 8, 9, 31, 32, 64, 100, 288];

    #[test]
    fn f32_rows8_equal_the_portable_loop_bit_for_bit() {
        if !has_avx2() {
            return;
        }
        for &rows in &ROWS {
            for &cols in &COLS {
                f32_matvec_equals_portable(rows, cols);
            }
        }
    }

    /// `matvec_f32` on awkward values of a `rows` × `cols` matrix equals the portable loop.
    fn f32_matvec_equals_portable(rows: usize, cols: usize) {
        f32_matvec_matches(rows, cols, matvec_f32);
    }

    /// Matrices above 64 Ki values take the streamed transpose (products of whole
    /// rows), smaller ones the cached one: both equal the portable loop.
    #[test]
    fn f32_rows8_streamed_equal_the_portable_loop_bit_for_bit() {
        if !has_avx2() {
            return;
        }
        for (rows, cols) in [(17, 4099), (300, 288), (9, 8192)] {
            assert!(rows * cols > 64 * 1024);
            f32_matvec_equals_portable(rows, cols);
        }
    }

    /// With AVX-512 the streamed rows go sixteen at a time (`rows16_f32_streamed`),
    /// then eight, then one by one: all equal the portable loop, and so does the
    /// sixteen-row kernel alone.
    #[test]
    fn f32_rows16_streamed_equal_the_portable_loop_bit_for_bit() {
        if !has_avx2() || !has_avx512f() {
            return;
        }
        for (rows, cols) in [(40, 2050), (33, 4099), (16, 4100), (250, 288)] {
            assert!(rows * cols > 64 * 1024);
            f32_matvec_equals_portable(rows, cols);
        }
        for cols in [16, 17, 31, 288, 4099] {
            let w = awkward(16 * cols, cols as u64 + 3);
            let x = awkward(cols, cols as u64 + 11);
            let (mut fast, mut slow) = (vec![f32::NAN; 16], vec![f32::NAN; 16]);
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe { rows16_f32_streamed(&w, &x, &mut fast) };
            crate::kernels::f32::matvec(bytemuck::cast_slice(&w), &x, &mut slow);
            assert_eq!(bits(&fast), bits(&slow), "cols {cols}");
        }
    }

    #[test]
    fn f32_rows8_leaves_extra_outputs_and_refuses_unaligned_bytes() {
        if !has_avx2() {
            return;
        }
        let w = values(8 * 16, 3);
        let x = values(16, 4);
        // Ten outputs for eight rows: the last two are not rows and stay untouched.
        let mut out = [f32::NAN; 10];
        assert!(matvec_f32(bytemuck::cast_slice(&w), &x, &mut out));
        assert!(out[..8].iter().all(|v| v.is_finite()) && out[8].is_nan() && out[9].is_nan());
        let mut shifted = vec![0u8; w.len() * 4 + 1];
        shifted[1..].copy_from_slice(bytemuck::cast_slice(&w));
        assert!(!matvec_f32(&shifted[1..], &x, &mut out[..8]));
    }

    #[test]
    fn q8_0_rows8_equal_the_portable_loop_bit_for_bit() {
        if !has_avx2() {
            return;
        }
        for &rows in &ROWS {
            for &cols in &COLS {
                let (data, row_bytes, x8, xq) = q8_0_case(rows, cols);
                let (mut fast, mut slow) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
                matvec(Isa::Avx2, DType::Q8_0, &data, row_bytes, &xq, &mut fast);
                quantized_matvec::<Portable>(DType::Q8_0, &data, row_bytes, &xq, &mut slow);
                assert_eq!(bits(&fast), bits(&slow), "rows {rows} cols {cols}");
                // Both AVX2 kernels, whichever `matvec` picked: i16 activations, and i8 with F16C.
                let mut other = vec![f32::NAN; rows];
                // SAFETY: the CPU supports AVX2 (checked above).
                unsafe { matvec_q8_0_avx2(&data, row_bytes, &xq, &mut other) };
                assert_eq!(bits(&other), bits(&slow), "i16 kernel, rows {rows} cols {cols}");
                if has_f16c() {
                    // SAFETY: the CPU supports AVX2 and F16C (checked).
                    unsafe { matvec_q8_0_avx2_f16c(&data, row_bytes, &xq, &mut other) };
                    assert_eq!(bits(&other), bits(&slow), "i8 kernel, rows {rows} cols {cols}");
                }
                for (o, row) in fast.iter().zip(data.chunks_exact(row_bytes)) {
                    assert_eq!(o.to_bits(), q8_0::vec_dot_ref(row, &x8).to_bits(), "rows {rows} cols {cols}");
                }
            }
        }
    }

    #[test]
    fn q8_0_rows8_take_extreme_quants_exactly() {
        if !has_avx2() {
            return;
        }
        // Quants −128 and 127 against activations ±127 (the widest i16 pair products),
        // and random bytes, over 9 rows of 3 blocks with finite random scales.
        let (rows, blocks) = (9, 3);
        let row_bytes = blocks * q8_0::BLOCK_BYTES;
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..4 {
            let mut data = vec![0u8; rows * row_bytes];
            for (i, block) in data.chunks_exact_mut(q8_0::BLOCK_BYTES).enumerate() {
                let d = half::f16::from_f32(((next() % 2000) as f32 - 1000.0) / 997.0);
                block[..2].copy_from_slice(&d.to_le_bytes());
                for (j, q) in block[2..].iter_mut().enumerate() {
                    *q = match case {
                        0 => 0x80,
                        1 => {
                            if (i + j) % 2 == 0 {
                                0x80
                            } else {
                                0x7f
                            }
                        }
                        _ => next() as u8,
                    };
                }
            }
            let mut x8 = vec![0u8; row_bytes];
            for (b, block) in x8.chunks_exact_mut(q8_0::BLOCK_BYTES).enumerate() {
                block[..2].copy_from_slice(&half::f16::from_f32(0.5 + b as f32).to_le_bytes());
                for (j, q) in block[2..].iter_mut().enumerate() {
                    *q = if case < 3 { [0x81u8, 0x7f][(j + case) % 2] } else { next() as u8 | 0x01 };
                }
            }
            let mut xq = vec![0u32; blocks * q8_act::BLOCK_WORDS];
            for (b, words) in x8.chunks_exact(q8_0::BLOCK_BYTES).zip(xq.chunks_exact_mut(q8_act::BLOCK_WORDS)) {
                q8_act::prepare_block(b, words);
            }
            let (mut fast, mut slow) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
            quantized_matvec::<Portable>(DType::Q8_0, &data, row_bytes, &xq, &mut slow);
            // SAFETY: the CPU supports AVX2 (checked above).
            unsafe { matvec_q8_0_avx2(&data, row_bytes, &xq, &mut fast) };
            assert_eq!(bits(&fast), bits(&slow), "i16 kernel, case {case}");
            if has_f16c() {
                // SAFETY: the CPU supports AVX2 and F16C (checked).
                unsafe { matvec_q8_0_avx2_f16c(&data, row_bytes, &xq, &mut fast) };
                assert_eq!(bits(&fast), bits(&slow), "i8 kernel, case {case}");
            }
        }
    }
}
