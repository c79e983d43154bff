//! Four features end to end over loopback TCP: message compression
//! (grpc/grpc `doc/compression.md`), deadlines, cancellation, and rich
//! errors. Protocol corner cases our own client never produces go through
//! the raw HTTP/2 client of `grpc_blocking_tests::raw_h2`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_blocking::error_details::{ErrorDetail, RetryInfo};
use grpc_blocking::internal::compression;
use grpc_blocking::server::{Requests, ResponseSink, ServerContext, UnaryHandlers};
use grpc_blocking::Encoding;
use grpc_blocking::{
    CallOptions, Channel, Code, Metadata, Server, ServerHandle, Status, Streaming, UnaryCall,
};
use grpc_blocking_examples::nameko::{
    Example, ExampleClient, ExampleReply, ExampleRequest, ExampleServer,
};
use grpc_blocking_tests::raw_h2::{frame, RawClient, RawResponse};
use grpc_blocking_tests::stubbed;
use grpc_blocking_tests::support::{every_error_detail, req, serve, target, with_timeout, Gate};
use prost::Message;

const UNARY: &str = "/nameko.example/unary_unary";
const UNARY_STREAM: &str = "/nameko.example/unary_stream";
const STREAM_UNARY: &str = "/nameko.example/stream_unary";

fn reply(message: impl Into<String>, seqno: i32) -> ExampleReply {
    ExampleReply {
        message: message.into(),
        seqno,
    }
}

fn client_of(server: &ServerHandle) -> ExampleClient {
    ExampleClient::connect(target(server)).unwrap()
}

/// What a handler tells the test about its call.
#[derive(Debug, Clone, PartialEq)]
enum Note {
    /// The handler is running (and, for streams, has its first message).
    Started(&'static str),
    /// `ctx.is_cancelled()` became true (false: it never did, within 20 s).
    CancelSeen(&'static str, bool),
    /// The request iterator ended: `None` cleanly, else with this code.
    RequestsEnded(&'static str, Option<Code>),
    /// A `ResponseSink::send` after the cancellation: `None` if it worked.
    SendAfter(&'static str, Option<Code>),
    /// The handler is about to return.
    Done(&'static str),
}

/// The test's end of the notes.
struct Notes(mpsc::Receiver<Note>);

impl Notes {
    fn channel() -> (mpsc::Sender<Note>, Notes) {
        let (tx, rx) = mpsc::channel();
        (tx, Notes(rx))
    }

    /// The next note (within 20 s).
    fn next(&self) -> Note {
        self.0
            .recv_timeout(Duration::from_secs(20))
            .expect("a note from the handler within 20 s")
    }

    /// Asserts the next notes are exactly `expected`, in order.
    fn expect(&self, expected: &[Note]) {
        for e in expected {
            assert_eq!(&self.next(), e);
        }
    }

    /// True if no note arrives within `ms` milliseconds.
    fn quiet_for(&self, ms: u64) -> bool {
        self.0.recv_timeout(Duration::from_millis(ms)).is_err()
    }
}

/// Polls `ctx.is_cancelled()` until it is true (up to 20 s); returns it.
fn wait_cancelled(ctx: &ServerContext) -> bool {
    let start = Instant::now();
    while !ctx.is_cancelled() {
        if start.elapsed() > Duration::from_secs(20) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

// ---------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------

/// Reports what it saw of compression, and sets the response compression
/// when asked. Replies carry "<request compressed>|<response compression>".
struct Compress;

/// The reply text for what the handler saw.
fn seen(ctx: &ServerContext) -> String {
    format!("{}|{}", ctx.request_compressed(), ctx.compression())
}

/// Applies the request's instruction: `value` "set:<encoding>" sets the
/// response compression; "late:<encoding>" sets it after the headers went.
fn apply(value: &str, ctx: &ServerContext) -> Result<(), Status> {
    if let Some(name) = value.strip_prefix("set:") {
        ctx.set_compression(Encoding::parse(name).expect("a known encoding"))?;
    }
    if let Some(name) = value.strip_prefix("late:") {
        ctx.send_initial_metadata(Metadata::new())?;
        ctx.set_compression(Encoding::parse(name).expect("a known encoding"))?;
    }
    Ok(())
}

impl Example for Compress {
    fn unary_unary(&self, r: ExampleRequest, ctx: &ServerContext) -> Result<ExampleReply, Status> {
        // Read before anything changes the response side.
        let before = seen(ctx);
        apply(&r.value, ctx)?;
        Ok(reply(format!("{before}>{}", ctx.compression()), 0))
    }

    fn unary_stream(
        &self,
        r: ExampleRequest,
        ctx: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        apply(&r.value, ctx)?;
        // Compressed, uncompressed, compressed: the flag of the middle one
        // only is clear.
        out.send(reply(seen(ctx), 1))?;
        out.send_uncompressed(reply(seen(ctx), 2))?;
        out.send(reply(seen(ctx), 3))?;
        Ok(())
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let mut flags = Vec::new();
        for r in requests {
            r?;
            flags.push(ctx.request_compressed().to_string());
        }
        Ok(reply(flags.join(","), 0))
    }

    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for (i, r) in requests.enumerate() {
            r?;
            out.send(reply(seen(ctx), i as i32 + 1))?;
        }
        Ok(())
    }
}

const COMPRESSING: [Encoding; 2] = [Encoding::Gzip, Encoding::Deflate];

/// Checks all four patterns on `client` when its requests are compressed
/// with `encoding` (by call options or by the channel's default, `options`
/// is what to call with).
fn check_compressed_both_ways(client: &ExampleClient, encoding: Encoding, options: CallOptions) {
    // Unary: the handler saw a compressed request and answers in kind.
    let resp = client
        .unary_unary_start(req("", 0), options.clone())
        .wait_response()
        .unwrap();
    assert_eq!(resp.message.message, format!("true|{encoding}>{encoding}"));
    assert!(
        resp.compressed,
        "{encoding}: the response was not compressed"
    );

    // Server streaming: compressed, then send_uncompressed, then compressed.
    let mut stream = client.unary_stream_with(req("", 0), options.clone());
    let mut flags = Vec::new();
    while let Some(r) = stream.next() {
        let r = r.unwrap();
        assert_eq!(r.message, format!("true|{encoding}"));
        flags.push(stream.last_message_compressed());
    }
    assert_eq!(flags, vec![true, false, true], "{encoding}");

    // Client streaming: every request arrived compressed; the reply is too.
    let (mut sink, call) = client.stream_unary_sender(options.clone());
    for value in ["a", "b", "c"] {
        sink.send(req(value, 1)).unwrap();
    }
    sink.finish();
    let resp = call.wait_response().unwrap();
    assert_eq!(resp.message.message, "true,true,true");
    assert!(resp.compressed, "{encoding}");

    // Bidi: each reply compressed, each request seen compressed.
    let (mut sink, mut stream) = client.stream_stream_sender(options);
    for _ in 0..2 {
        sink.send(req("a", 1)).unwrap();
        assert_eq!(
            stream.next().unwrap().unwrap().message,
            format!("true|{encoding}")
        );
        assert!(stream.last_message_compressed(), "{encoding}");
    }
    sink.finish();
    assert!(stream.next().is_none());
}

/// Runs the rest of the calling test in a child process (this test binary,
/// filtered to that one test): for behaviour that may abort the process,
/// such as a stack overflow, so that it fails one test and not the whole
/// binary. Returns true in the child, where the test body should run.
fn in_child_process(test_name: &str) -> bool {
    if std::env::var_os("GRPC_BLOCKING_FEATURES_CHILD").is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env("GRPC_BLOCKING_FEATURES_CHILD", "1")
        .output()
        .expect("run the test in a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child process failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    false
}

#[test]
fn compressed_requests_from_the_helper_thread_call_apis() {
    // `stream_unary_with` and `stream_stream_with` send the requests from a
    // helper thread the library starts; compressing there must work too.
    if !in_child_process("compressed_requests_from_the_helper_thread_call_apis") {
        return;
    }
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Compress));
        let client = client_of(&server);
        for encoding in COMPRESSING {
            let options = CallOptions::new().compression(encoding);
            let resp = client
                .stream_unary_start(vec![req("a", 1), req("b", 1)], options.clone())
                .wait_response()
                .unwrap();
            assert_eq!(resp.message.message, "true,true", "{encoding}");
            assert!(resp.compressed, "{encoding}");
            let mut stream = client.stream_stream_with(vec![req("a", 1), req("b", 1)], options);
            let mut n = 0;
            while let Some(r) = stream.next() {
                assert_eq!(r.unwrap().message, format!("true|{encoding}"));
                assert!(stream.last_message_compressed(), "{encoding}");
                n += 1;
            }
            assert_eq!(n, 2, "{encoding}");
            // The blocking client-streaming call sends from the caller.
            let reply = client
                .channel()
                .client_streaming::<_, ExampleReply, _>(
                    ExampleClient::STREAM_UNARY_PATH,
                    vec![req("a", 1)],
                    CallOptions::new().compression(encoding),
                )
                .unwrap();
            assert_eq!(reply.message, "true", "{encoding}");
        }
    });
}

#[test]
fn per_call_compression_each_algorithm_both_directions() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Compress));
        let client = client_of(&server);
        for encoding in COMPRESSING {
            check_compressed_both_ways(&client, encoding, CallOptions::new().compression(encoding));
        }
        // The same channel without per-call compression: identity again.
        let resp = client
            .unary_unary_start(req("", 0), CallOptions::new())
            .wait_response()
            .unwrap();
        assert_eq!(resp.message.message, "false|identity>identity");
        assert!(!resp.compressed);
    });
}

