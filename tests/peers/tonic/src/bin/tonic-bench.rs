//! `tonic-bench`: a closed-loop load generator for the example service on
//! tonic's generated client, the twin of grpc-blocking's `bench`
//! (`examples/src/bin/bench.rs`): the same flags, the same calls, the same
//! checks of every reply and the same report, so that the benchmark can set
//! the two clients against the same server.
//!
//! It opens `--connections` tonic `Channel`s (one HTTP/2 connection each) and
//! runs `--concurrency` callers **in total** as tokio tasks, spread
//! round-robin over the connections, on tokio's multi-thread runtime (one
//! worker per core it may run on: pinned to one core with `taskset`, one
//! worker). Each caller makes one call at a time until the time is up, after
//! a 0.5 s warm-up that is not recorded.
//!
//! ```text
//! tonic-bench --server_port 50051 --connections 1 --concurrency 16 --rpc unary --duration 5
//! ```
//!
//! Prints calls/s, latency p50/p90/p99 and errors, then one line
//! `RESULT rpc=.. conns=.. conc=.. payload=.. calls_per_sec=.. p50_us=.. p90_us=.. p99_us=.. errors=..`.
//! Exits 1 if any call failed, 2 on bad flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Messages and client stubs generated from `examples/proto/example.proto`.
#[allow(non_camel_case_types)]
pub mod nameko {
    tonic::include_proto!("nameko");
}

use nameko::example_client::ExampleClient;
use nameko::{ExampleReply, ExampleRequest};

/// How long callers run before latencies start being recorded (as `bench`).
const WARM_UP: Duration = Duration::from_millis(500);

/// Requests per call for the client-streaming and bidi rpcs (as `bench`).
const STREAM_LEN: usize = 10;

/// Replies per call of the server-streaming rpc (`unary_stream`).
const SERVER_STREAM_LEN: i32 = 2;

const USAGE: &str = "usage: tonic-bench (--server_port N [--server_host H] | --target URI) \
    [--ca_file PEM] [--connections N] [--concurrency N] [--duration SECONDS] \
    [--rpc unary|server_stream|client_stream|bidi] [--payload BYTES]";

/// The kind of call each caller makes in a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

