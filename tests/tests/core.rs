//! The core behaviour of server and client over loopback TCP, through the
//! code generated for nameko-grpc's example service (`nameko.example`): the four patterns,
//! concurrency, large and long streams, backpressure both ways, metadata,
//! and errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grpc_blocking::server::{Requests, ResponseSink, ServerContext, UnaryHandlers};
use grpc_blocking::{CallOptions, Channel, Code, Metadata, Status};
use grpc_blocking_examples::nameko::{
    Example, ExampleClient, ExampleReply, ExampleRequest, ExampleServer,
};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::stubbed;
use grpc_blocking_tests::support::{req, serve, settle, target, with_timeout, Gate};

fn example() -> (grpc_blocking::ServerHandle, ExampleClient) {
    let server = serve(ExampleServer::new(ExampleService));
    let client = ExampleClient::connect(target(&server)).unwrap();
    (server, client)
}

#[test]
fn four_patterns_blocking() {
    with_timeout(60, || {
        let (_server, client) = example();
        assert_eq!(client.unary_unary(req("A", 3)).unwrap().message, "AAA");
        assert_eq!(client.unary_unary(req("A", 0)).unwrap().message, "A");
        let replies: Vec<_> = client
            .unary_stream(req("B", 2))
            .map(|r| r.map(|r| (r.message, r.seqno)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(replies, vec![("BB".into(), 1), ("BB".into(), 2)]);
        let reply = client
            .stream_unary(vec![req("C", 1), req("D", 2), req("E", 0)])
            .unwrap();
        assert_eq!(reply.message, "C,DD,E");
        let replies: Vec<_> = client
            .stream_stream(vec![req("F", 1), req("G", 2)])
            .map(|r| r.map(|r| (r.message, r.seqno)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(replies, vec![("F".into(), 1), ("GG".into(), 2)]);
        // Empty request streams are fine too.
        assert_eq!(client.stream_unary(Vec::new()).unwrap().message, "");
        assert_eq!(client.stream_stream(Vec::new()).count(), 0);
    });
}

#[test]
fn four_patterns_non_blocking_with_metadata() {
    with_timeout(60, || {
        let (_server, client) = example();
        // Start all four, then collect: the calls run concurrently.
        let unary = client.unary_unary_start(req("a", 2), CallOptions::new());
        let mut server_stream = client.unary_stream_with(req("b", 1), CallOptions::new());
        let client_stream =
            client.stream_unary_start(vec![req("c", 1), req("d", 1)], CallOptions::new());
        let (mut sink, mut bidi) = client.stream_stream_sender(CallOptions::new());
        sink.send(req("e", 1)).unwrap();

        let unary = unary.wait_response().unwrap();
        assert_eq!(unary.message.message, "aa");
        assert!(unary.headers.is_empty() && unary.trailers.is_empty());
        assert!(server_stream.headers().unwrap().is_empty());
        assert_eq!(server_stream.by_ref().count(), 2);
        assert!(server_stream.trailers().unwrap().is_empty());
        assert_eq!(client_stream.wait().unwrap().message, "c,d");
        assert_eq!(bidi.next().unwrap().unwrap().message, "e");
        sink.send(req("f", 2)).unwrap();
        assert_eq!(bidi.next().unwrap().unwrap().message, "ff");
        sink.finish();
        assert!(bidi.next().is_none());
    });
}

#[test]
fn sixteen_threads_share_one_client() {
    with_timeout(300, || {
        let (_server, client) = example();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let client = client.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let value = format!("{t}-{i}");
                        let reply = client.unary_unary(req(&value, 1)).unwrap();
                        assert_eq!(reply.message, value);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Errors and metadata work the same inline.
        let echo = grpc_blocking::Server::builder()
            .add_service(ExampleServer::new(Echo))
            .unary_handlers(UnaryHandlers::Inline)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let client = ExampleClient::connect(target(&echo)).unwrap();
        let err = client.unary_unary(req("fail", 5)).unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.metadata().get("x-why"), Some("because"));
        let mut md = Metadata::new();
        md.insert("x-text", "v").unwrap();
        let resp = client
            .unary_unary_start(req("echo", 0), CallOptions::new().metadata(md))
            .wait_response()
            .unwrap();
        assert_eq!(resp.headers.get("x-text-initial"), Some("v"));
        assert_eq!(resp.trailers.get("x-text-trailing"), Some("v"));
    });
}

#[test]
fn hundred_concurrent_streams_on_one_connection() {
    with_timeout(120, || {
        let (_server, client) = example();
        // Open 100 bidirectional streams and keep them all open at once.
        let mut calls: Vec<_> = (0..100)
            .map(|_| client.stream_stream_sender(CallOptions::new()))
            .collect();
        for round in 0..3 {
            for (i, (sink, _)) in calls.iter_mut().enumerate() {
                sink.send(req(&format!("{i}:{round}"), 1)).unwrap();
            }
            for (i, (_, responses)) in calls.iter_mut().enumerate() {
                let reply = responses.next().unwrap().unwrap();
                assert_eq!(reply.message, format!("{i}:{round}"));
                assert_eq!(reply.seqno, round + 1);
            }
        }
        for (sink, mut responses) in calls {
            sink.finish();
            assert!(responses.next().is_none());
        }
    });
}

#[test]
fn one_mib_messages_each_way() {
    with_timeout(120, || {
        let (_server, client) = example();
        let big = "x".repeat(1024 * 1024);
        let reply = client.unary_unary(req(&big, 1)).unwrap();
        assert_eq!(reply.message.len(), big.len());
        let replies: Vec<_> = client
            .stream_stream((0..8).map(move |i| req(&format!("{i}{}", "y".repeat(1024 * 1024)), 1)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(replies.len(), 8);
        for (i, r) in replies.iter().enumerate() {
            assert!(r.message.starts_with(&i.to_string()));
            assert_eq!(r.message.len(), 1024 * 1024 + 1);
        }
        // Over the default 4 MiB receive limit: RESOURCE_EXHAUSTED, and the
        // connection keeps working.
        let err = client
            .unary_unary(req(&"z".repeat(5 * 1024 * 1024), 1))
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert_eq!(client.unary_unary(req("ok", 1)).unwrap().message, "ok");
    });
}

#[test]
fn ten_thousand_messages_each_way() {
    with_timeout(180, || {
        let (_server, client) = example();
        let n = 10_000;
        let mut count = 0;
        for (i, reply) in client
            .stream_stream((0..n).map(|i| req(&i.to_string(), 1)))
            .enumerate()
        {
            let reply = reply.unwrap();
            assert_eq!(reply.message, i.to_string());
            assert_eq!(reply.seqno as usize, i + 1);
            count += 1;
        }
        assert_eq!(count, n);
        let reply = client.stream_unary((0..n).map(|_| req("a", 1))).unwrap();
        assert_eq!(reply.message.len(), 2 * n - 1);
    });
}

/// A service whose handlers stop reading / are counted, for backpressure.
#[derive(Default)]
struct Backpressure {
    gate: Gate,
    sent_bytes: AtomicUsize,
}

const CHUNK: usize = 32 * 1024;
const CHUNKS: usize = 2048; // 64 MiB in all
/// What may be in flight when one side stops: stream window (1 MiB), the
/// send queue (64 KiB) and one message; measured: 1,114,112 bytes.
const BOUND: usize = 4 * 1024 * 1024;

impl stubbed::Example for Backpressure {
    fn unary_unary(&self, r: ExampleRequest, _: &ServerContext) -> Result<ExampleReply, Status> {
        Ok(ExampleReply {
            message: r.value,
            seqno: 0,
        })
    }

    fn unary_stream(
        &self,
        r: ExampleRequest,
        _: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for i in 0..r.multiplier {
            out.send(ExampleReply {
                message: "s".repeat(CHUNK),
                seqno: i,
            })?;
            self.sent_bytes.fetch_add(CHUNK, Ordering::SeqCst);
        }
        Ok(())
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        self.gate.wait();
        let mut n = 0;
        for r in requests {
            assert_eq!(r?.value.len(), CHUNK);
            n += 1;
        }
        Ok(ExampleReply {
            message: n.to_string(),
            seqno: 0,
        })
    }
}

#[test]
fn a_handler_that_stops_reading_blocks_the_client() {
    with_timeout(180, || {
        let svc = Arc::new(Backpressure::default());
        let server = serve(stubbed::ExampleServer::from_arc(svc.clone()));
        let client = ExampleClient::connect(target(&server)).unwrap();
        let (mut sink, call) = client.stream_unary_sender(CallOptions::new());
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let sender = std::thread::spawn(move || {
            for _ in 0..CHUNKS {
                sink.send(req(&"c".repeat(CHUNK), 1)).unwrap();
                counter.fetch_add(CHUNK, Ordering::SeqCst);
            }
            sink.finish();
        });
        let plateau = settle(&sent);
        eprintln!("client sent {plateau} bytes before blocking");
        assert!(
            plateau < BOUND,
            "the client sent {plateau} bytes to a handler that is not reading"
        );
        assert!(!sender.is_finished());
        svc.gate.open();
        sender.join().unwrap();
        assert_eq!(call.wait().unwrap().message, CHUNKS.to_string());
    });
}

#[test]
fn a_client_that_stops_reading_blocks_the_handler() {
    with_timeout(180, || {
        let svc = Arc::new(Backpressure::default());
        let server = serve(stubbed::ExampleServer::from_arc(svc.clone()));
        let client = ExampleClient::connect(target(&server)).unwrap();
        let mut responses = client.unary_stream(req("", CHUNKS as i32));
        assert_eq!(responses.next().unwrap().unwrap().seqno, 0);
        let plateau = settle(&svc.sent_bytes);
        eprintln!("handler sent {plateau} bytes before blocking");
        assert!(
            plateau < BOUND,
            "the handler sent {plateau} bytes to a client that is not reading"
        );
        let rest = responses
            .filter(|r| r.as_ref().is_ok_and(|r| r.message.len() == CHUNK))
            .count();
        assert_eq!(rest, CHUNKS - 1);
        assert_eq!(svc.sent_bytes.load(Ordering::SeqCst), CHUNKS * CHUNK);
    });
}

/// Echoes metadata, fails on request.
struct Echo;

impl Example for Echo {
    fn unary_unary(&self, r: ExampleRequest, ctx: &ServerContext) -> Result<ExampleReply, Status> {
        match r.value.as_str() {
            "echo" => {
                let mut initial = Metadata::new();
                let mut trailing = Metadata::new();
                for (name, value) in ctx.metadata().iter() {
                    if !name.starts_with("x-") {
                        continue;
                    }
                    match value {
                        grpc_blocking::MetadataValue::Ascii(v) => {
                            initial.insert(&format!("{name}-initial"), v).unwrap();
                            trailing.insert(&format!("{name}-trailing"), v).unwrap();
                        }
                        grpc_blocking::MetadataValue::Binary(b) => {
                            let base = name.trim_end_matches("-bin");
                            initial
                                .insert_bin(&format!("{base}-initial-bin"), b)
                                .unwrap();
                            trailing
                                .insert_bin(&format!("{base}-trailing-bin"), b)
                                .unwrap();
                        }
                    }
                }
                ctx.send_initial_metadata(initial)?;
                ctx.set_trailing_metadata(trailing);
                Ok(ExampleReply {
                    message: ctx
                        .peer_addr()
                        .map(|a| a.ip().to_string())
                        .unwrap_or_default(),
                    seqno: ctx.metadata().len() as i32,
                })
            }
            "fail" => {
                let mut status =
                    Status::new(Code::from_i32(r.multiplier), "it failed: 100%\n\u{2603}");
                status.metadata_mut().insert("x-why", "because").unwrap();
                Err(status)
            }
            "set_code" => {
                ctx.set_code(Code::AlreadyExists);
                ctx.set_message("set on the context");
                Ok(ExampleReply::default())
            }
            _ => Ok(ExampleReply::default()),
        }
    }
    fn unary_stream(
        &self,
        _: ExampleRequest,
        _: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        out.send(ExampleReply::default())?;
        Err(Status::aborted("after one message"))
    }
    fn stream_unary(
        &self,
        _: Requests<ExampleRequest>,
        _: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        Err(Status::invalid_argument("without reading"))
    }
    fn stream_stream(
        &self,
        _: Requests<ExampleRequest>,
        _: &ServerContext,
        _: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        Err(Status::permission_denied("no"))
    }
}

#[test]
fn metadata_round_trips_including_binary() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Echo));
        let client = ExampleClient::connect(target(&server)).unwrap();
        let mut md = Metadata::new();
        md.insert("x-text", "hello world").unwrap();
        md.insert_bin("x-data-bin", &[0, 1, 2, 0xfe, 0xff]).unwrap();
        md.insert("x-text", "second value").unwrap();
        let resp = client
            .unary_unary_start(req("echo", 0), CallOptions::new().metadata(md))
            .wait_response()
            .unwrap();
        assert_eq!(resp.message.message, "127.0.0.1");
        // user-agent plus our three entries; no reserved headers.
        assert_eq!(resp.message.seqno, 4);
        let texts: Vec<_> = resp
            .headers
            .get_all("x-text-initial")
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(texts, vec!["hello world", "second value"]);
        assert_eq!(
            resp.headers.get_bin("x-data-initial-bin"),
            Some(&[0, 1, 2, 0xfe, 0xff][..])
        );
        assert_eq!(resp.trailers.get("x-text-trailing"), Some("hello world"));
        assert_eq!(
            resp.trailers.get_bin("x-data-trailing-bin"),
            Some(&[0, 1, 2, 0xfe, 0xff][..])
        );
        for (name, _) in resp.headers.iter().chain(resp.trailers.iter()) {
            assert!(
                !name.starts_with("grpc-") && name != "content-type",
                "{name}"
            );
        }
    });
}

