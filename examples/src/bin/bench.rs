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

use grpc_blocking::{CallOptions, Channel};
use grpc_blocking_examples::nameko::{ExampleClient, ExampleReply, ExampleRequest};

/// How long callers run before latencies start being recorded.
const WARM_UP: Duration = Duration::from_millis(500);

/// Requests per call for the client-streaming and bidi rpcs.
const STREAM_LEN: usize = 10;

/// Replies per call of the server-streaming rpc (`unary_stream`).
const SERVER_STREAM_LEN: usize = 2;

const USAGE: &str = "\
usage: bench [flags]

  --server_host H     server address (default 127.0.0.1)
  --server_port N     server port (required)
  --connections C     client connections, one HTTP/2 connection each (default 1)
  --concurrency M     concurrent callers IN TOTAL, spread round-robin over the
                      connections; must be >= connections (default 1)
  --duration S        seconds to measure, after a 0.5 s warm-up (default 5)
  --rpc KIND          unary | server_stream | client_stream | bidi (default unary)
                        unary:         unary_unary, 1 request, 1 reply
                        server_stream: unary_stream, 1 request, 2 replies
                        client_stream: stream_unary, 10 requests, 1 reply
                        bidi:          stream_stream, 10 requests, each reply
                                       read before the next request is sent
  --payload BYTES     size of each request's `value` string (default 0)
  --help              print this and exit

Prints calls/s, latency p50/p90/p99 and errors, then one line
`RESULT rpc=.. conns=.. conc=.. payload=.. calls_per_sec=.. p50_us=.. p90_us=.. p99_us=.. errors=..`.
Exits 1 if any call failed, 2 on bad flags.";

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

/// The parsed command line.
#[derive(Clone, Debug)]
struct Config {
    /// Server host name or address.
    host: String,
    /// Server port.
    port: u16,
    /// Number of client connections.
    connections: usize,
    /// Number of caller threads in total.
    concurrency: usize,
    /// Length of the measured window.
    duration: Duration,
    /// The call each caller makes.
    rpc: Rpc,
    /// Bytes in each request's `value`.
    payload: usize,
}

/// What the command line asked for.
enum Command {
    /// Run the benchmark.
    Run(Config),
    /// Print the usage and exit successfully.
    Help,
}

/// Parses a flag's value, naming the flag in the error.
fn parse_value<T: FromStr>(flag: &str, text: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    text.parse()
        .map_err(|e| format!("bad value {text:?} for {flag}: {e}"))
}

/// Parses the flags (`--flag value` or `--flag=value`).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut host = String::from("127.0.0.1");
    let mut port = None;
    let mut connections = 1usize;
    let mut concurrency = 1usize;
    let mut duration = 5.0f64;
    let mut rpc = Rpc::Unary;
    let mut payload = 0usize;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        match flag.as_str() {
            "--server_host" => host = value,
            "--server_port" => port = Some(parse_value::<u16>(&flag, &value)?),
            "--connections" => connections = parse_value(&flag, &value)?,
            "--concurrency" => concurrency = parse_value(&flag, &value)?,
            "--duration" => duration = parse_value(&flag, &value)?,
            "--rpc" => rpc = value.parse()?,
            "--payload" => payload = parse_value(&flag, &value)?,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }

    let port = port.ok_or("--server_port is required")?;
    if connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if concurrency < connections {
        return Err(format!(
            "--concurrency ({concurrency}) is the total number of callers and must be \
             at least --connections ({connections})"
        ));
    }
    if !(duration.is_finite() && duration > 0.0) {
        return Err(format!(
            "--duration must be a positive number of seconds, not {duration}"
        ));
    }
    Ok(Command::Run(Config {
        host,
        port,
        connections,
        concurrency,
        duration: Duration::from_secs_f64(duration),
        rpc,
        payload,
    }))
}

/// What one caller thread measured.
#[derive(Debug, Default)]
struct WorkerResult {
    /// Latency of each call completed inside the measured window, in µs.
    latencies_us: Vec<u32>,
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
    let mut result = WorkerResult::default();
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
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
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

/// The `p`-th percentile (nearest rank) of sorted values; 0 when empty.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Connects, runs the callers and prints the report. Returns whether every call
/// succeeded.
fn run(config: &Config) -> Result<bool, String> {
    let uri = format!("http://{}:{}", config.host, config.port);
    let clients = (0..config.connections)
        .map(|i| {
            Channel::connect(&uri)
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
        config.duration.as_secs_f64(),
    );

    let start = Instant::now();
    let record_from = start + WARM_UP;
    let end = record_from + config.duration;
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
    let mut latencies: Vec<u32> = results.into_iter().flat_map(|r| r.latencies_us).collect();
    latencies.sort_unstable();

    let seconds = config.duration.as_secs_f64();
    let calls_per_sec = latencies.len() as f64 / seconds;
    let (p50, p90, p99) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
    );
    let max = latencies.last().copied().unwrap_or(0);
    println!(
        "calls: {} in {seconds:.2} s = {calls_per_sec:.0} calls/s",
        latencies.len()
    );
    println!("latency: p50 {p50} us, p90 {p90} us, p99 {p99} us, max {max} us");
    println!("errors: {errors}");
    if let Some(message) = &first_error {
        println!("first error: {message}");
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
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("bench: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
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

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn config(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Command::Run(config)) => config,
            Ok(Command::Help) => panic!("parsed as --help"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults() {
        let c = config(&["--server_port", "50051"]);
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 50051);
        assert_eq!((c.connections, c.concurrency), (1, 1));
        assert_eq!(c.duration, Duration::from_secs(5));
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
        assert_eq!(c.host, "localhost");
        assert_eq!((c.port, c.connections, c.concurrency), (1, 4, 16));
        assert_eq!(c.duration, Duration::from_millis(500));
        assert_eq!((c.rpc, c.payload), (Rpc::Bidi, 100));
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
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
        assert!(parse(&fewer_callers).is_err());
    }

    #[test]
    fn rpc_names_round_trip() {
        for rpc in [Rpc::Unary, Rpc::ServerStream, Rpc::ClientStream, Rpc::Bidi] {
            assert_eq!(rpc.to_string().parse::<Rpc>(), Ok(rpc));
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 90.0), 90);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
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
