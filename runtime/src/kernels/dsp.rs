//! Integer block dot products with dual 16-bit multiply-accumulates: the
//! Armv7E-M DSP instructions SXTB16 (sign-extend bytes 0 and 2 of a word to two
//! halfwords, optionally after rotating it by 8) and SMLAD (add both halfword
//! products to an accumulator).
//!
//! The same sequence runs on every target through [`DualMac`]: [`Native`]
//! issues the instructions (Cortex-M4/M7, `cfg(microlm_dsp)`), [`Emulated`]
//! computes the same results in portable Rust, so the host tests prove the
//! sequence equal to the scalar reference. Integer sums are exact (|sum| ≤
//! 32·128·128 < 2^31), so the result is identical to any other order.
#![cfg_attr(microlm_dsp, allow(unsafe_code))]

/// The three instructions the kernels need.
pub trait DualMac: Sized {
    /// Bytes 0 and 2 of `x`, sign-extended to the low and high halfwords.
    fn sxtb16(x: u32) -> u32;
    /// Bytes 1 and 3 of `x`, sign-extended to the low and high halfwords.
    fn sxtb16_ror8(x: u32) -> u32;
    /// `acc + lo(a)·lo(b) + hi(a)·hi(b)` on signed halfwords (wrapping, as the instruction).
    fn smlad(a: u32, b: u32, acc: i32) -> i32;

    /// [`dot_q8`] for this implementation (the instruction sequence, or the same in one asm block).
    #[inline(always)]
    fn block_q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        dot_q8::<Self>(w, x)
    }

    /// [`dot_q4`] for this implementation.
    #[inline(always)]
    fn block_q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        dot_q4::<Self>(nibbles, x)
    }
}

/// Portable Rust with the instructions' semantics.
#[derive(Debug)]
pub struct Emulated;

impl DualMac for Emulated {
    #[inline(always)]
    fn sxtb16(x: u32) -> u32 {
        let lo = u32::from(i16::from(x as u8 as i8) as u16);
        let hi = u32::from(i16::from((x >> 16) as u8 as i8) as u16);
        lo | (hi << 16)
    }
    #[inline(always)]
    fn sxtb16_ror8(x: u32) -> u32 {
        Self::sxtb16(x.rotate_right(8))
    }
    #[inline(always)]
    fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let lo = i32::from(a as u16 as i16) * i32::from(b as u16 as i16);
        let hi = i32::from((a >> 16) as u16 as i16) * i32::from((b >> 16) as u16 as i16);
        acc.wrapping_add(lo).wrapping_add(hi)
    }
}

/// The DSP instructions themselves.
#[cfg(microlm_dsp)]
#[derive(Debug)]
pub struct Native;

