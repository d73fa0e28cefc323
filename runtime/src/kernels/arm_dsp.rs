//! Integer block sums with dual 16-bit multiply-accumulates: the Armv7E-M DSP
//! instructions SXTB16 (sign-extend bytes 0 and 2 of a word to two halfwords,
//! optionally after rotating it by 8) and SMLAD (add both halfword products to
//! an accumulator).
//!
//! [`dot_q8`] and [`dot_q4`] are the instruction sequences written with
//! portable emulations of the instructions ([`sxtb16`], [`sxtb16_ror8`],
//! [`smlad`]), so the host tests prove each sequence equal to the scalar sum;
//! [`Emulated`] wraps them as block sums for the kernel suite; `Dsp` runs the same sequences as asm on Cortex-M4/M7 (`cfg(microlm_dsp)`),
//! which QEMU's token identity with the host checks. Integer sums are exact
//! (|sum| ≤ 32·128·128 < 2^31), so the result is identical to any other order.
#![cfg_attr(microlm_dsp, allow(unsafe_code))]

/// SXTB16: bytes 0 and 2 of `x`, sign-extended to the low and high halfwords.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    let lo = u32::from(i16::from(x as u8 as i8) as u16);
    let hi = u32::from(i16::from((x >> 16) as u8 as i8) as u16);
    lo | (hi << 16)
}

/// SXTB16 with ROR #8: bytes 1 and 3 of `x`, sign-extended to the low and high halfwords.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    sxtb16(x.rotate_right(8))
}

/// SMLAD: `acc + lo(a)·lo(b) + hi(a)·hi(b)` on signed halfwords (wrapping, as the instruction).
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let lo = i32::from(a as u16 as i16) * i32::from(b as u16 as i16);
    let hi = i32::from((a >> 16) as u16 as i16) * i32::from((b >> 16) as u16 as i16);
    acc.wrapping_add(lo).wrapping_add(hi)
}

/// SSUB8: byte-wise `a − b` (each byte wrapping, as the instruction; it also sets
/// the GE flags, which nothing here reads).
#[inline(always)]
pub fn ssub8(a: u32, b: u32) -> u32 {
    let [a0, a1, a2, a3] = a.to_le_bytes();
    let [b0, b1, b2, b3] = b.to_le_bytes();
    u32::from_le_bytes([a0.wrapping_sub(b0), a1.wrapping_sub(b1), a2.wrapping_sub(b2), a3.wrapping_sub(b3)])
}

/// The three instructions as they run on this target: the DSP instructions on
/// Cortex-M4/M7, the emulations above elsewhere (same results).
pub mod insn {
    /// [`super::sxtb16`], as the instruction where there is one.
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        #[cfg(microlm_dsp)]
        {
            let r: u32;
            // SAFETY: SXTB16 only reads and writes the named registers (Armv7E-M DSP, present on this target).
            unsafe {
                core::arch::asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
            };
            r
        }
        #[cfg(not(microlm_dsp))]
        super::sxtb16(x)
    }

    /// [`super::sxtb16_ror8`], as the instruction where there is one.
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        #[cfg(microlm_dsp)]
        {
            let r: u32;
            // SAFETY: as above; the rotation is part of the instruction.
            unsafe {
                core::arch::asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
            };
            r
        }
        #[cfg(not(microlm_dsp))]
        super::sxtb16_ror8(x)
    }

    /// [`super::smlad`], as the instruction where there is one.
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        #[cfg(microlm_dsp)]
        {
            let r: i32;
            // SAFETY: SMLAD only reads and writes registers; it may set the sticky Q flag, which nothing reads.
            unsafe {
                core::arch::asm!("smlad {r}, {a}, {b}, {acc}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack))
            };
            r
        }
        #[cfg(not(microlm_dsp))]
        super::smlad(a, b, acc)
    }
}

