//! A tiny HTTP/2 peer over [`std::net::TcpStream`], for the hardening tests
//! that must send what no well-behaved client sends: malformed or partial
//! frames, header blocks of any shape and size, floods of frames, resets,
//! pings left unanswered, a client that never reads, and a "server" that
//! completes the handshake and then goes silent.
//!
//! Everything is written byte by byte: frames (RFC 9113 section 4), header
//! blocks with HPACK literals without indexing and no Huffman coding (RFC
//! 7541 section 6.2.2). What the peer sends back is read frame by frame and
//! its header blocks are decoded by a minimal HPACK decoder (static and
//! dynamic tables, Huffman strings). For well-formed gRPC requests over a
//! real HTTP/2 client, see [`crate::raw_h2`].
//!
//! Every read takes a timeout, so a peer that never answers fails the test
//! instead of hanging it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a read waits when the caller gives no deadline of its own.
pub const WAIT: Duration = Duration::from_secs(20);

/// Frame types (RFC 9113 section 6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers.
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 section 7).
pub mod code {
    /// NO_ERROR.
    pub const NO_ERROR: u32 = 0x0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// CANCEL.
    pub const CANCEL: u32 = 0x8;
    /// COMPRESSION_ERROR.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// ENHANCE_YOUR_CALM.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 9;

/// The largest frame payload a peer must accept before it says otherwise
/// (SETTINGS_MAX_FRAME_SIZE's initial value).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// Writing frames
// ---------------------------------------------------------------------------

/// One frame: 24-bit length, type, flags, 31-bit stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    put_frame(&mut out, kind, flags, stream, payload);
    out
}

/// Appends one frame to `out` (for building large batches without copies).
pub fn put_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a frame payload under 16 MiB");
    assert!(len < 1 << 24, "a frame payload under 16 MiB");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A SETTINGS frame with these values.
pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(values.len() * 6);
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &payload)
}

/// A SETTINGS acknowledgement.
pub fn settings_ack() -> Vec<u8> {
    frame(kind::SETTINGS, flag::ACK, 0, &[])
}

/// A HEADERS frame carrying `block` (or its first part, without
/// END_HEADERS, when CONTINUATION frames follow).
pub fn headers(stream: u32, block: &[u8], end_stream: bool, end_headers: bool) -> Vec<u8> {
    let mut flags = 0;
    if end_stream {
        flags |= flag::END_STREAM;
    }
    if end_headers {
        flags |= flag::END_HEADERS;
    }
    frame(kind::HEADERS, flags, stream, block)
}

/// A CONTINUATION frame.
pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    let flags = if end_headers { flag::END_HEADERS } else { 0 };
    frame(kind::CONTINUATION, flags, stream, block)
}

/// A header block split into a HEADERS frame and as many CONTINUATION
/// frames as frames of at most `max_frame` bytes need.
pub fn header_frames(stream: u32, block: &[u8], end_stream: bool, max_frame: usize) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(block.len() + FRAME_HEADER_LEN * (block.len() / max_frame + 2));
    let mut chunks = block.chunks(max_frame.max(1)).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        flags |= flag::END_HEADERS;
    }
    put_frame(&mut out, kind::HEADERS, flags, stream, first);
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        put_frame(&mut out, kind::CONTINUATION, flags, stream, chunk);
    }
    out
}

/// A DATA frame.
pub fn data(stream: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::DATA, flags, stream, payload)
}

/// A RST_STREAM frame.
pub fn rst_stream(stream: u32, error_code: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &error_code.to_be_bytes())
}

/// A PING frame (or its acknowledgement).
pub fn ping(payload: [u8; 8], ack: bool) -> Vec<u8> {
    frame(kind::PING, if ack { flag::ACK } else { 0 }, 0, &payload)
}

/// A WINDOW_UPDATE frame (stream 0: the connection's window).
pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// A GOAWAY frame.
pub fn goaway(last_stream: u32, error_code: u32, debug: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + debug.len());
    payload.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    payload.extend_from_slice(&error_code.to_be_bytes());
    payload.extend_from_slice(debug);
    frame(kind::GOAWAY, 0, 0, &payload)
}

