//! gRPC length-prefixed message framing.
//!
//! Every gRPC message travels in the HTTP/2 DATA frames of a stream as a
//! *Length-Prefixed-Message* (grpc/grpc `doc/PROTOCOL-HTTP2.md`):
//!
//! ```text
//! Length-Prefixed-Message → Compressed-Flag Message-Length Message
//! Compressed-Flag         → 0 / 1      ; one byte, 1 = compressed with grpc-encoding
//! Message-Length          → {length of Message} ; 4 bytes, big-endian unsigned
//! Message                 → *{binary octet}
//! ```
//!
//! Any compressed-flag value other than 0 or 1 is reserved and treated as a
//! protocol error. HTTP/2 is free to split or coalesce DATA frames anywhere, so
//! [`FrameDecoder`] accepts arbitrary chunks and reassembles messages,
//! copying only when a message straddles chunks. A message whose declared
//! length exceeds the configured limit is rejected as soon as its 5-byte header
//! is seen, before any of its payload is buffered.
//!
//! [`encode_frame`] produces the same format. Whether a payload is compressed
//! (and with what) is decided by the caller; see `crate::wire::compression`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::chunks::Chunks;

/// Size in bytes of the prefix before every message: one flag byte plus a
/// 4-byte big-endian length.
pub const HEADER_LEN: usize = 5;

/// Largest payload the 4-byte length prefix can describe (`u32::MAX` bytes).
pub const MAX_ENCODABLE_LEN: usize = max_encodable_len();

/// `u32::MAX` as a usize, saturating on targets where usize is narrower.
const fn max_encodable_len() -> usize {
    if usize::BITS >= u32::BITS {
        // Lossless: usize is at least 32 bits wide here.
        u32::MAX as usize
    } else {
        usize::MAX
    }
}

/// Compressed-flag value for a payload sent as-is.
const FLAG_UNCOMPRESSED: u8 = 0;
/// Compressed-flag value for a payload compressed with the stream's `grpc-encoding`.
const FLAG_COMPRESSED: u8 = 1;

/// Appends one framed message (flag byte, big-endian length, payload) to `out`.
///
/// `compressed` sets the compressed-flag; the payload must already be
/// compressed by the caller when it is `true`.
///
/// # Errors
///
/// [`FrameError::TooLarge`] if `payload` is longer than [`MAX_ENCODABLE_LEN`]
/// (the 4-byte length prefix cannot describe it); `out` is left unchanged then.
pub fn encode_frame(
    payload: &[u8],
    compressed: bool,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        size: payload.len(),
        limit: MAX_ENCODABLE_LEN,
    })?;
    out.reserve(HEADER_LEN.saturating_add(payload.len()));
    out.put_u8(if compressed {
        FLAG_COMPRESSED
    } else {
        FLAG_UNCOMPRESSED
    });
    out.put_u32(len);
    out.extend_from_slice(payload);
    Ok(())
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Whether the compressed-flag was 1: the payload must be decompressed with
    /// the stream's `grpc-encoding` before it is decoded.
    pub compressed: bool,
    /// The message bytes exactly as they were on the wire (possibly compressed).
    pub payload: Bytes,
}

/// Why a stream of length-prefixed messages could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A message is longer than allowed: when decoding, its declared length is
    /// over the decoder's maximum; when encoding, the payload is over
    /// [`MAX_ENCODABLE_LEN`].
    #[error(
        "gRPC message larger than max ({size} vs. {limit} bytes); \
         raise the maximum message size if such messages are expected"
    )]
    TooLarge {
        /// The length the message declared (or had, when encoding).
        size: usize,
        /// The maximum that was in force.
        limit: usize,
    },
    /// The compressed-flag byte was neither 0 nor 1.
    #[error(
        "invalid gRPC message compressed-flag {0:#04x}: must be 0x00 (uncompressed) or \
         0x01 (compressed); the peer is not speaking gRPC length-prefixed framing"
    )]
    ReservedFlag(u8),
    /// The stream ended inside a message (in its header or its payload).
    #[error(
        "stream ended in the middle of a gRPC message: expected {expected} bytes \
         (5-byte prefix included), received {received}"
    )]
    Truncated {
        /// Bytes the unfinished message needs, its 5-byte prefix included
        /// (just the prefix when the prefix itself is incomplete).
        expected: usize,
        /// Bytes of it that arrived before the end of the stream.
        received: usize,
    },
}

