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
//! The instruction set is chosen once per process: under the `std` feature (and in
//! tests) by runtime detection (`Isa::best`, AVX2 → SSE4.1 → portable),
//! without it from the compile-time target features.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, __m256i, _mm256_add_epi32, _mm256_castsi256_si128, _mm256_cvtepi8_epi16, _mm256_cvtepu8_epi16,
    _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_set_epi8, _mm256_shuffle_epi8,
    _mm_add_epi32, _mm_and_si128, _mm_cvtepi8_epi16, _mm_cvtepu8_epi16, _mm_cvtsi128_si32, _mm_loadu_si128,
    _mm_madd_epi16, _mm_set1_epi8, _mm_set_epi8, _mm_shuffle_epi32, _mm_shuffle_epi8, _mm_srli_epi16, _mm_srli_si128,
};

use super::{quantized_matvec, BlockSums, Isa, Portable};
use crate::dtype::DType;

#[cfg(any(test, feature = "std"))]
pub(crate) fn has_sse41() -> bool {
    std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("sse4.1")
}
#[cfg(any(test, feature = "std"))]
pub(crate) fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}
#[cfg(not(any(test, feature = "std")))]
pub(crate) fn has_sse41() -> bool {
    cfg!(all(target_feature = "ssse3", target_feature = "sse4.1"))
}
#[cfg(not(any(test, feature = "std")))]
pub(crate) fn has_avx2() -> bool {
    cfg!(target_feature = "avx2")
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
        // SAFETY: the CPU supports SSSE3 and SSE4.1 (checked just before).
        Isa::Sse41 if has_sse41() => unsafe { matvec_sse41(dtype, w, row_bytes, xq, out) },
        // SAFETY: the CPU supports AVX2 (checked just before).
        Isa::Avx2 if has_avx2() => unsafe { matvec_avx2(dtype, w, row_bytes, xq, out) },
        _ => quantized_matvec::<Portable>(dtype, w, row_bytes, xq, out),
    }
}
