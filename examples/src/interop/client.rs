//! The interop client: the test cases of gRPC's
//! `doc/interop-test-descriptions.md` that need no cloud credentials, with
//! the spec's assertions, each run with its own timeout.
//!
//! [`run_cases`] runs a list of cases against a server and returns a
//! [`Report`]; printed, it is one line per case (`PASS empty_unary`,
//! `FAIL large_unary: why`) and a last line `N passed, M failed`.

use std::fmt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use grpc_blocking::{CallOptions, Channel, Code, Encoding, Metadata, Status};

use super::{zero_payload, ECHO_INITIAL_KEY, ECHO_TRAILING_KEY};
use crate::grpc::testing::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    StreamingInputCallRequest, StreamingOutputCallRequest, TestServiceClient,
    UnimplementedServiceClient,
};

/// Every test case this client implements, in the order `all` runs them.
pub const ALL_CASES: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_compressed_streaming",
    "server_compressed_streaming",
];

/// How long one case may take by default before it fails as hung.
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the client connects, and how long each case may take.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's host name or address.
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// How long one case may take (connecting included) before it fails.
    pub case_timeout: Duration,
    /// The `:authority` to send instead of `host:port`
    /// (`--server_host_override` without TLS).
    pub authority: Option<String>,
    /// TLS settings (`--use_tls`): the roots, and the server name to expect
    /// (`--server_host_override`, which is then also the `:authority`).
    pub tls: Option<grpc_blocking::tls::ClientTlsConfig>,
}

impl ClientConfig {
    /// A configuration for `host:port` with [`DEFAULT_CASE_TIMEOUT`].
    pub fn new(host: impl Into<String>, port: u16) -> ClientConfig {
        ClientConfig {
            host: host.into(),
            port,
            case_timeout: DEFAULT_CASE_TIMEOUT,
            authority: None,
            tls: None,
        }
    }

    /// The channel target, `http://host:port` (`https://` with TLS; an IPv6
    /// address bracketed).
    pub fn target(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            None => write!(f, "PASS {}", self.name),
            Some(why) => write!(f, "FAIL {}: {}", self.name, why),
        }
    }
}

/// The outcomes of a run, in the order the cases ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One result per case.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// The summary line, exactly `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// Reads a summary line (`N passed, M failed`) back into `(N, M)`.
    pub fn parse_summary(line: &str) -> Option<(usize, usize)> {
        let (passed, failed) = line.trim().split_once(", ")?;
        let passed = passed.strip_suffix(" passed")?.parse().ok()?;
        let failed = failed.strip_suffix(" failed")?.parse().ok()?;
        Some((passed, failed))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for result in &self.results {
            writeln!(f, "{result}")?;
        }
        write!(f, "{}", self.summary())
    }
}

/// Expands a `--test_case` value: one name, a comma-separated list, or
/// `all`. Unknown names are an error that lists the known ones.
pub fn parse_cases(list: &str) -> Result<Vec<&'static str>, String> {
    let mut cases = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            cases.extend_from_slice(ALL_CASES);
        } else if let Some(known) = ALL_CASES.iter().find(|c| **c == name) {
            cases.push(*known);
        } else {
            return Err(format!(
                "unknown test case {name:?}; known: all, {}",
                ALL_CASES.join(", ")
            ));
        }
    }
    if cases.is_empty() {
        return Err("no test case named".into());
    }
    Ok(cases)
}

/// Runs `cases` against `host:port`, each with [`DEFAULT_CASE_TIMEOUT`].
pub fn run_cases(host: &str, port: u16, cases: &[&str]) -> Report {
    run_cases_with(&ClientConfig::new(host, port), cases, |_| {})
}

/// Runs `cases` one after the other, calling `on_result` as each one ends
/// (the binary prints from there), and returns the report.
pub fn run_cases_with(
    config: &ClientConfig,
    cases: &[&str],
    mut on_result: impl FnMut(&CaseResult),
) -> Report {
    let mut report = Report::default();
    for name in cases {
        let result = run_case(config, name);
        on_result(&result);
        report.results.push(result);
    }
    report
}

