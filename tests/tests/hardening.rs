//! Hardening: the server's and client's limits, connection life (keepalive,
//! idle timeout, maximum age, connect timeout, name resolution), bad input
//! of every kind, and abuse. Each test sends its input and then checks that
//! the server still serves a normal call on a new connection: bad input must
//! lose nothing else.
//!
//! Input our own client never sends goes through the frame-by-frame HTTP/2
//! peer of `grpc_blocking_tests::raw` (malformed headers, partial frames,
//! floods) or the h2-based client of `grpc_blocking_tests::raw_h2`
//! (well-formed HTTP/2 with malformed gRPC inside). Tests that measure the
//! whole process (threads, memory) are in `hardening_process.rs`.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_blocking::server::{Requests, ResponseSink, ServerContext, ServerStats, UnaryHandlers};
use grpc_blocking::{
    CallOptions, Channel, Code, Metadata, Server, ServerBuilder, ServerHandle, Status,
    TransportError,
};
use grpc_blocking_examples::nameko::{
    Example, ExampleClient, ExampleReply, ExampleRequest, ExampleServer,
};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::raw::{
    self, code, grpc_request_headers, setting, Event, RawConn, PREFACE,
};
use grpc_blocking_tests::raw_h2::{frame, RawClient, RawResponse};
use grpc_blocking_tests::stubbed;
use grpc_blocking_tests::support::{ensure_fds, eventually, req, target, with_timeout, Gate};
use prost::Message;

const UNARY: &str = "/nameko.example/unary_unary";
const STREAM_UNARY: &str = "/nameko.example/stream_unary";

// ---------------------------------------------------------------------------
// A service that tells the test what it sees
// ---------------------------------------------------------------------------

/// The example service with probes. Every reply's `seqno` is the client's
/// port as the server sees it, which tells connections apart.
///
/// `unary_unary` by request value: "block" waits on the gate; "hold" waits
/// until the call is cancelled; "big" answers `multiplier` bytes of "x";
/// anything else is echoed. `unary_stream` with "flood" sends `multiplier`
/// messages of 32 KiB, counting the bytes handed to the sink.
#[derive(Default)]
struct Probe {
    gate: Gate,
    running: AtomicUsize,
    max_running: AtomicUsize,
    cancelled_seen: AtomicUsize,
    sent_bytes: AtomicUsize,
    floods_ended: AtomicUsize,
}

const FLOOD_CHUNK: usize = 32 * 1024;

impl Probe {
    fn enter(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits (up to 20 s) until `n` handlers are inside.
    fn wait_running(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.running.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} handlers started",
                self.running.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn port_of(ctx: &ServerContext) -> i32 {
    ctx.peer_addr().map_or(-1, |a| i32::from(a.port()))
}

fn reply(message: impl Into<String>, seqno: i32) -> ExampleReply {
    ExampleReply {
        message: message.into(),
        seqno,
    }
}

impl Example for Probe {
    fn unary_unary(&self, r: ExampleRequest, ctx: &ServerContext) -> Result<ExampleReply, Status> {
        let port = port_of(ctx);
        match r.value.as_str() {
            "block" => {
                self.enter();
                let opened = self.gate.wait_unless_cancelled(ctx);
                self.leave();
                if opened {
                    Ok(reply("done", port))
                } else {
                    Err(Status::aborted("the gate did not open"))
                }
            }
            "hold" => {
                self.enter();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !ctx.is_cancelled() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if ctx.is_cancelled() {
                    self.cancelled_seen.fetch_add(1, Ordering::SeqCst);
                }
                self.leave();
                Ok(reply("held", port))
            }
            "big" => Ok(reply(
                "x".repeat(usize::try_from(r.multiplier).unwrap_or(0)),
                port,
            )),
            other => Ok(reply(other, port)),
        }
    }

    fn unary_stream(
        &self,
        r: ExampleRequest,
        ctx: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        let port = port_of(ctx);
        match r.value.as_str() {
            "flood" => {
                let mut result = Ok(());
                for _ in 0..r.multiplier {
                    if let Err(e) = out.send(reply("f".repeat(FLOOD_CHUNK), port)) {
                        result = Err(e);
                        break;
                    }
                    self.sent_bytes.fetch_add(FLOOD_CHUNK, Ordering::SeqCst);
                }
                self.floods_ended.fetch_add(1, Ordering::SeqCst);
                result
            }
            "big" => out.send(reply(
                "x".repeat(usize::try_from(r.multiplier).unwrap_or(0)),
                port,
            )),
            other => {
                out.send(reply(other, port))?;
                out.send(reply(other, port))
            }
        }
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let mut n = 0;
        for r in requests {
            r?;
            n += 1;
        }
        Ok(reply(n.to_string(), port_of(ctx)))
    }

    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for r in requests {
            out.send(reply(r?.value, port_of(ctx)))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Servers and checks
// ---------------------------------------------------------------------------

fn spawn(builder: ServerBuilder) -> ServerHandle {
    builder
        .bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .spawn()
        .expect("start the server")
}

/// The example service with some settings changed.
fn example_server(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> ServerHandle {
    spawn(configure(
        Server::builder().add_service(ExampleServer::new(ExampleService)),
    ))
}

/// The probe service with some settings changed.
fn probe_server(
    probe: &Arc<Probe>,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> ServerHandle {
    spawn(configure(
        Server::builder().add_service(ExampleServer::from_arc(probe.clone())),
    ))
}

/// The server still serves a normal call on a new connection.
#[track_caller]
fn assert_serves(server: &ServerHandle) {
    let client = ExampleClient::connect(target(server)).expect("a new connection");
    let reply = client
        .unary_unary(req("still-serving", 1))
        .expect("a normal call on a new connection");
    assert_eq!(reply.message, "still-serving");
}

/// The body of a unary request with `value`.
fn unary_body(value: &str) -> Vec<u8> {
    raw::grpc_frame(0, &req(value, 1).encode_to_vec())
}

/// A normal unary call on a raw connection works (the connection survived).
#[track_caller]
fn assert_raw_serves(conn: &mut RawConn, stream: u32) {
    conn.send_request(stream, &grpc_request_headers(UNARY), &unary_body("raw"));
    let r = conn.reply(stream);
    assert_eq!(r.grpc_status(), Some(0), "a normal call after: {r:?}");
    let messages = r.messages();
    assert_eq!(messages.len(), 1, "{r:?}");
    assert_eq!(
        ExampleReply::decode(&messages[0].1[..]).unwrap().message,
        "raw"
    );
}

/// The request headers of a unary call with `name` removed and/or set.
fn headers_with(path: &str, remove: &[&str], set: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = grpc_request_headers(path)
        .into_iter()
        .filter(|(n, _)| !remove.contains(&n.as_str()))
        .collect();
    for (name, value) in set {
        match h.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = (*value).to_owned(),
            None => h.push(((*name).to_owned(), (*value).to_owned())),
        }
    }
    h
}

#[track_caller]
fn assert_code(status: &Status, code: Code) {
    assert_eq!(status.code(), code, "expected {code}, got: {status}");
}

#[track_caller]
fn assert_mentions(message: &str, words: &[&str]) {
    for w in words {
        assert!(
            message.to_lowercase().contains(&w.to_lowercase()),
            "the message {message:?} does not mention {w:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

#[test]
fn server_receive_limit_is_resource_exhausted_naming_size_and_limit() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b.max_receive_message_size(1024));
        let client = ExampleClient::connect(target(&server)).unwrap();
        let port = client.unary_unary(req("a", 1)).unwrap().seqno;

        let big = req(&"x".repeat(2000), 1);
        let size = big.encoded_len().to_string();
        let err = client.unary_unary(big.clone()).unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &[&size, "1024"]);
        // A client stream: the first message passes, the second does not.
        let err = client
            .stream_unary(vec![req("small", 1), big.clone()])
            .unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &[&size, "1024"]);
        // Exactly at the limit passes.
        let mut at = req("", 1);
        at.value = "y".repeat(1024 - 3 - 2);
        assert_eq!(at.encoded_len(), 1024);
        assert_eq!(client.unary_unary(at).unwrap().message.len(), 1019);

        // The same connection serves on.
        assert_eq!(client.unary_unary(req("b", 1)).unwrap().seqno, port);
        assert_serves(&server);
    });
}

#[test]
fn server_send_limit_is_resource_exhausted_naming_size_and_limit() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b.max_send_message_size(1024));
        let client = ExampleClient::connect(target(&server)).unwrap();
        let port = client.unary_unary(req("a", 1)).unwrap().seqno;
        let size = reply("x".repeat(2000), port).encoded_len().to_string();

