//! Scalar f32 primitives with the same bits on every target, shared by the
//! kernels and [`math`](crate::math): round-half-away and max |x| for the
//! quantizers, and the exponential (with the constants the Cortex-M FPU loop
//! of `kernels::arm_fpu` loads). A leaf module: it uses nothing of the crate.

/// [`exp`] for `x ≤ 0` or NaN (a value minus the maximum it was taken from),
/// where only the lower end of the fast range needs a check.
#[inline(always)]
pub fn exp_at_most_zero(x: f32) -> f32 {
    if x >= EXP_FAST_MIN {
        exp_fast(x)
    } else {
        exp_outside_fast_range(x)
    }
}

/// `libm::roundf(x) as i32` (half away from zero) for `|x| ≤ 2^22`, exactly, with
/// NaN as 0. Adding 1.5·2^23 rounds to nearest-even into the low mantissa bits
/// (no float-to-int conversion, so it vectorizes); ties that went to even
/// toward zero then step away from zero. Quantizers clamp first, so their
/// inputs are in range.
#[inline(always)]
pub fn round_half_away(x: f32) -> i32 {
    const SHIFT: f32 = 12_582_912.0;
    let t = x + SHIFT;
    let even = t.to_bits() as i32 - SHIFT.to_bits() as i32; // round-half-even(x)
    let rest = x - (t - SHIFT); // exact, in [-0.5, 0.5]
    let n = even + i32::from(rest == 0.5 && x > 0.0) - i32::from(rest == -0.5 && x < 0.0);
    if x.is_nan() {
        0
    } else {
        n
    }
}

/// Largest |x| over `x` (NaNs skipped; 0 for none). Without the sign bit a
/// non-NaN float orders like its bits as an integer, so the loop is an integer
/// max with no data-dependent branch.
#[inline(always)]
pub fn max_abs(x: &[f32]) -> f32 {
    let mut m = 0u32;
    for &v in x {
        let bits = v.to_bits() & 0x7fff_ffff;
        // NaNs (above the infinity pattern) count as 0.
        m = m.max(if bits > 0x7f80_0000 { 0 } else { bits });
    }
    f32::from_bits(m)
}

/// Inputs in `EXP_FAST_MIN..=EXP_FAST_MAX` take the fast path: `n` lies in -126..=127,
/// so `2^n` is a normal f32 built from its exponent bits alone.
pub const EXP_FAST_MIN: f32 = -87.33;
const EXP_FAST_MAX: f32 = 88.37;

/// Largest maximum relative error of [`exp`] against the exact e^x for every
/// input whose result is a normal f32, checked by `exp_error_is_within_bound`
/// (every 61st input: 8.05e-8 at x = -28.07; libm's `expf` reaches about 1e-7).
pub const EXP_MAX_REL_ERROR: f32 = 1.0e-7;

/// e^x for f32, the same bits on every target: Cody–Waite reduction
/// `x = n·ln2 + r` (|r| ≤ ln2/2, `n` rounded to nearest by the 1.5·2^23 shift),
/// Cephes' degree-6 polynomial for e^r, then scaling by 2^n through the
/// exponent bits. Maximum relative error [`EXP_MAX_REL_ERROR`] where the
/// result is normal; subnormal results are within one subnormal step, below
/// -103.98 the result is 0, above 88.72283 +∞, and NaN stays NaN. About a
/// third of `libm::expf`'s instructions on a Cortex-M4.
#[inline]
pub fn exp(x: f32) -> f32 {
    if (EXP_FAST_MIN..=EXP_FAST_MAX).contains(&x) {
        return exp_fast(x);
    }
    exp_outside_fast_range(x)
}

/// [`exp`] for `x` in `EXP_FAST_MIN..=EXP_FAST_MAX`.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    let (p, n) = exp_reduced(x);
    // n + 127 lies in 1..=254: the biased exponent of the normal number 2^n.
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// [`exp`] without branches, the same bits for every input, so that a loop of
/// it vectorizes: the input is clamped into the range where the reduction
/// works, 2^n is applied in two exact steps (the first product is exact, so
/// the result rounds once, as `p · 2^n` does), and selects replace the
/// overflow, underflow and NaN cases.
#[inline(always)]
pub fn exp_branch_free(x: f32) -> f32 {
    // Clamping keeps NaN; the polynomial then carries it through.
    let (p, n) = exp_reduced(x.clamp(-104.0, 89.0));
    let half = n >> 1;
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let e = p * pow2(half) * pow2(n - half);
    let e = if x > 88.722_83 { f32::INFINITY } else { e };
    if x < -103.98 {
        0.0
    } else {
        e
    }
}

/// (e^r, n) with x = n·ln2 + r: the polynomial part of [`exp`].
#[inline(always)]
fn exp_reduced(x: f32) -> (f32, i32) {
    let [shift, log2e, ln2_hi, ln2_lo, c1, c2, c3, c4, c5, c6, one, _] = EXP_CONSTANTS;
    let t = x * log2e + shift;
    let n = t - shift; // round-to-nearest-even of x · log2 e, exactly
    let r = (x - n * ln2_hi) - n * ln2_lo; // |r| ≤ 0.35
    let z = r * r;
    let poly = ((((c6 * r + c5) * r + c4) * r + c3) * r + c2) * r + c1;
    let p = poly * z + r + one;
    (p, t.to_bits() as i32 - shift.to_bits() as i32)
}