/// Σ_i q\[i\]·k\[i\] for i16 values `q` (as words: `q8_act` pair order for each whole
/// group of four, the remaining `k.len() % 4` in element order) and signed
/// bytes `k`: two SMLAD per four bytes. Exact while the sum fits in i32.
#[inline(always)]
pub fn dot_i16_i8(q: &[u32], k: &[u8]) -> i32 {
    let groups = k.len() / 4;
    let mut acc = 0i32;
    for (pair, kw) in q.chunks_exact(2).zip(k.chunks_exact(4)) {
        let w = u32::from_le_bytes([kw[0], kw[1], kw[2], kw[3]]);
        acc = insn::smlad(insn::sxtb16(w), pair[0], acc);
        acc = insn::smlad(insn::sxtb16_ror8(w), pair[1], acc);
    }
    for (i, &kv) in k.iter().enumerate().skip(groups * 4) {
        let word = q.get(i / 2).copied().unwrap_or(0);
        let half = if i % 2 == 0 { word as u16 } else { (word >> 16) as u16 };
        acc += i32::from(half as i16) * i32::from(kv as i8);
    }
    acc
}

/// One group of four weights of [`dot_q8`]: weight word at byte `$w`, activation words at byte `$x`.
#[cfg(microlm_dsp)]
macro_rules! q8_group {
    ($op:literal, $w:literal, $x:literal) => {
        concat!(
            "ldr {a}, [{w}, #",
            $w,
            "]\n",
            "ldrd {x0}, {x1}, [{x}, #",
            $x,
            "]\n",
            "sxtb16 {t}, {a}\n",
            $op,
            "\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {acc}, {t}, {x1}, {acc}\n",
        )
    };
}

/// One group of eight nibbles of [`dot_q4`]: nibble word at byte `$w`, activation
/// words of the low nibbles at byte `$x` and of the high nibbles at `$x + 32`.
#[cfg(microlm_dsp)]
macro_rules! q4_group {
    ($op:literal, $w:literal, $x:literal, $xh:literal) => {
        concat!(
            "ldr {a}, [{w}, #",
            $w,
            "]\n",
            "and {hi}, {mask}, {a}, lsr #4\n",
            "and {a}, {a}, {mask}\n",
            "ldrd {x0}, {x1}, [{x}, #",
            $x,
            "]\n",
            "sxtb16 {t}, {a}\n",
            $op,
            "\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {acc}, {t}, {x1}, {acc}\n",
            "ldrd {x0}, {x1}, [{x}, #",
            $xh,
            "]\n",
            "sxtb16 {t}, {hi}\n",
            "smlad {acc}, {t}, {x0}, {acc}\n",
            "sxtb16 {t}, {hi}, ror #8\n",
            "smlad {acc}, {t}, {x1}, {acc}\n",
        )
    };
}

/// One nibble word of [`dot_q4_halves`] as asm: the low nibbles (SSUB8 − 8) against
/// the activation pairs at `$x`, the high ones against `$xh`; `$lo_op`/`$hi_op`
/// start (SMUAD) or continue (SMLAD) each half's sum.
#[cfg(microlm_dsp)]
macro_rules! q4_halves_group {
    ($lo_op:literal, $hi_op:literal, $w:literal, $x:literal, $xh:literal) => {
        concat!(
            "ldr {a}, [{w}, #",
            $w,
            "]\n",
            "and {b}, {mask}, {a}, lsr #4\n",
            "and {a}, {a}, {mask}\n",
            "ssub8 {a}, {a}, {eights}\n",
            "ssub8 {b}, {b}, {eights}\n",
            "ldrd {x0}, {x1}, [{x}, #",
            $x,
            "]\n",
            "sxtb16 {t}, {a}\n",
            $lo_op,
            "\n",
            "sxtb16 {t}, {a}, ror #8\n",
            "smlad {lo}, {t}, {x1}, {lo}\n",
            "ldrd {x0}, {x1}, [{x}, #",
            $xh,
            "]\n",
            "sxtb16 {t}, {b}\n",
            $hi_op,
            "\n",
            "sxtb16 {t}, {b}, ror #8\n",
            "smlad {hi}, {t}, {x1}, {hi}\n",
        )
    };
}

/// [`dot_q8`] and [`dot_q4`] as single asm blocks, so every activation pair
/// comes in with one LDRD and nothing spills: the same instructions in the
/// same order (SMUAD starts the sum at zero).
#[cfg(microlm_dsp)]
#[derive(Debug)]
pub struct Dsp;

