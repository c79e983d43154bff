//! Received bytes to messages, and when their flow-control credit goes back
//! to the peer.
//!
//! Both sides read the same way: the connection thread hands the raw DATA
//! chunks of a stream to the thread running the call, which takes them in
//! here as it reads. Credit is returned only for chunks taken in, so a call
//! that stops reading stops its peer at the stream window and memory stays
//! bounded (the crate docs, "Flow control"). It is returned in batches of
//! [`CREDIT_BATCH`] bytes, or all at once when the reader is about to wait
//! (the peer may be waiting for exactly that credit). A stream of one
//! message is the exception: the connection thread credits it as it
//! arrives, up to one largest message ([`Credit`], which also says when the
//! reader is woken).

use bytes::Bytes;

use crate::rt::kept_buffers;
use crate::status::Status;
use crate::wire::codec;
use crate::wire::compression::Encoding;
use crate::wire::framing::{FrameDecoder, MessageEdges, HEADER_LEN};

/// Consumed bytes are returned to the peer's window in batches of at least
/// this size (or when the reader is about to block).
pub(crate) const CREDIT_BATCH: usize = 16 * 1024;

/// One message as received: its plain bytes, and whether it came compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) payload: Bytes,
    pub(crate) compressed: bool,
    /// Its size on the wire: the 5-byte prefix and the payload as sent
    /// (compressed or not).
    pub(crate) wire_len: usize,
}

/// Reassembles and decompresses one stream's messages.
#[derive(Debug)]
pub(crate) struct MessageReader {
    decoder: FrameDecoder,
    encoding: Encoding,
    max_receive: usize,
    /// Bytes taken in whose credit has not gone back to the peer.
    unreleased: usize,
}

impl MessageReader {
    /// A reader of messages up to `max_receive` bytes (after decompression),
    /// uncompressed until told otherwise.
    pub(crate) fn new(max_receive: usize) -> Self {
        MessageReader {
            decoder: FrameDecoder::new(max_receive),
            encoding: Encoding::Identity,
            max_receive,
            unreleased: 0,
        }
    }

    /// The stream's `grpc-encoding`, for messages whose compressed flag is
    /// set.
    pub(crate) fn set_encoding(&mut self, encoding: Encoding) {
        self.encoding = encoding;
    }

    /// Takes a chunk of the stream in; its bytes now count as credit due.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.unreleased += chunk.len();
        self.decoder.push(chunk);
    }

    /// The next complete message, decompressed; `Ok(None)` until more bytes
    /// arrive. A message over the limit is `RESOURCE_EXHAUSTED`, a malformed
    /// one `INTERNAL`.
    pub(crate) fn next(&mut self) -> Result<Option<Received>, Status> {
        let Some(frame) =
            kept_buffers::next_frame(&mut self.decoder).map_err(codec::frame_error_status)?
        else {
            return Ok(None);
        };
        let compressed = frame.compressed;
        let wire_len = HEADER_LEN + frame.payload.len();
        let payload = codec::unpack(frame, self.encoding, self.max_receive)?;
        Ok(Some(Received {
            payload,
            compressed,
            wire_len,
        }))
    }

    /// Whether part of a next message has arrived, but not all of it.
    pub(crate) fn is_mid_message(&self) -> bool {
        self.decoder.is_mid_message()
    }

    /// Checks the end of the stream: an error if it ended inside a message.
    pub(crate) fn finish(&self) -> Result<(), Status> {
        self.decoder.finish().map_err(codec::frame_error_status)
    }

    /// The credit to give back now, if any: once a batch has built up, or
    /// everything when the reader is about to wait.
    pub(crate) fn credit(&mut self, about_to_wait: bool) -> Option<usize> {
        if self.unreleased == 0 || !about_to_wait && self.unreleased < CREDIT_BATCH {
            return None;
        }
        Some(std::mem::take(&mut self.unreleased))
    }
}

