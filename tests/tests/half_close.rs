//! How a request stream ends on the wire (issue #9).
//!
//! grpc/grpc `doc/PROTOCOL-HTTP2.md`: "In scenarios where the Request stream
//! needs to be closed but no data remains to be sent implementations MUST
//! send an empty DATA frame with this flag set." Our client once put
//! END_STREAM on the request HEADERS when the request was over before its
//! stream opened (a bidi call half-closed before its first message, on a
//! connection still in its handshake), and grpc-go 1.33's server never
//! answered such a call: the interop case `empty_stream` hung.
//!
//! Our client against a server written frame by frame
//! ([`grpc_blocking_tests::frame_recorder`]) that records every frame and
//! refuses a request whose HEADERS carry END_STREAM. Every case runs on:
//! - a fresh connection (a lazy channel: the call opens the connection, so
//!   the request may be complete before the HTTP/2 handshake is; several
//!   rounds, each on a new connection);
//! - a busy one (other calls in flight on the same channel);
//! - a full one (the server allows two concurrent streams and two calls
//!   hold them, so the case's calls wait for a free stream and their
//!   requests are complete before their streams open).
//!
//! And the other side: our server still accepts END_STREAM on the request
//! HEADERS from lenient clients (strict in what we send, tolerant in what
//! we accept).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use grpc_blocking::{CallOptions, Channel, Code, Metadata, RequestSink, Streaming};
use grpc_blocking_examples::nameko::{ExampleReply, ExampleRequest, ExampleServer};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::frame_recorder::{
    describe, stream_frames, streams_tagged, FrameRecorder, Recorded,
};
use grpc_blocking_tests::raw::{code, flag, kind};
use grpc_blocking_tests::raw_h2::{parse_frames, RawClient};
use grpc_blocking_tests::support::{req, serve, with_timeout};
use prost::Message as _;

const UNARY_UNARY: &str = "/nameko.example/unary_unary";
const UNARY_STREAM: &str = "/nameko.example/unary_stream";
const STREAM_UNARY: &str = "/nameko.example/stream_unary";
const STREAM_STREAM: &str = "/nameko.example/stream_stream";

/// How long any one wait of these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// How many fresh connections each case runs on.
const FRESH_ROUNDS: usize = 5;

/// The calls holding a busy connection.
const BUSY_CALLS: usize = 2;

/// How a call's request stream must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Half-closed: the last request frame is a DATA frame with END_STREAM.
    HalfClose,
    /// Reset by the client (RST_STREAM CANCEL); END_STREAM, if any, only on
    /// a DATA frame.
    Cancel,
}

/// A started call of a case: waits for its outcome (asserting it), and
/// says how its stream must have ended.
struct Started {
    tag: String,
    ending: Ending,
    finish: Box<dyn FnOnce(&FrameRecorder) + Send>,
}

/// A case: starts its call on `channel`, tagged `x-case: tag`, without
/// waiting for the server.
type Case = fn(&Channel, String) -> Started;

fn tagged(tag: &str) -> CallOptions {
    let mut md = Metadata::new();
    md.insert("x-case", tag).expect("an ASCII tag");
    CallOptions::new().metadata(md).timeout(WAIT)
}

/// Reads a response stream to its end; returns the replies (the call must
/// succeed).
fn drain(mut stream: Streaming<ExampleReply>, tag: &str) -> Vec<(String, i32)> {
    let mut replies = Vec::new();
    for reply in &mut stream {
        match reply {
            Ok(r) => replies.push((r.message, r.seqno)),
            Err(status) => panic!("{tag}: the call failed: {status:?}"),
        }
    }
    replies
}

/// A bidi call half-closed before its first message (interop
/// `empty_stream`).
fn bidi_half_closed_before_first_message(channel: &Channel, tag: String) -> Started {
    let (sink, stream) =
        channel.bidi_streaming_sender::<ExampleRequest, ExampleReply>(STREAM_STREAM, tagged(&tag));
    sink.finish();
    let t = tag.clone();
    Started {
        tag,
        ending: Ending::HalfClose,
        finish: Box::new(move |_| assert_eq!(drain(stream, &t), vec![], "{t}: no replies")),
    }
}

