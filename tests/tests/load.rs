//! Load and soak test: hundreds of connections and thousands of concurrent
//! streams of all four patterns against the example service over loopback,
//! for a bounded time, checking that every message arrives intact and in
//! order, and that threads and memory come back down once the clients leave.
//!
//! `cargo test` runs a short version (50 connections x 20 streams, 2 s). The
//! same test takes its size from the environment for a long run:
//!
//! ```text
//! LOAD_CONNECTIONS=300 LOAD_STREAMS=20 LOAD_SECS=60 \
//!     cargo test --release -p grpc-blocking-tests --test load -- --nocapture
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `LOAD_CONNECTIONS` | 50 | client connections (one `Channel` and one driver thread each) |
//! | `LOAD_STREAMS` | 20 | concurrent streams per connection |
//! | `LOAD_SECS` | 2 | seconds of load in all, split over the rounds |
//! | `LOAD_ROUNDS` | 2 | rounds; every round connects anew and ends with all clients gone |
//! | `LOAD_PATTERNS` | `unary,server,client,bidi` | the patterns, given to the streams in turn |
//! | `LOAD_STREAM_LEN` | 16 | messages per client- or bidi-stream before it is closed and replaced |
//! | `LOAD_DEADLINE_SECS` | 60 | timeout of every call (a lost reply fails the run); 0 for none |
//!
//! Every stream slot of a connection keeps one call of its pattern open all
//! the time: a driver thread per connection first sends on (or starts) every
//! slot, then collects every slot's reply, round after round, so that
//! `connections x streams` calls are in flight at once. Request `value`s
//! carry the connection, slot and sequence number, padding of varying length
//! and a checksum; replies must equal exactly what the example service makes
//! of them, in order (the `seqno` of bidi replies included).
//!
//! The server is the example service started as `support::serve` does, with
//! the handler pool bound raised above the number of concurrent streams (its
//! default, 1024, would turn the excess into RESOURCE_EXHAUSTED: streaming
//! handlers hold a worker each for the whole call).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use grpc_blocking::{CallOptions, RequestSink, Server, ServerHandle, Streaming, UnaryCall};
use grpc_blocking_examples::nameko::{ExampleClient, ExampleReply, ExampleRequest, ExampleServer};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::support::{
    ensure_fds, eventually, rss_kib, target, thread_count, threads_named, with_timeout,
};

/// The four kinds of call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// unary_unary: one request, one reply.
    Unary,
    /// unary_stream: one request, two replies.
    ServerStream,
    /// stream_unary: `stream_len` requests, one joined reply.
    ClientStream,
    /// stream_stream: one reply per request, in order.
    Bidi,
}

impl Pattern {
    fn parse(s: &str) -> Pattern {
        match s.trim() {
            "unary" => Pattern::Unary,
            "server" | "server_stream" => Pattern::ServerStream,
            "client" | "client_stream" => Pattern::ClientStream,
            "bidi" => Pattern::Bidi,
            other => panic!("unknown pattern {other:?}: use unary, server, client, bidi"),
        }
    }
}

/// What a load run does.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Client connections, each with its own driver thread.
    pub connections: usize,
    /// Concurrent streams per connection.
    pub streams_per_connection: usize,
    /// Total time under load (split evenly over the rounds).
    pub duration: Duration,
    /// Rounds: each connects anew, runs, and ends with every client gone.
    pub rounds: usize,
    /// Patterns, given to the stream slots in turn.
    pub patterns: Vec<Pattern>,
    /// Messages of a client- or bidi-stream before it is closed and replaced.
    pub stream_len: usize,
    /// Timeout of every call (`None`: no deadline).
    pub deadline: Option<Duration>,
}

impl LoadConfig {
    /// The defaults (the short run of `cargo test`), overridden by the
    /// `LOAD_*` environment variables.
    fn from_env() -> LoadConfig {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
                Err(_) => default,
            }
        }
        let patterns = std::env::var("LOAD_PATTERNS")
            .unwrap_or_else(|_| "unary,server,client,bidi".into())
            .split(',')
            .map(Pattern::parse)
            .collect();
        LoadConfig {
            connections: var("LOAD_CONNECTIONS", 50),
            streams_per_connection: var("LOAD_STREAMS", 20),
            duration: Duration::from_secs_f64(var("LOAD_SECS", 2.0)),
            rounds: var("LOAD_ROUNDS", 2usize).max(1),
            patterns,
            stream_len: var("LOAD_STREAM_LEN", 16usize).max(1),
            deadline: match var("LOAD_DEADLINE_SECS", 60u64) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
        }
    }
}

