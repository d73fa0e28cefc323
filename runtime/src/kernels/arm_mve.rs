//! Cortex-M55 MVE (Helium, Armv8.1-M) asm for the quantized matvecs
//! (`cfg(microlm_mve)`: built with `-C target-cpu=cortex-m55`; see build.rs).
//!
//! The integer sums are vectorized (VMLADAV's destination is an even
//! register): `VMLADAV.S8` multiplies 16 byte
//! lanes and sums them into a general register, exactly (|sum| < 2^31), so a
//! block's integer sum equals [`Portable`](super::Portable)'s in any lane order.
//! MVE's float instructions run under the standard FPSCR value (subnormal inputs
//! and results flushed to zero, default NaN). The four-row q8_0 loop
//! ([`rows4_q8`]) still does its f32 part in MVE lanes, one row per lane, because
//! no subnormal can occur there (its doc gives the argument); the pair and single-row
//! loops keep it scalar FPv5 (`VCVTB.F32.F16`, `VMUL.F32`, `VADD.F32` under the
//! default FPSCR, as the compiled portable code).
//!
//! The range tests compare in lanes (`VCMP`, `VPST`), which writes the predicate
//! register VPR; `asm!` cannot name it as clobbered. That is sound because
//! compiled code keeps no predicate live across these calls: MVE builds turn
//! LLVM's loop and SLP vectorizers off (`-C no-vectorize-loops -C
//! no-vectorize-slp`, which `runtime/build.rs` checks), so only this asm uses
//! vector instructions.
//!
//! [`matvec`] (what [`Isa::Mve`](super::Isa::Mve) runs) first narrows the
//! prepared activations ([`q8_act`](super::q8_act): i16 in pair order) back to
//! i8 in element order, with their f32 scale, for up to [`CHUNK_BLOCKS`]
//! blocks at a time (`VLDRH` then a narrowing scatter `VSTRB.16`), then runs
//! the rows over that chunk in asm loops (low-overhead `DLS`/`LE`) that take four
//! q8_0 rows (two q4_0 rows) at a time, sharing the activation loads, and a
//! leftover pair or row alone:
//!
//! ```text
//! per row r, per block b of the chunk (index order):
//!     sumi = VMLADAV.S8(w[0..16], x[0..16]) + VMLADAVA.S8(w[16..32], x[16..32])
//!                                  (q4_0: nibbles − 8 as bytes, low then high)
//!     out[r] += (sumi as f32) · (f32(w.d) · x.d)
//! ```
//!
//! `out[r]` starts at 0.0 and carries over from chunk to chunk, so each row is
//! one sequential f32 sum over its blocks in index order: the contract of
//! `q8_0` / `q4_0`, bit for bit. [`Mve`] is the same block sums on the prepared
//! i16 words (a gather `VLDRB.S16` puts the weights in pair order), for the
//! kernel suite's [`BlockSums`] checks.
#![allow(unsafe_code)]

use core::arch::asm;
use core::mem::MaybeUninit;

use super::{q4_0, q8_0, q8_act, BlockSums, QK};
use crate::dtype::DType;

/// Blocks of activations narrowed at a time: 36 bytes each on the stack (1,152 bytes).
pub const CHUNK_BLOCKS: usize = 32;

/// Bytes of one narrowed activation block: the f32 scale, then 32 i8 quants in element order.
const NARROW_BYTES: usize = 4 + QK;

/// Lane offsets (u16) that take the pair-order positions 0..8 of a group of
/// eight to their elements: positions 0, 1, 2, 3 hold elements 0, 2, 1, 3.
static PAIR_OFFSETS: [u16; 8] = [0, 2, 1, 3, 4, 6, 5, 7];

/// The MVE block sums on prepared i16 words (for the [`BlockSums`] checks;
/// the matvec uses [`matvec`]).
#[derive(Debug)]
pub struct Mve;

impl BlockSums for Mve {
    #[inline(always)]
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        let sum: i32;
        // SAFETY: reads the 32 bytes of `w`, the 64 bytes of `x` and the 16 of PAIR_OFFSETS
        // (borrowed, in bounds: four groups of 8 bytes / 16 bytes); writes only the named
        // registers and q0-q2 (d0-d5, declared clobbered). MVE is present (cfg(microlm_mve)).
        unsafe {
            asm!(
                "vldrh.u16 q2, [{off}]",
                "vldrb.s16 q0, [{w}, q2]",
                "vldrh.u16 q1, [{x}]",
                "vmladav.s16 r0, q0, q1",
                "adds {w}, #8",
                "vldrb.s16 q0, [{w}, q2]",
                "vldrh.u16 q1, [{x}, #16]",
                "vmladava.s16 r0, q0, q1",
                "adds {w}, #8",
                "vldrb.s16 q0, [{w}, q2]",
                "vldrh.u16 q1, [{x}, #32]",
                "vmladava.s16 r0, q0, q1",
                "adds {w}, #8",
                "vldrb.s16 q0, [{w}, q2]",
                "vldrh.u16 q1, [{x}, #48]",
                "vmladava.s16 r0, q0, q1",
                off = in(reg) PAIR_OFFSETS.as_ptr(),
                w = inout(reg) w.as_ptr() => _,
                x = in(reg) x.as_ptr(),
                out("r0") sum,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _,
                options(readonly, nostack),
            );
        }
        sum
    }

    #[inline(always)]
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        let sum: i32;
        // SAFETY: reads the 16 bytes of `nibbles`, the 64 bytes of `x` and PAIR_OFFSETS (in
        // bounds, as above); writes only the named registers and q0-q3 (d0-d7, clobbered).
        unsafe {
            asm!(
                "vldrh.u16 q2, [{off}]",
                "vmov.i16 q3, #15",
                // Bytes 0..8 in pair order: elements 0..8 (low nibbles) and 16..24 (high).
                "vldrb.u16 q0, [{w}, q2]",
                "vand q1, q0, q3",
                "vshr.u16 q0, q0, #4",
                "vldrh.u16 q3, [{x}]",
                "vmladav.s16 r0, q1, q3",
                "vldrh.u16 q3, [{x}, #32]",
                "vmladava.s16 r0, q0, q3",
                // Bytes 8..16: elements 8..16 and 24..32.
                "adds {w}, #8",
                "vmov.i16 q3, #15",
                "vldrb.u16 q0, [{w}, q2]",
                "vand q1, q0, q3",
                "vshr.u16 q0, q0, #4",
                "vldrh.u16 q3, [{x}, #16]",
                "vmladava.s16 r0, q1, q3",
                "vldrh.u16 q3, [{x}, #48]",
                "vmladava.s16 r0, q0, q3",
                off = in(reg) PAIR_OFFSETS.as_ptr(),
                w = inout(reg) nibbles.as_ptr() => _,
                x = in(reg) x.as_ptr(),
                out("r0") sum,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                options(readonly, nostack),
            );
        }
        sum
    }
}

/// Narrows `blocks` prepared activation blocks (`xq`, [`q8_act::BLOCK_WORDS`] words each)
/// into `out`: per block its f32 scale, then its 32 quants as i8 in element order.
/// Returns how many blocks it wrote (at most `blocks`, as many as `xq` and `out` hold);
/// `out` may start uninitialized: every byte of those blocks is written.
fn narrow(xq: &[u32], out: &mut [MaybeUninit<u32>], blocks: usize) -> usize {
    let blocks = blocks.min(out.len() * 4 / NARROW_BYTES).min(xq.len() / q8_act::BLOCK_WORDS);
    let dst = out.as_mut_ptr().cast::<u8>();
    for (b, src) in xq.chunks_exact(q8_act::BLOCK_WORDS).take(blocks).enumerate() {
        // SAFETY: block b's 36 bytes (b < blocks ≤ out.len() · 4 / 36) lie inside `out`, at a
        // multiple of 4 bytes from its (word-aligned) start: the scale is an aligned word write.
        let dst = unsafe { dst.add(b * NARROW_BYTES) };
        // SAFETY: as above.
        unsafe { dst.cast::<u32>().write(src[0]) };
        // SAFETY: reads the 16 pair words of `src` (64 bytes: words 2..18 of the block) and
        // PAIR_OFFSETS; writes the 32 quant bytes of the block (bytes 4..36 after `dst`; each
        // scatter writes the low bytes of 8 halfwords at offsets 0..8 from its base). Only
        // q0, q1 (d0-d3) change.
        unsafe {
            asm!(
                "vldrh.u16 q1, [{off}]",
                "vldrh.u16 q0, [{src}], #16",
                "vstrb.16 q0, [{dst}, q1]",
                "adds {dst}, #8",
                "vldrh.u16 q0, [{src}], #16",
                "vstrb.16 q0, [{dst}, q1]",
                "adds {dst}, #8",
                "vldrh.u16 q0, [{src}], #16",
                "vstrb.16 q0, [{dst}, q1]",
                "adds {dst}, #8",
                "vldrh.u16 q0, [{src}]",
                "vstrb.16 q0, [{dst}, q1]",
                off = in(reg) PAIR_OFFSETS.as_ptr(),
                src = inout(reg) src[2..].as_ptr() => _,
                dst = inout(reg) dst.add(4) => _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                options(nostack),
            );
        }
    }
    blocks
}

/// `acc + Σ_b (sumi_b as f32) · (f32(w_b.d) · x_b.d)` over `blocks` q8_0 blocks at `w`
/// and narrowed activation blocks at `x`, blocks in index order.
///
/// # Safety
/// `w` must be readable for `blocks × 34` bytes, `x` (4-byte aligned) for `blocks × 36`, `blocks ≥ 1`.
#[inline(always)]
unsafe fn row_q8(w: *const u8, x: *const u8, blocks: usize, acc: f32) -> f32 {
    let mut acc = acc;
    // SAFETY: the caller's contract; only the named registers, lr, s8-s10 and q0, q1 (d0-d3) change.
    unsafe {
        asm!(
            "dls lr, {n}",
            "2:",
            "vldrb.u8 q0, [{w}, #2]",
            "vldr s8, [{x}]",
            "vldrb.u8 q1, [{x}, #4]",
            "vmladav.s8 r2, q0, q1",
            "vldrb.u8 q0, [{w}, #18]",
            "vldrb.u8 q1, [{x}, #20]",
            "vmladava.s8 r2, q0, q1",
            "ldrh {d}, [{w}], #34",
            "adds {x}, #36",
            // f32(w.d) · x.d, then (sumi as f32) · that, then the running sum.
            "vmov s9, {d}",
            "vcvtb.f32.f16 s9, s9",
            "vmul.f32 s9, s9, s8",
            "vmov s10, r2",
            "vcvt.f32.s32 s10, s10",
            "vmul.f32 s10, s10, s9",
            "vadd.f32 {acc}, {acc}, s10",
            "le lr, 2b",
            n = in(reg) blocks,
            w = inout(reg) w => _,
            x = inout(reg) x => _,
            out("r2") _,
            d = out(reg) _,
            acc = inout(sreg) acc,
            out("lr") _,
            out("s8") _, out("s9") _, out("s10") _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            options(readonly, nostack),
        );
    }
    acc
}

