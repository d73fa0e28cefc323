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
pub trait DualMac {
    /// Bytes 0 and 2 of `x`, sign-extended to the low and high halfwords.
    fn sxtb16(x: u32) -> u32;
    /// Bytes 1 and 3 of `x`, sign-extended to the low and high halfwords.
    fn sxtb16_ror8(x: u32) -> u32;
    /// `acc + lo(a)·lo(b) + hi(a)·hi(b)` on signed halfwords (wrapping, as the instruction).
    fn smlad(a: u32, b: u32, acc: i32) -> i32;
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

/// The implementation the kernels use on this target.
#[cfg(microlm_dsp)]
pub type Target = Native;
/// The implementation the kernels use on this target.
#[cfg(not(microlm_dsp))]
pub type Target = Emulated;

/// Little-endian word `i` of `b` (4 bytes); an unaligned load on Cortex-M.
#[inline(always)]
fn word(b: &[u8], i: usize) -> u32 {
    match b.get(4 * i..4 * i + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Both halfwords equal to 1: `smlad(x, ONES, acc)` adds x's two halfwords.
const ONES: u32 = 0x0001_0001;

/// Σ_{i<32} w[i]·x[i] for two blocks of 32 signed bytes.
#[inline(always)]
pub fn dot_i8x32<M: DualMac>(w: &[u8], x: &[u8]) -> i32 {
    let mut acc = 0i32;
    for i in 0..8 {
        let (a, b) = (word(w, i), word(x, i));
        acc = M::smlad(M::sxtb16(a), M::sxtb16(b), acc);
        acc = M::smlad(M::sxtb16_ror8(a), M::sxtb16_ror8(b), acc);
    }
    acc
}

/// Σ_{i<32} (nibble_i − 8)·x[i] for a q4_0 block's 16 nibble bytes (element i in
/// the low nibble of byte i, element 16+i in the high one) and 32 signed bytes,
/// computed as Σ nibble·x − 8·Σ x.
#[inline(always)]
pub fn dot_q4x32<M: DualMac>(nibbles: &[u8], x: &[u8]) -> i32 {
    let (mut acc, mut sum_x) = (0i32, 0i32);
    for i in 0..4 {
        let q = word(nibbles, i);
        // Four low nibbles (elements 4i..4i+4) and four high ones (16+4i..), one per byte.
        let (lo, hi) = (q & 0x0F0F_0F0F, (q >> 4) & 0x0F0F_0F0F);
        let (xa, xb) = (word(x, i), word(x, i + 4));
        let (xa0, xa1, xb0, xb1) = (M::sxtb16(xa), M::sxtb16_ror8(xa), M::sxtb16(xb), M::sxtb16_ror8(xb));
        acc = M::smlad(M::sxtb16(lo), xa0, acc);
        acc = M::smlad(M::sxtb16_ror8(lo), xa1, acc);
        acc = M::smlad(M::sxtb16(hi), xb0, acc);
        acc = M::smlad(M::sxtb16_ror8(hi), xb1, acc);
        sum_x = M::smlad(xa0, ONES, M::smlad(xa1, ONES, sum_x));
        sum_x = M::smlad(xb0, ONES, M::smlad(xb1, ONES, sum_x));
    }
    acc - 8 * sum_x
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

    #[test]
    fn dual_mac_i8_dot_equals_scalar() {
        for seed in 0..200 {
            let (w, x) = (bytes(32, seed), bytes(32, seed + 1000));
            let scalar: i32 = w.iter().zip(&x).map(|(&a, &b)| i32::from(a as i8) * i32::from(b as i8)).sum();
            assert_eq!(dot_i8x32::<Emulated>(&w, &x), scalar, "seed {seed}");
        }
    }

    #[test]
    fn dual_mac_q4_dot_equals_scalar() {
        for seed in 0..200 {
            let (q, x) = (bytes(16, seed), bytes(32, seed + 7));
            let mut scalar = 0i32;
            for i in 0..16 {
                scalar += (i32::from(q[i] & 0x0f) - 8) * i32::from(x[i] as i8);
                scalar += (i32::from(q[i] >> 4) - 8) * i32::from(x[16 + i] as i8);
            }
            assert_eq!(dot_q4x32::<Emulated>(&q, &x), scalar, "seed {seed}");
        }
    }
}