/// A client-streaming call with zero messages.
fn client_streaming_zero_messages(channel: &Channel, tag: String) -> Started {
    let (sink, call) =
        channel.client_streaming_sender::<ExampleRequest, ExampleReply>(STREAM_UNARY, tagged(&tag));
    sink.finish();
    let t = tag.clone();
    Started {
        tag,
        ending: Ending::HalfClose,
        finish: Box::new(move |recorder| {
            let reply = call
                .wait()
                .unwrap_or_else(|s| panic!("{t}: {s:?}; frames: {}", describe(&recorder.frames())));
            assert_eq!(reply.seqno, 0, "{t}: the server saw no request message");
        }),
    }
}

/// The same through the iterator form (the request feeder ends it).
fn client_streaming_empty_iterator(channel: &Channel, tag: String) -> Started {
    let call = channel.client_streaming_start::<ExampleRequest, ExampleReply, _>(
        STREAM_UNARY,
        Vec::new(),
        tagged(&tag),
    );
    let t = tag.clone();
    Started {
        tag,
        ending: Ending::HalfClose,
        finish: Box::new(move |recorder| {
            let reply = call
                .wait()
                .unwrap_or_else(|s| panic!("{t}: {s:?}; frames: {}", describe(&recorder.frames())));
            assert_eq!(reply.seqno, 0, "{t}: the server saw no request message");
        }),
    }
}

/// A bidi call whose sink is dropped, without `finish()`, after one
/// message.
fn sink_dropped_after_a_message(channel: &Channel, tag: String) -> Started {
    let (mut sink, stream) =
        channel.bidi_streaming_sender::<ExampleRequest, ExampleReply>(STREAM_STREAM, tagged(&tag));
    sink.send(req("one", 3)).expect("send a request");
    drop(sink);
    let t = tag.clone();
    Started {
        tag,
        ending: Ending::HalfClose,
        finish: Box::new(move |_| {
            assert_eq!(drain(stream, &t), vec![("one".to_string(), 3)], "{t}");
        }),
    }
}

/// A client-streaming call whose sink is dropped, without `finish()`,
/// before any message.
fn sink_dropped_before_any_message(channel: &Channel, tag: String) -> Started {
    let (sink, call) =
        channel.client_streaming_sender::<ExampleRequest, ExampleReply>(STREAM_UNARY, tagged(&tag));
    drop::<RequestSink<ExampleRequest>>(sink);
    let t = tag.clone();
    Started {
        tag,
        ending: Ending::HalfClose,
        finish: Box::new(move |recorder| {
            let reply = call
                .wait()
                .unwrap_or_else(|s| panic!("{t}: {s:?}; frames: {}", describe(&recorder.frames())));
            assert_eq!(reply.seqno, 0, "{t}: the server saw no request message");
        }),
    }
}

/// A bidi call cancelled once its request headers reached the server, its
/// request stream still open: RST_STREAM, no END_STREAM needed.
fn cancelled_call(channel: &Channel, tag: String) -> Started {
    let (mut sink, mut stream) =
        channel.bidi_streaming_sender::<ExampleRequest, ExampleReply>(STREAM_STREAM, tagged(&tag));
    sink.send(req("before the cancel", 1))
        .expect("send a request");
    let t = tag.clone();
    Started {
        tag,
        ending: Ending::Cancel,
        finish: Box::new(move |recorder| {
            recorder.wait_until(&format!("the headers of {t}"), WAIT, |f| {
                !streams_tagged(f, &t).is_empty()
            });
            stream.cancel();
            match stream.next() {
                Some(Err(status)) => assert_eq!(status.code(), Code::Cancelled, "{t}: {status:?}"),
                other => panic!("{t}: after the cancel: {other:?}"),
            }
            recorder.wait_until(&format!("the reset of {t}"), WAIT, |f| {
                streams_tagged(f, &t).iter().all(|&(conn, stream)| {
                    stream_frames(f, conn, stream)
                        .iter()
                        .any(|r| r.kind == kind::RST_STREAM)
                })
            });
            drop(sink);
        }),
    }
}