/// A parsed message prefix.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// The compressed-flag was 1.
    compressed: bool,
    /// Declared payload length.
    len: usize,
}

/// Parses a 5-byte prefix, checking the flag and the length limit.
fn parse_header(raw: [u8; HEADER_LEN], limit: usize) -> Result<Header, FrameError> {
    let [flag, l0, l1, l2, l3] = raw;
    let compressed = parse_flag(flag)?;
    let len32 = u32::from_be_bytes([l0, l1, l2, l3]);
    let len = usize::try_from(len32).unwrap_or(usize::MAX);
    check_len(len, limit)?;
    Ok(Header { compressed, len })
}

/// Maps the compressed-flag byte to a bool, rejecting reserved values.
fn parse_flag(flag: u8) -> Result<bool, FrameError> {
    match flag {
        FLAG_UNCOMPRESSED => Ok(false),
        FLAG_COMPRESSED => Ok(true),
        other => Err(FrameError::ReservedFlag(other)),
    }
}

/// Rejects a declared length over `limit`.
fn check_len(len: usize, limit: usize) -> Result<(), FrameError> {
    if len > limit {
        Err(FrameError::TooLarge { size: len, limit })
    } else {
        Ok(())
    }
}

/// Where [`FrameDecoder::next_frame_in`] copies a message that spans chunks.
pub(crate) trait Assembly {
    /// A buffer to copy a message of `len` bytes into, which gives it up by
    /// [`BytesMut::split`] (the buffer then keeps the rest of its memory, and
    /// can take the message's back once nothing refers to it); `None` for
    /// memory of the message's own.
    fn buffer_for(&mut self, len: usize) -> Option<&mut BytesMut>;
}

/// Every message in memory of its own.
struct OwnMemory;

impl Assembly for OwnMemory {
    fn buffer_for(&mut self, _len: usize) -> Option<&mut BytesMut> {
        None
    }
}

/// Incremental decoder of length-prefixed messages, fed with arbitrary chunks
/// (HTTP/2 DATA frames split and merge messages anywhere).
///
/// Chunks are kept as a queue of [`Bytes`]; a message that lies entirely in
/// one chunk is returned as a zero-copy slice of it, and only a message that
/// spans chunks is copied into a fresh buffer (inside the crate, into memory
/// the caller may keep for it: `next_frame_in`). After an error the decoder
/// stays failed: [`next_frame`](Self::next_frame) and [`finish`](Self::finish) keep
/// returning that error.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Queued, not yet consumed chunks; never holds an empty chunk.
    chunks: Chunks,
    /// Total length of `chunks`.
    buffered: usize,
    /// Prefix of the message being assembled, once it has been consumed.
    pending: Option<Header>,
    /// Largest accepted message payload, in bytes.
    max_message_size: usize,
    /// The first error hit; sticky.
    error: Option<FrameError>,
}

impl FrameDecoder {
    /// Creates a decoder that rejects messages whose payload is longer than
    /// `max_message_size` bytes.
    #[must_use]
    pub fn new(max_message_size: usize) -> Self {
        Self {
            chunks: Chunks::default(),
            buffered: 0,
            pending: None,
            max_message_size,
            error: None,
        }
    }

    /// Changes the maximum payload size. It also applies to a message whose
    /// prefix was already read but whose payload is still incomplete.
    pub fn set_max_message_size(&mut self, limit: usize) {
        self.max_message_size = limit;
    }

