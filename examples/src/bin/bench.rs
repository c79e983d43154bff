//! `bench`: a closed-loop load generator for the example service.
//!
//! It opens `--connections` client connections (one [`Channel`] each: a channel
//! is one HTTP/2 connection) and runs `--concurrency` caller threads **in
//! total**, spread round-robin over the connections (so `--connections 4
//! --concurrency 16` puts 4 callers on each connection; the concurrency must be
//! at least the number of connections). Each caller makes one call at a time
//! against `nameko.example` until the time is up, after a 0.5 s warm-up that is
//! not recorded. The same client is used against any server (ours, tonic, ...),
//! which keeps the comparison neutral.
//!
//! ```text
//! bench --server_port 50051 --connections 1 --concurrency 16 --rpc unary --duration 5
//! ```
//!
//! It prints the throughput (calls per second), the latency percentiles and the
//! number of errors, then one machine-readable line:
//!
//! ```text
//! RESULT rpc=unary conns=1 conc=16 payload=0 calls_per_sec=12345 p50_us=.. p90_us=.. p99_us=.. errors=0
//! ```
//!
//! Any error (a failed call or a wrong reply) makes it exit with status 1 after
//! printing; bad flags exit with status 2.

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use grpc_blocking::client::ServiceConfig;
use grpc_blocking::CallOptions;
use grpc_blocking_examples::cli::ClientTarget;
use grpc_blocking_examples::nameko::{ExampleClient, ExampleReply, ExampleRequest};
use hdrhistogram::Histogram;

/// How long callers run before latencies start being recorded.
const WARM_UP: Duration = Duration::from_millis(500);

/// Requests per call for the client-streaming and bidi rpcs.
const STREAM_LEN: usize = 10;

/// Replies per call of the server-streaming rpc (`unary_stream`).
const SERVER_STREAM_LEN: usize = 2;

/// The kind of call each caller makes in a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    /// `unary_unary`: one request, one reply.
    Unary,
    /// `unary_stream`: one request, two replies.
    ServerStream,
    /// `stream_unary`: ten requests, one reply.
    ClientStream,
    /// `stream_stream`: ten requests, one reply each, in lock step.
    Bidi,
}

impl FromStr for Rpc {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unary" => Ok(Rpc::Unary),
            "server_stream" => Ok(Rpc::ServerStream),
            "client_stream" => Ok(Rpc::ClientStream),
            "bidi" => Ok(Rpc::Bidi),
            other => Err(format!(
                "unknown --rpc {other:?} (unary, server_stream, client_stream or bidi)"
            )),
        }
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rpc::Unary => "unary",
            Rpc::ServerStream => "server_stream",
            Rpc::ClientStream => "client_stream",
            Rpc::Bidi => "bidi",
        })
    }
}

/// A closed-loop load generator for nameko-grpc's example service.
///
/// Prints calls/s, latency p50/p90/p99 and errors, then one line
/// `RESULT rpc=.. conns=.. conc=.. payload=.. calls_per_sec=.. p50_us=.. p90_us=.. p99_us=.. errors=..`.
/// Exits 1 if any call failed, 2 on bad flags.
#[derive(Parser, Clone, Debug)]
#[command(name = "bench")]
struct Config {
    #[command(flatten)]
    server: ClientTarget,
    /// Client connections, one HTTP/2 connection each.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Concurrent callers IN TOTAL, spread round-robin over the connections;
    /// at least the number of connections.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds to measure, after a 0.5 s warm-up.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// unary (1 request, 1 reply) | server_stream (1 request, 2 replies) |
    /// client_stream (10 requests, 1 reply) | bidi (10 requests, each reply
    /// read before the next request is sent).
    #[arg(long, default_value = "unary")]
    rpc: Rpc,
    /// Size of each request's `value` string, in bytes.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// A service config (JSON): load balancing, per-method timeouts and
    /// retry policies, retry throttling.
    #[arg(long = "service_config", value_name = "JSON", value_parser = parse_service_config)]
    service_config: Option<ServiceConfig>,
}

