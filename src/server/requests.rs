//! A call's request messages: [`RequestReader`], the plain state machine
//! fed the connection's [`Inbound`] events, and [`Requests`], the blocking
//! iterator a handler reads, which feeds it from the call's mailbox.

use std::marker::PhantomData;
use std::sync::Arc;

use prost::Message;

use crate::rt::call_state::CallState;
use crate::rt::mailbox::Consumer;
use crate::rt::reader::{MessageReader, Received};
use crate::rt::StreamKey;
use crate::server::link::{ConnHandle, Inbound, StreamCmd, Wakeup};
use crate::status::Status;
use crate::wire::compression::Encoding;

/// Where the request stream is.
#[derive(Debug)]
enum Phase {
    /// More may come.
    Open,
    /// The client half-closed: what is buffered is all there is.
    HalfClosed,
    /// The call ended with this error; buffered messages go first.
    Errored(Status),
    /// Over: the end or an error has been reported.
    Done,
}

/// What the reader has for its handler.
#[derive(Debug)]
pub(crate) enum NextRequest {
    /// A message.
    Message(Received),
    /// Nothing until the next event.
    NeedMore,
    /// The client finished sending (reported once; then again and again).
    End,
    /// The call failed; reported once, then [`NextRequest::End`].
    Failed(Status),
}

/// The request side of a server call, fed events and asked for messages.
#[derive(Debug)]
pub(crate) struct RequestReader {
    reader: MessageReader,
    phase: Phase,
}

impl RequestReader {
    /// A reader of messages up to `max_receive` bytes, compressed (when
    /// flagged) with `encoding`.
    pub(crate) fn new(max_receive: usize, encoding: Encoding) -> Self {
        let mut reader = MessageReader::new(max_receive);
        reader.set_encoding(encoding);
        RequestReader {
            reader,
            phase: Phase::Open,
        }
    }

    /// Takes in one event from the connection thread.
    pub(crate) fn on_event(&mut self, event: Inbound) {
        if !matches!(self.phase, Phase::Open) {
            return;
        }
        match event {
            Inbound::Data(chunk) => self.reader.push(chunk),
            Inbound::End => self.phase = Phase::HalfClosed,
            Inbound::Error(status) => self.phase = Phase::Errored(status),
        }
    }

    /// The next thing to tell the handler.
    pub(crate) fn next(&mut self) -> NextRequest {
        if matches!(self.phase, Phase::Done) {
            return NextRequest::End;
        }
        match self.reader.next() {
            Ok(Some(message)) => return NextRequest::Message(message),
            Ok(None) => {}
            Err(status) => return self.fail(status),
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Open => {
                self.phase = Phase::Open;
                NextRequest::NeedMore
            }
            Phase::HalfClosed => match self.reader.finish() {
                Ok(()) => NextRequest::End,
                Err(status) => NextRequest::Failed(status),
            },
            Phase::Errored(status) => NextRequest::Failed(status),
            Phase::Done => NextRequest::End,
        }
    }

    /// Ends the stream with `status` (a message that did not decode).
    pub(crate) fn fail(&mut self, status: Status) -> NextRequest {
        self.phase = Phase::Done;
        NextRequest::Failed(status)
    }

    /// Whether part of a next message has arrived, but not all of it.
    pub(crate) fn is_mid_message(&self) -> bool {
        self.reader.is_mid_message()
    }

    /// Credit to return now (see [`MessageReader::credit`]).
    pub(crate) fn credit(&mut self, about_to_wait: bool) -> Option<usize> {
        self.reader.credit(about_to_wait)
    }
}