#[test]
fn channel_default_compression_each_algorithm_both_directions() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Compress));
        for encoding in COMPRESSING {
            let channel = Channel::builder(target(&server))
                .default_compression(encoding)
                .connect()
                .unwrap();
            let client = ExampleClient::new(channel);
            check_compressed_both_ways(&client, encoding, CallOptions::new());
            // A call's own choice overrides the channel's default.
            let resp = client
                .unary_unary_start(
                    req("", 0),
                    CallOptions::new().compression(Encoding::Identity),
                )
                .wait_response()
                .unwrap();
            assert_eq!(resp.message.message, "false|identity>identity");
            assert!(!resp.compressed);
            let other = if encoding == Encoding::Gzip {
                Encoding::Deflate
            } else {
                Encoding::Gzip
            };
            let resp = client
                .unary_unary_start(req("", 0), CallOptions::new().compression(other))
                .wait_response()
                .unwrap();
            assert_eq!(resp.message.message, format!("true|{other}>{other}"));
            assert!(resp.compressed);
        }
    });
}

#[test]
fn identity_requests_get_identity_responses() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Compress));
        let client = client_of(&server);
        let resp = client
            .unary_unary_start(req("", 0), CallOptions::new())
            .wait_response()
            .unwrap();
        assert_eq!(resp.message.message, "false|identity>identity");
        assert!(!resp.compressed);
        let mut stream = client.unary_stream(req("", 0));
        let mut n = 0;
        while let Some(r) = stream.next() {
            assert_eq!(r.unwrap().message, "false|identity");
            assert!(!stream.last_message_compressed());
            n += 1;
        }
        assert_eq!(n, 3);
        let resp = client
            .stream_unary_start(vec![req("a", 1), req("b", 1)], CallOptions::new())
            .wait_response()
            .unwrap();
        assert_eq!(resp.message.message, "false,false");
        assert!(!resp.compressed);
        let mut stream = client.stream_stream(vec![req("a", 1)]);
        assert_eq!(stream.next().unwrap().unwrap().message, "false|identity");
        assert!(!stream.last_message_compressed());
        assert!(stream.next().is_none());
    });
}

#[test]
fn a_handler_may_choose_another_algorithm_or_none() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Compress));
        let client = client_of(&server);
        // (request compression, handler's choice, compressed response?)
        let cases = [
            (Encoding::Gzip, Encoding::Deflate, true),
            (Encoding::Deflate, Encoding::Gzip, true),
            (Encoding::Gzip, Encoding::Identity, false),
            (Encoding::Deflate, Encoding::Identity, false),
            (Encoding::Identity, Encoding::Gzip, true),
            (Encoding::Identity, Encoding::Deflate, true),
        ];
        for (request, chosen, compressed) in cases {
            let options = CallOptions::new().compression(request);
            let resp = client
                .unary_unary_start(req(&format!("set:{chosen}"), 0), options.clone())
                .wait_response()
                .unwrap();
            assert_eq!(
                resp.message.message,
                format!(
                    "{}|{}>{chosen}",
                    request != Encoding::Identity,
                    if request == Encoding::Identity {
                        Encoding::Identity
                    } else {
                        request
                    }
                )
            );
            assert_eq!(resp.compressed, compressed, "{request} -> {chosen}");
            let mut stream = client.unary_stream_with(req(&format!("set:{chosen}"), 0), options);
            let mut flags = Vec::new();
            while let Some(r) = stream.next() {
                assert_eq!(
                    r.unwrap().message,
                    format!("{}|{chosen}", request != Encoding::Identity)
                );
                flags.push(stream.last_message_compressed());
            }
            assert_eq!(
                flags,
                vec![compressed, false, compressed],
                "{request} -> {chosen}"
            );
        }

        // On the wire: the response names the handler's algorithm in
        // grpc-encoding and its message is compressed with exactly that.
        let mut raw = RawClient::connect(server.local_addr());
        let mut packed = Vec::new();
        compression::compress(
            Encoding::Gzip,
            &req("set:deflate", 0).encode_to_vec(),
            &mut packed,
        )
        .unwrap();
        let resp = raw.call(
            UNARY,
            &[
                ("grpc-encoding", "gzip"),
                ("grpc-accept-encoding", "gzip,deflate"),
            ],
            frame(true, &packed),
        );
        assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
        assert_eq!(resp.header("grpc-encoding"), Some("deflate"));
        let messages = resp.messages();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].0, "the compressed flag is set");
        let plain = compression::decompress(Encoding::Deflate, &messages[0].1, 1 << 20).unwrap();
        assert_eq!(
            ExampleReply::decode(&plain[..]).unwrap().message,
            "true|gzip>deflate"
        );
    });
}