#[cfg(microlm_dsp)]
impl super::BlockSums for Dsp {
    #[inline(always)]
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        let acc: i32;
        // SAFETY: reads 32 bytes at `w` (unaligned word loads, allowed on Armv7E-M) and
        // 64 bytes at `x` (word-aligned: a &[u32; 16]); both lie inside the borrowed arrays.
        // Writes only the named registers; SMLAD may set the Q flag, which nothing reads.
        unsafe {
            core::arch::asm!(
                q8_group!("smuad {acc}, {t}, {x0}", "0", "0"),
                q8_group!("smlad {acc}, {t}, {x0}, {acc}", "4", "8"),
                q8_group!("smlad {acc}, {t}, {x0}, {acc}", "8", "16"),
                q8_group!("smlad {acc}, {t}, {x0}, {acc}", "12", "24"),
                q8_group!("smlad {acc}, {t}, {x0}, {acc}", "16", "32"),
                q8_group!("smlad {acc}, {t}, {x0}, {acc}", "20", "40"),
                q8_group!("smlad {acc}, {t}, {x0}, {acc}", "24", "48"),
                q8_group!("smlad {acc}, {t}, {x0}, {acc}", "28", "56"),
                w = in(reg) w.as_ptr(),
                x = in(reg) x.as_ptr(),
                acc = out(reg) acc,
                a = out(reg) _,
                t = out(reg) _,
                x0 = out(reg) _,
                x1 = out(reg) _,
                options(pure, readonly, nostack),
            )
        };
        acc
    }

    #[inline(always)]
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        let acc: i32;
        // SAFETY: reads 16 bytes at `nibbles` (unaligned word loads) and 64 bytes at `x`
        // (word-aligned), inside the borrowed arrays; writes only the named registers.
        unsafe {
            core::arch::asm!(
                q4_group!("smuad {acc}, {t}, {x0}", "0", "0", "32"),
                q4_group!("smlad {acc}, {t}, {x0}, {acc}", "4", "8", "40"),
                q4_group!("smlad {acc}, {t}, {x0}, {acc}", "8", "16", "48"),
                q4_group!("smlad {acc}, {t}, {x0}, {acc}", "12", "24", "56"),
                w = in(reg) nibbles.as_ptr(),
                x = in(reg) x.as_ptr(),
                mask = in(reg) 0x0F0F_0F0Fu32,
                acc = out(reg) acc,
                a = out(reg) _,
                hi = out(reg) _,
                t = out(reg) _,
                x0 = out(reg) _,
                x1 = out(reg) _,
                options(pure, readonly, nostack),
            )
        };
        acc
    }

    #[inline(always)]
    fn q4_halves(nibbles: &[u8; 16], x: &[u32; 16], _x_sum: i32) -> (i32, i32) {
        let (lo, hi): (i32, i32);
        // SAFETY: reads 16 bytes at `nibbles` (unaligned word loads) and 64 bytes at `x`
        // (word-aligned), inside the borrowed arrays; writes only the named registers
        // (SSUB8 sets the GE flags, SMLAD may set Q: nothing reads them).
        unsafe {
            core::arch::asm!(
                q4_halves_group!("smuad {lo}, {t}, {x0}", "smuad {hi}, {t}, {x0}", "0", "0", "32"),
                q4_halves_group!("smlad {lo}, {t}, {x0}, {lo}", "smlad {hi}, {t}, {x0}, {hi}", "4", "8", "40"),
                q4_halves_group!("smlad {lo}, {t}, {x0}, {lo}", "smlad {hi}, {t}, {x0}, {hi}", "8", "16", "48"),
                q4_halves_group!("smlad {lo}, {t}, {x0}, {lo}", "smlad {hi}, {t}, {x0}, {hi}", "12", "24", "56"),
                w = in(reg) nibbles.as_ptr(),
                x = in(reg) x.as_ptr(),
                mask = in(reg) 0x0F0F_0F0Fu32,
                eights = in(reg) 0x0808_0808u32,
                lo = out(reg) lo,
                hi = out(reg) hi,
                a = out(reg) _,
                b = out(reg) _,
                t = out(reg) _,
                x0 = out(reg) _,
                x1 = out(reg) _,
                options(pure, readonly, nostack),
            )
        };
        (lo, hi)
    }
}

