//! Equivalence with the official implementation (issue #3): the tests here
//! run in the four pairings {grpcio server, our server} x {grpcio client, our
//! client}, with one expectation for all four. grpcio (Python, pinned in
//! tests/peers/python/requirements.txt) is the reference, except where the
//! gRPC spec says otherwise: those few tests (`with_our_server!`,
//! `with_our_client!`) hold our side to the spec, in the pairings where
//! grpcio's side is not the one under test; and what neither client can
//! send (an unsupported `grpc-encoding`) is sent to our server by a raw
//! HTTP/2 client.
//!
//! The behaviours are in `src/behaviours.rs` (shared with the grpc-js
//! pairings of `equivalence_grpcjs.rs`); the machinery (the grpcio peers,
//! our server of the test service, the client driver) is in
//! `src/python.rs` and `src/equivalence.rs`; the test service is
//! `proto/equivalence.proto`.
//!
//! Test names read `<behaviour>::<client>_client_<server>_server`, so
//! `cargo test -p grpc-blocking-tests --test equivalence ours_client_grpcio`
//! runs one pairing.

use std::time::Duration;

use grpc_blocking::Code;
use grpc_blocking_tests::behaviours::*;
use grpc_blocking_tests::equivalence::*;
use grpc_blocking_tests::pairing_tests;
use grpc_blocking_tests::raw_h2::{frame, RawClient};

/// The equivalence tests proper: each behaviour in all four pairings.
macro_rules! in_all_pairings {
    ($($test:ident),* $(,)?) => {$(
        pairing_tests!($test:
            grpcio_client_grpcio_server => (Grpcio, Grpcio),
            ours_client_grpcio_server => (Grpcio, Ours),
            grpcio_client_ours_server => (Ours, Grpcio),
            ours_client_ours_server => (Ours, Ours),
        );
    )*};
}

/// Server behaviour the gRPC spec prescribes and grpcio's server does not
/// follow: checked on our server only, with both clients.
macro_rules! with_our_server {
    ($($test:ident),* $(,)?) => {$(
        pairing_tests!($test:
            grpcio_client_ours_server => (Ours, Grpcio),
            ours_client_ours_server => (Ours, Ours),
        );
    )*};
}

/// Client behaviour the gRPC spec prescribes and grpcio's client does not
/// follow: checked with our client only, against both servers.
macro_rules! with_our_client {
    ($($test:ident),* $(,)?) => {$(
        pairing_tests!($test:
            ours_client_grpcio_server => (Grpcio, Ours),
            ours_client_ours_server => (Ours, Ours),
        );
    )*};
}

in_all_pairings!(
    example_service,
    four_patterns,
    empty_messages_and_streams,
    many_messages,
    bidi_ping_pong,
    request_metadata,
    metadata_order_within_names,
    reserved_headers_hidden,
    metadata_edge_values,
    response_initial_metadata,
    response_trailing_metadata,
    response_initial_and_trailing_metadata,
    every_error_code,
    error_message_encoding,
    error_after_replies,
    error_with_metadata,
    server_fails_while_client_streams,
    one_mib_messages,
    over_default_size_limit,
    size_limit_boundary,
    concurrent_calls,
    unknown_method,
    unknown_service,
    deadline_exceeded,
    handler_panic,
    no_request_to_unary_method,
    unparseable_request,
    unparseable_reply,
    compression_per_call,
    compression_channel_default,
    compression_set_by_server,
    compression_off_for_one_reply,
    compression_of_replies_by_default,
    deadline_seen_by_handler,
    client_cancels,
    rich_error_details,
);

with_our_server!(extra_request_to_unary_method);

with_our_client!(response_cardinality);

// ---------------------------------------------------------------------------
// A request compressed with an algorithm the server does not support
//
// Neither client can be made to send one: grpcio offers identity, deflate
// and gzip only, and drops a `grpc-encoding` given as metadata (checked with
// grpcio 1.85.1: `grpc-encoding: br` in the metadata of a call to our server
// arrived as no `grpc-encoding` at all, and the call succeeded); ours sends
// only the algorithms of `Encoding`. So this is checked with the raw HTTP/2
// client of the protocol tests, the server side of the pairings.
//
// And on our server only: the spec prescribes the answer, and grpcio's
// server does not give it. It answers INTERNAL "Error parsing
// 'grpc-encoding' metadata", Trailers-Only, with no grpc-accept-encoding
// (checked with grpcio 1.85.1, unary_unary and stream_stream), so the spec
// decides here, as for the `with_our_server!` tests.

