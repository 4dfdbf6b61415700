//! Kubernetes resource quantities (`500m`, `1.5`, `512Mi`, `1e9`) parsed to integers the way the
//! scheduler sees them: CPU as millicores, memory as bytes, each rounded **up** like
//! `Quantity.MilliValue()` / `Quantity.Value()` in apimachinery.
//!
//! The parser is exact (integer arithmetic only, no floats), allocation-free on success and
//! total: it returns an error, never panics, on any input. The watch code calls it on every
//! pod's requests and every node's allocatable, so it must be cheap and must not trust input.
//!
//! Grammar (apimachinery's `ParseQuantity`):
//!
//! ```text
//! quantity := [+-] number suffix
//! number   := digits | digits "." digits | digits "." | "." digits
//! suffix   := "" | n | u | m | k | M | G | T | P | E        (decimal SI)
//!           | Ki | Mi | Gi | Ti | Pi | Ei                    (binary SI)
//!           | ("e" | "E") [+-] digits                        (decimal exponent)
//! ```
//!
//! Limits: at most 19 significant digits (trailing zeros of the number do not count), and the
//! scaled result must fit in a `u64`. Negative quantities are rejected (`-0` is zero).

/// Why a string is not a usable quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("empty quantity (expected e.g. 500m, 1.5, 512Mi, 1Gi, 1e9)")]
    Empty,
    /// The quantity is below zero.
    #[error("negative quantity (resource amounts must be >= 0)")]
    Negative,
    /// The number part is not digits with at most one decimal point.
    #[error("malformed quantity: {0} (expected e.g. 500m, 1.5, 512Mi, 1Gi, 1e9)")]
    Malformed(&'static str),
    /// The suffix is not one Kubernetes knows.
    #[error(
        "unknown quantity suffix {0:?} (allowed: n, u, m, none, k, M, G, T, P, E, \
         Ki, Mi, Gi, Ti, Pi, Ei, or an exponent e<N>/E<N>)"
    )]
    UnknownSuffix(String),
    /// More than 19 significant digits: more precision than any Kubernetes amount carries.
    #[error("quantity has more than 19 significant digits")]
    TooPrecise,
    /// The scaled value does not fit in 64 bits.
    #[error("quantity too large (the scaled value must fit in 64 bits)")]
    TooLarge,
}

/// CPU quantity to millicores, rounded up: `"1"` → 1000, `"500m"` → 500, `"0.0001"` → 1.
pub fn parse_cpu_millis(s: &str) -> Result<u64, QuantityError> {
    parse_quantity_to(s, 3)
}

/// Memory (or any plain) quantity to its integer value, rounded up: `"512Mi"` → 536870912,
/// `"1e9"` → 1000000000, `"1.5Gi"` → 1610612736, `"1m"` → 1.
pub fn parse_memory_bytes(s: &str) -> Result<u64, QuantityError> {
    parse_quantity_to(s, 0)
}

