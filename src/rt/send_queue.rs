//! A stream's outgoing message bytes, waiting for HTTP/2 flow control.
//!
//! h2's `send_data` buffers whatever it is given, ignoring the peer's window,
//! so the connection thread keeps outgoing bytes here and hands h2 only what
//! the window allows (`reserve_capacity` / `poll_capacity`). Small queued
//! messages are coalesced into one DATA frame: fewer frames cost less on
//! both sides, and keep peers' small-frame flood defences (h2's DATA frame
//! budget, for one) quiet.

use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::SendStream;

use crate::wire::chunks::Chunks;

/// The most bytes copied together into one coalesced DATA payload.
const COALESCE_LIMIT: usize = 16 * 1024;

/// The most bytes a stream hands h2 before h2 has given it any capacity
/// (see [`SendQueue::flush`]).
const EAGER_LIMIT: usize = 16 * 1024;

/// Queued bytes of one stream.
#[derive(Default)]
pub(crate) struct SendQueue {
    chunks: Chunks,
    bytes: usize,
    /// Bytes were handed to h2 already.
    started: bool,
}

/// What a flush did.
pub(crate) struct Flushed {
    /// Bytes handed to h2.
    pub sent: usize,
    /// The end of the stream was sent with the last bytes (or alone).
    pub ended: bool,
}

impl SendQueue {
    /// Queues framed message bytes.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.bytes += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Takes up to `n` bytes from the front: zero-copy when the front chunk
    /// is large enough, else small chunks copied together.
    fn take(&mut self, n: usize) -> Bytes {
        let single = self.chunks.len() == 1;
        let Some(front) = self.chunks.front_mut() else {
            return Bytes::new();
        };
        if front.len() >= n || single {
            let n = n.min(front.len());
            let chunk = front.split_to(n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            self.bytes -= chunk.len();
            return chunk;
        }
        let n = n.min(COALESCE_LIMIT.max(front.len()));
        let mut buf = BytesMut::with_capacity(n);
        while buf.len() < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let want = (n - buf.len()).min(front.len());
            buf.extend_from_slice(&front[..want]);
            if want == front.len() {
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(want);
            }
        }
        self.bytes -= buf.len();
        buf.freeze()
    }

    /// Hands queued bytes to h2 as far as the peer's window allows; with
    /// `end`, ends the stream once the queue is empty. `Pending` work wakes
    /// `cx` when more capacity arrives.
    ///
    /// A new stream's first bytes, up to [`EAGER_LIMIT`], go to h2 before
    /// it has any capacity: h2 gives a stream capacity only once its
    /// HEADERS are on their way, so waiting for it would send a small
    /// request in two writes (HEADERS, then DATA), and the peer would read
    /// it in two. h2 still sends them only as the peer's window allows.
    pub(crate) fn flush(
        &mut self,
        send: &mut SendStream<Bytes>,
        cx: &mut Context<'_>,
        end: bool,
    ) -> Result<Flushed, h2::Error> {
        let mut flushed = Flushed {
            sent: 0,
            ended: false,
        };
        while !self.chunks.is_empty() {
            send.reserve_capacity(self.bytes);
            let mut cap = send.capacity();
            if cap == 0 {
                match send.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(Some(Err(e))) => return Err(e),
                    // The stream is open (a closed one is `Ready(None)`):
                    // its first bytes can go.
                    Poll::Pending if !self.started && self.bytes <= EAGER_LIMIT => {
                        cap = self.bytes;
                    }
                    Poll::Ready(None) | Poll::Pending => return Ok(flushed),
                }
            }
            let chunk = self.take(cap);
            self.started = true;
            flushed.sent += chunk.len();
            let last = end && self.chunks.is_empty();
            send.send_data(chunk, last)?;
            if last {
                flushed.ended = true;
            }
        }
        if end && !flushed.ended {
            send.send_data(Bytes::new(), true)?;
            flushed.ended = true;
        }
        Ok(flushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_is_zero_copy_for_large_chunks_and_coalesces_small_ones() {
        let mut q = SendQueue::default();
        let big = Bytes::from(vec![1u8; 100]);
        q.push(big.clone());
        let got = q.take(40);
        assert_eq!(got.as_ptr(), big.as_ptr());
        assert_eq!(q.bytes, 60);
        let mut q = SendQueue::default();
        for i in 0..10u8 {
            q.push(Bytes::from(vec![i; 3]));
        }
        let got = q.take(1000);
        assert_eq!(got.len(), 30);
        assert_eq!(&got[..6], &[0, 0, 0, 1, 1, 1]);
        assert!(q.is_empty());
        assert_eq!(q.bytes, 0);
        // A partial take leaves the rest in order.
        for i in 0..4u8 {
            q.push(Bytes::from(vec![i; 3]));
        }
        assert_eq!(&q.take(5)[..], &[0, 0, 0, 1, 1]);
        assert_eq!(&q.take(100)[..], &[1, 2, 2, 2, 3, 3, 3]);
        q.push(Bytes::new());
        assert!(q.is_empty());
    }
}