/// [`row_q8`] for q4_0 blocks (18 bytes) at `w`: sumi is Σ (nibble − 8) · x.
///
/// # Safety
/// `w` must be readable for `blocks × 18` bytes, `x` (4-byte aligned) for `blocks × 36`, `blocks ≥ 1`.
#[inline(always)]
unsafe fn row_q4(w: *const u8, x: *const u8, blocks: usize, acc: f32) -> f32 {
    let mut acc = acc;
    // SAFETY: the caller's contract; only the named registers, lr, s16-s19 and q0-q3 (d0-d7) change.
    unsafe {
        asm!(
            "vmov.i8 q3, #15",
            "dls lr, {n}",
            "2:",
            "vldrb.u8 q0, [{w}, #2]",
            "vldr s17, [{x}]",
            // Low nibbles (elements 0..16) and high ones (16..32), each minus 8, as signed bytes.
            "vand q2, q0, q3",
            "vshr.u8 q0, q0, #4",
            "vsub.i8 q2, q2, {eight}",
            "vsub.i8 q0, q0, {eight}",
            "vldrb.u8 q1, [{x}, #4]",
            "vmladav.s8 r2, q2, q1",
            "vldrb.u8 q1, [{x}, #20]",
            "vmladava.s8 r2, q0, q1",
            "ldrh {d}, [{w}], #18",
            "adds {x}, #36",
            "vmov s18, {d}",
            "vcvtb.f32.f16 s18, s18",
            "vmul.f32 s18, s18, s17",
            "vmov s19, r2",
            "vcvt.f32.s32 s19, s19",
            "vmul.f32 s19, s19, s18",
            "vadd.f32 s16, s16, s19",
            "le lr, 2b",
            n = in(reg) blocks,
            eight = in(reg) 8u32,
            w = inout(reg) w => _,
            x = inout(reg) x => _,
            out("r2") _,
            d = out(reg) _,
            inout("s16") acc,
            out("lr") _,
            out("s17") _, out("s18") _, out("s19") _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            options(readonly, nostack),
        );
    }
    acc
}

/// [`row_q8`] for two rows at once (`wa`, `wb`), sharing the activation loads:
/// returns `(acc_a', acc_b')`, each row its own sequential sum in block order.
///
/// # Safety
/// `wa` and `wb` must be readable for `blocks × 34` bytes, `x` (4-byte aligned) for
/// `blocks × 36`, `blocks ≥ 1`.
#[inline(always)]
unsafe fn rows2_q8(wa: *const u8, wb: *const u8, x: *const u8, blocks: usize, acc: (f32, f32)) -> (f32, f32) {
    let (mut a, mut b) = acc;
    // SAFETY: the caller's contract; only the named registers, lr, q0-q3 (d0-d7) and
    // s16-s21 change.
    unsafe {
        asm!(
            "dls lr, {n}",
            "2:",
            "vldr s16, [{x}]",
            "vldrb.u8 q1, [{x}, #4]",
            "vldrb.u8 q3, [{x}, #20]",
            "adds {x}, #36",
            "vldrb.u8 q0, [{wa}, #2]",
            "vmladav.s8 r0, q0, q1",
            "vldrb.u8 q2, [{wa}, #18]",
            "vmladava.s8 r0, q2, q3",
            "vldrb.u8 q0, [{wb}, #2]",
            "vmladav.s8 r2, q0, q1",
            "vldrb.u8 q2, [{wb}, #18]",
            "vmladava.s8 r2, q2, q3",
            "ldrh {da}, [{wa}], #34",
            "ldrh {db}, [{wb}], #34",
            // Row a: f32(w.d) · x.d, (sumi as f32) · that, the running sum; then row b.
            "vmov s17, {da}",
            "vcvtb.f32.f16 s17, s17",
            "vmul.f32 s17, s17, s16",
            "vmov s18, r0",
            "vcvt.f32.s32 s18, s18",
            "vmul.f32 s18, s18, s17",
            "vadd.f32 {a}, {a}, s18",
            "vmov s19, {db}",
            "vcvtb.f32.f16 s19, s19",
            "vmul.f32 s19, s19, s16",
            "vmov s20, r2",
            "vcvt.f32.s32 s20, s20",
            "vmul.f32 s20, s20, s19",
            "vadd.f32 {b}, {b}, s20",
            "le lr, 2b",
            n = in(reg) blocks,
            wa = inout(reg) wa => _,
            wb = inout(reg) wb => _,
            x = inout(reg) x => _,
            da = out(reg) _,
            db = out(reg) _,
            a = inout(sreg) a,
            b = inout(sreg) b,
            out("r0") _, out("r2") _, out("lr") _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _, out("s20") _,
            options(readonly, nostack),
        );
    }
    (a, b)
}

/// One q8_0 block of four rows for [`rows4_q8`] and [`rows4_q8_2`]: the activation
/// block at `{x}` (its f32 scale into `{xd}`, its quants into q1 and q3), the four f16
/// scales gathered from `{wa}` with the offsets in q7, each row's exact block sum
/// (`VMLADAV.S8`, pointers `{wa}`..`{wd}` post-indexed) into lane k of q5, then the
/// f32 part into the running sums in q6. Clobbers r0, r2 and q0-q5.
macro_rules! q8_block4 {
    () => {
        concat!(
            "ldr {xd}, [{x}], #4\n",
            "vldrb.u8 q1, [{x}], #16\n",
            "vldrb.u8 q3, [{x}], #16\n",
            // The four f16 scales (a gather from row a's pointer) into the lanes of q4.
            "vldrh.u32 q4, [{wa}, q7]\n",
            // Per row: the exact block sum into a register, then into lane k of q5
            // (one scalar VMOV per lane).
            "vldrb.u8 q0, [{wa}], #16\n",
            "vmladav.s8 r0, q0, q1\n",
            "vldrb.u8 q2, [{wa}], #18\n",
            "vmladava.s8 r0, q2, q3\n",
            "vldrb.u8 q0, [{wb}], #16\n",
            "vmladav.s8 r2, q0, q1\n",
            "vldrb.u8 q2, [{wb}], #18\n",
            "vmladava.s8 r2, q2, q3\n",
            "vmov s20, r0\n",
            "vmov s21, r2\n",
            "vldrb.u8 q0, [{wc}], #16\n",
            "vmladav.s8 r0, q0, q1\n",
            "vldrb.u8 q2, [{wc}], #18\n",
            "vmladava.s8 r0, q2, q3\n",
            "vldrb.u8 q0, [{wd}], #16\n",
            "vmladav.s8 r2, q0, q1\n",
            "vldrb.u8 q2, [{wd}], #18\n",
            "vmladava.s8 r2, q2, q3\n",
            "vmov s22, r0\n",
            "vmov s23, r2\n",
            // f32(w.d) (f16 subnormals exact), · x.d, (sumi as f32) · that,
            // the running sums: lane k is row k.
            "vcvtb.f32.f16 q4, q4\n",
            "vmul.f32 q4, q4, {xd}\n",
            "vcvt.f32.s32 q5, q5\n",
            "vmul.f32 q5, q5, q4\n",
            "vadd.f32 q6, q6, q5\n",
        )
    };
}

/// [`row_q8`] for `quads` groups of four rows at once (group g's rows start at
/// `w + (4g + k)·row_bytes`, k < 4), sharing the activation loads, with the f32
/// part in one MVE lane per row: each row its own sequential sum in block order,
/// carried in `acc` (4 · quads floats, row order), from the values there or (`ZERO`)
/// from 0.0. The loop over the groups is in
/// the asm too (the rows of small models are a few blocks long, so per-group glue counts).
///
/// The MVE float instructions (`VMUL.F32`, `VCVT.F32.S32`, `VADD.F32`) run under the
/// standard FPSCR value, which flushes subnormal inputs and results to zero; here
/// none can occur, so the lanes give the scalar FPU's bits. Both scales are f16
/// values (the weights' four gathered as binary16 and widened by `VCVTB.F32.F16`,
/// whose f16 inputs follow FPSCR.FZ16, which the standard value keeps at 0, so f16
/// subnormals widen exactly: the kernel checks use such scales; the activation's
/// rounded to binary16 by the quantizer), so
/// each is 0 or a multiple of 2^-24 of magnitude ≥ 2^-24, and their product is
/// exact (11 + 11 significant bits), 0 or ≥ 2^-48 and a multiple of 2^-48. The
/// block sum is an integer below 2^20, converted exactly. The term
/// `(sumi as f32) · (w.d · x.d)` and every partial sum of the row are then 0 or
/// multiples of 2^-48 (rounding to a coarser ulp keeps that), never subnormal.
/// Infinities and NaN propagate as on the scalar FPU (a NaN's payload may differ;
/// a NaN logit is an error either way).
///
/// # Safety
/// `w + r·row_bytes` (r < 4 · quads) must be readable for `blocks × 34` bytes, `x`
/// (4-byte aligned) for `blocks × 36`, `acc` writable for 4 · quads floats (4-byte
/// aligned), `blocks ≥ 1`, `quads ≥ 1`.
#[inline(always)]
unsafe fn rows4_q8<const ZERO: bool>(
    w: *const u8,
    row_bytes: usize,
    x: *const u8,
    blocks: usize,
    acc: *mut f32,
    quads: usize,
) {
    // The activations, the blocks, how far the next group's rows start from where this
    // group's pointers end (4·row_bytes after this group's start; the pointers have moved
    // blocks·34 bytes along their rows by then), the end of `acc`, then where the four
    // rows' scales are from row a's pointer (its block's quants): −2, row_bytes − 2, ...
    // (wrapping: the gather adds the offsets modulo 2^32).
    let scale = |k: usize| ((k * row_bytes) as u32).wrapping_sub(2);
    let params: [u32; 8] = [
        x as u32,
        blocks as u32,
        (4 * row_bytes).wrapping_sub(blocks * q8_0::BLOCK_BYTES) as u32,
        // SAFETY: one past the end of `acc` (the caller's contract).
        unsafe { acc.add(4 * quads) } as u32,
        scale(0),
        scale(1),
        scale(2),
        scale(3),
    ];
    // SAFETY: the caller's contract; reads `params`, reads and writes the 4 · quads floats at
    // `acc`; only the named registers, lr and q0-q7 (d0-d15) change; the flags are clobbered.
    unsafe {
        // Each row's pointer starts at its first block's quants (the f16 scale is at −2).
        let wa = w.add(2);
        let (wb, wc, wd) = (wa.add(row_bytes), wa.add(2 * row_bytes), wa.add(3 * row_bytes));
        // The group's running sums start from `acc` or (ZERO) from 0.0.
        macro_rules! rows4 {
            ($init:literal) => {
                asm!(
                    "vldrw.u32 q7, [{p}, #16]",
                    "3:",
                    $init,
                    "ldr lr, [{p}, #4]",
                    "dls lr, lr",
                    "2:",
                    q8_block4!(),
                    "le lr, 2b",
                    "vstrw.32 q6, [{acc}], #16",
                    // The next group of four rows, if any: its pointers, the activations again.
                    "ldr {xd}, [{p}, #8]",
                    "add {wa}, {xd}",
                    "add {wb}, {xd}",
                    "add {wc}, {xd}",
                    "add {wd}, {xd}",
                    "ldr {x}, [{p}]",
                    "ldr {xd}, [{p}, #12]",
                    "cmp {acc}, {xd}",
                    "bne 3b",
                    p = in(reg) params.as_ptr(),
                    acc = inout(reg) acc => _,
                    wa = inout(reg) wa => _,
                    wb = inout(reg) wb => _,
                    wc = inout(reg) wc => _,
                    wd = inout(reg) wd => _,
                    x = inout(reg) x => _,
                    xd = out(reg) _,
                    out("lr") _,
                    out("r0") _, out("r2") _,
                    out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                    out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                    out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _,
                    out("d14") _, out("d15") _,
                    options(nostack),
                );
            };
        }
        if ZERO {
            rows4!("vmov.i32 q6, #0");
        } else {
            rows4!("vldrw.u32 q6, [{acc}]");
        }
    }
}