/// What one round did.
#[derive(Clone, Debug, Default)]
pub struct RoundReport {
    /// Calls completed and checked.
    pub calls: u64,
    /// Request messages sent.
    pub requests: u64,
    /// Reply messages received and checked.
    pub replies: u64,
    /// Time to set up the connections.
    pub connect_time: Duration,
    /// Time from the start signal to the last driver's end.
    pub elapsed: Duration,
    /// Longest wait for one stream's replies of a cycle, and its pattern.
    pub slowest: (Duration, Option<Pattern>),
    /// Most threads seen in the process during the round.
    pub peak_threads: usize,
    /// Highest VmRSS seen during the round, KiB.
    pub peak_rss_kib: u64,
    /// VmRSS once the clients had left (server still up), KiB.
    pub after_rss_kib: u64,
}

// ---------------------------------------------------------------------------
// Process measurements.

// ---------------------------------------------------------------------------
// Messages.

/// 32-bit FNV-1a.
fn fnv(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The `value` of request `seq` of slot `slot` of connection `conn`:
/// `conn.slot.seq.padding.checksum` (no commas: the client-stream reply
/// joins values with them).
fn value(conn: usize, slot: usize, seq: u64) -> String {
    let mut v = format!("{conn}.{slot}.{seq}.");
    let pad = usize::try_from((seq * 31 + slot as u64 * 7) % 120).unwrap_or(0);
    v.extend(std::iter::repeat_n('p', pad));
    let sum = fnv(v.as_bytes());
    let _ = write!(v, ".{sum:08x}");
    v
}

/// Multiplier of request `seq`: 1 to 3 (0 would count as 1 too).
fn multiplier(seq: u64) -> i32 {
    i32::try_from(seq % 3).unwrap_or(0) + 1
}

fn request(conn: usize, slot: usize, seq: u64) -> ExampleRequest {
    ExampleRequest {
        value: value(conn, slot, seq),
        multiplier: multiplier(seq),
    }
}

/// What the example service replies to `request(conn, slot, seq)`.
fn expected_message(conn: usize, slot: usize, seq: u64) -> String {
    let times = usize::try_from(multiplier(seq)).unwrap_or(1);
    value(conn, slot, seq).repeat(times)
}

/// Whether `part` is one request value, repeated, with a valid checksum.
fn intact(part: &str) -> bool {
    // The checksum covers everything before the fourth '.' and is the 8
    // digits after it.
    let Some((end, _)) = part.match_indices('.').nth(3) else {
        return false;
    };
    let body = &part[..=end];
    let Some(sum) = part.get(end + 1..end + 9) else {
        return false;
    };
    let one = format!("{body}{sum}");
    format!("{:08x}", fnv(&part.as_bytes()[..end])) == sum
        && part.len() % one.len() == 0
        && part == one.repeat(part.len() / one.len())
}

/// Explains a wrong reply: a corrupted one fails its checksums, a misrouted
/// or reordered one is intact but belongs elsewhere.
fn describe(got: &str, want: &str) -> String {
    let cut = |s: &str| s.chars().take(80).collect::<String>();
    let verdict = if got.split(',').all(intact) {
        "checksums ok: misrouted or out of order"
    } else {
        "checksum mismatch: corrupted or cut"
    };
    format!(
        "got {:?} ({} bytes, {verdict}), expected {:?} ({} bytes)",
        cut(got),
        got.len(),
        cut(want),
        want.len()
    )
}

// ---------------------------------------------------------------------------
// A connection's driver.

/// Counts of a driver.
#[derive(Default)]
struct Counts {
    calls: u64,
    requests: u64,
    replies: u64,
    /// Longest wait for one slot's replies of a cycle, and its pattern.
    slowest: (Duration, Option<Pattern>),
}

/// One stream slot: the call of its pattern currently open.
enum Slot {
    Unary(Option<(UnaryCall<ExampleReply>, u64)>),
    ServerStream(Option<(Streaming<ExampleReply>, u64)>),
    ClientStream(Option<ClientStreamCall>),
    Bidi(Option<BidiCall>),
}

impl Slot {
    fn pattern(&self) -> Pattern {
        match self {
            Slot::Unary(_) => Pattern::Unary,
            Slot::ServerStream(_) => Pattern::ServerStream,
            Slot::ClientStream(_) => Pattern::ClientStream,
            Slot::Bidi(_) => Pattern::Bidi,
        }
    }
}

struct ClientStreamCall {
    sink: RequestSink<ExampleRequest>,
    reply: UnaryCall<ExampleReply>,
    /// Sequence numbers sent so far on this call.
    sent: Vec<u64>,
}

struct BidiCall {
    sink: RequestSink<ExampleRequest>,
    replies: Streaming<ExampleReply>,
    /// Sequence numbers sent, not yet answered.
    waiting: Vec<u64>,
    /// Replies received on this call.
    received: i32,
    /// Requests sent on this call.
    sent: usize,
}

/// Every call gets the configured deadline (if any), so that a lost message
/// fails the run instead of hanging it.
fn options(deadline: Option<Duration>) -> CallOptions {
    match deadline {
        Some(d) => CallOptions::new().timeout(d),
        None => CallOptions::new(),
    }
}

struct Driver<'a> {
    client: &'a ExampleClient,
    conn: usize,
    stream_len: usize,
    deadline: Option<Duration>,
    next_seq: u64,
    counts: Counts,
}

