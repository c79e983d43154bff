//! The `grpc-timeout` request header.
//!
//! grpc/grpc `doc/PROTOCOL-HTTP2.md` defines it as:
//!
//! ```text
//! Timeout      → "grpc-timeout" TimeoutValue TimeoutUnit
//! TimeoutValue → {positive integer as ASCII string of at most 8 digits}
//! TimeoutUnit  → Hour / Minute / Second / Millisecond / Microsecond / Nanosecond
//! Hour → "H"   Minute → "M"   Second → "S"
//! Millisecond → "m"   Microsecond → "u"   Nanosecond → "n"
//! ```
//!
//! [`encode_timeout`] picks the finest unit that fits in 8 digits and rounds
//! up, so the peer never sees a shorter deadline than the caller asked for.
//! [`parse_timeout`] accepts exactly the grammar above: no whitespace, no sign.

use std::time::Duration;

/// Most digits a `TimeoutValue` may have.
const MAX_DIGITS: usize = 8;
/// Largest `TimeoutValue` (8 nines).
const MAX_VALUE: u128 = 99_999_999;
/// Value sent for durations too long for any unit.
const CLAMPED: &str = "99999999H";
/// Longest header value quoted back in an error message.
const MAX_QUOTED: usize = 32;

/// Units from finest to coarsest, with their length in nanoseconds.
const UNITS: [(char, u128); 6] = [
    ('n', 1),
    ('u', 1_000),
    ('m', 1_000_000),
    ('S', 1_000_000_000),
    ('M', 60_000_000_000),
    ('H', 3_600_000_000_000),
];

/// Encodes `timeout` as a `grpc-timeout` value.
///
/// Uses the finest unit (n, u, m, S, M, H in that order) whose value fits in 8
/// digits. When the duration is not a whole number of that unit it is rounded
/// **up**, never sending a shorter deadline than asked. Durations beyond
/// 99999999 hours are clamped to `"99999999H"`; zero is `"0n"`.
#[must_use]
pub fn encode_timeout(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    for (unit, unit_nanos) in UNITS {
        // `unit_nanos` is a non-zero constant, so neither operation fails.
        let whole = nanos.checked_div(unit_nanos).unwrap_or(u128::MAX);
        let value = match nanos.checked_rem(unit_nanos) {
            Some(0) => whole,
            _ => whole.saturating_add(1),
        };
        if value <= MAX_VALUE {
            return format!("{value}{unit}");
        }
    }
    CLAMPED.to_owned()
}

/// Why a `grpc-timeout` header value was rejected. Each variant carries the
/// offending value (lossily decoded, shortened if very long) for the message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutError {
    /// The header value was empty.
    #[error(
        "invalid grpc-timeout \"\": expected 1 to 8 ASCII digits followed by a unit \
         (one of H M S m u n), e.g. \"100m\""
    )]
    Empty,
    /// The value had more than 8 digits.
    #[error("invalid grpc-timeout {0:?}: at most 8 digits are allowed before the unit")]
    TooManyDigits(String),
    /// The value part was missing or had a non-digit (sign, space, ...).
    #[error(
        "invalid grpc-timeout {0:?}: the value must be 1 to 8 ASCII digits \
         (no sign, no whitespace) followed by the unit"
    )]
    InvalidDigits(String),
    /// The last character was not a known unit.
    #[error("invalid grpc-timeout {0:?}: unit must be one of H M S m u n")]
    InvalidUnit(String),
}

/// Parses a `grpc-timeout` header value such as `b"100m"`.
///
/// # Errors
///
/// [`TimeoutError`] unless `value` is 1 to 8 ASCII digits followed by one of
/// `H M S m u n`, with nothing else (no whitespace, no sign).
pub fn parse_timeout(value: &[u8]) -> Result<Duration, TimeoutError> {
    let Some((&unit, digits)) = value.split_last() else {
        return Err(TimeoutError::Empty);
    };
    let unit_nanos = UNITS
        .iter()
        .find(|(c, _)| u32::from(unit) == u32::from(*c))
        .map(|&(_, n)| n);
    let Some(unit_nanos) = unit_nanos else {
        return Err(TimeoutError::InvalidUnit(quote(value)));
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(TimeoutError::InvalidDigits(quote(value)));
    }
    if digits.len() > MAX_DIGITS {
        return Err(TimeoutError::TooManyDigits(quote(value)));
    }
    let number = digits.iter().fold(0u128, |acc, &d| {
        acc.saturating_mul(10)
            .saturating_add(u128::from(d.saturating_sub(b'0')))
    });
    // At most 99_999_999 hours: about 3.6e20 ns, far below u128::MAX, and the
    // whole seconds (3.6e11) fit a u64.
    let total = number.saturating_mul(unit_nanos);
    let secs = u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX);
    let sub_nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub_nanos))
}