/// Runs one case on a thread of its own, with a fresh channel, and fails it
/// if it takes longer than the configured timeout (the thread is then left
/// to end by itself).
pub fn run_case(config: &ClientConfig, name: &str) -> CaseResult {
    let started = Instant::now();
    let finish = |failure: Option<String>| CaseResult {
        name: name.to_owned(),
        failure,
        elapsed: started.elapsed(),
    };
    let Some(case) = CASES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f) else {
        return finish(Some(format!("unknown test case {name:?}")));
    };
    let (tx, rx) = mpsc::channel();
    let target = config.target();
    let connect_timeout = config.case_timeout;
    let authority = config.authority.clone();
    let tls = config.tls.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("interop-{name}"))
        .spawn(move || {
            let mut builder = Channel::builder(&target).connect_timeout(connect_timeout);
            if let Some(authority) = &authority {
                builder = builder.authority(authority);
            }
            if let Some(tls) = tls {
                builder = builder.tls(tls);
            }
            let outcome = builder
                .connect()
                .map_err(|e| format!("cannot connect to {target}: {e}"))
                .and_then(|channel| {
                    case(&Clients {
                        test: TestServiceClient::new(channel.clone()),
                        channel,
                    })
                });
            let _ = tx.send(outcome);
        });
    if let Err(e) = spawned {
        return finish(Some(format!("cannot start a thread for the case: {e}")));
    }
    match rx.recv_timeout(config.case_timeout) {
        Ok(Ok(())) => finish(None),
        Ok(Err(why)) => finish(Some(why)),
        Err(mpsc::RecvTimeoutError::Timeout) => finish(Some(format!(
            "did not finish within {:?} (a hang?)",
            config.case_timeout
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => finish(Some("the case panicked".into())),
    }
}

/// What a case gets: a client of `TestService` and its channel.
struct Clients {
    test: TestServiceClient,
    channel: Channel,
}

type Outcome = Result<(), String>;
type Case = fn(&Clients) -> Outcome;

const CASES: &[(&str, Case)] = &[
    ("empty_unary", empty_unary),
    ("large_unary", large_unary),
    ("client_streaming", client_streaming),
    ("server_streaming", server_streaming),
    ("ping_pong", ping_pong),
    ("empty_stream", empty_stream),
    ("timeout_on_sleeping_server", timeout_on_sleeping_server),
    ("cancel_after_begin", cancel_after_begin),
    ("cancel_after_first_response", cancel_after_first_response),
    ("custom_metadata", custom_metadata),
    ("status_code_and_message", status_code_and_message),
    ("special_status_message", special_status_message),
    ("unimplemented_method", unimplemented_method),
    ("unimplemented_service", unimplemented_service),
    ("client_compressed_unary", client_compressed_unary),
    ("server_compressed_unary", server_compressed_unary),
    ("client_compressed_streaming", client_compressed_streaming),
    ("server_compressed_streaming", server_compressed_streaming),
];

// ---- assertion helpers -----------------------------------------------------

/// A status as the failure messages show it: `CODE "message"`.
fn describe(status: &Status) -> String {
    format!("{} {:?}", status.code(), status.message())
}

/// The value of a call that must succeed; its failure says which call.
fn ok<T>(what: &str, result: Result<T, Status>) -> Result<T, String> {
    result.map_err(|s| format!("{what} failed: {}", describe(&s)))
}

/// Checks that a call failed with `code`; returns its status.
fn failed_with<T>(what: &str, result: Result<T, Status>, code: Code) -> Result<Status, String> {
    match result {
        Ok(_) => Err(format!("{what} succeeded; expected {code}")),
        Err(s) if s.code() == code => Ok(s),
        Err(s) => Err(format!("{what}: expected {code}, got {}", describe(&s))),
    }
}

fn expect_eq<T: PartialEq + fmt::Debug>(what: &str, got: T, want: T) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want:?}, got {got:?}"))
    }
}