#[test]
fn response_sink_send_uncompressed_clears_the_flag_of_that_message_only() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Compress));
        let client = client_of(&server);
        for encoding in COMPRESSING {
            let mut stream =
                client.unary_stream_with(req("", 0), CallOptions::new().compression(encoding));
            let mut got = Vec::new();
            while let Some(r) = stream.next() {
                got.push((r.unwrap().seqno, stream.last_message_compressed()));
            }
            assert_eq!(got, vec![(1, true), (2, false), (3, true)], "{encoding}");
        }
        // On the wire: one response, the frames' flags 1, 0, 1, and the
        // uncompressed one is plain protobuf.
        let mut raw = RawClient::connect(server.local_addr());
        let mut packed = Vec::new();
        compression::compress(Encoding::Gzip, &req("", 0).encode_to_vec(), &mut packed).unwrap();
        let resp = raw.call(
            UNARY_STREAM,
            &[("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")],
            frame(true, &packed),
        );
        assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
        assert_eq!(resp.header("grpc-encoding"), Some("gzip"));
        let messages = resp.messages();
        let flags: Vec<bool> = messages.iter().map(|m| m.0).collect();
        assert_eq!(flags, vec![true, false, true]);
        assert_eq!(ExampleReply::decode(&messages[1].1[..]).unwrap().seqno, 2);
        let plain = compression::decompress(Encoding::Gzip, &messages[2].1, 1 << 20).unwrap();
        assert_eq!(ExampleReply::decode(&plain[..]).unwrap().seqno, 3);
    });
}

#[test]
fn request_sink_send_uncompressed_clears_the_flag_of_that_message_only() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Compress));
        let client = client_of(&server);
        for encoding in COMPRESSING {
            let options = CallOptions::new().compression(encoding);
            // Client streaming.
            let (mut sink, call) = client.stream_unary_sender(options.clone());
            sink.send(req("a", 1)).unwrap();
            sink.send_uncompressed(req("b", 1)).unwrap();
            sink.send(req("c", 1)).unwrap();
            sink.finish();
            assert_eq!(
                call.wait().unwrap().message,
                "true,false,true",
                "{encoding}"
            );
            // Bidi, one message at a time.
            let (mut sink, mut stream) = client.stream_stream_sender(options);
            sink.send_uncompressed(req("a", 1)).unwrap();
            assert_eq!(
                stream.next().unwrap().unwrap().message,
                format!("false|{encoding}")
            );
            sink.send(req("b", 1)).unwrap();
            assert_eq!(
                stream.next().unwrap().unwrap().message,
                format!("true|{encoding}")
            );
            sink.send_uncompressed(req("c", 1)).unwrap();
            assert_eq!(
                stream.next().unwrap().unwrap().message,
                format!("false|{encoding}")
            );
            sink.finish();
            assert!(stream.next().is_none());
        }
    });
}

#[test]
fn set_compression_is_refused_for_an_algorithm_the_client_does_not_accept() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Compress));
        let mut raw = RawClient::connect(server.local_addr());
        let plain = |value: &str| frame(false, &req(value, 0).encode_to_vec());
        // The client accepts gzip only: deflate is refused (the handler
        // returns the error), gzip is fine.
        let accept = [("grpc-accept-encoding", "identity,gzip")];
        let resp = raw.call(UNARY, &accept, plain("set:deflate"));
        assert_eq!(
            resp.grpc_status(),
            Some(Code::InvalidArgument.as_i32()),
            "{resp:?}"
        );
        assert!(resp.grpc_message().contains("deflate"), "{resp:?}");
        let resp = raw.call(UNARY, &accept, plain("set:gzip"));
        assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
        assert_eq!(resp.header("grpc-encoding"), Some("gzip"));
        assert!(resp.messages()[0].0);
        // Identity is always allowed.
        let resp = raw.call(UNARY, &accept, plain("set:identity"));
        assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
        assert!(!resp.messages()[0].0);
        // A gzip request from a client that does not accept gzip responses:
        // the default response is identity.
        let mut packed = Vec::new();
        compression::compress(Encoding::Gzip, &req("", 0).encode_to_vec(), &mut packed).unwrap();
        let resp = raw.call(
            UNARY,
            &[
                ("grpc-encoding", "gzip"),
                ("grpc-accept-encoding", "identity"),
            ],
            frame(true, &packed),
        );
        assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
        assert_eq!(resp.header("grpc-encoding"), None);
        let messages = resp.messages();
        assert!(!messages[0].0);
        assert_eq!(
            ExampleReply::decode(&messages[0].1[..]).unwrap().message,
            "true|identity>identity"
        );

        // Our own client accepts everything; changing the compression after
        // the headers went is refused.
        let client = client_of(&server);
        let err = client.unary_unary(req("late:gzip", 0)).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    });
}

/// A server with a 64 KiB receive limit, for the raw protocol tests.
fn compress_server() -> ServerHandle {
    Server::builder()
        .add_service(ExampleServer::new(Compress))
        .max_receive_message_size(64 * 1024)
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

/// A normal call on the raw connection works.
fn assert_raw_connection_serves(raw: &mut RawClient) {
    let resp = raw.call(UNARY, &[], frame(false, &req("", 0).encode_to_vec()));
    assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
    let messages = resp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        ExampleReply::decode(&messages[0].1[..]).unwrap().message,
        "false|identity>identity"
    );
}

fn expect_status(resp: &RawResponse, code: Code) {
    assert_eq!(
        resp.grpc_status(),
        Some(code.as_i32()),
        "expected {code}: {resp:?}"
    );
    assert!(!resp.grpc_message().is_empty(), "{resp:?}");
}

#[test]
fn raw_unsupported_encoding_is_unimplemented_with_accept_encoding() {
    with_timeout(60, || {
        let server = compress_server();
        let mut raw = RawClient::connect(server.local_addr());
        let resp = raw.call(
            UNARY,
            &[("grpc-encoding", "br")],
            frame(true, b"\x0b\x28\x00\x00"),
        );
        expect_status(&resp, Code::Unimplemented);
        assert!(resp.grpc_message().contains("br"), "{resp:?}");
        let accept = resp
            .header("grpc-accept-encoding")
            .expect("grpc-accept-encoding in the answer");
        let mut listed = compression::parse_accept_encoding(accept);
        listed.sort_by_key(|e| e.as_str());
        assert_eq!(
            listed,
            vec![Encoding::Deflate, Encoding::Gzip, Encoding::Identity],
            "{accept}"
        );
        assert_raw_connection_serves(&mut raw);
    });
}

#[test]
fn raw_compressed_flag_without_grpc_encoding_is_internal() {
    with_timeout(60, || {
        let server = compress_server();
        let mut raw = RawClient::connect(server.local_addr());
        let mut packed = Vec::new();
        compression::compress(Encoding::Gzip, &req("x", 1).encode_to_vec(), &mut packed).unwrap();
        let resp = raw.call(UNARY, &[], frame(true, &packed));
        expect_status(&resp, Code::Internal);
        assert_raw_connection_serves(&mut raw);
        // Also with grpc-encoding: identity, named explicitly.
        let resp = raw.call(
            UNARY,
            &[("grpc-encoding", "identity")],
            frame(true, &packed),
        );
        expect_status(&resp, Code::Internal);
        assert_raw_connection_serves(&mut raw);
    });
}

#[test]
fn raw_corrupt_compressed_data_is_internal() {
    with_timeout(60, || {
        let server = compress_server();
        let mut raw = RawClient::connect(server.local_addr());
        for encoding in COMPRESSING {
            let mut packed = Vec::new();
            compression::compress(encoding, &req("hello", 1).encode_to_vec(), &mut packed).unwrap();
            let mut flipped = packed.clone();
            let n = flipped.len();
            flipped[n - 3] ^= 0x55; // in the checksum / size trailer
            let corrupt = [b"definitely not compressed".to_vec(), flipped];
            for data in corrupt {
                let resp = raw.call(
                    UNARY,
                    &[("grpc-encoding", encoding.as_str())],
                    frame(true, &data),
                );
                expect_status(&resp, Code::Internal);
                assert_raw_connection_serves(&mut raw);
            }
            // The intact data is fine.
            let resp = raw.call(
                UNARY,
                &[("grpc-encoding", encoding.as_str())],
                frame(true, &packed),
            );
            assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
        }
    });
}