fn parse_service_config(json: &str) -> Result<ServiceConfig, String> {
    ServiceConfig::from_json(json).map_err(|e| format!("invalid service config: {e}"))
}

impl Config {
    /// Checks what clap cannot: the flags' relations.
    fn check(&self) -> Result<(), String> {
        self.server.target()?;
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.concurrency < self.connections {
            return Err(format!(
                "--concurrency ({}) is the total number of callers and must be at least \
                 --connections ({})",
                self.concurrency, self.connections
            ));
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return Err(format!(
                "--duration must be a positive number of seconds, not {}",
                self.duration
            ));
        }
        Ok(())
    }

    /// The measured window.
    fn window(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }
}

/// Parses and checks the flags.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Config, clap::Error> {
    let config = Config::try_parse_from(std::iter::once("bench".to_owned()).chain(args))?;
    config
        .check()
        .map_err(|e| Config::command().error(clap::error::ErrorKind::ValueValidation, e))?;
    Ok(config)
}

/// What one caller thread measured.
#[derive(Debug)]
struct WorkerResult {
    /// Latencies of the calls completed inside the measured window, in µs.
    latencies_us: Histogram<u64>,
    /// Failed calls or wrong replies, warm-up included.
    errors: u64,
    /// The first error seen, for the report.
    first_error: Option<String>,
}

/// Checks that a reply carries the expected message (and sequence number).
fn check_reply(reply: &ExampleReply, want_len: usize, want_seqno: i32) -> Result<(), String> {
    if reply.message.len() != want_len || reply.seqno != want_seqno {
        return Err(format!(
            "wrong reply: message of {} bytes and seqno {} (wanted {} bytes and seqno {})",
            reply.message.len(),
            reply.seqno,
            want_len,
            want_seqno
        ));
    }
    Ok(())
}

/// Makes one call of the configured kind and checks the replies.
fn one_call(client: &ExampleClient, rpc: Rpc, request: &ExampleRequest) -> Result<(), String> {
    let len = request.value.len();
    match rpc {
        Rpc::Unary => {
            let reply = client
                .unary_unary(request.clone())
                .map_err(|s| s.to_string())?;
            check_reply(&reply, len, 0)
        }
        Rpc::ServerStream => {
            let mut count = 0;
            for reply in client.unary_stream(request.clone()) {
                let reply = reply.map_err(|s| s.to_string())?;
                count += 1;
                check_reply(&reply, len, count)?;
            }
            if count as usize != SERVER_STREAM_LEN {
                return Err(format!("{count} replies, wanted {SERVER_STREAM_LEN}"));
            }
            Ok(())
        }
        Rpc::ClientStream => {
            let requests = std::iter::repeat_n(request.clone(), STREAM_LEN);
            let reply = client.stream_unary(requests).map_err(|s| s.to_string())?;
            // The messages joined with ",".
            check_reply(&reply, STREAM_LEN * len + STREAM_LEN - 1, 0)
        }
        Rpc::Bidi => {
            let (mut sink, mut replies) = client.stream_stream_sender(CallOptions::default());
            for seqno in 1..=STREAM_LEN as i32 {
                sink.send(request.clone()).map_err(|s| s.to_string())?;
                let reply = replies
                    .next()
                    .ok_or_else(|| format!("stream ended after {} replies", seqno - 1))?
                    .map_err(|s| s.to_string())?;
                check_reply(&reply, len, seqno)?;
            }
            sink.finish();
            if let Some(extra) = replies.next() {
                let extra = extra.map_err(|s| s.to_string())?;
                return Err(format!("unexpected extra reply: seqno {}", extra.seqno));
            }
            Ok(())
        }
    }
}