#[test]
fn handler_errors_reach_the_client() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(Echo));
        let client = ExampleClient::connect(target(&server)).unwrap();
        for code in 1..=16 {
            let err = client.unary_unary(req("fail", code)).unwrap_err();
            assert_eq!(err.code(), Code::from_i32(code));
            assert_eq!(err.message(), "it failed: 100%\n\u{2603}");
            assert_eq!(err.metadata().get("x-why"), Some("because"));
            assert!(!err.is_transport_error());
        }
        let err = client.unary_unary(req("set_code", 0)).unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        assert_eq!(err.message(), "set on the context");
        // An error after a message: the client gets the message, then the status.
        let mut stream = client.unary_stream(req("", 0));
        assert!(stream.next().unwrap().is_ok());
        assert_eq!(stream.next().unwrap().unwrap_err().code(), Code::Aborted);
        assert!(stream.next().is_none());
        let err = client.stream_unary(vec![req("", 0); 3]).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = client
            .stream_stream(vec![req("", 0)])
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    });
}

#[test]
fn unknown_methods_and_services_are_unimplemented() {
    with_timeout(60, || {
        let (server, _client) = example();
        let channel = Channel::connect(target(&server)).unwrap();
        for path in ["/nameko.example/nope", "/nameko.nope/unary_unary", "/x/y"] {
            let err = channel
                .unary::<_, ExampleReply>(path, req("", 0), CallOptions::new())
                .unwrap_err();
            assert_eq!(err.code(), Code::Unimplemented, "{path}: {err}");
            assert!(!err.message().is_empty());
        }
        // The connection is still good.
        let client = ExampleClient::new(channel);
        assert_eq!(client.unary_unary(req("ok", 1)).unwrap().message, "ok");
    });
}