    /// Queues a chunk of the stream. Empty chunks are ignored; the data is not
    /// copied.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.buffered = self.buffered.saturating_add(chunk.len());
        self.chunks.push_back(chunk);
    }

    /// Returns the next complete message, or `Ok(None)` when more bytes are
    /// needed.
    ///
    /// # Errors
    ///
    /// * [`FrameError::ReservedFlag`] as soon as a bad flag byte arrives;
    /// * [`FrameError::TooLarge`] as soon as the 5-byte prefix declares a
    ///   length over the maximum (nothing of such a payload is buffered
    ///   deliberately).
    ///
    /// Once an error is returned, every later call returns it again.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.next_frame_in(&mut OwnMemory)
    }

    /// [`next_frame`](Self::next_frame), copying a message that spans chunks
    /// where `assembly` says.
    pub(crate) fn next_frame_in(
        &mut self,
        assembly: &mut dyn Assembly,
    ) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        match self.advance(assembly) {
            Ok(frame) => Ok(frame),
            Err(err) => {
                self.error = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Bytes queued but not yet returned as part of a frame (a consumed prefix
    /// of an incomplete message is not counted).
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.buffered
    }

    /// Whether part of a message has arrived (its prefix, or more) but not
    /// all of it.
    #[must_use]
    pub fn is_mid_message(&self) -> bool {
        self.buffered > 0 || self.pending.is_some()
    }

    /// Checks the state at the end of the stream; call it after
    /// [`next_frame`](Self::next_frame) returned `Ok(None)`.
    ///
    /// Returns `Ok(())` when the queued bytes end on a message boundary
    /// (complete messages still queued are not an error: they can still be
    /// taken with `next_frame`).
    ///
    /// # Errors
    ///
    /// * [`FrameError::Truncated`] if the stream ended inside a message;
    /// * the decoder's sticky error, or a reserved flag / oversize length
    ///   found in a still-queued prefix.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let mut remaining = self.buffered;
        let mut cursor = Cursor::default();
        if let Some(header) = self.pending {
            check_len(header.len, self.max_message_size)?;
            remaining = payload_rest(remaining, header.len)?;
            cursor.advance(&self.chunks, header.len);
        }
        while remaining > 0 {
            if let Some(flag) = cursor.first(&self.chunks) {
                parse_flag(flag)?;
            }
            let Some(after_header) = remaining.checked_sub(HEADER_LEN) else {
                return Err(FrameError::Truncated {
                    expected: HEADER_LEN,
                    received: remaining,
                });
            };
            let header = parse_header(cursor.peek_header(&self.chunks), self.max_message_size)?;
            cursor.advance(&self.chunks, HEADER_LEN);
            remaining = payload_rest(after_header, header.len)?;
            cursor.advance(&self.chunks, header.len);
        }
        Ok(())
    }

    /// One decoding step without the sticky-error bookkeeping.
    fn advance(&mut self, assembly: &mut dyn Assembly) -> Result<Option<Frame>, FrameError> {
        let header = match self.pending {
            Some(header) => header,
            None => {
                // Reject a reserved flag from its first byte on.
                let Some(&flag) = self.chunks.front().and_then(|c| c.first()) else {
                    return Ok(None);
                };
                parse_flag(flag)?;
                if self.buffered < HEADER_LEN {
                    return Ok(None);
                }
                let header = parse_header(
                    Cursor::default().peek_header(&self.chunks),
                    self.max_message_size,
                )?;
                self.consume(HEADER_LEN);
                self.pending = Some(header);
                header
            }
        };
        check_len(header.len, self.max_message_size)?;
        if self.buffered < header.len {
            return Ok(None);
        }
        let payload = self.take(header.len, assembly);
        self.pending = None;
        Ok(Some(Frame {
            compressed: header.compressed,
            payload,
        }))
    }

    /// Drops `n` queued bytes; `n` must be at most `self.buffered`.
    fn consume(&mut self, n: usize) {
        let mut left = n;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() > left {
                bytes::Buf::advance(front, left);
                self.buffered = self.buffered.saturating_sub(left);
                left = 0;
            } else {
                left = left.saturating_sub(front.len());
                self.buffered = self.buffered.saturating_sub(front.len());
                self.chunks.pop_front();
            }
        }
    }

    /// Removes and returns the first `n` queued bytes; `n` must be at most
    /// `self.buffered`. Zero-copy when they lie in the front chunk, else
    /// copied together where `assembly` says.
    fn take(&mut self, n: usize, assembly: &mut dyn Assembly) -> Bytes {
        if n == 0 {
            return Bytes::new();
        }
        if let Some(front) = self.chunks.front_mut() {
            if front.len() >= n {
                let out = front.split_to(n);
                if front.is_empty() {
                    self.chunks.pop_front();
                }
                self.buffered = self.buffered.saturating_sub(n);
                return out;
            }
        }
        match assembly.buffer_for(n) {
            Some(kept) => {
                kept.clear();
                self.copy_out(n, kept);
                kept.split().freeze()
            }
            None => {
                let mut out = BytesMut::new();
                self.copy_out(n, &mut out);
                out.freeze()
            }
        }
    }

    /// Moves the first `n` queued bytes to the end of `out`.
    fn copy_out(&mut self, n: usize, out: &mut BytesMut) {
        out.reserve(n);
        let mut left = n;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() > left {
                out.extend_from_slice(&front.split_to(left));
                left = 0;
            } else {
                left = left.saturating_sub(front.len());
                out.extend_from_slice(front);
                self.chunks.pop_front();
            }
        }
        self.buffered = self.buffered.saturating_sub(n.saturating_sub(left));
    }
}

