//! Whole numbers in decimal and 64-bit division without core's u64 division
//! and formatting: a Cortex-M3 has no 64-bit divide, and `u64 / u64` links
//! compiler-builtins' routine (866 bytes) and u64 `Display` 266 more. The
//! stats line's instructions per token, the instruction count and the fault
//! lines use these once per run, after the counted instructions.

use core::fmt::{self, Write};

/// `(n / d, n % d)` for `d` ≥ 1, by shift and subtract (64 steps).
///
/// Never inlined: its callers include generic code that a board crate
/// compiles at its own opt-level (3 on most boards), which unrolls the loop.
#[inline(never)]
pub fn div_rem(n: u64, d: u64) -> (u64, u64) {
    let (mut q, mut r) = (0u64, 0u64);
    for bit in (0..64).rev() {
        // The remainder is below d, so the shifted one is below 2·d: one subtraction
        // at most (its top bit, when set, is part of the value and the difference fits).
        let top = r >> 63;
        r = r << 1 | (n >> bit & 1);
        q <<= 1;
        if top != 0 || r >= d {
            r = r.wrapping_sub(d);
            q |= 1;
        }
    }
    (q, r)
}

/// The decimal digits of `n`, at the end of `digits`.
#[inline(never)]
fn decimal(n: u64, digits: &mut [u8; 20]) -> &str {
    let mut at = digits.len();
    let mut n = n;
    loop {
        let (q, r) = div_rem(n, 10);
        at -= 1;
        digits[at] = b'0' + r as u8;
        n = q;
        if n == 0 {
            break;
        }
    }
    core::str::from_utf8(&digits[at..]).unwrap_or("?")
}

/// Writes `n` in decimal.
pub fn write_decimal(out: &mut impl Write, n: u64) -> fmt::Result {
    out.write_str(decimal(n, &mut [0; 20]))
}

/// A u64 that `write!` formats with [`write_decimal`] (core's u64 `Display` is not linked).
#[derive(Clone, Copy, Debug)]
pub struct Decimal(pub u64);

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_decimal(f, self.0)
    }
}