#[test]
fn a_lazy_client_connects_on_first_call_and_reconnects() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(ExampleService));
        let addr = server.local_addr();
        let channel = Channel::builder(target(&server))
            .reconnect_backoff_initial(Duration::from_millis(1))
            .reconnect_backoff_max(Duration::from_millis(1))
            .connect_lazy()
            .unwrap();
        let client = ExampleClient::new(channel);
        assert_eq!(client.unary_unary(req("a", 1)).unwrap().message, "a");
        server.shutdown().unwrap();
        // Either the connection is gone (a transport error) or the closing
        // server refused the stream: UNAVAILABLE both ways.
        let err = client.unary_unary(req("a", 1)).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        // A new server on the same port: the client connects again (after
        // its 1 ms backoff).
        std::thread::sleep(Duration::from_millis(5));
        let server = grpc_blocking::Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .bind(addr)
            .unwrap()
            .spawn()
            .unwrap();
        assert_eq!(client.unary_unary(req("b", 1)).unwrap().message, "b");
        drop(server);
    });
}

#[test]
fn failed_connects_back_off() {
    with_timeout(60, || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channel = Channel::builder(format!("http://127.0.0.1:{port}"))
            .reconnect_backoff_initial(Duration::from_secs(60))
            .reconnect_backoff_max(Duration::from_secs(60))
            .connect_lazy()
            .unwrap();
        let client = ExampleClient::new(channel);
        let first = client.unary_unary(req("a", 1)).unwrap_err();
        assert!(matches!(
            first.transport_error(),
            Some(grpc_blocking::TransportError::Connect { .. })
        ));
        // Within the backoff the next call fails at once with the reason.
        let second = client.unary_unary(req("a", 1)).unwrap_err();
        assert_eq!(second.code(), Code::Unavailable);
        assert!(matches!(
            second.transport_error(),
            Some(grpc_blocking::TransportError::Backoff { .. })
        ));
        assert!(second.message().contains("refused"), "{second}");
    });
}