#[test]
fn raw_compressed_message_inflating_past_the_limit_is_resource_exhausted() {
    with_timeout(60, || {
        let server = compress_server();
        let mut raw = RawClient::connect(server.local_addr());
        // 4 MiB of one letter: a few KiB compressed, 64 times the limit inflated.
        let big = req(&"a".repeat(4 * 1024 * 1024), 1).encode_to_vec();
        for encoding in COMPRESSING {
            let mut packed = Vec::new();
            compression::compress(encoding, &big, &mut packed).unwrap();
            assert!(packed.len() < 64 * 1024, "{}", packed.len());
            let resp = raw.call(
                UNARY,
                &[("grpc-encoding", encoding.as_str())],
                frame(true, &packed),
            );
            expect_status(&resp, Code::ResourceExhausted);
            assert_raw_connection_serves(&mut raw);
            // Through a stream too.
            let resp = raw.call(
                STREAM_UNARY,
                &[("grpc-encoding", encoding.as_str())],
                frame(true, &packed),
            );
            expect_status(&resp, Code::ResourceExhausted);
            assert_raw_connection_serves(&mut raw);
        }
    });
}

// ---------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------

/// Handlers that hold their call until it is cancelled, reporting what they
/// see; `value` "quick" answers at once, "deadline" reports the deadline.
struct Hold {
    notes: mpsc::Sender<Note>,
    /// What the handlers wait on after seeing the cancellation.
    gate: Arc<Gate>,
    calls: AtomicUsize,
}

impl Hold {
    fn new() -> (Arc<Hold>, Notes) {
        Hold::with_gate(Gate::default())
    }

    fn with_gate(gate: Gate) -> (Arc<Hold>, Notes) {
        let (tx, notes) = Notes::channel();
        (
            Arc::new(Hold {
                notes: tx,
                gate: Arc::new(gate),
                calls: AtomicUsize::new(0),
            }),
            notes,
        )
    }

    fn note(&self, note: Note) {
        let _ = self.notes.send(note);
    }
}

/// An open gate.
fn open_gate() -> Gate {
    let gate = Gate::default();
    gate.open();
    gate
}

/// The deadline as the reply reports it: milliseconds remaining, or -1.
fn remaining_ms(ctx: &ServerContext) -> i32 {
    match (ctx.deadline(), ctx.time_remaining()) {
        (Some(d), Some(left)) => {
            assert!(d.saturating_duration_since(Instant::now()) <= left);
            left.as_millis() as i32
        }
        (None, None) => -1,
        other => panic!("deadline and time_remaining disagree: {other:?}"),
    }
}

impl Example for Hold {
    fn unary_unary(&self, r: ExampleRequest, ctx: &ServerContext) -> Result<ExampleReply, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match r.value.as_str() {
            "quick" => return Ok(reply("quick", 0)),
            "deadline" => return Ok(reply("deadline", remaining_ms(ctx))),
            "meta" => {
                let call_id = ctx.metadata().get("x-call-id").unwrap_or("").to_owned();
                let other = ctx.metadata().get("x-other").unwrap_or("").to_owned();
                return Ok(reply(format!("{call_id}|{other}"), remaining_ms(ctx)));
            }
            _ => {}
        }
        self.note(Note::Started("unary"));
        self.note(Note::CancelSeen("unary", wait_cancelled(ctx)));
        self.gate.wait();
        self.note(Note::Done("unary"));
        Ok(reply("too late", 0))
    }

    fn unary_stream(
        &self,
        _: ExampleRequest,
        ctx: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        out.send(reply("first", 1))?;
        self.note(Note::Started("unary_stream"));
        self.note(Note::CancelSeen("unary_stream", wait_cancelled(ctx)));
        self.gate.wait();
        let sent = out.send(reply("late", 2));
        self.note(Note::SendAfter(
            "unary_stream",
            sent.err().map(|e| e.code()),
        ));
        self.note(Note::Done("unary_stream"));
        Ok(())
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.note(Note::Started("stream_unary"));
        let mut ended = None;
        for r in requests {
            if let Err(e) = r {
                eprintln!("stream_unary: the requests ended with {e:?}");
                ended = Some(e.code());
                break;
            }
        }
        self.note(Note::RequestsEnded("stream_unary", ended));
        self.note(Note::CancelSeen("stream_unary", ctx.is_cancelled()));
        self.note(Note::Done("stream_unary"));
        Ok(reply("done", 0))
    }

    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut ended = None;
        let mut started = false;
        for r in requests {
            match r {
                Ok(r) => {
                    out.send(reply(r.value, 0))?;
                    if !started {
                        started = true;
                        self.note(Note::Started("stream_stream"));
                    }
                }
                Err(e) => {
                    eprintln!("stream_stream: the requests ended with {e:?}");
                    ended = Some(e.code());
                    break;
                }
            }
        }
        self.note(Note::RequestsEnded("stream_stream", ended));
        self.note(Note::CancelSeen("stream_stream", ctx.is_cancelled()));
        let sent = out.send(reply("late", 0));
        self.note(Note::SendAfter(
            "stream_stream",
            sent.err().map(|e| e.code()),
        ));
        self.note(Note::Done("stream_stream"));
        Ok(())
    }
}

#[test]
fn a_client_timeout_ends_the_call_promptly_and_cancels_the_handler() {
    with_timeout(60, || {
        let (svc, notes) = Hold::new();
        let server = serve(ExampleServer::from_arc(svc.clone()));
        let client = client_of(&server);

        // Unary: the handler holds the call until cancelled, then waits on
        // the gate; the client's error comes while it is still waiting.
        let start = Instant::now();
        let err = client
            .unary_unary_with(
                req("hold", 0),
                CallOptions::new().timeout(Duration::from_millis(200)),
            )
            .unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        assert!(!err.is_transport_error());
        assert!(took < Duration::from_secs(10), "took {took:?}");
        notes.expect(&[Note::Started("unary"), Note::CancelSeen("unary", true)]);

        // Server streaming: one message arrives, then the deadline.
        let start = Instant::now();
        let mut stream = client.unary_stream_with(
            req("hold", 0),
            CallOptions::new().timeout(Duration::from_millis(300)),
        );
        assert_eq!(stream.next().unwrap().unwrap().message, "first");
        let err = stream.next().unwrap().unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        assert!(stream.next().is_none());
        assert!(took < Duration::from_secs(10), "took {took:?}");
        notes.expect(&[
            Note::Started("unary_stream"),
            Note::CancelSeen("unary_stream", true),
        ]);
        // Both handlers are still running (waiting on the gate): the client
        // did not wait for them.
        assert!(notes.quiet_for(100));

        // Once they go on, their sends fail: the call is over.
        svc.gate.open();
        let mut rest = [notes.next(), notes.next(), notes.next()];
        rest.sort_by_key(|n| format!("{n:?}"));
        assert_eq!(rest[0], Note::Done("unary"));
        assert_eq!(rest[1], Note::Done("unary_stream"));
        // The send fails. (Which code the handler sees, DEADLINE_EXCEEDED
        // from the server's own timer or CANCELLED from the client's
        // RST_STREAM, is the subject of
        // the_request_iterator_ends_with_deadline_exceeded_while_waiting_for_the_client.)
        match &rest[2] {
            Note::SendAfter("unary_stream", Some(code)) => assert!(
                matches!(code, Code::DeadlineExceeded | Code::Cancelled),
                "the handler's send failed with {code}"
            ),
            other => panic!("expected a failed send, got {other:?}"),
        }
    });
}