impl Driver<'_> {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Starts or feeds the slot's call.
    fn send(&mut self, index: usize, slot: &mut Slot) -> Result<(), String> {
        let conn = self.conn;
        match slot {
            Slot::Unary(pending) => {
                let seq = self.seq();
                let call = self
                    .client
                    .unary_unary_start(request(conn, index, seq), options(self.deadline));
                *pending = Some((call, seq));
                self.counts.requests += 1;
            }
            Slot::ServerStream(pending) => {
                let seq = self.seq();
                let call = self
                    .client
                    .unary_stream_with(request(conn, index, seq), options(self.deadline));
                *pending = Some((call, seq));
                self.counts.requests += 1;
            }
            Slot::ClientStream(open) => {
                let seq = self.seq();
                let call = open.get_or_insert_with(|| {
                    let (sink, reply) = self.client.stream_unary_sender(options(self.deadline));
                    ClientStreamCall {
                        sink,
                        reply,
                        sent: Vec::new(),
                    }
                });
                call.sink
                    .send(request(conn, index, seq))
                    .map_err(|s| format!("client-stream send: {s}"))?;
                call.sent.push(seq);
                self.counts.requests += 1;
            }
            Slot::Bidi(open) => {
                let seq = self.seq();
                let call = open.get_or_insert_with(|| {
                    let (sink, replies) = self.client.stream_stream_sender(options(self.deadline));
                    BidiCall {
                        sink,
                        replies,
                        waiting: Vec::new(),
                        received: 0,
                        sent: 0,
                    }
                });
                call.sink
                    .send(request(conn, index, seq))
                    .map_err(|s| format!("bidi send: {s}"))?;
                call.waiting.push(seq);
                call.sent += 1;
                self.counts.requests += 1;
            }
        }
        Ok(())
    }

    /// Collects the slot's replies for this round; closes a streaming call
    /// that reached its length (or every call, when `last`).
    fn collect(&mut self, index: usize, slot: &mut Slot, last: bool) -> Result<(), String> {
        let conn = self.conn;
        match slot {
            Slot::Unary(pending) => {
                let Some((call, seq)) = pending.take() else {
                    return Ok(());
                };
                let reply = call.wait().map_err(|s| format!("unary: {s}"))?;
                let want = expected_message(conn, index, seq);
                if reply.message != want || reply.seqno != 0 {
                    return Err(format!("unary: {}", describe(&reply.message, &want)));
                }
                self.counts.replies += 1;
                self.counts.calls += 1;
            }
            Slot::ServerStream(pending) => {
                let Some((call, seq)) = pending.take() else {
                    return Ok(());
                };
                let want = expected_message(conn, index, seq);
                let mut n = 0;
                for reply in call {
                    let reply = reply.map_err(|s| format!("server-stream: {s}"))?;
                    n += 1;
                    if reply.message != want || reply.seqno != n {
                        return Err(format!(
                            "server-stream reply {n} (seqno {}): {}",
                            reply.seqno,
                            describe(&reply.message, &want)
                        ));
                    }
                    self.counts.replies += 1;
                }
                if n != 2 {
                    return Err(format!("server-stream: {n} replies instead of 2"));
                }
                self.counts.calls += 1;
            }
            Slot::ClientStream(open) => {
                let full = open
                    .as_ref()
                    .is_some_and(|c| c.sent.len() >= self.stream_len);
                if !(full || last) {
                    return Ok(());
                }
                let Some(call) = open.take() else {
                    return Ok(());
                };
                call.sink.finish();
                let reply = call
                    .reply
                    .wait()
                    .map_err(|s| format!("client-stream: {s}"))?;
                let want = call
                    .sent
                    .iter()
                    .map(|&seq| expected_message(conn, index, seq))
                    .collect::<Vec<_>>()
                    .join(",");
                if reply.message != want {
                    return Err(format!(
                        "client-stream of {}: {}",
                        call.sent.len(),
                        describe(&reply.message, &want)
                    ));
                }
                self.counts.replies += 1;
                self.counts.calls += 1;
            }
            Slot::Bidi(open) => {
                let Some(call) = open.as_mut() else {
                    return Ok(());
                };
                for seq in std::mem::take(&mut call.waiting) {
                    let want = expected_message(conn, index, seq);
                    let reply = match call.replies.next() {
                        Some(Ok(reply)) => reply,
                        Some(Err(s)) => return Err(format!("bidi: {s}")),
                        None => return Err("bidi: the reply stream ended early".into()),
                    };
                    call.received += 1;
                    if reply.message != want || reply.seqno != call.received {
                        return Err(format!(
                            "bidi reply {} (seqno {}): {}",
                            call.received,
                            reply.seqno,
                            describe(&reply.message, &want)
                        ));
                    }
                    self.counts.replies += 1;
                }
                if call.sent >= self.stream_len || last {
                    let Some(mut call) = open.take() else {
                        return Ok(());
                    };
                    call.sink.finish();
                    match call.replies.next() {
                        None => {}
                        Some(Ok(extra)) => {
                            return Err(format!("bidi: unexpected reply {:?}", extra.message))
                        }
                        Some(Err(s)) => return Err(format!("bidi end: {s}")),
                    }
                    self.counts.calls += 1;
                }
            }
        }
        Ok(())
    }
}