        let err = client.unary_unary(req("big", 2000)).unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &[&size, "1024", "send"]);
        // From a streaming handler's sink too.
        let err = client
            .unary_stream(req("big", 2000))
            .next()
            .expect("an item")
            .unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &[&size, "1024"]);
        // A reply under the limit is fine.
        assert_eq!(
            client.unary_unary(req("big", 1000)).unwrap().message.len(),
            1000
        );

        assert_eq!(client.unary_unary(req("b", 1)).unwrap().seqno, port);
        assert_serves(&server);
    });
}

#[test]
fn client_receive_limit_is_resource_exhausted_naming_size_and_limit() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b);
        let channel = Channel::builder(target(&server))
            .max_receive_message_size(1024)
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel);
        let port = client.unary_unary(req("a", 1)).unwrap().seqno;
        let size = reply("x".repeat(2000), port).encoded_len().to_string();

        let err = client.unary_unary(req("big", 2000)).unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &[&size, "1024"]);
        let err = client
            .unary_stream(req("big", 2000))
            .next()
            .expect("an item")
            .unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &[&size, "1024"]);

        assert_eq!(client.unary_unary(req("b", 1)).unwrap().seqno, port);
        assert_serves(&server);
    });
}

#[test]
fn client_send_limit_is_resource_exhausted_naming_size_and_limit() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b);
        let channel = Channel::builder(target(&server))
            .max_send_message_size(1024)
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel);
        let port = client.unary_unary(req("a", 1)).unwrap().seqno;
        let big = req(&"x".repeat(2000), 1);
        let size = big.encoded_len().to_string();

        let err = client.unary_unary(big.clone()).unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &[&size, "1024", "send"]);
        // Through a request sink: that send fails, the call goes on.
        let (mut sink, call) = client.stream_unary_sender(CallOptions::new());
        sink.send(req("one", 1)).unwrap();
        let err = sink.send(big).unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &[&size, "1024"]);
        sink.send(req("two", 1)).unwrap();
        sink.finish();
        assert_eq!(call.wait().unwrap().message, "2");

        assert_eq!(client.unary_unary(req("b", 1)).unwrap().seqno, port);
        assert_serves(&server);
    });
}

/// A request whose encoding is exactly `size` bytes.
fn request_of_size(size: usize) -> ExampleRequest {
    // value: tag (1) + length varint (4 for these sizes) + bytes.
    let r = req(&"q".repeat(size - 5), 0);
    assert_eq!(r.encoded_len(), size);
    r
}

#[test]
fn default_receive_limit_is_4_mib_on_server_and_client() {
    with_timeout(120, || {
        const MIB4: usize = 4 * 1024 * 1024;
        let server = example_server(|b| b);
        let client = ExampleClient::connect(target(&server)).unwrap();

        // Server: 4 MiB + 1 byte fails, 4 MiB - 1 KiB passes.
        let err = client.unary_unary(request_of_size(MIB4 + 1)).unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &["4194305", "4194304"]);
        let ok = client.unary_unary(request_of_size(MIB4 - 1024)).unwrap();
        assert_eq!(ok.message.len(), MIB4 - 1024 - 5);

        // Client: a reply of 4 MiB + 1 byte fails (ExampleService repeats
        // the value `multiplier` times: 2 x 2,097,150 bytes + 5 of framing).
        let mut half = req(&"r".repeat((MIB4 + 1 - 5) / 2), 2);
        assert_eq!(
            reply("r".repeat(2 * half.value.len()), 0).encoded_len(),
            MIB4 + 1
        );
        let err = client.unary_unary(half.clone()).unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &["4194305", "4194304"]);
        half.value.truncate((MIB4 - 1024 - 5) / 2);
        assert_eq!(
            client.unary_unary(half).unwrap().message.len(),
            MIB4 - 1024 - 5 - 1
        );

        assert_eq!(client.unary_unary(req("ok", 1)).unwrap().message, "ok");
        assert_serves(&server);
    });
}

#[test]
fn max_concurrent_streams_is_advertised_and_refused_beyond_on_the_wire() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b.max_concurrent_streams(3));
        let mut conn = RawConn::handshake(server.local_addr());
        assert_eq!(
            conn.peer_setting(setting::MAX_CONCURRENT_STREAMS),
            Some(3),
            "SETTINGS: {:?}",
            conn.peer_settings
        );
        for stream in [1, 3, 5] {
            conn.send_request(stream, &grpc_request_headers(UNARY), &unary_body("block"));
        }
        probe.wait_running(3);
        // A fourth stream while three are open: refused.
        conn.send_request(7, &grpc_request_headers(UNARY), &unary_body("block"));
        let refused = conn.reply(7);
        assert_eq!(refused.reset, Some(code::REFUSED_STREAM), "{refused:?}");
        assert_eq!(probe.max_running.load(Ordering::SeqCst), 3);
        probe.gate.open();
        for stream in [1, 3, 5] {
            let r = conn.reply(stream);
            assert_eq!(r.grpc_status(), Some(0), "stream {stream}: {r:?}");
        }
        // Streams free again: the connection serves.
        assert_raw_serves(&mut conn, 9);
        assert_serves(&server);
    });
}

