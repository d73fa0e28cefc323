//! The kernels: every inner loop of the forward pass, and the one place that
//! picks an implementation per instruction set.
//!
//! ```text
//! kernels/
//!   mod.rs      the interfaces (BlockSums, Matrix, attention, exp), Isa and Isa::best()
//!   generic.rs  the portable implementations (the reference every other one equals)
//!   arm_dsp.rs  Cortex-M4/M7 DSP asm: SXTB16/SMLAD block sums, the i16·i8 dot of the i8 KV cache
//!   arm_fpu.rs  hard-float Cortex-M asm: f32 attention scores, the exp pass, the fused value mix
//!   arm_mve.rs  Cortex-M55 MVE (Helium) asm: VMLADAV block sums over whole rows
//!   x86.rs      x86-64 SSE4.1 / AVX2 block sums
//!   neon.rs     aarch64 NEON block sums
//!   f32.rs, f16.rs, q8_0.rs, q4_0.rs, q4_16.rs   the row formats: matvec rows, (de)quantization
//!   q8_act.rs   activations quantized to q8_0 blocks and widened for the block sums
//!   suite.rs    the checks every implementation must pass (tests and device harnesses)
//! ```
//!
//! Every kernel computes its result with one fixed summation order
//! (docs/ARCHITECTURE.md, numerics contract), so every ISA variant reproduces the portable one bit for bit:
//!
//! - `f32`, `f16` matvecs: one sequential f32 sum per row, left to right (llama2.c `matmul`).
//! - `q8_0`, `q4_0`, `q4_16` matvecs: the input is quantized once per matvec to q8_0 blocks; per
//!   block an exact i32 dot of the quants, then blocks summed in f32 in index
//!   order (see each module's header). The exact block sums come from one
//!   [`BlockSums`] per instruction set, chosen by [`Isa::best`].
//! - attention ([`scores_f32`], [`scores_i8`], [`mix_f32_head8`]) and the softmax
//!   exponentials ([`exp_shifted`]): the orders documented in `kv.rs`, the FPU asm
//!   doing the same operations as the portable loops.

pub mod arm_dsp;
#[cfg(microlm_fpu)]
#[macro_use]
pub mod arm_fpu;
#[cfg(microlm_mve)]
pub mod arm_mve;
pub mod f16;
pub mod f32;
pub mod generic;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod q4_0;
pub mod q4_16;
pub mod q8_0;
pub mod q8_act;
#[doc(hidden)]
pub mod suite;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use crate::dtype::DType;
pub use crate::dtype::QK;
use crate::error::SessionError;
pub use generic::Portable;

/// Bytes of prepared activation scratch ([`q8_act`]) for an input of `cols` values.
pub fn act_scratch_bytes(cols: usize) -> Option<usize> {
    q8_act::words(cols)?.checked_mul(4)
}

/// An instruction set with its own block sums. Only the ones this target can
/// compile are variants; [`Isa::best`] is the single choice the runtime makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Isa {
    /// [`Portable`] integer loops (what a host compiler vectorizes).
    Portable,
    /// Cortex-M4/M7 DSP extension: SXTB16 and SMLAD asm ([`arm_dsp`]).
    #[cfg(microlm_dsp)]
    ArmDsp,
    /// Cortex-M55 MVE (Helium): VMLADAV asm ([`arm_mve`]).
    #[cfg(microlm_mve)]
    Mve,
    /// aarch64 NEON ([`neon`]).
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// x86-64 SSSE3/SSE4.1 ([`x86`]).
    #[cfg(target_arch = "x86_64")]
    Sse41,
    /// x86-64 AVX2 ([`x86`]).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// Every instruction set compiled into this build, slowest first.
    pub const ALL: &'static [Isa] = &[
        Isa::Portable,
        #[cfg(microlm_dsp)]
        Isa::ArmDsp,
        #[cfg(microlm_mve)]
        Isa::Mve,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon,
        #[cfg(target_arch = "x86_64")]
        Isa::Sse41,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2,
    ];

    /// Whether this CPU runs the instruction set: fixed at compile time on Arm,
    /// detected at run time on x86-64 (under `std`; without it, the target features).
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(microlm_dsp)]
            Isa::ArmDsp => true,
            #[cfg(microlm_mve)]
            Isa::Mve => true,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Sse41 => x86::has_sse41(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::has_avx2(),
        }
    }

    /// The fastest available instruction set: a constant on Arm (the MVE asm on
    /// Cortex-M55, the DSP asm on Cortex-M4/M7, NEON on aarch64, else portable), on x86-64 AVX2 → SSE4.1 →
    /// portable, detected once and cached.
    #[inline(always)]
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        return x86::detected();
        #[cfg(microlm_mve)]
        return Isa::Mve;
        #[cfg(all(microlm_dsp, not(microlm_mve)))]
        return Isa::ArmDsp;
        #[cfg(target_arch = "aarch64")]
        return Isa::Neon;
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", microlm_dsp, microlm_mve)))]
        return Isa::Portable;
    }
}

