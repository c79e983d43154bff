//! Retries under a service config's retry policy (gRFC A6), against a
//! server that fails the first attempts of each call: the number of
//! attempts, the backoff (loosely: a lower bound), throttling, pushback,
//! `grpc-previous-rpc-attempts`, commitment, and streaming requests
//! replayed until they outgrow their buffer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpc_blocking::client::ServiceConfig;
use grpc_blocking::server::{Requests, ServerContext};
use grpc_blocking::{Channel, Code, Metadata, Server, ServerHandle, Status};
use grpc_blocking_examples::nameko::{ExampleClient, ExampleReply, ExampleRequest};
use grpc_blocking_tests::stubbed;
use grpc_blocking_tests::support::{req, with_timeout};

/// Fails the first `multiplier` attempts of each call named by its value
/// (UNAVAILABLE, or what the value asks for), recording each attempt's
/// `grpc-previous-rpc-attempts`.
#[derive(Default, Clone)]
struct Flaky {
    seen: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl Flaky {
    fn attempt(&self, key: &str, ctx: &ServerContext) -> usize {
        let previous = ctx
            .metadata()
            .get("grpc-previous-rpc-attempts")
            .unwrap_or("-")
            .to_owned();
        let mut seen = self.seen.lock().unwrap();
        let attempts = seen.entry(key.to_owned()).or_default();
        attempts.push(previous);
        attempts.len()
    }

    fn attempts(&self, key: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    fn failure(key: &str) -> Status {
        let mut status = if key.starts_with("internal") {
            Status::internal("broken")
        } else {
            Status::unavailable("try again")
        };
        if key.starts_with("pushback-never") {
            let mut md = Metadata::new();
            md.insert("grpc-retry-pushback-ms", "-1").unwrap();
            status = status.with_metadata(md);
        } else if key.starts_with("pushback-300") {
            let mut md = Metadata::new();
            md.insert("grpc-retry-pushback-ms", "300").unwrap();
            status = status.with_metadata(md);
        }
        status
    }
}

impl stubbed::Example for Flaky {
    fn unary_unary(
        &self,
        request: ExampleRequest,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let n = self.attempt(&request.value, ctx);
        if request.value.starts_with("headers-first") {
            // Response headers commit the call: no retry after them.
            ctx.send_initial_metadata(Metadata::new())?;
        }
        if n as i32 <= request.multiplier {
            return Err(Flaky::failure(&request.value));
        }
        Ok(ExampleReply {
            message: format!("attempt {n}"),
            seqno: 0,
        })
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let all: Vec<ExampleRequest> = requests.collect::<Result<_, _>>()?;
        let key = all.first().map(|r| r.value.clone()).unwrap_or_default();
        let fail_first = all.first().map_or(0, |r| r.multiplier);
        let n = self.attempt(&key, ctx);
        if n as i32 <= fail_first {
            return Err(Status::unavailable("try again"));
        }
        Ok(ExampleReply {
            message: format!("attempt {n}: {} requests", all.len()),
            seqno: 0,
        })
    }
}

fn serve(flaky: &Flaky) -> ServerHandle {
    Server::builder()
        .add_service(stubbed::ExampleServer::new(flaky.clone()))
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

fn config(max_attempts: u32, throttling: &str) -> ServiceConfig {
    ServiceConfig::from_json(&format!(
        r#"{{
            "methodConfig": [{{
                "name": [{{"service": "nameko.example"}}],
                "retryPolicy": {{
                    "maxAttempts": {max_attempts},
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]
                }}
            }}]
            {throttling}
        }}"#
    ))
    .unwrap()
}

fn client(server: &ServerHandle, config: ServiceConfig) -> ExampleClient {
    ExampleClient::new(
        Channel::builder(server.target())
            .service_config(config)
            .connect()
            .unwrap(),
    )
}

#[test]
fn retryable_failures_are_retried_up_to_max_attempts_after_a_backoff() {
    with_timeout(60, || {
        let flaky = Flaky::default();
        let server = serve(&flaky);
        let client = client(&server, config(4, ""));
        // Two failures, then success on the third attempt.
        let started = Instant::now();
        let reply = client.unary_unary(req("twice", 2)).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(reply.message, "attempt 3");
        assert_eq!(flaky.attempts("twice"), ["-", "1", "2"]);
        // Two backoffs: at least 0.8 x (0.1 s + 0.2 s).
        assert!(elapsed >= Duration::from_millis(240), "{elapsed:?}");
        println!("3 attempts with backoffs 0.1 s and 0.2 s (+-20%) took {elapsed:?}");

        // Always failing: exactly maxAttempts attempts, then its status.
        let err = client.unary_unary(req("always", 100)).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(err.message(), "try again");
        assert_eq!(flaky.attempts("always").len(), 4);

        // A code the policy does not list is not retried.
        let err = client.unary_unary(req("internal", 1)).unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert_eq!(flaky.attempts("internal").len(), 1);
    });
}