/// Who gives the flow-control credit of a stream's incoming bytes back to
/// the peer, and so whether a chunk the connection thread delivers wakes the
/// thread that reads it (a server's handler, a client's caller).
///
/// Bytes a reader has not been woken for hold credit the peer may need, so
/// the connection thread also counts them across all its streams
/// ([`Unwoken`]) and wakes every such reader once they reach a quarter of
/// the connection's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credit {
    /// The reader, as it takes messages in, so that a peer cannot outrun a
    /// reader that stops reading: streams of many messages. The reader is
    /// woken by each chunk that completes a message or a message's header
    /// (which may declare a size over the limit), and by a quarter of the
    /// stream's window (`wake_every`) arrived since it last woke, so that it
    /// gives back the credit of a long message before the message ends.
    ByReader {
        edges: MessageEdges,
        unwoken: usize,
        wake_every: usize,
    },
    /// The connection thread, as the bytes arrive: a stream of one message,
    /// which its reader takes whole. Up to `left` more bytes are credited
    /// (one message of the largest size this side takes, with its header).
    /// The reader is woken by the chunks that bring the message's 5-byte
    /// header (which may declare a size over the limit), then only by the
    /// end of the stream or by bytes beyond one message: it can do nothing
    /// with its one message before it knows that no second one follows.
    OnArrival { left: usize, header_left: usize },
}

/// What the connection thread does for a chunk it delivered to a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Give the chunk's credit back now.
    pub(crate) release: bool,
    /// Wake the reader for it.
    pub(crate) wake: bool,
}

impl Credit {
    /// Credit given back by the reader, on a stream whose peer was given a
    /// window of `stream_window` bytes.
    pub(crate) fn by_reader(stream_window: u32) -> Self {
        Credit::ByReader {
            edges: MessageEdges::default(),
            unwoken: 0,
            wake_every: (stream_window as usize / 4).max(1),
        }
    }

    /// Whether the reader gives the credit back.
    pub(crate) fn is_by_reader(&self) -> bool {
        matches!(self, Credit::ByReader { .. })
    }

    /// Bytes delivered since the reader was last woken whose credit is not
    /// back (none for a stream credited on arrival).
    pub(crate) fn unwoken(&self) -> usize {
        match self {
            Credit::ByReader { unwoken, .. } => *unwoken,
            Credit::OnArrival { .. } => 0,
        }
    }

    /// Whether the reader was delivered bytes it was not woken for; if
    /// so, it counts as woken from here (the caller wakes it), as every
    /// such reader is once [`Unwoken::wake_all_due`] says so.
    pub(crate) fn wake_due(&mut self) -> bool {
        let due = self.unwoken() > 0;
        self.woken();
        due
    }

    /// The reader is woken for everything delivered so far.
    pub(crate) fn woken(&mut self) {
        if let Credit::ByReader { unwoken, .. } = self {
            *unwoken = 0;
        }
    }

    /// Credit on arrival for a stream of one message of at most
    /// `max_message` bytes (its header not counted).
    pub(crate) fn on_arrival(max_message: usize) -> Self {
        Credit::OnArrival {
            left: max_message.saturating_add(HEADER_LEN),
            header_left: HEADER_LEN,
        }
    }

    /// Accounts for `chunk` and hands it to its reader with `hand`, which is
    /// told whether to wake the reader and says whether the reader took the
    /// chunk. Its credit is to go back now if the rule says so, or if the
    /// reader is gone (nobody else will give it back).
    pub(crate) fn hand_over(
        &mut self,
        chunk: Bytes,
        hand: impl FnOnce(Bytes, bool) -> bool,
    ) -> Delivered {
        let delivered = self.delivered(&chunk);
        let taken = hand(chunk, delivered.wake);
        if !taken {
            // Nobody is left to wake.
            self.woken();
        }
        Delivered {
            release: delivered.release || !taken,
            wake: delivered.wake,
        }
    }

    /// Accounts for `chunk`, delivered to the reader.
    fn delivered(&mut self, chunk: &[u8]) -> Delivered {
        let n = chunk.len();
        match self {
            Credit::ByReader {
                edges,
                unwoken,
                wake_every,
            } => {
                *unwoken += n;
                let fed = edges.feed(chunk);
                let wake = fed.headers + fed.messages > 0 || *unwoken >= *wake_every;
                if wake {
                    *unwoken = 0;
                }
                Delivered {
                    release: false,
                    wake,
                }
            }
            Credit::OnArrival { left, header_left } if n <= *left => {
                *left -= n;
                let wake = *header_left > 0;
                *header_left = header_left.saturating_sub(n);
                Delivered {
                    release: true,
                    wake,
                }
            }
            // More than one largest message: the reader will fail the call,
            // and the peer gets no credit to send yet more.
            Credit::OnArrival { left, header_left } => {
                *left = 0;
                *header_left = 0;
                Delivered {
                    release: false,
                    wake: true,
                }
            }
        }
    }
}

