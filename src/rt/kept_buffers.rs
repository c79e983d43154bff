//! The memory each thread keeps for the large messages it encodes and
//! copies together, from one message (and one call) to the next.
//!
//! A message to send is encoded in one buffer ([`codec::encode_in`]); a
//! received message that spans DATA chunks is copied together in another
//! ([`FrameDecoder::next_frame_in`]). Each thread keeps one of each
//! ([`Kept`]), and a message reuses the memory of the thread's last one
//! once nothing refers to that one any more (the connection thread has
//! sent it, or it was decoded). Without that, every large message took
//! fresh memory, which glibc's allocator gave back to the system as soon
//! as it was freed: each message then paid a page fault per 4 KiB of its
//! size, a fifth of a server's time on a bidi call of 1 MiB messages.
//!
//! What goes through a kept buffer, and what it costs:
//! - only uncompressed messages of [`KEEP_FROM`] to [`KEEP_AT_MOST`]
//!   bytes, header included. A smaller one is allocated on its own as
//!   before: the allocator serves it from memory it keeps anyway, and
//!   memory shared with a kept buffer would cost it a shared reference
//!   count. A compressed one takes fresh memory for its plain and
//!   compressed forms anyway.
//! - a message reuses a buffer's memory only if that memory is its own
//!   size or at most twice it; otherwise it gets memory of exactly its
//!   size, and the buffer keeps that. A message still referred to (queued
//!   for sending, kept for a retry) therefore holds at most twice its
//!   size, and a thread keeps at most one [`KEEP_AT_MOST`] block per
//!   buffer, until it exits.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::status::Status;
use crate::wire::codec;
use crate::wire::compression::Encoding;
use crate::wire::framing::{Assembly, Frame, FrameDecoder, FrameError, HEADER_LEN};

/// The smallest message (header included) that goes through a kept
/// buffer: four of h2's default 16 KiB DATA frames, and half of glibc's
/// default threshold for giving memory back.
pub(crate) const KEEP_FROM: usize = 64 * 1024;

/// The largest message (header included) that goes through a kept buffer,
/// and so the most memory a kept buffer holds: gRPC's usual receive limit.
pub(crate) const KEEP_AT_MOST: usize = 4 * 1024 * 1024 + HEADER_LEN;

thread_local! {
    static ENCODING: RefCell<Kept> = RefCell::new(Kept::default());
    static ASSEMBLING: RefCell<Kept> = RefCell::new(Kept::default());
}

/// One kept buffer: the memory of the last message made in it.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    buf: BytesMut,
    /// The size of the memory `buf` was made with.
    block: usize,
    /// How many times it was made anew (the tests count reuse with it).
    blocks_made: usize,
}

impl Kept {
    /// Whether a message of `len` bytes goes through a kept buffer.
    fn takes(len: usize) -> bool {
        (KEEP_FROM..=KEEP_AT_MOST).contains(&len)
    }

    /// The buffer, empty and with room for `len` bytes: in its memory if
    /// nothing else refers to that any more and `len` is at least half of
    /// it, else in new memory of exactly `len` bytes.
    fn ready(&mut self, len: usize) -> &mut BytesMut {
        self.buf.clear();
        let fits = len <= self.block && len >= self.block / 2;
        if !(fits && self.buf.try_reclaim(len)) {
            self.buf = BytesMut::with_capacity(len);
            self.block = self.buf.capacity();
            self.blocks_made = self.blocks_made.saturating_add(1);
        }
        &mut self.buf
    }
}

impl Assembly for Kept {
    fn buffer_for(&mut self, len: usize) -> Option<&mut BytesMut> {
        // `len` is the payload's; the limits count the header too.
        Self::takes(HEADER_LEN.saturating_add(len)).then(|| self.ready(len))
    }
}

/// Runs `f` with the thread's buffer in `key`, or with `None` when that is
/// out of reach (in use already, or the thread is exiting).
fn with_kept<R>(
    key: &'static LocalKey<RefCell<Kept>>,
    mut f: impl FnMut(Option<&mut Kept>) -> R,
) -> R {
    let made = key.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut kept) => f(Some(&mut kept)),
        Err(_) => f(None),
    });
    match made {
        Ok(made) => made,
        Err(_) => f(None),
    }
}

/// `message` as one gRPC frame ([`codec::encode`]); a large one in the
/// thread's encoding buffer.
pub(crate) fn encode<M: Message>(
    message: &M,
    encoding: Encoding,
    max_size: usize,
) -> Result<Bytes, Status> {
    let plain = message.encoded_len();
    let len = HEADER_LEN.saturating_add(plain);
    if encoding != Encoding::Identity || !Kept::takes(len) {
        return codec::encode(message, plain, encoding, max_size);
    }
    with_kept(&ENCODING, |kept| match kept {
        Some(kept) => codec::encode_in(message, plain, encoding, max_size, kept.ready(len)),
        None => codec::encode(message, plain, encoding, max_size),
    })
}