/// One group of four weights of both rows in `matvec_q8`'s loop: activation words
/// `$x0`, `$x1` (explicit registers), one weight word of each row (post-indexed,
/// unaligned loads). `first` starts the two sums with SMUAD, `next` adds with SMLAD.
#[cfg(all(microlm_dsp, microlm_fpu))]
macro_rules! q8_pair_group {
    (first, $x0:literal, $x1:literal) => {
        concat!(
            "ldr {w}, [{wa}], #4\n",
            "sxtb16 {t}, {w}\n",
            "smuad {acca}, {t}, ",
            $x0,
            "\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "smlad {acca}, {t}, ",
            $x1,
            ", {acca}\n",
            "ldr {w}, [{wb}], #4\n",
            "sxtb16 {t}, {w}\n",
            "smuad {accb}, {t}, ",
            $x0,
            "\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "smlad {accb}, {t}, ",
            $x1,
            ", {accb}\n",
        )
    };
    (next, $x0:literal, $x1:literal) => {
        concat!(
            "ldr {w}, [{wa}], #4\n",
            "sxtb16 {t}, {w}\n",
            "smlad {acca}, {t}, ",
            $x0,
            ", {acca}\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "smlad {acca}, {t}, ",
            $x1,
            ", {acca}\n",
            "ldr {w}, [{wb}], #4\n",
            "sxtb16 {t}, {w}\n",
            "smlad {accb}, {t}, ",
            $x0,
            ", {accb}\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "smlad {accb}, {t}, ",
            $x1,
            ", {accb}\n",
        )
    };
}

/// One q8_0 block of both rows in the paired matvec loops: the activation words
/// by LDM (scale, sum, then the pairs), the two f16 weight scales widened by VCVTB
/// and multiplied by the activation scale, the eight [`q8_pair_group!`]s, then
/// `acc += (sumi as f32) · (d_w · d_x)` per row into s6 and s7.
#[cfg(all(microlm_dsp, microlm_fpu))]
macro_rules! q8_pair_block {
    () => {
        concat!(
            "ldm {x}!, {{r2-r5}}\n",
            "ldrh {w}, [{wa}], #2\n",
            "ldrh {t}, [{wb}], #2\n",
            "vmov s0, s1, {w}, {t}\n",
            "vmov s2, r2\n",
            "vcvtb.f32.f16 s0, s0\n",
            "vcvtb.f32.f16 s1, s1\n",
            "vmul.f32 s0, s0, s2\n",
            "vmul.f32 s1, s1, s2\n",
            q8_pair_group!(first, "r4", "r5"),
            "ldm {x}!, {{r2-r5}}\n",
            q8_pair_group!(next, "r2", "r3"),
            q8_pair_group!(next, "r4", "r5"),
            "ldm {x}!, {{r2-r5}}\n",
            q8_pair_group!(next, "r2", "r3"),
            q8_pair_group!(next, "r4", "r5"),
            "ldm {x}!, {{r2-r5}}\n",
            q8_pair_group!(next, "r2", "r3"),
            q8_pair_group!(next, "r4", "r5"),
            "ldm {x}!, {{r2, r3}}\n",
            q8_pair_group!(next, "r2", "r3"),
            "vmov s2, s3, {acca}, {accb}\n",
            "vcvt.f32.s32 s2, s2\n",
            "vcvt.f32.s32 s3, s3\n",
            "vmla.f32 s6, s2, s0\n",
            "vmla.f32 s7, s3, s1\n",
        )
    };
}

