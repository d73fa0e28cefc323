//! Hard-float Cortex-M asm: attention over an f32 cache with 8-wide heads and
//! the softmax exponentials, on hard-float Cortex-M
//! (`cfg(microlm_fpu)`: FPv4/FPv5, thumbv7em/thumbv8m.main `eabihf`): each
//! cache row comes in with one VLDM instead of eight VLDR.
//!
//! The loops are single asm blocks that save and restore every FPU register
//! they use (Rust cannot name FPU registers as operands on these targets).
//! They perform the same operations in the same order as the portable loops in
//! [`generic`](super::generic) and `kv.rs` (VMLA rounds the product before adding, as `acc += a * b` does), so
//! the results are bit-identical, which the QEMU tests check token for token
//! against the host.
#![allow(unsafe_code)]

/// `s25 = max(s25, $r)` as `if v > max { max = v }` takes it for a non-NaN s25: on
/// FPv4 a compare and a conditional move; on FPv5 (Armv8-M: Cortex-M33/M55) one
/// VMAXNM, which also skips a NaN `$r` and differs only in taking +0.0 over an
/// equal −0.0 (the exp(score − max) of every score is the same either way).
#[cfg(not(microlm_fpv5))]
macro_rules! max_s25 {
    ($r:literal) => {
        concat!("vcmp.f32 ", $r, ", s25\n", "vmrs APSR_nzcv, fpscr\n", "it gt\n", "vmovgt.f32 s25, ", $r, "\n")
    };
}
#[cfg(microlm_fpv5)]
macro_rules! max_s25 {
    ($r:literal) => {
        concat!("vmaxnm.f32 s25, s25, ", $r, "\n")
    };
}

/// `$acc = q · row` for the query in s16-s23 and an 8-value row in s0-s7, left to
/// right from the first product (VMUL, then VMLA: each product rounded, then the sum).
macro_rules! dot8_s0 {
    ($acc:literal) => {
        concat!(
            "vmul.f32 ",
            $acc,
            ", s16, s0\n",
            "vmla.f32 ",
            $acc,
            ", s17, s1\n",
            "vmla.f32 ",
            $acc,
            ", s18, s2\n",
            "vmla.f32 ",
            $acc,
            ", s19, s3\n",
            "vmla.f32 ",
            $acc,
            ", s20, s4\n",
            "vmla.f32 ",
            $acc,
            ", s21, s5\n",
            "vmla.f32 ",
            $acc,
            ", s22, s6\n",
            "vmla.f32 ",
            $acc,
            ", s23, s7\n",
        )
    };
}

/// [`dot8_s0!`] for the row in s8-s15 (the second row of a two-row VLDM).
macro_rules! dot8_s8 {
    ($acc:literal) => {
        concat!(
            "vmul.f32 ",
            $acc,
            ", s16, s8\n",
            "vmla.f32 ",
            $acc,
            ", s17, s9\n",
            "vmla.f32 ",
            $acc,
            ", s18, s10\n",
            "vmla.f32 ",
            $acc,
            ", s19, s11\n",
            "vmla.f32 ",
            $acc,
            ", s20, s12\n",
            "vmla.f32 ",
            $acc,
            ", s21, s13\n",
            "vmla.f32 ",
            $acc,
            ", s22, s14\n",
            "vmla.f32 ",
            $acc,
            ", s23, s15\n",
        )
    };
}

/// The next value row (`{v}`, post-incremented) weighted by `$e` into the eight
/// sums in s8-s15: `acc[j] += e · v[j]` (VMLA: the product rounded, then the sum).
macro_rules! value_row8 {
    ($e:literal) => {
        concat!(
            "vldmia {v}!, {{s0-s7}}\n",
            "vmla.f32 s8, ",
            $e,
            ", s0\n",
            "vmla.f32 s9, ",
            $e,
            ", s1\n",
            "vmla.f32 s10, ",
            $e,
            ", s2\n",
            "vmla.f32 s11, ",
            $e,
            ", s3\n",
            "vmla.f32 s12, ",
            $e,
            ", s4\n",
            "vmla.f32 s13, ",
            $e,
            ", s5\n",
            "vmla.f32 s14, ",
            $e,
            ", s6\n",
            "vmla.f32 s15, ",
            $e,
            ", s7\n",
        )
    };
}