/// doc/compression.md: "If a client message is compressed by an algorithm
/// that is not supported by a server, the message will result in an
/// UNIMPLEMENTED error status on the server. The server will then include a
/// grpc-accept-encoding response header which specifies the algorithms that
/// the server accepts." (tests/features.rs checks the same on a server of
/// the example service.)
fn unsupported_request_encoding() {
    let addr = our_server();
    with_watchdog("raw calls", Duration::from_secs(120), move || {
        let mut raw = RawClient::connect(addr);
        let body = frame(true, &[0x1f, 0x8b, 0, 0]);
        for path in [paths::UNARY_UNARY, paths::STREAM_STREAM] {
            let resp = raw.call(path, &[("grpc-encoding", "br")], body.clone());
            let what = format!("our server, {path}");
            assert_eq!(
                resp.grpc_status(),
                Some(Code::Unimplemented.as_i32()),
                "{what}: {resp:?}"
            );
            let accept = resp
                .header("grpc-accept-encoding")
                .unwrap_or_else(|| panic!("{what}: no grpc-accept-encoding: {resp:?}"));
            let mut listed: Vec<String> = accept
                .split(',')
                .map(|e| e.trim().to_ascii_lowercase())
                .collect();
            listed.sort();
            assert_eq!(
                listed,
                ["deflate", "gzip", "identity"],
                "{what}: {accept:?}"
            );
            eprintln!(
                "{what}: UNIMPLEMENTED {:?}, grpc-accept-encoding {accept:?}",
                resp.grpc_message()
            );
        }
        // The connection still serves.
        let ok = raw.call(paths::UNARY_UNARY, &[], frame(false, &[]));
        assert_eq!(ok.grpc_status(), Some(0), "our server: {ok:?}");
    });
}

mod unsupported_request_encoding {
    #[test]
    fn raw_client_ours_server() {
        super::unsupported_request_encoding();
    }
}

// ---------------------------------------------------------------------------
// Not per pairing.

#[test]
fn crc32_is_zlibs() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32_update(crc32(b"12345"), b"6789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

fn check_example_lines(lines: &[serde_json::Value]) {
    assert_eq!(
        serde_json::Value::Array(lines.to_vec()),
        grpc_blocking_tests::python::example_lines()
    );
}

/// The grpcio example client (`client.py example`, nameko-grpc's example
/// calls made with grpcio's generated stubs) against our example server.
#[test]
fn grpcio_example_client_against_our_server() {
    let lines =
        grpc_blocking_tests::python::run_example_client(our_server(), Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}"));
    check_example_lines(&lines);
}

/// The same client against the grpcio server: the reference output.
#[test]
fn grpcio_example_client_against_grpcio_server() {
    let addr = grpc_blocking_tests::python::GrpcioServer::shared().addr();
    let lines = grpc_blocking_tests::python::run_example_client(addr, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    check_example_lines(&lines);
}

/// Our generated client (not the driver's generic calls) against grpcio.
#[test]
fn our_generated_client_against_grpcio_server() {
    let addr = grpc_blocking_tests::python::GrpcioServer::shared().addr();
    with_watchdog(
        "generated client calls",
        Duration::from_secs(120),
        move || {
            let uri = format!("http://{addr}");
            let client = proto::EquivalenceClient::connect(&uri).expect("connect");
            let r = client
                .unary_unary(Request {
                    multiplier: 2,
                    ..req("g")
                })
                .expect("unary_unary");
            assert_eq!(r.message, "gg");
            let replies: Vec<Reply> = client
                .unary_stream(req("s"))
                .collect::<Result<_, _>>()
                .expect("unary_stream");
            assert_eq!(msgs(&replies), vec![("s", 1), ("s", 2)]);
            let r = client
                .stream_unary(vec![req("a"), req("b")])
                .expect("stream_unary");
            assert_eq!(r.message, "a,b");
            let replies: Vec<Reply> = client
                .stream_stream(vec![req("a"), req("b")])
                .collect::<Result<_, _>>()
                .expect("stream_stream");
            assert_eq!(msgs(&replies), vec![("a", 1), ("b", 2)]);
            let status = client
                .unary_unary(Request {
                    status_code: 5,
                    status_message: TRICKY_MESSAGE.into(),
                    ..req("e")
                })
                .expect_err("must fail");
            assert_eq!(
                (status.code(), status.message()),
                (Code::NotFound, TRICKY_MESSAGE)
            );
        },
    );
}