/// `pairs` pairs of q8_0 rows (`blocks` blocks each, `row_bytes` apart, from `w`)
/// dotted with the prepared activations `x` into `out` (2 · pairs floats), the
/// whole matvec in one FPU+DSP loop (the loop state between pairs kept in s8-s12): per block the two f16 scales widened by
/// VCVTB (exact, as `f16_to_f32`), each multiplied by the activation scale, the
/// two integer sums by SXTB16/SMLAD with every activation word loaded once for
/// both rows (LDM), then `acc += (sumi as f32) · (d_w · d_x)` per row (VMLA rounds
/// the product, then the sum). Each row's sum is the order of
/// `q8_0::vec_dot_with`, which [`matvec_q8_emulated`] writes out in Rust.
///
/// # Safety
/// `w` must be readable for 2 · pairs rows of `row_bytes` = `blocks` × 34 bytes, `x`
/// for `blocks` × 18 words (word-aligned) and `out` writable (word-aligned) for
/// 2 · pairs floats; `blocks` ≥ 1 and `pairs` ≥ 1.
#[cfg(all(microlm_dsp, microlm_fpu))]
#[inline(always)]
unsafe fn matvec_q8_pairs(w: *const u8, row_bytes: usize, x: *const u32, blocks: usize, out: *mut f32, pairs: usize) {
    // SAFETY: the caller's contract covers every load (weights with unaligned LDR/LDRH, allowed
    // on Armv7E-M and Armv8-M Main; activations with LDM, word-aligned); the outputs are word stores. s0-s12
    // are saved and restored; the flags are clobbered (declared by not preserving them).
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s12}}",
            "vmov s8, s9, {x}, {n}",
            "vmov s10, s11, {t}, {w}",
            "vmov s12, {acca}",
            "add {wb}, {wa}, {w}",
            "3:",
            "vmov {x}, {n}, s8, s9",
            "movs {t}, #0",
            "vmov s6, s7, {t}, {t}",
            "2:",
            q8_pair_block!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            // Both sums out; the next pair starts one row past where these rows ended.
            "vmov {t}, {w}, s10, s11",
            "vstmia {t}!, {{s6-s7}}",
            "vmov s10, {t}",
            "add {wa}, {wa}, {w}",
            "add {wb}, {wb}, {w}",
            "vmov {acca}, s12",
            "subs {acca}, {acca}, #1",
            "vmov s12, {acca}",
            "bne 3b",
            "vpop {{s0-s12}}",
            wa = inout(reg) w => _,
            wb = out(reg) _,
            x = inout(reg) x => _,
            n = inout(reg) blocks => _,
            acca = inout(reg) pairs => _,
            accb = out(reg) _,
            w = inout(reg) row_bytes => _,
            t = inout(reg) out => _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
        )
    };
}

/// [`matvec_q8_pairs`] for rows of exactly two blocks (64 columns, the most common
/// shape of small models): both blocks written out, so no block counter, and the
/// loop state between pairs fits in core registers but for the output pointer and
/// the row stride (s10, s11). The same operations in the same order.
///
/// # Safety
/// As [`matvec_q8_pairs`] with `blocks` = 2.
#[cfg(all(microlm_dsp, microlm_fpu))]
#[inline(always)]
unsafe fn matvec_q8_pairs_2(w: *const u8, row_bytes: usize, x: *const u32, out: *mut f32, pairs: usize) {
    // SAFETY: as `matvec_q8_pairs` (unaligned LDR/LDRH for weights, LDM for the word-aligned
    // activations, word stores for the outputs); s0-s12 are saved and restored; the flags
    // are clobbered (declared by not preserving them).
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s12}}",
            "vmov s10, s11, {t}, {w}",
            "add {wb}, {wa}, {w}",
            "3:",
            "movs {t}, #0",
            "vmov s6, s7, {t}, {t}",
            q8_pair_block!(),
            q8_pair_block!(),
            // Both sums out; the activations rewind two blocks (2 · 72 bytes); the next
            // pair starts one row past where these rows ended.
            "sub {x}, {x}, #144",
            "vmov {t}, {w}, s10, s11",
            "vstmia {t}!, {{s6-s7}}",
            "vmov s10, {t}",
            "add {wa}, {wa}, {w}",
            "add {wb}, {wb}, {w}",
            "subs {n}, {n}, #1",
            "bne 3b",
            "vpop {{s0-s12}}",
            wa = inout(reg) w => _,
            wb = out(reg) _,
            x = inout(reg) x => _,
            n = inout(reg) pairs => _,
            acca = out(reg) _,
            accb = out(reg) _,
            w = inout(reg) row_bytes => _,
            t = inout(reg) out => _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
        )
    };
}