fn inline_server(service: impl grpc_blocking::server::Service) -> grpc_blocking::ServerHandle {
    grpc_blocking::Server::builder()
        .add_service(service)
        .unary_handlers(UnaryHandlers::Inline)
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

/// An inline unary handler runs once its whole request is there, and only a
/// reading handler gives flow-control credit back: a request larger than
/// the stream's window (1 MiB by default) must still get through.
#[test]
fn inline_unary_requests_larger_than_the_stream_window() {
    with_timeout(60, || {
        let server = inline_server(ExampleServer::new(ExampleService));
        let client = ExampleClient::connect(target(&server)).unwrap();
        for size in [1024 * 1024 - 100, 1024 * 1024 + 100, 3 * 1024 * 1024] {
            let value = "x".repeat(size);
            let reply = client.unary_unary(req(&value, 1)).unwrap();
            assert_eq!(reply.message.len(), size);
        }
        // And the connection goes on with small calls inline.
        assert_eq!(client.unary_unary(req("A", 2)).unwrap().message, "AA");
    });
}

/// Answers a unary call with its request's first character and size; its
/// client-streaming method holds a worker until the gate opens.
#[derive(Default)]
struct Measure {
    gate: Gate,
}

impl stubbed::Example for Measure {
    fn unary_unary(&self, r: ExampleRequest, _: &ServerContext) -> Result<ExampleReply, Status> {
        let first = r.value.chars().next().unwrap_or('-');
        Ok(ExampleReply {
            message: format!("{first}{}", r.value.len()),
            seqno: 0,
        })
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        self.gate.wait();
        Ok(ExampleReply {
            message: requests.count().to_string(),
            seqno: 0,
        })
    }
}

/// The one reply of a raw call, which must succeed.
fn raw_reply(
    raw: &mut grpc_blocking_tests::raw_h2::RawClient,
    call: grpc_blocking_tests::raw_h2::RawCall,
) -> ExampleReply {
    use prost::Message;
    let response = raw.finish(call);
    assert_eq!(
        response.grpc_status(),
        Some(0),
        "{}",
        response.grpc_message()
    );
    let messages = grpc_blocking_tests::raw_h2::parse_frames(&response.body);
    assert_eq!(messages.len(), 1);
    ExampleReply::decode(&messages[0].1[..]).unwrap()
}

/// Unended inline requests that together fill the connection's window
/// (4 MiB by default), none of them near its own stream's window: a raw
/// client sends 450 KiB on each of ten streams before ending any.
#[test]
fn inline_unary_requests_that_together_fill_the_connection_window() {
    use grpc_blocking_tests::raw_h2::{frame, RawClient};
    use prost::Message;
    const SIZE: usize = 460 * 1024;
    const FIRST_PART: usize = 450 * 1024;
    with_timeout(60, || {
        let server = inline_server(stubbed::ExampleServer::new(Measure::default()));
        let mut raw = RawClient::connect(server.local_addr());
        let bodies: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                let request = ExampleRequest {
                    value: i.to_string().repeat(SIZE),
                    multiplier: 1,
                };
                frame(false, &request.encode_to_vec())
            })
            .collect();
        let mut calls: Vec<_> = bodies
            .iter()
            .map(|body| {
                let mut call = raw.start("/nameko.example/unary_unary", &[]);
                raw.send(&mut call, body[..FIRST_PART].to_vec(), false);
                call
            })
            .collect();
        for (call, body) in calls.iter_mut().zip(&bodies) {
            raw.send(call, body[FIRST_PART..].to_vec(), true);
        }
        for (i, call) in calls.into_iter().enumerate() {
            let reply = raw_reply(&mut raw, call);
            assert_eq!(reply.message, format!("{i}{SIZE}"));
        }
    });
}