/// Checks a response payload: present, of type COMPRESSABLE, `size` zero
/// bytes.
fn check_payload(what: &str, payload: Option<&Payload>, size: usize) -> Outcome {
    let Some(payload) = payload else {
        return Err(format!("{what}: no payload"));
    };
    expect_eq(
        &format!("{what}: payload type"),
        payload.r#type,
        PayloadType::Compressable as i32,
    )?;
    expect_eq(&format!("{what}: payload size"), payload.body.len(), size)?;
    if payload.body.iter().any(|b| *b != 0) {
        return Err(format!("{what}: the payload is not all zeros"));
    }
    Ok(())
}

fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

/// The request of large_unary and its variants: 271828 bytes in, 314159
/// asked back.
fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_type: PayloadType::Compressable as i32,
        response_size: 314_159,
        payload: Some(zero_payload(271_828)),
        ..SimpleRequest::default()
    }
}

fn input_request(size: usize, expect_compressed: Option<bool>) -> StreamingInputCallRequest {
    StreamingInputCallRequest {
        payload: Some(zero_payload(size)),
        expect_compressed: expect_compressed.map(|value| BoolValue { value }),
    }
}

fn response_size(size: usize) -> ResponseParameters {
    ResponseParameters {
        size: i32::try_from(size).unwrap_or(i32::MAX),
        ..ResponseParameters::default()
    }
}

/// A full-duplex request asking for one response of `response` bytes and
/// carrying `request` bytes.
fn duplex_request(response: usize, request: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_type: PayloadType::Compressable as i32,
        response_parameters: vec![response_size(response)],
        payload: Some(zero_payload(request)),
        ..StreamingOutputCallRequest::default()
    }
}

// ---- the cases -------------------------------------------------------------

fn empty_unary(c: &Clients) -> Outcome {
    let _: Empty = ok("EmptyCall", c.test.empty_call(Empty {}))?;
    Ok(())
}

fn large_unary(c: &Clients) -> Outcome {
    let response = ok("UnaryCall", c.test.unary_call(large_request()))?;
    check_payload("the response", response.payload.as_ref(), 314_159)
}

fn client_streaming(c: &Clients) -> Outcome {
    let requests = [27_182, 8, 1_828, 45_904].map(|n| input_request(n, None));
    let response = ok("StreamingInputCall", c.test.streaming_input_call(requests))?;
    expect_eq(
        "aggregated_payload_size",
        response.aggregated_payload_size,
        74_922,
    )
}

fn server_streaming(c: &Clients) -> Outcome {
    let sizes = [31_415, 9, 2_653, 58_979];
    let request = StreamingOutputCallRequest {
        response_type: PayloadType::Compressable as i32,
        response_parameters: sizes.iter().map(|n| response_size(*n)).collect(),
        ..StreamingOutputCallRequest::default()
    };
    let mut payloads = Vec::new();
    for response in c.test.streaming_output_call(request) {
        payloads.push(ok("StreamingOutputCall", response)?.payload);
    }
    expect_eq("number of responses", payloads.len(), sizes.len())?;
    for (i, (payload, size)) in payloads.iter().zip(sizes).enumerate() {
        check_payload(&format!("response {}", i + 1), payload.as_ref(), size)?;
    }
    Ok(())
}

fn ping_pong(c: &Clients) -> Outcome {
    let (mut sink, mut responses) = c.test.full_duplex_call_sender(CallOptions::new());
    let steps = [(31_415, 27_182), (9, 8), (2_653, 1_828), (58_979, 45_904)];
    for (i, (response, request)) in steps.into_iter().enumerate() {
        ok(
            &format!("sending request {}", i + 1),
            sink.send(duplex_request(response, request)),
        )?;
        match responses.next() {
            Some(Ok(r)) => {
                check_payload(&format!("response {}", i + 1), r.payload.as_ref(), response)?
            }
            Some(Err(s)) => return Err(format!("FullDuplexCall failed: {}", describe(&s))),
            None => return Err(format!("the call ended after {i} responses; expected 4")),
        }
    }
    sink.finish();
    match responses.next() {
        None => Ok(()),
        Some(Ok(_)) => Err("more than four responses".into()),
        Some(Err(s)) => Err(format!(
            "FullDuplexCall failed after the half-close: {}",
            describe(&s)
        )),
    }
}