/// One caller: calls in a loop until `end`, recording the latency of every call
/// that completes at or after `record_from`.
fn worker(
    client: &ExampleClient,
    config: &Config,
    record_from: Instant,
    end: Instant,
) -> WorkerResult {
    let request = ExampleRequest {
        value: "x".repeat(config.payload),
        multiplier: 0,
    };
    let mut result = WorkerResult {
        latencies_us: latency_histogram(),
        errors: 0,
        first_error: None,
    };
    let mut now = Instant::now();
    while now < end {
        let started = now;
        let outcome = one_call(client, config.rpc, &request);
        now = Instant::now();
        match outcome {
            Ok(()) => {
                if started >= record_from && now <= end {
                    let micros = now.duration_since(started).as_micros();
                    result
                        .latencies_us
                        .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
                }
            }
            Err(message) => {
                result.errors += 1;
                result.first_error.get_or_insert(message);
            }
        }
    }
    result
}

/// A histogram of latencies in microseconds: 1 µs to an hour, 3
/// significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The p50, p90 and p99 of `latencies` (0 when empty).
fn percentiles(latencies: &Histogram<u64>) -> (u64, u64, u64) {
    if latencies.is_empty() {
        return (0, 0, 0);
    }
    (
        latencies.value_at_quantile(0.50),
        latencies.value_at_quantile(0.90),
        latencies.value_at_quantile(0.99),
    )
}

