//! Percent-encoding of the `grpc-message` trailer
//! (`grpc_blocking::internal::grpc_message`).
//!
//! Invariants: `decode_message` never panics on arbitrary bytes and agrees
//! with a model decoder (`%XX` with two hex digits of either case becomes the
//! byte, anything else stays, invalid UTF-8 is replaced); `encode_message`
//! emits only printable ASCII without a bare `%` (a valid header value);
//! `decode(encode(s)) == s` for every string.
#![no_main]

use grpc_blocking::internal::grpc_message::{decode_message, encode_message};
use libfuzzer_sys::fuzz_target;

fn model_decode(v: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_string(s: &str) {
    let enc = encode_message(s);
    for (i, b) in enc.bytes().enumerate() {
        assert!((0x20..=0x7e).contains(&b), "{s:?} -> {enc:?}: byte {b:#x}");
        if b == b'%' {
            let rest = &enc.as_bytes()[i + 1..];
            assert!(
                rest.len() >= 2
                    && rest[..2]
                        .iter()
                        .all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')),
                "{s:?} -> {enc:?}: bare %"
            );
        }
    }
    assert!(
        http::HeaderValue::from_str(&enc).is_ok(),
        "{enc:?} is no header value"
    );
    assert_eq!(
        decode_message(enc.as_bytes()),
        s,
        "round trip of {s:?} via {enc:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let decoded = decode_message(data);
    assert_eq!(decoded, model_decode(data), "decode {data:?}");
    // Whatever came out round-trips.
    check_string(&decoded);
    if let Ok(s) = std::str::from_utf8(data) {
        check_string(s);
    }
});
