//! The bytes a server writes to a connection it will not serve (over its
//! connection limit) without starting HTTP/2 for it: its SETTINGS (the
//! server preface, RFC 9113 section 3.4), then a GOAWAY (section 6.8) whose
//! debug data says why. Clients report that reason to their callers.

/// HTTP/2 frame type SETTINGS.
const SETTINGS: u8 = 0x4;
/// HTTP/2 frame type GOAWAY.
const GOAWAY: u8 = 0x7;
/// HTTP/2 error code REFUSED_STREAM.
const REFUSED_STREAM: u32 = 0x7;

/// An empty SETTINGS frame, then GOAWAY (last stream 0, REFUSED_STREAM)
/// carrying `reason` as its debug data.
pub(crate) fn refusal(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + 9 + 8 + reason.len());
    frame_header(&mut out, 0, SETTINGS);
    frame_header(&mut out, 8 + reason.len(), GOAWAY);
    out.extend_from_slice(&0u32.to_be_bytes()); // last stream id
    out.extend_from_slice(&REFUSED_STREAM.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

/// A frame header: 24-bit length, type, no flags, stream 0.
fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).min(0x00FF_FFFF);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(0); // flags
    out.extend_from_slice(&0u32.to_be_bytes()); // stream 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_then_goaway_with_the_reason() {
        let bytes = refusal("full");
        // SETTINGS: length 0, type 4, flags 0, stream 0.
        assert_eq!(&bytes[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        // GOAWAY: length 8 + 4, type 7, flags 0, stream 0.
        assert_eq!(&bytes[9..18], &[0, 0, 12, 7, 0, 0, 0, 0, 0]);
        // Last stream 0, REFUSED_STREAM, then the reason.
        assert_eq!(&bytes[18..26], &[0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(&bytes[26..], b"full");
    }
}