/// A gRPC Length-Prefixed-Message: flag byte, 4-byte length, payload.
pub fn grpc_frame(compressed_flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(compressed_flag);
    let len = u32::try_from(payload.len()).expect("a message under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

// ---------------------------------------------------------------------------
// HPACK: encoding (literals only)
// ---------------------------------------------------------------------------

/// Appends an HPACK integer with an `n`-bit prefix; `first` holds the bits
/// above the prefix.
fn put_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Appends an HPACK string literal, without Huffman coding.
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// Encodes a header block: every field a "literal header field without
/// indexing, new name" (RFC 7541 section 6.2.2), no Huffman. Names are sent
/// as given (HTTP/2 wants them lower-case; a test may break that on purpose).
pub fn encode_headers(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        put_str(&mut out, name.as_bytes());
        put_str(&mut out, value.as_bytes());
    }
    out
}

/// The request headers of a gRPC call to `path`, as our own client sends
/// them (less user-agent and grpc-accept-encoding): `:method POST`,
/// `:scheme http`, `:path`, `:authority`, `content-type: application/grpc`,
/// `te: trailers`.
pub fn grpc_request_headers(path: &str) -> Vec<(String, String)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect()
}

/// [`encode_headers`] for owned pairs.
pub fn encode_owned(fields: &[(String, String)]) -> Vec<u8> {
    let borrowed: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    encode_headers(&borrowed)
}

// ---------------------------------------------------------------------------
// HPACK: decoding
// ---------------------------------------------------------------------------

/// The HPACK static table (RFC 7541 appendix A), index 1 first.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

// The Huffman code of RFC 7541 appendix B (symbols 0 to 255; EOS is never
// decoded), as the h2 crate tabulates it (src/hpack/huffman/table.rs, MIT).
const HUFFMAN_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];
const HUFFMAN_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// (code length, code) to symbol.
fn huffman_map() -> &'static HashMap<(u8, u32), u8> {
    static MAP: OnceLock<HashMap<(u8, u32), u8>> = OnceLock::new();
    MAP.get_or_init(|| {
        (0..=255u8)
            .map(|sym| {
                let i = usize::from(sym);
                ((HUFFMAN_LENGTHS[i], HUFFMAN_CODES[i]), sym)
            })
            .collect()
    })
}

/// Decodes a Huffman-coded string (bit by bit: slow, simple, enough here).
fn huffman_decode(input: &[u8]) -> Result<Vec<u8>, String> {
    let map = huffman_map();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0u8);
    for byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if let Some(&sym) = map.get(&(len, code)) {
                out.push(sym);
                code = 0;
                len = 0;
            } else if len >= 30 {
                return Err("an invalid Huffman code".into());
            }
        }
    }
    // Padding: at most 7 bits, all ones (the EOS prefix).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err("invalid Huffman padding".into());
    }
    Ok(out)
}

/// A decoded header block, fields in order.
pub type HeaderList = Vec<(String, String)>;

/// The first value of `name` in a header list.
pub fn header<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A minimal HPACK decoder: both tables, all field representations,
/// Huffman strings, table size updates.
#[derive(Debug)]
pub struct HpackDecoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max_size: usize,
}

impl Default for HpackDecoder {
    fn default() -> Self {
        HpackDecoder {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096,
        }
    }
}

impl HpackDecoder {
    fn get(&self, index: usize) -> Result<(String, String), String> {
        let entry = match index {
            0 => return Err("header index 0".into()),
            1..=61 => {
                let (n, v) = STATIC_TABLE[index - 1];
                (n.to_owned(), v.to_owned())
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or_else(|| format!("header index {index} beyond the tables"))?,
        };
        Ok(entry)
    }

    fn insert(&mut self, name: String, value: String) {
        self.size += name.len() + value.len() + 32;
        self.table.push_front((name, value));
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => break,
            }
        }
    }

    /// Decodes one complete header block.
    pub fn decode(&mut self, mut block: &[u8]) -> Result<HeaderList, String> {
        let mut out = Vec::new();
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                let index = read_int(&mut block, 7)?;
                out.push(self.get(index)?);
            } else if first & 0xc0 == 0x40 {
                let index = read_int(&mut block, 6)?;
                let name = self.name(index, &mut block)?;
                let value = read_str(&mut block)?;
                self.insert(name.clone(), value.clone());
                out.push((name, value));
            } else if first & 0xe0 == 0x20 {
                self.max_size = read_int(&mut block, 5)?;
                self.evict();
            } else {
                // Without indexing (0000) or never indexed (0001).
                let index = read_int(&mut block, 4)?;
                let name = self.name(index, &mut block)?;
                let value = read_str(&mut block)?;
                out.push((name, value));
            }
        }
        Ok(out)
    }

    fn name(&self, index: usize, block: &mut &[u8]) -> Result<String, String> {
        if index == 0 {
            read_str(block)
        } else {
            Ok(self.get(index)?.0)
        }
    }
}