/// Connects, runs the callers and prints the report. Returns whether every call
/// succeeded.
fn run(config: &Config) -> Result<bool, String> {
    let uri = config.server.target()?;
    let clients = (0..config.connections)
        .map(|i| {
            let mut builder = config.server.channel()?;
            if let Some(service_config) = &config.service_config {
                builder = builder.service_config(service_config.clone());
            }
            builder
                .connect()
                .map(ExampleClient::new)
                .map_err(|e| format!("connection {} to {uri}: {e}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let per_conn_min = config.concurrency / config.connections;
    let per_conn_note = if config.concurrency % config.connections == 0 {
        format!("{per_conn_min} per connection")
    } else {
        format!("{per_conn_min} or {} per connection", per_conn_min + 1)
    };
    println!(
        "bench: {uri} rpc={} payload={} B; {} connection(s), {} caller(s) in total ({per_conn_note}); \
         {:.1} s warm-up, {:.2} s measured",
        config.rpc,
        config.payload,
        config.connections,
        config.concurrency,
        WARM_UP.as_secs_f64(),
        config.duration,
    );

    let start = Instant::now();
    let record_from = start + WARM_UP;
    let end = record_from + config.window();
    let results: Vec<WorkerResult> = thread::scope(|scope| {
        let handles: Vec<_> = (0..config.concurrency)
            .map(|i| {
                let client = &clients[i % clients.len()];
                thread::Builder::new()
                    .name(format!("bench-caller-{i}"))
                    .spawn_scoped(scope, move || worker(client, config, record_from, end))
                    .expect("spawn a caller thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a caller thread panicked"))
            .collect()
    });

    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let first_error = results.iter().find_map(|r| r.first_error.clone());
    let mut latencies = latency_histogram();
    for r in &results {
        latencies
            .add(&r.latencies_us)
            .expect("histograms of the same bounds add up");
    }

    let seconds = config.window().as_secs_f64();
    let calls = latencies.len();
    let calls_per_sec = calls as f64 / seconds;
    let (p50, p90, p99) = percentiles(&latencies);
    let max = latencies.max();
    println!("calls: {calls} in {seconds:.2} s = {calls_per_sec:.0} calls/s");
    println!("latency: p50 {p50} us, p90 {p90} us, p99 {p99} us, max {max} us");
    println!("errors: {errors}");
    if let Some(message) = &first_error {
        println!("first error: {message}");
    }
    // Where the calls went (warm-up included), by backend address.
    let mut per_backend: std::collections::BTreeMap<String, u64> = Default::default();
    for client in &clients {
        for sub in client.channel().subchannels() {
            *per_backend.entry(sub.address.to_string()).or_default() += sub.calls_started;
        }
    }
    for (address, calls) in &per_backend {
        println!("backend {address}: {calls} calls");
    }
    println!(
        "RESULT rpc={} conns={} conc={} payload={} calls_per_sec={calls_per_sec:.0} \
         p50_us={p50} p90_us={p90} p99_us={p99} errors={errors}",
        config.rpc, config.connections, config.concurrency, config.payload
    );
    Ok(errors == 0)
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(config) => config,
        // Usage errors exit 2, --help 0, as clap does.
        Err(e) => e.exit(),
    };
    match run(&config) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn config(args: &[&str]) -> Config {
        parse(args).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults() {
        let c = config(&["--server_port", "50051"]);
        assert_eq!(c.server.target().unwrap(), "http://127.0.0.1:50051");
        assert_eq!((c.connections, c.concurrency), (1, 1));
        assert_eq!(c.window(), Duration::from_secs(5));
        assert_eq!(c.rpc, Rpc::Unary);
        assert_eq!(c.payload, 0);
    }

    #[test]
    fn every_flag_in_both_spellings() {
        let c = config(&[
            "--server_host=localhost",
            "--server_port",
            "1",
            "--connections=4",
            "--concurrency",
            "16",
            "--duration=0.5",
            "--rpc",
            "bidi",
            "--payload=100",
        ]);
        assert_eq!(c.server.target().unwrap(), "http://localhost:1");
        assert_eq!((c.connections, c.concurrency), (4, 16));
        assert_eq!(c.window(), Duration::from_millis(500));
        assert_eq!((c.rpc, c.payload), (Rpc::Bidi, 100));
    }

    #[test]
    fn targets_and_tls_flags() {
        let c = config(&["--target", "unix:/run/x.sock"]);
        assert_eq!(c.server.target().unwrap(), "unix:/run/x.sock");
        let c = config(&["--server_port", "7", "--ca_file", "/ca.pem"]);
        assert_eq!(c.server.target().unwrap(), "https://127.0.0.1:7");
        assert!(parse(&["--target", "unix:/x", "--server_port", "1"]).is_err());
        assert!(parse(&["--server_port", "1", "--cert_file", "/c.pem"]).is_err());
    }

    #[test]
    fn rejects_bad_flags() {
        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        assert!(parse(&[]).is_err(), "the port is required");
        assert!(parse(&["--server_port"]).is_err());
        assert!(parse(&["--server_port", "x"]).is_err());
        assert!(parse(&["--server_port", "1", "--rpc", "nope"]).is_err());
        assert!(parse(&["--server_port", "1", "--bogus", "1"]).is_err());
        assert!(parse(&["--server_port", "1", "--duration", "0"]).is_err());
        assert!(parse(&["--server_port", "1", "--connections", "0"]).is_err());
        let fewer_callers = [
            "--server_port",
            "1",
            "--connections",
            "4",
            "--concurrency",
            "2",
        ];
        let err = parse(&fewer_callers).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("--concurrency (2)"), "{err}");
    }

    #[test]
    fn rpc_names_round_trip() {
        for rpc in [Rpc::Unary, Rpc::ServerStream, Rpc::ClientStream, Rpc::Bidi] {
            assert_eq!(rpc.to_string().parse::<Rpc>(), Ok(rpc));
        }
    }

    #[test]
    fn percentiles_of_recorded_latencies() {
        let mut h = latency_histogram();
        for micros in 1..=1000 {
            h.record(micros).unwrap();
        }
        let (p50, p90, p99) = percentiles(&h);
        assert_eq!((p50, p90, p99), (500, 900, 990));
        assert_eq!(percentiles(&latency_histogram()), (0, 0, 0));
    }

    #[test]
    fn reply_checks() {
        let reply = ExampleReply {
            message: "ab".into(),
            seqno: 2,
        };
        assert!(check_reply(&reply, 2, 2).is_ok());
        assert!(check_reply(&reply, 3, 2).is_err());
        assert!(check_reply(&reply, 2, 1).is_err());
    }
}