fn empty_stream(c: &Clients) -> Outcome {
    let (sink, mut responses) = c.test.full_duplex_call_sender(CallOptions::new());
    sink.finish();
    match responses.next() {
        None => Ok(()),
        Some(Ok(_)) => Err("got a response; expected none".into()),
        Some(Err(s)) => Err(format!("FullDuplexCall failed: {}", describe(&s))),
    }
}

fn timeout_on_sleeping_server(c: &Clients) -> Outcome {
    let options = CallOptions::new().timeout(Duration::from_millis(1));
    let (mut sink, mut responses) = c.test.full_duplex_call_sender(options);
    let request = StreamingOutputCallRequest {
        payload: Some(zero_payload(27_182)),
        ..StreamingOutputCallRequest::default()
    };
    // With a 1 ms deadline the call may be over before this send: its
    // error is the same status the response stream reports.
    let _ = sink.send(request);
    let outcome = responses.next();
    drop(sink);
    match outcome {
        Some(Err(s)) if s.code() == Code::DeadlineExceeded => Ok(()),
        Some(Err(s)) => Err(format!("expected DEADLINE_EXCEEDED, got {}", describe(&s))),
        Some(Ok(_)) => Err("got a response; expected DEADLINE_EXCEEDED".into()),
        None => Err("the call ended OK; expected DEADLINE_EXCEEDED".into()),
    }
}

fn cancel_after_begin(c: &Clients) -> Outcome {
    let (_sink, mut call) = c.test.streaming_input_call_sender(CallOptions::new());
    call.cancel();
    match call.wait() {
        Err(status) => expect_eq("the call's status code", status.code(), Code::Cancelled),
        Ok(_) => Err("the cancelled call completed OK".into()),
    }
}

fn cancel_after_first_response(c: &Clients) -> Outcome {
    let (mut sink, mut responses) = c.test.full_duplex_call_sender(CallOptions::new());
    ok(
        "sending the request",
        sink.send(duplex_request(31_415, 27_182)),
    )?;
    match responses.next() {
        Some(Ok(r)) => check_payload("the response", r.payload.as_ref(), 31_415)?,
        Some(Err(s)) => return Err(format!("FullDuplexCall failed: {}", describe(&s))),
        None => return Err("the call ended without a response".into()),
    }
    responses.cancel();
    match responses.next() {
        Some(Err(status)) => expect_eq("the call's status code", status.code(), Code::Cancelled),
        Some(Ok(_)) => Err("got a response after cancelling".into()),
        None => Err("the cancelled call ended OK".into()),
    }
}

const ECHO_INITIAL_VALUE: &str = "test_initial_metadata_value";
const ECHO_TRAILING_VALUE: [u8; 3] = [0xab, 0xab, 0xab];

fn check_echo(what: &str, headers: &Metadata, trailers: &Metadata) -> Outcome {
    expect_eq(
        &format!("{what}: {ECHO_INITIAL_KEY} in the initial metadata"),
        headers.get(ECHO_INITIAL_KEY),
        Some(ECHO_INITIAL_VALUE),
    )?;
    expect_eq(
        &format!("{what}: {ECHO_TRAILING_KEY} in the trailing metadata"),
        trailers.get_bin(ECHO_TRAILING_KEY),
        Some(&ECHO_TRAILING_VALUE[..]),
    )
}