#[test]
fn a_handler_sees_the_deadline_and_time_remaining() {
    with_timeout(60, || {
        let (svc, _notes) = Hold::with_gate(open_gate());
        let server = serve(ExampleServer::from_arc(svc));
        let client = client_of(&server);
        let ms = |options: CallOptions| {
            client
                .unary_unary_with(req("deadline", 0), options)
                .unwrap()
                .seqno
        };
        // No timeout: no deadline.
        assert_eq!(ms(CallOptions::new()), -1);
        // A timeout: the deadline is at most that far, and not much closer.
        let left = ms(CallOptions::new().timeout(Duration::from_secs(5)));
        assert!((1000..=5000).contains(&left), "{left} ms left of 5 s");
        // An absolute deadline.
        let left = ms(CallOptions::new().deadline(Instant::now() + Duration::from_secs(3)));
        assert!((500..=3000).contains(&left), "{left} ms left of 3 s");
        // Both: the earlier wins, whichever it is.
        let left = ms(CallOptions::new()
            .timeout(Duration::from_secs(60))
            .deadline(Instant::now() + Duration::from_secs(3)));
        assert!((500..=3000).contains(&left), "{left} ms left of 3 s");
        let left = ms(CallOptions::new()
            .timeout(Duration::from_secs(3))
            .deadline(Instant::now() + Duration::from_secs(60)));
        assert!((500..=3000).contains(&left), "{left} ms left of 3 s");
    });
}

#[test]
fn the_request_iterator_ends_with_deadline_exceeded_while_waiting_for_the_client() {
    with_timeout(60, || {
        let (svc, notes) = Hold::new();
        let server = serve(ExampleServer::from_arc(svc));
        let client = client_of(&server);
        // Client streaming: the sink stays open and sends nothing.
        let (sink, call) =
            client.stream_unary_sender(CallOptions::new().timeout(Duration::from_millis(300)));
        notes.expect(&[Note::Started("stream_unary")]);
        let err = call.wait().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        notes.expect(&[
            Note::RequestsEnded("stream_unary", Some(Code::DeadlineExceeded)),
            Note::CancelSeen("stream_unary", true),
            Note::Done("stream_unary"),
        ]);
        drop(sink);

        // Bidi: one message each way, then the client holds the sink open.
        let (mut sink, mut stream) =
            client.stream_stream_sender(CallOptions::new().timeout(Duration::from_millis(300)));
        sink.send(req("one", 1)).unwrap();
        assert_eq!(stream.next().unwrap().unwrap().message, "one");
        notes.expect(&[Note::Started("stream_stream")]);
        let err = stream.next().unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        notes.expect(&[
            Note::RequestsEnded("stream_stream", Some(Code::DeadlineExceeded)),
            Note::CancelSeen("stream_stream", true),
            Note::SendAfter("stream_stream", Some(Code::DeadlineExceeded)),
            Note::Done("stream_stream"),
        ]);
        // The client's sink knows the call is over.
        assert!(sink.send(req("two", 1)).is_err());
    });
}

#[test]
fn the_server_enforces_grpc_timeout_itself() {
    with_timeout(60, || {
        let (svc, notes) = Hold::with_gate(open_gate());
        let server = serve(ExampleServer::from_arc(svc));
        let mut raw = RawClient::connect(server.local_addr());
        // A client that sends a 200 ms timeout, one message, and then
        // neither ends the request nor cancels it.
        let start = Instant::now();
        let mut call = raw.start(STREAM_UNARY, &[("grpc-timeout", "200m")]);
        raw.send(&mut call, frame(false, &req("a", 1).encode_to_vec()), false);
        let resp = raw.finish(call);
        let took = start.elapsed();
        expect_status(&resp, Code::DeadlineExceeded);
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(10),
            "took {took:?}"
        );
        notes.expect(&[
            Note::Started("stream_unary"),
            Note::RequestsEnded("stream_unary", Some(Code::DeadlineExceeded)),
            Note::CancelSeen("stream_unary", true),
            Note::Done("stream_unary"),
        ]);
        // After the handler started responding, the deadline ends the call
        // with trailers.
        let start = Instant::now();
        let mut call = raw.start(UNARY_STREAM, &[("grpc-timeout", "300m")]);
        raw.send(&mut call, frame(false, &req("a", 1).encode_to_vec()), true);
        let resp = raw.finish(call);
        let took = start.elapsed();
        expect_status(&resp, Code::DeadlineExceeded);
        assert!(!resp.is_trailers_only());
        assert_eq!(
            resp.messages().len(),
            1,
            "the first message, then the status"
        );
        assert!(took < Duration::from_secs(10), "took {took:?}");
        notes.expect(&[
            Note::Started("unary_stream"),
            Note::CancelSeen("unary_stream", true),
            Note::SendAfter("unary_stream", Some(Code::DeadlineExceeded)),
            Note::Done("unary_stream"),
        ]);
        // The connection still serves.
        let resp = raw.call(UNARY, &[], frame(false, &req("quick", 0).encode_to_vec()));
        assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
    });
}

/// Calls the next server from inside a handler, with the incoming deadline
/// and call id, and reports how the inner call went.
struct Relay {
    next: ExampleClient,
    results: mpsc::Sender<(Result<ExampleReply, Status>, Option<Instant>, Instant)>,
}

impl stubbed::Example for Relay {
    fn unary_unary(&self, r: ExampleRequest, ctx: &ServerContext) -> Result<ExampleReply, Status> {
        let options = CallOptions::new()
            .inherit_deadline(ctx)
            .propagate_metadata(ctx, &["x-call-id"]);
        let result = self.next.unary_unary_with(r, options);
        let _ = self
            .results
            .send((result.clone(), ctx.deadline(), Instant::now()));
        result
    }
}

type RelayResult = (Result<ExampleReply, Status>, Option<Instant>, Instant);

fn relay_pair() -> (
    ServerHandle,
    ServerHandle,
    Arc<Hold>,
    Notes,
    mpsc::Receiver<RelayResult>,
) {
    let (svc, notes) = Hold::with_gate(open_gate());
    let inner = serve(ExampleServer::from_arc(svc.clone()));
    let (tx, results) = mpsc::channel();
    let outer = serve(stubbed::ExampleServer::new(Relay {
        next: client_of(&inner),
        results: tx,
    }));
    (outer, inner, svc, notes, results)
}