/// `out[i] = (Σ_j q[j] · keys[8·i + j], j = 0..8, left to right) / sqrt_head` for
/// `i < out.len()` over contiguous 8-value rows (the f32 cache's head-major
/// layout); returns `max(max_in, out[..])` as `if v > max { max = v }` does (`max_s25!`).
/// Four rows a step, two per VLDM (then a pair and a single row for the rest).
/// Each sum starts from the first product
/// (VMUL) where the portable loop adds it to 0.0: the same value, except that
/// a sum of zero products may be −0.0 for +0.0, which compares equal and gives
/// the same exp(score − max). Returns `None` (doing nothing) when `keys` is
/// shorter than `out.len()` rows.
#[inline]
pub fn scores8(q: &[f32; 8], keys: &[f32], sqrt_head: f32, max_in: f32, out: &mut [f32]) -> Option<f32> {
    let n = out.len();
    if n == 0 {
        return Some(max_in);
    }
    if n.checked_mul(8)? > keys.len() {
        return None;
    }
    let max_bits: u32;
    // SAFETY: reads q (8 floats) and n rows of 8 floats from `keys` (checked above), writes
    // n floats at `out` (its length): n / 4 four-row steps, then two rows when n % 4 ≥ 2 and
    // one when n is odd. Saves and restores s0-s31 on the stack, so no FPU register the
    // compiler uses is changed; the flags are clobbered (declared).
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s31}}",
            "vldmia {q}, {{s16-s23}}",
            "vmov s24, {sqrt}",
            "vmov s25, {max}",
            "cmp {quads}, #0",
            "beq 4f",
            "2:",
            "vldmia {k}!, {{s0-s15}}",
            dot8_s0!("s26"),
            dot8_s8!("s27"),
            "vldmia {k}!, {{s0-s15}}",
            dot8_s0!("s28"),
            dot8_s8!("s29"),
            "vdiv.f32 s26, s26, s24",
            "vdiv.f32 s27, s27, s24",
            "vdiv.f32 s28, s28, s24",
            "vdiv.f32 s29, s29, s24",
            "vstmia {o}!, {{s26-s29}}",
            max_s25!("s26"),
            max_s25!("s27"),
            max_s25!("s28"),
            max_s25!("s29"),
            "subs {quads}, {quads}, #1",
            "bne 2b",
            "4:",
            "tst {rest}, #2",
            "beq 5f",
            "vldmia {k}!, {{s0-s15}}",
            dot8_s0!("s26"),
            dot8_s8!("s27"),
            "vdiv.f32 s26, s26, s24",
            "vdiv.f32 s27, s27, s24",
            "vstmia {o}!, {{s26-s27}}",
            max_s25!("s26"),
            max_s25!("s27"),
            "5:",
            "tst {rest}, #1",
            "beq 6f",
            "vldmia {k}, {{s0-s7}}",
            dot8_s0!("s26"),
            "vdiv.f32 s26, s26, s24",
            "vstr s26, [{o}]",
            max_s25!("s26"),
            "6:",
            "vmov {max}, s25",
            "vpop {{s0-s31}}",
            q = in(reg) q.as_ptr(),
            k = inout(reg) keys.as_ptr() => _,
            o = inout(reg) out.as_mut_ptr() => _,
            quads = inout(reg) n / 4 => _,
            rest = in(reg) n % 4,
            sqrt = in(reg) sqrt_head.to_bits(),
            max = inout(reg) max_in.to_bits() => max_bits,
        )
    };
    Some(f32::from_bits(max_bits))
}

/// The first steps of `scalar::exp`'s fast path on x = s0: s1 = t = x · log2 e +
/// shift (s16 = the 1.5·2^23 shift, s17 = log2 e) and `{t}` = its bits, which are the
/// shift's bits + n for n = round(x · log2 e).
macro_rules! exp_head_s0 {
    () => {
        concat!("vmov.f32 s1, s16\n", "vmla.f32 s1, s0, s17\n", "vmov {t}, s1\n")
    };
}

/// The rest of `scalar::exp`'s fast path after [`exp_head_s0!`], operation for
/// operation as `scalar::exp_reduced` and `exp_fast` (VMLS subtracts the rounded
/// product, as `a - b * c` does): leaves e^r in s0 and 2^n in s1, with
/// `{bias}` = (127 − shift bits) << 23; uses s2-s5. s18/s19 hold ln2_hi/ln2_lo;
/// the polynomial's constants are where the caller loaded them: `s20_c1` for
/// `scalar::EXP_CONSTANTS` in s16-s26 (c1 in s20, 1 in s25), `imm_c1` for
/// [`EXP_QUAD_CONSTANTS`] in s16-s24 (c1 = 0.5 as an immediate, 1 in s24).
macro_rules! exp_poly_s0 {
    (s20_c1) => {
        exp_poly_s0!("s21", "s22", "s23", "s24", "s20", "s25")
    };
    (imm_c1) => {
        exp_poly_s0!("s20", "s21", "s22", "s23", "#0.5", "s24")
    };
    ($c2:literal, $c3:literal, $c4:literal, $c5:literal, $c1:literal, $one:literal) => {
        concat!(
            "vsub.f32 s2, s1, s16\n",
            "vmls.f32 s0, s2, s18\n",
            "vmls.f32 s0, s2, s19\n",
            "vmul.f32 s3, s0, s0\n",
            "vmov.f32 s4, ",
            $c4,
            "\n",
            "vmla.f32 s4, ",
            $c5,
            ", s0\n",
            "vmov.f32 s5, ",
            $c3,
            "\n",
            "vmla.f32 s5, s4, s0\n",
            "vmov.f32 s4, ",
            $c2,
            "\n",
            "vmla.f32 s4, s5, s0\n",
            "vmov.f32 s5, ",
            $c1,
            "\n",
            "vmla.f32 s5, s4, s0\n",
            "vmla.f32 s0, s5, s3\n",
            "vadd.f32 s0, s0, ",
            $one,
            "\n",
            "add {t}, {bias}, {t}, lsl #23\n",
            "vmov s1, {t}\n",
        )
    };
}

/// The fast path of `scalar::exp` on s0 (in the fast range), leaving e^r in s0 and
/// 2^n in s1, with `scalar::EXP_CONSTANTS` in s16-s26. Uses s0-s5 and `{t}`.
macro_rules! exp_fast_s0 {
    () => {
        concat!(exp_head_s0!(), exp_poly_s0!(s20_c1))
    };
}

