//! Value parsers for the command line: the allowed names of enumerated options
//! (listed by `--help` and by the error for a bad value), and numbers that may
//! be written negative so that they reach the specific range checks.

use std::ffi::OsStr;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use microlm::format::DType;
use microlm::KvDtype;

/// One of a fixed list of `Copy` values, each known by its command-line name.
#[derive(Clone, Debug)]
pub struct Choice<T: 'static> {
    values: &'static [T],
    name: fn(T) -> &'static str,
}

impl<T: Copy + Send + Sync + 'static> TypedValueParser for Choice<T> {
    type Value = T;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<T, clap::Error> {
        // clap's own parser gives the standard error with the list of possible values.
        let names = PossibleValuesParser::new(self.values.iter().map(|&v| (self.name)(v)));
        let name = names.parse_ref(cmd, arg, value)?;
        self.values.iter().copied().find(|&v| (self.name)(v) == name).ok_or_else(|| {
            cmd.clone().error(
                ErrorKind::InvalidValue,
                format!("'{name}' is not one of the values of {}", arg.map_or("the option".into(), |a| a.to_string())),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.values.iter().map(|&v| PossibleValue::new((self.name)(v)))))
    }
}

/// `--kv`: f32, f16 or i8.
pub fn kv() -> Choice<KvDtype> {
    Choice { values: &KvDtype::ALL, name: KvDtype::name }
}

/// `--dtype`: f32, f16, q8_0, q4_0 or q4_16.
pub fn dtype() -> Choice<DType> {
    Choice { values: &DType::WEIGHTS, name: DType::name }
}

/// `--machine` and `demo --board`: the QEMU machines with a board crate.
pub fn machine() -> PossibleValuesParser {
    PossibleValuesParser::new(crate::qemu::MACHINES.iter().map(|m| m.name))
}

/// `inspect --board`: the boards of the fit table.
pub fn board() -> PossibleValuesParser {
    PossibleValuesParser::new(crate::inspect::BOARDS.iter().map(|b| b.name))
}

/// A number parsed with a message naming the option and its range, so that
/// `-s -5` says what a seed must be instead of "invalid digit".
fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| what.to_string())
}

/// `-s`: a whole number from 0 to 2^64 - 1.
pub fn seed(s: &str) -> Result<u64, String> {
    number(s, "seed must be a whole number from 0 to 18446744073709551615 (0 = from the clock)")
}

/// `-n`, `--ctx`, `--top-k`, `--window`: a whole number ≥ 0.
pub fn count(s: &str) -> Result<usize, String> {
    number(s, "must be a whole number >= 0")
}

/// `bench --runs`: a whole number ≥ 1.
pub fn positive(s: &str) -> Result<usize, String> {
    let v: usize = number(s, "must be a whole number >= 1")?;
    if v > 0 {
        Ok(v)
    } else {
        Err("must be a whole number >= 1".into())
    }
}

/// The longest `--timeout`, in seconds (136 years: a deadline that far is still a time).
const MAX_TIMEOUT: u64 = u32::MAX as u64;

/// `qemu --timeout`: whole seconds from 1 to [`MAX_TIMEOUT`]; 0 would kill QEMU before it starts.
pub fn timeout_secs(s: &str) -> Result<u64, String> {
    let range = format!("must be a whole number of seconds from 1 to {MAX_TIMEOUT}");
    let v: u64 = number(s, &range)?;
    if (1..=MAX_TIMEOUT).contains(&v) {
        Ok(v)
    } else {
        Err(range)
    }
}

/// `device --timeout`: seconds, more than 0 and at most [`MAX_TIMEOUT`] (fractions allowed).
pub fn timeout_real(s: &str) -> Result<f32, String> {
    let range = format!("must be a number of seconds > 0 and at most {MAX_TIMEOUT}");
    let v = real(s).map_err(|_| range.clone())?;
    if v > 0.0 && v <= MAX_TIMEOUT as f32 {
        Ok(v)
    } else {
        Err(range)
    }
}

/// `-t`, `--top-p`, `--min-p`: any f32 (the sampler checks the range and says which),
/// read by [`microlm::scalar::parse_f32`] as the board firmware reads it, so a
/// flag means the same value on the host and on a board. A finite number too
/// large for an f32 (1e308) is refused here: as an f32 it would be infinite, and
/// "must be finite" would puzzle whoever typed it.
pub fn real(s: &str) -> Result<f32, String> {
    use microlm::scalar::{parse_f32, ParseFloatError, MAX_SIGNIFICANT_DIGITS};
    let s = s.trim();
    let v = parse_f32(s.as_bytes()).map_err(|e| match e {
        ParseFloatError::Invalid => "must be a number".to_string(),
        ParseFloatError::TooManyDigits => format!("{s} has more than {MAX_SIGNIFICANT_DIGITS} significant digits"),
    })?;
    // Infinite from a finite number (1e39, 1e400), not from "inf" or "infinity".
    if v.is_infinite() && !s.trim_start_matches(['+', '-']).to_ascii_lowercase().starts_with("inf") {
        return Err(format!("{s} is too large (at most {:e} in magnitude)", f32::MAX));
    }
    Ok(v)
}

/// `--calibrate-half`, `eval --half`: all, first or second.
pub fn half() -> Choice<crate::eval::Half> {
    Choice { values: &crate::eval::Half::ALL, name: crate::eval::Half::name }
}

/// `--damp`: a finite number ≥ 0.
pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    let v: f64 = number(s, "must be a number >= 0")?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be a finite number >= 0".into())
    }
}

/// `--budget`: bytes, with an optional K (1000) or KiB (1024) suffix: 170000, 170K, 166KiB.
pub fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("KiB").or_else(|| t.strip_suffix("kib")) {
        (n, 1024)
    } else if let Some(n) = t.strip_suffix('K').or_else(|| t.strip_suffix('k')) {
        (n, 1000)
    } else {
        (t, 1)
    };
    let v: u64 = number(num.trim(), "must be a byte count like 170000, 170K (×1000) or 166KiB (×1024)")?;
    v.checked_mul(mult).filter(|&b| b > 0).ok_or_else(|| "must be a byte count > 0".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_finite_number_past_f32_is_too_large_not_infinite() {
        assert_eq!(super::real("0.9"), Ok(0.9f32));
        assert_eq!(super::real("inf"), Ok(f32::INFINITY), "the sampler names infinity");
        assert!(super::real("1e308").unwrap_err().contains("too large"));
        assert!(super::real("1e400").unwrap_err().contains("too large"));
        assert_eq!(super::real("-Infinity"), Ok(f32::NEG_INFINITY));
        assert!(super::real("x").is_err());
        assert!(super::real("0.12345678901234567891").unwrap_err().contains("more than 19 significant digits"));
        assert_eq!(super::real(" 0.80000000000000000000 "), Ok(0.8f32), "trailing zeros are not significant");
    }

    #[test]
    fn a_timeout_is_never_zero_negative_or_endless() {
        assert_eq!(super::timeout_secs("600"), Ok(600));
        for bad in ["0", "-1", "4294967296", "x"] {
            assert!(super::timeout_secs(bad).unwrap_err().contains("from 1 to 4294967295"), "{bad}");
        }
        assert_eq!(super::timeout_real("0.5"), Ok(0.5));
        for bad in ["0", "-0", "-2", "nan", "inf", "1e30"] {
            assert!(super::timeout_real(bad).unwrap_err().contains("> 0 and at most"), "{bad}");
        }
    }
}
