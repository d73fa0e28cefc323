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
/// Upper end of the fast range (see [`EXP_FAST_MIN`]).
pub const EXP_FAST_MAX: f32 = 88.37;

/// Below this [`exp`] is exactly 0 (e^x is under half the smallest subnormal).
pub const EXP_ZERO_BELOW: f32 = -103.98;

/// Largest maximum relative error of [`exp`] against the exact e^x for every
/// input whose result is a normal f32, checked by `exp_error_is_within_bound`
/// (every 61st input: 7.85e-8 at x = 70.38; libm's `expf` reaches about 1e-7).
pub const EXP_MAX_REL_ERROR: f32 = 1.0e-7;

/// e^x for f32, the same bits on every target: Cody–Waite reduction
/// `x = n·ln2 + r` (|r| ≤ ln2/2, `n` rounded to nearest by the 1.5·2^23 shift),
/// a degree-6 polynomial for e^r (see [`EXP_CONSTANTS`]), then scaling by 2^n through the
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
    if x < EXP_ZERO_BELOW {
        0.0
    } else {
        e
    }
}

/// (e^r, n) with x = n·ln2 + r: the polynomial part of [`exp`].
#[inline(always)]
fn exp_reduced(x: f32) -> (f32, i32) {
    let [shift, log2e, ln2_hi, ln2_lo, c1, c2, c3, c4, c5, one, _] = EXP_CONSTANTS;
    let t = x * log2e + shift;
    let n = t - shift; // round-to-nearest-even of x · log2 e, exactly
    let r = (x - n * ln2_hi) - n * ln2_lo; // |r| ≤ 0.35
    let z = r * r;
    let poly = (((c5 * r + c4) * r + c3) * r + c2) * r + c1;
    let p = poly * z + r + one;
    (p, t.to_bits() as i32 - shift.to_bits() as i32)
}

/// The constants of [`exp`]'s fast path, in the order the Cortex-M FPU loop
/// (`kernels::arm_fpu::exp_shifted_run`) loads them: the 1.5·2^23 shift (adding it
/// leaves round(x · log2 e) in the low mantissa bits), log2 e, ln 2 split so that
/// n · ln2_hi is exact for |n| < 2^15, the polynomial coefficients c1..c5 (of
/// r², ..., r⁶ in e^r ≈ 1 + r + r²·(c1 + c2·r + c3·r² + c4·r³ + c5·r⁴)), 1, and the
/// lower end of the fast range. c1 is 1/2; c2..c5 minimize the largest relative
/// error of e^r over |r| ≤ 0.3466 (a weighted Remez fit, 3.6e-9 before f32
/// rounding), one term fewer than Cephes' `expf` for the same accuracy in f32.
pub const EXP_CONSTANTS: [f32; 11] = [
    12_582_912.0,
    core::f32::consts::LOG2_E,
    0.693_359_4,
    -2.121_944_4e-4,
    0.5,
    1.666_653_5e-1,
    4.166_723_8e-2,
    8.367_482e-3,
    1.386_378_7e-3,
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
    if x < EXP_ZERO_BELOW {
        return 0.0;
    }
    let (p, n) = exp_reduced(x);
    // 2^n = 2^(n - k) · 2^k with both factors normal; the first product is exact.
    let k = if n > 0 { 64 } else { -64 };
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    p * pow2(n - k) * pow2(k)
}

/// Why [`parse_f32`] refused a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ParseFloatError {
    /// Not a decimal number (`[+-]digits[.digits][e[+-]digits]`, `inf`, `infinity`, `nan`).
    Invalid,
    /// More than [`MAX_SIGNIFICANT_DIGITS`] significant digits (leading and trailing zeros do not count).
    TooManyDigits,
}

/// Longest significant part [`parse_f32`] reads exactly: 19 digits (below 2^64).
pub const MAX_SIGNIFICANT_DIGITS: usize = 19;

