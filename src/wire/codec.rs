//! Protobuf messages to and from gRPC frames: serialization, the size limits
//! and per-message compression, as plain functions over values and bytes.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::status::Status;
use crate::wire::compression::{self, DecompressError, Encoding};
use crate::wire::framing::{self, Frame, FrameError};

/// Whether a message is compressed with its call's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compress {
    /// With the call's compression (none if it has none).
    AsCall,
    /// Never (its compressed flag stays clear).
    Never,
}

impl Compress {
    /// The encoding of one message of a call compressed with `call`.
    pub(crate) fn encoding(self, call: Encoding) -> Encoding {
        match self {
            Compress::AsCall => call,
            Compress::Never => Encoding::Identity,
        }
    }
}

/// Serializes `message` as one gRPC frame, compressed with `encoding` unless
/// it is identity, in memory of its own. `len` is `message.encoded_len()`,
/// which the caller has worked out already (it walks the whole message).
/// Fails with `RESOURCE_EXHAUSTED` when the serialized message is larger
/// than `max_size`.
pub(crate) fn encode<M: Message>(
    message: &M,
    len: usize,
    encoding: Encoding,
    max_size: usize,
) -> Result<Bytes, Status> {
    // Exactly the frame's size: a buffer with room to spare (a small
    // vector's least is 8 bytes, more than an empty message's frame) costs
    // `freeze` a second allocation, for a shared reference count.
    let mut buf = BytesMut::with_capacity(framing::HEADER_LEN.saturating_add(len));
    write_frame(message, len, encoding, max_size, &mut buf)?;
    Ok(buf.freeze())
}

/// [`encode`], written in `buf`'s memory instead: a caller that keeps one
/// `buf` for many messages has each message reuse the memory of the one
/// before it once that one is dropped ([`BytesMut`] takes its memory back
/// only when nothing else refers to it). `buf` is left empty. (Worth it
/// for large messages only: a frame that shares its memory pays for a
/// shared reference count.)
pub(crate) fn encode_in<M: Message>(
    message: &M,
    len: usize,
    encoding: Encoding,
    max_size: usize,
    buf: &mut BytesMut,
) -> Result<Bytes, Status> {
    buf.clear();
    write_frame(message, len, encoding, max_size, buf)?;
    Ok(buf.split().freeze())
}

/// Appends `message` to the empty `buf` as one gRPC frame.
fn write_frame<M: Message>(
    message: &M,
    len: usize,
    encoding: Encoding,
    max_size: usize,
    buf: &mut BytesMut,
) -> Result<(), Status> {
    if len > max_size {
        return Err(Status::resource_exhausted(format!(
            "message to send is {len} bytes, larger than the send limit of {max_size} bytes"
        )));
    }
    if encoding == Encoding::Identity {
        buf.reserve(framing::HEADER_LEN + len);
        buf.extend_from_slice(&[0; framing::HEADER_LEN]);
        // Cannot fail: the buffer grows as needed.
        let _ = message.encode(buf);
        let prefix = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        buf[1..framing::HEADER_LEN].copy_from_slice(&prefix);
        return Ok(());
    }
    let plain = message.encode_to_vec();
    let mut packed = Vec::with_capacity(plain.len() / 2 + 16);
    compression::compress(encoding, &plain, &mut packed)
        .map_err(|e| Status::internal(format!("{encoding} compression failed: {e}")))?;
    framing::encode_frame(&packed, true, buf).map_err(|e| Status::resource_exhausted(e.to_string()))
}

/// The payload of `frame` as plain bytes: decompressed with `encoding` when
/// the frame's compressed flag is set, never growing past `max_size`.
pub(crate) fn unpack(frame: Frame, encoding: Encoding, max_size: usize) -> Result<Bytes, Status> {
    if !frame.compressed {
        return Ok(frame.payload);
    }
    match compression::decompress(encoding, &frame.payload, max_size) {
        Ok(plain) => Ok(Bytes::from(plain)),
        Err(DecompressError::TooLarge { limit }) => Err(Status::resource_exhausted(format!(
            "decompressed message is larger than the receive limit of {limit} bytes"
        ))),
        Err(e) => Err(Status::internal(e.to_string())),
    }
}

/// The status for a framing error: `RESOURCE_EXHAUSTED` for an oversize
/// message, `INTERNAL` for a malformed stream.
pub(crate) fn frame_error_status(error: FrameError) -> Status {
    match error {
        FrameError::TooLarge { .. } => Status::resource_exhausted(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::code::Code;
    use crate::wire::framing::FrameDecoder;

    /// A message of one string, for tests of encoding.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Msg {
        #[prost(string, tag = "1")]
        pub(crate) text: String,
    }

    fn round_trip(encoding: Encoding) {
        let m = Msg {
            text: "hello ".repeat(100),
        };
        let bytes = encode(&m, m.encoded_len(), encoding, 1 << 20).unwrap();
        let mut dec = FrameDecoder::new(1 << 20);
        dec.push(bytes);
        let frame = dec.next_frame().unwrap().unwrap();
        assert_eq!(frame.compressed, encoding != Encoding::Identity);
        let back = Msg::decode(unpack(frame, encoding, 1 << 20).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn round_trips_in_every_encoding() {
        for e in Encoding::ALL {
            round_trip(e);
        }
    }

    #[test]
    fn encode_in_cuts_the_frame_from_the_front_of_the_buffer() {
        let m = Msg {
            text: "x".repeat(1000),
        };
        for encoding in Encoding::ALL {
            let mut buf = BytesMut::with_capacity(8192);
            buf.extend_from_slice(b"left over");
            let start = buf.as_ptr();
            let frame = encode_in(&m, m.encoded_len(), encoding, 1 << 20, &mut buf).unwrap();
            // The buffer keeps the rest of its memory, right after the frame.
            assert_eq!(frame.as_ptr(), start, "{encoding}");
            assert_eq!(buf.as_ptr(), start.wrapping_add(frame.len()), "{encoding}");
            assert!(buf.is_empty());
            let mut dec = FrameDecoder::new(1 << 20);
            dec.push(frame);
            let back =
                Msg::decode(unpack(dec.next_frame().unwrap().unwrap(), encoding, 1 << 20).unwrap());
            assert_eq!(back.unwrap(), m, "{encoding}");
        }
    }

    #[test]
    fn send_limit_is_enforced() {
        let m = Msg {
            text: "x".repeat(100),
        };
        let err = encode(&m, m.encoded_len(), Encoding::Identity, 50).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("50"), "{err}");
    }

    #[test]
    fn decompression_stops_at_the_receive_limit() {
        let m = Msg {
            text: "a".repeat(100_000),
        };
        let bytes = encode(&m, m.encoded_len(), Encoding::Gzip, 1 << 20).unwrap();
        let mut dec = FrameDecoder::new(1 << 20);
        dec.push(bytes);
        let frame = dec.next_frame().unwrap().unwrap();
        let err = unpack(frame, Encoding::Gzip, 1000).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }
}