fn custom_metadata(c: &Clients) -> Outcome {
    let mut metadata = Metadata::new();
    metadata
        .insert(ECHO_INITIAL_KEY, ECHO_INITIAL_VALUE)
        .and_then(|()| metadata.insert_bin(ECHO_TRAILING_KEY, &ECHO_TRAILING_VALUE))
        .map_err(|e| format!("cannot build the metadata: {e}"))?;

    let options = CallOptions::new().metadata(metadata.clone());
    let response = ok(
        "UnaryCall",
        c.test
            .unary_call_start(large_request(), options)
            .wait_response(),
    )?;
    check_payload("UnaryCall", response.message.payload.as_ref(), 314_159)?;
    check_echo("UnaryCall", &response.headers, &response.trailers)?;

    let options = CallOptions::new().metadata(metadata);
    let (mut sink, mut responses) = c.test.full_duplex_call_sender(options);
    ok(
        "sending the FullDuplexCall request",
        sink.send(duplex_request(314_159, 271_828)),
    )?;
    sink.finish();
    let headers = ok("FullDuplexCall headers", responses.headers())?;
    let mut count = 0;
    for response in responses.by_ref() {
        let response = ok("FullDuplexCall", response)?;
        check_payload("FullDuplexCall", response.payload.as_ref(), 314_159)?;
        count += 1;
    }
    expect_eq("FullDuplexCall responses", count, 1)?;
    let trailers = responses.trailers().cloned().unwrap_or_default();
    check_echo("FullDuplexCall", &headers, &trailers)
}

/// Asks for `code` and `message` in a UnaryCall (and a FullDuplexCall when
/// `duplex`) and checks that both come back exactly.
fn echo_status(c: &Clients, code: i32, message: &str, duplex: bool) -> Outcome {
    let wanted = EchoStatus {
        code,
        message: message.to_owned(),
    };
    let request = SimpleRequest {
        response_status: Some(wanted.clone()),
        ..SimpleRequest::default()
    };
    let status = failed_with(
        "UnaryCall",
        c.test.unary_call(request),
        Code::from_i32(code),
    )?;
    expect_eq("UnaryCall status message", status.message(), message)?;
    if !duplex {
        return Ok(());
    }
    let (mut sink, mut responses) = c.test.full_duplex_call_sender(CallOptions::new());
    let _ = sink.send(StreamingOutputCallRequest {
        response_status: Some(wanted),
        ..StreamingOutputCallRequest::default()
    });
    sink.finish();
    let outcome = match responses.next() {
        Some(Err(s)) => Err(s),
        Some(Ok(_)) => return Err("FullDuplexCall sent a response; expected none".into()),
        None => Ok(()),
    };
    let status = failed_with("FullDuplexCall", outcome, Code::from_i32(code))?;
    expect_eq("FullDuplexCall status message", status.message(), message)
}

fn status_code_and_message(c: &Clients) -> Outcome {
    echo_status(c, 2, "test status message", true)
}

fn special_status_message(c: &Clients) -> Outcome {
    echo_status(
        c,
        2,
        "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n",
        false,
    )
}

fn unimplemented_method(c: &Clients) -> Outcome {
    failed_with(
        "TestService/UnimplementedCall",
        c.test.unimplemented_call(Empty {}),
        Code::Unimplemented,
    )
    .map(drop)
}

fn unimplemented_service(c: &Clients) -> Outcome {
    let client = UnimplementedServiceClient::new(c.channel.clone());
    failed_with(
        "UnimplementedService/UnimplementedCall",
        client.unimplemented_call(Empty {}),
        Code::Unimplemented,
    )
    .map(drop)
}

fn client_compressed_unary(c: &Clients) -> Outcome {
    let expecting = |value| SimpleRequest {
        expect_compressed: bool_value(value),
        ..large_request()
    };
    failed_with(
        "the probe (an uncompressed request with expect_compressed true)",
        c.test.unary_call_with(expecting(true), CallOptions::new()),
        Code::InvalidArgument,
    )?;
    let compressed = CallOptions::new().compression(Encoding::Gzip);
    let response = ok(
        "the compressed UnaryCall",
        c.test.unary_call_with(expecting(true), compressed),
    )?;
    check_payload(
        "the compressed call's response",
        response.payload.as_ref(),
        314_159,
    )?;
    let response = ok(
        "the uncompressed UnaryCall",
        c.test.unary_call_with(expecting(false), CallOptions::new()),
    )?;
    check_payload(
        "the uncompressed call's response",
        response.payload.as_ref(),
        314_159,
    )
}