/// Parses a decimal number as `str::parse::<f32>` does (the same value for every
/// string both accept: round to nearest, ties to even, subnormals, ±infinity past
/// the range, `inf`/`infinity`/`nan` in any case), without core's 10 KB table of
/// powers of five, so board firmware and the host parse flags alike.
///
/// The significant digits (at most [`MAX_SIGNIFICANT_DIGITS`]) form an integer
/// `m` and the rest a power of ten, value = `m·10^e` = `(m·5^e / 5^−e) · 2^e`
/// (each power of five present only for its sign of e), computed by restoring
/// binary long division on 160-bit integers and rounded once from 26+ quotient
/// bits and a sticky bit.
pub fn parse_f32(s: &[u8]) -> Result<f32, ParseFloatError> {
    let (negative, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let sign = |v: f32| if negative { -v } else { v };
    let lower =
        |word: &[u8]| body.len() == word.len() && body.iter().zip(word).all(|(a, b)| a.to_ascii_lowercase() == *b);
    if lower(b"inf") || lower(b"infinity") {
        return Ok(sign(f32::INFINITY));
    }
    if lower(b"nan") {
        return Ok(f32::NAN);
    }
    let (mut m, mut digits, mut exp10) = (0u64, 0usize, 0i64);
    let (mut any, mut point, mut i) = (false, false, 0);
    while i < body.len() {
        match body[i] {
            b'.' if !point => point = true,
            c @ b'0'..=b'9' => {
                any = true;
                let d = u64::from(c - b'0');
                if digits < MAX_SIGNIFICANT_DIGITS && (d != 0 || digits > 0) {
                    m = m * 10 + d;
                    digits += 1;
                    exp10 -= i64::from(point);
                } else if digits >= MAX_SIGNIFICANT_DIGITS {
                    if d != 0 {
                        return Err(ParseFloatError::TooManyDigits);
                    }
                    // A zero past the significant digits: ×10 before the point, nothing after it.
                    exp10 += i64::from(!point);
                } else if point {
                    // A leading zero after the point.
                    exp10 -= 1;
                }
            }
            _ => break,
        }
        i += 1;
    }
    if !any {
        return Err(ParseFloatError::Invalid);
    }
    if i < body.len() {
        if !matches!(body[i], b'e' | b'E') {
            return Err(ParseFloatError::Invalid);
        }
        let rest = &body[i + 1..];
        let (negative_exp, rest) = match rest.first() {
            Some(b'-') => (true, &rest[1..]),
            Some(b'+') => (false, &rest[1..]),
            _ => (false, rest),
        };
        if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
            return Err(ParseFloatError::Invalid);
        }
        // Saturate: past ±10^6 every value is 0 or infinite either way.
        let e = rest.iter().fold(0i64, |e, &c| (e * 10 + i64::from(c - b'0')).min(1_000_000));
        exp10 += if negative_exp { -e } else { e };
    }
    if m == 0 {
        return Ok(sign(0.0));
    }
    // m ≥ 1: from 10^39 up every value is past f32::MAX.
    if exp10 > 38 {
        return Ok(sign(f32::INFINITY));
    }
    // m < 10^19 < 2^64: below 2^64 · 10^−66 < 2^−150 every value rounds to 0.
    if exp10 < -65 {
        return Ok(sign(0.0));
    }
    Ok(sign(scale_by_power_of_ten(m, exp10 as i32)))
}

/// A 160-bit unsigned integer (five u32 limbs, least significant first): the
/// dividend `m · 5^e` (m < 2^64, e ≤ 38: below 2^153), the divisor 5^k (k ≤ 65,
/// below 2^152) and the remainder of [`scale_by_power_of_ten`]. u32 limbs keep
/// the code small on 32-bit targets (no 64- or 128-bit multiplies).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Wide([u32; 5]);

impl Wide {
    fn from_u64(v: u64) -> Wide {
        Wide([v as u32, (v >> 32) as u32, 0, 0, 0])
    }

    fn times_5(&mut self) {
        let mut carry = 0u64;
        for w in &mut self.0 {
            let v = u64::from(*w) * 5 + carry;
            *w = v as u32;
            carry = v >> 32;
        }
    }

    /// Bit `i` (0 = least significant); 0 below bit 0.
    fn bit(&self, i: i32) -> u32 {
        if i < 0 {
            0
        } else {
            self.0[i as usize / 32] >> (i % 32) & 1
        }
    }

    fn shl1_or(&mut self, bit: u32) {
        let mut carry = bit;
        for w in &mut self.0 {
            let top = *w >> 31;
            *w = *w << 1 | carry;
            carry = top;
        }
    }