/// An inline request too large to wait on the connection thread moves to a
/// worker; when every worker is busy it gets RESOURCE_EXHAUSTED, as a call
/// refused at its start does, and the connection goes on.
#[test]
fn a_large_inline_request_with_every_worker_busy_is_resource_exhausted() {
    with_timeout(60, || {
        let measure = Arc::new(Measure::default());
        let server = grpc_blocking::Server::builder()
            .add_service(stubbed::ExampleServer::from_arc(measure.clone()))
            .unary_handlers(UnaryHandlers::Inline)
            .max_concurrent_handlers(1)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let client = ExampleClient::connect(target(&server)).unwrap();
        // The only worker waits at the gate.
        let (mut sink, busy) = client.stream_unary_sender(CallOptions::new());
        sink.send(req("a", 1)).unwrap();
        // Small requests still run inline.
        assert_eq!(client.unary_unary(req("s", 1)).unwrap().message, "s1");
        let big = "b".repeat(2 * 1024 * 1024);
        let err = client.unary_unary(req(&big, 1)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("maximum of 1 handlers"), "{err}");
        measure.gate.open();
        sink.finish();
        assert_eq!(busy.wait().unwrap().message, "1");
        let reply = client.unary_unary(req(&big, 1)).unwrap();
        assert_eq!(reply.message, format!("b{}", big.len()));
    });
}

/// Every unary handler mode.
const MODES: [UnaryHandlers; 3] = [
    UnaryHandlers::Workers,
    UnaryHandlers::Adaptive,
    UnaryHandlers::Inline,
];