/// The q8_0 matvec on Cortex-M4F/M7/M33 with DSP and FPU: `out (rows) = w (rows,
/// row_bytes) · x`, two rows at a time through `matvec_q8_pairs`, an odd last row
/// through the [`Dsp`] block sums. Bit-identical to `quantized_matvec::<Portable>`
/// (the suite checks it on the device). `xq` holds at least the row's blocks.
#[cfg(all(microlm_dsp, microlm_fpu))]
#[inline]
pub fn matvec_q8(w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    let blocks = row_bytes / super::q8_0::BLOCK_BYTES;
    let fits = blocks > 0
        && blocks * super::q8_0::BLOCK_BYTES == row_bytes
        && xq.len() >= blocks * super::q8_act::BLOCK_WORDS
        && w.len() >= out.len() * row_bytes;
    if !fits {
        return super::quantized_matvec::<Dsp>(crate::dtype::DType::Q8_0, w, row_bytes, xq, out);
    }
    let (pairs, last) = (out.len() / 2, out.len() / 2 * 2 * row_bytes);
    if pairs > 0 {
        // SAFETY: `w` holds 2 · pairs whole rows of `blocks` blocks and `xq` `blocks` prepared
        // blocks (checked above); `xq` and `out` are word-aligned (&[u32], &mut [f32]) and
        // `out` holds 2 · pairs floats.
        unsafe {
            if blocks == 2 {
                matvec_q8_pairs_2(w.as_ptr(), row_bytes, xq.as_ptr(), out.as_mut_ptr(), pairs)
            } else {
                matvec_q8_pairs(w.as_ptr(), row_bytes, xq.as_ptr(), blocks, out.as_mut_ptr(), pairs)
            }
        };
    }
    let rest = &mut out[pairs * 2..];
    if let ([o], Some(row)) = (rest, w.get(last..)) {
        *o = super::q8_0::vec_dot_with::<Dsp>(&row[..row_bytes], xq);
    }
}

/// `matvec_q8`'s loop written in Rust with the emulated instructions: two rows
/// at a time, per block both integer sums from the same activation words, the
/// scales widened by `f16_to_f32`, then `acc += sumi as f32 · (d_w · d_x)` per row.
/// The host tests prove it equal to `q8_0::vec_dot_ref`.
pub fn matvec_q8_emulated(w: &[u8], row_bytes: usize, xq: &[u32], out: &mut [f32]) {
    let blocks = row_bytes / super::q8_0::BLOCK_BYTES;
    for (o, r) in out.chunks_mut(2).zip(w.chunks(2 * row_bytes)) {
        let (ra, rb) = r.split_at(row_bytes.min(r.len()));
        let (mut acc_a, mut acc_b) = (0.0f32, 0.0f32);
        for (b, xb) in super::q8_act::blocks(xq).take(blocks).enumerate() {
            let at = b * super::q8_0::BLOCK_BYTES;
            let block = |row: &[u8]| -> ([u8; 2], [u8; 32]) {
                let bytes = row.get(at..at + super::q8_0::BLOCK_BYTES).unwrap_or(&[0; 34]);
                ([bytes[0], bytes[1]], bytes[2..].try_into().unwrap_or([0; 32]))
            };
            let ((da, qa), (db, qb)) = (block(ra), block(rb));
            let (sa, sb) = (super::f16_to_f32(da) * xb.d, super::f16_to_f32(db) * xb.d);
            let (mut ia, mut ib) = (0i32, 0i32);
            for g in 0..8 {
                let (x0, x1) = (xb.pairs[2 * g], xb.pairs[2 * g + 1]);
                let (a, b) = (word(&qa, g), word(&qb, g));
                ia = smlad(sxtb16_ror8(a), x1, smlad(sxtb16(a), x0, ia));
                ib = smlad(sxtb16_ror8(b), x1, smlad(sxtb16(b), x0, ib));
            }
            acc_a += ia as f32 * sa;
            acc_b += ib as f32 * sb;
        }
        o[0] = acc_a;
        if let Some(o1) = o.get_mut(1) {
            *o1 = acc_b;
        }
    }
}

/// The block sums as the instruction sequences with emulated instructions
/// ([`dot_q8`], [`dot_q4`]): what the host tests prove equal to the scalar sums.
#[derive(Debug)]
pub struct Emulated;

impl super::BlockSums for Emulated {
    #[inline(always)]
    fn q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        dot_q8(w, x)
    }

    #[inline(always)]
    fn q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        dot_q4(nibbles, x)
    }

    #[inline(always)]
    fn q4_halves(nibbles: &[u8; 16], x: &[u32; 16], _x_sum: i32) -> (i32, i32) {
        dot_q4_halves(nibbles, x)
    }
}