/// [`exp_fast_s0!`] for x = s0 ≤ 0 or NaN that branches to `$below` when
/// round(x · log2 e) = n < −126, i.e. when `{t}` (the bits of x · log2 e + 1.5·2^23,
/// which are the shift's bits + n while n ≥ −2^22) is below `{lim}` = the shift's
/// bits − 126 as a signed compare (−∞ and negative NaNs leave too; a positive NaN
/// stays and comes out NaN). This takes the fast path for every x ≥ `EXP_FAST_MIN`
/// (n ≥ −126 there) and also for x in [−87.68, −87.33), where n = −126 and r > 0:
/// there p · 2^−126 rounds once, as `scalar::exp_outside_fast_range`'s
/// p · 2^−62 · 2^−64 does (its first product is exact), so the result is the
/// same bits. One integer compare instead of a VCMP and a VMRS; x is still in
/// s0 at `$below`. `$layout` names where the polynomial's constants are
/// ([`exp_poly_s0!`]).
macro_rules! exp_fast_s0_or_leave {
    ($below:literal, $layout:ident) => {
        concat!(exp_head_s0!(), "cmp {t}, {lim}\n", "blt ", $below, "\n", exp_poly_s0!($layout))
    };
}

/// `scalar::EXP_CONSTANTS` as [`exp_mix8_quads`] loads them into s16-s24: the shift,
/// log2 e, ln2_hi, ln2_lo, c2..c5 and 1 (c1 = 0.5 is an immediate; checked below).
static EXP_QUAD_CONSTANTS: [f32; 9] = {
    let c = crate::scalar::EXP_CONSTANTS;
    [c[0], c[1], c[2], c[3], c[5], c[6], c[7], c[8], c[9]]
};
const _: () = assert!(crate::scalar::EXP_CONSTANTS[4].to_bits() == 0x3F00_0000, "c1 must be 0.5");

/// One slot of the fused value pass: `$e` (holding the score) becomes
/// e = exp($e − $max) by the fast path ([`exp_fast_s0_or_leave!`] with the
/// [`EXP_QUAD_CONSTANTS`] layout), leaving for `$below` when n < −126; label
/// `$rejoin` follows, for [`exp_zero_below!`] to come back to.
macro_rules! exp_weight {
    ($e:literal, $max:literal, $below:literal, $rejoin:literal) => {
        concat!(
            "vsub.f32 s0, ",
            $e,
            ", ",
            $max,
            "\n",
            exp_fast_s0_or_leave!($below, imm_c1),
            "vmul.f32 ",
            $e,
            ", s0, s1\n",
            $rejoin,
            ":\n",
        )
    };
}

/// The cold side of [`exp_weight!`] at label `$label`: e = +0 (1 − 1, with 1 in
/// s24) when x = s0 < `{below}` (`scalar::EXP_ZERO_BELOW`, x ordered: MI after
/// VCMP) and back to `$rejoin`; otherwise out of the loop to label 3.
macro_rules! exp_zero_below {
    ($label:literal, $e:literal, $rejoin:literal) => {
        concat!(
            $label,
            ":\n",
            "vmov s1, {below}\n",
            "vcmp.f32 s0, s1\n",
            "vmrs APSR_nzcv, fpscr\n",
            "bpl 3f\n",
            "vsub.f32 ",
            $e,
            ", s24, s24\n",
            "b ",
            $rejoin,
            "\n",
        )
    };
}

/// One SwiGLU value in the FPU loop: `$g = v · (1 / (1 + exp(−v))) · $u` for v = `$g`,
/// exp's fast path with `scalar::EXP_CONSTANTS` in s16-s26, leaving for label 3
/// unless −126 ≤ n ≤ 127 (`{t}` − `{lim}` as unsigned ≤ 253; see [`swiglu4`]).
macro_rules! swiglu_s0 {
    ($g:literal, $u:literal) => {
        concat!(
            "vneg.f32 s0, ",
            $g,
            "\n",
            exp_head_s0!(),
            "sub {w}, {t}, {lim}\n",
            "cmp {w}, #253\n",
            "bhi 3f\n",
            exp_poly_s0!(s20_c1),
            "vmul.f32 s0, s0, s1\n",
            "vadd.f32 s0, s0, s25\n",
            "vdiv.f32 s0, s25, s0\n",
            "vmul.f32 ",
            $g,
            ", ",
            $g,
            ", s0\n",
            "vmul.f32 ",
            $g,
            ", ",
            $g,
            ", ",
            $u,
            "\n",
        )
    };
}

/// `x[i] = exp(x[i] − max)` by the fast path of `scalar::exp` and `sum += x[i]`,
/// for i from 0 while `x[i] − max ≥ EXP_FAST_MIN` (stopping at the first that
/// is not, or is NaN); returns how many it did (the exponential is `exp_fast_s0!`).
#[inline]
pub fn exp_shifted_run(x: &mut [f32], max: f32, sum: &mut f32) -> usize {
    let n = x.len();
    if n == 0 {
        return 0;
    }
    let constants = &crate::scalar::EXP_CONSTANTS;
    // (t_bits − shift_bits + 127) << 23 = (t_bits << 23) + this, wrapping: 2^n's bits.
    let bias = 127u32.wrapping_sub(constants[0].to_bits()) << 23;
    let (left, sum_bits): (usize, u32);
    // SAFETY: reads the 12 constants and up to n floats of `x`, writes the floats it
    // read (never past x[n - 1]: the count stops the loop); saves and restores s0-s31;
    // clobbers the flags (declared).
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s31}}",
            "vldmia {c}, {{s16-s26}}",
            "vmov s28, {max}",
            "vmov s29, {sum}",
            "2:",
            "vldr s0, [{x}]",
            "vsub.f32 s0, s0, s28",
            "vcmp.f32 s0, s26",
            "vmrs APSR_nzcv, fpscr",
            "blt 3f",
            exp_fast_s0!(),
            "vmul.f32 s0, s0, s1",
            "vstmia {x}!, {{s0}}",
            "vadd.f32 s29, s29, s0",
            "subs {n}, {n}, #1",
            "bne 2b",
            "3:",
            "vmov {sum}, s29",
            "vpop {{s0-s31}}",
            c = in(reg) constants.as_ptr(),
            x = inout(reg) x.as_mut_ptr() => _,
            n = inout(reg) n => left,
            max = in(reg) max.to_bits(),
            sum = inout(reg) sum.to_bits() => sum_bits,
            bias = in(reg) bias,
            t = out(reg) _,
        )
    };
    *sum = f32::from_bits(sum_bits);
    n - left
}