/// One connection's work: `streams` slots kept busy until `until`.
fn drive(target: &str, conn: usize, cfg: &LoadConfig, gate: &Gate) -> Result<Counts, String> {
    let client = ExampleClient::connect(target).map_err(|e| format!("connect: {e}"))?;
    let mut slots: Vec<Slot> = (0..cfg.streams_per_connection)
        .map(|i| match cfg.patterns[i % cfg.patterns.len()] {
            Pattern::Unary => Slot::Unary(None),
            Pattern::ServerStream => Slot::ServerStream(None),
            Pattern::ClientStream => Slot::ClientStream(None),
            Pattern::Bidi => Slot::Bidi(None),
        })
        .collect();
    // Every connection is up before any load starts.
    let until = gate.connected_then_wait();
    let mut driver = Driver {
        client: &client,
        conn,
        stream_len: cfg.stream_len,
        deadline: cfg.deadline,
        next_seq: 0,
        counts: Counts::default(),
    };
    loop {
        let last = Instant::now() >= until;
        if !last {
            for (i, slot) in slots.iter_mut().enumerate() {
                driver
                    .send(i, slot)
                    .map_err(|e| format!("connection {conn} slot {i}: {e}"))?;
            }
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            let t = Instant::now();
            driver
                .collect(i, slot, last)
                .map_err(|e| format!("connection {conn} slot {i}: {e}"))?;
            let waited = t.elapsed();
            if waited > driver.counts.slowest.0 {
                driver.counts.slowest = (waited, Some(slot.pattern()));
            }
        }
        if last {
            return Ok(driver.counts);
        }
    }
}