#[test]
fn max_concurrent_streams_our_client_waits_and_every_call_completes() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b.max_concurrent_streams(3));
        let client = ExampleClient::connect(target(&server)).unwrap();
        // A first call: the server's SETTINGS have arrived.
        let port = client.unary_unary(req("a", 1)).unwrap().seqno;
        // Seven calls on one connection that allows three streams at once.
        let calls: Vec<_> = (0..7)
            .map(|_| client.unary_unary_start(req("block", 1), CallOptions::new()))
            .collect();
        probe.wait_running(3);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            probe.running.load(Ordering::SeqCst),
            3,
            "more handlers than streams allowed"
        );
        probe.gate.open();
        let ports: Vec<i32> = calls
            .into_iter()
            .map(|c| c.wait().expect("every call completes").seqno)
            .collect();
        assert!(ports.iter().all(|p| *p == port), "{ports:?}");
        assert_eq!(probe.max_running.load(Ordering::SeqCst), 3);
        assert_serves(&server);
    });
}

/// A "server" that refuses the first stream with RST_STREAM REFUSED_STREAM
/// and answers every later one; it reports each request as (connection
/// number, stream id).
fn refusing_server() -> (SocketAddr, std::sync::mpsc::Receiver<(usize, u32)>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let refused_one = std::sync::atomic::AtomicBool::new(false);
    let (addr, _threads) = raw::fake_server(3, move |n, mut conn| loop {
        match conn.next_event(Duration::from_secs(20)) {
            Some(Event::Data {
                stream,
                end_stream: true,
                ..
            }) => {
                let _ = tx.lock().unwrap().send((n, stream));
                if !refused_one.swap(true, Ordering::SeqCst) {
                    let _ = conn.write(&raw::rst_stream(stream, code::REFUSED_STREAM));
                    continue;
                }
                let mut out = raw::headers(
                    stream,
                    &raw::encode_headers(&[
                        (":status", "200"),
                        ("content-type", "application/grpc"),
                    ]),
                    false,
                    true,
                );
                let answer = reply("answered", stream as i32).encode_to_vec();
                out.extend(raw::data(stream, &raw::grpc_frame(0, &answer), false));
                out.extend(raw::headers(
                    stream,
                    &raw::encode_headers(&[("grpc-status", "0")]),
                    true,
                    true,
                ));
                let _ = conn.write(&out);
            }
            Some(Event::Closed) | None => return,
            Some(_) => {}
        }
    });
    (addr, rx)
}

#[test]
fn a_refused_stream_is_retried_on_the_same_healthy_connection() {
    with_timeout(60, || {
        // What a server does with streams beyond its max_concurrent_streams
        // that a client opened before its SETTINGS arrived: RST_STREAM
        // REFUSED_STREAM. The stream was never processed: our client retries
        // it transparently; the connection itself is healthy and stays in
        // use (a new connection per refusal would get around the server's
        // limit on streams per connection).
        let (addr, requests) = refusing_server();
        let client = ExampleClient::connect(format!("http://{addr}")).unwrap();
        let answer = client
            .unary_unary(req("a", 1))
            .expect("retried transparently");
        assert_eq!(answer.message, "answered");
        let seen: Vec<(usize, u32)> = requests.try_iter().collect();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let next = client.unary_unary(req("b", 1)).unwrap();
        assert_eq!(next.message, "answered");
        let later: Vec<(usize, u32)> = requests.try_iter().collect();
        assert_eq!(
            seen.iter()
                .chain(&later)
                .map(|(conn, _)| *conn)
                .collect::<Vec<_>>(),
            vec![0, 0, 0],
            "requests as (connection, stream): {seen:?} then {later:?}"
        );
    });
}

#[test]
fn max_connections_refuses_extra_connections_with_a_goaway_the_client_reads() {
    with_timeout(60, || {
        let server = example_server(|b| b.max_connections(2));
        let first = ExampleClient::connect(target(&server)).unwrap();
        let second = ExampleClient::connect(target(&server)).unwrap();
        first.unary_unary(req("1", 1)).unwrap();
        second.unary_unary(req("2", 1)).unwrap();

        // A raw third connection reads SETTINGS, then a GOAWAY naming the
        // limit, then the end of the connection: no hang. Both a client that
        // waits for the server and one that sends its preface at once, as
        // HTTP/2 clients do.
        for send_first in [false, true] {
            let mut conn = RawConn::connect(server.local_addr());
            if send_first {
                let mut hello = PREFACE.to_vec();
                hello.extend_from_slice(&raw::settings(&[]));
                let _ = conn.write(&hello);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut frames = Vec::new();
            loop {
                match conn.read_frame_until(deadline) {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => panic!(
                        "preface sent first: {send_first}: the refused connection ended \
                         with {e} after {frames:?}"
                    ),
                }
            }
            let goaway = frames
                .iter()
                .find(|f| f.kind == raw::kind::GOAWAY)
                .unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
            let debug = String::from_utf8_lossy(&goaway.payload[8..]);
            assert_mentions(&debug, &["limit of 2 connections"]);
        }

        // Our client: UNAVAILABLE, naming the limit.
        let third = ExampleClient::connect(target(&server)).unwrap();
        let started = Instant::now();
        let refused = third.unary_unary(req("3", 1)).unwrap_err();
        assert_code(&refused, Code::Unavailable);
        assert!(started.elapsed() < Duration::from_secs(10));

        // The two served connections are untouched; closing one makes room.
        first.unary_unary(req("1", 1)).unwrap();
        second.unary_unary(req("2", 1)).unwrap();
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fresh = Channel::builder(target(&server))
                .reconnect_backoff_initial(Duration::from_millis(1))
                .reconnect_backoff_max(Duration::from_millis(1))
                .connect()
                .unwrap();
            match ExampleClient::new(fresh).unary_unary(req("again", 1)) {
                Ok(r) => {
                    assert_eq!(r.message, "again");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    assert_code(&e, Code::Unavailable);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("no room after a connection closed: {e}"),
            }
        }
        // Checked last, so that everything above is checked too.
        assert_mentions(refused.message(), &["limit of 2 connections"]);
    });
}

#[test]
fn max_concurrent_handlers_beyond_the_limit_is_resource_exhausted_at_once() {
    for handlers in [UnaryHandlers::Workers, UnaryHandlers::Adaptive] {
        handler_limit(handlers);
    }
}

/// Two handlers block (on workers, or inline and then handed off): a
/// third call is refused at once, on their connection and on a new one.
fn handler_limit(handlers: UnaryHandlers) {
    with_timeout(60, move || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| {
            b.max_concurrent_handlers(2).unary_handlers(handlers)
        });
        let client = ExampleClient::connect(target(&server)).unwrap();
        let blocked: Vec<_> = (0..2)
            .map(|_| client.unary_unary_start(req("block", 1), CallOptions::new()))
            .collect();
        probe.wait_running(2);
        // Both hold a thread of their own (inline ones once handed off).
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.stats().handlers_busy < 2 {
            assert!(Instant::now() < deadline, "{:?}", server.stats());
            std::thread::sleep(Duration::from_millis(1));
        }

        for c in [
            client.clone(),
            ExampleClient::connect(target(&server)).unwrap(),
        ] {
            let started = Instant::now();
            let err = c.unary_unary(req("third", 1)).unwrap_err();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not at once: {:?}",
                started.elapsed()
            );
            assert_code(&err, Code::ResourceExhausted);
            assert_mentions(err.message(), &["2 handlers"]);
        }
        assert_eq!(probe.running.load(Ordering::SeqCst), 2);
        probe.gate.open();
        for c in blocked {
            assert_eq!(c.wait().unwrap().message, "done");
        }
        assert_serves(&server);
    });
}