#[cfg(microlm_dsp)]
impl DualMac for Native {
    #[inline(always)]
    fn sxtb16(x: u32) -> u32 {
        let r: u32;
        // SAFETY: SXTB16 only reads and writes the named registers (Armv7E-M DSP, present on this target).
        unsafe {
            core::arch::asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[inline(always)]
    fn sxtb16_ror8(x: u32) -> u32 {
        let r: u32;
        // SAFETY: as above; the rotation is part of the instruction.
        unsafe {
            core::arch::asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }
    #[inline(always)]
    fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let r: i32;
        // SAFETY: SMLAD only reads and writes registers; it may set the sticky Q flag,
        // which nothing here reads (sums stay far below overflow anyway).
        unsafe {
            core::arch::asm!("smlad {r}, {a}, {b}, {acc}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack))
        };
        r
    }
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

/// The whole-block sequences as single asm blocks, so every activation pair
/// comes in with one LDRD and nothing spills: the same instructions in the
/// same order as the generic sequence (SMUAD starts the sum at zero).
#[cfg(microlm_dsp)]
#[derive(Debug)]
pub struct NativeBlock;

#[cfg(microlm_dsp)]
impl DualMac for NativeBlock {
    #[inline(always)]
    fn sxtb16(x: u32) -> u32 {
        Native::sxtb16(x)
    }
    #[inline(always)]
    fn sxtb16_ror8(x: u32) -> u32 {
        Native::sxtb16_ror8(x)
    }
    #[inline(always)]
    fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        Native::smlad(a, b, acc)
    }

    #[inline(always)]
    fn block_q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
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
    fn block_q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
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
}

/// The implementation the kernels use on this target.
#[cfg(microlm_dsp)]
pub type Target = NativeBlock;
/// The block dot products as plain integer loops over the same pairs, for
/// targets without the DSP instructions (the compiler vectorizes them). The
/// sums are exact, so they equal the instruction sequence's.
#[derive(Debug)]
pub struct Portable;

impl DualMac for Portable {
    #[inline(always)]
    fn sxtb16(x: u32) -> u32 {
        Emulated::sxtb16(x)
    }
    #[inline(always)]
    fn sxtb16_ror8(x: u32) -> u32 {
        Emulated::sxtb16_ror8(x)
    }
    #[inline(always)]
    fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        Emulated::smlad(a, b, acc)
    }

    #[inline(always)]
    fn block_q8(w: &[u8; 32], x: &[u32; 16]) -> i32 {
        let mut acc = 0i32;
        for (quad, pair) in w.chunks_exact(4).zip(x.chunks_exact(2)) {
            let (lo, hi) = halves(pair);
            let q = |i: usize| i32::from(quad[i] as i8);
            acc += q(0) * lo[0] + q(2) * hi[0] + q(1) * lo[1] + q(3) * hi[1];
        }
        acc
    }

    #[inline(always)]
    fn block_q4(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
        let (x_lo, x_hi) = x.split_at(8);
        let mut acc = 0i32;
        for ((quad, pl), ph) in nibbles.chunks_exact(4).zip(x_lo.chunks_exact(2)).zip(x_hi.chunks_exact(2)) {
            let ((l0, h0), (l1, h1)) = (halves(pl), halves(ph));
            let lo = |i: usize| i32::from(quad[i] & 0x0f);
            let hi = |i: usize| i32::from(quad[i] >> 4);
            acc += lo(0) * l0[0] + lo(2) * h0[0] + lo(1) * l0[1] + lo(3) * h0[1];
            acc += hi(0) * l1[0] + hi(2) * h1[0] + hi(1) * l1[1] + hi(3) * h1[1];
        }
        acc
    }
}

/// The low and the high i16 halves of two pair words, widened.
#[inline(always)]
fn halves(pair: &[u32]) -> ([i32; 2], [i32; 2]) {
    let lo = |w: u32| i32::from(w as u16 as i16);
    let hi = |w: u32| i32::from((w >> 16) as u16 as i16);
    ([lo(pair[0]), lo(pair[1])], [hi(pair[0]), hi(pair[1])])
}

/// The implementation the kernels use on this target.
#[cfg(not(microlm_dsp))]
pub type Target = Portable;

/// Little-endian word `i` of `b` (4 bytes); an unaligned load on Cortex-M.
#[inline(always)]
fn word(b: &[u8], i: usize) -> u32 {
    match b.get(4 * i..4 * i + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Σ_{i<32} w[i]·x[i] for a block of 32 signed weight bytes (element order) and
/// prepared activations (`act` pair order): per weight word, SXTB16 and its
/// 8-bit rotation line up with the two activation words of the same group.
#[inline(always)]
pub fn dot_q8<M: DualMac>(w: &[u8; 32], x: &[u32; 16]) -> i32 {
    let mut acc = 0i32;
    for g in 0..8 {
        let a = word(w, g);
        acc = M::smlad(M::sxtb16(a), x[2 * g], acc);
        acc = M::smlad(M::sxtb16_ror8(a), x[2 * g + 1], acc);
    }
    acc
}

/// Σ_{i<32} nibble_i·x[i] for a q4_0 block's 16 nibble bytes (element i in the
/// low nibble of byte i, element 16+i in the high one) and prepared
/// activations; the caller subtracts 8·Σx for the nibbles' offset.
#[inline(always)]
pub fn dot_q4<M: DualMac>(nibbles: &[u8; 16], x: &[u32; 16]) -> i32 {
    let mut acc = 0i32;
    for g in 0..4 {
        let q = word(nibbles, g);
        // Elements 4g..4g+4 (low nibbles) and 16+4g.. (high nibbles), one per byte.
        let (lo, hi) = (q & 0x0F0F_0F0F, (q >> 4) & 0x0F0F_0F0F);
        acc = M::smlad(M::sxtb16(lo), x[2 * g], acc);
        acc = M::smlad(M::sxtb16_ror8(lo), x[2 * g + 1], acc);
        acc = M::smlad(M::sxtb16(hi), x[8 + 2 * g], acc);
        acc = M::smlad(M::sxtb16_ror8(hi), x[9 + 2 * g], acc);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes covering the extremes.
    fn bytes(n: usize, seed: u32) -> std::vec::Vec<u8> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|i| match i % 11 {
                0 => 0x80,
                1 => 0x7f,
                _ => {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    s as u8
                }
            })
            .collect()
    }

    #[test]
    fn emulated_instructions_match_their_definitions() {
        assert_eq!(Emulated::sxtb16(0x80_7f_01_ff), 0x007f_ffff);
        assert_eq!(Emulated::sxtb16_ror8(0x80_7f_01_ff), 0xff80_0001);
        assert_eq!(Emulated::smlad(0xffff_0002, 0x0003_0004, 10), 10 + 8 - 3);
    }

    /// The 32 signed bytes `x` as prepared pairs (`act` pair order).
    fn pairs(x: &[u8]) -> [u32; 16] {
        let mut q8 = [0u8; crate::kernels::q8_0::BLOCK_BYTES];
        q8[2..].copy_from_slice(x);
        let mut w = [0u32; crate::kernels::act::BLOCK_WORDS];
        crate::kernels::act::prepare_block(&q8, &mut w);
        w[2..].try_into().unwrap()
    }

    #[test]
    fn dual_mac_i8_dot_equals_scalar() {
        for seed in 0..200 {
            let (w, x) = (bytes(32, seed), bytes(32, seed + 1000));
            let scalar: i32 = w.iter().zip(&x).map(|(&a, &b)| i32::from(a as i8) * i32::from(b as i8)).sum();
            let (w, x) = (w[..].try_into().unwrap(), pairs(&x));
            assert_eq!(dot_q8::<Emulated>(w, &x), scalar, "seed {seed}");
            assert_eq!(Portable::block_q8(w, &x), scalar, "seed {seed}");
        }
    }

    #[test]
    fn dual_mac_q4_dot_equals_scalar() {
        for seed in 0..200 {
            let (q, x) = (bytes(16, seed), bytes(32, seed + 7));
            let mut scalar = 0i32;
            for i in 0..16 {
                scalar += i32::from(q[i] & 0x0f) * i32::from(x[i] as i8);
                scalar += i32::from(q[i] >> 4) * i32::from(x[16 + i] as i8);
            }
            let (q, x) = (q[..].try_into().unwrap(), pairs(&x));
            assert_eq!(dot_q4::<Emulated>(q, &x), scalar, "seed {seed}");
            assert_eq!(Portable::block_q4(q, &x), scalar, "seed {seed}");
        }
    }
}