/// A unary call: the message's DATA carries END_STREAM, or an empty DATA
/// with END_STREAM follows it.
fn unary(channel: &Channel, tag: String) -> Started {
    let call =
        channel.unary_start::<ExampleRequest, ExampleReply>(UNARY_UNARY, req("u", 2), tagged(&tag));
    let t = tag.clone();
    Started {
        tag,
        ending: Ending::HalfClose,
        finish: Box::new(move |recorder| {
            let reply = call
                .wait()
                .unwrap_or_else(|s| panic!("{t}: {s:?}; frames: {}", describe(&recorder.frames())));
            assert_eq!(reply.seqno, 1, "{t}: the server saw one request message");
        }),
    }
}

/// A server-streaming call, likewise.
fn server_streaming(channel: &Channel, tag: String) -> Started {
    let stream = channel.server_streaming::<ExampleRequest, ExampleReply>(
        UNARY_STREAM,
        req("s", 7),
        tagged(&tag),
    );
    let t = tag.clone();
    Started {
        tag,
        ending: Ending::HalfClose,
        finish: Box::new(move |_| {
            assert_eq!(drain(stream, &t), vec![("s".to_string(), 7)], "{t}");
        }),
    }
}

/// Asserts the spec's form on the request stream of the call tagged `tag`.
fn assert_spec_form(frames: &[Recorded], tag: &str, ending: Ending) {
    let streams = streams_tagged(frames, tag);
    assert_eq!(
        streams.len(),
        1,
        "{tag}: one request stream expected; the recorder saw: {}",
        describe(frames)
    );
    let (conn, stream) = streams[0];
    // The frames that open, carry and end the request.
    let request: Vec<Recorded> = stream_frames(frames, conn, stream)
        .into_iter()
        .filter(|f| {
            matches!(
                f.kind,
                kind::HEADERS | kind::CONTINUATION | kind::DATA | kind::RST_STREAM
            )
        })
        .collect();
    let what = format!("{tag} (conn {conn} stream {stream}):{}", describe(&request));
    let first = request.first().expect("the stream has frames");
    assert_eq!(first.kind, kind::HEADERS, "{what}");
    assert!(
        !first.has(flag::END_STREAM),
        "{what}: END_STREAM on the request HEADERS"
    );
    let ended: Vec<&Recorded> = request
        .iter()
        .filter(|f| f.kind != kind::RST_STREAM && f.has(flag::END_STREAM))
        .collect();
    assert!(
        ended.iter().all(|f| f.kind == kind::DATA),
        "{what}: END_STREAM on a frame other than DATA"
    );
    let last = request.last().expect("the stream has frames");
    match ending {
        Ending::HalfClose => {
            assert_eq!(ended.len(), 1, "{what}: one DATA frame with END_STREAM");
            assert!(
                last.kind == kind::DATA && last.has(flag::END_STREAM),
                "{what}: the request must end with DATA carrying END_STREAM"
            );
        }
        Ending::Cancel => {
            assert!(ended.len() <= 1, "{what}");
            assert_eq!(last.kind, kind::RST_STREAM, "{what}: reset by the client");
        }
    }
    if ending == Ending::Cancel {
        assert_eq!(
            last.reset_code,
            Some(code::CANCEL),
            "{what}: RST_STREAM CANCEL"
        );
    }
}