#[test]
fn pushback_and_commitment_decide_too() {
    with_timeout(60, || {
        let flaky = Flaky::default();
        let server = serve(&flaky);
        let client = client(&server, config(5, ""));
        // The server says never: one attempt.
        let err = client.unary_unary(req("pushback-never", 1)).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(flaky.attempts("pushback-never").len(), 1);
        // The server says 300 ms: the retry waits that long.
        let started = Instant::now();
        client.unary_unary(req("pushback-300", 1)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(flaky.attempts("pushback-300").len(), 2);
        // Response headers commit the call.
        let err = client.unary_unary(req("headers-first", 1)).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(flaky.attempts("headers-first").len(), 1);
    });
}

#[test]
fn throttling_stops_retries_when_too_many_fail() {
    with_timeout(60, || {
        let flaky = Flaky::default();
        let server = serve(&flaky);
        // 4 tokens: each failed attempt takes one, retries stop at 2 left.
        let client = client(
            &server,
            config(
                5,
                r#", "retryThrottling": {"maxTokens": 4, "tokenRatio": 0.5}"#,
            ),
        );
        client.unary_unary(req("first", 100)).unwrap_err();
        // 4 -> 3 (retry) -> 2 (no more).
        assert_eq!(flaky.attempts("first").len(), 2);
        client.unary_unary(req("second", 100)).unwrap_err();
        assert_eq!(flaky.attempts("second").len(), 1);
        // Successes earn tokens back: 1 + 6 x 0.5 = 4 (the most), then a
        // failure leaves 3, and a retry is allowed again.
        for i in 0..6 {
            client.unary_unary(req(&format!("ok{i}"), 0)).unwrap();
        }
        client.unary_unary(req("third", 100)).unwrap_err();
        assert_eq!(flaky.attempts("third").len(), 2);
    });
}

#[test]
fn a_streaming_request_is_replayed_until_it_outgrows_its_buffer() {
    with_timeout(60, || {
        let flaky = Flaky::default();
        let server = serve(&flaky);
        let channel = Channel::builder(server.target())
            .service_config(config(4, ""))
            .retry_buffer_size(1000, 1 << 20)
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel);
        // Small: every attempt gets every request again.
        let requests = (0..5).map(|i| req("small", if i == 0 { 2 } else { 0 }));
        let reply = client.stream_unary(requests).unwrap();
        assert_eq!(reply.message, "attempt 3: 5 requests");
        assert_eq!(flaky.attempts("small"), ["-", "1", "2"]);
        // Past the 1000-byte buffer: committed, no retry.
        let big = "x".repeat(300);
        let requests = (0..5).map(move |i| {
            let mut r = req(&big, if i == 0 { 2 } else { 0 });
            if i == 0 {
                r.value = "big".into();
            }
            r
        });
        let err = client.stream_unary(requests).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(flaky.attempts("big").len(), 1);
    });
}

#[test]
fn method_configs_set_timeouts_message_limits_and_wait_for_ready() {
    with_timeout(60, || {
        let flaky = Flaky::default();
        let server = serve(&flaky);
        let config = ServiceConfig::from_json(
            r#"{"methodConfig": [
                {"name": [{"service": "nameko.example", "method": "unary_unary"}],
                 "maxRequestMessageBytes": 64, "maxResponseMessageBytes": 9},
                {"name": [{}], "timeout": "0.2s", "waitForReady": true}
            ]}"#,
        )
        .unwrap();
        let client = client(&server, config.clone());
        // A request over the method's limit never leaves.
        let err = client.unary_unary(req(&"x".repeat(100), 0)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(flaky.attempts(&"x".repeat(100)).is_empty());
        // A reply over it is refused: "attempt 1" is 11 bytes on the wire.
        let err = client.unary_unary(req("y", 0)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        // The default entry's timeout and waitForReady: a channel to
        // nowhere waits for a backend, then hits the deadline.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let nowhere = ExampleClient::new(
            Channel::builder(format!("http://127.0.0.1:{port}"))
                .service_config(config)
                .connect_lazy()
                .unwrap(),
        );
        let requests = (0..2).map(|_| req("s", 0));
        let err = nowhere.stream_unary(requests).unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    });
}