/// The softmax-weighted value sum of one head fused into one pass over
/// contiguous 8-value rows, two slots a step: for slots i, i + 1 from 0,
/// e = exp(scores\[i\] − max) as `scalar::exp_at_most_zero` gives it (the
/// fast path, `exp_fast_s0_or_leave!`, or exactly 0 below
/// `scalar::EXP_ZERO_BELOW`), `sum += e`, then `acc[j] += e · values[8·i + j]`
/// for j < 8, slot i before slot i + 1. It stops at a pair with an exponent in
/// neither case (a subnormal result, or NaN) and returns how many slots it did
/// (even); the caller takes the next slot itself (that one, or the odd last
/// one) and calls again after it. Returns `None` (doing nothing) when `values`
/// is shorter than the scores' rows.
#[inline]
pub fn exp_mix8_pairs(scores: &[f32], max: f32, values: &[f32], sum: &mut f32, acc: &mut [f32; 8]) -> Option<usize> {
    let pairs = scores.len() / 2;
    if pairs == 0 {
        return Some(0);
    }
    if scores.len().checked_mul(8)? > values.len() {
        return None;
    }
    let constants = &crate::scalar::EXP_CONSTANTS;
    let bias = 127u32.wrapping_sub(constants[0].to_bits()) << 23;
    let lim = constants[0].to_bits() - 126;
    let (left, sum_bits): (usize, u32);
    // SAFETY: reads the 12 constants, up to 2 · pairs scores and as many rows of 8 floats
    // from `values` (checked above), reads and writes the 8 floats of `acc`; saves and
    // restores s0-s31; clobbers the flags (declared). Labels 6 and 7 (after the loop) set
    // e = +0 for x < EXP_ZERO_BELOW (x ordered: MI after VCMP) and rejoin at 8 and 9.
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s31}}",
            "vldmia {c}, {{s16-s26}}",
            "vmov s27, {below}",
            "vmov s28, {max}",
            "vmov s29, {sum}",
            "vldmia {acc}, {{s8-s15}}",
            "2:",
            "vldmia {s}!, {{s30-s31}}",
            "vsub.f32 s0, s30, s28",
            exp_fast_s0_or_leave!("6f", s20_c1),
            "vmul.f32 s30, s0, s1",
            "8:",
            "vsub.f32 s0, s31, s28",
            exp_fast_s0_or_leave!("7f", s20_c1),
            "vmul.f32 s31, s0, s1",
            "9:",
            "vadd.f32 s29, s29, s30",
            "vadd.f32 s29, s29, s31",
            value_row8!("s30"),
            value_row8!("s31"),
            "subs {n}, {n}, #1",
            "bne 2b",
            "b 3f",
            "6:",
            "vcmp.f32 s0, s27",
            "vmrs APSR_nzcv, fpscr",
            "bpl 3f",
            "vsub.f32 s30, s25, s25",
            "b 8b",
            "7:",
            "vcmp.f32 s0, s27",
            "vmrs APSR_nzcv, fpscr",
            "bpl 3f",
            "vsub.f32 s31, s25, s25",
            "b 9b",
            "3:",
            "vstmia {acc}, {{s8-s15}}",
            "vmov {sum}, s29",
            "vpop {{s0-s31}}",
            c = in(reg) constants.as_ptr(),
            s = inout(reg) scores.as_ptr() => _,
            v = inout(reg) values.as_ptr() => _,
            acc = in(reg) acc.as_mut_ptr(),
            n = inout(reg) pairs => left,
            max = in(reg) max.to_bits(),
            sum = inout(reg) sum.to_bits() => sum_bits,
            bias = in(reg) bias,
            lim = in(reg) lim,
            below = in(reg) crate::scalar::EXP_ZERO_BELOW.to_bits(),
            t = out(reg) _,
        )
    };
    *sum = f32::from_bits(sum_bits);
    Some(2 * (pairs - left))
}