fn read_int(block: &mut &[u8], n: u32) -> Result<usize, String> {
    let max = (1usize << n) - 1;
    let (&first, rest) = block.split_first().ok_or("a truncated integer")?;
    *block = rest;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let (&b, rest) = block.split_first().ok_or("a truncated integer")?;
        *block = rest;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        if shift > 28 {
            return Err("an integer too large".into());
        }
    }
}

fn read_str(block: &mut &[u8]) -> Result<String, String> {
    let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
    let len = read_int(block, 7)?;
    if block.len() < len {
        return Err("a truncated string".into());
    }
    let (raw, rest) = block.split_at(len);
    *block = rest;
    let bytes = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    String::from_utf8(bytes).map_err(|e| format!("a header that is not UTF-8: {e}"))
}

// ---------------------------------------------------------------------------
// Reading frames
// ---------------------------------------------------------------------------

/// One frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame type (see [`kind`]).
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream id.
    pub stream: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The values of a SETTINGS frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = &self.payload[at..at + 4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// What the peer did, one frame (or one whole header block) at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, decoded header block (HEADERS plus any CONTINUATION).
    Headers {
        /// The stream.
        stream: u32,
        /// END_STREAM was set.
        end_stream: bool,
        /// The fields.
        fields: HeaderList,
    },
    /// A DATA frame.
    Data {
        /// The stream.
        stream: u32,
        /// Its payload (padding removed).
        data: Vec<u8>,
        /// END_STREAM was set.
        end_stream: bool,
    },
    /// RST_STREAM.
    Reset {
        /// The stream.
        stream: u32,
        /// The error code.
        code: u32,
    },
    /// GOAWAY.
    GoAway {
        /// The last stream the peer may process.
        last_stream: u32,
        /// The error code.
        code: u32,
        /// The debug data, as text.
        debug: String,
    },
    /// SETTINGS (acknowledged automatically unless it is an ACK itself).
    Settings {
        /// This is an acknowledgement.
        ack: bool,
        /// The values.
        values: Vec<(u16, u32)>,
    },
    /// PING (answered automatically when [`RawConn::answer_pings`] is on).
    Ping {
        /// This is an acknowledgement.
        ack: bool,
        /// The opaque data.
        payload: [u8; 8],
    },
    /// WINDOW_UPDATE.
    WindowUpdate {
        /// The stream (0: the connection).
        stream: u32,
        /// The increment.
        increment: u32,
    },
    /// Any other frame.
    Other(Frame),
    /// The peer closed the connection (or reset it).
    Closed,
}

/// The answer on one stream.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    /// The header blocks of the stream, in order: response headers, then
    /// trailers (one block alone for a Trailers-Only response).
    pub blocks: Vec<HeaderList>,
    /// The DATA of the stream.
    pub data: Vec<u8>,
    /// The RST_STREAM code, if the stream was reset.
    pub reset: Option<u32>,
    /// A GOAWAY seen meanwhile: (last stream, code, debug data).
    pub goaway: Option<(u32, u32, String)>,
    /// The connection closed before the stream ended.
    pub closed: bool,
}

impl Reply {
    /// The HTTP `:status` of the response headers.
    pub fn http_status(&self) -> Option<u16> {
        self.blocks
            .first()
            .and_then(|b| header(b, ":status"))
            .and_then(|s| s.parse().ok())
    }