#[test]
fn a_header_list_over_max_header_list_size_is_refused_and_the_connection_survives() {
    with_timeout(60, || {
        let server = example_server(|b| b.max_header_list_size(4096));
        let mut conn = RawConn::handshake(server.local_addr());
        assert_eq!(
            conn.peer_setting(setting::MAX_HEADER_LIST_SIZE),
            Some(4096),
            "SETTINGS: {:?}",
            conn.peer_settings
        );
        let big = "v".repeat(8 * 1024);
        let fields = headers_with(UNARY, &[], &[("x-big", &big)]);
        conn.send_request(1, &fields, &unary_body("too big"));
        let r = conn.reply(1);
        assert!(
            r.http_status() == Some(431) || r.reset.is_some(),
            "expected HTTP 431 or a reset: {r:?}"
        );
        assert_ne!(r.grpc_status(), Some(0), "{r:?}");
        assert_raw_serves(&mut conn, 3);

        // Our client: the call fails, naming the HTTP status, and the
        // connection serves on.
        let client = ExampleClient::connect(target(&server)).unwrap();
        let mut md = Metadata::new();
        md.insert("x-big", &big).unwrap();
        let err = client
            .unary_unary_with(req("too big", 1), CallOptions::new().metadata(md))
            .unwrap_err();
        assert_ne!(err.code(), Code::Ok);
        assert_mentions(err.message(), &["431"]);
        assert_eq!(client.unary_unary(req("ok", 1)).unwrap().message, "ok");
        assert_serves(&server);
    });
}

// ---------------------------------------------------------------------------
// Connection life
// ---------------------------------------------------------------------------

#[test]
fn server_keepalive_closes_a_client_that_stops_answering_pings() {
    with_timeout(60, || {
        let server = example_server(|b| {
            b.keepalive_interval(Some(Duration::from_millis(200)))
                .keepalive_timeout(Duration::from_secs(1))
        });
        // This client answers (reading on a thread of its own): its
        // connection stays open.
        let mut polite = RawConn::handshake(server.local_addr());
        let polite = std::thread::spawn(move || {
            let (events, closed) = polite.events_for(Duration::from_secs(3));
            (polite, events, closed)
        });
        // This one never sends a PING ACK.
        let mut mute = RawConn::handshake(server.local_addr());
        mute.answer_pings = false;

        let events = mute
            .wait_closed(Duration::from_secs(15))
            .expect("the server closes a connection whose pings go unanswered");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Ping { ack: false, .. })),
            "no PING before the close: {events:?}"
        );

        let (mut polite, events, closed) = polite.join().expect("the polite client");
        assert!(
            !closed,
            "a client that answers pings was closed: {events:?}"
        );
        let pings = events
            .iter()
            .filter(|e| matches!(e, Event::Ping { ack: false, .. }))
            .count();
        assert!(pings >= 2, "keepalive pings every 200 ms: {events:?}");
        assert_raw_serves(&mut polite, 1);
        assert_serves(&server);
    });
}

/// A "server" that completes the HTTP/2 handshake, reads the call's
/// request headers, and from then on answers nothing (no PING ACK). Returns
/// how many PINGs it ignored before the client closed the connection.
fn silent_server() -> (SocketAddr, std::thread::JoinHandle<Vec<usize>>) {
    raw::fake_server(1, |_, mut conn| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match conn.next_event_until(deadline) {
                Some(Event::Headers { .. }) => break,
                Some(Event::Closed) | None => panic!("no call reached the silent server"),
                Some(_) => {}
            }
        }
        conn.answer_pings = false;
        conn.auto_window_update = false;
        let mut ignored = 0;
        loop {
            match conn.next_event(Duration::from_secs(30)) {
                Some(Event::Ping { ack: false, .. }) => ignored += 1,
                Some(Event::Closed) => return ignored,
                None => panic!("the client did not close the connection"),
                Some(_) => {}
            }
        }
    })
}

#[test]
fn client_keepalive_detects_a_server_that_stops_answering() {
    with_timeout(60, || {
        let (addr, silent) = silent_server();
        let channel = Channel::builder(format!("http://{addr}"))
            .keepalive_interval(Some(Duration::from_millis(200)))
            .keepalive_timeout(Duration::from_millis(500))
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel);
        let started = Instant::now();
        let err = client.unary_unary(req("anyone?", 1)).unwrap_err();
        assert_code(&err, Code::Unavailable);
        assert_mentions(err.message(), &["keepalive"]);
        assert!(started.elapsed() < Duration::from_secs(20));
        let ignored = silent.join().expect("the silent server");
        assert!(ignored[0] >= 1, "the client sent no PING");
    });
}

#[test]
fn idle_timeout_goaways_an_idle_connection_and_the_client_reconnects() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b.idle_timeout(Some(Duration::from_millis(300))));
        let mut conn = RawConn::handshake(server.local_addr());
        let events = conn
            .wait_closed(Duration::from_secs(10))
            .expect("the idle connection is closed");
        assert!(
            events.iter().any(|e| matches!(e, Event::GoAway { .. })),
            "closed without a GOAWAY: {events:?}"
        );

        // A connection in use is not idle; once idle, it goes, and our
        // client moves on to a new one.
        let client = ExampleClient::connect(target(&server)).unwrap();
        let first = client.unary_unary(req("a", 1)).unwrap().seqno;
        let held = client.unary_unary_start(req("block", 1), CallOptions::new());
        probe.wait_running(1);
        std::thread::sleep(Duration::from_millis(800));
        probe.gate.open();
        assert_eq!(
            held.wait().unwrap().seqno,
            first,
            "a busy connection stayed"
        );
        std::thread::sleep(Duration::from_millis(1000));
        let second = client.unary_unary(req("b", 1)).unwrap().seqno;
        assert_ne!(first, second, "the idle connection was not closed");
        assert_serves(&server);
    });
}

/// Waits (up to 10 s) until the server's statistics satisfy `ok`; returns
/// the last ones read.
fn wait_stats(server: &ServerHandle, ok: impl Fn(&ServerStats) -> bool) -> ServerStats {
    eventually(10, || {
        let now = server.stats();
        (ok(&now), now)
    })
}

