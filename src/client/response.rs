//! The response side of a client call as a plain state machine:
//! [`ResponseReader`] is fed the connection's [`CallEvent`]s and asked for
//! messages. It checks the headers (HTTP status, content type, compression,
//! Trailers-Only), the size of header blocks, reassembles and decompresses
//! messages, reads the final status from the trailers, and says when the
//! call may be retried (refused before any response) and when its stream
//! must be reset (a failure found on this side).

use crate::client::link::CallEvent;
use crate::client::service_config::RETRY_PUSHBACK_HEADER;
use crate::metadata::Metadata;
use crate::rt::reader::{MessageReader, Received};
use crate::status::Status;
use crate::wire::headers::{self, ResponseHead};

/// The `grpc-retry-pushback-ms` of a header block (several values count as
/// a malformed one: no retry).
fn pushback(headers: &http::HeaderMap) -> Option<Vec<u8>> {
    let mut values = headers.get_all(RETRY_PUSHBACK_HEADER).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(b"-1".to_vec());
    }
    Some(first.as_bytes().to_vec())
}

/// What the caller should do after an event.
#[derive(Debug)]
pub(crate) enum Action {
    /// Carry on reading.
    Continue,
    /// The server never processed the call: start it again if allowed, or
    /// end it with this status ([`ResponseReader::end`]).
    Retry(Status),
}

/// What the reader has for its caller.
#[derive(Debug)]
pub(crate) enum NextResponse {
    /// A response message.
    Message(Received),
    /// Nothing until the next event.
    NeedEvent,
    /// The call ended with OK and every message has been returned.
    End,
    /// The call failed; reported once, then [`NextResponse::End`].
    Failed(Status),
}

/// The response of one call, as it arrives.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    reader: MessageReader,
    max_header_list: usize,
    headers: Option<Metadata>,
    trailers: Option<Metadata>,
    /// The final status, once known.
    status: Option<Status>,
    /// A failed status has been handed to the caller.
    reported: bool,
    /// Whether the last message returned arrived compressed.
    last_compressed: bool,
    /// A failure found here: the stream must be reset.
    reset: bool,
    /// The server sent response headers (not Trailers-Only): the call is
    /// committed, never to be retried.
    committed: bool,
    /// The server's `grpc-retry-pushback-ms`, if it sent one.
    pushback: Option<Vec<u8>>,
}

impl ResponseReader {
    /// A reader for a call just started.
    pub(crate) fn new(max_receive: usize, max_header_list: usize) -> Self {
        ResponseReader {
            reader: MessageReader::new(max_receive),
            max_header_list,
            headers: None,
            trailers: None,
            status: None,
            reported: false,
            last_compressed: false,
            reset: false,
            committed: false,
            pushback: None,
        }
    }

    /// A call that failed before it started (its request could not be
    /// encoded, or no connection could be had).
    pub(crate) fn failed(status: Status) -> Self {
        let mut reader = ResponseReader::new(0, 0);
        reader.end(status);
        reader
    }

    /// Whether the final status is known.
    pub(crate) fn is_over(&self) -> bool {
        self.status.is_some()
    }

    /// The response headers, once they arrived.
    pub(crate) fn headers(&self) -> Option<&Metadata> {
        self.headers.as_ref()
    }

    /// The trailing metadata, once the call is over.
    pub(crate) fn trailers(&self) -> Option<&Metadata> {
        self.trailers.as_ref()
    }

    /// The final status, once known.
    pub(crate) fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// Whether the message last returned arrived compressed.
    pub(crate) fn last_compressed(&self) -> bool {
        self.last_compressed
    }

    /// Whether the server sent response headers (the call is committed).
    pub(crate) fn committed(&self) -> bool {
        self.committed
    }

    /// The server's `grpc-retry-pushback-ms`, when it sent one.
    pub(crate) fn pushback(&self) -> Option<&[u8]> {
        self.pushback.as_deref()
    }

    /// Ends the call with `status` (the first status wins, but a local
    /// failure after an OK replaces it).
    pub(crate) fn end(&mut self, status: Status) {
        if self.headers.is_none() {
            self.headers = Some(Metadata::new());
        }
        self.trailers = Some(status.metadata().clone());
        self.status = Some(status);
    }

    /// Ends the call with a failure found on this side: the stream must be
    /// reset if it is still open. The caller learns the status from
    /// [`next`](Self::next).
    pub(crate) fn abort(&mut self, status: Status) {
        if self.status.is_none() {
            self.reset = true;
        }
        self.end(status);
    }

    /// Ends the call with a failure the caller has already been given (a
    /// message that does not decode, a cardinality violation); the stream is
    /// reset if it is still open.
    pub(crate) fn fail(&mut self, status: Status) {
        self.abort(status);
        self.reported = true;
    }