fn server_compressed_unary(c: &Clients) -> Outcome {
    for compressed in [true, false] {
        let request = SimpleRequest {
            response_compressed: bool_value(compressed),
            ..large_request()
        };
        let what = format!("UnaryCall with response_compressed {compressed}");
        let response = ok(
            &what,
            c.test
                .unary_call_start(request, CallOptions::new())
                .wait_response(),
        )?;
        expect_eq(
            &format!("{what}: the response's compressed flag"),
            response.compressed,
            compressed,
        )?;
        check_payload(&what, response.message.payload.as_ref(), 314_159)?;
    }
    Ok(())
}

fn client_compressed_streaming(c: &Clients) -> Outcome {
    let (mut sink, call) = c.test.streaming_input_call_sender(CallOptions::new());
    // The server may fail the call before reading: its status is the test.
    let _ = sink.send(input_request(27_182, Some(true)));
    sink.finish();
    failed_with(
        "the probe (an uncompressed message with expect_compressed true)",
        call.wait(),
        Code::InvalidArgument,
    )?;

    let options = CallOptions::new().compression(Encoding::Gzip);
    let (mut sink, call) = c.test.streaming_input_call_sender(options);
    let first = sink.send(input_request(27_182, Some(true)));
    let second = sink.send_uncompressed(input_request(45_904, Some(false)));
    sink.finish();
    let response = call.wait().map_err(|s| {
        format!(
            "StreamingInputCall failed: {} (sending the compressed message: {:?}, the uncompressed one: {:?})",
            describe(&s),
            first.as_ref().err().map(describe),
            second.as_ref().err().map(describe),
        )
    })?;
    expect_eq(
        "aggregated_payload_size",
        response.aggregated_payload_size,
        73_086,
    )
}

fn server_compressed_streaming(c: &Clients) -> Outcome {
    let wanted = [(31_415, true), (92_653, false)];
    let request = StreamingOutputCallRequest {
        response_type: PayloadType::Compressable as i32,
        response_parameters: wanted
            .iter()
            .map(|(size, compressed)| ResponseParameters {
                compressed: bool_value(*compressed),
                ..response_size(*size)
            })
            .collect(),
        ..StreamingOutputCallRequest::default()
    };
    let mut responses = c.test.streaming_output_call(request);
    let mut seen = Vec::new();
    while let Some(response) = responses.next() {
        let response = ok("StreamingOutputCall", response)?;
        seen.push((response.payload, responses.last_message_compressed()));
    }
    expect_eq("number of responses", seen.len(), wanted.len())?;
    for (i, ((payload, compressed), (size, want))) in seen.iter().zip(wanted).enumerate() {
        let what = format!("response {} (compressed {want})", i + 1);
        expect_eq(&format!("{what}: compressed flag"), *compressed, want)?;
        check_payload(&what, payload.as_ref(), size)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_lists() {
        assert_eq!(parse_cases("all").unwrap().len(), 18);
        assert_eq!(
            parse_cases("empty_unary, ping_pong").unwrap(),
            ["empty_unary", "ping_pong"]
        );
        assert!(parse_cases("nope").unwrap_err().contains("nope"));
        assert!(parse_cases("").is_err());
        assert_eq!(CASES.len(), ALL_CASES.len());
        for (name, (case, _)) in ALL_CASES.iter().zip(CASES) {
            assert_eq!(name, case);
        }
    }

    #[test]
    fn summary_lines() {
        let report = Report {
            results: vec![
                CaseResult {
                    name: "a".into(),
                    failure: None,
                    elapsed: Duration::ZERO,
                },
                CaseResult {
                    name: "b".into(),
                    failure: Some("why".into()),
                    elapsed: Duration::ZERO,
                },
            ],
        };
        assert_eq!(
            report.to_string(),
            "PASS a\nFAIL b: why\n1 passed, 1 failed"
        );
        assert_eq!(Report::parse_summary(&report.summary()), Some((1, 1)));
        assert_eq!(
            Report::parse_summary("18 passed, 0 failed\n"),
            Some((18, 0))
        );
        assert_eq!(Report::parse_summary("passed"), None);
    }

    #[test]
    fn targets() {
        assert_eq!(ClientConfig::new("h", 1).target(), "http://h:1");
        assert_eq!(ClientConfig::new("::1", 2).target(), "http://[::1]:2");
    }
}