/// Little-endian word `i` of `b` (4 bytes); an unaligned load on Cortex-M.
#[inline(always)]
fn word(b: &[u8], i: usize) -> u32 {
    match b.get(4 * i..4 * i + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Σ_{i<32} w\[i\]·x\[i\] for a block of 32 signed weight bytes (element order) and
/// prepared activations (`q8_act` pair order): per weight word, SXTB16 and its
/// 8-bit rotation line up with the two activation words of the same group.
#[inline(always)]
pub fn dot_q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
    let mut acc = 0i32;
    for g in 0..8 {
        let a = word(w, g);
        acc = smlad(sxtb16(a), x[2 * g], acc);
        acc = smlad(sxtb16_ror8(a), x[2 * g + 1], acc);
    }
    acc
}

/// Σ_{i<32} nibble_i·x\[i\] for a q4_0 block's 16 nibble bytes (element i in the
/// low nibble of byte i, element 16+i in the high one) and prepared
/// activations; the caller subtracts 8·Σx for the nibbles' offset.
#[inline(always)]
pub fn dot_q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
    let mut acc = 0i32;
    for g in 0..4 {
        let q = word(nibbles, g);
        // Elements 4g..4g+4 (low nibbles) and 16+4g.. (high nibbles), one per byte.
        let (lo, hi) = (q & 0x0F0F_0F0F, (q >> 4) & 0x0F0F_0F0F);
        acc = smlad(sxtb16(lo), x[2 * g], acc);
        acc = smlad(sxtb16_ror8(lo), x[2 * g + 1], acc);
        acc = smlad(sxtb16(hi), x[8 + 2 * g], acc);
        acc = smlad(sxtb16_ror8(hi), x[9 + 2 * g], acc);
    }
    acc
}

/// (Σ_{j<16} (lo_j − 8)·x\[j\], Σ_{j<16} (hi_j − 8)·x\[16 + j\]) for a q4_16 block's
/// 16 nibble bytes: per nibble word, the low and high nibbles masked out, SSUB8
/// takes 8 from each byte (signed −8..=7), then SXTB16/SMLAD as for q8_0 into one
/// sum per half.
#[inline(always)]
pub fn dot_q4_halves(nibbles: &[u8; 16], x: &[u32; 16]) -> (i32, i32) {
    let (mut lo_acc, mut hi_acc) = (0i32, 0i32);
    for g in 0..4 {
        let q = word(nibbles, g);
        let (lo, hi) = (ssub8(q & 0x0F0F_0F0F, 0x0808_0808), ssub8((q >> 4) & 0x0F0F_0F0F, 0x0808_0808));
        lo_acc = smlad(sxtb16_ror8(lo), x[2 * g + 1], smlad(sxtb16(lo), x[2 * g], lo_acc));
        hi_acc = smlad(sxtb16_ror8(hi), x[9 + 2 * g], smlad(sxtb16(hi), x[8 + 2 * g], hi_acc));
    }
    (lo_acc, hi_acc)
}

/// `(d, 1/d)` of a block from `arm_fpu::max_abs_bits2`'s result (twice the bits of max |x|), when the fast
/// quantization applies: no NaN or infinity, and `d = max|x| / 127` normal or zero
/// (`1/d` is then finite, and 0 for d = 0 as in `q8_0::quantize_block`).
#[inline(always)]
pub(crate) fn fast_scale(bits2: u32) -> Option<(f32, f32)> {
    if bits2 >= 0xFF00_0000 {
        return None;
    }
    let d = f32::from_bits(bits2 >> 1) / 127.0;
    if d == 0.0 {
        return Some((d, 0.0));
    }
    d.is_normal().then(|| (d, 1.0 / d))
}