/// The constants of [`exp`]'s fast path, in the order the Cortex-M FPU loop
/// (`kernels::arm_fpu::exp_shifted_run`) loads them: the 1.5·2^23 shift (adding it
/// leaves round(x · log2 e) in the low mantissa bits), log2 e, ln 2 split so that
/// n · ln2_hi is exact for |n| < 2^15, Cephes' polynomial coefficients c1..c6
/// (of r², ..., r⁷ in e^r = 1 + r + r²·(c1 + c2·r + ...)), 1, and the lower end
/// of the fast range.
pub const EXP_CONSTANTS: [f32; 12] = [
    12_582_912.0,
    core::f32::consts::LOG2_E,
    0.693_359_4,
    -2.121_944_4e-4,
    0.5,
    1.666_666_5e-1,
    4.166_579_6e-2,
    8.333_452e-3,
    1.398_199_9e-3,
    1.987_569_2e-4,
    1.0,
    EXP_FAST_MIN,
];

/// [`exp`] for inputs outside the fast range: NaN, overflow, underflow, and the
/// edges where 2^n is not a normal f32 (scaled in two exact steps).
#[cold]
pub fn exp_outside_fast_range(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > 88.722_83 {
        return f32::INFINITY;
    }
    if x < -103.98 {
        return 0.0;
    }
    let (p, n) = exp_reduced(x);
    // 2^n = 2^(n - k) · 2^k with both factors normal; the first product is exact.
    let k = if n > 0 { 64 } else { -64 };
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    p * pow2(n - k) * pow2(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error of [`exp`] against e^x in f64, or the absolute error in
    /// units of the smallest subnormal where the exact result is not normal.
    fn exp_error(x: f32) -> (f64, bool) {
        let (got, exact) = (f64::from(exp(x)), f64::from(x).exp());
        if exact >= f64::from(f32::MIN_POSITIVE) && exact <= f64::from(f32::MAX) {
            ((got - exact).abs() / exact, true)
        } else {
            ((got - exact).abs() / f64::from(f32::from_bits(1)), false)
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "sweeps 70 million inputs")]
    fn exp_error_is_within_bound() {
        // Every 61st bit pattern of both signs (all exponents, varied mantissas), up to the overflow edge.
        let (mut worst, mut worst_at, mut worst_sub) = (0.0f64, 0.0f32, 0.0f64);
        for bits in (0..=0x42B2_0000u32).step_by(61).chain(1..=4096).chain(0x42B1_0000..=0x42B2_0000) {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let (a, b) = (exp(x), exp_branch_free(x));
                assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{x}: {a} vs {b}");
                if x > 88.722_83 {
                    assert_eq!(exp(x), f32::INFINITY, "{x}");
                    continue;
                }
                let (err, normal) = exp_error(x);
                if normal && err > worst {
                    (worst, worst_at) = (err, x);
                } else if !normal {
                    worst_sub = worst_sub.max(err);
                }
            }
        }
        std::println!("exp: max relative error {worst:.3e} at {worst_at}, subnormal {worst_sub:.2} steps");
        assert!(worst <= f64::from(EXP_MAX_REL_ERROR), "max relative error {worst:e} at {worst_at}");
        assert!(worst_sub <= 1.0, "subnormal results off by {worst_sub} steps");
    }

    #[test]
    fn round_half_away_equals_roundf() {
        let halves = (-600..=600).map(|i| i as f32 * 0.25);
        // Miri interprets every step: a sparser grid there.
        let step = if cfg!(miri) { 997 } else { 1 };
        let near = (0..200_000).step_by(step).map(|i| (i as f32 - 100_000.0) * 1.37e-3);
        let edges = [
            0.499_999_97f32,
            -0.499_999_97,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            3.5,
            -3.5,
            1.499_999_9,
            127.5,
            -127.5,
            32_767.5,
            4_194_303.5,
            -0.0,
        ];
        for x in halves.chain(near).chain(edges) {
            assert_eq!(round_half_away(x), libm::roundf(x) as i32, "{x}");
        }
        assert_eq!(round_half_away(f32::NAN), 0);
    }

    #[test]
    fn max_abs_skips_nan() {
        assert_eq!(max_abs(&[1.0, -3.0, f32::NAN, 2.0]), 3.0);
        assert_eq!(max_abs(&[]), 0.0);
        assert_eq!(max_abs(&[-0.0]), 0.0);
        assert_eq!(max_abs(&[f32::NEG_INFINITY, 1.0]), f32::INFINITY);
        assert_eq!(max_abs(&[1e-45, -2e-45]), 2e-45);
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, -103.98, -103.99, 88.722_83, 88.722_84] {
            let (a, b) = (exp(x), exp_branch_free(x));
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{x}: {a} vs {b}");
        }
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert!(exp(88.72).is_finite() && exp(88.72) > 3.3e38);
        // At least as close as libm's expf over the softmax range, on a dense grid.
        let (mut ours, mut libm_err) = (0.0f64, 0.0f64);
        for i in (0..=200_000).step_by(if cfg!(miri) { 997 } else { 1 }) {
            let x = -80.0 + i as f32 * 4e-4;
            let exact = f64::from(x).exp();
            ours = ours.max((f64::from(exp(x)) - exact).abs() / exact);
            libm_err = libm_err.max((f64::from(libm::expf(x)) - exact).abs() / exact);
        }
        assert!(ours <= 2.0 * libm_err.max(6e-8), "ours {ours:e}, libm {libm_err:e}");
    }
}
