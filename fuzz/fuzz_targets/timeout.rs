//! `grpc-timeout` parsing and encoding (`grpc_blocking::internal::timeout`).
//!
//! Invariants: `parse_timeout` never panics; it accepts exactly 1 to 8 ASCII
//! digits followed by one of `H M S m u n` and returns that many units; for a
//! value it accepts, `encode_timeout` of the result parses back to at least
//! the same duration (and less than one unit of the chosen unit more); and
//! `encode_timeout` of an arbitrary duration always yields a valid value that
//! is never shorter (up to the clamp at 99999999 hours).
#![no_main]

use std::time::Duration;

use grpc_blocking::internal::timeout::{encode_timeout, parse_timeout};
use libfuzzer_sys::fuzz_target;

const UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];
const CLAMP: Duration = Duration::from_secs(99_999_999 * 3600);

fn unit_nanos(unit: u8) -> Option<u128> {
    UNITS.iter().find(|(c, _)| *c == unit).map(|&(_, n)| n)
}

/// The grammar, written independently: the duration `value` denotes, if any.
fn expected(value: &[u8]) -> Option<u128> {
    let (&unit, digits) = value.split_last()?;
    let unit = unit_nanos(unit)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u128 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(n * unit)
}

/// `encode_timeout(d)` is valid, parses back to >= d, by less than a unit.
fn check_encode(d: Duration) {
    let s = encode_timeout(d);
    let back = match parse_timeout(s.as_bytes()) {
        Ok(back) => back,
        Err(e) => panic!("encode_timeout({d:?}) = {s:?} does not parse: {e}"),
    };
    if d <= CLAMP {
        assert!(back >= d, "{d:?} -> {s} -> {back:?}: shorter");
        let unit = unit_nanos(*s.as_bytes().last().unwrap()).unwrap();
        assert!(
            back.as_nanos() - d.as_nanos() < unit,
            "{d:?} -> {s} -> {back:?}: rounded up by a unit or more"
        );
    } else {
        assert_eq!(back, CLAMP, "{d:?} -> {s}: not clamped");
    }
}

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes as a header value.
    let parsed = parse_timeout(data);
    match (expected(data), &parsed) {
        (Some(nanos), Ok(d)) => {
            assert_eq!(d.as_nanos(), nanos, "{:?}", String::from_utf8_lossy(data));
            check_encode(*d);
        }
        (None, Err(e)) => {
            // The error message is bounded whatever the input length: it
            // quotes at most 32 bytes of the value, each escaped to at most
            // 10 characters (`\u{10ffff}`) by `{:?}`.
            assert!(e.to_string().len() < 600, "error message too long");
        }
        (want, got) => panic!(
            "parse_timeout({:?}) = {got:?}, expected {want:?}",
            String::from_utf8_lossy(data)
        ),
    }
    // The same bytes as a duration, for the encoder.
    if data.len() >= 12 {
        let secs = u64::from_le_bytes(data[..8].try_into().unwrap());
        let nanos = u32::from_le_bytes(data[8..12].try_into().unwrap()) % 1_000_000_000;
        // Every magnitude: also shift the seconds down by a data-chosen amount.
        let shift = data.get(12).map_or(0, |b| u32::from(*b % 64));
        check_encode(Duration::new(secs >> shift, nanos));
    }
});