/// The header value as text for an error message, cut to [`MAX_QUOTED`] bytes.
fn quote(value: &[u8]) -> String {
    match value.get(..MAX_QUOTED) {
        Some(head) if head.len() < value.len() => {
            format!("{}...", String::from_utf8_lossy(head))
        }
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Duration, TimeoutError> {
        parse_timeout(s.as_bytes())
    }

    #[test]
    fn parse_every_unit() {
        assert_eq!(p("7H"), Ok(Duration::from_secs(7 * 3600)));
        assert_eq!(p("7M"), Ok(Duration::from_secs(7 * 60)));
        assert_eq!(p("7S"), Ok(Duration::from_secs(7)));
        assert_eq!(p("7m"), Ok(Duration::from_millis(7)));
        assert_eq!(p("7u"), Ok(Duration::from_micros(7)));
        assert_eq!(p("7n"), Ok(Duration::from_nanos(7)));
        assert_eq!(p("0S"), Ok(Duration::ZERO));
        assert_eq!(p("00000001m"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn eight_digits_max() {
        assert_eq!(p("99999999n"), Ok(Duration::from_nanos(99_999_999)));
        assert_eq!(p("99999999H"), Ok(Duration::from_secs(99_999_999 * 3600)));
        assert_eq!(
            p("123456789S"),
            Err(TimeoutError::TooManyDigits("123456789S".into()))
        );
        assert_eq!(
            p("000000001S"),
            Err(TimeoutError::TooManyDigits("000000001S".into()))
        );
    }

    #[test]
    fn malformed_values() {
        assert_eq!(p(""), Err(TimeoutError::Empty));
        assert_eq!(p("S"), Err(TimeoutError::InvalidDigits("S".into())));
        assert_eq!(p("1"), Err(TimeoutError::InvalidUnit("1".into())));
        assert_eq!(p("1x"), Err(TimeoutError::InvalidUnit("1x".into())));
        assert_eq!(p("-1S"), Err(TimeoutError::InvalidDigits("-1S".into())));
        assert_eq!(p("+1S"), Err(TimeoutError::InvalidDigits("+1S".into())));
        assert_eq!(p(" 1S"), Err(TimeoutError::InvalidDigits(" 1S".into())));
        assert_eq!(p("1S "), Err(TimeoutError::InvalidUnit("1S ".into())));
        assert_eq!(p("1 S"), Err(TimeoutError::InvalidDigits("1 S".into())));
        assert_eq!(p("1.5S"), Err(TimeoutError::InvalidDigits("1.5S".into())));
        assert_eq!(p("1s"), Err(TimeoutError::InvalidUnit("1s".into())));
        assert_eq!(p("1h"), Err(TimeoutError::InvalidUnit("1h".into())));
        assert_eq!(p("1SS"), Err(TimeoutError::InvalidDigits("1SS".into())));
        assert!(matches!(
            parse_timeout(b"1\xff"),
            Err(TimeoutError::InvalidUnit(_))
        ));
        assert!(matches!(
            parse_timeout(b"\xff1S"),
            Err(TimeoutError::InvalidDigits(_))
        ));
        // The unit byte is compared as a byte, not as a Latin-1 char.
        assert!(parse_timeout(b"1\xe9").is_err());
    }

    #[test]
    fn error_messages_quote_value() {
        assert_eq!(
            p("12x").unwrap_err().to_string(),
            "invalid grpc-timeout \"12x\": unit must be one of H M S m u n"
        );
        assert!(p("-1S").unwrap_err().to_string().contains("\"-1S\""));
        assert!(p("").unwrap_err().to_string().contains("grpc-timeout"));
        let long = "1".repeat(1000) + "S";
        let msg = p(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn encode_finest_unit() {
        assert_eq!(encode_timeout(Duration::ZERO), "0n");
        assert_eq!(encode_timeout(Duration::from_nanos(1)), "1n");
        assert_eq!(
            encode_timeout(Duration::from_nanos(99_999_999)),
            "99999999n"
        );
        assert_eq!(encode_timeout(Duration::from_millis(100)), "100000u");
        assert_eq!(encode_timeout(Duration::from_secs(1)), "1000000u");
        assert_eq!(encode_timeout(Duration::from_secs(99)), "99000000u");
        assert_eq!(encode_timeout(Duration::from_secs(100)), "100000m");
        assert_eq!(encode_timeout(Duration::from_secs(100_000)), "100000S");
        assert_eq!(encode_timeout(Duration::from_secs(99_999_999)), "99999999S");
        assert_eq!(encode_timeout(Duration::from_secs(100_000_020)), "1666667M");
        assert_eq!(
            encode_timeout(Duration::from_secs(6_000_000_000)),
            "1666667H"
        );
    }

    #[test]
    fn encode_rounds_up() {
        // 100_000_001 ns does not fit in 8 digits of n: 100001u (rounded up).
        assert_eq!(encode_timeout(Duration::from_nanos(100_000_001)), "100001u");
        // 1 ns over a whole number of seconds that needs seconds.
        assert_eq!(encode_timeout(Duration::new(100_000, 1)), "100001S");
        assert_eq!(encode_timeout(Duration::new(1_000_000, 1)), "1000001S");
        // Rounding up can push a value past 8 digits, moving to the next unit.
        assert_eq!(encode_timeout(Duration::new(99, 999_999_500)), "100000m");
        assert_eq!(
            encode_timeout(Duration::new(99_999, 999_999_999)),
            "100000S"
        );
        assert_eq!(encode_timeout(Duration::new(99_999_999, 1)), "1666667M");
        // Hours round up too.
        assert_eq!(
            encode_timeout(Duration::from_secs(6_000_000_001)),
            "1666667H"
        );
    }

    #[test]
    fn encode_clamps() {
        let max = Duration::from_secs(99_999_999 * 3600);
        assert_eq!(encode_timeout(max), "99999999H");
        assert_eq!(encode_timeout(max + Duration::from_nanos(1)), "99999999H");
        assert_eq!(encode_timeout(Duration::MAX), "99999999H");
        assert_eq!(encode_timeout(max - Duration::from_secs(3600)), "99999998H");
    }

    #[test]
    fn round_trip() {
        let mut samples = vec![
            Duration::ZERO,
            Duration::MAX,
            Duration::from_secs(99_999_999 * 3600),
        ];
        // Deterministic spread over many magnitudes, with and without
        // sub-unit remainders.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for shift in 0..64 {
            for _ in 0..20 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let nanos = x >> shift;
                samples.push(Duration::from_nanos(nanos));
                samples.push(Duration::new(nanos >> 20, 0));
                samples.push(Duration::from_millis(nanos >> 30));
            }
        }
        for d in samples {
            let s = encode_timeout(d);
            let digits = s.len() - 1;
            assert!((1..=8).contains(&digits), "{d:?} -> {s}");
            let back = parse_timeout(s.as_bytes()).unwrap();
            let clamp = Duration::from_secs(99_999_999 * 3600);
            if d <= clamp {
                assert!(back >= d, "{d:?} -> {s} -> {back:?}");
                // Rounding up adds less than one unit of the chosen unit.
                let unit = UNITS
                    .iter()
                    .find(|(c, _)| s.ends_with(*c))
                    .map(|&(_, n)| n)
                    .unwrap();
                assert!(back.as_nanos() - d.as_nanos() < unit, "{d:?} -> {s}");
                if d.as_nanos() % unit == 0 {
                    assert_eq!(back, d, "{d:?} -> {s}");
                }
            } else {
                assert_eq!(back, clamp);
            }
        }
    }

    #[test]
    fn exact_values_round_trip_exactly() {
        for d in [
            Duration::from_nanos(12_345),
            Duration::from_micros(12_345_678),
            Duration::from_millis(86_400_000),
            Duration::from_secs(3600),
            Duration::from_secs(60 * 99_999_999),
        ] {
            assert_eq!(parse_timeout(encode_timeout(d).as_bytes()), Ok(d));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = parse_timeout(&[a, b]);
                let _ = parse_timeout(&[b'9', a, b]);
            }
        }
        let _ = parse_timeout(&[b'9'; 10_000]);
    }
}