/// A server whose idle connections park after 20 ms, with more settings.
fn parking_server(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> ServerHandle {
    example_server(|b| configure(b.park_idle_connections_after(Some(Duration::from_millis(20)))))
}

#[test]
fn idle_connections_park_and_wake_for_every_kind_of_call() {
    with_timeout(60, || {
        let server = parking_server(|b| b);
        let clients: Vec<_> = (0..4)
            .map(|_| ExampleClient::connect(target(&server)).unwrap())
            .collect();
        for round in 0..3 {
            for (i, c) in clients.iter().enumerate() {
                let value = format!("r{round}c{i}");
                assert_eq!(
                    c.unary_unary(req(&value, 2)).unwrap().message,
                    value.repeat(2)
                );
                let replies: Vec<_> = c.unary_stream(req(&value, 1)).collect();
                assert_eq!(replies.len(), 2, "{replies:?}");
                let joined = c.stream_unary(vec![req("a", 1), req("b", 1)]).unwrap();
                assert_eq!(joined.message, "a,b");
                let echoed = c
                    .stream_stream(vec![req("x", 1), req("y", 2)])
                    .map(|r| r.map(|r| r.message))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                assert_eq!(echoed, ["x", "yy"]);
            }
            // Between rounds every connection gives its thread up and stays
            // open.
            let now = wait_stats(&server, |s| s.connections_parked == 4);
            assert_eq!((now.connections, now.connections_parked), (4, 4));
        }
        // A parked connection hears its client leave.
        drop(clients);
        let now = wait_stats(&server, |s| s.connections == 0);
        assert_eq!((now.connections, now.connections_parked), (0, 0));
        assert_serves(&server);
    });
}

#[test]
fn parked_connections_keep_their_keepalive_idle_and_handshake_timers() {
    with_timeout(60, || {
        let server = parking_server(|b| {
            b.keepalive_interval(Some(Duration::from_millis(200)))
                .keepalive_timeout(Duration::from_secs(1))
        });
        // Pings keep coming to a parked connection that answers them, and it
        // stays open; one that stops answering is closed.
        let mut polite = RawConn::handshake(server.local_addr());
        let now = wait_stats(&server, |s| s.connections_parked == 1);
        assert_eq!(now.connections_parked, 1);
        let (events, closed) = polite.events_for(Duration::from_secs(2));
        assert!(
            !closed,
            "a parked client that answers pings was closed: {events:?}"
        );
        let pings = events
            .iter()
            .filter(|e| matches!(e, Event::Ping { ack: false, .. }))
            .count();
        assert!(pings >= 2, "keepalive pings every 200 ms: {events:?}");
        polite.answer_pings = false;
        polite
            .wait_closed(Duration::from_secs(15))
            .expect("the server closes a parked connection whose pings go unanswered");

        // The idle timeout ends a parked connection.
        let server = parking_server(|b| b.idle_timeout(Some(Duration::from_millis(300))));
        let mut conn = RawConn::handshake(server.local_addr());
        let now = wait_stats(&server, |s| s.connections_parked == 1);
        assert_eq!(now.connections_parked, 1);
        let events = conn
            .wait_closed(Duration::from_secs(10))
            .expect("the idle timeout closes a parked connection");
        assert!(
            events.iter().any(|e| matches!(e, Event::GoAway { .. })),
            "closed without a GOAWAY: {events:?}"
        );

        // A connection still in its handshake parks too, and its handshake
        // timeout still closes it.
        let server = parking_server(|b| b.handshake_timeout(Duration::from_millis(300)));
        let mut silent = RawConn::connect(server.local_addr());
        let now = wait_stats(&server, |s| s.connections_parked == 1);
        assert_eq!(now.connections_parked, 1);
        let (_, closed) = silent.read_to_close(Instant::now() + Duration::from_secs(10));
        assert!(
            closed,
            "a parked connection without a preface was not closed"
        );
        assert_serves(&server);
    });
}

#[test]
fn with_many_connections_open_idle_ones_park_at_once() {
    with_timeout(120, || {
        // While more than 512 connections are open, a connection whose
        // calls are over parks at once, whatever
        // `park_idle_connections_after` says.
        let n = 520;
        ensure_fds(n * 8 + 256);
        let server =
            example_server(|b| b.park_idle_connections_after(Some(Duration::from_secs(600))));
        let clients: Vec<_> = (0..n)
            .map(|_| ExampleClient::connect(target(&server)).unwrap())
            .collect();
        for round in 0..2 {
            for c in &clients {
                let reply = c.unary_unary(req("a", 1)).unwrap();
                assert_eq!(reply.message, "a", "round {round}");
            }
            let now = wait_stats(&server, |s| s.connections_parked == n);
            assert_eq!((now.connections, now.connections_parked), (n, n));
        }
        drop(clients);
        let now = wait_stats(&server, |s| s.connections == 0);
        assert_eq!(now.connections, 0);
    });
}

#[test]
fn a_graceful_shutdown_ends_parked_connections() {
    with_timeout(30, || {
        // A grace longer than the test's timeout: the shutdown must not
        // wait it out for connections that have no call.
        let server = parking_server(|b| b.shutdown_grace_period(Duration::from_secs(120)));
        let client = ExampleClient::connect(target(&server)).unwrap();
        assert_eq!(client.unary_unary(req("a", 1)).unwrap().message, "a");
        let now = wait_stats(&server, |s| s.connections_parked == 1);
        assert_eq!(now.connections_parked, 1);
        server.shutdown().expect("a clean shutdown");
        let err = client.unary_unary(req("b", 1)).unwrap_err();
        assert_code(&err, Code::Unavailable);
    });
}

#[test]
fn max_connection_age_goaways_and_the_client_moves_to_a_new_connection() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| {
            b.max_connection_age(Some(Duration::from_millis(600)))
                .max_connection_age_grace(Duration::from_secs(20))
        });
        let mut conn = RawConn::handshake(server.local_addr());
        let events = conn
            .wait_closed(Duration::from_secs(10))
            .expect("the old connection is closed");
        assert!(
            events.iter().any(|e| matches!(e, Event::GoAway { .. })),
            "closed without a GOAWAY: {events:?}"
        );

        let client = ExampleClient::connect(target(&server)).unwrap();
        let first = client.unary_unary(req("a", 1)).unwrap().seqno;
        // In flight when the age passes: finishes within the grace period.
        let in_flight = client.unary_unary_start(req("block", 1), CallOptions::new());
        probe.wait_running(1);
        std::thread::sleep(Duration::from_millis(1200));
        // The next call goes over a new connection, transparently.
        let second = client.unary_unary(req("b", 1)).unwrap().seqno;
        assert_ne!(first, second, "still on the old connection");
        probe.gate.open();
        let in_flight = in_flight.wait();
        assert_serves(&server);
        assert_eq!(
            in_flight
                .expect("the call in flight finishes within the grace period")
                .seqno,
            first
        );
    });
}