/// `arm_fpu::prepare_block`'s arithmetic in Rust (`trunc(2y)` by `as i32`, the scale through
/// `half`): what the host tests prove equal to the portable quantizer; `false` where
/// `arm_fpu::prepare_block` takes the portable path.
pub fn prepare_block_emulated(x: &[f32; 32], out: &mut [u32; super::q8_act::BLOCK_WORDS]) -> bool {
    let bits2 = x.iter().fold(0u32, |m, v| m.max(v.to_bits() << 1));
    let Some((d, id)) = fast_scale(bits2) else { return false };
    let q = x.map(|v| {
        let t = (v * id * 2.0) as i32;
        (t + (t >> 31) + 1) >> 1
    });
    out[0] = half::f16::from_f32(d).to_f32().to_bits();
    out[1] = q.iter().sum::<i32>() as u32;
    for (pair, g) in out[2..].chunks_exact_mut(2).zip(q.chunks_exact(4)) {
        let half = |v: i32| u32::from(v as i16 as u16);
        pair[0] = half(g[0]) | half(g[2]) << 16;
        pair[1] = half(g[1]) | half(g[3]) << 16;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_data::bytes;

    #[test]
    fn emulated_instructions_match_their_definitions() {
        assert_eq!(sxtb16(0x80_7f_01_ff), 0x007f_ffff);
        assert_eq!(sxtb16_ror8(0x80_7f_01_ff), 0xff80_0001);
        assert_eq!(smlad(0xffff_0002, 0x0003_0004, 10), 10 + 8 - 3);
    }

    #[test]
    fn quantizer_emulation_equals_portable_quantizer() {
        use crate::kernels::{q8_0, q8_act};
        let (mut fast, mut slow) = (0, 0);
        for case in 0..4000u32 {
            let x = crate::kernels::suite::quant_block(case);
            let mut q8 = [0u8; q8_0::BLOCK_BYTES];
            q8_0::quantize_block(&x, &mut q8);
            let mut want = [0u32; q8_act::BLOCK_WORDS];
            q8_act::prepare_block(&q8, &mut want);
            let mut got = [0u32; q8_act::BLOCK_WORDS];
            if prepare_block_emulated(&x, &mut got) {
                assert_eq!(got, want, "case {case}: {x:?}");
                fast += 1;
            } else {
                slow += 1;
            }
        }
        // The fast path covers every finite block with a normal or zero scale.
        assert!(fast >= 3000 && slow >= 500, "fast {fast}, slow {slow}");
    }

    #[test]
    fn paired_q8_matvec_emulation_equals_scalar_reference() {
        use crate::kernels::{q8_0, q8_act, test_data::values};
        for (s, &cols) in [1usize, 31, 32, 64, 100, 172].iter().enumerate() {
            for rows in 1..=5 {
                let nb = cols.div_ceil(32);
                let rb = nb * q8_0::BLOCK_BYTES;
                let mut w = std::vec![0u8; rows * rb];
                for (r, row) in w.chunks_exact_mut(rb).enumerate() {
                    q8_0::quantize_row(&values(cols, 10 + (s * 8 + r) as u64), row);
                }
                let x = values(cols, 900 + s as u64);
                let mut x8 = std::vec![0u8; rb];
                q8_0::quantize_row(&x, &mut x8);
                let mut xq = std::vec![0u32; q8_act::words(cols).unwrap()];
                q8_act::prepare_row(&x, &mut xq);
                let mut out = std::vec![f32::NAN; rows];
                matvec_q8_emulated(&w, rb, &xq, &mut out);
                for (o, row) in out.iter().zip(w.chunks_exact(rb)) {
                    let want = q8_0::vec_dot_ref(row, &x8);
                    assert_eq!(o.to_bits(), want.to_bits(), "cols={cols} rows={rows}: {o} vs {want}");
                }
            }
        }
    }

    #[test]
    fn i16_by_i8_dot_equals_scalar_for_every_length() {
        for n in 0..=19 {
            for seed in 0..20 {
                let (q, k) = (bytes(2 * n, seed), bytes(n, seed + 99));
                let q16: std::vec::Vec<i16> = q.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                let scalar: i32 = q16.iter().zip(&k).map(|(&a, &b)| i32::from(a) * i32::from(b as i8)).sum();
                // Whole groups go in pair order, the rest in element order.
                let full = n / 4 * 4;
                let mut halves = std::vec![0u16; n.div_ceil(2) * 2];
                for (i, &v) in q16.iter().enumerate() {
                    let at = if i < full { crate::kernels::q8_act::element_of(i) } else { i };
                    halves[at] = v as u16;
                }
                let words: std::vec::Vec<u32> =
                    halves.chunks_exact(2).map(|h| u32::from(h[0]) | (u32::from(h[1]) << 16)).collect();
                assert_eq!(dot_i16_i8(&words, &k), scalar, "n={n} seed={seed}");
            }
        }
    }
}