fn next_tag(case: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{case}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs `case` on [`FRESH_ROUNDS`] fresh connections, one after the other.
fn on_fresh_connections(name: &'static str, case: Case) {
    with_timeout(120, move || {
        let recorder = FrameRecorder::start();
        for _ in 0..FRESH_ROUNDS {
            // Lazy: the call opens the connection.
            let channel = Channel::connect_lazy(recorder.target()).expect("a channel");
            let started = case(&channel, next_tag(name));
            let (tag, ending) = (started.tag.clone(), started.ending);
            (started.finish)(&recorder);
            assert_spec_form(&recorder.frames(), &tag, ending);
        }
        let conns: std::collections::BTreeSet<usize> =
            recorder.frames().iter().map(|f| f.conn).collect();
        assert_eq!(conns.len(), FRESH_ROUNDS, "one connection per round");
    });
}

/// Calls that hold streams open on a channel: bidi calls whose request
/// streams stay open until [`Busy::release`].
struct Busy {
    calls: Vec<(String, RequestSink<ExampleRequest>, Streaming<ExampleReply>)>,
}

impl Busy {
    /// Opens [`BUSY_CALLS`] calls and waits until the server has their
    /// headers.
    fn open(channel: &Channel, recorder: &FrameRecorder) -> Busy {
        let calls: Vec<_> = (0..BUSY_CALLS)
            .map(|_| {
                let tag = next_tag("busy");
                let (mut sink, stream) = channel
                    .bidi_streaming_sender::<ExampleRequest, ExampleReply>(
                        STREAM_STREAM,
                        tagged(&tag),
                    );
                sink.send(req("busy", 1)).expect("send a busy request");
                (tag, sink, stream)
            })
            .collect();
        recorder.wait_until("the busy calls' headers", WAIT, |f| {
            calls
                .iter()
                .all(|(tag, _, _)| !streams_tagged(f, tag).is_empty())
        });
        Busy { calls }
    }

    /// Ends the busy calls' requests and checks their outcomes and frames.
    fn release(self, recorder: &FrameRecorder) {
        let mut tags = Vec::new();
        for (tag, sink, stream) in self.calls {
            sink.finish();
            assert_eq!(drain(stream, &tag), vec![("busy".to_string(), 1)], "{tag}");
            tags.push(tag);
        }
        let frames = recorder.frames();
        for tag in tags {
            assert_spec_form(&frames, &tag, Ending::HalfClose);
        }
    }
}

/// Runs `case` on a connection with [`BUSY_CALLS`] other calls in flight.
fn on_a_busy_connection(name: &'static str, case: Case) {
    with_timeout(120, move || {
        let recorder = FrameRecorder::start();
        let channel = Channel::connect(recorder.target()).expect("connect");
        let busy = Busy::open(&channel, &recorder);
        let started = case(&channel, next_tag(name));
        let (tag, ending) = (started.tag.clone(), started.ending);
        (started.finish)(&recorder);
        assert_spec_form(&recorder.frames(), &tag, ending);
        busy.release(&recorder);
    });
}

/// Runs `case` twice on a connection whose every stream is taken (the
/// server allows [`BUSY_CALLS`]): the first call waits inside h2, the
/// second in our connection's queue, both with their requests complete
/// before their streams open; then the busy calls end.
fn on_a_full_connection(name: &'static str, case: Case) {
    with_timeout(120, move || {
        let max = u32::try_from(BUSY_CALLS).expect("a few calls");
        let recorder = FrameRecorder::with_max_concurrent_streams(Some(max));
        let channel = Channel::connect(recorder.target()).expect("connect");
        // The client has acknowledged the server's SETTINGS: it knows the
        // limit.
        recorder.wait_until("the client's SETTINGS ACK", WAIT, |f| {
            f.iter()
                .any(|r| r.kind == kind::SETTINGS && r.has(flag::ACK))
        });
        let busy = Busy::open(&channel, &recorder);
        let waiting: Vec<Started> = (0..2).map(|_| case(&channel, next_tag(name))).collect();
        let mut busy = Some(busy);
        for started in waiting {
            let (tag, ending) = (started.tag.clone(), started.ending);
            if let Some(busy) = busy.take() {
                // The cases' calls start only now.
                let frames = recorder.frames();
                assert!(
                    streams_tagged(&frames, &tag).is_empty(),
                    "{tag} opened a stream beyond the server's limit: {}",
                    describe(&frames)
                );
                busy.release(&recorder);
            }
            (started.finish)(&recorder);
            assert_spec_form(&recorder.frames(), &tag, ending);
        }
    });
}

/// One module per case, with a test per kind of connection.
macro_rules! half_close_cases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn fresh_connection() {
                super::on_fresh_connections(stringify!($case), super::$case);
            }

            #[test]
            fn busy_connection() {
                super::on_a_busy_connection(stringify!($case), super::$case);
            }

            #[test]
            fn full_connection() {
                super::on_a_full_connection(stringify!($case), super::$case);
            }
        }
    )*};
}

half_close_cases!(
    bidi_half_closed_before_first_message,
    client_streaming_zero_messages,
    client_streaming_empty_iterator,
    sink_dropped_after_a_message,
    sink_dropped_before_any_message,
    cancelled_call,
    unary,
    server_streaming,
);

// ---------------------------------------------------------------------------
// Tolerant in what we accept