/// The example service in handler mode `mode`, with `configure`'s settings.
fn example_server_in(
    mode: UnaryHandlers,
    configure: impl FnOnce(grpc_blocking::server::ServerBuilder) -> grpc_blocking::server::ServerBuilder,
) -> grpc_blocking::ServerHandle {
    let builder = grpc_blocking::Server::builder()
        .add_service(ExampleServer::new(ExampleService))
        .unary_handlers(mode);
    configure(builder)
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

/// Requests of one message larger than the stream's window, and their
/// replies, get through in every handler mode, for unary and
/// server-streaming methods (the server credits such a request as it
/// arrives, the client such a reply).
#[test]
fn single_message_requests_larger_than_the_stream_window_in_every_mode() {
    with_timeout(60, || {
        for mode in MODES {
            let server = example_server_in(mode, |b| b);
            let client = ExampleClient::connect(target(&server)).unwrap();
            for size in [1024 * 1024 + 100, 3 * 1024 * 1024] {
                let value = "x".repeat(size);
                let reply = client.unary_unary(req(&value, 1)).unwrap();
                assert_eq!(reply.message.len(), size, "{mode:?}");
                let replies: Vec<_> = client
                    .unary_stream(req(&value, 1))
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(replies.len(), 2, "{mode:?}");
                assert!(replies.iter().all(|r| r.message.len() == size), "{mode:?}");
            }
        }
    });
}

/// The handler of a one-message request is not woken for each chunk, but
/// still hears at once what it must refuse, with the request left open: on
/// a worker, a message header over the limit; in every mode, bytes beyond
/// one largest message (an inline call moves to a worker for them).
#[test]
fn a_single_message_request_over_the_limit_fails_before_it_ends() {
    use grpc_blocking_tests::raw_h2::{frame, RawClient};
    use prost::Message;
    // The handler starts with the headers; let it wait for the bytes.
    let handler_waits = || std::thread::sleep(Duration::from_millis(200));
    with_timeout(60, move || {
        for mode in MODES {
            let server = example_server_in(mode, |b| b.max_receive_message_size(1024));
            let mut raw = RawClient::connect(server.local_addr());
            if mode == UnaryHandlers::Workers {
                // A header declaring 1 MiB, in two parts, then a little of it.
                let mut call = raw.start("/nameko.example/unary_unary", &[]);
                let mut body = vec![0u8];
                body.extend_from_slice(&(1024u32 * 1024).to_be_bytes());
                body.extend_from_slice(&[0; 100]);
                raw.send(&mut call, body[..3].to_vec(), false);
                handler_waits();
                raw.send(&mut call, body[3..].to_vec(), false);
                let response = raw.finish(call);
                assert_eq!(response.grpc_status(), Some(Code::ResourceExhausted as i32));
                assert!(
                    response.grpc_message().contains("larger than max"),
                    "{}",
                    response.grpc_message()
                );
            }
            // Two messages under the limit whose bytes together are over it.
            let mut call = raw.start("/nameko.example/unary_unary", &[]);
            let one = frame(false, &req(&"a".repeat(990), 1).encode_to_vec());
            raw.send(&mut call, one.clone(), false);
            handler_waits();
            raw.send(&mut call, one, false);
            let response = raw.finish(call);
            assert_eq!(
                response.grpc_status(),
                Some(Code::Unimplemented as i32),
                "{mode:?}"
            );
            assert!(
                response
                    .grpc_message()
                    .contains("more than one request message"),
                "{mode:?}: {}",
                response.grpc_message()
            );
        }
    });
}

/// A second request message whose credit the server holds back (it is past
/// one largest message) may never arrive whole: the call fails as soon as
/// part of it is there. Two 200 KiB messages against a 256 KiB limit and a
/// 64 KiB stream window, in every handler mode.
#[test]
fn a_second_request_message_fails_the_call_before_it_is_whole() {
    use grpc_blocking_tests::raw_h2::{frame, RawClient};
    use prost::Message;
    with_timeout(60, || {
        for mode in MODES {
            let server = example_server_in(mode, |b| {
                b.max_receive_message_size(256 * 1024)
                    .initial_stream_window_size(64 * 1024)
            });
            let mut raw = RawClient::connect(server.local_addr());
            let one = frame(false, &req(&"a".repeat(200 * 1024), 1).encode_to_vec());
            let mut body = one.clone();
            body.extend_from_slice(&one);
            let response = raw.call("/nameko.example/unary_unary", &[], body);
            assert_eq!(
                response.grpc_status(),
                Some(Code::Unimplemented as i32),
                "{mode:?}: {}",
                response.grpc_message()
            );
        }
    });
}

/// The client's side of the same rule: a unary call whose server sends a
/// second response message that the client holds credit back for fails as
/// soon as part of it is there. The example's server-streaming method
/// called as a unary one replies twice, 200 KiB each, against a 256 KiB
/// limit and a 64 KiB stream window on the client.
#[test]
fn a_second_response_message_fails_a_unary_call_before_it_is_whole() {
    with_timeout(60, || {
        let server = serve(ExampleServer::new(ExampleService));
        let channel = Channel::builder(target(&server))
            .max_receive_message_size(256 * 1024)
            .initial_stream_window_size(64 * 1024)
            .connect()
            .unwrap();
        let err = channel
            .unary::<ExampleRequest, ExampleReply>(
                "/nameko.example/unary_stream",
                req(&"a".repeat(200 * 1024), 1),
                CallOptions::new(),
            )
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err}");
        assert!(
            err.message().contains("more than one response message"),
            "{err}"
        );
    });
}