    /// Whether the stream must be reset now (once).
    pub(crate) fn take_reset(&mut self) -> bool {
        std::mem::take(&mut self.reset)
    }

    /// Takes in one event from the connection thread.
    pub(crate) fn on_event(&mut self, event: CallEvent) -> Action {
        if self.is_over() {
            return Action::Continue;
        }
        let size = match &event {
            CallEvent::Headers(parts) => headers::header_list_size(&parts.headers),
            CallEvent::Trailers(trailers) => headers::header_list_size(trailers),
            _ => 0,
        };
        if size > self.max_header_list {
            self.abort(Status::resource_exhausted(format!(
                "the server sent a header block of {size} bytes, over this client's limit of \
                 {} bytes (ChannelBuilder::max_header_list_size)",
                self.max_header_list
            )));
            return Action::Continue;
        }
        match event {
            CallEvent::Headers(parts) => match headers::parse_response(&parts) {
                Ok(ResponseHead::Messages { metadata, encoding }) => {
                    self.headers = Some(metadata);
                    self.committed = true;
                    self.reader.set_encoding(encoding);
                }
                Ok(ResponseHead::TrailersOnly(status)) => {
                    self.pushback = pushback(&parts.headers);
                    self.end(status)
                }
                Err(status) => self.abort(status),
            },
            CallEvent::Data(chunk) => self.reader.push(chunk),
            CallEvent::Trailers(trailers) => {
                self.pushback = pushback(&trailers);
                self.end(headers::parse_trailers(&trailers))
            }
            CallEvent::End => self.end(Status::internal(
                "the server ended the response without trailers (no grpc-status)",
            )),
            CallEvent::Error(status) => self.end(status),
            CallEvent::Refused(status) if self.headers.is_none() => return Action::Retry(status),
            CallEvent::Refused(status) => self.end(status),
        }
        Action::Continue
    }

    /// Whether part of a next message has arrived, but not all of it.
    pub(crate) fn is_mid_message(&self) -> bool {
        self.reader.is_mid_message()
    }

    /// The next thing to tell the caller.
    pub(crate) fn next(&mut self) -> NextResponse {
        if self.reported {
            return NextResponse::End;
        }
        match self.reader.next() {
            Ok(Some(message)) => {
                self.last_compressed = message.compressed;
                return NextResponse::Message(message);
            }
            Ok(None) => {}
            Err(status) => {
                self.fail(status.clone());
                return NextResponse::Failed(status);
            }
        }
        let Some(status) = &self.status else {
            return NextResponse::NeedEvent;
        };
        if status.code() == crate::code::Code::Ok {
            if let Err(status) = self.reader.finish() {
                self.fail(status.clone());
                return NextResponse::Failed(status);
            }
            return NextResponse::End;
        }
        self.reported = true;
        NextResponse::Failed(status.clone())
    }

