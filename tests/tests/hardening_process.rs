//! Hardening tests that measure the whole process: its threads (graceful
//! shutdown, rapid reset) and its memory (floods of tiny frames, a peer that
//! never reads). They have a binary of their own, since thread counts and
//! RSS are per process, and run one at a time within it (a lock), so that
//! no other test blurs the numbers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_blocking::server::{Requests, ResponseSink, ServerContext};
use grpc_blocking::{CallOptions, Channel, Code, Server, ServerBuilder, ServerHandle, Status};
use grpc_blocking_examples::nameko::{
    Example, ExampleClient, ExampleReply, ExampleRequest, ExampleServer,
};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::raw::{self, code, grpc_request_headers, Event, RawConn, PREFACE};
use grpc_blocking_tests::support::{
    library_threads, req, rss_kib, settle, target, wait_for_library_threads_at_most, with_timeout,
    Gate,
};
use prost::Message;

const UNARY: &str = "/nameko.example/unary_unary";
const UNARY_STREAM: &str = "/nameko.example/unary_stream";
const STREAM_UNARY: &str = "/nameko.example/stream_unary";

/// One test at a time in this binary.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` alone (no other test of this binary meanwhile), with a timeout.
fn serial<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    with_timeout(secs, f)
}

/// Samples the RSS every 20 ms until stopped; returns the peak.
struct RssPeak {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl RssPeak {
    fn start() -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss_kib("self") as usize * 1024;
            while !flag.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib("self") as usize * 1024);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss_kib("self") as usize * 1024)
        });
        RssPeak { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the RSS sampler")
    }
}

/// Memory growth allowed for any one abuse.
const MAX_GROWTH: usize = 200 * 1024 * 1024;

/// "block" waits on the gate, "hold" until cancelled; `unary_stream`
/// "flood" sends `multiplier` messages of 32 KiB, counting them.
#[derive(Default)]
struct Probe {
    gate: Gate,
    running: AtomicUsize,
    cancelled_seen: AtomicUsize,
    sent_bytes: AtomicUsize,
    floods_ended: AtomicUsize,
}

const FLOOD_CHUNK: usize = 32 * 1024;

impl Probe {
    fn wait_running(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.running.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "handlers did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn reply(message: impl Into<String>) -> ExampleReply {
    ExampleReply {
        message: message.into(),
        seqno: 0,
    }
}

impl Example for Probe {
    fn unary_unary(&self, r: ExampleRequest, ctx: &ServerContext) -> Result<ExampleReply, Status> {
        match r.value.as_str() {
            "block" => {
                self.running.fetch_add(1, Ordering::SeqCst);
                let opened = self.gate.wait_unless_cancelled(ctx);
                self.running.fetch_sub(1, Ordering::SeqCst);
                if opened {
                    Ok(reply("done"))
                } else {
                    Err(Status::aborted("the gate did not open"))
                }
            }
            "hold" => {
                self.running.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(30);
                while !ctx.is_cancelled() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if ctx.is_cancelled() {
                    self.cancelled_seen.fetch_add(1, Ordering::SeqCst);
                }
                self.running.fetch_sub(1, Ordering::SeqCst);
                Ok(reply("held"))
            }
            other => Ok(reply(other)),
        }
    }

    fn unary_stream(
        &self,
        r: ExampleRequest,
        _: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        let mut result = Ok(());
        for _ in 0..r.multiplier {
            if let Err(e) = out.send(reply("f".repeat(FLOOD_CHUNK))) {
                result = Err(e);
                break;
            }
            self.sent_bytes.fetch_add(FLOOD_CHUNK, Ordering::SeqCst);
        }
        self.floods_ended.fetch_add(1, Ordering::SeqCst);
        result
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let mut n = 0;
        for r in requests {
            r?;
            n += 1;
        }
        Ok(reply(n.to_string()))
    }

    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        _: &ServerContext,
        out: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for r in requests {
            out.send(reply(r?.value))?;
        }
        Ok(())
    }
}

fn spawn(builder: ServerBuilder) -> ServerHandle {
    builder
        .bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .spawn()
        .expect("start the server")
}