#[test]
fn connect_timeout_against_a_listener_whose_backlog_is_full() {
    with_timeout(60, || {
        // A listener with backlog 0 that never accepts: once its queue is
        // full, connects get no answer (loopback only).
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).expect("bind");
        socket.listen(0).expect("listen");
        let addr = socket
            .local_addr()
            .unwrap()
            .as_socket()
            .expect("an IP address");
        let mut queued = Vec::new();
        let mut full = false;
        for _ in 0..64 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => queued.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    full = true;
                    break;
                }
                Err(e) => panic!("unexpected connect error: {e}"),
            }
        }
        // Never skip: Linux stops answering connects once a listener's
        // queue is full; a kernel that does not cannot run this test.
        assert!(
            full,
            "the listen backlog never filled after {} connections: this test needs a \
             kernel that leaves connects unanswered on a full backlog (Linux does)",
            queued.len()
        );

        let started = Instant::now();
        let err = Channel::builder(format!("http://{addr}"))
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .unwrap_err();
        assert!(
            matches!(err, TransportError::ConnectTimeout { .. }),
            "expected a connect timeout: {err:?}"
        );
        assert_mentions(&err.to_string(), &["timed out", "500ms"]);
        assert!(started.elapsed() < Duration::from_secs(10));

        // A lazy channel's call: UNAVAILABLE with the same reason.
        let client = ExampleClient::new(
            Channel::builder(format!("http://{addr}"))
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy()
                .unwrap(),
        );
        let err = client.unary_unary(req("a", 1)).unwrap_err();
        assert_code(&err, Code::Unavailable);
        assert_mentions(err.message(), &["timed out"]);
        drop(queued);
    });
}

#[test]
fn localhost_target_connects_whichever_loopback_address_the_server_is_on() {
    with_timeout(60, || {
        let addrs: Vec<SocketAddr> = ("localhost", 0)
            .to_socket_addrs()
            .expect("resolve localhost")
            .collect();
        eprintln!("localhost resolves to {addrs:?}");
        let mut tried = 0;
        for ip in ["127.0.0.1", "::1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            if !addrs.iter().any(|a| a.ip() == ip) {
                continue;
            }
            // A server on this address only.
            let Ok(bound) = Server::builder()
                .add_service(ExampleServer::new(ExampleService))
                .bind(SocketAddr::new(ip, 0))
            else {
                eprintln!("cannot bind {ip}: skipped");
                continue;
            };
            let server = bound.spawn().unwrap();
            let port = server.local_addr().port();
            let client = ExampleClient::connect(format!("http://localhost:{port}")).unwrap();
            assert_eq!(
                client.unary_unary(req("local", 1)).unwrap().message,
                "local"
            );
            tried += 1;
        }
        assert!(tried >= 1, "localhost resolves to no loopback address");
        if addrs.len() < 2 {
            eprintln!(
                "NOTE: localhost has one address here; falling back past a refusing \
                 address is not exercised"
            );
        }
    });
}

// ---------------------------------------------------------------------------
// Bad input on the connection
// ---------------------------------------------------------------------------

#[test]
fn an_http1_request_gets_a_505_naming_the_problem_then_the_connection_closes() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        for request in [
            &b"POST /nameko.example/unary_unary HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/grpc\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            let mut conn = RawConn::connect(server.local_addr());
            conn.write(request).unwrap();
            let (bytes, closed) = conn.read_to_close(Instant::now() + Duration::from_secs(10));
            let text = String::from_utf8_lossy(&bytes);
            assert!(closed, "the connection stays open after: {text}");
            assert!(text.starts_with("HTTP/1.1 505 "), "{text}");
            let (_, body) = text.split_once("\r\n\r\n").expect("a body");
            assert_mentions(body, &["gRPC", "HTTP/2"]);
            let method_path = String::from_utf8_lossy(request)
                .split(" HTTP/")
                .next()
                .unwrap()
                .to_owned();
            assert_mentions(body, &[&method_path]);
        }
        assert_serves(&server);
    });
}

#[test]
fn garbage_bytes_close_that_connection_only() {
    with_timeout(60, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b);
        // A connection in use throughout.
        let client = ExampleClient::connect(target(&server)).unwrap();
        let port = client.unary_unary(req("a", 1)).unwrap().seqno;
        let (mut sink, mut echoes) = client.stream_stream_sender(CallOptions::new());
        sink.send(req("before", 1)).unwrap();
        assert_eq!(echoes.next().unwrap().unwrap().message, "before");

        let mut tls_hello = vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03];
        tls_hello.extend((0..200u32).map(|i| (i * 7919 % 251) as u8));
        for garbage in [
            tls_hello,
            vec![0u8; 100],
            b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n".to_vec(),
            (0..5000u32).map(|i| (i * 31 % 256) as u8).collect(),
        ] {
            let mut conn = RawConn::connect(server.local_addr());
            let _ = conn.write(&garbage);
            let (_, closed) = conn.read_to_close(Instant::now() + Duration::from_secs(10));
            assert!(
                closed,
                "garbage {:?}... left the connection open",
                &garbage[..8]
            );
        }
        // Garbage after a good preface: a protocol error closes it.
        let mut conn = RawConn::handshake(server.local_addr());
        conn.write(&raw::data(0, b"data on stream zero", false))
            .unwrap();
        conn.write(&[0xff; 64]).unwrap();
        let events = conn
            .wait_closed(Duration::from_secs(10))
            .expect("a protocol error closes the connection");
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::GoAway { code: c, .. } if *c == code::PROTOCOL_ERROR
            )),
            "{events:?}"
        );

        sink.send(req("after", 1)).unwrap();
        assert_eq!(echoes.next().unwrap().unwrap().message, "after");
        sink.finish();
        assert!(echoes.next().is_none());
        assert_eq!(client.unary_unary(req("b", 1)).unwrap().seqno, port);
        assert_serves(&server);
    });
}

#[test]
fn a_truncated_preface_closes_that_connection_only() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let client = ExampleClient::connect(target(&server)).unwrap();
        client.unary_unary(req("a", 1)).unwrap();
        for cut in [1, 10, PREFACE.len() - 1] {
            let mut conn = RawConn::connect(server.local_addr());
            conn.write(&PREFACE[..cut]).unwrap();
            // The client gives up sending: the server sees the end.
            conn.try_clone_stream()
                .shutdown(std::net::Shutdown::Write)
                .unwrap();
            let (bytes, closed) = conn.read_to_close(Instant::now() + Duration::from_secs(10));
            assert!(closed, "cut at {cut}: still open");
            assert!(bytes.len() < 100, "cut at {cut}: {bytes:?}");
        }
        client.unary_unary(req("b", 1)).unwrap();
        assert_serves(&server);
    });
}