    /// Credit to return now (none once the call is over: its stream is
    /// gone).
    pub(crate) fn credit(&mut self, about_to_wait: bool) -> Option<usize> {
        let credit = self.reader.credit(about_to_wait);
        credit.filter(|_| !self.is_over())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::wire::compression::Encoding;
    use bytes::BytesMut;
    use http::{HeaderMap, HeaderValue};

    fn headers_event() -> CallEvent {
        let (parts, ()) = headers::response(&Metadata::new(), Encoding::Identity).into_parts();
        CallEvent::Headers(parts)
    }

    fn trailers_event(status: &Status) -> CallEvent {
        CallEvent::Trailers(headers::trailers(status))
    }

    fn data(payload: &[u8]) -> CallEvent {
        let mut out = BytesMut::new();
        crate::wire::framing::encode_frame(payload, false, &mut out).unwrap();
        CallEvent::Data(out.freeze())
    }

    #[track_caller]
    fn assert_message(next: NextResponse, payload: &[u8]) {
        match next {
            NextResponse::Message(m) => assert_eq!(&m.payload[..], payload),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn reader() -> ResponseReader {
        ResponseReader::new(1 << 20, 16 * 1024)
    }

    #[test]
    fn headers_messages_then_trailers() {
        let mut r = reader();
        assert!(matches!(r.next(), NextResponse::NeedEvent));
        r.on_event(headers_event());
        r.on_event(data(b"one"));
        r.on_event(data(b"two"));
        let mut md = Metadata::new();
        md.insert("x-t", "1").unwrap();
        r.on_event(trailers_event(&Status::new(Code::Ok, "").with_metadata(md)));
        assert_message(r.next(), b"one");
        assert_message(r.next(), b"two");
        assert!(matches!(r.next(), NextResponse::End));
        assert_eq!(r.trailers().unwrap().get("x-t"), Some("1"));
        assert!(!r.take_reset());
    }

    #[test]
    fn messages_before_an_error_come_first_and_the_error_once() {
        let mut r = reader();
        r.on_event(headers_event());
        r.on_event(data(b"one"));
        r.on_event(trailers_event(&Status::not_found("gone")));
        assert_message(r.next(), b"one");
        match r.next() {
            NextResponse::Failed(s) => assert_eq!(s.code(), Code::NotFound),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.next(), NextResponse::End));
    }

    #[test]
    fn trailers_only_ends_the_call_at_the_headers() {
        let mut r = reader();
        let (parts, ()) =
            headers::trailers_only(&Status::unimplemented("no"), &Metadata::new()).into_parts();
        r.on_event(CallEvent::Headers(parts));
        assert!(r.is_over());
        assert!(r.headers().unwrap().is_empty());
        assert!(matches!(r.next(), NextResponse::Failed(s) if s.code() == Code::Unimplemented));
    }

    #[test]
    fn missing_trailers_and_cut_messages_are_internal() {
        let mut r = reader();
        r.on_event(headers_event());
        r.on_event(CallEvent::End);
        assert!(matches!(r.next(), NextResponse::Failed(s) if s.code() == Code::Internal));
        let mut r = reader();
        r.on_event(headers_event());
        let CallEvent::Data(bytes) = data(b"abc") else {
            unreachable!()
        };
        r.on_event(CallEvent::Data(bytes.slice(..6)));
        r.on_event(trailers_event(&Status::new(Code::Ok, "")));
        assert!(matches!(r.next(), NextResponse::Failed(s) if s.code() == Code::Internal));
        assert!(r.take_reset() || r.is_over());
    }

    #[test]
    fn oversize_header_blocks_fail_and_reset() {
        let mut r = ResponseReader::new(1 << 20, 100);
        let (mut parts, ()) = headers::response(&Metadata::new(), Encoding::Identity).into_parts();
        parts
            .headers
            .insert("x-big", HeaderValue::from_str(&"a".repeat(200)).unwrap());
        r.on_event(CallEvent::Headers(parts));
        assert!(r.take_reset());
        match r.next() {
            NextResponse::Failed(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted);
                assert!(s.message().contains("max_header_list_size"), "{s}");
            }
            other => panic!("{other:?}"),
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("x-big", HeaderValue::from_str(&"a".repeat(200)).unwrap());
        let mut r = ResponseReader::new(1 << 20, 100);
        r.on_event(headers_event());
        r.on_event(CallEvent::Trailers(trailers));
        assert!(matches!(r.next(), NextResponse::Failed(s) if s.code() == Code::ResourceExhausted));
    }

    #[test]
    fn a_refusal_is_retryable_only_before_the_headers() {
        let mut r = reader();
        let refused = || CallEvent::Refused(Status::unavailable("refused"));
        assert!(matches!(r.on_event(refused()), Action::Retry(_)));
        assert!(!r.is_over());
        r.on_event(headers_event());
        assert!(matches!(r.on_event(refused()), Action::Continue));
        assert!(matches!(r.next(), NextResponse::Failed(s) if s.code() == Code::Unavailable));
    }

    #[test]
    fn a_local_failure_asks_for_a_reset_once_and_ends_the_call() {
        let mut r = reader();
        r.on_event(headers_event());
        r.fail(Status::internal("did not decode"));
        assert!(r.take_reset());
        assert!(!r.take_reset());
        assert!(matches!(r.next(), NextResponse::End));
        assert_eq!(r.status().unwrap().code(), Code::Internal);
        // After the server's OK, a local failure needs no reset.
        let mut r = reader();
        r.on_event(headers_event());
        r.on_event(trailers_event(&Status::new(Code::Ok, "")));
        r.fail(Status::unimplemented("two replies"));
        assert!(!r.take_reset());
    }

    #[test]
    fn no_credit_once_the_call_is_over() {
        let mut r = reader();
        r.on_event(headers_event());
        r.on_event(data(&[1; 10]));
        assert_eq!(r.credit(true), Some(15));
        r.on_event(data(&[1; 10]));
        r.on_event(CallEvent::Error(Status::cancelled("x")));
        assert_eq!(r.credit(true), None);
    }

    #[test]
    fn a_failed_call_reports_its_status_once() {
        let mut r = ResponseReader::failed(Status::unavailable("no connection"));
        assert!(matches!(r.next(), NextResponse::Failed(s) if s.code() == Code::Unavailable));
        assert!(matches!(r.next(), NextResponse::End));
    }
}