/// [`FrameDecoder::next_frame`], copying a large message that spans chunks
/// in the thread's assembling buffer.
pub(crate) fn next_frame(decoder: &mut FrameDecoder) -> Result<Option<Frame>, FrameError> {
    with_kept(&ASSEMBLING, |kept| match kept {
        Some(kept) => decoder.next_frame_in(kept),
        None => decoder.next_frame(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::tests::Msg;
    use crate::wire::framing::encode_frame;

    /// A message whose frame is `len` bytes.
    fn framed_as(len: usize) -> Msg {
        (1..=5)
            .map(|length_bytes| Msg {
                text: "x".repeat(len - HEADER_LEN - 1 - length_bytes),
            })
            .find(|m| HEADER_LEN + m.encoded_len() == len)
            .expect("a message of that frame size")
    }

    /// `m` encoded through `kept`, as `encode` does.
    fn encode_with(kept: &mut Kept, m: &Msg) -> Bytes {
        let plain = m.encoded_len();
        let ready = kept.ready(HEADER_LEN + plain);
        codec::encode_in(m, plain, Encoding::Identity, usize::MAX, ready).unwrap()
    }

    #[test]
    fn a_message_reuses_the_memory_of_the_last_once_it_is_dropped() {
        let mut kept = Kept::default();
        let m = framed_as(300_000);
        let first = encode_with(&mut kept, &m);
        let at = first.as_ptr();
        assert_eq!(kept.blocks_made, 1);
        drop(first);
        let second = encode_with(&mut kept, &m);
        assert_eq!((second.as_ptr(), kept.blocks_made), (at, 1));
        // Still referred to: the next goes to new memory, the last stays.
        let third = encode_with(&mut kept, &m);
        assert_eq!(kept.blocks_made, 2);
        assert_ne!(third.as_ptr(), at);
        assert_eq!(second, third);
        assert_eq!(Msg::decode(&second[HEADER_LEN..]).unwrap(), m);
    }

    #[test]
    fn a_message_under_half_the_kept_memory_gets_its_own() {
        let mut kept = Kept::default();
        drop(encode_with(&mut kept, &framed_as(300_000)));
        // Half of it still reuses it.
        drop(encode_with(&mut kept, &framed_as(150_000)));
        assert_eq!(kept.blocks_made, 1);
        // Under half: new memory of exactly its size, which is kept.
        let small = encode_with(&mut kept, &framed_as(149_999));
        assert_eq!((kept.blocks_made, kept.block), (2, 149_999));
        drop(small);
        // Larger than the kept memory: new memory again.
        drop(encode_with(&mut kept, &framed_as(150_000)));
        assert_eq!((kept.blocks_made, kept.block), (3, 150_000));
    }

    #[test]
    fn only_large_uncompressed_messages_go_through_the_thread_buffer() {
        let blocks = || ENCODING.with(|cell| cell.borrow().blocks_made);
        drop(encode(&framed_as(KEEP_FROM - 1), Encoding::Identity, usize::MAX).unwrap());
        drop(encode(&framed_as(KEEP_AT_MOST + 1), Encoding::Identity, usize::MAX).unwrap());
        drop(encode(&framed_as(KEEP_FROM), Encoding::Gzip, usize::MAX).unwrap());
        assert_eq!(blocks(), 0);
        let m = framed_as(KEEP_FROM);
        let first = encode(&m, Encoding::Identity, usize::MAX).unwrap();
        let at = first.as_ptr();
        drop(first);
        let again = encode(&m, Encoding::Identity, usize::MAX).unwrap();
        assert_eq!((again.as_ptr(), blocks()), (at, 1));
        let most = framed_as(KEEP_AT_MOST);
        let last = encode(&most, Encoding::Identity, usize::MAX).unwrap();
        assert_eq!(blocks(), 2);
        assert_eq!(Msg::decode(&again[HEADER_LEN..]).unwrap(), m);
        assert_eq!(Msg::decode(&last[HEADER_LEN..]).unwrap(), most);
    }

    #[test]
    fn an_encoding_buffer_in_use_is_stood_in_for() {
        let m = framed_as(KEEP_FROM);
        let frame = ENCODING.with(|cell| {
            let _held = cell.borrow_mut();
            encode(&m, Encoding::Identity, usize::MAX).unwrap()
        });
        assert_eq!(Msg::decode(&frame[HEADER_LEN..]).unwrap(), m);
        assert_eq!(ENCODING.with(|cell| cell.borrow().blocks_made), 0);
    }

    #[test]
    fn spanning_messages_are_copied_together_in_the_assembling_buffer() {
        let blocks = || ASSEMBLING.with(|cell| cell.borrow().blocks_made);
        let large = vec![7u8; 100_000];
        let small = vec![8u8; 40_000];
        let mut wire = BytesMut::new();
        for payload in [&large, &large, &small, &large] {
            encode_frame(payload, false, &mut wire).unwrap();
        }
        let mut decoder = FrameDecoder::new(1 << 20);
        for piece in wire.freeze().chunks(16 * 1024) {
            decoder.push(Bytes::copy_from_slice(piece));
        }
        let first = next_frame(&mut decoder).unwrap().unwrap();
        let at = first.payload.as_ptr();
        assert_eq!((&first.payload[..], blocks()), (&large[..], 1));
        drop(first);
        let second = next_frame(&mut decoder).unwrap().unwrap();
        assert_eq!((second.payload.as_ptr(), blocks()), (at, 1));
        // Small: its own memory.
        let third = next_frame(&mut decoder).unwrap().unwrap();
        assert_eq!((&third.payload[..], blocks()), (&small[..], 1));
        // The second is still held: new memory, the second untouched.
        let fourth = next_frame(&mut decoder).unwrap().unwrap();
        assert_eq!(blocks(), 2);
        assert_eq!(
            (&second.payload[..], &fourth.payload[..]),
            (&large[..], &large[..])
        );
    }
}