    /// A field of the response headers.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.blocks.first().and_then(|b| header(b, name))
    }

    /// `grpc-status` from the last header block (trailers, or the headers
    /// of a Trailers-Only response).
    pub fn grpc_status(&self) -> Option<i32> {
        self.blocks
            .last()
            .and_then(|b| header(b, "grpc-status"))
            .and_then(|s| s.parse().ok())
    }

    /// `grpc-message`, percent-decoded (empty when absent).
    pub fn grpc_message(&self) -> String {
        self.blocks
            .last()
            .and_then(|b| header(b, "grpc-message"))
            .map(|m| grpc_blocking::internal::grpc_message::decode_message(m.as_bytes()))
            .unwrap_or_default()
    }

    /// The gRPC messages of the body: (compressed flag, payload). Panics on
    /// a malformed body.
    pub fn messages(&self) -> Vec<(u8, Vec<u8>)> {
        let mut body = &self.data[..];
        let mut out = Vec::new();
        while !body.is_empty() {
            assert!(body.len() >= 5, "a truncated message prefix: {body:?}");
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            assert!(body.len() >= 5 + len, "a truncated message");
            out.push((body[0], body[5..5 + len].to_vec()));
            body = &body[5 + len..];
        }
        out
    }
}

/// One raw HTTP/2 connection, either side.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    hpack: HpackDecoder,
    /// A header block waiting for its CONTINUATION frames: stream, flags, block.
    partial: Option<(u32, u8, Vec<u8>)>,
    /// Answer the peer's PINGs (default true).
    pub answer_pings: bool,
    /// Give DATA's flow-control credit back at once (default true).
    pub auto_window_update: bool,
    /// The SETTINGS the peer sent last (non-ACK).
    pub peer_settings: Vec<(u16, u32)>,
    /// Events read while looking for something else, oldest first.
    pending: VecDeque<Event>,
}