#[test]
fn inherit_deadline_makes_the_inner_call_fail_at_the_outer_deadline() {
    with_timeout(60, || {
        let (outer, _inner, _svc, notes, results) = relay_pair();
        let client = client_of(&outer);
        let err = client
            .unary_unary_with(
                req("hold", 0),
                CallOptions::new().timeout(Duration::from_millis(300)),
            )
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        let (inner, outer_deadline, ended) = results
            .recv_timeout(Duration::from_secs(20))
            .expect("the relay's inner call ended");
        let inner = inner.unwrap_err();
        assert_eq!(inner.code(), Code::DeadlineExceeded, "{inner}");
        let outer_deadline = outer_deadline.expect("the relayed call had a deadline");
        // Not before the outer deadline, and not long after it.
        assert!(ended >= outer_deadline, "the inner call ended early");
        assert!(
            ended < outer_deadline + Duration::from_secs(10),
            "the inner call outlived the outer deadline by {:?}",
            ended - outer_deadline
        );
        // The inner handler was cancelled.
        notes.expect(&[Note::Started("unary"), Note::CancelSeen("unary", true)]);

        // The inner handler sees a deadline no later than the outer one
        // (give or take the rounding up of grpc-timeout).
        let resp = client
            .unary_unary_with(
                req("deadline", 0),
                CallOptions::new().timeout(Duration::from_secs(3)),
            )
            .unwrap();
        assert!((1..=3000).contains(&resp.seqno), "{} ms", resp.seqno);
        let _ = results.recv_timeout(Duration::from_secs(20)).unwrap();
        // Without an outer deadline there is none inside either.
        let resp = client.unary_unary(req("deadline", 0)).unwrap();
        assert_eq!(resp.seqno, -1);
        let _ = results.recv_timeout(Duration::from_secs(20)).unwrap();
    });
}

#[test]
fn propagate_metadata_carries_the_call_id_through_a_handler() {
    with_timeout(60, || {
        let (outer, _inner, _svc, _notes, results) = relay_pair();
        let client = client_of(&outer);
        let mut md = Metadata::new();
        md.insert("x-call-id", "call-42.7").unwrap();
        md.insert("x-other", "not propagated").unwrap();
        let resp = client
            .unary_unary_with(req("meta", 0), CallOptions::new().metadata(md))
            .unwrap();
        // The inner handler got the call id and only that.
        assert_eq!(resp.message, "call-42.7|");
        assert_eq!(resp.seqno, -1);
        let _ = results.recv_timeout(Duration::from_secs(20)).unwrap();
        // No call id: none inside.
        assert_eq!(client.unary_unary(req("meta", 0)).unwrap().message, "|");
    });
}

#[test]
fn an_already_passed_deadline_fails_at_once() {
    with_timeout(60, || {
        let (svc, _notes) = Hold::with_gate(open_gate());
        let server = serve(ExampleServer::from_arc(svc.clone()));
        let client = client_of(&server);
        let past = || {
            let now = Instant::now();
            std::thread::sleep(Duration::from_millis(2));
            now
        };
        let start = Instant::now();
        for options in [
            CallOptions::new().deadline(past()),
            CallOptions::new().timeout(Duration::ZERO),
            CallOptions::new()
                .timeout(Duration::from_secs(60))
                .deadline(past()),
        ] {
            let err = client
                .unary_unary_with(req("quick", 0), options.clone())
                .unwrap_err();
            assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
            let err = client
                .unary_stream_with(req("quick", 0), options.clone())
                .next()
                .unwrap()
                .unwrap_err();
            assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
            let (mut sink, call) = client.stream_unary_sender(options.clone());
            let send = sink.send(req("a", 1)).unwrap_err();
            assert_eq!(send.code(), Code::DeadlineExceeded, "{send}");
            assert_eq!(call.wait().unwrap_err().code(), Code::DeadlineExceeded);
            let mut stream = client.stream_stream_with(vec![req("a", 1)], options);
            assert_eq!(
                stream.next().unwrap().unwrap_err().code(),
                Code::DeadlineExceeded
            );
            assert!(stream.next().is_none());
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        // None of them reached a handler.
        assert_eq!(svc.calls.load(Ordering::SeqCst), 0);
        assert_eq!(
            client.unary_unary(req("quick", 0)).unwrap().message,
            "quick"
        );
    });
}

// ---------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------

/// A new server running at most one handler at a time, every handler on
/// the pool (the Hold service, its gate open), with a client and the
/// handlers' notes. Each phase of the
/// cancellation tests takes a new one, so that the first call of a phase
/// never races the worker of the previous phase going back to idle.
fn single_worker() -> (ServerHandle, ExampleClient, Notes) {
    let (svc, notes) = Hold::with_gate(open_gate());
    let server = Server::builder()
        .add_service(ExampleServer::from_arc(svc))
        .max_concurrent_handlers(1)
        .unary_handlers(UnaryHandlers::Workers)
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap();
    let client = client_of(&server);
    (server, client, notes)
}

/// The single worker is busy: another call is refused.
fn assert_worker_busy(client: &ExampleClient) {
    let err = client.unary_unary(req("quick", 0)).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
}

/// The single worker is free again: a new call is served (retrying only
/// while the worker is between the handler's return and being idle).
fn assert_worker_freed(client: &ExampleClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.unary_unary(req("quick", 0)) {
            Ok(r) => {
                assert_eq!(r.message, "quick");
                return;
            }
            Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the worker was not freed: {e}"),
        }
    }
}

/// How a test gives up on a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GiveUp {
    /// Drop the call's handle.
    Drop,
    /// Call `cancel()` on it.
    Cancel,
}

impl GiveUp {
    fn unary<T: prost::Message + Default>(self, mut call: UnaryCall<T>) {
        match self {
            GiveUp::Drop => drop(call),
            GiveUp::Cancel => call.cancel(),
        }
    }

    fn stream<T: prost::Message + Default>(self, mut stream: Streaming<T>) {
        match self {
            GiveUp::Drop => drop(stream),
            GiveUp::Cancel => stream.cancel(),
        }
    }
}

/// Each kind of call, given up on mid-call as `how` says, on a server with
/// one worker: the handler sees the cancellation (its request iterator ends
/// CANCELLED, its sends fail), the client's open request sink fails
/// CANCELLED, and the worker is free for the next call.
fn giving_up_cancels_the_handler(how: GiveUp) {
    // Unary.
    let (_server, client, notes) = single_worker();
    let call = client.unary_unary_start(req("hold", 0), CallOptions::new());
    notes.expect(&[Note::Started("unary")]);
    assert_worker_busy(&client);
    how.unary(call);
    notes.expect(&[Note::CancelSeen("unary", true), Note::Done("unary")]);
    assert_worker_freed(&client);

    // Server streaming, after its first reply.
    let (_server, client, notes) = single_worker();
    let mut stream = client.unary_stream(req("hold", 0));
    assert_eq!(stream.next().unwrap().unwrap().message, "first");
    notes.expect(&[Note::Started("unary_stream")]);
    assert_worker_busy(&client);
    how.stream(stream);
    notes.expect(&[
        Note::CancelSeen("unary_stream", true),
        Note::SendAfter("unary_stream", Some(Code::Cancelled)),
        Note::Done("unary_stream"),
    ]);
    assert_worker_freed(&client);

    // Client streaming, its request sink still open.
    let (_server, client, notes) = single_worker();
    let (mut sink, call) = client.stream_unary_sender(CallOptions::new());
    sink.send(req("a", 1)).unwrap();
    notes.expect(&[Note::Started("stream_unary")]);
    assert_worker_busy(&client);
    how.unary(call);
    notes.expect(&[
        Note::RequestsEnded("stream_unary", Some(Code::Cancelled)),
        Note::CancelSeen("stream_unary", true),
        Note::Done("stream_unary"),
    ]);
    assert_eq!(sink.send(req("b", 1)).unwrap_err().code(), Code::Cancelled);
    assert_worker_freed(&client);

    // Bidi, its request sink still open.
    let (_server, client, notes) = single_worker();
    let (mut sink, mut stream) = client.stream_stream_sender(CallOptions::new());
    sink.send(req("a", 1)).unwrap();
    assert_eq!(stream.next().unwrap().unwrap().message, "a");
    notes.expect(&[Note::Started("stream_stream")]);
    assert_worker_busy(&client);
    how.stream(stream);
    notes.expect(&[
        Note::RequestsEnded("stream_stream", Some(Code::Cancelled)),
        Note::CancelSeen("stream_stream", true),
        Note::SendAfter("stream_stream", Some(Code::Cancelled)),
        Note::Done("stream_stream"),
    ]);
    assert_eq!(sink.send(req("b", 1)).unwrap_err().code(), Code::Cancelled);
    assert_worker_freed(&client);
}