/// [`rows4_q8`] for a chunk of exactly two blocks per row (rows of 64 values: most
/// matrices of small models), both blocks unrolled and the groups counted by the
/// low-overhead loop: the same operations in the same order, less loop glue.
///
/// # Safety
/// As [`rows4_q8`] with `blocks` = 2.
#[inline(always)]
unsafe fn rows4_q8_2<const ZERO: bool>(w: *const u8, row_bytes: usize, x: *const u8, acc: *mut f32, quads: usize) {
    // The scales' offsets from row a's pointer (as in `rows4_q8`), then how far the next
    // group's rows start from where this group's pointers end (two blocks along).
    let params: [u32; 5] = [
        2u32.wrapping_neg(),
        (row_bytes as u32).wrapping_sub(2),
        ((2 * row_bytes) as u32).wrapping_sub(2),
        ((3 * row_bytes) as u32).wrapping_sub(2),
        (4 * row_bytes).wrapping_sub(2 * q8_0::BLOCK_BYTES) as u32,
    ];
    // SAFETY: the caller's contract; reads `params`, reads and writes the 4 · quads floats at
    // `acc`; only the named registers, lr and q0-q7 (d0-d15) change.
    unsafe {
        let wa = w.add(2);
        let (wb, wc, wd) = (wa.add(row_bytes), wa.add(2 * row_bytes), wa.add(3 * row_bytes));
        // The group's running sums start from `acc` or (ZERO) from 0.0.
        macro_rules! rows4_2 {
            ($init:literal) => {
                asm!(
                    "vldrw.u32 q7, [{step}]",
                    "ldr {step}, [{step}, #16]",
                    "dls lr, lr",
                    "2:",
                    $init,
                    q8_block4!(),
                    q8_block4!(),
                    "vstrw.32 q6, [{acc}], #16",
                    "sub {x}, #72",
                    "add {wa}, {step}",
                    "add {wb}, {step}",
                    "add {wc}, {step}",
                    "add {wd}, {step}",
                    "le lr, 2b",
                    step = inout(reg) params.as_ptr() => _,
                    acc = inout(reg) acc => _,
                    wa = inout(reg) wa => _,
                    wb = inout(reg) wb => _,
                    wc = inout(reg) wc => _,
                    wd = inout(reg) wd => _,
                    x = inout(reg) x => _,
                    xd = out(reg) _,
                    inout("lr") quads => _,
                    out("r0") _, out("r2") _,
                    out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                    out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                    out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _,
                    out("d14") _, out("d15") _,
                    options(nostack),
                );
            };
        }
        if ZERO {
            rows4_2!("vmov.i32 q6, #0");
        } else {
            rows4_2!("vldrw.u32 q6, [{acc}]");
        }
    }
}

/// [`rows2_q8`] for q4_0 blocks (18 bytes): sumi is Σ (nibble − 8) · x per row.
///
/// # Safety
/// `wa` and `wb` must be readable for `blocks × 18` bytes, `x` (4-byte aligned) for
/// `blocks × 36`, `blocks ≥ 1`.
#[inline(always)]
unsafe fn rows2_q4(wa: *const u8, wb: *const u8, x: *const u8, blocks: usize, acc: (f32, f32)) -> (f32, f32) {
    let (mut a, mut b) = acc;
    // SAFETY: the caller's contract; only the named registers, lr, q0-q4 (d0-d9) and
    // s20-s24 change.
    unsafe {
        asm!(
            "vmov.i8 q4, #15",
            "dls lr, {n}",
            "2:",
            "vldr s20, [{x}]",
            "vldrb.u8 q1, [{x}, #4]",
            "vldrb.u8 q3, [{x}, #20]",
            "adds {x}, #36",
            "vldrb.u8 q0, [{wa}, #2]",
            "vand q2, q0, q4",
            "vshr.u8 q0, q0, #4",
            "vsub.i8 q2, q2, {eight}",
            "vsub.i8 q0, q0, {eight}",
            "vmladav.s8 r0, q2, q1",
            "vmladava.s8 r0, q0, q3",
            "vldrb.u8 q0, [{wb}, #2]",
            "vand q2, q0, q4",
            "vshr.u8 q0, q0, #4",
            "vsub.i8 q2, q2, {eight}",
            "vsub.i8 q0, q0, {eight}",
            "vmladav.s8 r2, q2, q1",
            "vmladava.s8 r2, q0, q3",
            "ldrh {da}, [{wa}], #18",
            "ldrh {db}, [{wb}], #18",
            "vmov s21, {da}",
            "vcvtb.f32.f16 s21, s21",
            "vmul.f32 s21, s21, s20",
            "vmov s22, r0",
            "vcvt.f32.s32 s22, s22",
            "vmul.f32 s22, s22, s21",
            "vadd.f32 {a}, {a}, s22",
            "vmov s23, {db}",
            "vcvtb.f32.f16 s23, s23",
            "vmul.f32 s23, s23, s20",
            "vmov s24, r2",
            "vcvt.f32.s32 s24, s24",
            "vmul.f32 s24, s24, s23",
            "vadd.f32 {b}, {b}, s24",
            "le lr, 2b",
            n = in(reg) blocks,
            eight = in(reg) 8u32,
            wa = inout(reg) wa => _,
            wb = inout(reg) wb => _,
            x = inout(reg) x => _,
            da = out(reg) _,
            db = out(reg) _,
            a = inout(sreg) a,
            b = inout(sreg) b,
            out("r0") _, out("r2") _, out("lr") _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _, out("d8") _, out("d9") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _, out("s24") _,
            options(readonly, nostack),
        );
    }
    (a, b)
}

/// `out (rows) = w (rows, cols) · x` for q8_0 or q4_0 rows of `row_bytes` bytes with
/// prepared activations `xq`, as [`quantized_matvec`](super::quantized_matvec) with
/// [`Portable`](super::Portable) computes it (the order at the top of this file):
/// q8_0 rows four at a time, then (and q4_0 rows) two at a time, the last odd one alone.
pub(crate) fn matvec(dtype: DType, w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    let block_bytes = if dtype == DType::Q4_0 { q4_0::BLOCK_BYTES } else { q8_0::BLOCK_BYTES };
    if row_bytes == 0 {
        return out.fill(0.0);
    }
    let rows = out.len().min(w.len() / row_bytes);
    let out = &mut out[..rows];
    fill_zero(out);
    // Blocks per row: the whole blocks of a row that have activations.
    let blocks = (row_bytes / block_bytes).min(xq.len() / q8_act::BLOCK_WORDS);
    // Short rows narrow into a smaller buffer: it is zeroed on every call.
    if blocks <= SHORT_CHUNK_BLOCKS {
        matvec_chunks::<{ SHORT_CHUNK_BLOCKS * NARROW_BYTES / 4 }>(dtype, w, row_bytes, xq, out, blocks);
    } else {
        matvec_chunks::<{ CHUNK_BLOCKS * NARROW_BYTES / 4 }>(dtype, w, row_bytes, xq, out, blocks);
    }
}

/// Blocks of the smaller narrowing buffer (288 bytes), for rows of up to 256 values.
const SHORT_CHUNK_BLOCKS: usize = 8;

/// [`matvec`]'s rows over chunks of `WORDS` / 9 narrowed blocks (`out` zeroed).
#[inline(always)]
fn matvec_chunks<const WORDS: usize>(
    dtype: DType,
    w: &[u8],
    row_bytes: usize,
    xq: &[u32],
    out: &mut [f32],
    blocks: usize,
) {
    let block_bytes = if dtype == DType::Q4_0 { q4_0::BLOCK_BYTES } else { q8_0::BLOCK_BYTES };
    let chunk = WORDS * 4 / NARROW_BYTES;
    // Words, so each block's f32 scale is aligned for VLDR; not zeroed (that cost more
    // than the narrowing), the rows read only the blocks `narrow` wrote.
    let mut narrowed = [MaybeUninit::<u32>::uninit(); WORDS];
    let mut first = 0;
    while first < blocks {
        let n = narrow(&xq[first * q8_act::BLOCK_WORDS..], &mut narrowed, (blocks - first).min(chunk));
        if n == 0 {
            break;
        }
        // The chunk's blocks of row r: bytes r·row_bytes + first·block_bytes, n·block_bytes of
        // them, inside `w` (rows·row_bytes ≤ w.len(), (first + n)·block_bytes ≤ row_bytes).
        // SAFETY: as just said; `narrowed` holds the n ≥ 1 blocks `narrow` wrote.
        unsafe {
            row_sums::<false>(dtype, w[first * block_bytes..].as_ptr(), row_bytes, narrowed.as_ptr().cast(), n, out)
        };
        first += n;
    }
}

/// Adds each row's sum over `blocks` blocks to `out` (one float per row, in row order;
/// with `ZERO` each row's sum starts from 0.0 instead, whatever `out` holds):
/// q8_0 rows four at a time ([`rows4_q8`]), then (and q4_0 rows) two at a time, the last
/// odd one alone. Row r's blocks start at `start + r·row_bytes`.
///
/// # Safety
/// For every row r < out.len(), `start + r·row_bytes` must be readable for `blocks` blocks
/// of `dtype` (q8_0 or q4_0); `x` (4-byte aligned) for `blocks` narrowed blocks;
/// `blocks ≥ 1`.
#[inline(always)]
unsafe fn row_sums<const ZERO: bool>(
    dtype: DType,
    start: *const u8,
    row_bytes: usize,
    x: *const u8,
    blocks: usize,
    out: &mut [f32],
) {
    let n = blocks;
    let rows = out.len();
    let mut done = 0;
    let quads = rows / 4;
    if dtype == DType::Q8_0 && quads > 0 {
        // SAFETY: rows 0..4·quads exist (the caller's contract); `out` holds rows ≥
        // 4·quads floats.
        unsafe {
            if n == 2 {
                rows4_q8_2::<ZERO>(start, row_bytes, x, out.as_mut_ptr(), quads);
            } else {
                rows4_q8::<ZERO>(start, row_bytes, x, n, out.as_mut_ptr(), quads);
            }
        };
        done = 4 * quads;
    }
    let mut pairs = out[done..].chunks_exact_mut(2);
    for (p, pair) in (&mut pairs).enumerate() {
        let acc = if ZERO { (0.0, 0.0) } else { (pair[0], pair[1]) };
        // SAFETY: rows done + 2p and done + 2p + 1 exist (the caller's contract).
        let (a, b) = unsafe {
            let wa = start.add((done + 2 * p) * row_bytes);
            let wb = wa.add(row_bytes);
            if dtype == DType::Q4_0 {
                rows2_q4(wa, wb, x, n, acc)
            } else {
                rows2_q8(wa, wb, x, n, acc)
            }
        };
        pair[0] = a;
        pair[1] = b;
    }
    if let [o] = pairs.into_remainder() {
        let acc = if ZERO { 0.0 } else { *o };
        // SAFETY: the last row (rows − 1) exists (the caller's contract).
        *o = unsafe {
            let wr = start.add((rows - 1) * row_bytes);
            if dtype == DType::Q4_0 {
                row_q4(wr, x, n, acc)
            } else {
                row_q8(wr, x, n, acc)
            }
        };
    }
}