impl RawConn {
    /// Connects over TCP; nothing is sent.
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the server");
        RawConn::from_stream(stream)
    }

    /// Wraps an accepted or connected socket.
    pub fn from_stream(stream: TcpStream) -> RawConn {
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
            hpack: HpackDecoder::default(),
            partial: None,
            answer_pings: true,
            auto_window_update: true,
            peer_settings: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Connects and completes the client side of the handshake: preface,
    /// our SETTINGS (`values`), the server's SETTINGS (kept in
    /// [`RawConn::peer_settings`]) acknowledged.
    pub fn handshake_with(addr: SocketAddr, values: &[(u16, u32)]) -> RawConn {
        let mut conn = RawConn::connect(addr);
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(values));
        conn.write(&hello).expect("send the preface");
        let deadline = Instant::now() + WAIT;
        loop {
            match conn.next_event_until(deadline) {
                Some(Event::Settings { ack: false, .. }) => return conn,
                Some(Event::Closed) => panic!("the server closed the connection in the handshake"),
                Some(other) => conn.pending.push_back(other),
                None => panic!("no SETTINGS from the server within {WAIT:?}"),
            }
        }
    }

    /// [`RawConn::handshake_with`] with no settings of our own.
    pub fn handshake(addr: SocketAddr) -> RawConn {
        RawConn::handshake_with(addr, &[])
    }

    /// The server side of a handshake on an accepted socket: reads the
    /// client's preface, sends our (empty) SETTINGS.
    pub fn accept(stream: TcpStream) -> RawConn {
        let mut conn = RawConn::from_stream(stream);
        let mut preface = [0u8; 24];
        conn.stream
            .set_read_timeout(Some(WAIT))
            .expect("a read timeout");
        conn.stream
            .read_exact(&mut preface)
            .expect("the client preface");
        assert_eq!(&preface[..], PREFACE, "the client preface");
        conn.write(&settings(&[])).expect("send SETTINGS");
        conn
    }

    /// A peer setting, as last advertised.
    pub fn peer_setting(&self, id: u16) -> Option<u32> {
        self.peer_settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// Writes raw bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// A clone of the socket (for a writer or reader on another thread).
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream.try_clone().expect("clone the socket")
    }

    /// Closes both directions now.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Sends a complete header block on `stream` (HEADERS with END_HEADERS).
    pub fn send_headers(&mut self, stream: u32, fields: &[(String, String)], end_stream: bool) {
        let block = encode_owned(fields);
        let frames = header_frames(stream, &block, end_stream, DEFAULT_MAX_FRAME);
        self.write(&frames).expect("send HEADERS");
    }

    /// Sends a gRPC request: `fields` as the headers, then `body` (already
    /// framed, or deliberately not) in one DATA frame that ends the stream.
    pub fn send_request(&mut self, stream: u32, fields: &[(String, String)], body: &[u8]) {
        let mut out = header_frames(stream, &encode_owned(fields), false, DEFAULT_MAX_FRAME);
        out.extend_from_slice(&data(stream, body, true));
        self.write(&out).expect("send the request");
    }

    /// Reads one frame, waiting until `deadline`. `Ok(None)`: the peer
    /// closed the connection.
    pub fn read_frame_until(&mut self, deadline: Instant) -> io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= FRAME_HEADER_LEN {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= FRAME_HEADER_LEN + len {
                    let rest = self.buf.split_off(FRAME_HEADER_LEN + len);
                    let raw = std::mem::replace(&mut self.buf, rest);
                    let stream = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff;
                    return Ok(Some(Frame {
                        kind: raw[3],
                        flags: raw[4],
                        stream,
                        payload: raw[FRAME_HEADER_LEN..].to_vec(),
                    }));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame in time"));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame in time"))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads raw bytes until the peer closes (or `deadline`); returns them
    /// and whether the connection closed.
    pub fn read_to_close(&mut self, deadline: Instant) -> (Vec<u8>, bool) {
        let mut out = std::mem::take(&mut self.buf);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (out, false);
            }
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return (out, true);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return (out, true),
            }
        }
    }

    /// The next event, waiting until `deadline` (`None`: nothing by then).
    /// SETTINGS are acknowledged, PINGs answered (if [`RawConn::answer_pings`])
    /// and DATA's credit returned (if [`RawConn::auto_window_update`]) on
    /// the way.
    pub fn next_event_until(&mut self, deadline: Instant) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        loop {
            let frame = match self.read_frame_until(deadline) {
                Ok(Some(f)) => f,
                Ok(None) => return Some(Event::Closed),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
                Err(_) => return Some(Event::Closed),
            };
            if let Some(event) = self.interpret(frame) {
                return Some(event);
            }
        }
    }

    /// [`RawConn::next_event_until`] with a timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        self.next_event_until(Instant::now() + timeout)
    }

    fn interpret(&mut self, frame: Frame) -> Option<Event> {
        if let Some((stream, flags, mut block)) = self.partial.take() {
            assert_eq!(
                (frame.kind, frame.stream),
                (kind::CONTINUATION, stream),
                "a header block interrupted by another frame"
            );
            block.extend_from_slice(&frame.payload);
            if !frame.has(flag::END_HEADERS) {
                self.partial = Some((stream, flags, block));
                return None;
            }
            return Some(self.header_block(stream, flags, &block));
        }
        match frame.kind {
            kind::DATA => {
                let data = strip_padding(&frame, &frame.payload).to_vec();
                if self.auto_window_update && !frame.payload.is_empty() {
                    let n = u32::try_from(frame.payload.len()).unwrap_or(u32::MAX);
                    let mut out = window_update(0, n);
                    if !frame.has(flag::END_STREAM) {
                        out.extend_from_slice(&window_update(frame.stream, n));
                    }
                    let _ = self.write(&out);
                }
                Some(Event::Data {
                    stream: frame.stream,
                    data,
                    end_stream: frame.has(flag::END_STREAM),
                })
            }
            kind::HEADERS => {
                let mut block = strip_padding(&frame, &frame.payload);
                if frame.has(flag::PRIORITY) {
                    block = &block[5.min(block.len())..];
                }
                let block = block.to_vec();
                if !frame.has(flag::END_HEADERS) {
                    self.partial = Some((frame.stream, frame.flags, block));
                    return None;
                }
                Some(self.header_block(frame.stream, frame.flags, &block))
            }
            kind::RST_STREAM if frame.payload.len() == 4 => Some(Event::Reset {
                stream: frame.stream,
                code: frame.u32_at(0),
            }),
            kind::SETTINGS => {
                let ack = frame.has(flag::ACK);
                let values = frame.settings();
                if !ack {
                    self.peer_settings = values.clone();
                    let _ = self.write(&settings_ack());
                }
                Some(Event::Settings { ack, values })
            }
            kind::PING if frame.payload.len() == 8 => {
                let mut payload = [0u8; 8];
                payload.copy_from_slice(&frame.payload);
                let ack = frame.has(flag::ACK);
                if !ack && self.answer_pings {
                    let _ = self.write(&ping(payload, true));
                }
                Some(Event::Ping { ack, payload })
            }
            kind::GOAWAY if frame.payload.len() >= 8 => Some(Event::GoAway {
                last_stream: frame.u32_at(0) & 0x7fff_ffff,
                code: frame.u32_at(4),
                debug: String::from_utf8_lossy(&frame.payload[8..]).into_owned(),
            }),
            kind::WINDOW_UPDATE if frame.payload.len() == 4 => Some(Event::WindowUpdate {
                stream: frame.stream,
                increment: frame.u32_at(0) & 0x7fff_ffff,
            }),
            _ => Some(Event::Other(frame)),
        }
    }

    fn header_block(&mut self, stream: u32, flags: u8, block: &[u8]) -> Event {
        let fields = self
            .hpack
            .decode(block)
            .unwrap_or_else(|e| panic!("cannot decode the peer's header block: {e}"));
        Event::Headers {
            stream,
            end_stream: flags & flag::END_STREAM != 0,
            fields,
        }
    }

    /// Collects the answer on `stream` until it ends (END_STREAM, a reset),
    /// the connection closes, a GOAWAY says the stream was never processed,
    /// or `timeout` passes (then it panics). Events of other streams, and
    /// GOAWAY and the end of the connection, are kept for later reads.
    pub fn reply_within(&mut self, stream: u32, timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        let mut reply = Reply::default();
        let mut others = VecDeque::new();
        loop {
            let Some(event) = self.next_event_until(deadline) else {
                panic!("no end of stream {stream} within {timeout:?}; so far: {reply:?}");
            };
            let done = match &event {
                Event::Headers {
                    stream: s,
                    end_stream,
                    fields,
                } if *s == stream => {
                    reply.blocks.push(fields.clone());
                    *end_stream
                }
                Event::Data {
                    stream: s,
                    data,
                    end_stream,
                } if *s == stream => {
                    reply.data.extend_from_slice(data);
                    *end_stream
                }
                Event::Reset { stream: s, code } if *s == stream => {
                    reply.reset = Some(*code);
                    true
                }
                Event::Headers { .. } | Event::Data { .. } | Event::Reset { .. } => {
                    others.push_back(event);
                    false
                }
                Event::GoAway {
                    last_stream,
                    code,
                    debug,
                } => {
                    reply.goaway = Some((*last_stream, *code, debug.clone()));
                    let done = *last_stream < stream;
                    others.push_back(event);
                    done
                }
                Event::Closed => {
                    reply.closed = true;
                    others.push_back(event);
                    true
                }
                _ => false,
            };
            if done {
                // What was set aside goes first, before anything still pending.
                others.extend(self.pending.drain(..));
                self.pending = others;
                return reply;
            }
        }
    }

    /// [`RawConn::reply_within`] with the default wait.
    pub fn reply(&mut self, stream: u32) -> Reply {
        self.reply_within(stream, WAIT)
    }

    /// Reads events until the peer closes the connection; returns them, or
    /// `None` if it is still open after `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> Option<Vec<Event>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match self.next_event_until(deadline) {
                Some(Event::Closed) => return Some(seen),
                Some(e) => seen.push(e),
                None => return None,
            }
        }
    }

    /// Reads events for `duration`; returns them and whether the peer
    /// closed the connection meanwhile.
    pub fn events_for(&mut self, duration: Duration) -> (Vec<Event>, bool) {
        let deadline = Instant::now() + duration;
        let mut seen = Vec::new();
        loop {
            match self.next_event_until(deadline) {
                Some(Event::Closed) => return (seen, true),
                Some(e) => seen.push(e),
                None => return (seen, false),
            }
        }
    }
}