/// [`exp_mix8_pairs`] four slots a step (the scores with one VLDM, each slot's
/// exponential, the four `sum +=`, then the four value rows), for runs of at
/// least four; returns how many slots it did (a multiple of 4), stopping as
/// [`exp_mix8_pairs`] does or with fewer than four left.
#[inline]
pub fn exp_mix8_quads(scores: &[f32], max: f32, values: &[f32], sum: &mut f32, acc: &mut [f32; 8]) -> Option<usize> {
    let quads = scores.len() / 4;
    if quads == 0 {
        return Some(0);
    }
    if scores.len().checked_mul(8)? > values.len() {
        return None;
    }
    let shift = crate::scalar::EXP_CONSTANTS[0].to_bits();
    let bias = 127u32.wrapping_sub(shift) << 23;
    let (left, sum_bits): (usize, u32);
    // SAFETY: reads the 9 constants, up to 4 · quads scores and as many rows of 8 floats
    // from `values` (checked above), reads and writes the 8 floats of `acc`; saves and
    // restores s0-s31; clobbers the flags (declared). Labels 11-14 (after the loop) set
    // e = +0 for x < EXP_ZERO_BELOW (x ordered: MI after VCMP) and rejoin at 21-24.
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s31}}",
            "vldmia {c}, {{s16-s24}}",
            "vmov s26, {max}",
            "vmov s27, {sum}",
            "vldmia {acc}, {{s8-s15}}",
            "2:",
            "vldmia {s}!, {{s28-s31}}",
            exp_weight!("s28", "s26", "11f", "21"),
            exp_weight!("s29", "s26", "12f", "22"),
            exp_weight!("s30", "s26", "13f", "23"),
            exp_weight!("s31", "s26", "14f", "24"),
            "vadd.f32 s27, s27, s28",
            "vadd.f32 s27, s27, s29",
            "vadd.f32 s27, s27, s30",
            "vadd.f32 s27, s27, s31",
            value_row8!("s28"),
            value_row8!("s29"),
            value_row8!("s30"),
            value_row8!("s31"),
            "subs {n}, {n}, #1",
            "bne 2b",
            "b 3f",
            exp_zero_below!("11", "s28", "21b"),
            exp_zero_below!("12", "s29", "22b"),
            exp_zero_below!("13", "s30", "23b"),
            exp_zero_below!("14", "s31", "24b"),
            "3:",
            "vstmia {acc}, {{s8-s15}}",
            "vmov {sum}, s27",
            "vpop {{s0-s31}}",
            c = in(reg) EXP_QUAD_CONSTANTS.as_ptr(),
            s = inout(reg) scores.as_ptr() => _,
            v = inout(reg) values.as_ptr() => _,
            acc = in(reg) acc.as_mut_ptr(),
            n = inout(reg) quads => left,
            max = in(reg) max.to_bits(),
            sum = inout(reg) sum.to_bits() => sum_bits,
            bias = in(reg) bias,
            lim = in(reg) shift - 126,
            below = in(reg) crate::scalar::EXP_ZERO_BELOW.to_bits(),
            t = out(reg) _,
        )
    };
    *sum = f32::from_bits(sum_bits);
    Some(4 * (quads - left))
}

/// [`exp_shifted_run`]'s loop over all of `x` with the cold path here for each
/// input outside the fast range (same values, same order as the portable pass).
#[inline]
pub fn exp_shifted(x: &mut [f32], max: f32) -> f32 {
    let mut sum = 0.0f32;
    let mut at = 0;
    while at < x.len() {
        at += exp_shifted_run(&mut x[at..], max, &mut sum);
        if let Some(v) = x.get_mut(at) {
            *v = crate::scalar::exp_outside_fast_range(*v - max);
            sum += *v;
            at += 1;
        }
    }
    sum
}

/// [`super::mix_f32_head8`]: `values` holds the head's contiguous 8-value rows.
/// FPU loops take the slots four at a time ([`exp_mix8_quads`]), then a last
/// pair ([`exp_mix8_pairs`]); a slot they leave (outside exp's fast range, or
/// the odd last one) is taken here. The same values in the same order as the
/// portable path.
pub fn mix8(scores: &[f32], max: f32, values: &[f32], out: &mut [f32; 8]) {
    let (mut sum, mut acc, mut at) = (0.0f32, [0.0f32; 8], 0);
    while at < scores.len() {
        let rows = values.get(at * 8..).unwrap_or(&[]);
        at += exp_mix8_quads(&scores[at..], max, rows, &mut sum, &mut acc).unwrap_or(0);
        if scores.len() - at < 4 {
            let rows = values.get(at * 8..).unwrap_or(&[]);
            at += exp_mix8_pairs(&scores[at..], max, rows, &mut sum, &mut acc).unwrap_or(0);
        }
        let (Some(&score), Some(row)) = (scores.get(at), values.get(at * 8..at * 8 + 8)) else {
            break;
        };
        let e = crate::scalar::exp_at_most_zero(score - max);
        sum += e;
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += e * v;
        }
        at += 1;
    }
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = a / sum;
    }
}

