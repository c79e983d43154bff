//! [`Chunks`]: a queue of byte chunks that holds its first chunk in place.
//!
//! Most calls' messages travel as one chunk each way: a unary request
//! arrives in one DATA frame, and its reply is framed into one buffer. A
//! queue that keeps its front chunk beside its other ones allocates only
//! when a second chunk waits behind the first, where a `VecDeque` allocates
//! for the first push of every call.

use std::collections::VecDeque;

use bytes::Bytes;

/// A FIFO queue of [`Bytes`]; the front chunk needs no allocation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chunks {
    /// The front chunk; `None` only when the queue is empty.
    front: Option<Bytes>,
    /// The chunks behind it, in order.
    rest: VecDeque<Bytes>,
}

impl Chunks {
    /// Appends `chunk` at the back.
    pub(crate) fn push_back(&mut self, chunk: Bytes) {
        if self.front.is_none() {
            self.front = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    /// The front chunk.
    pub(crate) fn front(&self) -> Option<&Bytes> {
        self.front.as_ref()
    }

    /// The front chunk, to shorten in place.
    pub(crate) fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.front.as_mut()
    }

    /// Removes and returns the front chunk.
    pub(crate) fn pop_front(&mut self) -> Option<Bytes> {
        let front = self.front.take();
        self.front = self.rest.pop_front();
        front
    }

    /// The chunk at `index` from the front.
    pub(crate) fn get(&self, index: usize) -> Option<&Bytes> {
        match index {
            0 => self.front.as_ref(),
            i => self.rest.get(i - 1),
        }
    }

    /// How many chunks wait.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.front.is_some()) + self.rest.len()
    }

    /// True when no chunk waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.front.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn chunks_come_out_in_the_order_they_went_in() {
        let mut q = Chunks::default();
        assert!(q.is_empty());
        assert_eq!(q.pop_front(), None);
        q.push_back(b("a"));
        q.push_back(b("b"));
        q.push_back(b("c"));
        assert_eq!(q.len(), 3);
        assert_eq!(
            (0..4).map(|i| q.get(i).cloned()).collect::<Vec<_>>(),
            [Some(b("a")), Some(b("b")), Some(b("c")), None]
        );
        assert_eq!(q.pop_front(), Some(b("a")));
        q.push_back(b("d"));
        assert_eq!(q.front(), Some(&b("b")));
        let drained: Vec<Bytes> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(drained, [b("b"), b("c"), b("d")]);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn the_front_chunk_shortens_in_place() {
        let mut q = Chunks::default();
        q.push_back(b("hello"));
        q.push_back(b("world"));
        let head = q.front_mut().unwrap().split_to(2);
        assert_eq!(head, b("he"));
        assert_eq!(q.front(), Some(&b("llo")));
        assert_eq!(q.get(1), Some(&b("world")));
    }

    #[test]
    fn one_chunk_at_a_time_never_allocates() {
        let mut q = Chunks::default();
        for _ in 0..3 {
            q.push_back(b("message"));
            assert_eq!(q.pop_front(), Some(b("message")));
        }
        assert_eq!(q.rest.capacity(), 0);
        q.push_back(b("one"));
        q.push_back(b("two"));
        assert!(q.rest.capacity() > 0);
    }
}