/// A streaming handler is woken per whole message (or per quarter of its
/// stream's window), so bytes of unfinished messages can wait unread on
/// many streams at once. Their credit must not run the connection's window
/// dry: a raw client sends, to handlers already waiting, the first 204 KiB
/// of a 1 MiB message on each of twenty client-streaming calls (4,080 KiB
/// of the 4 MiB window), and only then the rest. Every handler is woken once
/// a quarter of the connection's window waits, gives its credit back, and
/// every call completes.
#[test]
fn unfinished_messages_on_many_streams_do_not_stall_the_connection_window() {
    use grpc_blocking_tests::raw_h2::{frame, RawClient};
    use prost::Message;
    const FIRST_PART: usize = 204 * 1024;
    with_timeout(60, || {
        // Replies are small (the count of request messages), so that the
        // raw client, which reads one response at a time, takes them all.
        let measure = Measure::default();
        measure.gate.open();
        let server = serve(stubbed::ExampleServer::new(measure));
        let mut raw = RawClient::connect(server.local_addr());
        let bodies: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                frame(
                    false,
                    &req(&(i % 10).to_string().repeat(1024 * 1024), 1).encode_to_vec(),
                )
            })
            .collect();
        // Each call's message header, then a pause: every handler has
        // started, been woken for the header, and waits for the rest of its
        // message when the rest comes.
        let mut calls: Vec<_> = bodies
            .iter()
            .map(|body| {
                let mut call = raw.start("/nameko.example/stream_unary", &[]);
                raw.send(&mut call, body[..5].to_vec(), false);
                call
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        for (call, body) in calls.iter_mut().zip(&bodies) {
            raw.send(call, body[5..FIRST_PART].to_vec(), false);
        }
        for (call, body) in calls.iter_mut().zip(&bodies) {
            raw.send(call, body[FIRST_PART..].to_vec(), true);
        }
        for call in calls {
            assert_eq!(raw_reply(&mut raw, call).message, "1");
        }
    });
}