/// [`super::scores_f32`] for 8-wide heads in contiguous rows (`keys`, head-major
/// f32 cache), four slots per step in MVE lanes: gather loads (`VLDRW.U32` with a
/// vector of the four rows' addresses) take element j of four keys, `VMUL.F32` by
/// q\[j\] and `VADD.F32` sum each lane in the portable order (the first product
/// taken as the sum: 0 + p and p differ only in the sign of a zero, which no
/// later step can see), four scalar `VDIV.F32` on the lanes divide by `sqrt_head`,
/// and `VMAXNM.F32` keeps a running maximum per lane, `VMINNM.F32` a running minimum.
/// The loop is tail-predicated (`DLSTP`/`LETP`): its last step takes the last `n % 4`
/// slots in the low lanes, the other lanes neither loaded, stored nor compared (the
/// scalar divisions of those lanes' stale values are never used). Returns (maximum,
/// minimum of `out`, +∞ when empty). `None` unless `q` is
/// [`moderate`](super::moderate); the caller must know the keys are (the cache tracks it), which
/// makes every lane's sum the scalar one (see [`moderate`](super::moderate)). Scores of moderate
/// values are finite, so the maximum (NaNs never present) equals the portable one
/// up to the sign of a zero, which the exponentials do not see.
pub fn scores8(q: &[f32; 8], keys: &[f32], sqrt_head: f32, max_in: f32, out: &mut [f32]) -> Option<(f32, f32)> {
    let n = out.len();
    // 1 ≤ sqrt_head ≤ 8 (8-wide heads take √8; compared as bits, which order like
    // positive values): a nonzero sum (≥ 2^-123) divided by it stays normal, so the
    // lanes' maximum and minimum see no subnormal.
    let (one, eight) = (1.0f32.to_bits(), 8.0f32.to_bits());
    if n.checked_mul(8)? > keys.len() || sqrt_head.to_bits().wrapping_sub(one) > eight - one || !super::moderate(q) {
        return None;
    }
    let mut max = max_in;
    let mut min = f32::INFINITY;
    if n > 0 {
        // Row addresses of the slot before the first quad (the first gather of each step
        // adds 128 bytes, four rows, with writeback), then max_in in four lanes, then sqrt_head,
        // then +∞ in four lanes.
        let base = (keys.as_ptr() as u32).wrapping_sub(128);
        let (m, inf) = (max_in.to_bits(), f32::INFINITY.to_bits());
        let setup = [
            base,
            base.wrapping_add(32),
            base.wrapping_add(64),
            base.wrapping_add(96),
            m,
            m,
            m,
            m,
            sqrt_head.to_bits(),
            inf,
            inf,
            inf,
            inf,
        ];
        let [q0, q1, q2, q3, q4, q5, q6, q7] = q.map(f32::to_bits);
        let (max_bits, min_bits): (u32, u32);
        // SAFETY: reads n rows of 8 floats from `keys` (n ≤ keys.len() / 8, checked), the 52
        // bytes of `setup`, and writes n floats at `out` (the tail-predicated loop's last step
        // loads and stores only the lanes of its n % 4 slots). Only the named registers, lr
        // and q0-q7 (d0-d15) change.
        unsafe {
            asm!(
                "vldrw.u32 q7, [{a}]",
                "vldrw.u32 q6, [{a}, #16]",
                "vldr s12, [{a}, #32]",
                "vldrw.u32 q5, [{a}, #36]",
                "dlstp.32 lr, lr",
                "2:",
                "vldrw.u32 q1, [q7, #128]!",
                "vmul.f32 q0, q1, {q0}",
                "vldrw.u32 q1, [q7, #4]",
                "vmul.f32 q2, q1, {q1}",
                "vadd.f32 q0, q0, q2",
                "vldrw.u32 q1, [q7, #8]",
                "vmul.f32 q2, q1, {q2}",
                "vadd.f32 q0, q0, q2",
                "vldrw.u32 q1, [q7, #12]",
                "vmul.f32 q2, q1, {q3}",
                "vadd.f32 q0, q0, q2",
                "vldrw.u32 q1, [q7, #16]",
                "vmul.f32 q2, q1, {q4}",
                "vadd.f32 q0, q0, q2",
                "vldrw.u32 q1, [q7, #20]",
                "vmul.f32 q2, q1, {q5}",
                "vadd.f32 q0, q0, q2",
                "vldrw.u32 q1, [q7, #24]",
                "vmul.f32 q2, q1, {q6}",
                "vadd.f32 q0, q0, q2",
                "vldrw.u32 q1, [q7, #28]",
                "vmul.f32 q2, q1, {q7}",
                "vadd.f32 q0, q0, q2",
                // The division on the scalar FPU (IEEE, no flush), lane by lane.
                "vdiv.f32 s0, s0, s12",
                "vdiv.f32 s1, s1, s12",
                "vdiv.f32 s2, s2, s12",
                "vdiv.f32 s3, s3, s12",
                "vstrw.32 q0, [{out}], #16",
                "vmaxnm.f32 q6, q6, q0",
                "vminnm.f32 q5, q5, q0",
                "letp lr, 2b",
                // The lanes' maximum (each lane started at max_in) and minimum.
                "vmov {a}, s24",
                "vmaxnmv.f32 {a}, q6",
                "vmov {b}, s20",
                "vminnmv.f32 {b}, q5",
                a = inout(reg) setup.as_ptr() => max_bits,
                b = out(reg) min_bits,
                out = inout(reg) out.as_mut_ptr() => _,
                q0 = in(reg) q0, q1 = in(reg) q1, q2 = in(reg) q2, q3 = in(reg) q3,
                q4 = in(reg) q4, q5 = in(reg) q5, q6 = in(reg) q6, q7 = in(reg) q7,
                inout("lr") n => _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                options(nostack),
            );
        }
        max = f32::from_bits(max_bits);
        min = f32::from_bits(min_bits);
    }
    Some((max, min))
}

/// `scalar::exp`'s fast path in MVE lanes, step for step: x in q0 → e^x in q2 (q1, q3
/// and q0 clobbered), with q4 = shift, q5 = c1, q6 = 1, q7 = c2 in every lane
/// ([`EXP_LANES`]) and the asm operands `{log2e}`, `{ln2_hi}`, `{ln2_lo}`, `{c5}`,
/// `{c4}` and `{k}` (= c3). 2^n goes into the exponent bits: the shift's low 9 bits are
/// 0, so t << 23 is n << 23. Used by [`exp_shifted_quads`] and [`swiglu4`].
macro_rules! mve_exp_q0 {
    () => {
        concat!(
            "vmul.f32 q1, q0, {log2e}\n",
            "vadd.f32 q1, q1, q4\n",
            "vsub.f32 q2, q1, q4\n",
            "vmul.f32 q3, q2, {ln2_hi}\n",
            "vsub.f32 q3, q0, q3\n",
            "vmul.f32 q2, q2, {ln2_lo}\n",
            "vsub.f32 q3, q3, q2\n",
            "vmul.f32 q2, q3, {c5}\n",
            "vadd.f32 q2, q2, {c4}\n",
            "vmul.f32 q2, q2, q3\n",
            "vadd.f32 q2, q2, {k}\n",
            "vmul.f32 q2, q2, q3\n",
            "vadd.f32 q2, q2, q7\n",
            "vmul.f32 q2, q2, q3\n",
            "vadd.f32 q2, q2, q5\n",
            "vmul.f32 q0, q3, q3\n",
            "vmul.f32 q2, q2, q0\n",
            "vadd.f32 q2, q2, q3\n",
            "vadd.f32 q2, q2, q6\n",
            "vshl.i32 q1, q1, #23\n",
            "vadd.i32 q2, q2, q1\n",
        )
    };
}

/// The exp loops' vector constants: four lanes each of the shift, c1, 1 and c2
/// (loaded into q4-q7), then c3 (`scalar::EXP_CONSTANTS`).
static EXP_LANES: [u32; 17] = {
    let [shift, _, _, _, c1, c2, c3, _, _, one, _] = crate::scalar::EXP_CONSTANTS;
    let lanes = [shift.to_bits(), c1.to_bits(), one.to_bits(), c2.to_bits()];
    let mut out = [0u32; 17];
    let mut i = 0;
    while i < 16 {
        out[i] = lanes[i / 4];
        i += 1;
    }
    out[16] = c3.to_bits();
    out
};

/// The loop of [`exp_shifted_quads`]: `$x[i] = exp($x[i] − $max)` in MVE lanes, `$steps`
/// (in lr) counted by the loop instructions `$start` and `$end` (`DLS`/`LE` over whole
/// quads, or `DLSTP.32`/`LETP` over all values), with the `$check` instructions (which may
/// leave for `9f`) after each quad's `x − max` in q0 (and the asm operands they use);
/// evaluates to the bytes the pointer moved.
macro_rules! exp_quads {
    ($x:ident, $max:ident, $steps:expr, $start:literal, $end:literal, [$($check:literal,)*], [$($operands:tt)*]) => {{
        let steps = $steps;
        let [_, log2e, ln2_hi, ln2_lo, _, _, _, c4, c5, _, _] = crate::scalar::EXP_CONSTANTS;
        let consts = &EXP_LANES;
        let start = $x.as_mut_ptr();
        let end: *mut f32;
        if steps == 0 {
            end = start;
        } else {
            // SAFETY: reads and writes the floats of `x` the steps take (whole quads, or with
            // tail predication the last n % 4 in the low lanes), reads `consts`; only the
            // named registers, lr and q0-q7 (d0-d15) change; the flags and (with `$check`)
            // VPR are clobbered (see the module doc).
            unsafe {
                asm!(
                    "vldrw.u32 q4, [{k}]",
                    "vldrw.u32 q5, [{k}, #16]",
                    "vldrw.u32 q6, [{k}, #32]",
                    "vldrw.u32 q7, [{k}, #48]",
                    "ldr {k}, [{k}, #64]",
                    $start,
                    "2:",
                    "vldrw.u32 q0, [{p}]",
                    "vsub.f32 q0, q0, {max}",
                    $($check,)*
                    mve_exp_q0!(),
                    "vstrw.32 q2, [{p}], #16",
                    $end,
                    "9:",
                    k = inout(reg) consts.as_ptr() => _,
                    p = inout(reg) start => end,
                    max = in(reg) $max.to_bits(),
                    $($operands)*
                    log2e = in(reg) log2e.to_bits(),
                    ln2_hi = in(reg) ln2_hi.to_bits(),
                    ln2_lo = in(reg) ln2_lo.to_bits(),
                    c5 = in(reg) c5.to_bits(),
                    c4 = in(reg) c4.to_bits(),
                    inout("lr") steps => _,
                    out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                    out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                    out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                    out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                    options(nostack),
                );
            }
        }
        end as usize - start as usize
    }};
}

/// `x[i] = exp(x[i] − max)` ([`scalar::exp_at_most_zero`](crate::scalar::exp_at_most_zero))
/// for the whole quads of `x` in MVE lanes, stopping before a quad with a lane
/// outside exp's fast range (x − max < −87.33, or NaN); returns how many values it
/// did (a multiple of 4).
///
/// The lanes run `scalar::exp`'s fast path step for step (the same operations
/// and roundings, 2^n added to the exponent bits) under MVE's flush-to-zero,
/// which changes no result: in the fast range every product and sum that could
/// be subnormal is added to a term at least 2^24 times larger before it counts
/// (r·r and the Horner products for |r| < 2^-63 meet r or a coefficient), e^x
/// of a subnormal x is 1 either way, and the results are normal. A difference
/// x − max that the scalar FPU would round from a subnormal operand (a score
/// or maximum below 2^-126) equals the flushed one or is so small that both
/// exponentials are 1.
fn exp_shifted_quads(x: &mut [f32], max: f32) -> usize {
    let fast_min = crate::scalar::EXP_CONSTANTS[10];
    exp_quads!(
        x,
        max,
        x.len() / 4,
        "dls lr, lr",
        "le lr, 2b",
        [
            // Every lane in the fast range (x ≥ −87.33, not NaN), or leave.
            "vcmp.f32 ge, q0, {fast_min}",
            "vmrs r0, p0",
            "mvns r0, r0",
            "lsls r0, r0, #16",
            "bne 9f",
        ],
        [fast_min = in(reg) fast_min.to_bits(), out("r0") _,]
    ) / 4
}

/// [`exp_shifted_quads`] for all of `x` without the range check, for callers that know
/// every `x[i] − max` lies in exp's fast range: a tail-predicated loop (`DLSTP`/`LETP`)
/// whose last step loads and stores only the last `x.len() % 4` values' lanes.
fn exp_shifted_in_range(x: &mut [f32], max: f32) {
    let _ = exp_quads!(x, max, x.len(), "dlstp.32 lr, lr", "letp lr, 2b", [], []);
}