#[test]
fn a_connection_that_never_sends_its_preface_is_closed_after_the_handshake_timeout() {
    with_timeout(60, || {
        let server = example_server(|b| b.handshake_timeout(Duration::from_millis(300)));
        // Whether a connection that sent `sent` is closed within 10 s.
        let closed_after = |sent: &[u8]| {
            let mut conn = RawConn::connect(server.local_addr());
            conn.write(sent).unwrap();
            conn.read_to_close(Instant::now() + Duration::from_secs(10))
                .1
        };
        assert!(closed_after(b""), "nothing sent: not closed within 10 s");
        assert!(
            closed_after(&PREFACE[..12]),
            "half a preface: not closed within 10 s"
        );
        // The preface string without the SETTINGS frame that completes the
        // connection preface (RFC 9113 section 3.4).
        let without_settings = closed_after(PREFACE);
        assert_serves(&server);
        assert!(
            without_settings,
            "the preface string without SETTINGS: not closed within 10 s"
        );
    });
}

#[test]
fn abrupt_disconnects_at_every_stage_lose_nothing_else() {
    with_timeout(120, || {
        let probe = Arc::new(Probe::default());
        let server = probe_server(&probe, |b| b);
        let addr = server.local_addr();
        let client = ExampleClient::connect(target(&server)).unwrap();
        let port = client.unary_unary(req("a", 1)).unwrap().seqno;
        let (mut sink, mut echoes) = client.stream_stream_sender(CallOptions::new());

        let request = |value: &str| {
            let mut out = raw::header_frames(
                1,
                &raw::encode_owned(&grpc_request_headers(UNARY)),
                false,
                raw::DEFAULT_MAX_FRAME,
            );
            out.extend_from_slice(&raw::data(1, &unary_body(value), true));
            out
        };
        let block = raw::encode_owned(&grpc_request_headers(UNARY));
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&raw::settings(&[]));
        let with_hello = |rest: &[u8]| {
            let mut out = hello.clone();
            out.extend_from_slice(rest);
            out
        };
        let mut partial_message = raw::headers(1, &block, false, true);
        partial_message.extend_from_slice(&raw::data(
            1,
            &raw::grpc_frame(0, &[0u8; 100])[..15],
            false,
        ));
        let mut partial_frame = raw::headers(1, &block, false, true);
        partial_frame.extend_from_slice(&raw::data(1, &[0u8; 100], false)[..30]);

        let stages: Vec<(&str, Vec<u8>)> = vec![
            ("right after connecting", Vec::new()),
            ("mid-preface", PREFACE[..7].to_vec()),
            ("after the preface string", PREFACE.to_vec()),
            ("after the preface and SETTINGS", hello.clone()),
            (
                "mid-headers (no END_HEADERS)",
                with_hello(&raw::headers(1, &block[..block.len() / 2], false, false)),
            ),
            (
                "mid-CONTINUATION",
                with_hello(&raw::header_frames(1, &block, false, 8)[..60]),
            ),
            (
                "after the headers",
                with_hello(&raw::headers(1, &block, false, true)),
            ),
            ("mid-message", with_hello(&partial_message)),
            ("mid-frame", with_hello(&partial_frame)),
            ("before the response", with_hello(&request("hold"))),
        ];
        for (i, (stage, bytes)) in stages.iter().enumerate() {
            let mut conn = RawConn::connect(addr);
            conn.write(bytes).unwrap();
            if *stage == "before the response" {
                probe.wait_running(1);
            }
            drop(conn);
            // Nothing else noticed.
            let value = format!("after {stage}");
            sink.send(req(&value, 1)).unwrap();
            assert_eq!(echoes.next().unwrap().unwrap().message, value, "stage {i}");
            assert_eq!(client.unary_unary(req("b", 1)).unwrap().seqno, port);
            assert_serves(&server);
        }
        // The handler of the call whose client vanished saw it cancelled.
        let deadline = Instant::now() + Duration::from_secs(20);
        while probe.cancelled_seen.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "the handler was not cancelled");
            std::thread::sleep(Duration::from_millis(10));
        }
        sink.finish();
        assert!(echoes.next().is_none());
    });
}

// ---------------------------------------------------------------------------
// Malformed gRPC requests
// ---------------------------------------------------------------------------

#[test]
fn a_wrong_content_type_is_http_415() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut conn = RawConn::handshake(server.local_addr());
        let mut stream = 1;
        for content_type in ["application/json", "text/html", "application/grpcx"] {
            let fields = headers_with(UNARY, &[], &[("content-type", content_type)]);
            conn.send_request(stream, &fields, &unary_body("x"));
            let r = conn.reply(stream);
            assert_eq!(r.http_status(), Some(415), "{content_type}: {r:?}");
            stream += 2;
        }
        let fields = headers_with(UNARY, &["content-type"], &[]);
        conn.send_request(stream, &fields, &unary_body("x"));
        let r = conn.reply(stream);
        assert_eq!(r.http_status(), Some(415), "no content-type: {r:?}");
        assert_raw_serves(&mut conn, stream + 2);
        assert_serves(&server);
    });
}

#[test]
fn a_missing_te_is_internal_naming_te() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut conn = RawConn::handshake(server.local_addr());
        conn.send_request(1, &headers_with(UNARY, &["te"], &[]), &unary_body("x"));
        let r = conn.reply(1);
        assert_eq!(r.http_status(), Some(200), "{r:?}");
        assert_eq!(r.grpc_status(), Some(Code::Internal.as_i32()), "{r:?}");
        assert_mentions(&r.grpc_message(), &["te", "trailers"]);
        assert_raw_serves(&mut conn, 3);
        assert_serves(&server);
    });
}

#[test]
fn a_bad_path_is_unimplemented() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut conn = RawConn::handshake(server.local_addr());
        let mut stream = 1;
        for (path, words) in [
            ("/nope", &["/nope", "/package.Service/Method"][..]),
            ("/a/b/c", &["/a/b/c"][..]),
            ("/nameko.example/nope", &["nope", "nameko.example"][..]),
            ("/nameko.nope/unary_unary", &["nameko.nope"][..]),
        ] {
            conn.send_request(stream, &headers_with(path, &[], &[]), &unary_body("x"));
            let r = conn.reply(stream);
            assert_eq!(
                r.grpc_status(),
                Some(Code::Unimplemented.as_i32()),
                "{path}: {r:?}"
            );
            assert_mentions(&r.grpc_message(), words);
            stream += 2;
        }
        assert_raw_serves(&mut conn, stream);
        assert_serves(&server);
    });
}

/// A normal call on the h2-based raw client works.
#[track_caller]
fn assert_h2_serves(raw: &mut RawClient) {
    let resp = raw.call(UNARY, &[], frame(false, &req("ok", 1).encode_to_vec()));
    assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
}