/// Our server answers a request whose HEADERS carry END_STREAM (no DATA at
/// all), as lenient clients send it, as it answers the spec's form (an
/// empty DATA frame with END_STREAM): streams with zero messages succeed
/// (whatever the handler does with no requests), and a method that takes
/// exactly one request fails with UNIMPLEMENTED, the spec's status for a
/// request cardinality violation (doc/statuscodes.md).
#[test]
fn our_server_accepts_end_stream_on_request_headers() {
    let server = serve(ExampleServer::new(ExampleService));
    let addr = server.local_addr();
    with_timeout(60, move || {
        let mut raw = RawClient::connect(addr);

        let resp = raw.call_headers_only(STREAM_STREAM, &[]);
        assert_eq!(resp.grpc_status(), Some(0), "stream_stream: {resp:?}");
        assert!(resp.messages().is_empty(), "stream_stream: {resp:?}");

        let resp = raw.call_headers_only(STREAM_UNARY, &[]);
        assert_eq!(resp.grpc_status(), Some(0), "stream_unary: {resp:?}");
        let replies: Vec<ExampleReply> = parse_frames(&resp.body)
            .into_iter()
            .map(|(compressed, payload)| {
                assert!(!compressed);
                ExampleReply::decode(payload.as_slice()).expect("a reply")
            })
            .collect();
        assert_eq!(
            replies,
            vec![ExampleReply::default()],
            "stream_unary: the handler's reply to no requests"
        );

        for path in [UNARY_UNARY, UNARY_STREAM] {
            let resp = raw.call_headers_only(path, &[]);
            assert_eq!(
                resp.grpc_status(),
                Some(Code::Unimplemented.as_i32()),
                "{path}: {resp:?}"
            );
            assert!(resp.messages().is_empty(), "{path}: {resp:?}");
        }

        // And the same connection still serves a whole call.
        let body = grpc_blocking_tests::raw_h2::frame(false, &req("after", 2).encode_to_vec());
        let resp = raw.call(UNARY_UNARY, &[], body);
        assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
        let reply = ExampleReply::decode(parse_frames(&resp.body)[0].1.as_slice()).unwrap();
        assert_eq!(reply.message, "afterafter");
    });
    drop(server);
}

/// The same answers through the spec's form, from the same raw client: a
/// request ended by an empty DATA frame with END_STREAM.
#[test]
fn our_server_answers_an_empty_data_end_stream_alike() {
    let server = serve(ExampleServer::new(ExampleService));
    let addr = server.local_addr();
    with_timeout(60, move || {
        let mut raw = RawClient::connect(addr);
        let resp = raw.call(STREAM_STREAM, &[], Vec::new());
        assert_eq!(resp.grpc_status(), Some(0), "stream_stream: {resp:?}");
        assert!(resp.messages().is_empty(), "stream_stream: {resp:?}");
        let resp = raw.call(STREAM_UNARY, &[], Vec::new());
        assert_eq!(resp.grpc_status(), Some(0), "stream_unary: {resp:?}");
        assert_eq!(resp.messages().len(), 1, "stream_unary: {resp:?}");
        for path in [UNARY_UNARY, UNARY_STREAM] {
            let resp = raw.call(path, &[], Vec::new());
            assert_eq!(
                resp.grpc_status(),
                Some(Code::Unimplemented.as_i32()),
                "{path}: {resp:?}"
            );
        }
    });
    drop(server);
}

/// The recorder itself refuses END_STREAM on the request HEADERS (so the
/// cases above would see it), and records the frame as sent.
#[test]
fn recorder_refuses_end_stream_on_request_headers() {
    with_timeout(60, || {
        let recorder = FrameRecorder::start();
        let addr = recorder.addr();
        let mut raw = RawClient::connect(addr);
        let resp = raw.call_headers_only(STREAM_STREAM, &[("x-case", "lenient")]);
        assert_eq!(
            resp.grpc_status(),
            Some(Code::Internal.as_i32()),
            "{resp:?}"
        );
        assert_eq!(
            resp.grpc_message(),
            grpc_blocking_tests::frame_recorder::HEADERS_END_STREAM_MESSAGE
        );
        let frames = recorder.frames();
        let (conn, stream) = streams_tagged(&frames, "lenient")[0];
        let headers = &stream_frames(&frames, conn, stream)[0];
        assert_eq!(headers.kind, kind::HEADERS);
        assert!(headers.has(flag::END_STREAM) && headers.has(flag::END_HEADERS));
    });
}