/// [`super::mix_f32_head8`] on MVE: the exponentials in MVE lanes
/// ([`exp_shifted_quads`]; a quad with a value outside the fast range, and the
/// last `n % 4`, through the scalar `exp_at_most_zero`; when `floor` (a lower bound
/// of the scores, or −∞) shows every whole quad in the fast range,
/// [`exp_shifted_in_range`]), written over `scores`, then the value pass:
/// Σ e and Σ e·v in slot order with separate multiply and add, as the portable
/// path, so the same bits. The value pass runs on the scalar FPU ([`mix_exps8`]),
/// or in MVE lanes ([`mix_exps8_lanes`]) when every value is
/// [`moderate`](super::moderate) (`moderate_values`) and every e is at least 2^-50
/// (the floor is within 34.6 of the maximum, and e^-34.6 > 2^-50): then each product
/// e·v is 0 or in [2^-100, 2^50], a multiple of 2^-123, and so is every partial
/// sum, so none is subnormal and MVE's flush-to-zero changes nothing.
pub fn mix8(scores: &mut [f32], max: f32, floor: f32, values: &[f32], moderate_values: bool, out: &mut [f32; 8]) {
    let n = scores.len().min(values.len() / 8);
    let scores = &mut scores[..n];
    let mut at = 0;
    // Every score ≥ floor, so every lane's x − max ≥ floor − max (rounding is monotone; a
    // flushed subnormal operand moves the difference by less than 2^-126): 1 of margin
    // over the fast range's lower end (−87.33) lets the whole quads skip the check.
    let spread = floor - max;
    if spread >= crate::scalar::EXP_CONSTANTS[10] + 1.0 {
        exp_shifted_in_range(scores, max);
        at = n;
    }
    while at < n {
        at += exp_shifted_quads(&mut scores[at..], max);
        // The quad it stopped before (or the last n % 4 values) on the scalar path.
        for v in scores[at..].iter_mut().take(4) {
            *v = crate::scalar::exp_at_most_zero(*v - max);
        }
        at = (at + 4).min(n);
    }
    let (mut sum, mut acc) = (0.0f32, [0.0f32; 8]);
    // Slots whose e·v are summed: all of them in lanes, else the whole quads on the FPU.
    let done = if moderate_values && spread >= -34.6 {
        mix_exps8_lanes(scores, values, &mut sum, &mut acc);
        n
    } else {
        let quads = n / 4;
        if quads > 0 {
            mix_exps8(&scores[..4 * quads], &values[..32 * quads], &mut sum, &mut acc);
        }
        4 * quads
    };
    for (&e, row) in scores[done..].iter().zip(values[8 * done..].chunks_exact(8)) {
        sum += e;
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += e * v;
        }
    }
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = a / sum;
    }
}

/// [`mix_exps8`] with the products and column sums in MVE lanes (eight columns in
/// two vectors), for the case [`mix8`] proves free of subnormals: per four slots
/// one VLDRW of the e (Σ e on the scalar FPU, in slot order, from the lanes), and
/// per slot two VLDRW of the row, `VMUL.F32` by e and `VADD.F32` into the sums; then
/// the last `n % 4` slots one at a time. Takes every slot of `e` (`values` holds as
/// many 8-value rows).
fn mix_exps8_lanes(e: &[f32], values: &[f32], sum: &mut f32, acc: &mut [f32; 8]) {
    let n = e.len().min(values.len() / 8);
    let (quads, rest) = (n / 4, n % 4);
    let mut s = *sum;
    // SAFETY: reads n floats of `e` and 8 · n of `values` (in bounds), reads and writes the
    // 8 floats of `acc`; only the named registers, lr, r0, r1 and q0-q4 (d0-d9) change.
    unsafe {
        asm!(
            "vldrw.u32 q3, [{acc}]",
            "vldrw.u32 q4, [{acc}, #16]",
            "wls lr, {quads}, 3f",
            "2:",
            "vldrw.u32 q0, [{e}], #16",
            "vmov r0, r1, s0, s1",
            "vadd.f32 {s}, {s}, s0",
            "vldrw.u32 q1, [{v}], #16",
            "vldrw.u32 q2, [{v}], #16",
            "vmul.f32 q1, q1, r0",
            "vmul.f32 q2, q2, r0",
            "vadd.f32 q3, q3, q1",
            "vadd.f32 q4, q4, q2",
            "vadd.f32 {s}, {s}, s1",
            "vldrw.u32 q1, [{v}], #16",
            "vldrw.u32 q2, [{v}], #16",
            "vmul.f32 q1, q1, r1",
            "vmul.f32 q2, q2, r1",
            "vadd.f32 q3, q3, q1",
            "vadd.f32 q4, q4, q2",
            "vmov r0, r1, s2, s3",
            "vadd.f32 {s}, {s}, s2",
            "vldrw.u32 q1, [{v}], #16",
            "vldrw.u32 q2, [{v}], #16",
            "vmul.f32 q1, q1, r0",
            "vmul.f32 q2, q2, r0",
            "vadd.f32 q3, q3, q1",
            "vadd.f32 q4, q4, q2",
            "vadd.f32 {s}, {s}, s3",
            "vldrw.u32 q1, [{v}], #16",
            "vldrw.u32 q2, [{v}], #16",
            "vmul.f32 q1, q1, r1",
            "vmul.f32 q2, q2, r1",
            "vadd.f32 q3, q3, q1",
            "vadd.f32 q4, q4, q2",
            "le lr, 2b",
            "3:",
            "wls lr, {rest}, 5f",
            "4:",
            "vldmia {e}!, {{s0}}",
            "vmov r0, s0",
            "vadd.f32 {s}, {s}, s0",
            "vldrw.u32 q1, [{v}], #16",
            "vldrw.u32 q2, [{v}], #16",
            "vmul.f32 q1, q1, r0",
            "vmul.f32 q2, q2, r0",
            "vadd.f32 q3, q3, q1",
            "vadd.f32 q4, q4, q2",
            "le lr, 4b",
            "5:",
            "vstrw.32 q3, [{acc}]",
            "vstrw.32 q4, [{acc}, #16]",
            acc = in(reg) acc.as_mut_ptr(),
            e = inout(reg) e.as_ptr() => _,
            v = inout(reg) values.as_ptr() => _,
            s = inout(sreg) s,
            quads = in(reg) quads,
            rest = in(reg) rest,
            out("lr") _,
            out("r0") _, out("r1") _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _,
            out("d5") _, out("d6") _, out("d7") _, out("d8") _, out("d9") _,
            options(nostack),
        );
    }
    *sum = s;
}

/// `sum += e[i]` and `acc[j] += e[i] · values[8i + j]` for the slots of `e` (a
/// multiple of 4, at least 4; `values` holds as many 8-value rows), in slot order,
/// on the scalar FPU: per four slots one VLDM of the e, and per slot one VLDM of
/// the row, one VADD and eight VMLA (multiply, then add: no fusing).
fn mix_exps8(e: &[f32], values: &[f32], sum: &mut f32, acc: &mut [f32; 8]) {
    let quads = (e.len() / 4).min(values.len() / 32);
    if quads == 0 {
        return;
    }
    let mut s = *sum;
    // SAFETY: reads 4 · quads floats of `e` and 32 · quads of `values` (in bounds), reads
    // and writes the 8 floats of `acc`; only the named registers, lr, s0-s19 (d0-d9)
    // change.
    unsafe {
        asm!(
            "vldmia {acc}, {{s8-s15}}",
            "dls lr, lr",
            "2:",
            "vldmia {e}!, {{s16-s19}}",
            "vadd.f32 {s}, {s}, s16",
            value_row8!("s16"),
            "vadd.f32 {s}, {s}, s17",
            value_row8!("s17"),
            "vadd.f32 {s}, {s}, s18",
            value_row8!("s18"),
            "vadd.f32 {s}, {s}, s19",
            value_row8!("s19"),
            "le lr, 2b",
            "vstmia {acc}, {{s8-s15}}",
            acc = in(reg) acc.as_mut_ptr(),
            e = inout(reg) e.as_ptr() => _,
            v = inout(reg) values.as_ptr() => _,
            s = inout(sreg) s,
            inout("lr") quads => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _,
            out("d5") _, out("d6") _, out("d7") _, out("d8") _, out("d9") _,
            options(nostack),
        );
    }
    *sum = s;
}

/// SwiGLU four values a step in MVE lanes: `gate[i] = v · (1 / (1 + exp(−v))) · up[i]`
/// with v = `gate[i]`, as `math::swiglu` computes it, for i from 0 while every −v of
/// the step lies in exp's fast range (−87.33 ..= 88.37; NaN does not); returns how
/// many values it did (a multiple of 4). exp(−v) runs in the lanes as in
/// [`exp_shifted_quads`] (`VNEG` only flips the sign bit; a subnormal −v, flushed,
/// gives e = 1 as the scalar path does), 1 + e too (e is normal, so it is ≥ 1);
/// the division and both products are scalar FPU instructions on the lanes, since
/// v and the products may be subnormal. When every |v| of those quads is at most
/// 87.33 (`max_abs_bits` first), the loop runs without its per-step test, which
/// every step would pass.
pub fn swiglu4(gate: &mut [f32], up: &[f32]) -> usize {
    let quads = gate.len().min(up.len()) / 4;
    if quads == 0 {
        return 0;
    }
    let [_, log2e, ln2_hi, ln2_lo, _, _, _, c4, c5, _, fast_min] = crate::scalar::EXP_CONSTANTS;
    let fast_max = crate::scalar::EXP_FAST_MAX;
    let consts = &EXP_LANES;
    // With every |v| ≤ 87.33 (so −v in the fast range) the loop needs no test per step:
    // one integer maximum of the bits over `gate` first (|v| orders like its bits, NaN
    // above them all), then the loop without it, the same operations on every lane.
    let all_fast = max_abs_bits(&gate[..4 * quads]) <= (-fast_min).to_bits();
    let start = gate.as_mut_ptr();
    let end: *mut f32;
    macro_rules! swiglu_loop {
        ($($check:literal),*) => {
            asm!(
                "vldrw.u32 q4, [{k}]",
                "vldrw.u32 q5, [{k}, #16]",
                "vldrw.u32 q6, [{k}, #32]",
                "vldrw.u32 q7, [{k}, #48]",
                "ldr {k}, [{k}, #64]",
                "dls lr, lr",
                "2:",
                "vldrw.u32 q0, [{g}]",
                "vneg.f32 q0, q0",
                $($check,)*
                mve_exp_q0!(),
                // 1 + e, then lane by lane on the scalar FPU: 1 / that, · v, · up.
                "vadd.f32 q2, q2, q6",
                "vdiv.f32 s8, s24, s8",
                "vdiv.f32 s9, s24, s9",
                "vdiv.f32 s10, s24, s10",
                "vdiv.f32 s11, s24, s11",
                "vldrw.u32 q0, [{g}]",
                "vldrw.u32 q1, [{u}], #16",
                "vmul.f32 s0, s0, s8",
                "vmul.f32 s1, s1, s9",
                "vmul.f32 s2, s2, s10",
                "vmul.f32 s3, s3, s11",
                "vmul.f32 s0, s0, s4",
                "vmul.f32 s1, s1, s5",
                "vmul.f32 s2, s2, s6",
                "vmul.f32 s3, s3, s7",
                "vstrw.32 q0, [{g}], #16",
                "le lr, 2b",
                "9:",
                k = inout(reg) consts.as_ptr() => _,
                g = inout(reg) start => end,
                u = inout(reg) up.as_ptr() => _,
                fast_min = in(reg) fast_min.to_bits(),
                fast_max = in(reg) fast_max.to_bits(),
                log2e = in(reg) log2e.to_bits(),
                ln2_hi = in(reg) ln2_hi.to_bits(),
                ln2_lo = in(reg) ln2_lo.to_bits(),
                c5 = in(reg) c5.to_bits(),
                c4 = in(reg) c4.to_bits(),
                inout("lr") quads => _,
                out("r0") _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                options(nostack),
            );
        };
    }
    // SAFETY: reads and writes 4 · quads floats of `gate`, reads as many of `up` (both in
    // bounds) and `consts`; only the named registers, lr, r0 and q0-q7 (d0-d15) change;
    // the flags and VPR are clobbered (see the module doc).
    unsafe {
        if all_fast {
            swiglu_loop!("@ no range test ({fast_min}, {fast_max} unused)");
        } else {
            swiglu_loop!(
                // Every lane in the fast range (−87.33 ≤ x ≤ 88.37, not NaN), or leave.
                "vcmp.f32 ge, q0, {fast_min}",
                "vpst",
                "vcmpt.f32 le, q0, {fast_max}",
                "vmrs r0, p0",
                "mvns r0, r0",
                "lsls r0, r0, #16",
                "bne 9f"
            );
        }
    }
    (end as usize - start as usize) / 4
}