#[test]
fn dropping_a_call_cancels_the_handler() {
    with_timeout(60, || giving_up_cancels_the_handler(GiveUp::Drop));
}

#[test]
fn cancel_mid_call_cancels_the_handler() {
    with_timeout(60, || giving_up_cancels_the_handler(GiveUp::Cancel));
}

/// Sends `multiplier` messages, then fails with the code in `value`.
struct FailMidStream;

fn failure(r: &ExampleRequest) -> Status {
    let code = Code::from_i32(r.value.parse().expect("a code number"));
    let mut status = Status::new(code, format!("failed after {} messages", r.multiplier));
    status.metadata_mut().insert("x-failed", "yes").unwrap();
    status
}

impl stubbed::Example for FailMidStream {
    fn unary_stream(
        &self,
        r: ExampleRequest,
        _: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for i in 0..r.multiplier {
            out.send(reply("m", i))?;
        }
        Err(failure(&r))
    }
    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let mut requests = requests;
        let first = requests.next().expect("one request")?;
        Err(failure(&first))
    }
    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for r in requests {
            let r = r?;
            if r.multiplier < 0 {
                return Err(failure(&ExampleRequest {
                    value: r.value,
                    multiplier: 2,
                }));
            }
            out.send(reply(r.value, r.multiplier))?;
        }
        Ok(())
    }
}

#[test]
fn a_handler_failing_mid_stream_ends_the_clients_iterator_with_its_status() {
    with_timeout(60, || {
        let server = serve(stubbed::ExampleServer::new(FailMidStream));
        let client = client_of(&server);
        for code in [
            Code::DataLoss,
            Code::Aborted,
            Code::Internal,
            Code::Unavailable,
        ] {
            let mut stream = client.unary_stream(req(&code.as_i32().to_string(), 3));
            for i in 0..3 {
                assert_eq!(stream.next().unwrap().unwrap().seqno, i);
            }
            let err = stream.next().unwrap().unwrap_err();
            assert_eq!(err.code(), code);
            assert_eq!(err.message(), "failed after 3 messages");
            assert_eq!(err.metadata().get("x-failed"), Some("yes"));
            assert!(!err.is_transport_error());
            assert!(stream.next().is_none());
            assert!(stream.next().is_none());
            assert_eq!(stream.trailers().unwrap().get("x-failed"), Some("yes"));
        }
        // Bidi: the client is still sending when the handler fails.
        let (mut sink, mut stream) = client.stream_stream_sender(CallOptions::new());
        sink.send(req("5", 1)).unwrap();
        assert_eq!(stream.next().unwrap().unwrap().message, "5");
        sink.send(req("15", -1)).unwrap();
        let err = stream.next().unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DataLoss);
        assert_eq!(err.message(), "failed after 2 messages");
        assert!(stream.next().is_none());
        // Client streaming.
        let err = client.stream_unary(vec![req("10", 1)]).unwrap_err();
        assert_eq!(err.code(), Code::Aborted);
        // The connection is fine.
        let mut stream = client.unary_stream(req("9", 0));
        assert_eq!(
            stream.next().unwrap().unwrap_err().code(),
            Code::FailedPrecondition
        );
    });
}

#[test]
fn a_server_dying_mid_call_gives_every_call_unavailable_connection_lost() {
    with_timeout(60, || {
        let (svc, notes) = Hold::with_gate(open_gate());
        let server = Server::builder()
            .add_service(ExampleServer::from_arc(svc.clone()))
            .shutdown_grace_period(Duration::ZERO)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let client = client_of(&server);
        // Three calls in flight on one connection.
        let unary = client.unary_unary_start(req("hold", 0), CallOptions::new());
        let mut server_stream = client.unary_stream(req("hold", 0));
        assert_eq!(server_stream.next().unwrap().unwrap().message, "first");
        let (mut sink, mut bidi) = client.stream_stream_sender(CallOptions::new());
        sink.send(req("a", 1)).unwrap();
        assert_eq!(bidi.next().unwrap().unwrap().message, "a");
        let mut started: Vec<_> = (0..3).map(|_| notes.next()).collect();
        started.sort_by_key(|n| format!("{n:?}"));
        assert_eq!(
            started,
            vec![
                Note::Started("stream_stream"),
                Note::Started("unary"),
                Note::Started("unary_stream"),
            ]
        );

        // The server goes away without waiting for them.
        let shutdown = std::thread::spawn(move || server.shutdown());

        let check = |err: Status| {
            assert_eq!(err.code(), Code::Unavailable, "{err:?}");
            assert!(err.is_transport_error(), "{err:?}");
            assert!(
                err.message().to_lowercase().contains("connection lost"),
                "{err:?}"
            );
        };
        check(unary.wait().unwrap_err());
        check(server_stream.next().unwrap().unwrap_err());
        assert!(server_stream.next().is_none());
        check(bidi.next().unwrap().unwrap_err());
        assert!(bidi.next().is_none());
        assert!(sink.send(req("b", 1)).is_err());
        shutdown.join().unwrap().unwrap();
        // Every handler saw its call end.
        let mut seen = Vec::new();
        while let Ok(n) = notes.0.recv_timeout(Duration::from_millis(500)) {
            seen.push(n);
        }
        for method in ["unary", "unary_stream", "stream_stream"] {
            assert!(seen.contains(&Note::CancelSeen(method, true)), "{seen:?}");
            assert!(seen.contains(&Note::Done(method)), "{seen:?}");
        }
        // A new call on the same client finds no server.
        let err = client.unary_unary(req("quick", 0)).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.is_transport_error());
    });
}

// ---------------------------------------------------------------------------
// Rich errors
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct NoMoreTokens;

impl std::fmt::Display for NoMoreTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("out of tokens")
    }
}

impl std::error::Error for NoMoreTokens {}

/// An error with a cause, for the chain in DebugInfo.
#[derive(Debug)]
struct Outer(std::io::Error);

impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("saving failed")
    }
}

impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Fails in the way `value` names.
struct Failing;

fn fail(how: &str) -> Result<ExampleReply, Status> {
    match how {
        "details" => Err(Status::with_error_details(
            Code::FailedPrecondition,
            "with every detail",
            every_error_detail(),
        )),
        "panic" => panic!("boom in the handler"),
        "panic_any" => std::panic::panic_any(NoMoreTokens),
        "from_error" => Err(Status::from_error(NoMoreTokens)),
        "io_error" => Err(Status::from_error(std::io::Error::other("disk full"))),
        "chain" => Err(Status::from_error(Outer(std::io::Error::other(
            "disk full",
        )))),
        _ => Ok(reply("ok", 0)),
    }
}

impl Example for Failing {
    fn unary_unary(&self, r: ExampleRequest, _: &ServerContext) -> Result<ExampleReply, Status> {
        fail(&r.value)
    }
    fn unary_stream(
        &self,
        r: ExampleRequest,
        _: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        // One message first: the status travels in trailers.
        out.send(reply("first", 0))?;
        fail(&r.value).map(drop)
    }
    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let mut last = String::new();
        for r in requests {
            last = r?.value;
        }
        fail(&last)
    }
    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for r in requests {
            let r = r?;
            out.send(fail(&r.value)?)?;
        }
        Ok(())
    }
}

