//! The memory each thread keeps for the messages it encodes and copies
//! together, from one message (and one call) to the next.
//!
//! A message to send is encoded in one buffer ([`codec::encode_in`]); a
//! received message that spans DATA chunks is copied together in another
//! ([`FrameDecoder::next_frame_in`]). Each thread keeps one of each, and a
//! message reuses the memory of the thread's last one once nothing refers
//! to that one any more (the connection thread has sent it, or it was
//! decoded). Without that, every large message took fresh memory, which
//! glibc's allocator gave back to the system as soon as it was freed: each
//! message then paid a page fault per 4 KiB of its size, a fifth of a
//! server's time on a bidi call of 1 MiB messages.
//!
//! Only messages of at least [`KEEP_FROM`] bytes go through these
//! buffers: a smaller one is allocated on its own as before (the allocator
//! serves it from memory it keeps anyway, and memory shared with a kept
//! buffer would cost it a shared reference count). A buffer that took a
//! message over [`KEEP_AT_MOST`] bytes is let go rather than kept, so a
//! thread holds at most a few times that, and only until it exits.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::status::Status;
use crate::wire::codec;
use crate::wire::compression::Encoding;
use crate::wire::framing::{Frame, FrameDecoder, FrameError, HEADER_LEN};

/// The smallest message encoded or copied together in a kept buffer: twice
/// h2's DATA frame (so a message of a few frames or fewer stays on its own),
/// and half of glibc's default threshold for giving memory back.
pub(crate) const KEEP_FROM: usize = 64 * 1024;

/// The largest message whose memory a thread keeps: gRPC's usual receive
/// limit, with the 5-byte header.
pub(crate) const KEEP_AT_MOST: usize = 4 * 1024 * 1024 + HEADER_LEN;

thread_local! {
    static ENCODING: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    static ASSEMBLING: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Runs `f` with the thread's buffer in `key`; lets the buffer go if the
/// message `f` made of it (its size from `size`) is over [`KEEP_AT_MOST`].
/// A fresh buffer stands in when the thread's is out of reach (in use
/// already, or the thread is exiting).
fn with_kept<R>(
    key: &'static LocalKey<RefCell<BytesMut>>,
    mut f: impl FnMut(&mut BytesMut) -> R,
    size: impl Fn(&R) -> usize,
) -> R {
    let kept = key.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let made = f(&mut buf);
            if size(&made) > KEEP_AT_MOST {
                *buf = BytesMut::new();
            }
            made
        }
        Err(_) => f(&mut BytesMut::new()),
    });
    match kept {
        Ok(made) => made,
        Err(_) => f(&mut BytesMut::new()),
    }
}

/// `message` as one gRPC frame ([`codec::encode_in`]), in the thread's
/// encoding buffer.
pub(crate) fn encode<M: Message>(
    message: &M,
    encoding: Encoding,
    max_size: usize,
) -> Result<Bytes, Status> {
    if message.encoded_len() < KEEP_FROM {
        return codec::encode(message, encoding, max_size);
    }
    with_kept(
        &ENCODING,
        |buf| codec::encode_in(message, encoding, max_size, buf),
        |made| made.as_ref().map_or(0, Bytes::len),
    )
}

/// [`FrameDecoder::next_frame`], copying a message of at least
/// [`KEEP_FROM`] bytes that spans chunks in the thread's assembling buffer.
pub(crate) fn next_frame(decoder: &mut FrameDecoder) -> Result<Option<Frame>, FrameError> {
    with_kept(
        &ASSEMBLING,
        |buf| decoder.next_frame_in(buf, KEEP_FROM),
        |made| match made {
            Ok(Some(frame)) => frame.payload.len(),
            _ => 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::encode_frame;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Msg {
        #[prost(string, tag = "1")]
        text: String,
    }

    fn big(len: usize) -> Msg {
        Msg {
            text: "x".repeat(len),
        }
    }

    #[test]
    fn a_thread_encodes_its_next_message_in_the_memory_of_its_last() {
        let first = encode(&big(300_000), Encoding::Identity, usize::MAX).unwrap();
        let at = first.as_ptr();
        // Still referred to: written elsewhere.
        let second = encode(&big(300_000), Encoding::Identity, usize::MAX).unwrap();
        assert_ne!(second.as_ptr(), at);
        drop(first);
        let at = second.as_ptr();
        drop(second);
        // A later call on the same thread reuses it.
        let third = encode(&big(200_000), Encoding::Gzip, usize::MAX).unwrap();
        assert_eq!(third.as_ptr(), at);
        // Another thread has its own.
        let elsewhere = std::thread::spawn(move || {
            let other = encode(&big(300_000), Encoding::Identity, usize::MAX).unwrap();
            other.as_ptr() as usize
        });
        assert_ne!(elsewhere.join().unwrap(), at as usize);
        let after_third = at.wrapping_add(third.len());
        drop(third);
        // A small message has memory of its own (the kept buffer, which
        // nothing else refers to, still holds the memory above).
        let small = encode(&big(KEEP_FROM / 2), Encoding::Identity, usize::MAX).unwrap();
        assert_ne!(small.as_ptr(), after_third);
        drop(small);
        let large = encode(&big(KEEP_FROM), Encoding::Identity, usize::MAX).unwrap();
        // (Written right after the third, in the memory it reclaimed.)
        assert_eq!(large.as_ptr(), after_third);
    }

    thread_local! {
        static TEST_BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }

    /// A message of `len` bytes made in the test buffer; whether the
    /// buffer has its memory to reuse once the message is dropped.
    fn kept_after(len: usize) -> bool {
        let made = with_kept(
            &TEST_BUF,
            |buf| {
                buf.resize(len, 1);
                buf.split().freeze()
            },
            Bytes::len,
        );
        drop(made);
        TEST_BUF.with(|cell| cell.borrow_mut().try_reclaim(len))
    }

    #[test]
    fn a_message_over_the_keeping_limit_is_not_kept() {
        assert!(kept_after(KEEP_AT_MOST));
        assert!(!kept_after(KEEP_AT_MOST + 1));
        assert!(kept_after(1000));
    }

    #[test]
    fn a_buffer_in_use_is_stood_in_for() {
        let inner = TEST_BUF.with(|cell| {
            let _held = cell.borrow_mut();
            with_kept(&TEST_BUF, |buf| buf.capacity(), |_| 0)
        });
        assert_eq!(inner, 0);
    }

    #[test]
    fn a_thread_copies_spanning_messages_together_in_the_memory_of_its_last() {
        let payload = vec![7u8; 100_000];
        let mut wire = BytesMut::new();
        for _ in 0..3 {
            encode_frame(&payload, false, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut decoder = FrameDecoder::new(1 << 20);
        for piece in wire.chunks(16 * 1024) {
            decoder.push(Bytes::copy_from_slice(piece));
        }
        let first = next_frame(&mut decoder).unwrap().unwrap();
        let at = first.payload.as_ptr();
        assert_eq!(first.payload, payload);
        drop(first);
        let second = next_frame(&mut decoder).unwrap().unwrap();
        assert_eq!(second.payload.as_ptr(), at);
        assert_eq!(second.payload, payload);
        // Held: the third goes elsewhere and the second is untouched.
        let third = next_frame(&mut decoder).unwrap().unwrap();
        assert_ne!(third.payload.as_ptr(), at);
        assert_eq!(
            (second.payload, third.payload),
            (payload.clone().into(), payload.into())
        );
    }
}