/// The quantizer's `(d, 1/d)` for a block (`arm_dsp::fast_scale`'s of max |x|), when the
/// vector quantizers apply: max |x| finite and d = 0 or d ≥ 2^-125. The maximum is an
/// integer maximum of the bits shifted left by one (`VMAXV.U32`: exact, NaN shows as
/// a larger value), unrolled.
#[inline(always)]
fn block_scale(x: &[f32; 32]) -> Option<(f32, f32)> {
    let bits2: u32;
    // SAFETY: reads the 32 floats of `x`; only the named registers and q0 (d0-d1) change.
    unsafe {
        asm!(
            "movs {m}, #0",
            "vldrw.u32 q0, [{p}]",
            "vshl.i32 q0, q0, #1",
            "vmaxv.u32 {m}, q0",
            "vldrw.u32 q0, [{p}, #16]",
            "vshl.i32 q0, q0, #1",
            "vmaxv.u32 {m}, q0",
            "vldrw.u32 q0, [{p}, #32]",
            "vshl.i32 q0, q0, #1",
            "vmaxv.u32 {m}, q0",
            "vldrw.u32 q0, [{p}, #48]",
            "vshl.i32 q0, q0, #1",
            "vmaxv.u32 {m}, q0",
            "vldrw.u32 q0, [{p}, #64]",
            "vshl.i32 q0, q0, #1",
            "vmaxv.u32 {m}, q0",
            "vldrw.u32 q0, [{p}, #80]",
            "vshl.i32 q0, q0, #1",
            "vmaxv.u32 {m}, q0",
            "vldrw.u32 q0, [{p}, #96]",
            "vshl.i32 q0, q0, #1",
            "vmaxv.u32 {m}, q0",
            "vldrw.u32 q0, [{p}, #112]",
            "vshl.i32 q0, q0, #1",
            "vmaxv.u32 {m}, q0",
            p = in(reg) x.as_ptr(),
            m = out(reg) bits2,
            out("d0") _, out("d1") _,
            options(readonly, nostack),
        );
    }
    // arm_dsp::fast_scale's (d, 1/d) where d = 0 or d ≥ 2^-125 (so d is normal), in
    // fewer steps: no NaN or infinity, then d = max|x| / 127, then the bound.
    if bits2 >= 0xFF00_0000 {
        return None;
    }
    let d = f32::from_bits(bits2 >> 1) / 127.0;
    if d >= f32::from_bits((127 - 125) << 23) {
        Some((d, 1.0 / d))
    } else {
        (bits2 == 0).then_some((0.0, 0.0))
    }
}

/// `q8_act::prepare_block(quantize_block(x))` for 32 values in MVE lanes, when max |x|
/// is finite and `d = max|x| / 127` is 0 or at least 2^-125 (returns `false`,
/// writing nothing, otherwise: the caller takes the FPU or portable path). The
/// maximum and the scale are `block_scale`'s, then per four values: `VMUL.F32` by 1/d, `VCVTA.S32.F32` (round to nearest, ties away
/// from zero: `round_half_away` of the product, as `quantize_block`; |x/d| ≤ 127 plus
/// a rounding, far inside i32), `VADDVA.S32` into the quant sum, and a scatter
/// `VSTRH.32` into pair order; both loops unrolled. MVE's flush to zero changes
/// nothing here: with 1/d ≤ 2^125 a subnormal x (flushed to 0) has |x/d| < 1/2,
/// which rounds to 0 either way, and a product below 2^-126 rounds to 0 either way.
#[inline]
pub fn prepare_block(x: &[f32; 32], out: &mut [u32; q8_act::BLOCK_WORDS]) -> bool {
    let Some((d, id)) = block_scale(x) else { return false };
    let (sum, d16): (u32, u32);
    // SAFETY: reads the 32 floats of `x` and PAIR_STORE; writes the 16 pair words of `out`
    // (words 2..18: each scatter writes 4 halfwords within 8 bytes of its base plus the
    // offset vector's 0, 8, 16 or 24, the base advancing 32 bytes after four of them);
    // only the named registers, s0 and q0-q4 (d0-d9) change.
    unsafe {
        asm!(
            // The scale rounded to binary16 and back (exact), as the FPU quantizer.
            "vmov s0, {d}",
            "vcvtb.f16.f32 s0, s0",
            "vcvtb.f32.f16 s0, s0",
            "vmov {d}, s0",
            // Scatter offsets of the four quads of 16 values: PAIR_STORE + 0, 8, 16, 24.
            "vldrw.u32 q1, [{offs}]",
            "vadd.i32 q2, q1, {eight}",
            "vadd.i32 q3, q2, {eight}",
            "vadd.i32 q4, q3, {eight}",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            // (VADDVA's destination is an even register: r0.)
            "vaddva.s32 r0, q0",
            "vstrh.32 q0, [{o}, q1]",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vaddva.s32 r0, q0",
            "vstrh.32 q0, [{o}, q2]",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vaddva.s32 r0, q0",
            "vstrh.32 q0, [{o}, q3]",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vaddva.s32 r0, q0",
            "vstrh.32 q0, [{o}, q4]",
            "adds {o}, #32",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vaddva.s32 r0, q0",
            "vstrh.32 q0, [{o}, q1]",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vaddva.s32 r0, q0",
            "vstrh.32 q0, [{o}, q2]",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vaddva.s32 r0, q0",
            "vstrh.32 q0, [{o}, q3]",
            "vldrw.u32 q0, [{p}]",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vaddva.s32 r0, q0",
            "vstrh.32 q0, [{o}, q4]",
            p = inout(reg) x.as_ptr() => _,
            o = inout(reg) out[2..].as_mut_ptr() => _,
            offs = in(reg) PAIR_STORE.as_ptr(),
            d = inout(reg) d.to_bits() => d16,
            id = in(reg) id.to_bits(),
            eight = in(reg) 8u32,
            inout("r0") 0u32 => sum,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _,
            out("d5") _, out("d6") _, out("d7") _, out("d8") _, out("d9") _,
            options(nostack),
        );
    }
    out[0] = d16;
    out[1] = sum;
    true
}

/// Byte offsets of elements 0..4 of a group in pair order (i16 positions 0, 2, 1, 3).
static PAIR_STORE: [u32; 4] = [0, 4, 2, 6];

/// `out.fill(0.0)` with MVE stores: four zero words per `VSTRW.32`, the last
/// `out.len() % 4` under tail predication (`DLSTP.32` / `LETP`). Integer stores
/// of zero bits, so no float rounding is involved.
pub fn fill_zero(out: &mut [f32]) {
    if out.is_empty() {
        return;
    }
    // SAFETY: writes out.len() floats from `out` (the tail-predicated loop stores exactly
    // that many lanes); only the named registers, lr and q0 (d0-d1) change.
    unsafe {
        asm!(
            "vmov.i32 q0, #0",
            "dlstp.32 lr, {n}",
            "2:",
            "vstrw.32 q0, [{p}], #16",
            "letp lr, 2b",
            n = in(reg) out.len(),
            p = inout(reg) out.as_mut_ptr() => _,
            out("lr") _,
            out("d0") _, out("d1") _,
            options(nostack),
        );
    }
}

/// [`super::moderate`] in MVE integer lanes: per four values (the last `n % 4` under
/// tail predication, `DLSTP.32` / `LETP`) the bits shifted left by one (dropping the
/// sign, so 2·|bits| exactly), a running `VMAX.U32` of them and a running `VMIN.U32`
/// of them minus one (a zero becomes 2^32 − 1 and never lowers the minimum), then
/// `VMAXV` / `VMINV` across the lanes: every value is 0 or within the bounds exactly
/// when the maximum is at most 2·MAX and the minimum at least 2·MIN − 1. Integer
/// operations only, so the answer is the portable one for every input (NaN and
/// infinities lie above 2·MAX).
pub fn moderate(x: &[f32]) -> bool {
    if x.is_empty() {
        return true;
    }
    let (max2, min2): (u32, u32);
    // SAFETY: reads x.len() floats of `x` (the tail-predicated loop loads exactly that many
    // lanes); only the named registers, lr and q0-q2 (d0-d5) change.
    unsafe {
        asm!(
            "vmov.i32 q1, #0",
            "vmov.i8 q2, #0xff",
            "dlstp.32 lr, {n}",
            "2:",
            "vldrw.u32 q0, [{p}], #16",
            "vshl.i32 q0, q0, #1",
            "vmax.u32 q1, q1, q0",
            "vsub.i32 q0, q0, {one}",
            "vmin.u32 q2, q2, q0",
            "letp lr, 2b",
            "movs {mx}, #0",
            "vmaxv.u32 {mx}, q1",
            "mov.w {mn}, #-1",
            "vminv.u32 {mn}, q2",
            n = in(reg) x.len(),
            p = inout(reg) x.as_ptr() => _,
            one = in(reg) 1u32,
            mx = out(reg) max2,
            mn = out(reg) min2,
            out("lr") _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _,
            options(readonly, nostack),
        );
    }
    max2 <= super::MODERATE_MAX << 1 && min2 >= (super::MODERATE_MIN << 1) - 1
}

/// The rotation of four pairs, v0 in q0 and v1 in q1, by cos in q2 and sin in q3:
/// q0 ← v0·cos − v1·sin, q1 ← v1·cos + v0·sin (q4, q5 clobbered). Used by [`rope`].
macro_rules! rope_q0q1 {
    () => {
        concat!(
            "vmul.f32 q4, q0, q3\n",
            "vmul.f32 q0, q0, q2\n",
            "vmul.f32 q5, q1, q3\n",
            "vsub.f32 q0, q0, q5\n",
            "vmul.f32 q1, q1, q2\n",
            "vadd.f32 q1, q1, q4\n",
        )
    };
}