#[test]
fn error_details_round_trip_every_standard_type() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Failing));
        let client = client_of(&server);
        let check = |err: Status| {
            assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
            assert_eq!(err.message(), "with every detail");
            let rpc = err.rpc_status().unwrap().expect("a google.rpc.Status");
            assert_eq!(rpc.code, Code::FailedPrecondition.as_i32());
            assert_eq!(rpc.message, "with every detail");
            assert_eq!(err.error_details().unwrap(), every_error_detail());
        };
        // Trailers-Only (unary), trailers after a message (server stream),
        // client streaming and bidi.
        check(client.unary_unary(req("details", 0)).unwrap_err());
        let mut stream = client.unary_stream(req("details", 0));
        assert_eq!(stream.next().unwrap().unwrap().message, "first");
        check(stream.next().unwrap().unwrap_err());
        check(client.stream_unary(vec![req("details", 0)]).unwrap_err());
        let mut stream = client.stream_stream(vec![req("fine", 0), req("details", 0)]);
        assert_eq!(stream.next().unwrap().unwrap().message, "ok");
        check(stream.next().unwrap().unwrap_err());
        // A plain error has no details.
        let err = client.unary_unary(req("io_error", 0)).unwrap_err();
        assert!(err.details().is_empty());
        assert!(err.error_details().unwrap().is_empty());
        assert!(err.rpc_status().unwrap().is_none());
    });
}

#[test]
fn a_panicking_handler_is_unknown_and_the_server_keeps_serving() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Failing));
        let client = client_of(&server);
        for _ in 0..3 {
            let err = client.unary_unary(req("panic", 0)).unwrap_err();
            assert_eq!(err.code(), Code::Unknown);
            assert_eq!(
                err.message(),
                "Exception calling application: boom in the handler"
            );
            assert!(err.details().is_empty(), "no DebugInfo without debug(true)");
            assert!(!err.is_transport_error());
            assert_eq!(client.unary_unary(req("fine", 0)).unwrap().message, "ok");
        }
        // In the other patterns. A handler that streams its responses says
        // "iterating responses", as grpcio does.
        let mut stream = client.unary_stream(req("panic", 0));
        assert_eq!(stream.next().unwrap().unwrap().message, "first");
        let err = stream.next().unwrap().unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(
            err.message(),
            "Exception iterating responses: boom in the handler"
        );
        assert!(stream.next().is_none());
        let err = client.stream_unary(vec![req("panic", 0)]).unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(
            err.message(),
            "Exception calling application: boom in the handler"
        );
        let err = client
            .stream_stream(vec![req("panic", 0)])
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(
            err.message(),
            "Exception iterating responses: boom in the handler"
        );
        // An unmapped error type.
        let err = client.unary_unary(req("io_error", 0)).unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(err.message(), "Exception calling application: disk full");
        // Many panics later the server still serves, with its workers.
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                std::thread::spawn(move || client.unary_unary(req("panic", 0)).unwrap_err())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().code(), Code::Unknown);
        }
        assert_eq!(client.unary_unary(req("fine", 0)).unwrap().message, "ok");
    });
}

#[test]
fn map_error_maps_from_error_and_panic_any() {
    with_timeout(60, || {
        let server = Server::builder()
            .add_service(ExampleServer::new(Failing))
            .map_error(|_: &NoMoreTokens| {
                Status::with_error_details(
                    Code::ResourceExhausted,
                    "Out of tokens!",
                    [ErrorDetail::RetryInfo(RetryInfo {
                        retry_delay: Some(prost_types::Duration {
                            seconds: 1,
                            nanos: 0,
                        }),
                    })],
                )
            })
            .map_error(|e: &std::io::Error| Status::unavailable(format!("io: {e}")))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let client = client_of(&server);
        for how in ["from_error", "panic_any"] {
            let err = client.unary_unary(req(how, 0)).unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted, "{how}: {err:?}");
            assert_eq!(err.message(), "Out of tokens!", "{how}");
            assert!(
                matches!(&err.error_details().unwrap()[..], [ErrorDetail::RetryInfo(r)] if r.retry_delay.unwrap().seconds == 1),
                "{how}: {err:?}"
            );
            // Streams too.
            let mut stream = client.unary_stream(req(how, 0));
            assert_eq!(stream.next().unwrap().unwrap().message, "first");
            let err = stream.next().unwrap().unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted, "{how}: {err:?}");
            let err = client.stream_unary(vec![req(how, 0)]).unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted, "{how}: {err:?}");
        }
        // The second mapping, for another type.
        let err = client.unary_unary(req("io_error", 0)).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(err.message(), "io: disk full");
        // Unmapped: a panic with a message, an error of another type.
        let err = client.unary_unary(req("panic", 0)).unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        let err = client.unary_unary(req("chain", 0)).unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(
            err.message(),
            "Exception calling application: saving failed"
        );
        // A status the handler made itself is not touched.
        let err = client.unary_unary(req("details", 0)).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    });
}

#[test]
fn debug_adds_debug_info_with_a_backtrace_and_is_off_by_default() {
    with_timeout(60, || {
        let debug = Server::builder()
            .add_service(ExampleServer::new(Failing))
            .debug(true)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let client = client_of(&debug);
        // A panic: its backtrace.
        let err = client.unary_unary(req("panic", 0)).unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(
            err.message(),
            "Exception calling application: boom in the handler"
        );
        match &err.error_details().unwrap()[..] {
            [ErrorDetail::DebugInfo(d)] => {
                assert_eq!(d.detail, "boom in the handler");
                assert!(!d.stack_entries.is_empty(), "an empty backtrace");
                assert!(
                    d.stack_entries.iter().any(|e| !e.trim().is_empty()),
                    "{d:?}"
                );
            }
            other => panic!("expected one DebugInfo, got {other:?}"),
        }
        let rpc = err.rpc_status().unwrap().unwrap();
        assert_eq!(rpc.code, Code::Unknown.as_i32());
        // A panic in a stream after a message.
        let mut stream = client.unary_stream(req("panic", 0));
        assert_eq!(stream.next().unwrap().unwrap().message, "first");
        let err = stream.next().unwrap().unwrap_err();
        assert!(
            matches!(&err.error_details().unwrap()[..], [ErrorDetail::DebugInfo(d)] if !d.stack_entries.is_empty()),
            "{err:?}"
        );
        // An unmapped error: its chain of causes.
        let err = client.unary_unary(req("chain", 0)).unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        match &err.error_details().unwrap()[..] {
            [ErrorDetail::DebugInfo(d)] => {
                assert_eq!(d.stack_entries, vec!["saving failed", "disk full"]);
                assert_eq!(d.detail, "saving failed");
            }
            other => panic!("expected one DebugInfo, got {other:?}"),
        }
        // A status the handler made itself keeps its own details only.
        let err = client.unary_unary(req("details", 0)).unwrap_err();
        assert_eq!(err.error_details().unwrap(), every_error_detail());

        // Off by default.
        let plain = serve(ExampleServer::new(Failing));
        let client = client_of(&plain);
        for how in ["panic", "chain", "io_error"] {
            let err = client.unary_unary(req(how, 0)).unwrap_err();
            assert_eq!(err.code(), Code::Unknown);
            assert!(err.details().is_empty(), "{how}: {err:?}");
        }
    });
}