/// The first largest of `x[..8 · (x.len() / 8)]` as `if v > best { best = v }` finds it
/// from `x[0]` (NaNs never win), and whether those values are all finite: (index,
/// value, finite). Eight values per VLDM; the finiteness test is one VMLA per
/// value (Σ v · 0 is NaN exactly when some v is infinite or NaN). `None` for fewer
/// than eight values.
#[inline]
pub fn argmax8(x: &[f32]) -> Option<(usize, f32, bool)> {
    let blocks = x.len() / 8;
    if blocks == 0 {
        return None;
    }
    let base = x.as_ptr();
    let (best, best_bits, check): (*const f32, u32, u32);
    // SAFETY: reads 8 · blocks floats from `x` (in bounds); saves and restores s0-s31;
    // clobbers the flags (declared). `best` ends as the address of the chosen value.
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s31}}",
            "vmov s16, {v}",
            "vmov s17, {zero}",
            "vmov s18, {zero}",
            "2:",
            "vldmia {p}!, {{s0-s7}}",
            "vcmp.f32 s0, s16",
            "vmrs APSR_nzcv, fpscr",
            "itt gt",
            "vmovgt.f32 s16, s0",
            "subgt {best}, {p}, #32",
            "vmla.f32 s18, s0, s17",
            "vcmp.f32 s1, s16",
            "vmrs APSR_nzcv, fpscr",
            "itt gt",
            "vmovgt.f32 s16, s1",
            "subgt {best}, {p}, #28",
            "vmla.f32 s18, s1, s17",
            "vcmp.f32 s2, s16",
            "vmrs APSR_nzcv, fpscr",
            "itt gt",
            "vmovgt.f32 s16, s2",
            "subgt {best}, {p}, #24",
            "vmla.f32 s18, s2, s17",
            "vcmp.f32 s3, s16",
            "vmrs APSR_nzcv, fpscr",
            "itt gt",
            "vmovgt.f32 s16, s3",
            "subgt {best}, {p}, #20",
            "vmla.f32 s18, s3, s17",
            "vcmp.f32 s4, s16",
            "vmrs APSR_nzcv, fpscr",
            "itt gt",
            "vmovgt.f32 s16, s4",
            "subgt {best}, {p}, #16",
            "vmla.f32 s18, s4, s17",
            "vcmp.f32 s5, s16",
            "vmrs APSR_nzcv, fpscr",
            "itt gt",
            "vmovgt.f32 s16, s5",
            "subgt {best}, {p}, #12",
            "vmla.f32 s18, s5, s17",
            "vcmp.f32 s6, s16",
            "vmrs APSR_nzcv, fpscr",
            "itt gt",
            "vmovgt.f32 s16, s6",
            "subgt {best}, {p}, #8",
            "vmla.f32 s18, s6, s17",
            "vcmp.f32 s7, s16",
            "vmrs APSR_nzcv, fpscr",
            "itt gt",
            "vmovgt.f32 s16, s7",
            "subgt {best}, {p}, #4",
            "vmla.f32 s18, s7, s17",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vmov {v}, s16",
            "vmov {zero}, s18",
            "vpop {{s0-s31}}",
            p = inout(reg) base => _,
            n = inout(reg) blocks => _,
            best = inout(reg) base => best,
            v = inout(reg) x[0].to_bits() => best_bits,
            zero = inout(reg) 0u32 => check,
        )
    };
    let index = (best as usize - base as usize) / 4;
    Some((index, f32::from_bits(best_bits), !f32::from_bits(check).is_nan()))
}

/// SwiGLU four values a step: `gate[i] = v · (1 / (1 + exp(−v))) · up[i]` with v =
/// `gate[i]`, the products in that order and exp by `scalar::exp`'s fast path, for
/// i from 0 while every exponent n = round(−v · log2 e) of the step lies in
/// −126..=127 (one unsigned compare of `{t}` − (shift bits − 126) against 253; NaN
/// and ±∞ fall outside). That covers `scalar::exp`'s fast range and, beyond its
/// ends (n = −126 below −87.33, n = 127 above 88.37), `exp_outside_fast_range`
/// scales p by 2^n in two steps whose first is exact, so the bits are the same.
/// Returns how many values it did (a multiple of 4); the caller takes the next one
/// itself and calls again after it. Nothing of a step is stored before all four
/// are done. `None` (doing nothing) when `up` is shorter than `gate`.
#[inline]
pub fn swiglu4(gate: &mut [f32], up: &[f32]) -> Option<usize> {
    let quads = gate.len() / 4;
    if quads == 0 {
        return Some(0);
    }
    if up.len() < gate.len() {
        return None;
    }
    let constants = &crate::scalar::EXP_CONSTANTS;
    let shift = constants[0].to_bits();
    let left: usize;
    // SAFETY: reads and writes 4 · quads floats of `gate` and reads as many of `up` (both
    // in bounds); saves and restores s0-s31; clobbers the flags (declared).
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s31}}",
            "vldmia {c}, {{s16-s26}}",
            "2:",
            "vldmia {g}, {{s28-s31}}",
            "vldmia {u}!, {{s8-s11}}",
            swiglu_s0!("s28", "s8"),
            swiglu_s0!("s29", "s9"),
            swiglu_s0!("s30", "s10"),
            swiglu_s0!("s31", "s11"),
            "vstmia {g}!, {{s28-s31}}",
            "subs {n}, {n}, #1",
            "bne 2b",
            "3:",
            "vpop {{s0-s31}}",
            c = in(reg) constants.as_ptr(),
            g = inout(reg) gate.as_mut_ptr() => _,
            u = inout(reg) up.as_ptr() => _,
            n = inout(reg) quads => left,
            bias = in(reg) 127u32.wrapping_sub(shift) << 23,
            lim = in(reg) shift - 126,
            t = out(reg) _,
            w = out(reg) _,
        )
    };
    Some(4 * (quads - left))
}

/// √x by VSQRT.F32: IEEE 754 square root, correctly rounded, as `libm::sqrtf`
/// computes it in software (the same bits).
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    let bits: u32;
    // SAFETY: only s0 is used, saved and restored around the instruction.
    unsafe {
        core::arch::asm!(
            "vpush {{s0}}",
            "vmov s0, {x}",
            "vsqrt.f32 s0, s0",
            "vmov {x}, s0",
            "vpop {{s0}}",
            x = inout(reg) x.to_bits() => bits,
        )
    };
    f32::from_bits(bits)
}