#[track_caller]
fn assert_serves(server: &ServerHandle) {
    let client = ExampleClient::connect(target(server)).expect("a new connection");
    let reply = client
        .unary_unary(req("still-serving", 1))
        .expect("a normal call on a new connection");
    assert_eq!(reply.message, "still-serving");
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

#[test]
fn graceful_shutdown_finishes_refuses_cancels_returns_and_leaves_no_thread() {
    serial(120, || {
        let baseline = library_threads();
        let probe = Arc::new(Probe::default());
        let grace = Duration::from_secs(6);
        let server = spawn(
            Server::builder()
                .add_service(ExampleServer::from_arc(probe.clone()))
                .shutdown_grace_period(grace),
        );
        let addr = server.local_addr();
        let url = target(&server);
        let client = ExampleClient::connect(&url).unwrap();
        assert_eq!(client.unary_unary(req("a", 1)).unwrap().message, "a");
        let finishing = client.unary_unary_start(req("block", 1), CallOptions::new());
        let stuck = client.unary_unary_start(req("hold", 1), CallOptions::new());
        probe.wait_running(2);

        let started = Instant::now();
        let shutdown = std::thread::spawn(move || {
            let result = server.shutdown();
            (result, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));

        // New calls are refused (UNAVAILABLE), promptly: on the existing
        // client, whose connection got a GOAWAY, and on a new one. (Checked
        // at the end, so that the rest of the shutdown is checked too.)
        let fresh = ExampleClient::new(
            Channel::builder(&url)
                .connect_timeout(Duration::from_secs(1))
                .connect_lazy()
                .unwrap(),
        );
        let mut refusals = Vec::new();
        for (who, c) in [("the existing client", &client), ("a new client", &fresh)] {
            let result = c.unary_unary_with(
                req("new", 1),
                CallOptions::new().timeout(Duration::from_millis(1500)),
            );
            refusals.push((who, result));
        }
        assert!(
            started.elapsed() < grace,
            "the refusals took the whole grace period"
        );

        // The in-flight call finishes normally within the grace period.
        probe.gate.open();
        assert_eq!(finishing.wait().unwrap().message, "done");
        // The call still running after the grace period is cancelled.
        let err = stuck.wait().unwrap_err();
        assert!(
            matches!(err.code(), Code::Cancelled | Code::Unavailable),
            "{err}"
        );
        let (result, took) = shutdown.join().expect("the shutdown thread");
        result.expect("a clean shutdown");
        assert!(took >= grace, "returned before the grace period: {took:?}");
        assert!(took < grace + Duration::from_secs(10), "took {took:?}");
        assert_eq!(probe.cancelled_seen.load(Ordering::SeqCst), 1);

        // Nothing listens any more.
        assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
        drop(client);
        drop(fresh);
        let end = wait_for_library_threads_at_most(baseline, 30);
        assert!(
            end <= baseline,
            "{end} threads, {baseline} before: threads left behind by the shutdown"
        );

        eprintln!("new calls during the shutdown: {refusals:?}");
        for (who, result) in refusals {
            match result {
                Err(e) => assert_eq!(
                    e.code(),
                    Code::Unavailable,
                    "{who}: a new call during the shutdown should be refused at once, got: {e}"
                ),
                Ok(r) => panic!("{who}: a new call during the shutdown was served: {r:?}"),
            }
        }
    });
}

/// What a rapid reset provoked.
#[derive(Debug, Default)]
struct RapidReset {
    goaway: Option<(u32, u32, String)>,
    resets: usize,
    responses: usize,
    closed: bool,
}

/// Opens `n` streams with HEADERS and resets each at once (RST_STREAM
/// CANCEL), written as fast as the socket takes them, while reading what
/// the server answers until it closes or falls quiet for 3 s.
fn rapid_reset(addr: SocketAddr, n: u32, peak_threads: &AtomicUsize) -> RapidReset {
    let mut conn = RawConn::handshake(addr);
    conn.auto_window_update = false;
    let block = raw::encode_owned(&grpc_request_headers(UNARY));
    let mut batch = Vec::new();
    for i in 0..n {
        let id = 2 * i + 1;
        raw::put_frame(
            &mut batch,
            raw::kind::HEADERS,
            raw::flag::END_HEADERS,
            id,
            &block,
        );
        raw::put_frame(
            &mut batch,
            raw::kind::RST_STREAM,
            0,
            id,
            &code::CANCEL.to_be_bytes(),
        );
    }
    let mut writer = conn.try_clone_stream();
    let write = std::thread::spawn(move || {
        use std::io::Write;
        // The server may close the connection mid-way.
        let _ = writer.write_all(&batch);
    });
    let mut outcome = RapidReset::default();
    loop {
        peak_threads.fetch_max(library_threads(), Ordering::SeqCst);
        match conn.next_event(Duration::from_secs(3)) {
            Some(Event::GoAway {
                last_stream,
                code,
                debug,
            }) => outcome.goaway = Some((last_stream, code, debug)),
            Some(Event::Reset { .. }) => outcome.resets += 1,
            Some(Event::Headers { .. }) => outcome.responses += 1,
            Some(Event::Closed) => {
                outcome.closed = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    conn.shutdown();
    write.join().unwrap();
    outcome
}

#[test]
fn rapid_reset_is_survived_and_threads_return_to_baseline() {
    serial(180, || {
        let baseline = library_threads();
        const HANDLERS: usize = 16;
        let server = spawn(
            Server::builder()
                .add_service(ExampleServer::new(ExampleService))
                .max_concurrent_handlers(HANDLERS),
        );
        let client = ExampleClient::connect(target(&server)).unwrap();
        assert_eq!(client.unary_unary(req("a", 1)).unwrap().message, "a");
        let with_server = library_threads();

        let peak = Arc::new(AtomicUsize::new(0));
        let sampler_peak = peak.clone();
        let sampling = Arc::new(AtomicBool::new(true));
        let sampling_flag = sampling.clone();
        let sampler = std::thread::spawn(move || {
            while sampling_flag.load(Ordering::SeqCst) {
                sampler_peak.fetch_max(library_threads(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let outcome = rapid_reset(server.local_addr(), 10_000, &peak);
        sampling.store(false, Ordering::SeqCst);
        sampler.join().unwrap();
        eprintln!("rapid reset: {outcome:?}; peak threads {peak:?}, with the server {with_server}");

        // The other connection, and new ones, are served.
        assert_eq!(client.unary_unary(req("b", 1)).unwrap().message, "b");
        assert_serves(&server);
        // At most the handler pool and a few connection threads on top:
        // the raw connection's thread, a new client's two, our writer and
        // sampler.
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            peak <= with_server + HANDLERS + 6,
            "{peak} threads at the peak, {with_server} before"
        );
        // The raw connection's thread is gone; idle handlers may linger.
        let after = wait_for_library_threads_at_most(with_server + HANDLERS, 20);
        assert!(after <= with_server + HANDLERS, "{after} threads after");
        drop(client);
        drop(server);
        let end = wait_for_library_threads_at_most(baseline, 30);
        assert!(
            end <= baseline,
            "{end} threads, {baseline} before: threads left behind"
        );
    });
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

#[test]
fn a_flood_of_tiny_data_frames_and_pings_keeps_memory_bounded() {
    serial(180, || {
        let probe = Arc::new(Probe::default());
        let server = spawn(Server::builder().add_service(ExampleServer::from_arc(probe.clone())));
        let before = rss_kib("self") as usize * 1024;
        let peak = RssPeak::start();

        let mut conn = RawConn::handshake(server.local_addr());
        conn.auto_window_update = false;
        // One client stream whose 20,000 empty messages (5 bytes each) come
        // one byte per DATA frame, with 100,000 PINGs among them.
        const MESSAGES: usize = 20_000;
        let mut batch = raw::header_frames(
            1,
            &raw::encode_owned(&grpc_request_headers(STREAM_UNARY)),
            false,
            raw::DEFAULT_MAX_FRAME,
        );
        for i in 0..MESSAGES * 5 {
            raw::put_frame(&mut batch, raw::kind::DATA, 0, 1, &[0]);
            let n = i as u64;
            raw::put_frame(&mut batch, raw::kind::PING, 0, 0, &n.to_be_bytes());
        }
        raw::put_frame(&mut batch, raw::kind::DATA, raw::flag::END_STREAM, 1, &[]);
        let mut writer = conn.try_clone_stream();
        let write = std::thread::spawn(move || {
            use std::io::Write;
            let _ = writer.write_all(&batch);
        });

        let deadline = Instant::now() + Duration::from_secs(120);
        let mut acks = 0usize;
        let mut answer = None;
        let mut ended = None;
        let mut body = Vec::new();
        while ended.is_none() {
            let Some(event) = conn.next_event_until(deadline) else {
                panic!("no end to the flood within 120 s ({acks} PING ACKs)");
            };
            match event {
                Event::Ping { ack: true, .. } => acks += 1,
                Event::Headers {
                    stream: 1,
                    fields,
                    end_stream,
                } => {
                    if let Some(s) = raw::header(&fields, "grpc-status") {
                        answer = Some(s.to_owned());
                    }
                    if end_stream {
                        ended = Some("trailers".to_owned());
                    }
                }
                Event::Data {
                    stream: 1, data, ..
                } => body.extend_from_slice(&data),
                Event::Reset { stream: 1, code } => ended = Some(format!("reset {code}")),
                Event::GoAway { code, debug, .. } => ended = Some(format!("GOAWAY {code} {debug}")),
                Event::Closed => ended = Some("closed".into()),
                _ => {}
            }
        }
        conn.shutdown();
        write.join().unwrap();
        let peak = peak.stop();
        eprintln!(
            "tiny frames: {ended:?}, grpc-status {answer:?}, {acks} PING ACKs; RSS {} -> peak {} MB",
            before >> 20,
            peak >> 20
        );
        assert!(
            peak.saturating_sub(before) < MAX_GROWTH,
            "RSS grew by {} MB",
            (peak - before) >> 20
        );
        // Either served in full, or the connection was told to calm down;
        // never a wrong answer.
        if ended.as_deref() == Some("trailers") {
            assert_eq!(answer.as_deref(), Some("0"));
            assert!(body.len() > 5, "no reply message");
            assert_eq!(
                ExampleReply::decode(&body[5..]).unwrap().message,
                MESSAGES.to_string()
            );
        }
        assert_serves(&server);
    });
}

#[test]
fn a_peer_that_never_reads_blocks_the_handler_with_memory_bounded() {
    serial(180, || {
        let probe = Arc::new(Probe::default());
        let server = spawn(Server::builder().add_service(ExampleServer::from_arc(probe.clone())));
        let addr = server.local_addr();
        let before = rss_kib("self") as usize * 1024;
        let peak = RssPeak::start();

        // Two peers: one that keeps HTTP/2's default 64 KiB window, one that
        // opens every window wide; neither reads a byte from its socket.
        let mut plateaus = Vec::new();
        for (i, settings) in [
            Vec::new(),
            vec![(raw::setting::INITIAL_WINDOW_SIZE, 0x7fff_ffff)],
        ]
        .into_iter()
        .enumerate()
        {
            let base = probe.sent_bytes.load(Ordering::SeqCst);
            let mut conn = RawConn::connect(addr);
            let mut hello = PREFACE.to_vec();
            hello.extend_from_slice(&raw::settings(&settings));
            if !settings.is_empty() {
                hello.extend_from_slice(&raw::window_update(0, 0x7fff_ffff - 65_535));
            }
            // 32 KiB x 8192 = 256 MiB if nothing held the handler back.
            conn.write(&hello).unwrap();
            conn.send_request(
                1,
                &grpc_request_headers(UNARY_STREAM),
                &raw::grpc_frame(0, &req("flood", 8192).encode_to_vec()),
            );
            let plateau = settle(&probe.sent_bytes) - base;
            eprintln!("peer {i}: the handler sent {plateau} bytes before blocking");
            assert_eq!(
                probe.floods_ended.load(Ordering::SeqCst),
                i,
                "the handler did not block"
            );
            plateaus.push(plateau);
            // Gone: the handler's next send fails and it ends.
            conn.shutdown();
            drop(conn);
            let deadline = Instant::now() + Duration::from_secs(20);
            while probe.floods_ended.load(Ordering::SeqCst) < i + 1 {
                assert!(Instant::now() < deadline, "the handler stayed blocked");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let peak = peak.stop();
        eprintln!(
            "never-reading peers: RSS {} -> peak {} MB",
            before >> 20,
            peak >> 20
        );
        assert!(
            plateaus[0] < 4 * 1024 * 1024,
            "64 KiB window: {} bytes",
            plateaus[0]
        );
        assert!(
            plateaus[1] < 64 * 1024 * 1024,
            "wide window: {} bytes",
            plateaus[1]
        );
        assert!(
            peak.saturating_sub(before) < MAX_GROWTH,
            "RSS grew by {} MB",
            (peak - before) >> 20
        );
        assert_serves(&server);
    });
}