    fn at_least(&self, other: &Wide) -> bool {
        for i in (0..5).rev() {
            if self.0[i] != other.0[i] {
                return self.0[i] > other.0[i];
            }
        }
        true
    }

    fn subtract(&mut self, other: &Wide) {
        let mut borrow = false;
        for (a, &b) in self.0.iter_mut().zip(&other.0) {
            let (v, b1) = a.overflowing_sub(b);
            let (v, b2) = v.overflowing_sub(u32::from(borrow));
            *a = v;
            borrow = b1 || b2;
        }
    }
}

/// `m · 10^e10` (1 ≤ m < 2^64, −65 ≤ e10 ≤ 38) rounded to the nearest f32, ties to even.
fn scale_by_power_of_ten(m: u64, e10: i32) -> f32 {
    // m · 10^e10 = (n / d) · 2^e10 with n = m · 5^max(e10, 0) and d = 5^max(−e10, 0).
    let (mut n, mut d) = (Wide::from_u64(m), Wide::from_u64(1));
    for _ in 0..e10 {
        n.times_5();
    }
    for _ in e10..0 {
        d.times_5();
    }
    // Binary long division: the bits of n from the top, then fraction bits (i < 0),
    // until the quotient has 26 significant bits or lies wholly below f32's
    // subnormals (the weight of its last bit, 2^(i + e10), at most 2^−152).
    let (mut q, mut rem, mut i) = (0u64, Wide([0; 5]), 160i32);
    while q < 1 << 26 && i + e10 > -152 {
        i -= 1;
        rem.shl1_or(n.bit(i));
        q <<= 1;
        if rem.at_least(&d) {
            rem.subtract(&d);
            q |= 1;
        }
    }
    // n / d = (q + s) · 2^i with 0 ≤ s < 1: s is the remainder and the bits of n not brought in.
    let sticky = rem != Wide([0; 5]) || (0..i).any(|j| n.bit(j) != 0);
    round_to_f32(q, i + e10, sticky)
}