#[track_caller]
fn assert_h2_status(resp: &RawResponse, code: Code, words: &[&str]) {
    assert_eq!(
        resp.grpc_status(),
        Some(code.as_i32()),
        "expected {code}: {resp:?}"
    );
    assert_mentions(&resp.grpc_message(), words);
}

#[test]
fn a_truncated_length_prefix_is_internal() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut raw = RawClient::connect(server.local_addr());
        for path in [UNARY, STREAM_UNARY] {
            let resp = raw.call(path, &[], vec![0, 0, 0]);
            assert_h2_status(&resp, Code::Internal, &["ended", "message", "received 3"]);
            assert_h2_serves(&mut raw);
        }
        assert_serves(&server);
    });
}

#[test]
fn a_message_shorter_than_its_prefix_is_internal() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut raw = RawClient::connect(server.local_addr());
        let mut cut = frame(false, &[0x0a; 100]);
        cut.truncate(15);
        for path in [UNARY, STREAM_UNARY] {
            let resp = raw.call(path, &[], cut.clone());
            assert_h2_status(
                &resp,
                Code::Internal,
                &["ended", "expected 105", "received 15"],
            );
            assert_h2_serves(&mut raw);
        }
        assert_serves(&server);
    });
}

#[test]
fn an_invalid_protobuf_is_internal() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut raw = RawClient::connect(server.local_addr());
        // Field 1 claims 5 bytes, one follows; then a bare varint key.
        for payload in [
            &[0x0a, 0x05, b'a'][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        ] {
            for path in [UNARY, STREAM_UNARY] {
                let resp = raw.call(path, &[], frame(false, payload));
                assert_h2_status(&resp, Code::Internal, &["decode"]);
                assert_h2_serves(&mut raw);
            }
        }
        assert_serves(&server);
    });
}

#[test]
fn a_bad_grpc_timeout_is_internal_naming_the_value() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut raw = RawClient::connect(server.local_addr());
        for value in ["1x", "-5S", "123456789S", "S", "1.5S", "10 m"] {
            let resp = raw.call(
                UNARY,
                &[("grpc-timeout", value)],
                frame(false, &req("x", 1).encode_to_vec()),
            );
            assert_h2_status(&resp, Code::Internal, &["grpc-timeout", value]);
            assert_h2_serves(&mut raw);
        }
        assert_serves(&server);
    });
}

#[test]
fn a_reserved_compressed_flag_is_internal() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut raw = RawClient::connect(server.local_addr());
        for flag in [2u8, 0x80, 0xff] {
            let mut body = frame(false, &req("x", 1).encode_to_vec());
            body[0] = flag;
            for path in [UNARY, STREAM_UNARY] {
                let resp = raw.call(path, &[], body.clone());
                assert_h2_status(
                    &resp,
                    Code::Internal,
                    &["compressed-flag", &format!("{flag:#04x}")],
                );
                assert_h2_serves(&mut raw);
            }
        }
        assert_serves(&server);
    });
}

// ---------------------------------------------------------------------------
// Abuse that does not need process-wide measurements
// ---------------------------------------------------------------------------

#[test]
fn a_huge_header_block_in_continuation_frames_is_refused() {
    with_timeout(60, || {
        let server = example_server(|b| b);
        let mut conn = RawConn::handshake(server.local_addr());
        // 1 MiB of headers: 1024 fields of over 1 KiB, in 16 KiB frames.
        let mut fields = grpc_request_headers(UNARY);
        let pad = "p".repeat(1024);
        for i in 0..1024 {
            fields.push((format!("x-pad-{i}"), pad.clone()));
        }
        let block = raw::encode_owned(&fields);
        assert!(block.len() > 1024 * 1024);
        let frames = raw::header_frames(1, &block, true, raw::DEFAULT_MAX_FRAME);
        let mut writer = conn.try_clone_stream();
        let write = std::thread::spawn(move || {
            use std::io::Write;
            // The server may close mid-way: a write error is expected then.
            let _ = writer.write_all(&frames);
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut refused = None;
        while refused.is_none() {
            let Some(event) = conn.next_event_until(deadline) else {
                panic!("a 1 MiB header block got no answer within 20 s");
            };
            match event {
                Event::Headers {
                    stream: 1, fields, ..
                } => {
                    let status = raw::header(&fields, ":status").unwrap_or("").to_owned();
                    assert_ne!(
                        raw::header(&fields, "grpc-status"),
                        Some("0"),
                        "the huge request was served"
                    );
                    refused = Some(format!("HTTP {status}"));
                }
                Event::Reset { stream: 1, code } => refused = Some(format!("reset {code}")),
                Event::GoAway { code, debug, .. } => {
                    refused = Some(format!("GOAWAY {code} {debug}"))
                }
                Event::Closed => refused = Some("closed".into()),
                _ => {}
            }
        }
        eprintln!("a 1 MiB header block: {}", refused.unwrap());
        conn.shutdown();
        write.join().unwrap();
        assert_serves(&server);
    });
}

/// Trailing metadata of about `bytes` bytes.
struct BigTrailers(usize);

impl stubbed::Example for BigTrailers {
    fn unary_unary(
        &self,
        r: ExampleRequest,
        ctx: &ServerContext,
    ) -> Result<grpc_blocking_examples::nameko::ExampleReply, Status> {
        let mut md = grpc_blocking::Metadata::new();
        md.insert("x-big", &"v".repeat(self.0)).unwrap();
        ctx.set_trailing_metadata(md);
        Ok(grpc_blocking_examples::nameko::ExampleReply {
            message: r.value,
            seqno: 0,
        })
    }
}

#[test]
fn the_client_header_list_limit_defaults_to_16_kib_and_is_configurable() {
    with_timeout(60, || {
        let server = grpc_blocking_tests::support::serve(stubbed::ExampleServer::new(BigTrailers(
            20 * 1024,
        )));
        // Default (16 KiB): 20 KiB of trailers fail the call, and the
        // connection keeps working for a call with small trailers.
        let client = ExampleClient::connect(target(&server)).unwrap();
        let err = client.unary_unary(req("a", 1)).unwrap_err();
        assert_code(&err, Code::ResourceExhausted);
        assert_mentions(err.message(), &["header", "16384"]);
        // A client allowing 64 KiB reads them.
        let roomy = ExampleClient::new(
            Channel::builder(target(&server))
                .max_header_list_size(64 * 1024)
                .connect()
                .unwrap(),
        );
        let resp = roomy
            .unary_unary_start(req("b", 1), CallOptions::new())
            .wait_response()
            .unwrap();
        assert_eq!(resp.message.message, "b");
        assert_eq!(resp.trailers.get("x-big").map(str::len), Some(20 * 1024));
        let small =
            grpc_blocking_tests::support::serve(stubbed::ExampleServer::new(BigTrailers(10)));
        let client = ExampleClient::connect(target(&small)).unwrap();
        assert_eq!(client.unary_unary(req("c", 1)).unwrap().message, "c");
    });
}
