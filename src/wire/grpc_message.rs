//! The `grpc-message` header: a status message, percent-encoded (grpc/grpc
//! `doc/PROTOCOL-HTTP2.md`, "Responses").

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};

/// What is escaped besides every byte outside ASCII: the controls
/// (0x00..=0x1F and 0x7F) and `%` itself, so that only printable ASCII
/// (0x20..=0x7E) is sent as it is.
const ESCAPED: &AsciiSet = &CONTROLS.add(b'%');

/// Percent-encodes a status message for `grpc-message`: every byte of its
/// UTF-8 form outside printable ASCII (0x20..=0x7E), and `%` itself, becomes
/// `%XX` with upper-case hex digits; so does a space that starts or ends the
/// message, because HTTP/2 (RFC 9113, section 8.2.1) forbids a field value
/// that starts or ends with whitespace (Node's HTTP/2, under grpc-js, drops
/// such a field).
pub fn encode_message(message: &str) -> String {
    let inner = message.trim_matches(' ');
    let (start, end) = (
        message.len() - message.trim_start_matches(' ').len(),
        message.len() - message.trim_end_matches(' ').len(),
    );
    if inner.is_empty() {
        return "%20".repeat(message.len());
    }
    let mut out = "%20".repeat(start);
    out.extend(utf8_percent_encode(inner, ESCAPED));
    out.push_str(&"%20".repeat(end));
    out
}

/// Decodes a `grpc-message` value. As the spec asks, a `%` not followed by
/// two hex digits is kept as it is, and bytes that are not valid UTF-8 after
/// decoding are replaced rather than failing the call.
pub fn decode_message(value: &[u8]) -> String {
    percent_decode(value).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_printable_ascii() {
        for msg in [
            "",
            "plain",
            "100% sure",
            "line\nbreak\ttab",
            "\u{00e9}t\u{00e9} \u{1F600}",
            "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n",
            "\u{7f}del",
        ] {
            let enc = encode_message(msg);
            assert!(enc.bytes().all(|b| (0x20..=0x7E).contains(&b)), "{enc}");
            assert_eq!(decode_message(enc.as_bytes()), msg);
        }
        assert_eq!(encode_message("a%b\n"), "a%25b%0A");
        // No whitespace at either end of the field value (RFC 9113, 8.2.1).
        assert_eq!(encode_message(" a b "), "%20a b%20");
        assert_eq!(encode_message("  a  "), "%20%20a%20%20");
        assert_eq!(encode_message(" "), "%20");
        assert_eq!(decode_message(b"%20a b%20"), " a b ");
        assert_eq!(encode_message("\u{e9}"), "%C3%A9");
    }

    #[test]
    fn decoding_is_lenient() {
        assert_eq!(decode_message(b"100%"), "100%");
        assert_eq!(decode_message(b"%zz%4"), "%zz%4");
        assert_eq!(decode_message(b"%FF"), "\u{FFFD}");
        assert_eq!(decode_message(b"%e2%98%BA"), "\u{263A}");
    }
}