/// RoPE's rotation of every pair of `q` and of `k` (heads of `rotation.len()` values;
/// `rotation` holds (cos, sin) per pair of a head): `v0' = v0·cos − v1·sin`, `v1' = v0·sin + v1·cos`
/// (`math::rope_rotate`), four pairs per step in MVE lanes: `VLD20`/`VLD21` take the
/// four v0 and the four v1 apart, four `VMUL.F32`, one `VSUB.F32` and one `VADD.F32`
/// (multiply, then add: each rounding of the scalar expression, in the same order;
/// the sum's operands are swapped, which IEEE addition does not see), `VST20`/`VST21`
/// put them back. Returns whether it rotated `q` and `k`: it leaves one alone unless
/// the head size is a multiple of 8, the vector is whole heads and both it and
/// `rotation` are [`moderate`](super::moderate): each product of moderate values is then 0 or in
/// [2^-100, 2^100] and a multiple of 2^-123, so the difference and the sum are 0 or
/// multiples of 2^-123 below 2^101: no input, product or result is subnormal or
/// overflows, nothing is NaN, and MVE's flush to zero and default NaN change no bit.
pub fn rope(q: &mut [f32], k: &mut [f32], rotation: &[f32]) -> [bool; 2] {
    let hs = rotation.len();
    if hs == 0 || !hs.is_multiple_of(8) || !moderate(rotation) {
        return [false; 2];
    }
    [rope_heads(q, rotation), rope_heads(k, rotation)]
}

/// [`rope`] for one vector, `rotation` known to be moderate with 8 | rotation.len().
fn rope_heads(vec: &mut [f32], rotation: &[f32]) -> bool {
    let hs = rotation.len();
    if hs == 0 || !vec.len().is_multiple_of(hs) || !moderate(vec) {
        return false;
    }
    let groups = vec.len() / 8;
    if groups == 0 {
        return true;
    }
    if hs == 8 {
        // One group per head: cos and sin stay in q2, q3.
        // SAFETY: reads the 8 floats of `rotation`, reads and writes 8 · groups = vec.len()
        // floats of `vec`; only the named registers, lr and q0-q5 (d0-d11) change.
        unsafe {
            asm!(
                "vld20.32 {{q2, q3}}, [{r}]",
                "vld21.32 {{q2, q3}}, [{r}]",
                "dls lr, lr",
                "2:",
                "vld20.32 {{q0, q1}}, [{p}]",
                "vld21.32 {{q0, q1}}, [{p}]",
                rope_q0q1!(),
                "vst20.32 {{q0, q1}}, [{p}]",
                "vst21.32 {{q0, q1}}, [{p}]!",
                "le lr, 2b",
                r = in(reg) rotation.as_ptr(),
                p = inout(reg) vec.as_mut_ptr() => _,
                inout("lr") groups => _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                options(nostack),
            );
        }
        return true;
    }
    // Longer heads: cos and sin of the group's pairs loaded each step, the rotation
    // pointer back at its start after each head.
    // SAFETY: reads the hs floats of `rotation` (the pointer stays in [start, end)), reads
    // and writes 8 · groups = vec.len() floats of `vec`; only the named registers, lr and
    // q0-q5 (d0-d11) change; the flags are clobbered.
    unsafe {
        asm!(
            "mov {r}, {start}",
            "dls lr, lr",
            "2:",
            "vld20.32 {{q2, q3}}, [{r}]",
            "vld21.32 {{q2, q3}}, [{r}]!",
            "cmp {r}, {end}",
            "it eq",
            "moveq {r}, {start}",
            "vld20.32 {{q0, q1}}, [{p}]",
            "vld21.32 {{q0, q1}}, [{p}]",
            rope_q0q1!(),
            "vst20.32 {{q0, q1}}, [{p}]",
            "vst21.32 {{q0, q1}}, [{p}]!",
            "le lr, 2b",
            start = in(reg) rotation.as_ptr(),
            end = in(reg) rotation.as_ptr_range().end,
            r = out(reg) _,
            p = inout(reg) vec.as_mut_ptr() => _,
            inout("lr") groups => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _,
            options(nostack),
        );
    }
    true
}

/// [`arm_fpu::argmax8`](super::arm_fpu::argmax8) (the first largest of
/// `x[..8 · (x.len() / 8)]` as `if v > best { best = v }` finds it from `x[0]`, and
/// whether those values are all finite) on integer lanes, when the values are finite
/// and one is greater than zero; otherwise it returns `arm_fpu::argmax8`'s answer.
/// The first pass keeps a running `VMAX.S32` and a running `VMAX.U32` of the bits
/// (a positive infinity or NaN shows in the first as at least 0x7F80_0000, a negative
/// one in the second as at least 0xFF80_0000). A positive float's bits, as i32, order like its value and
/// exceed those of every negative float, ±0 and negative NaN, so when the largest
/// bits are those of a positive finite float they are the largest value's, and only
/// equal values have equal bits: the second pass stops at the first quad holding
/// them (`VCMP.I32` on the lanes), and the first such lane is the portable loop's
/// choice. No float instruction runs, so MVE's flush to zero plays no part.
pub fn argmax8(x: &[f32]) -> Option<(usize, f32, bool)> {
    let pairs = x.len() / 8;
    if pairs == 0 {
        return None;
    }
    let (best, umax): (u32, u32);
    // SAFETY: reads 8 · pairs ≤ x.len() floats from `x`; only the named registers, lr and
    // q0-q3 (d0-d7) change.
    unsafe {
        asm!(
            "vmov.i32 q2, #0x80000000",
            "vmov.i32 q3, #0",
            "dls lr, lr",
            "2:",
            "vldrw.u32 q0, [{p}], #16",
            "vldrw.u32 q1, [{p}], #16",
            "vmax.s32 q2, q2, q0",
            "vmax.u32 q3, q3, q0",
            "vmax.s32 q2, q2, q1",
            "vmax.u32 q3, q3, q1",
            "le lr, 2b",
            "mov.w {b}, #0x80000000",
            "vmaxv.s32 {b}, q2",
            "movs {m}, #0",
            "vmaxv.u32 {m}, q3",
            p = inout(reg) x.as_ptr() => _,
            b = out(reg) best,
            m = out(reg) umax,
            inout("lr") pairs => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            options(readonly, nostack),
        );
    }
    // A positive infinity or NaN has the largest bits as i32, a negative one as u32.
    if best as i32 <= 0 || best >= 0x7f80_0000 || umax >= 0xff80_0000 {
        return super::arm_fpu::argmax8(x);
    }
    let (at, lanes): (*const f32, u32);
    // SAFETY: reads whole quads of `x` until one holds `best`, which one of the first
    // 2 · pairs does (the first pass found it there); only the named registers, lr and q0
    // (d0-d1) change; the flags and VPR are clobbered (see the module doc).
    unsafe {
        asm!(
            "2:",
            "vldrw.u32 q0, [{p}], #16",
            "vcmp.i32 eq, q0, {b}",
            "vmrs {l}, p0",
            "cmp {l}, #0",
            "beq 2b",
            p = inout(reg) x.as_ptr() => at,
            b = in(reg) best,
            l = out(reg) lanes,
            out("d0") _, out("d1") _,
            options(readonly, nostack),
        );
    }
    // The quad's first value (at was advanced past it), then its first equal lane:
    // each lane owns four bits of P0.
    let index = (at as usize - x.as_ptr() as usize) / 4 - 4 + lanes.trailing_zeros() as usize / 4;
    Some((index, f32::from_bits(best), true))
}

/// Eight VMLA of one group's squares into `ss`, the group in s0-s7.
macro_rules! squares_s0_s7 {
    () => {
        concat!(
            "vmla.f32 {ss}, s0, s0\n",
            "vmla.f32 {ss}, s1, s1\n",
            "vmla.f32 {ss}, s2, s2\n",
            "vmla.f32 {ss}, s3, s3\n",
            "vmla.f32 {ss}, s4, s4\n",
            "vmla.f32 {ss}, s5, s5\n",
            "vmla.f32 {ss}, s6, s6\n",
            "vmla.f32 {ss}, s7, s7\n",
        )
    };
}

/// `(8 · (x.len() / 8), Σ x_i²)` over those values, left to right from 0.0, on the
/// scalar FPU (not MVE lanes: the sum is one chain, and squares may be subnormal):
/// per group one VLDM and eight VMLA, which rounds each square before adding it, as
/// `ss += v * v` does (`math::sum_squares`).
pub fn squares8(x: &[f32]) -> (usize, f32) {
    let groups = x.len() / 8;
    if groups == 0 {
        return (0, 0.0);
    }
    let mut ss = 0.0f32;
    // SAFETY: reads 8 · groups floats of `x`; only the named registers, lr and s0-s7
    // (d0-d3) change.
    unsafe {
        asm!(
            "dls lr, lr",
            "2:",
            "vldmia {p}!, {{s0-s7}}",
            squares_s0_s7!(),
            "le lr, 2b",
            p = inout(reg) x.as_ptr() => _,
            ss = inout(sreg) ss,
            inout("lr") groups => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            options(readonly, nostack),
        );
    }
    (8 * groups, ss)
}

/// `x[i] += d[i]` for the whole groups of eight of the shorter slice, and Σ x_i² of the
/// results, left to right from 0.0, as `(count, sum)`, on the scalar FPU
/// (`math::add_in_place_squares`): per group a VLDM of x and of d, VADD then VMLA per
/// value (the square rounded before it is added), one VSTM.
pub fn add_squares8(x: &mut [f32], d: &[f32]) -> (usize, f32) {
    let groups = x.len().min(d.len()) / 8;
    if groups == 0 {
        return (0, 0.0);
    }
    let mut ss = 0.0f32;
    // SAFETY: reads 8 · groups floats of `d`, reads and writes as many of `x`; only the
    // named registers, lr and s0-s15 (d0-d7) change.
    unsafe {
        asm!(
            "dls lr, lr",
            "2:",
            "vldmia {x}, {{s0-s7}}",
            "vldmia {d}!, {{s8-s15}}",
            "vadd.f32 s0, s0, s8",
            "vadd.f32 s1, s1, s9",
            "vadd.f32 s2, s2, s10",
            "vadd.f32 s3, s3, s11",
            "vadd.f32 s4, s4, s12",
            "vadd.f32 s5, s5, s13",
            "vadd.f32 s6, s6, s14",
            "vadd.f32 s7, s7, s15",
            squares_s0_s7!(),
            "vstmia {x}!, {{s0-s7}}",
            "le lr, 2b",
            x = inout(reg) x.as_mut_ptr() => _,
            d = inout(reg) d.as_ptr() => _,
            ss = inout(sreg) ss,
            inout("lr") groups => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            options(nostack),
        );
    }
    (8 * groups, ss)
}

/// `out[i] = weight[i] · (scale · x[i])` (`math::rmsnorm`'s expression, both products
/// rounded in that order) for the whole groups of eight of the shortest slice, on the
/// scalar FPU (the products may be subnormal, so not MVE lanes): per group a VLDM of x
/// and of the weights, sixteen VMUL, one VSTM. Returns how many values it did.
pub fn norm8(out: &mut [f32], x: &[f32], weight: &[f32], scale: f32) -> usize {
    let groups = out.len().min(x.len()).min(weight.len()) / 8;
    // SAFETY: `x` and `weight` hold 8 · groups floats, `out` as many (writable).
    unsafe { norm8_raw(out.as_mut_ptr(), x.as_ptr(), weight.as_ptr(), groups, scale) };
    8 * groups
}

/// [`norm8`] in place: `x[i] = weight[i] · (scale · x[i])` (`math::rmsnorm_in_place`'s
/// expression) for the whole groups of eight of the shorter slice; returns how many.
pub fn norm8_in_place(x: &mut [f32], weight: &[f32], scale: f32) -> usize {
    let groups = x.len().min(weight.len()) / 8;
    let p = x.as_mut_ptr();
    // SAFETY: `x` and `weight` hold 8 · groups floats; each group of `x` is loaded before
    // it is stored, so reading and writing through the same pointer is what in place means.
    unsafe { norm8_raw(p, p, weight.as_ptr(), groups, scale) };
    8 * groups
}