/// The payload of a DATA or HEADERS frame without its padding.
fn strip_padding<'a>(frame: &Frame, payload: &'a [u8]) -> &'a [u8] {
    if !frame.has(flag::PADDED) || payload.is_empty() {
        return payload;
    }
    let pad = usize::from(payload[0]);
    let end = payload.len().saturating_sub(pad).max(1);
    &payload[1..end]
}

/// A fake HTTP/2 server on a free loopback port: accepts up to
/// `connections` connections, completes the handshake of each
/// ([`RawConn::accept`]) and runs `serve(connection number, conn)` on a
/// thread of its own. Returns the address to dial and the threads.
pub fn fake_server<T, F>(
    connections: usize,
    serve: F,
) -> (SocketAddr, std::thread::JoinHandle<Vec<T>>)
where
    T: Send + 'static,
    F: Fn(usize, RawConn) -> T + Send + Sync + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    let serve = std::sync::Arc::new(serve);
    let thread = std::thread::spawn(move || {
        let mut served = Vec::new();
        for n in 0..connections {
            let Ok((socket, _)) = listener.accept() else {
                break;
            };
            let serve = serve.clone();
            served.push(std::thread::spawn(move || {
                serve(n, RawConn::accept(socket))
            }));
        }
        served
            .into_iter()
            .map(|t| t.join().expect("a fake server connection panicked"))
            .collect()
    });
    (addr, thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip() {
        for (n, value) in [(5, 10usize), (5, 1337), (7, 127), (7, 0), (4, 100_000)] {
            let mut out = Vec::new();
            put_int(&mut out, 0, n, value);
            let mut slice = &out[..];
            assert_eq!(read_int(&mut slice, n).unwrap(), value);
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn rfc7541_c4_huffman_requests_decode() {
        // RFC 7541 C.4.1 to C.4.3: three requests with Huffman coding that
        // share the dynamic table.
        let blocks: [&[u8]; 3] = [
            &[
                0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
                0x90, 0xf4, 0xff,
            ],
            &[
                0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
            ],
            &[
                0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f,
                0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
            ],
        ];
        let mut d = HpackDecoder::default();
        let first = d.decode(blocks[0]).unwrap();
        assert_eq!(header(&first, ":authority"), Some("www.example.com"));
        let second = d.decode(blocks[1]).unwrap();
        assert_eq!(header(&second, "cache-control"), Some("no-cache"));
        assert_eq!(header(&second, ":authority"), Some("www.example.com"));
        let third = d.decode(blocks[2]).unwrap();
        assert_eq!(header(&third, ":path"), Some("/index.html"));
        assert_eq!(header(&third, "custom-key"), Some("custom-value"));
    }

    #[test]
    fn our_literals_decode() {
        let fields = [
            ("content-type", "application/grpc"),
            ("x-a", &*"v".repeat(300)),
        ];
        let block = encode_headers(&fields);
        let decoded = HpackDecoder::default().decode(&block).unwrap();
        assert_eq!(header(&decoded, "x-a").map(str::len), Some(300));
        assert_eq!(header(&decoded, "content-type"), Some("application/grpc"));
    }

    #[test]
    fn header_blocks_split_into_continuations() {
        let block = vec![0u8; 40_000];
        let out = header_frames(1, &block, false, DEFAULT_MAX_FRAME);
        // 16384 + 16384 + 7232, three frame headers.
        assert_eq!(out.len(), 40_000 + 3 * FRAME_HEADER_LEN);
        assert_eq!(out[3], kind::HEADERS);
        assert_eq!(out[4], 0);
        let second = FRAME_HEADER_LEN + DEFAULT_MAX_FRAME;
        assert_eq!(out[second + 3], kind::CONTINUATION);
        let third = 2 * second;
        assert_eq!(out[third + 3], kind::CONTINUATION);
        assert_eq!(out[third + 4], flag::END_HEADERS);
    }
}