/// Four rows of an f32 matvec over `groups` × 8 columns: for each row r,
/// `acc_r = Σ_c w_r[c] · x[c]`, left to right from 0.0 (VMLA rounds each product, then
/// the sum: llama2.c's `matmul` order). Each step loads 8 activations and 8 weights
/// of each row with one VLDM each.
///
/// # Safety
/// `w` must be readable (word-aligned) for 4 rows of `groups` × 8 floats, the rows
/// `stride` bytes apart, and `x` for `groups` × 8 floats; `groups` ≥ 1.
#[inline(always)]
unsafe fn dot4_f32(w: *const f32, stride: usize, x: *const f32, groups: usize) -> [f32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: the caller's contract covers every load; s0-s19 are saved and restored;
    // the flags are clobbered (declared).
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s19}}",
            "movs {a}, #0",
            "vmov s16, s17, {a}, {a}",
            "vmov s18, s19, {a}, {a}",
            "add {wb}, {wa}, {stride}",
            "add {wc}, {wb}, {stride}",
            "add {wd}, {wc}, {stride}",
            "2:",
            "vldmia {x}!, {{s0-s7}}",
            "vldmia {wa}!, {{s8-s15}}",
            "vmla.f32 s16, s8, s0",
            "vmla.f32 s16, s9, s1",
            "vmla.f32 s16, s10, s2",
            "vmla.f32 s16, s11, s3",
            "vmla.f32 s16, s12, s4",
            "vmla.f32 s16, s13, s5",
            "vmla.f32 s16, s14, s6",
            "vmla.f32 s16, s15, s7",
            "vldmia {wb}!, {{s8-s15}}",
            "vmla.f32 s17, s8, s0",
            "vmla.f32 s17, s9, s1",
            "vmla.f32 s17, s10, s2",
            "vmla.f32 s17, s11, s3",
            "vmla.f32 s17, s12, s4",
            "vmla.f32 s17, s13, s5",
            "vmla.f32 s17, s14, s6",
            "vmla.f32 s17, s15, s7",
            "vldmia {wc}!, {{s8-s15}}",
            "vmla.f32 s18, s8, s0",
            "vmla.f32 s18, s9, s1",
            "vmla.f32 s18, s10, s2",
            "vmla.f32 s18, s11, s3",
            "vmla.f32 s18, s12, s4",
            "vmla.f32 s18, s13, s5",
            "vmla.f32 s18, s14, s6",
            "vmla.f32 s18, s15, s7",
            "vldmia {wd}!, {{s8-s15}}",
            "vmla.f32 s19, s8, s0",
            "vmla.f32 s19, s9, s1",
            "vmla.f32 s19, s10, s2",
            "vmla.f32 s19, s11, s3",
            "vmla.f32 s19, s12, s4",
            "vmla.f32 s19, s13, s5",
            "vmla.f32 s19, s14, s6",
            "vmla.f32 s19, s15, s7",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vmov {a}, {b}, s16, s17",
            "vmov {c}, {d}, s18, s19",
            "vpop {{s0-s19}}",
            wa = inout(reg) w => _,
            wb = out(reg) _,
            wc = out(reg) _,
            wd = out(reg) _,
            stride = in(reg) stride,
            x = inout(reg) x => _,
            n = inout(reg) groups => _,
            a = out(reg) a,
            b = out(reg) b,
            c = out(reg) c,
            d = out(reg) d,
            options(readonly),
        )
    };
    [a, b, c, d].map(f32::from_bits)
}

/// The f32 matvec on hard-float Cortex-M: `out (rows) = w (rows, cols) · x (cols)`,
/// `cols = x.len()`, `w` little-endian f32 bytes. Four rows at a time through
/// `dot4_f32` for the whole groups of 8 columns, the last `cols % 8` columns
/// continuing the same sums in Rust, the last `rows % 4` rows by `f32::dot`: every
/// row the one left-to-right sum of `kernels::f32::matvec`. Returns `false`
/// (doing nothing) for unaligned or short weights.
#[inline]
pub fn matvec_f32(w: &[u8], x: &[f32], out: &mut [f32]) -> bool {
    let cols = x.len();
    let (Ok(w), Some(need)) = (bytemuck::try_cast_slice::<u8, f32>(w), out.len().checked_mul(cols)) else {
        return false;
    };
    let groups = cols / 8;
    if groups == 0 || w.len() < need {
        return false;
    }
    let (main, done) = (groups * 8, out.len() / 4 * 4);
    let mut quads = out.chunks_exact_mut(4);
    for (o, rows) in (&mut quads).zip(w.chunks_exact(4 * cols)) {
        // SAFETY: `rows` holds 4 whole rows of `cols` ≥ 8 · groups floats (aligned: a &[f32]),
        // and `x` holds `cols` floats.
        let mut acc = unsafe { dot4_f32(rows.as_ptr(), cols * 4, x.as_ptr(), groups) };
        for (a, row) in acc.iter_mut().zip(rows.chunks_exact(cols)) {
            for (&wv, &xv) in row[main..].iter().zip(&x[main..]) {
                *a += wv * xv;
            }
        }
        o.copy_from_slice(&acc);
    }
    for (o, row) in quads.into_remainder().iter_mut().zip(w[done * cols..].chunks_exact(cols)) {
        *o = super::f32::dot(row, x);
    }
    true
}