/// The request messages of a call, as a blocking iterator.
///
/// `next()` waits for the client's next message. Flow-control credit goes
/// back to the client only as messages are taken from here, so a handler
/// that stops reading stops its client once the stream's window is full,
/// and memory stays bounded. The iterator ends (`None`) when the client
/// finishes sending; it yields `Err` if the call is cancelled or a message
/// cannot be decoded, and then ends.
pub struct Requests<T> {
    inbox: Consumer<Inbound>,
    reader: RequestReader,
    state: Arc<CallState>,
    conn: Arc<ConnHandle>,
    key: StreamKey,
    /// The connection returns the credit itself (a single-message request
    /// on a worker): nothing to send back.
    credited_on_arrival: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T> Requests<T> {
    pub(crate) fn new(
        inbox: Consumer<Inbound>,
        reader: RequestReader,
        state: Arc<CallState>,
        conn: Arc<ConnHandle>,
        key: StreamKey,
        credited_on_arrival: bool,
    ) -> Self {
        Requests {
            inbox,
            reader,
            state,
            conn,
            key,
            credited_on_arrival,
            _message: PhantomData,
        }
    }

    /// Returns credit the reader says is due.
    fn return_credit(&mut self, about_to_wait: bool, wakeup: Wakeup) {
        if self.credited_on_arrival {
            return;
        }
        if let Some(n) = self.reader.credit(about_to_wait) {
            self.conn.send(self.key, StreamCmd::Release(n), wakeup);
        }
    }

    /// The next event from the connection thread, waiting for it.
    fn next_event(&mut self) -> Inbound {
        let ended = || Inbound::Error(Status::cancelled("the call ended"));
        match self.inbox.try_recv() {
            Ok(Some(event)) => event,
            Ok(None) => {
                // About to block: give back what was consumed first, or the
                // client may be waiting for exactly that credit.
                self.return_credit(true, Wakeup::Now);
                self.inbox.recv().unwrap_or_else(ended)
            }
            Err(()) => ended(),
        }
    }
}

impl<T: Message + Default> Requests<T> {
    /// Exactly one message, as unary and server-streaming calls require.
    pub(crate) fn single(&mut self) -> Result<T, Status> {
        let first = match self.next() {
            Some(r) => r?,
            // A cardinality violation: UNIMPLEMENTED (doc/statuscodes.md).
            None => {
                return Err(Status::unimplemented(
                    "the client sent no request message for a unary request",
                ))
            }
        };
        // The end must follow. A second message fails the call as soon as
        // any of it is here: its credit may be held back (see
        // `rt::reader::Credit::OnArrival`), so its client may never send it
        // whole.
        loop {
            match self.reader.next() {
                NextRequest::NeedMore if !self.reader.is_mid_message() => {
                    let event = self.next_event();
                    self.reader.on_event(event);
                    self.return_credit(false, Wakeup::Now);
                }
                NextRequest::End => break,
                NextRequest::Failed(status) => return Err(status),
                NextRequest::Message(_) | NextRequest::NeedMore => {
                    return Err(Status::unimplemented(
                        "the client sent more than one request message for a unary request",
                    ))
                }
            }
        }
        // The response that follows wakes the connection thread.
        self.return_credit(true, Wakeup::Later);
        Ok(first)
    }
}

impl<T: Message + Default> Iterator for Requests<T> {
    type Item = Result<T, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.reader.next() {
                NextRequest::Message(m) => {
                    self.state.set_received_compressed(m.compressed);
                    self.state.note_received(m.wire_len);
                    return Some(T::decode(m.payload).map_err(|e| {
                        let status =
                            Status::internal(format!("failed to decode the request message: {e}"));
                        self.reader.fail(status.clone());
                        status
                    }));
                }
                NextRequest::NeedMore => {
                    let event = self.next_event();
                    self.reader.on_event(event);
                    self.return_credit(false, Wakeup::Now);
                }
                NextRequest::End => return None,
                NextRequest::Failed(status) => return Some(Err(status)),
            }
        }
    }
}

impl<T> Drop for Requests<T> {
    fn drop(&mut self) {
        self.return_credit(true, Wakeup::Now);
    }
}

impl<T> std::fmt::Debug for Requests<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use bytes::{Bytes, BytesMut};

    fn framed(payload: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        crate::wire::framing::encode_frame(payload, false, &mut out).unwrap();
        out.freeze()
    }

    #[track_caller]
    fn assert_message(next: NextRequest, payload: &[u8]) {
        match next {
            NextRequest::Message(m) => assert_eq!(&m.payload[..], payload),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn messages_then_the_end() {
        let mut r = RequestReader::new(100, Encoding::Identity);
        assert!(matches!(r.next(), NextRequest::NeedMore));
        let mut two = framed(b"a").to_vec();
        two.extend_from_slice(&framed(b"bc"));
        r.on_event(Inbound::Data(Bytes::from(two)));
        r.on_event(Inbound::End);
        assert_message(r.next(), b"a");
        assert_message(r.next(), b"bc");
        assert!(matches!(r.next(), NextRequest::End));
        assert!(matches!(r.next(), NextRequest::End));
    }

    #[test]
    fn an_error_comes_after_the_messages_before_it_once() {
        let mut r = RequestReader::new(100, Encoding::Identity);
        r.on_event(Inbound::Data(framed(b"x")));
        r.on_event(Inbound::Error(Status::cancelled("gone")));
        r.on_event(Inbound::Data(framed(b"ignored")));
        assert_message(r.next(), b"x");
        match r.next() {
            NextRequest::Failed(s) => assert_eq!(s.code(), Code::Cancelled),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.next(), NextRequest::End));
    }

    #[test]
    fn a_stream_cut_inside_a_message_fails() {
        let mut r = RequestReader::new(100, Encoding::Identity);
        r.on_event(Inbound::Data(framed(b"abc").slice(..4)));
        assert!(matches!(r.next(), NextRequest::NeedMore));
        r.on_event(Inbound::End);
        match r.next() {
            NextRequest::Failed(s) => assert_eq!(s.code(), Code::Internal),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_decode_failure_ends_the_stream() {
        let mut r = RequestReader::new(100, Encoding::Identity);
        r.on_event(Inbound::Data(framed(b"a")));
        r.on_event(Inbound::Data(framed(b"b")));
        assert_message(r.next(), b"a");
        assert!(matches!(
            r.fail(Status::internal("bad")),
            NextRequest::Failed(_)
        ));
        assert!(matches!(r.next(), NextRequest::End));
    }

    #[test]
    fn credit_follows_what_was_taken_in() {
        let mut r = RequestReader::new(1 << 20, Encoding::Identity);
        r.on_event(Inbound::Data(framed(&[7; 100])));
        assert_eq!(r.credit(false), None);
        assert_eq!(r.credit(true), Some(105));
    }
}