#[test]
fn inline_unary_handlers_serve_every_pattern() {
    with_timeout(120, || {
        let server = inline_server(ExampleServer::new(ExampleService));
        let client = ExampleClient::connect(target(&server)).unwrap();
        // Unary on the connection thread, streams on workers, side by side.
        let (mut sink, mut bidi) = client.stream_stream_sender(CallOptions::new());
        sink.send(req("x", 2)).unwrap();
        assert_eq!(client.unary_unary(req("A", 3)).unwrap().message, "AAA");
        assert_eq!(bidi.next().unwrap().unwrap().message, "xx");
        assert_eq!(client.unary_stream(req("B", 1)).count(), 2);
        assert_eq!(
            client
                .stream_unary(vec![req("C", 1), req("D", 1)])
                .unwrap()
                .message,
            "C,D"
        );
        sink.finish();
        assert!(bidi.next().is_none());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let client = client.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let v = format!("{t}/{i}");
                        assert_eq!(client.unary_unary(req(&v, 1)).unwrap().message, v);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

/// Blocks its unary and server-streaming calls on a gate (value "block")
/// or answers at once; records the threads its streams started on.
struct Blocker {
    gate: Arc<Gate>,
    started: std::sync::atomic::AtomicUsize,
    stream_threads: std::sync::Mutex<Vec<String>>,
}

impl stubbed::Example for Blocker {
    fn unary_unary(
        &self,
        request: ExampleRequest,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        if request.value == "block" {
            self.started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.gate.wait_unless_cancelled(ctx);
        }
        Ok(ExampleReply {
            message: request.value,
            seqno: 0,
        })
    }

    /// Replies once, blocks on the gate if asked to, then replies again.
    fn unary_stream(
        &self,
        request: ExampleRequest,
        ctx: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        self.stream_threads.lock().unwrap().push(thread);
        let reply = |seqno| ExampleReply {
            message: request.value.clone(),
            seqno,
        };
        out.send(reply(0))?;
        if request.value == "block" {
            self.started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.gate.wait_unless_cancelled(ctx);
        }
        out.send(reply(1))
    }
}

/// A server of a [`Blocker`] in the default handler mode, with its gate.
fn blocker_server() -> (Arc<Gate>, Arc<Blocker>, grpc_blocking::ServerHandle) {
    let gate = Arc::new(Gate::default());
    let blocker = Arc::new(Blocker {
        gate: gate.clone(),
        started: Default::default(),
        stream_threads: Default::default(),
    });
    let server = grpc_blocking::Server::builder()
        .add_service(stubbed::ExampleServer::from_arc(blocker.clone()))
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap();
    (gate, blocker, server)
}

/// Counts its client-streaming calls' requests; records the thread each
/// handler ran on, and tells `first_seen` (once) when a handler has its
/// first request.
#[derive(Default)]
struct Uploads {
    threads: std::sync::Mutex<Vec<String>>,
    first_seen: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl stubbed::Example for Uploads {
    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        self.threads.lock().unwrap().push(thread);
        let mut count = 0;
        for request in requests {
            request?;
            count += 1;
            if let Some(first_seen) = self.first_seen.lock().unwrap().take() {
                let _ = first_seen.send(());
            }
        }
        Ok(ExampleReply {
            message: count.to_string(),
            seqno: 0,
        })
    }
}

/// Under adaptive handlers a client-streaming handler waits for its whole
/// request stream, up to the inline time limit, and then runs where its
/// connection does; one whose client is still sending at the limit starts
/// on the handler pool and reads the requests as they come.
#[test]
fn by_default_client_streaming_handlers_start_inline_once_their_requests_are_in() {
    with_timeout(60, || {
        let serve_uploads = |limit| {
            let uploads = Arc::new(Uploads::default());
            let server = grpc_blocking::Server::builder()
                .add_service(stubbed::ExampleServer::from_arc(uploads.clone()))
                .inline_time_limit(limit)
                .bind("127.0.0.1:0")
                .unwrap()
                .spawn()
                .unwrap();
            (uploads, server)
        };
        // A limit that never passes (the whole stream is surely in).
        let (uploads, server) = serve_uploads(Duration::MAX);
        let client = ExampleClient::connect(target(&server)).unwrap();
        let requests = vec![req("a", 1), req("b", 1), req("c", 1)];
        assert_eq!(client.stream_unary(requests).unwrap().message, "3");
        let threads = uploads.threads.lock().unwrap().clone();
        assert_eq!(threads.len(), 1);
        assert_ne!(threads[0], "grpc-handler", "{threads:?}");
        // The default limit (1 ms), and a client that ends its stream only
        // once the handler has had its first request: the handler must
        // start before the stream ends.
        let (uploads, server) = serve_uploads(Duration::from_millis(1));
        let (first_seen, first) = std::sync::mpsc::channel();
        *uploads.first_seen.lock().unwrap() = Some(first_seen);
        let client = ExampleClient::connect(target(&server)).unwrap();
        let (mut sink, call) = client.stream_unary_sender(CallOptions::new());
        sink.send(req("a", 1)).unwrap();
        first.recv().unwrap();
        sink.send(req("b", 1)).unwrap();
        sink.finish();
        assert_eq!(call.wait().unwrap().message, "2");
        let threads = uploads.threads.lock().unwrap().clone();
        assert_eq!(threads, ["grpc-handler"]);
    });
}

#[test]
fn by_default_server_streaming_handlers_run_on_their_connection_and_never_stall_it() {
    with_timeout(60, || {
        let (gate, blocker, server) = blocker_server();
        let client = ExampleClient::connect(target(&server)).unwrap();
        let replies = |value: &str| -> Vec<(String, i32)> {
            client
                .unary_stream(req(value, 1))
                .map(|r| r.map(|r| (r.message, r.seqno)).unwrap())
                .collect()
        };
        // A quick one runs where its connection does, not on the handler
        // pool.
        assert_eq!(replies("quick"), [("quick".into(), 0), ("quick".into(), 1)]);
        let threads = blocker.stream_threads.lock().unwrap().clone();
        assert_eq!(threads.len(), 1);
        assert_ne!(threads[0], "grpc-handler", "{threads:?}");
        // Ten that block after their first reply; the connection goes on
        // serving unary and streaming calls meanwhile.
        let blocked: Vec<_> = (0..10)
            .map(|_| {
                let mut stream = client.unary_stream(req("block", 1));
                let first = stream.next().unwrap().unwrap();
                assert_eq!((first.message.as_str(), first.seqno), ("block", 0));
                stream
            })
            .collect();
        while blocker.started.load(std::sync::atomic::Ordering::SeqCst) < 10 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 0..50 {
            let value = format!("quick {i}");
            assert_eq!(client.unary_unary(req(&value, 1)).unwrap().message, value);
            assert_eq!(replies(&value).len(), 2);
        }
        gate.open();
        for mut stream in blocked {
            let last = stream.next().unwrap().unwrap();
            assert_eq!((last.message.as_str(), last.seqno), ("block", 1));
            assert!(stream.next().is_none());
        }
    });
}

#[test]
fn by_default_a_blocking_unary_handler_never_stalls_its_connection() {
    with_timeout(60, || {
        // The default: unary handlers adaptively inline.
        let (gate, blocker, server) = blocker_server();
        // One connection: every call below shares it.
        let client = ExampleClient::connect(target(&server)).unwrap();
        let blocked: Vec<_> = (0..20)
            .map(|_| client.unary_unary_start(req("block", 1), CallOptions::new()))
            .collect();
        while blocker.started.load(std::sync::atomic::Ordering::SeqCst) < 20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Twenty handlers blocked on one connection, and it still serves.
        for i in 0..100 {
            let value = format!("quick {i}");
            assert_eq!(client.unary_unary(req(&value, 1)).unwrap().message, value);
        }
        gate.open();
        for call in blocked {
            assert_eq!(call.wait().unwrap().message, "block");
        }
        // And the connection serves on once they are done.
        assert_eq!(
            client.unary_unary(req("after", 1)).unwrap().message,
            "after"
        );
    });
}