/// The bytes a connection's readers were delivered but not woken for,
/// across all its streams (the sum of their [`Credit::unwoken`]). They hold
/// credit the peer may need, so once they reach a quarter of the
/// connection's window every reader with such bytes is woken.
#[derive(Debug)]
pub(crate) struct Unwoken {
    bytes: usize,
    limit: usize,
}

impl Unwoken {
    /// For a connection whose peer was given `connection_window` bytes.
    pub(crate) fn new(connection_window: u32) -> Self {
        Unwoken {
            bytes: 0,
            limit: connection_window as usize / 4,
        }
    }

    /// A stream's count went from `before` to `after` (0 when its reader is
    /// woken or the stream is gone).
    pub(crate) fn changed(&mut self, before: usize, after: usize) {
        self.bytes = (self.bytes + after).saturating_sub(before);
    }

    /// Whether every reader with bytes it was not woken for is due a wake
    /// now; if so, they count as woken from here.
    pub(crate) fn wake_all_due(&mut self) -> bool {
        if self.bytes < self.limit {
            return false;
        }
        self.bytes = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::wire::framing::encode_frame;

    fn framed(payload: &[u8]) -> Bytes {
        let mut out = bytes::BytesMut::new();
        encode_frame(payload, false, &mut out).unwrap();
        out.freeze()
    }

    #[test]
    fn messages_split_anywhere_are_reassembled() {
        let mut r = MessageReader::new(100);
        let mut wire = framed(b"hello").to_vec();
        wire.extend_from_slice(&framed(b"world"));
        for byte in wire {
            r.push(Bytes::from(vec![byte]));
        }
        let hello = r.next().unwrap().unwrap();
        assert_eq!((&hello.payload[..], hello.wire_len), (&b"hello"[..], 10));
        assert_eq!(r.next().unwrap().unwrap().payload, "world");
        assert_eq!(r.next().unwrap(), None);
        assert!(r.finish().is_ok());
    }

    #[test]
    fn credit_is_batched_unless_the_reader_waits() {
        let mut r = MessageReader::new(1 << 20);
        r.push(Bytes::from(vec![0; 100]));
        assert_eq!(r.credit(false), None);
        assert_eq!(r.credit(true), Some(100));
        assert_eq!(r.credit(true), None);
        r.push(Bytes::from(vec![0; CREDIT_BATCH]));
        assert_eq!(r.credit(false), Some(CREDIT_BATCH));
    }

    #[test]
    fn limits_and_truncation_are_statuses() {
        let mut r = MessageReader::new(3);
        r.push(framed(b"toolong"));
        assert_eq!(r.next().unwrap_err().code(), Code::ResourceExhausted);
        let mut r = MessageReader::new(100);
        r.push(framed(b"cut").slice(..6));
        assert_eq!(r.next().unwrap(), None);
        assert_eq!(r.finish().unwrap_err().code(), Code::Internal);
        let mut r = MessageReader::new(100);
        r.push(Bytes::from_static(&[2, 0, 0, 0, 0]));
        assert_eq!(r.next().unwrap_err().code(), Code::Internal);
    }

    #[test]
    fn compressed_messages_are_inflated() {
        let mut packed = Vec::new();
        crate::wire::compression::compress(Encoding::Gzip, b"squeeze me", &mut packed).unwrap();
        let mut out = bytes::BytesMut::new();
        encode_frame(&packed, true, &mut out).unwrap();
        let mut r = MessageReader::new(100);
        r.set_encoding(Encoding::Gzip);
        r.push(out.freeze());
        let m = r.next().unwrap().unwrap();
        assert!(m.compressed);
        assert_eq!(m.payload, "squeeze me");
    }

    const RELEASE: Delivered = Delivered {
        release: true,
        wake: false,
    };
    const RELEASE_AND_WAKE: Delivered = Delivered {
        release: true,
        wake: true,
    };
    const HOLD_AND_WAKE: Delivered = Delivered {
        release: false,
        wake: true,
    };

    #[test]
    fn a_stream_of_many_messages_wakes_its_reader_per_message_and_keeps_its_credit() {
        const HOLD: Delivered = Delivered {
            release: false,
            wake: false,
        };
        // 400-byte windows: a wake at least every 100 bytes.
        let mut c = Credit::by_reader(400);
        let small = framed(b"hi");
        assert_eq!(c.delivered(&small), HOLD_AND_WAKE);
        assert_eq!(c.unwoken(), 0);
        // A 250-byte message in 60-byte chunks: woken for its header, when
        // 100 bytes wait, and when the message ends.
        let long = framed(&[7; 250]);
        let woken: Vec<bool> = long.chunks(60).map(|part| c.delivered(part).wake).collect();
        assert_eq!(woken, vec![true, false, true, false, true]);
        assert_eq!(c.unwoken(), 0);
        // Bytes not woken for are counted until the reader is woken.
        assert_eq!(c.delivered(&small[..3]), HOLD);
        assert_eq!(c.unwoken(), 3);
        c.woken();
        assert_eq!(c.unwoken(), 0);
        assert_eq!(c.delivered(&small[3..]), HOLD_AND_WAKE);
        // A reader is due a wake only for bytes it was not woken for.
        assert!(!c.wake_due());
        assert_eq!(c.delivered(&small[..3]), HOLD);
        assert!(c.wake_due());
        assert_eq!(c.unwoken(), 0);
        assert!(!c.wake_due());
    }

    #[test]
    fn a_single_message_is_credited_as_it_arrives_up_to_the_largest_message() {
        // 100-byte messages: 105 bytes with the header.
        let mut c = Credit::on_arrival(100);
        // The chunks that bring the message's header wake the reader, which
        // checks the declared size; the rest only add to the message.
        assert_eq!(c.delivered(&[0; 3]), RELEASE_AND_WAKE);
        assert_eq!(c.delivered(&[0; 57]), RELEASE_AND_WAKE);
        assert_eq!(c.delivered(&[0; 20]), RELEASE);
        assert_eq!(c.delivered(&[0; 25]), RELEASE);
        assert!(matches!(c, Credit::OnArrival { left: 0, .. }));
        // One byte more can only be a second message or an oversized one.
        assert_eq!(c.delivered(&[0]), HOLD_AND_WAKE);
        assert_eq!(c.delivered(&[0]), HOLD_AND_WAKE);
    }

    #[test]
    fn a_chunk_is_handed_over_with_its_wake_and_credited_if_the_reader_is_gone() {
        let mut c = Credit::by_reader(400);
        let small = framed(b"hi");
        let mut seen = Vec::new();
        // Taken: the reader holds the credit, and is woken for a whole
        // message but not for part of one.
        for part in [&small[..3], &small[3..]] {
            let handed = c.hand_over(Bytes::copy_from_slice(part), |chunk, wake| {
                seen.push((chunk.len(), wake));
                true
            });
            assert!(!handed.release);
        }
        assert_eq!(seen, vec![(3, false), (4, true)]);
        // Not taken: its credit goes back now, and nothing waits unwoken
        // (neither chunk completes the next message's header).
        let next = framed(b"hello");
        let held = c.hand_over(Bytes::copy_from_slice(&next[..3]), |_, _| true);
        assert_eq!((held.release, held.wake, c.unwoken()), (false, false, 3));
        let gone = c.hand_over(Bytes::copy_from_slice(&next[3..4]), |_, _| false);
        assert_eq!((gone.release, gone.wake, c.unwoken()), (true, false, 0));
    }

    #[test]
    fn a_chunk_that_crosses_the_limit_is_held_whole() {
        let mut c = Credit::on_arrival(100);
        assert_eq!(c.delivered(&[0; 100]), RELEASE_AND_WAKE);
        assert_eq!(c.delivered(&[0; 6]), HOLD_AND_WAKE);
        assert!(matches!(c, Credit::OnArrival { left: 0, .. }));
    }

    #[test]
    fn every_reader_wakes_once_a_quarter_of_the_connection_window_waits() {
        let mut unwoken = Unwoken::new(1000);
        unwoken.changed(0, 200);
        unwoken.changed(0, 40);
        assert!(!unwoken.wake_all_due());
        // The first stream's reader is woken; a third stream brings 60.
        unwoken.changed(200, 0);
        unwoken.changed(0, 60);
        assert!(!unwoken.wake_all_due());
        // 40 + 60 + 150 = 250, a quarter of 1000.
        unwoken.changed(60, 210);
        assert!(unwoken.wake_all_due());
        assert!(!unwoken.wake_all_due());
    }
}