/// The quantity `s` multiplied by `10^decimal_scale`, rounded up to an integer.
///
/// `parse_quantity_to(s, 3)` is the millivalue (CPU millicores), `parse_quantity_to(s, 0)` the
/// value (bytes, pod counts), `parse_quantity_to(s, 9)` the nanovalue.
pub fn parse_quantity_to(s: &str, decimal_scale: i32) -> Result<u64, QuantityError> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(QuantityError::Empty);
    }
    let mut i = 0;
    let negative = match bytes[0] {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };

    // value = mantissa * 10^(pending_zeros - frac_digits). Zeros are held back in
    // `pending_zeros` so that "1000000000000000000000Ki" or "0.50000000000000000000" do not count
    // their zeros against the 19-digit mantissa limit.
    let mut mantissa: u64 = 0;
    let mut pending_zeros: u64 = 0;
    let mut frac_digits: u64 = 0;
    let mut any_digit = false;
    let mut seen_point = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            any_digit = true;
            if seen_point {
                frac_digits = frac_digits.saturating_add(1);
            }
            let d = u64::from(b - b'0');
            if d == 0 {
                if mantissa != 0 {
                    pending_zeros = pending_zeros.saturating_add(1);
                }
            } else {
                let shift = pending_zeros
                    .checked_add(1)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(QuantityError::TooPrecise)?;
                mantissa = 10u64
                    .checked_pow(shift)
                    .and_then(|p| mantissa.checked_mul(p))
                    .and_then(|m| m.checked_add(d))
                    .ok_or(QuantityError::TooPrecise)?;
                pending_zeros = 0;
            }
        } else if b == b'.' {
            if seen_point {
                return Err(QuantityError::Malformed("more than one decimal point"));
            }
            seen_point = true;
        } else {
            break;
        }
        i += 1;
    }
    if !any_digit {
        return Err(QuantityError::Malformed("no digits"));
    }

    // Only ASCII was consumed, so `i` is a char boundary.
    let suffix = &s[i..];
    let (decimal_exp, binary_exp) = parse_suffix(suffix)?;

    if mantissa == 0 {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative);
    }

    // All terms are bounded (string length, clamped exponent), so i128 cannot overflow.
    let exp10 = i128::from(pending_zeros) - i128::from(frac_digits)
        + i128::from(decimal_exp)
        + i128::from(decimal_scale);
    let m = u128::from(mantissa);
    let result: u128 = if exp10 >= 0 {
        // mantissa >= 1, so 10^20 and up cannot fit in a u64.
        if exp10 > 19 {
            return Err(QuantityError::TooLarge);
        }
        // exp10 <= 19 and m < 2^64: m * 10^19 < 2^128.
        let v = m * 10u128.pow(exp10 as u32);
        v.checked_mul(1u128 << binary_exp)
            .ok_or(QuantityError::TooLarge)?
    } else {
        // m < 2^64 and binary_exp <= 60, so the numerator is < 2^124 < 10^38.
        let numerator = m << binary_exp;
        let k = -exp10;
        if k > 38 {
            // 0 < value < 1: rounds up to 1.
            1
        } else {
            let denominator = 10u128.pow(k as u32);
            numerator / denominator + u128::from(numerator % denominator != 0)
        }
    };
    u64::try_from(result).map_err(|_| QuantityError::TooLarge)
}

/// `(decimal exponent, binary exponent)` of a suffix.
fn parse_suffix(suffix: &str) -> Result<(i64, u32), QuantityError> {
    Ok(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let bytes = suffix.as_bytes();
            if bytes.len() > 1 && (bytes[0] == b'e' || bytes[0] == b'E') {
                (parse_exponent(&bytes[1..])?, 0)
            } else {
                return Err(QuantityError::UnknownSuffix(shorten(suffix)));
            }
        }
    })
}

/// A signed decimal exponent, clamped to ±1_000_000: beyond that every non-zero quantity is
/// too large or rounds up to 1 anyway, and clamping keeps the arithmetic bounded.
fn parse_exponent(bytes: &[u8]) -> Result<i64, QuantityError> {
    const CLAMP: i64 = 1_000_000;
    let (negative, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(QuantityError::Malformed(
            "exponent must be an integer, e.g. 1e9",
        ));
    }
    let magnitude = digits
        .iter()
        .fold(0i64, |acc, d| (acc * 10 + i64::from(d - b'0')).min(CLAMP));
    Ok(if negative { -magnitude } else { magnitude })
}