/// The example service with a handler pool large enough for `streams`
/// concurrent calls (see the module doc).
fn start_server(streams: usize) -> ServerHandle {
    Server::builder()
        .add_service(ExampleServer::new(ExampleService))
        .max_concurrent_handlers((streams * 2 + 64).max(1024))
        // One client makes the whole load: it may take every handler.
        .max_handlers_per_peer(usize::MAX)
        .bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .spawn()
        .expect("start the server")
}

/// The start line of a round: drivers report in once connected, and all
/// start together when the end time is set.
#[derive(Default)]
struct Gate {
    connected: AtomicUsize,
    until: OnceLock<Instant>,
}

impl Gate {
    /// Reports this driver connected; waits for the end time.
    fn connected_then_wait(&self) -> Instant {
        self.connected.fetch_add(1, Ordering::AcqRel);
        loop {
            if let Some(until) = self.until.get() {
                return *until;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One round: connect, load for `duration`, check, let the clients go.
fn run_round(server: &ServerHandle, cfg: &LoadConfig, duration: Duration) -> RoundReport {
    let target = Arc::new(target(server));
    let gate = Arc::new(Gate::default());
    let began = Instant::now();
    let drivers: Vec<_> = (0..cfg.connections)
        .map(|conn| {
            let (target, gate, cfg) = (target.clone(), gate.clone(), cfg.clone());
            std::thread::Builder::new()
                .name("load-driver".into())
                .stack_size(256 * 1024)
                .spawn(move || drive(&target, conn, &cfg, &gate))
                .expect("spawn a driver thread")
        })
        .collect();
    // Start when every driver is connected (or one of them gave up).
    while gate.connected.load(Ordering::Acquire) < cfg.connections
        && !drivers.iter().any(|h| h.is_finished())
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let connect_time = began.elapsed();
    let load_start = Instant::now();
    let _ = gate.until.set(load_start + duration);

    // Sample threads and memory while the drivers run.
    let mut report = RoundReport::default();
    while !drivers.iter().all(|h| h.is_finished()) {
        report.peak_threads = report.peak_threads.max(thread_count());
        report.peak_rss_kib = report.peak_rss_kib.max(rss_kib("self"));
        std::thread::sleep(Duration::from_millis(100));
    }
    report.elapsed = load_start.elapsed();
    let mut errors = Vec::new();
    for handle in drivers {
        match handle.join().expect("a driver panicked") {
            Ok(c) => {
                report.calls += c.calls;
                report.requests += c.requests;
                report.replies += c.replies;
                if c.slowest.0 > report.slowest.0 {
                    report.slowest = c.slowest;
                }
            }
            Err(e) => errors.push(e),
        }
    }
    report.connect_time = connect_time;
    assert!(
        errors.is_empty(),
        "{} of {} connections failed; first errors:\n{}",
        errors.len(),
        cfg.connections,
        errors
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    report
}

/// Runs the load described by `cfg` and checks the process comes back down
/// after each round; prints a report.
pub fn run_load(cfg: &LoadConfig) -> Vec<RoundReport> {
    // Both sides: socket, poller and wake-up per connection, plus slack.
    ensure_fds(cfg.connections * 8 + 256);
    let baseline_threads = thread_count();
    let baseline_rss = rss_kib("self");
    let streams = cfg.connections * cfg.streams_per_connection;
    let server = start_server(streams);
    let per_round = cfg.duration / u32::try_from(cfg.rounds).unwrap_or(1);
    let mut reports = Vec::new();
    for round in 0..cfg.rounds {
        let mut report = run_round(&server, cfg, per_round);
        // The clients are gone: their connection threads end, and the
        // server's with them (the handler pool keeps idle workers a while).
        let (client_conns, server_conns) = eventually(30, || {
            let c = threads_named("self", "grpc-client-conn");
            let s = threads_named("self", "grpc-conn");
            (c == 0 && s == 0, (c, s))
        });
        assert_eq!(
            (client_conns, server_conns),
            (0, 0),
            "connection threads (client, server) left after round {round}"
        );
        report.after_rss_kib = rss_kib("self");
        println!(
            "round {round}: {} connections x {} streams ({} concurrent), connected in {:.1?}, \
             loaded for {:.1?}: \
             {} calls ({:.0}/s), {} requests, {} replies ({:.0} messages/s), \
             slowest reply wait {:.1?} ({:?}); \
             peak {} threads (baseline {baseline_threads}), \
             VmRSS baseline {} MiB, peak {} MiB, after {} MiB, {} handler threads idle",
            cfg.connections,
            cfg.streams_per_connection,
            streams,
            report.connect_time,
            report.elapsed,
            report.calls,
            report.calls as f64 / report.elapsed.as_secs_f64(),
            report.requests,
            report.replies,
            (report.requests + report.replies) as f64 / report.elapsed.as_secs_f64(),
            report.slowest.0,
            report.slowest.1,
            report.peak_threads,
            baseline_rss / 1024,
            report.peak_rss_kib / 1024,
            report.after_rss_kib / 1024,
            threads_named("self", "grpc-handler"),
        );
        assert!(report.calls > 0, "round {round} completed no call");
        reports.push(report);
    }

    // Memory does not grow from round to round: the first round sets up
    // whatever stays (allocator arenas, pooled handler threads); later
    // rounds must not add to it beyond generous slack.
    let first = reports[0].after_rss_kib;
    for (i, r) in reports.iter().enumerate().skip(1) {
        let slack = 64 * 1024 + first / 4;
        assert!(
            r.after_rss_kib <= first + slack,
            "VmRSS after round {i} is {} MiB, after round 0 it was {} MiB: a leak?",
            r.after_rss_kib / 1024,
            first / 1024
        );
    }

    // Server gone too: every thread ends, and memory comes back near the
    // baseline (what the allocator keeps is allowed for generously).
    drop(server);
    let threads = eventually(30, || {
        let n = thread_count();
        (n <= baseline_threads, n)
    });
    assert!(
        threads <= baseline_threads,
        "{threads} threads after the load, {baseline_threads} before"
    );
    let peak = reports.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
    // glibc keeps some freed memory in its arenas (how much depends on how
    // the threads interleaved); a leak keeps all of it and more.
    let allowed = baseline_rss + 64 * 1024 + peak.saturating_sub(baseline_rss) * 3 / 4;
    let rss = eventually(10, || {
        let r = rss_kib("self");
        (r <= allowed, r)
    });
    println!(
        "after the server: {threads} threads (baseline {baseline_threads}), \
         VmRSS {} MiB (baseline {} MiB, peak {} MiB)",
        rss / 1024,
        baseline_rss / 1024,
        peak / 1024
    );
    assert!(
        rss <= allowed,
        "VmRSS {} MiB after the load: baseline {} MiB, peak {} MiB",
        rss / 1024,
        baseline_rss / 1024,
        peak / 1024
    );
    reports
}

#[test]
fn load() {
    let cfg = LoadConfig::from_env();
    // Connecting, winding down and checking take time besides the load.
    let bound = 120 + cfg.duration.as_secs() * 2 + (cfg.connections as u64) / 5;
    with_timeout(bound, move || {
        run_load(&cfg);
    });
}

#[test]
fn values_carry_their_checksum() {
    let v = value(3, 4, 5);
    assert!(intact(&v), "{v}");
    assert!(intact(&expected_message(3, 4, 5)));
    assert!(intact(&v.repeat(3)));
    assert!(!intact(&v[1..]));
    assert!(!intact(&format!("{v}x")));
    let mut corrupted = v.into_bytes();
    corrupted[0] ^= 1;
    assert!(!intact(&String::from_utf8(corrupted).unwrap()));
    assert!(describe(&value(1, 1, 1), &value(1, 1, 2)).contains("out of order"));
    assert!(describe("1.1.1.p.00000000", &value(1, 1, 1)).contains("corrupted"));
}