/// `out (rows) = w (rows, cols) · x (cols)` for f32 rows: several rows at once
/// with AVX2 (`x86`), NEON (`neon`) or the hard-float Cortex-M FPU (`arm_fpu`,
/// four rows per VLDM loop, whatever `isa`), else [`f32::matvec`]; the same bits
/// every way.
#[inline(always)]
fn f32_matvec_on(isa: Isa, w: &[u8], x: &[f32], out: &mut [f32]) {
    #[cfg(microlm_fpu)]
    if arm_fpu::matvec_f32(w, x, out) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && x86::matvec_f32(w, x, out) {
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if isa == Isa::Neon && neon::matvec_f32(w, x, out) {
        return;
    }
    let _ = isa;
    f32::matvec(w, x, out)
}

/// `out (rows) = w (rows, cols) · x` for q8_0 or q4_0 rows of `row_bytes` bytes,
/// with `xq` the prepared activations and the block sums of `isa` (one the CPU
/// lacks runs the portable ones).
#[inline(always)]
pub(crate) fn quantized_matvec_on(isa: Isa, dtype: DType, w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    match isa {
        // Hard-float cores run q8_0 two rows at a time with the scales on the FPU.
        #[cfg(all(microlm_dsp, microlm_fpu))]
        Isa::ArmDsp if dtype == DType::Q8_0 => arm_dsp::matvec_q8(w, row_bytes, xq, out),
        #[cfg(microlm_dsp)]
        Isa::ArmDsp => quantized_matvec::<arm_dsp::Dsp>(dtype, w, row_bytes, xq, out),
        #[cfg(microlm_mve)]
        Isa::Mve if dtype == DType::Q4_16 => quantized_matvec::<arm_mve::Mve>(dtype, w, row_bytes, xq, out),
        #[cfg(microlm_mve)]
        Isa::Mve => arm_mve::matvec(dtype, w, row_bytes, xq, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::matvec(dtype, w, row_bytes, xq, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Sse41 | Isa::Avx2 => x86::matvec(isa, dtype, w, row_bytes, xq, out),
        Isa::Portable => quantized_matvec::<Portable>(dtype, w, row_bytes, xq, out),
    }
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
    } else if dtype == DType::Q4_16 {
        rows.for_each(|(o, row)| *o = q4_16::vec_dot_with::<B>(row, xq));
    } else {
        rows.for_each(|(o, row)| *o = q8_0::vec_dot_with::<B>(row, xq));
    }
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

/// Exact integer sums of one weight block with prepared activations ([`q8_act`]),
/// one implementation per instruction set: [`Portable`], `arm_dsp::Dsp` on
/// Cortex-M4/M7 (and [`arm_dsp::Emulated`] on every target), `arm_mve::Mve` on Cortex-M55, SSE4.1/AVX2 in
/// `x86`, NEON in `neon`; [`Isa::best`] picks one. All return the same integers.
pub trait BlockSums {
    /// Σ_{i<32} w\[i\]·x\[i\] for a q8_0 block's 32 signed quants (element order).
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32;
    /// Σ_{i<32} nibble_i·x\[i\] for a q4_0 block's 16 nibble bytes (element i in
    /// the low nibble of byte i, 16+i in the high one); the −8 offset is the caller's.
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32;

    /// (Σ_{j<16} (lo_j − 8)·x\[j\], Σ_{j<16} (hi_j − 8)·x\[16 + j\]) for 16 nibble bytes
    /// in q4_0's order: the two half sums of a q4_16 block, offset included. By
    /// default two [`q4`](Self::q4) sums, each with the other half's nibbles set to 8
    /// (zero weight after the offset), less 8·Σx; an instruction set may take both
    /// halves in one pass.
    #[inline(always)]
    fn q4_halves(nibbles: &[u8; 16], x: &[u32; 16], x_sum: i32) -> (i32, i32) {
        let (mut lo, mut hi) = ([0u8; 16], [0u8; 16]);
        for ((l, h), q) in lo.chunks_exact_mut(4).zip(hi.chunks_exact_mut(4)).zip(nibbles.chunks_exact(4)) {
            let w = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            l.copy_from_slice(&((w & 0x0f0f_0f0f) | 0x8080_8080).to_le_bytes());
            h.copy_from_slice(&((w & 0xf0f0_f0f0) | 0x0808_0808).to_le_bytes());
        }
        (Self::q4(&lo, x) - 8 * x_sum, Self::q4(&hi, x) - 8 * x_sum)
    }
}

/// Attention scores over an f32 cache: for each slot `i < out.len()`,
/// `out[i] = (Σ_j q[j] · rows[i·stride + offset + j], j left to right from 0.0) / sqrt_head`,
/// and returns `max(max_in, out[..])` (as `if v > max { max = v }`, so NaNs are skipped).
/// `rows` holds the slots' rows (`out.len()` × `stride` values); the head
/// is `q.len()` values at `offset` in each. Hard-float Cortex-M runs 8-wide
/// heads in contiguous rows (`stride` 8, the f32 cache's head-major layout) in
/// `arm_fpu::scores8`, where a score whose products are all zero may come out
/// as −0.0 rather than +0.0 (the same in every comparison, and exp(score − max)
/// is the same either way). On MVE (Cortex-M55), when `moderate_rows` says every
/// value of `rows` is [`moderate`] and `q` is too, 8-wide heads in contiguous rows
/// run four slots per step in vector lanes (`arm_mve::scores8`, the same bits).
///
/// `floor` is lowered to the least score (all finite) where the kernel knows it
/// (`arm_mve::scores8`), else set to −∞; it stays as it is when `out` is empty.
/// [`mix_f32_head8`] takes the least of a head's floors.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn scores_f32(
    q: &[f32],
    rows: &[f32],
    stride: usize,
    offset: usize,
    sqrt_head: f32,
    max_in: f32,
    out: &mut [f32],
    moderate_rows: bool,
    floor: &mut f32,
) -> f32 {
    if out.is_empty() {
        return max_in;
    }
    #[cfg(microlm_mve)]
    if let (Ok(q8), 8, 0, true) = (<&[f32; 8]>::try_from(q), stride, offset, moderate_rows) {
        if let Some((max, min)) = arm_mve::scores8(q8, rows, sqrt_head, max_in, out) {
            if min < *floor {
                *floor = min;
            }
            return max;
        }
    }
    *floor = f32::NEG_INFINITY;
    #[cfg(not(microlm_mve))]
    let _ = moderate_rows;
    #[cfg(target_arch = "x86_64")]
    if let (Ok(q8), 8, 0) = (<&[f32; 8]>::try_from(q), stride, offset) {
        if let Some(max) = x86::scores8(q8, rows, sqrt_head, max_in, out) {
            return max;
        }
    }
    #[cfg(microlm_fpu)]
    if let (Ok(q8), 8, 0) = (<&[f32; 8]>::try_from(q), stride, offset) {
        if let Some(max) = arm_fpu::scores8(q8, rows, sqrt_head, max_in, out) {
            return max;
        }
    }
    generic::scores_f32(q, rows, stride, offset, sqrt_head, max_in, out)
}

/// Whether every value of `x` is 0 or finite with 2^-50 ≤ |v| ≤ 2^50 (NaN is not):
/// dot products of such values meet no subnormal (each nonzero product lies in
/// [2^-100, 2^100], so it and every partial sum are 0 or multiples of 2^-123 below
/// 2^103), so vector float units that flush subnormals (MVE) give the scalar bits.
/// On MVE the test runs in integer lanes (`arm_mve::moderate`, the same answer).
#[inline]
pub fn moderate(x: &[f32]) -> bool {
    #[cfg(microlm_mve)]
    return arm_mve::moderate(x);
    // |v| as bits orders like |v| (NaN above infinity): 0, or 2^-50 ..= 2^50.
    #[cfg(not(microlm_mve))]
    x.iter().fold(true, |ok, &v| {
        let b = v.to_bits() & 0x7fff_ffff;
        ok & (b == 0 || b.wrapping_sub(MODERATE_MIN) <= MODERATE_MAX - MODERATE_MIN)
    })
}

/// The bits of 2^-50 and 2^50, [`moderate`]'s bounds on |v|.
const MODERATE_MIN: u32 = (127 - 50) << 23;
const MODERATE_MAX: u32 = (127 + 50) << 23;

/// RoPE's rotation of the pairs of `q` and `k` (whole heads of `rotation.len()` values)
/// by `rotation` ((cos, sin) per pair of a head) where this target has a kernel for it
/// (MVE, `arm_mve::rope`, when its guard holds; the same bits as `math::rope_rotate`'s
/// loop): returns whether it did each; `false` (that one untouched) sends the caller to its loop.
#[inline(always)]
pub fn rope_qk(q: &mut [f32], k: &mut [f32], rotation: &[f32]) -> [bool; 2] {
    #[cfg(microlm_mve)]
    return arm_mve::rope(q, k, rotation);
    #[cfg(not(microlm_mve))]
    {
        let _ = (q, k, rotation);
        [false; 2]
    }
}

/// Σ_i q\[i\]·k\[i\] for i16 values `q` (as words: [`q8_act`] pair order for each
/// whole group of four, the remaining `k.len() % 4` in element order) and signed
/// bytes `k`, exact in i32: two SMLAD per four bytes on Cortex-M4/M7 ([`arm_dsp`]),
/// the same operations emulated elsewhere.
#[inline(always)]
pub fn dot_i16_i8(q: &[u32], k: &[u8]) -> i32 {
    arm_dsp::dot_i16_i8(q, k)
}

/// Attention scores over an i8 cache with the query quantized to i16 (`query`,
/// scale `q_scale`, see `kv.rs`): for each slot `i < out.len()`,
/// `out[i] = dot_i16_i8(query, head of row i) as f32 · (q_scale · row_scales[i]) / sqrt_head`,
/// the head being `head_size` bytes at `offset` in each `stride`-byte row of `rows`;
/// returns the maximum as [`scores_f32`] does.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn scores_i8(
    query: &[u32],
    q_scale: f32,
    rows: &[u8],
    row_scales: &[f32],
    stride: usize,
    offset: usize,
    head_size: usize,
    sqrt_head: f32,
    max_in: f32,
    out: &mut [f32],
) -> f32 {
    let mut max = max_in;
    for ((score, row), &k_scale) in out.iter_mut().zip(rows.chunks_exact(stride)).zip(row_scales) {
        let sumi = dot_i16_i8(query, &row[offset..offset + head_size]);
        let v = sumi as f32 * (q_scale * k_scale) / sqrt_head;
        *score = v;
        if v > max {
            max = v;
        }
    }
    max
}

/// The fused softmax-weighted value sum of one 8-wide head of an f32 cache:
/// `out[j] = (Σ_i e_i · values[8·i + j]) / Σ_i e_i` with
/// `e_i = exp(scores[i] − max)`, both sums over slots in index order, `values`
/// the head's contiguous rows (the head-major layout). `Some(())` when this
/// target has such a kernel (x86-64 with AVX2, `x86::mix8`; hard-float Cortex-M, `arm_fpu`; on MVE the
/// exponentials in vector lanes, `arm_mve::mix8`, which leaves the e_i in
/// `scores`); `None` (doing nothing) sends the caller to the portable column loops
/// of `kv.rs`, which give the same bits. `floor` is a lower bound of every score
/// or −∞ (see [`scores_f32`]), `moderate_values` whether every value is
/// [`moderate`]; MVE uses them to skip range checks and to sum the values in
/// vector lanes.
#[inline(always)]
pub fn mix_f32_head8(
    scores: &mut [f32],
    max: f32,
    floor: f32,
    values: &[f32],
    moderate_values: bool,
    out: &mut [f32; 8],
) -> Option<()> {
    #[cfg(not(microlm_mve))]
    let _ = (floor, moderate_values);
    #[cfg(microlm_mve)]
    {
        arm_mve::mix8(scores, max, floor, values, moderate_values, out);
        Some(())
    }
    #[cfg(all(microlm_fpu, not(microlm_mve)))]
    {
        arm_fpu::mix8(scores, max, values, out);
        Some(())
    }
    #[cfg(target_arch = "x86_64")]
    {
        x86::mix8(scores, max, values, out).then_some(())
    }
    #[cfg(not(any(microlm_fpu, target_arch = "x86_64")))]
    {
        let _ = (scores, max, values, out);
        None
    }
}

/// The f16-cache attention scores and the portable value mixes over W columns of
/// each cache dtype (the fused 8-wide f32 kernel where a target has one is
/// [`mix_f32_head8`]); see [`generic`] for their orders.
pub use generic::{mix_f16, mix_f32, mix_i8, scores_f16};

/// The first largest of `x[..8 · (x.len() / 8)]` (as `if v > best { best = v }` from
/// `x[0]`, NaNs never chosen) and whether those values are all finite, as (index,
/// value, finite), where this target has a loop for it (hard-float Cortex-M; on MVE
/// integer lanes when the values are finite and one is positive); `None` sends the
/// caller to its own loop.
#[inline(always)]
pub fn argmax8(x: &[f32]) -> Option<(usize, f32, bool)> {
    #[cfg(microlm_mve)]
    return arm_mve::argmax8(x);
    #[cfg(all(microlm_fpu, not(microlm_mve)))]
    return arm_fpu::argmax8(x);
    #[cfg(not(microlm_fpu))]
    {
        let _ = x;
        None
    }
}

/// SwiGLU (`gate[i] = silu(gate[i]) · up[i]`, `math::swiglu`'s expression) over
/// the first values of `gate`, four at a time, where this target has a loop for it
/// (hard-float Cortex-M; on MVE in vector lanes, falling back to the FPU loop for a
/// step outside exp's fast range; the same bits): returns how many it did (0
/// elsewhere), stopping before a step with a value outside exp's fast path.
#[inline(always)]
pub fn swiglu4(gate: &mut [f32], up: &[f32]) -> usize {
    #[cfg(microlm_mve)]
    {
        let done = arm_mve::swiglu4(gate, up);
        if done > 0 {
            return done;
        }
    }
    #[cfg(microlm_fpu)]
    return arm_fpu::swiglu4(gate, up).unwrap_or(0);
    #[cfg(not(microlm_fpu))]
    {
        let _ = (gate, up);
        0
    }
}

/// `(8 · (x.len() / 8), Σ x_i²)` over those values, left to right, where this target has
/// a loop for it (Cortex-M55: `arm_mve::squares8`, an FPU loop of VMLA); `(0, 0.0)` elsewhere.
#[inline(always)]
pub fn squares8(x: &[f32]) -> (usize, f32) {
    #[cfg(microlm_mve)]
    return arm_mve::squares8(x);
    #[cfg(not(microlm_mve))]
    {
        let _ = x;
        (0, 0.0)
    }
}

/// `x[i] += d[i]` for i < 8 · (min(x.len(), d.len()) / 8) and Σ x_i² of the results,
/// left to right, as `(count, sum)`, where this target has a loop for it (Cortex-M55:
/// `arm_mve::add_squares8`); `(0, 0.0)` (nothing done) elsewhere.
#[inline(always)]
pub fn add_squares8(x: &mut [f32], d: &[f32]) -> (usize, f32) {
    #[cfg(microlm_mve)]
    return arm_mve::add_squares8(x, d);
    #[cfg(not(microlm_mve))]
    {
        let _ = (x, d);
        (0, 0.0)
    }
}

/// `out[i] = weight[i] · (scale · x[i])` for whole groups of eight of the shortest
/// slice, where this target has a loop for it (Cortex-M55: `arm_mve::norm8`);
/// returns how many it did (0 elsewhere).
#[inline(always)]
pub fn norm8(out: &mut [f32], x: &[f32], weight: &[f32], scale: f32) -> usize {
    #[cfg(microlm_mve)]
    return arm_mve::norm8(out, x, weight, scale);
    #[cfg(not(microlm_mve))]
    {
        let _ = (out, x, weight, scale);
        0
    }
}

/// [`norm8`] in place: `x[i] = weight[i] · (scale · x[i])` for whole groups of eight
/// (Cortex-M55: `arm_mve::norm8_in_place`); returns how many it did (0 elsewhere).
#[inline(always)]
pub fn norm8_in_place(x: &mut [f32], weight: &[f32], scale: f32) -> usize {
    #[cfg(microlm_mve)]
    return arm_mve::norm8_in_place(x, weight, scale);
    #[cfg(not(microlm_mve))]
    {
        let _ = (x, weight, scale);
        0
    }
}

/// √x, correctly rounded (IEEE 754): VSQRT on hard-float Cortex-M, `libm::sqrtf`
/// elsewhere (the same bits; the kernel suite checks them on the device).
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    #[cfg(microlm_fpu)]
    return arm_fpu::sqrt(x);
    #[cfg(not(microlm_fpu))]
    return libm::sqrtf(x);
}