/// `(max over i of x[i].to_bits() << 1, as u32)`: twice the bits of max |x| (the
/// sign shifted out). A result above `0xFF00_0000` means a NaN is present, equal
/// to it an infinity (and no NaN).
#[cfg(microlm_dsp)]
#[inline(always)]
fn max_abs_bits2(x: &[f32; 32]) -> u32 {
    let m: u32;
    macro_rules! step {
        ($r:literal) => {
            concat!("cmp {m}, ", $r, ", lsl #1\n", "it lo\n", "lsllo {m}, ", $r, ", #1\n")
        };
    }
    macro_rules! four {
        () => {
            concat!("ldm {p}!, {{r2-r5}}\n", step!("r2"), step!("r3"), step!("r4"), step!("r5"))
        };
    }
    // SAFETY: reads the 32 words of `x`; writes only the named registers and the flags.
    unsafe {
        core::arch::asm!(
            "movs {m}, #0",
            four!(), four!(), four!(), four!(), four!(), four!(), four!(), four!(),
            p = inout(reg) x.as_ptr() => _,
            m = out(reg) m,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            options(pure, readonly, nostack),
        )
    };
    m
}

/// Four quants of [`prepare_block`]'s loop, from s`$a`..s`$a+3`: convert (×2, toward zero),
/// round half away, pack in pair order, add to the sum, store two words.
#[cfg(microlm_dsp)]
macro_rules! quant4 {
    ($s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
        concat!(
            "vmov r2, r3, ",
            $s0,
            ", ",
            $s1,
            "\n",
            "vmov r4, r5, ",
            $s2,
            ", ",
            $s3,
            "\n",
            "add r2, r2, r2, asr #31\n",
            "add r3, r3, r3, asr #31\n",
            "add r4, r4, r4, asr #31\n",
            "add r5, r5, r5, asr #31\n",
            "adds r2, r2, #1\n",
            "adds r3, r3, #1\n",
            "adds r4, r4, #1\n",
            "adds r5, r5, #1\n",
            "asrs r2, r2, #1\n",
            "asrs r3, r3, #1\n",
            "pkhbt r2, r2, r4, lsl #15\n",
            "pkhbt r3, r3, r5, lsl #15\n",
            "smlad {sum}, r2, {ones}, {sum}\n",
            "smlad {sum}, r3, {ones}, {sum}\n",
            "stmia {o}!, {{r2, r3}}\n",
        )
    };
}

/// `q8_act::prepare_block(quantize_block(x))` for 32 values on hard-float Cortex-M
/// with DSP, when max |x| is finite and `d = max|x| / 127` is normal or zero
/// (returns `false`, writing nothing, otherwise: the caller takes the portable
/// path). Then `|x · id| ≤ 127.00003` (id = 1/d), so no clamp is needed, and
/// `round_half_away(y) = (t + (t < 0 ? -1 : 0) + 1) >> 1` with `t = trunc(2y)`, which
/// VCVT to fixed point with one fraction bit gives exactly. The scale goes
/// through VCVTB to binary16 (nearest even, as `half`) and back (exact).
/// `arm_dsp::prepare_block_emulated` is the same arithmetic in Rust.
#[cfg(microlm_dsp)]
#[inline]
pub fn prepare_block(x: &[f32; 32], out: &mut [u32; super::q8_act::BLOCK_WORDS]) -> bool {
    let Some((d, id)) = super::arm_dsp::fast_scale(max_abs_bits2(x)) else { return false };
    let (sum, d16): (u32, u32);
    // SAFETY: reads the 32 floats of `x`, writes the 16 pair words of `out` (from word 2);
    // saves and restores s0-s8; clobbers the flags (declared).
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s8}}",
            "vmov s8, {d}",
            "vcvtb.f16.f32 s8, s8",
            "vcvtb.f32.f16 s8, s8",
            "vmov {d}, s8",
            "vmov s8, {id}",
            "movs {sum}, #0",
            "2:",
            "vldmia {p}!, {{s0-s7}}",
            "vmul.f32 s0, s0, s8",
            "vmul.f32 s1, s1, s8",
            "vmul.f32 s2, s2, s8",
            "vmul.f32 s3, s3, s8",
            "vmul.f32 s4, s4, s8",
            "vmul.f32 s5, s5, s8",
            "vmul.f32 s6, s6, s8",
            "vmul.f32 s7, s7, s8",
            "vcvt.s32.f32 s0, s0, #1",
            "vcvt.s32.f32 s1, s1, #1",
            "vcvt.s32.f32 s2, s2, #1",
            "vcvt.s32.f32 s3, s3, #1",
            "vcvt.s32.f32 s4, s4, #1",
            "vcvt.s32.f32 s5, s5, #1",
            "vcvt.s32.f32 s6, s6, #1",
            "vcvt.s32.f32 s7, s7, #1",
            quant4!("s0", "s1", "s2", "s3"),
            quant4!("s4", "s5", "s6", "s7"),
            "subs {n}, {n}, #1",
            "bne 2b",
            "vpop {{s0-s8}}",
            p = inout(reg) x.as_ptr() => _,
            o = inout(reg) out[2..].as_mut_ptr() => _,
            n = inout(reg) 4u32 => _,
            d = inout(reg) d.to_bits() => d16,
            id = in(reg) id.to_bits(),
            ones = in(reg) 0x0001_0001u32,
            sum = out(reg) sum,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
        )
    };
    out[0] = d16;
    out[1] = sum;
    true
}