impl Rpc {
    fn parse(s: &str) -> Result<Self, String> {
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

    fn name(self) -> &'static str {
        match self {
            Rpc::Unary => "unary",
            Rpc::ServerStream => "server_stream",
            Rpc::ClientStream => "client_stream",
            Rpc::Bidi => "bidi",
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone)]
struct Config {
    target: String,
    ca_file: Option<PathBuf>,
    connections: usize,
    concurrency: usize,
    duration: f64,
    rpc: Rpc,
    payload: usize,
}

/// Parses `--flag value` and `--flag=value`; `None` means `--help`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Config>, String> {
    let mut host = String::from("127.0.0.1");
    let mut port: Option<u16> = None;
    let mut target = None;
    let mut ca_file = None;
    let mut connections = 1usize;
    let mut concurrency = 1usize;
    let mut duration = 5.0f64;
    let mut rpc = Rpc::Unary;
    let mut payload = 0usize;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.into())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            text.parse()
                .map_err(|e| format!("bad {flag} {text:?}: {e}"))
        }
        match flag.as_str() {
            "--server_host" => host = value,
            "--server_port" => port = Some(number(&flag, &value)?),
            "--target" => target = Some(value),
            "--ca_file" => ca_file = Some(PathBuf::from(value)),
            "--connections" => connections = number(&flag, &value)?,
            "--concurrency" => concurrency = number(&flag, &value)?,
            "--duration" => duration = number(&flag, &value)?,
            "--rpc" => rpc = Rpc::parse(&value)?,
            "--payload" => payload = number(&flag, &value)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let scheme = if ca_file.is_some() { "https" } else { "http" };
    let target = match (target, port) {
        (Some(_), Some(_)) => return Err("--target and --server_port exclude each other".into()),
        (Some(target), None) => target,
        (None, Some(port)) => format!("{scheme}://{host}:{port}"),
        (None, None) => return Err("--server_port or --target is required".into()),
    };
    if connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if concurrency < connections {
        return Err(format!(
            "--concurrency ({concurrency}) is the total number of callers and must be at least \
             --connections ({connections})"
        ));
    }
    if !(duration.is_finite() && duration > 0.0) {
        return Err(format!(
            "--duration must be a positive number of seconds, not {duration}"
        ));
    }
    Ok(Some(Config {
        target,
        ca_file,
        connections,
        concurrency,
        duration,
        rpc,
        payload,
    }))
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
async fn one_call(
    client: &mut ExampleClient<Channel>,
    rpc: Rpc,
    request: &ExampleRequest,
) -> Result<(), String> {
    let len = request.value.len();
    let status = |s: tonic::Status| s.to_string();
    match rpc {
        Rpc::Unary => {
            let reply = client
                .unary_unary(request.clone())
                .await
                .map_err(status)?
                .into_inner();
            check_reply(&reply, len, 0)
        }
        Rpc::ServerStream => {
            let mut replies = client
                .unary_stream(request.clone())
                .await
                .map_err(status)?
                .into_inner();
            let mut count = 0;
            while let Some(reply) = replies.message().await.map_err(status)? {
                count += 1;
                check_reply(&reply, len, count)?;
            }
            if count != SERVER_STREAM_LEN {
                return Err(format!("{count} replies, wanted {SERVER_STREAM_LEN}"));
            }
            Ok(())
        }
        Rpc::ClientStream => {
            let requests = tokio_stream::iter(vec![request.clone(); STREAM_LEN]);
            let reply = client
                .stream_unary(requests)
                .await
                .map_err(status)?
                .into_inner();
            // The messages joined with ",".
            check_reply(&reply, STREAM_LEN * len + STREAM_LEN - 1, 0)
        }
        Rpc::Bidi => {
            // Lock step, as `bench`: each reply is read before the next
            // request is sent. The first request is queued before the call
            // starts, so a server that answers the headers only with the
            // first reply does not deadlock us.
            let (tx, rx) = mpsc::channel(1);
            let send = |tx: &mpsc::Sender<ExampleRequest>| {
                tx.try_send(request.clone())
                    .map_err(|e| format!("cannot queue a request: {e}"))
            };
            send(&tx)?;
            let mut replies = client
                .stream_stream(ReceiverStream::new(rx))
                .await
                .map_err(status)?
                .into_inner();
            for seqno in 1..=STREAM_LEN as i32 {
                if seqno > 1 {
                    tx.send(request.clone())
                        .await
                        .map_err(|_| "the request stream closed early".to_owned())?;
                }
                let reply = replies
                    .message()
                    .await
                    .map_err(status)?
                    .ok_or_else(|| format!("stream ended after {} replies", seqno - 1))?;
                check_reply(&reply, len, seqno)?;
            }
            drop(tx);
            if let Some(extra) = replies.message().await.map_err(status)? {
                return Err(format!("unexpected extra reply: seqno {}", extra.seqno));
            }
            Ok(())
        }
    }
}

/// What one caller measured.
struct CallerResult {
    latencies_us: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// A histogram of latencies in microseconds: 1 µs to an hour, 3 significant
/// digits (as `bench`).
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One caller: calls in a loop until `end`, recording the latency of every
/// call that starts at or after `record_from` and ends by `end`.
async fn caller(
    mut client: ExampleClient<Channel>,
    rpc: Rpc,
    payload: usize,
    record_from: Instant,
    end: Instant,
) -> CallerResult {
    let request = ExampleRequest {
        value: "x".repeat(payload),
        multiplier: 0,
    };
    let mut result = CallerResult {
        latencies_us: latency_histogram(),
        errors: 0,
        first_error: None,
    };
    let mut now = Instant::now();
    while now < end {
        let started = now;
        let outcome = one_call(&mut client, rpc, &request).await;
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

/// One tonic channel (one HTTP/2 connection), connected now.
async fn connect(config: &Config) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(config.target.clone())
        .map_err(|e| format!("bad target {:?}: {e}", config.target))?;
    if let Some(ca_file) = &config.ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("bad TLS settings: {e}"))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e:?}", config.target))
}

/// Connects, runs the callers and prints the report. Returns whether every
/// call succeeded.
async fn run(config: Config) -> Result<bool, String> {
    let mut channels = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        channels.push(connect(&config).await?);
    }
    println!(
        "tonic-bench: {} rpc={} payload={} B; {} connection(s), {} caller(s) in total; \
         {:.1} s warm-up, {:.2} s measured; {} runtime worker(s)",
        config.target,
        config.rpc.name(),
        config.payload,
        config.connections,
        config.concurrency,
        WARM_UP.as_secs_f64(),
        config.duration,
        tokio::runtime::Handle::current().metrics().num_workers(),
    );
    let window = Duration::from_secs_f64(config.duration);
    let start = Instant::now();
    let record_from = start + WARM_UP;
    let end = record_from + window;
    let tasks: Vec<_> = (0..config.concurrency)
        .map(|i| {
            let client = ExampleClient::new(channels[i % channels.len()].clone());
            tokio::spawn(caller(client, config.rpc, config.payload, record_from, end))
        })
        .collect();
    let mut latencies = latency_histogram();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let result = task
            .await
            .map_err(|e| format!("a caller task failed: {e}"))?;
        latencies
            .add(&result.latencies_us)
            .expect("histograms of the same bounds add up");
        errors += result.errors;
        if first_error.is_none() {
            first_error = result.first_error;
        }
    }
    let seconds = window.as_secs_f64();
    let calls = latencies.len();
    let calls_per_sec = calls as f64 / seconds;
    let (p50, p90, p99) = if latencies.is_empty() {
        (0, 0, 0)
    } else {
        (
            latencies.value_at_quantile(0.50),
            latencies.value_at_quantile(0.90),
            latencies.value_at_quantile(0.99),
        )
    };
    println!("calls: {calls} in {seconds:.2} s = {calls_per_sec:.0} calls/s");
    println!(
        "latency: p50 {p50} us, p90 {p90} us, p99 {p99} us, max {} us",
        latencies.max()
    );
    println!("errors: {errors}");
    if let Some(message) = &first_error {
        println!("first error: {message}");
    }
    println!(
        "RESULT rpc={} conns={} conc={} payload={} calls_per_sec={calls_per_sec:.0} \
         p50_us={p50} p90_us={p90} p99_us={p99} errors={errors}",
        config.rpc.name(),
        config.connections,
        config.concurrency,
        config.payload
    );
    Ok(errors == 0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("tonic-bench: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("tonic-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