/// `(q + s) · 2^e2` with `0 ≤ s < 1` (s > 0 when `sticky`) rounded to the nearest
/// f32, ties to even, for `q < 2^64` and a result below 2^128.
fn round_to_f32(q: u64, e2: i32, sticky: bool) -> f32 {
    if q == 0 {
        return 0.0;
    }
    let bits = 64 - q.leading_zeros() as i32;
    // Normal results keep 24 bits; subnormal ones the bits of weight ≥ 2^−149.
    let shift = if e2 + bits > -126 { bits - 24 } else { -149 - e2 };
    let (mut kept, mut e) = if shift <= 0 {
        (q << -shift, e2 + shift)
    } else if shift > 64 {
        (0, e2 + shift)
    } else {
        let kept = if shift == 64 { 0 } else { q >> shift };
        let rest = if shift == 64 { q } else { q & ((1u64 << shift) - 1) };
        let half = 1u64 << (shift - 1);
        let up = rest > half || rest == half && (sticky || kept & 1 == 1);
        (kept + u64::from(up), e2 + shift)
    };
    if kept == 1 << 24 {
        kept >>= 1;
        e += 1;
    }
    if kept >= 1 << 23 {
        // Normal: kept in [2^23, 2^24), value kept · 2^e.
        let biased = e + 23 + 127;
        if biased >= 255 {
            return f32::INFINITY;
        }
        f32::from_bits((biased as u32) << 23 | (kept as u32 & 0x7f_ffff))
    } else {
        // Subnormal (e = −149): the bits are the quants (2^23 would be the least normal).
        f32::from_bits(kept as u32)
    }
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

    /// `parse_f32` against `str::parse::<f32>` (bit for bit, NaN as NaN), or
    /// `TooManyDigits` where the significant digits pass 19; returns whether it parsed.
    fn same_as_core(s: &str) -> bool {
        let core = s.parse::<f32>();
        match parse_f32(s.as_bytes()) {
            Ok(v) => {
                let c = core.unwrap_or_else(|_| panic!("{s:?}: parsed as {v}, core refuses it"));
                assert!(v.to_bits() == c.to_bits() || v.is_nan() && c.is_nan(), "{s:?}: {v:e} vs core {c:e}");
                true
            }
            Err(ParseFloatError::Invalid) => {
                assert!(core.is_err(), "{s:?}: refused, core reads {core:?}");
                false
            }
            Err(ParseFloatError::TooManyDigits) => {
                let mantissa = s.split(['e', 'E']).next().unwrap_or("");
                let digits: std::string::String = mantissa.chars().filter(char::is_ascii_digit).collect();
                assert!(digits.trim_matches('0').len() > MAX_SIGNIFICANT_DIGITS, "{s:?}: too many digits?");
                false
            }
        }
    }

    #[test]
    fn parse_f32_equals_core_on_edges() {
        for s in [
            "0",
            "-0",
            "+0.0",
            "0e999999999",
            "1",
            "0.8",
            "0.9",
            "0.95",
            "1e-3",
            ".5",
            "5.",
            "-2.5E+2",
            "00001.2500",
            "16777216",
            "16777217",
            "16777218",
            "16777219",
            "33554433",
            "3.4028235e38",
            "3.4028236e38",
            "3.40282357e38",
            "1e38",
            "1e39",
            "1e-38",
            "1.1754942e-38",
            "1.17549435e-38",
            "1e-45",
            "7e-46",
            "7.1e-46",
            "1.4e-45",
            "2.1e-45",
            "1e-46",
            "1e-65",
            "9999999999999999999e-84",
            "9999999999999999999e19",
            "0.000000000000000000000000000000000000000000001",
            "1234567890123456789",
            "12345678901234567890",
            "1234567890123456789000000",
            "0.1234567890123456789",
            "inf",
            "-Infinity",
            "NaN",
            "nan",
            "infinity",
            "",
            "-",
            ".",
            "e5",
            "1e",
            "1e+",
            "1.2.3",
            "1x",
            "--1",
            " 1",
            "1 ",
            "+-1",
            "0x10",
            "1_0",
        ] {
            same_as_core(s);
        }
        assert_eq!(parse_f32(b"12345678901234567891"), Err(ParseFloatError::TooManyDigits));
        assert_eq!(parse_f32(b"1.5x"), Err(ParseFloatError::Invalid));
    }

    #[test]
    fn parse_f32_equals_core_on_random_and_halfway_strings() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let n = if cfg!(miri) { 200 } else { 300_000 };
        let mut parsed = 0;
        for i in 0..n {
            let r = next();
            let s = match i % 3 {
                // Random digits, point and exponent.
                0 => {
                    let digits = 1 + (r % 19) as usize;
                    let mut s = std::string::String::new();
                    let mut x = next();
                    for d in 0..digits {
                        if d == (r >> 8) as usize % (digits + 1) {
                            s.push('.');
                        }
                        s.push(char::from(b'0' + (x % 10) as u8));
                        x /= 10;
                        if x == 0 {
                            x = next();
                        }
                    }
                    let e = (r >> 16) as i64 % 120 - 75;
                    std::format!("{s}e{e}")
                }
                // Exactly halfway between two f32 (a tie): the exact decimal of the f64 midpoint.
                1 => {
                    let bits = (r as u32) & 0x7f7f_ffff;
                    let (a, b) = (f32::from_bits(bits), f32::from_bits(bits + 1));
                    let mid = (f64::from(a) + f64::from(b)) / 2.0;
                    let s = std::format!("{mid:.60}");
                    std::string::String::from(s.trim_end_matches('0').trim_end_matches('.'))
                }
                // Ties with few digits: binary fractions near 1 and integers up to 2^44.
                _ => {
                    let e = (r % 40) as i32 - 20;
                    let a = f32::from_bits(((e + 127) as u32) << 23 | (r >> 32) as u32 & 0x7f_ffff);
                    let mid = (f64::from(a) + f64::from(f32::from_bits(a.to_bits() + 1))) / 2.0;
                    let s = std::format!("{mid:.45}");
                    std::string::String::from(s.trim_end_matches('0').trim_end_matches('.'))
                }
            };
            parsed += usize::from(same_as_core(&s));
        }
        assert!(parsed > n / 3, "only {parsed} of {n} strings had at most 19 significant digits");
    }
}