/// What is left of `available` payload bytes after a `len`-byte payload, or
/// the [`FrameError::Truncated`] error when they do not cover it.
fn payload_rest(available: usize, len: usize) -> Result<usize, FrameError> {
    available
        .checked_sub(len)
        .ok_or_else(|| FrameError::Truncated {
            expected: HEADER_LEN.saturating_add(len),
            received: HEADER_LEN.saturating_add(available),
        })
}

/// A read position inside a chunk queue: chunk index plus offset in it.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    /// Index of the chunk in the queue.
    chunk: usize,
    /// Offset inside that chunk.
    offset: usize,
}

impl Cursor {
    /// Moves forward by `n` bytes (stopping at the end of the queue).
    fn advance(&mut self, chunks: &Chunks, n: usize) {
        let mut left = n;
        while let Some(c) = chunks.get(self.chunk) {
            let avail = c.len().saturating_sub(self.offset);
            if avail > left {
                self.offset = self.offset.saturating_add(left);
                return;
            }
            left = left.saturating_sub(avail);
            self.chunk = self.chunk.saturating_add(1);
            self.offset = 0;
        }
    }

    /// The byte at the cursor, if queued.
    fn first(self, chunks: &Chunks) -> Option<u8> {
        chunks.get(self.chunk)?.get(self.offset).copied()
    }

    /// The next [`HEADER_LEN`] bytes; missing bytes read as zero (callers
    /// check that enough bytes are queued first).
    fn peek_header(self, chunks: &Chunks) -> [u8; HEADER_LEN] {
        let mut raw = [0u8; HEADER_LEN];
        let mut at = self;
        for slot in &mut raw {
            if let Some(&b) = chunks.get(at.chunk).and_then(|c| c.get(at.offset)) {
                *slot = b;
            }
            at.advance(chunks, 1);
        }
        raw
    }
}

/// Where messages end in a stream's bytes, without keeping the bytes: for a
/// connection thread that hands chunks on and only needs to know when a
/// whole message has arrived. Header checks are left to [`FrameDecoder`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageEdges {
    /// The current message's length bytes seen so far.
    length: [u8; 4],
    /// How many of its 5 header bytes have been seen.
    header_seen: usize,
    /// Bytes of its body still to come, once the header is complete.
    body_left: usize,
}

/// What a chunk brought, as [`MessageEdges::feed`] counts it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fed {
    /// Message headers it completed.
    pub(crate) headers: usize,
    /// Messages it completed.
    pub(crate) messages: usize,
}