/// Whether [`exp_shifted`] runs as a separate vectorizable pass here (SIMD hosts),
/// so the value mix should not compute the exponentials itself.
pub const EXP_SEPARATE_PASS: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// `x[i] = exp(x[i] - max)` in place; returns the sum, accumulated in index order
/// (softmax without the division, which attention folds into its value pass).
/// SIMD hosts take a branch-free pass the compiler vectorizes, hard-float
/// Cortex-M an FPU loop (`arm_fpu::exp_shifted_run`), other cores one scalar
/// pass: the same values and sum everywhere.
#[inline]
pub fn exp_shifted(x: &mut [f32], max: f32) -> f32 {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return generic::exp_shifted_branch_free(x, max);
    #[cfg(microlm_fpu)]
    return arm_fpu::exp_shifted(x, max);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", microlm_fpu)))]
    return generic::exp_shifted(x, max);
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
    /// (words, so always aligned: at least `act_scratch_bytes(cols) / 4` of them; f32/f16 weights ignore it).
    pub fn matvec(&self, x: &[f32], out: &mut [f32], scratch: &mut [u32]) -> Result<(), SessionError> {
        self.matvec_with(Isa::best(), x, out, scratch, &mut None)
    }

    /// `outᵢ (rowsᵢ) = mᵢ · x` for each `(mᵢ, outᵢ)` of `mats`, in order: the same bits as
    /// one [`Matrix::matvec`] each, but consecutive quantized matrices with the same
    /// `cols` share one quantization of `x` in `scratch` (as wq, wk and wv, or w1 and w3, do).
    pub fn matvecs<const N: usize>(
        mats: [(Matrix<'_>, &mut [f32]); N],
        x: &[f32],
        scratch: &mut [u32],
    ) -> Result<(), SessionError> {
        let mut prepared = None;
        for (m, out) in mats {
            m.matvec_with(Isa::best(), x, out, scratch, &mut prepared)?;
        }
        Ok(())
    }

    /// [`Matrix::matvec`] with the block sums of `isa` (the same bits for every `isa`;
    /// one the CPU lacks runs the portable sums).
    pub fn matvec_on(&self, isa: Isa, x: &[f32], out: &mut [f32], scratch: &mut [u32]) -> Result<(), SessionError> {
        self.matvec_with(isa, x, out, scratch, &mut None)
    }

    /// The body of [`Matrix::matvec`], [`Matrix::matvec_on`] and [`Matrix::matvecs`], inlined
    /// so the forward pass makes one call per matvec. `prepared` is `Some((cols, narrowed))`
    /// when `scratch` already holds `x` quantized for `cols` columns, as prepared words or
    /// (`narrowed`, MVE) as i8 blocks (this call then skips quantizing when both match),
    /// and is updated after quantizing.
    #[inline(always)]
    fn matvec_with(
        &self,
        isa: Isa,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut [u32],
        prepared: &mut Option<(usize, bool)>,
    ) -> Result<(), SessionError> {
        let x = &x[..self.cols.min(x.len())];
        let rows = self.rows.min(out.len());
        let out = &mut out[..rows];
        match self.dtype {
            DType::F32 => f32_matvec_on(isa, self.data, x, out),
            DType::F16 => f16::matvec(self.data, x, out),
            // All ones: each row is the sum of x, left to right.
            DType::Ones => out.fill(x.iter().fold(0.0f32, |s, &v| s + v)),
            DType::Q8_0 | DType::Q4_0 | DType::Q4_16 => {
                let words = q8_act::words(self.cols).ok_or(SessionError::Internal)?;
                let row_bytes = self.dtype.row_bytes(self.cols).ok_or(SessionError::Internal)?;
                let too_small = SessionError::ScratchTooSmall { needed: words * 4, given: scratch.len() * 4 };
                let xq = scratch.get_mut(..words).ok_or(too_small)?;
                // MVE's q8_0 and q4_0 rows read the activations as i8 blocks, prepared so once
                // for the matvecs of one input (its block sums are the same integers).
                #[cfg(microlm_mve)]
                if isa == Isa::Mve && self.dtype != DType::Q4_16 {
                    if *prepared != Some((self.cols, true)) {
                        arm_mve::prepare_row_narrow(x, xq);
                        *prepared = Some((self.cols, true));
                    }
                    arm_mve::matvec_narrowed(self.dtype, self.data, row_bytes, xq, out);
                    return Ok(());
                }
                if *prepared != Some((self.cols, false)) {
                    // A short `x` leaves its missing tail at zero, like the row padding
                    // (prepare_row writes every word of the blocks that hold values of `x`).
                    let written = x.len().div_ceil(QK) * q8_act::BLOCK_WORDS;
                    if let Some(tail) = xq.get_mut(written..) {
                        tail.fill(0);
                    }
                    q8_act::prepare_row(x, xq);
                    *prepared = Some((self.cols, false));
                }
                quantized_matvec_on(isa, self.dtype, self.data, row_bytes, xq, out);
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
            DType::Q4_16 => q4_16::dequantize_row(bytes, out),
            DType::Ones => out.fill(1.0),
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
                let mut out = vec![0u32; q8.len() / q8_0::BLOCK_BYTES * $crate::kernels::q8_act::BLOCK_WORDS];
                for (b, w) in
                    q8.chunks_exact(q8_0::BLOCK_BYTES).zip(out.chunks_exact_mut($crate::kernels::q8_act::BLOCK_WORDS))
                {
                    $crate::kernels::q8_act::prepare_block(b, w);
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
    use std::vec;
    use std::vec::Vec;

    use super::{q8_0, q8_act, QK};

    /// [`values`] with a few signed zeros, subnormals and huge products mixed in.
    pub fn awkward(n: usize, seed: u64) -> Vec<f32> {
        let mut v = values(n, seed);
        for (i, x) in v.iter_mut().enumerate() {
            match (i as u64 + seed) % 23 {
                3 => *x = -0.0,
                7 => *x = f32::from_bits(0x0000_0123),
                11 => *x *= 1e30,
                _ => {}
            }
        }
        v
    }

    /// The bit patterns of `v`, to compare results bit for bit.
    pub fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// `fast` (an f32 matvec that returns whether it ran) on awkward values of a
    /// `rows` × `cols` matrix runs and equals the portable loop bit for bit.
    pub fn f32_matvec_matches(rows: usize, cols: usize, fast: impl Fn(&[u8], &[f32], &mut [f32]) -> bool) {
        let w = awkward(rows * cols, (rows * 1000 + cols) as u64);
        let x = awkward(cols, cols as u64 + 7);
        let (mut got, mut want) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
        assert!(fast(bytemuck::cast_slice(&w), &x, &mut got));
        super::f32::matvec(bytemuck::cast_slice(&w), &x, &mut want);
        assert_eq!(bits(&got), bits(&want), "rows {rows} cols {cols}");
    }

    /// A q8_0 matrix (rows, cols) of [`values`], its row length in bytes, one
    /// q8_0 activation row x8 (cols) and x8's prepared words for the matvec.
    pub fn q8_0_case(rows: usize, cols: usize) -> (Vec<u8>, usize, Vec<u8>, Vec<u32>) {
        let nb = cols.div_ceil(QK);
        let row_bytes = nb * q8_0::BLOCK_BYTES;
        let mut data = vec![0u8; rows * row_bytes];
        for (r, row) in data.chunks_exact_mut(row_bytes).enumerate() {
            q8_0::quantize_row(&values(cols, (r * 31 + cols) as u64), row);
        }
        let mut x8 = vec![0u8; row_bytes];
        q8_0::quantize_row(&values(cols, cols as u64 + 99), &mut x8);
        let mut xq = vec![0u32; nb * q8_act::BLOCK_WORDS];
        for (b, words) in x8.chunks_exact(q8_0::BLOCK_BYTES).zip(xq.chunks_exact_mut(q8_act::BLOCK_WORDS)) {
            q8_act::prepare_block(b, words);
        }
        (data, row_bytes, x8, xq)
    }

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