/// The loop of [`norm8`] over `groups` groups of eight.
///
/// # Safety
/// `x` and `w` must be readable and `out` writable for 8 · groups floats (`out` may be `x`).
#[inline(always)]
unsafe fn norm8_raw(out: *mut f32, x: *const f32, w: *const f32, groups: usize, scale: f32) {
    if groups == 0 {
        return;
    }
    // SAFETY: the caller's contract; only the named registers, lr and s0-s15 (d0-d7) change.
    unsafe {
        asm!(
            "dls lr, lr",
            "2:",
            "vldmia {x}!, {{s0-s7}}",
            "vldmia {w}!, {{s8-s15}}",
            "vmul.f32 s0, s0, {s}",
            "vmul.f32 s1, s1, {s}",
            "vmul.f32 s2, s2, {s}",
            "vmul.f32 s3, s3, {s}",
            "vmul.f32 s4, s4, {s}",
            "vmul.f32 s5, s5, {s}",
            "vmul.f32 s6, s6, {s}",
            "vmul.f32 s7, s7, {s}",
            "vmul.f32 s0, s8, s0",
            "vmul.f32 s1, s9, s1",
            "vmul.f32 s2, s10, s2",
            "vmul.f32 s3, s11, s3",
            "vmul.f32 s4, s12, s4",
            "vmul.f32 s5, s13, s5",
            "vmul.f32 s6, s14, s6",
            "vmul.f32 s7, s15, s7",
            "vstmia {o}!, {{s0-s7}}",
            "le lr, 2b",
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            o = inout(reg) out => _,
            s = in(sreg) scale,
            inout("lr") groups => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            options(nostack),
        );
    }
}

/// q8_0-quantizes `x` into narrowed blocks at the start of `out` for the MVE matvec
/// (`matvec_narrowed`), for `out.len() / q8_act::BLOCK_WORDS` blocks (the scratch of
/// a quantized matvec: [`q8_act::words`]`(cols)`): per block the f16 scale widened to
/// f32, then the 32 quants as i8 in element order (`NARROW_BYTES` bytes, where
/// `matvec` narrows prepared blocks to), blocks past the end of `x` zero and a
/// partial last one zero-padded, as the weights are. Each block is
/// `q8_0::quantize_block`'s: [`prepare_block_narrow`] where its guard holds, else the
/// portable quantizer.
pub fn prepare_row_narrow(x: &[f32], out: &mut [u32]) {
    const WORDS: usize = NARROW_BYTES / 4;
    let blocks = out.len() / q8_act::BLOCK_WORDS;
    let out = &mut out[..blocks * WORDS];
    let x = &x[..x.len().min(blocks * QK)];
    let whole = x.chunks_exact(QK);
    let tail = whole.remainder();
    let mut dst = out.chunks_exact_mut(WORDS);
    for (values, block) in whole.zip(&mut dst) {
        let (Ok(values), Ok(block)) = (<&[f32; QK]>::try_from(values), <&mut [u32; WORDS]>::try_from(block)) else {
            continue;
        };
        if !prepare_block_narrow(values, block) {
            narrow_portable(values, block);
        }
    }
    if !tail.is_empty() {
        if let Some(Ok(block)) = dst.next().map(<&mut [u32; WORDS]>::try_from) {
            // The partial last block from a zero-padded copy, as the weights are padded.
            let mut padded = [0.0f32; QK];
            padded[..tail.len()].copy_from_slice(tail);
            if !prepare_block_narrow(&padded, block) {
                narrow_portable(tail, block);
            }
        }
    }
    for block in dst {
        block.fill(0);
    }
}

/// `q8_0::quantize_block(x)` as one narrowed block, by the portable quantizer.
fn narrow_portable(x: &[f32], out: &mut [u32; NARROW_BYTES / 4]) {
    let mut q8 = [0u8; q8_0::BLOCK_BYTES];
    q8_0::quantize_block(x, &mut q8);
    out[0] = half::f16::from_le_bytes([q8[0], q8[1]]).to_f32().to_bits();
    for (word, quad) in out[1..].iter_mut().zip(q8[2..].chunks_exact(4)) {
        *word = u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]);
    }
}

/// `q8_0::quantize_block(x)` as one narrowed block (`out`: the scale widened to f32,
/// then the 32 quants as i8 in element order) in MVE lanes, when [`prepare_block`]'s
/// guard holds (returns `false`, writing nothing, otherwise): the same maximum, scale
/// and `VMUL.F32` / `VCVTA.S32.F32` per four values, so the same quants (the argument
/// for MVE's flush to zero is [`prepare_block`]'s), stored by `VSTRB.32` (the low
/// byte of each lane: the quants lie in −127..=127).
#[inline]
pub fn prepare_block_narrow(x: &[f32; 32], out: &mut [u32; NARROW_BYTES / 4]) -> bool {
    let Some((d, id)) = block_scale(x) else { return false };
    let d16: u32;
    // SAFETY: reads the 32 floats of `x`; writes the 32 bytes of `out` after its first
    // word (eight stores of four bytes); only the named registers, s0 and q0 (d0-d1) change.
    unsafe {
        asm!(
            // The scale rounded to binary16 and back (exact), as the FPU quantizer.
            "vmov s0, {d}",
            "vcvtb.f16.f32 s0, s0",
            "vcvtb.f32.f16 s0, s0",
            "vmov {d}, s0",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{o}], #4",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{o}], #4",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{o}], #4",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{o}], #4",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{o}], #4",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{o}], #4",
            "vldrw.u32 q0, [{p}], #16",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{o}], #4",
            "vldrw.u32 q0, [{p}]",
            "vmul.f32 q0, q0, {id}",
            "vcvta.s32.f32 q0, q0",
            "vstrb.32 q0, [{o}]",
            p = inout(reg) x.as_ptr() => _,
            o = inout(reg) out[1..].as_mut_ptr() => _,
            d = inout(reg) d.to_bits() => d16,
            id = in(reg) id.to_bits(),
            out("d0") _, out("d1") _,
            options(nostack),
        );
    }
    out[0] = d16;
    true
}

/// `out (rows) = w (rows, cols) · x` for q8_0 or q4_0 rows of `row_bytes` bytes with the
/// activations narrowed in place by [`prepare_row_narrow`] (`xn`: [`q8_act::words`]`(cols)`
/// words, the narrowed blocks at its start): [`matvec`]'s rows and order, without
/// narrowing prepared blocks first (so matvecs of one input share the narrowed blocks).
pub(crate) fn matvec_narrowed(dtype: DType, w: &[u8], row_bytes: usize, xn: &[u32], out: &mut [f32]) {
    let block_bytes = if dtype == DType::Q4_0 { q4_0::BLOCK_BYTES } else { q8_0::BLOCK_BYTES };
    if row_bytes == 0 {
        return out.fill(0.0);
    }
    let rows = out.len().min(w.len() / row_bytes);
    let out = &mut out[..rows];
    // The whole blocks of a row that have activations (xn holds a narrowed block per
    // BLOCK_WORDS words).
    let blocks = (row_bytes / block_bytes).min(xn.len() / q8_act::BLOCK_WORDS);
    if blocks == 0 || rows == 0 {
        return fill_zero(out);
    }
    // SAFETY: rows·row_bytes ≤ w.len() and blocks·block_bytes ≤ row_bytes, so every row's
    // blocks are inside `w`; `xn` holds `blocks` narrowed blocks (blocks·36 ≤ xn.len()·4).
    // Every row's sum starts from 0.0, so `out` needs no zeroing first.
    unsafe { row_sums::<true>(dtype, w.as_ptr(), row_bytes, xn.as_ptr().cast(), blocks, out) };
}

/// `out[i] = d · qs[i]` for one q8_0 block (`q8_0::dequantize_row`'s products, d the
/// f16 scale widened) in MVE lanes, when d is finite (returns `false`, writing nothing,
/// otherwise): `VCVTB.F32.F16` widens the scale (its f16 inputs are not flushed:
/// FPSCR.FZ16 is 0 in the standard value), then per four quants `VLDRB.S32`,
/// `VCVT.F32.S32` (exact) and `VMUL.F32`. No subnormal can occur: a nonzero finite
/// f16 is at least 2^-24 and a nonzero quant at least 1 in magnitude, so every
/// product is 0 or normal (and at most 65504 · 128, finite), and without a NaN
/// operand MVE's default NaN plays no part.
pub fn dequantize_block_q8(block: &crate::dtype::BlockQ8_0, out: &mut [f32; QK]) -> bool {
    let h = u16::from_le_bytes(block.d);
    if h & 0x7c00 == 0x7c00 {
        return false;
    }
    // SAFETY: reads the 32 quant bytes of `block`, writes the 32 floats of `out`; only the
    // named registers, s0 and q0-q1 (d0-d3) change.
    unsafe {
        asm!(
            "vmov s0, {h}",
            "vcvtb.f32.f16 s0, s0",
            "vmov {h}, s0",
            "vldrb.s32 q0, [r2]",
            "vldrb.s32 q1, [r2, #4]",
            "vcvt.f32.s32 q0, q0",
            "vcvt.f32.s32 q1, q1",
            "vmul.f32 q0, q0, {h}",
            "vmul.f32 q1, q1, {h}",
            "vstrw.32 q0, [{o}]",
            "vstrw.32 q1, [{o}, #16]",
            "vldrb.s32 q0, [r2, #8]",
            "vldrb.s32 q1, [r2, #12]",
            "vcvt.f32.s32 q0, q0",
            "vcvt.f32.s32 q1, q1",
            "vmul.f32 q0, q0, {h}",
            "vmul.f32 q1, q1, {h}",
            "vstrw.32 q0, [{o}, #32]",
            "vstrw.32 q1, [{o}, #48]",
            "vldrb.s32 q0, [r2, #16]",
            "vldrb.s32 q1, [r2, #20]",
            "vcvt.f32.s32 q0, q0",
            "vcvt.f32.s32 q1, q1",
            "vmul.f32 q0, q0, {h}",
            "vmul.f32 q1, q1, {h}",
            "vstrw.32 q0, [{o}, #64]",
            "vstrw.32 q1, [{o}, #80]",
            "vldrb.s32 q0, [r2, #24]",
            "vldrb.s32 q1, [r2, #28]",
            "vcvt.f32.s32 q0, q0",
            "vcvt.f32.s32 q1, q1",
            "vmul.f32 q0, q0, {h}",
            "vmul.f32 q1, q1, {h}",
            "vstrw.32 q0, [{o}, #96]",
            "vstrw.32 q1, [{o}, #112]",
            h = inout(reg) u32::from(h) => _,
            // (The widening VLDRB.S32 takes a low base register.)
            in("r2") block.qs.as_ptr(),
            o = in(reg) out.as_mut_ptr(),
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            options(nostack),
        );
    }
    true
}

/// The largest |v| of `x` as bits (`|v|` orders like its bits; a NaN is above every
/// number, 0 for an empty `x`): per four values (the last `n % 4` under tail
/// predication) the bits shifted left by one into a running `VMAX.U32`.
fn max_abs_bits(x: &[f32]) -> u32 {
    if x.is_empty() {
        return 0;
    }
    let max2: u32;
    // SAFETY: reads x.len() floats of `x` (the tail-predicated loop loads exactly that many
    // lanes); only the named registers, lr and q0-q1 (d0-d3) change.
    unsafe {
        asm!(
            "vmov.i32 q1, #0",
            "dlstp.32 lr, {n}",
            "2:",
            "vldrw.u32 q0, [{p}], #16",
            "vshl.i32 q0, q0, #1",
            "vmax.u32 q1, q1, q0",
            "letp lr, 2b",
            "movs {m}, #0",
            "vmaxv.u32 {m}, q1",
            n = in(reg) x.len(),
            p = inout(reg) x.as_ptr() => _,
            m = out(reg) max2,
            out("lr") _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            options(readonly, nostack),
        );
    }
    max2 >> 1
}