impl MessageEdges {
    /// Takes in the stream's next chunk: the headers and messages it
    /// completes.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Fed {
        let mut fed = Fed::default();
        while !chunk.is_empty() {
            if self.header_seen < HEADER_LEN {
                let take = (HEADER_LEN - self.header_seen).min(chunk.len());
                for &byte in &chunk[..take] {
                    // Byte 0 is the compressed flag; 1..5 the length.
                    if self.header_seen > 0 {
                        self.length[self.header_seen - 1] = byte;
                    }
                    self.header_seen += 1;
                }
                chunk = &chunk[take..];
                if self.header_seen == HEADER_LEN {
                    self.body_left = u32::from_be_bytes(self.length) as usize;
                    fed.headers += 1;
                }
            } else {
                let take = self.body_left.min(chunk.len());
                self.body_left -= take;
                chunk = &chunk[take..];
            }
            if self.header_seen == HEADER_LEN && self.body_left == 0 {
                fed.messages += 1;
                self.header_seen = 0;
            }
        }
        fed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8], compressed: bool) -> BytesMut {
        let mut out = BytesMut::new();
        encode_frame(payload, compressed, &mut out).unwrap();
        out
    }

    fn drain(dec: &mut FrameDecoder) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            frames.push(f);
        }
        frames
    }

    #[test]
    fn encode_layout() {
        let out = framed(b"abc", false);
        assert_eq!(&out[..], &[0, 0, 0, 0, 3, b'a', b'b', b'c']);
        let out = framed(b"\x01", true);
        assert_eq!(&out[..], &[1, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn encode_appends() {
        let mut out = BytesMut::from(&b"xy"[..]);
        encode_frame(b"z", false, &mut out).unwrap();
        assert_eq!(&out[..], b"xy\x00\x00\x00\x00\x01z");
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn encode_rejects_payload_over_u32() {
        // Zeroed allocation: the pages are never touched, so this is cheap.
        let huge = vec![0u8; MAX_ENCODABLE_LEN + 1];
        let mut out = BytesMut::from(&b"keep"[..]);
        assert_eq!(
            encode_frame(&huge, false, &mut out),
            Err(FrameError::TooLarge {
                size: MAX_ENCODABLE_LEN + 1,
                limit: MAX_ENCODABLE_LEN
            })
        );
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn empty_payload_frame() {
        let out = framed(b"", false);
        assert_eq!(&out[..], &[0, 0, 0, 0, 0]);
        let mut dec = FrameDecoder::new(0);
        dec.push(out.freeze());
        let f = dec.next_frame().unwrap().unwrap();
        assert!(!f.compressed);
        assert!(f.payload.is_empty());
        assert_eq!(dec.next_frame().unwrap(), None);
        assert_eq!(dec.buffered_len(), 0);
        dec.finish().unwrap();
    }

    #[test]
    fn many_frames_in_one_chunk() {
        let mut buf = BytesMut::new();
        for i in 0..50u8 {
            let payload = vec![i; usize::from(i)];
            encode_frame(&payload, i % 2 == 1, &mut buf).unwrap();
        }
        let mut dec = FrameDecoder::new(1024);
        dec.push(buf.freeze());
        let frames = drain(&mut dec);
        assert_eq!(frames.len(), 50);
        for (i, f) in (0..50u8).zip(&frames) {
            assert_eq!(f.compressed, i % 2 == 1);
            assert_eq!(&f.payload[..], &vec![i; usize::from(i)][..]);
        }
        assert_eq!(dec.buffered_len(), 0);
        dec.finish().unwrap();
    }

    #[test]
    fn frame_split_into_one_byte_chunks() {
        let mut buf = framed(b"hello world", true);
        buf.extend_from_slice(&framed(b"", false));
        buf.extend_from_slice(&framed(b"!", false));
        let bytes = buf.freeze();
        let mut dec = FrameDecoder::new(100);
        let mut frames = Vec::new();
        for i in 0..bytes.len() {
            dec.push(bytes.slice(i..i + 1));
            frames.extend(drain(&mut dec));
        }
        assert_eq!(
            frames,
            vec![
                Frame {
                    compressed: true,
                    payload: Bytes::from_static(b"hello world")
                },
                Frame {
                    compressed: false,
                    payload: Bytes::new()
                },
                Frame {
                    compressed: false,
                    payload: Bytes::from_static(b"!")
                },
            ]
        );
        dec.finish().unwrap();
    }

    #[test]
    fn header_split_across_chunks() {
        let bytes = framed(b"payload", false).freeze();
        for split in 1..HEADER_LEN {
            let mut dec = FrameDecoder::new(100);
            dec.push(bytes.slice(..split));
            assert_eq!(dec.next_frame().unwrap(), None);
            assert_eq!(dec.buffered_len(), split);
            assert!(matches!(
                dec.finish(),
                Err(FrameError::Truncated { expected: 5, received }) if received == split
            ));
            dec.push(bytes.slice(split..));
            let f = dec.next_frame().unwrap().unwrap();
            assert_eq!(&f.payload[..], b"payload");
            dec.finish().unwrap();
        }
    }

    #[test]
    fn payload_and_next_header_share_chunks() {
        let mut buf = framed(b"0123456789", false);
        buf.extend_from_slice(&framed(b"abcdef", true));
        let bytes = buf.freeze();
        for a in 0..bytes.len() {
            for b in a..bytes.len() {
                let mut dec = FrameDecoder::new(10);
                dec.push(bytes.slice(..a));
                let mut frames = drain(&mut dec);
                dec.push(bytes.slice(a..b));
                frames.extend(drain(&mut dec));
                dec.push(bytes.slice(b..));
                frames.extend(drain(&mut dec));
                assert_eq!(frames.len(), 2, "split at {a},{b}");
                assert_eq!(&frames[0].payload[..], b"0123456789");
                assert_eq!(&frames[1].payload[..], b"abcdef");
                assert!(frames[1].compressed);
                dec.finish().unwrap();
            }
        }
    }

    #[test]
    fn zero_copy_within_chunk() {
        let mut buf = framed(b"first", false);
        buf.extend_from_slice(&framed(b"second", false));
        let chunk = buf.freeze();
        let range = chunk.as_ptr_range();
        let mut dec = FrameDecoder::new(100);
        dec.push(chunk.clone());
        for f in drain(&mut dec) {
            let p = f.payload.as_ptr_range();
            assert!(range.start <= p.start && p.end <= range.end);
        }
    }

    #[test]
    fn zero_copy_when_header_in_earlier_chunk() {
        let bytes = framed(b"body", false).freeze();
        let tail = bytes.slice(HEADER_LEN..);
        let mut dec = FrameDecoder::new(100);
        dec.push(bytes.slice(..HEADER_LEN));
        assert_eq!(dec.next_frame().unwrap(), None);
        assert_eq!(dec.buffered_len(), 0);
        dec.push(tail.clone());
        let f = dec.next_frame().unwrap().unwrap();
        assert_eq!(f.payload.as_ptr(), tail.as_ptr());
    }

    #[test]
    fn too_large_rejected_from_header_alone() {
        let mut dec = FrameDecoder::new(10);
        dec.push(Bytes::from_static(&[0, 0, 0, 0, 11]));
        let err = dec.next_frame().unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                size: 11,
                limit: 10
            }
        );
        assert!(err.to_string().contains("11 vs. 10"), "{err}");
        // Sticky.
        dec.push(Bytes::from_static(&[0; 11]));
        assert_eq!(dec.next_frame().unwrap_err(), err);
        assert_eq!(dec.finish().unwrap_err(), err);
    }

    #[test]
    fn length_exactly_at_limit_is_ok() {
        let mut dec = FrameDecoder::new(4);
        dec.push(framed(b"four", false).freeze());
        assert_eq!(&dec.next_frame().unwrap().unwrap().payload[..], b"four");
    }

    #[test]
    fn u32_max_length_with_small_limit() {
        let mut dec = FrameDecoder::new(1024);
        dec.push(Bytes::from_static(&[1, 0xff, 0xff, 0xff, 0xff]));
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                size: u32::MAX as usize,
                limit: 1024
            })
        );
    }

    #[test]
    fn u32_max_length_with_huge_limit_waits() {
        let mut dec = FrameDecoder::new(usize::MAX);
        dec.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2]));
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated {
                expected: HEADER_LEN + u32::MAX as usize,
                received: HEADER_LEN + 2
            })
        );
    }

    #[test]
    fn lowering_limit_applies_to_pending_frame() {
        let mut dec = FrameDecoder::new(100);
        dec.push(Bytes::from_static(&[0, 0, 0, 0, 50, 1]));
        assert_eq!(dec.next_frame(), Ok(None));
        dec.set_max_message_size(10);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                size: 50,
                limit: 10
            })
        );
    }

    #[test]
    fn raising_limit_allows_larger() {
        let mut dec = FrameDecoder::new(1);
        dec.set_max_message_size(3);
        dec.push(framed(b"abc", false).freeze());
        assert!(dec.next_frame().unwrap().is_some());
    }

    #[test]
    fn reserved_flag() {
        for flag in [2u8, 0x80, 0xff] {
            let mut dec = FrameDecoder::new(100);
            // Detected from the first byte, before the rest of the prefix.
            dec.push(Bytes::copy_from_slice(&[flag]));
            let err = dec.next_frame().unwrap_err();
            assert_eq!(err, FrameError::ReservedFlag(flag));
            assert!(err.to_string().contains(&format!("{flag:#04x}")), "{err}");
            assert_eq!(dec.next_frame().unwrap_err(), err);
        }
    }

    #[test]
    fn reserved_flag_after_good_frame() {
        let mut buf = framed(b"ok", false);
        buf.extend_from_slice(&[7, 0, 0, 0, 0]);
        let mut dec = FrameDecoder::new(100);
        dec.push(buf.freeze());
        assert!(dec.next_frame().unwrap().is_some());
        assert_eq!(dec.next_frame(), Err(FrameError::ReservedFlag(7)));
    }

    #[test]
    fn truncated_header_at_finish() {
        let mut dec = FrameDecoder::new(100);
        dec.push(Bytes::from_static(&[0, 0, 0]));
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated {
                expected: 5,
                received: 3
            })
        );
    }

    #[test]
    fn truncated_payload_at_finish() {
        let mut dec = FrameDecoder::new(100);
        dec.push(Bytes::from_static(&[0, 0, 0, 0, 10, 1, 2, 3]));
        assert_eq!(dec.next_frame(), Ok(None));
        assert_eq!(dec.buffered_len(), 3);
        let err = dec.finish().unwrap_err();
        assert_eq!(
            err,
            FrameError::Truncated {
                expected: 15,
                received: 8
            }
        );
        assert!(err.to_string().contains("expected 15"), "{err}");
    }

    #[test]
    fn finish_without_draining() {
        // Whole frames still queued are not truncation...
        let mut buf = framed(b"one", false);
        buf.extend_from_slice(&framed(b"two", false));
        let mut dec = FrameDecoder::new(100);
        dec.push(buf.clone().freeze());
        dec.finish().unwrap();
        // ...but a partial one after them is.
        buf.extend_from_slice(&[0, 0, 0, 0, 4, 1]);
        let mut dec = FrameDecoder::new(100);
        dec.push(buf.freeze());
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated {
                expected: 9,
                received: 6
            })
        );
        assert_eq!(drain(&mut dec).len(), 2);
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated {
                expected: 9,
                received: 6
            })
        );
    }

    #[test]
    fn finish_on_fresh_decoder() {
        let dec = FrameDecoder::new(0);
        dec.finish().unwrap();
        assert_eq!(dec.buffered_len(), 0);
    }

    #[test]
    fn empty_chunks_ignored() {
        let mut dec = FrameDecoder::new(100);
        dec.push(Bytes::new());
        assert_eq!(dec.next_frame(), Ok(None));
        dec.push(Bytes::from_static(&[0, 0]));
        dec.push(Bytes::new());
        dec.push(Bytes::from_static(&[0, 0, 1, 9]));
        assert_eq!(&dec.next_frame().unwrap().unwrap().payload[..], &[9]);
    }

    #[test]
    fn spanning_frame_is_copied_correctly() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let bytes = framed(&payload, false).freeze();
        let mut dec = FrameDecoder::new(1000);
        for piece in bytes.chunks(7) {
            dec.push(Bytes::copy_from_slice(piece));
        }
        let f = dec.next_frame().unwrap().unwrap();
        assert_eq!(&f.payload[..], &payload[..]);
        assert_eq!(dec.buffered_len(), 0);
    }

    /// Copies messages of at least `from` bytes into `buf`.
    struct KeepFrom {
        buf: BytesMut,
        from: usize,
    }

    impl Assembly for KeepFrom {
        fn buffer_for(&mut self, len: usize) -> Option<&mut BytesMut> {
            (len >= self.from).then_some(&mut self.buf)
        }
    }

    #[test]
    fn spanning_frames_are_copied_where_the_assembly_says() {
        let big: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let small = vec![3u8; 999];
        let mut bytes = framed(&big, false);
        bytes.extend_from_slice(&framed(&small, false));
        bytes.extend_from_slice(&framed(&big, false));
        let mut dec = FrameDecoder::new(1000);
        for piece in bytes.freeze().chunks(300) {
            dec.push(Bytes::copy_from_slice(piece));
        }
        let mut into = KeepFrom {
            buf: BytesMut::with_capacity(4096),
            from: 1000,
        };
        let start = into.buf.as_ptr();
        // Cut from the front of the given buffer, which keeps the rest.
        let first = dec.next_frame_in(&mut into).unwrap().unwrap();
        assert_eq!(&first.payload[..], &big[..]);
        assert_eq!(first.payload.as_ptr(), start);
        assert_eq!(into.buf.as_ptr(), start.wrapping_add(1000));
        assert_eq!((into.buf.len(), into.buf.capacity()), (0, 3096));
        // Under the assembly's size: memory of its own, the buffer untouched.
        let second = dec.next_frame_in(&mut into).unwrap().unwrap();
        assert_eq!(&second.payload[..], &small[..]);
        assert_eq!(into.buf.as_ptr(), start.wrapping_add(1000));
        assert_eq!(into.buf.capacity(), 3096);
        let third = dec.next_frame_in(&mut into).unwrap().unwrap();
        assert_eq!(third.payload.as_ptr(), start.wrapping_add(1000));
        assert_eq!(
            (&first.payload[..], &third.payload[..]),
            (&big[..], &big[..])
        );
        assert_eq!(dec.buffered_len(), 0);
    }

    #[test]
    fn fuzzish_no_panic() {
        // Deterministic pseudo-random garbage in random chunk sizes must never
        // panic, whatever it decodes to.
        let mut state: u32 = 0x1234_5678;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..200 {
            let mut dec = FrameDecoder::new((next() % 64) as usize);
            for _ in 0..20 {
                let len = (next() % 9) as usize;
                let chunk: Vec<u8> = (0..len).map(|_| (next() % 3) as u8).collect();
                dec.push(Bytes::from(chunk));
                while let Ok(Some(_)) = dec.next_frame() {}
                let _ = dec.finish();
            }
        }
    }

    #[test]
    fn message_edges_count_messages_completed_however_the_bytes_are_split() {
        let mut wire = BytesMut::new();
        for payload in [&b"hello"[..], b"", b"abc"] {
            encode_frame(payload, false, &mut wire).unwrap();
        }
        let fed = |headers, messages| Fed { headers, messages };
        // Whole: three messages at once.
        assert_eq!(MessageEdges::default().feed(&wire), fed(3, 3));
        // Byte by byte: each header ends on its fifth byte, each message on
        // its last (the empty one on its header's last byte).
        let mut edges = MessageEdges::default();
        let (mut headers, mut ends) = (Vec::new(), Vec::new());
        for (i, byte) in wire.iter().enumerate() {
            let f = edges.feed(std::slice::from_ref(byte));
            if f.headers == 1 {
                headers.push(i);
            }
            if f.messages == 1 {
                ends.push(i);
            }
        }
        assert_eq!(headers, vec![4, 14, 19]);
        assert_eq!(ends, vec![9, 14, 22]);
        // Split inside the header, then inside the body.
        let mut edges = MessageEdges::default();
        assert_eq!(edges.feed(&wire[..3]), fed(0, 0));
        assert_eq!(edges.feed(&wire[3..7]), fed(1, 0));
        assert_eq!(edges.feed(&wire[7..16]), fed(1, 2));
        assert_eq!(edges.feed(&wire[16..]), fed(1, 1));
        // At a message's end it starts afresh.
        assert_eq!(edges.feed(&wire), fed(3, 3));
    }
}