/// At most 16 characters of `s`, for error messages about arbitrary input.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(16) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_table_matches_kubernetes_millivalue() {
        let cases: &[(&str, u64)] = &[
            ("1", 1000),
            ("1000", 1_000_000),
            ("500m", 500),
            ("1.5", 1500),
            ("0.5", 500),
            (".5", 500),
            ("1.", 1000),
            ("+2", 2000),
            ("250m", 250),
            ("0", 0),
            ("0m", 0),
            ("-0", 0),
            ("0.0001", 1),
            ("0.0015", 2),
            ("1500u", 2),
            ("1000u", 1),
            ("1000000n", 1),
            ("1n", 1),
            ("1k", 1_000_000),
            ("2e3", 2_000_000),
            ("2E3", 2_000_000),
            ("5e-1", 500),
            ("5e-4", 1),
            ("1e+3", 1_000_000),
            ("1Ki", 1_024_000),
            ("100m", 100),
            ("0.100", 100),
        ];
        for (input, want) in cases {
            assert_eq!(parse_cpu_millis(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn memory_table_matches_kubernetes_value() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1", 1),
            ("512Mi", 512 * 1024 * 1024),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("1Ki", 1024),
            ("1Ti", 1 << 40),
            ("1Pi", 1 << 50),
            ("1Ei", 1 << 60),
            ("15Ei", 15 << 60),
            ("1e9", 1_000_000_000),
            ("2G", 2_000_000_000),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123k", 123_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("18E", 18_000_000_000_000_000_000),
            ("1m", 1),
            ("1001m", 2),
            ("0.1Ki", 103),
            ("0.5Ki", 512),
            ("1e-30", 1),
            ("1e-1000000000", 1),
            ("1.2345678901234567891", 2),
            ("18446744073709551615", u64::MAX),
        ];
        for (input, want) in cases {
            assert_eq!(parse_memory_bytes(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_garbage_negative_and_overflow() {
        use QuantityError::*;
        let cases: &[(&str, QuantityError)] = &[
            ("", Empty),
            ("-1", Negative),
            ("-500m", Negative),
            ("abc", Malformed("no digits")),
            ("m", Malformed("no digits")),
            (".", Malformed("no digits")),
            ("+", Malformed("no digits")),
            ("1.2.3", Malformed("more than one decimal point")),
            ("1 ", UnknownSuffix(" ".into())),
            (" 1", Malformed("no digits")),
            ("1Mb", UnknownSuffix("Mb".into())),
            ("1KI", UnknownSuffix("KI".into())),
            ("1K", UnknownSuffix("K".into())),
            ("1e", UnknownSuffix("e".into())),
            ("1e1.5", Malformed("exponent must be an integer, e.g. 1e9")),
            ("1e+", Malformed("exponent must be an integer, e.g. 1e9")),
            ("18446744073709551616", TooPrecise),
            ("18446744073709551617", TooPrecise),
            ("20E", TooLarge),
            ("16Ei", TooLarge),
            ("1e20", TooLarge),
            ("1e1000000000000", TooLarge),
            ("1.23456789012345678912", TooPrecise),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_memory_bytes(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
        assert_eq!(parse_cpu_millis("18446744073709552"), Err(TooLarge));
    }

    #[test]
    fn zeros_do_not_count_against_precision() {
        assert_eq!(
            parse_memory_bytes("10000000000000000000"),
            Ok(10_000_000_000_000_000_000)
        );
        assert_eq!(parse_cpu_millis("0.50000000000000000000000000"), Ok(500));
        assert_eq!(parse_cpu_millis("0000000000000000000000000001"), Ok(1000));
    }

    #[test]
    fn unknown_suffix_in_error_is_shortened() {
        let long = format!("1{}", "x".repeat(100));
        match parse_memory_bytes(&long) {
            Err(QuantityError::UnknownSuffix(s)) => assert!(s.len() < 24, "{s}"),
            other => panic!("unexpected {other:?}"),
        }
        // Multi-byte characters are cut on a char boundary.
        assert!(parse_memory_bytes("1ééééééééééééééééééééé").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>(), scale in -40i32..40) {
            let _ = parse_quantity_to(&s, scale);
        }

        #[test]
        fn quantity_like_strings_never_panic(s in "[-+]?[0-9]{0,30}(\\.[0-9]{0,30})?([numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]{1,25})?") {
            let _ = parse_cpu_millis(&s);
            let _ = parse_memory_bytes(&s);
        }

        #[test]
        fn plain_integers_round_trip(n in any::<u64>()) {
            prop_assert_eq!(parse_memory_bytes(&n.to_string()), Ok(n));
        }

        #[test]
        fn millis_suffix_round_trips_for_cpu(n in 0u64..u64::MAX / 1000) {
            prop_assert_eq!(parse_cpu_millis(&format!("{n}m")), Ok(n));
        }
    }
}
