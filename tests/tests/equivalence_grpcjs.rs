//! Equivalence with a second official implementation (issue #9):
//! @grpc/grpc-js, gRPC for Node.js in pure JavaScript over Node's own
//! HTTP/2 (an HTTP/2 stack unrelated to C-core and to h2), pinned in
//! `tests/peers/node/package-lock.json`. The behaviours of
//! `src/behaviours.rs` (those of the grpcio pairings, `equivalence.rs`) run
//! in the pairings grpc-js client -> our server and our client -> grpc-js
//! server.
//!
//! Where grpc-js and the gRPC spec disagree, the spec decides and the test
//! says so (`with_grpcjs_client!`, `with_grpcjs_server!` run a behaviour in
//! one pairing only, with the reason beside it).
//!
//! The machinery is in `src/node.rs` (the `npm ci` install, the server and
//! the client driver, `tests/peers/node/`) and `src/equivalence.rs`.
//!
//! Test names read `<behaviour>::<client>_client_<server>_server`, so
//! `cargo test -p grpc-blocking-tests --test equivalence_grpcjs grpcjs_client`
//! runs one pairing.

use grpc_blocking_tests::behaviours::*;
use grpc_blocking_tests::pairing_tests;

/// Each behaviour in both pairings.
macro_rules! with_grpcjs {
    ($($test:ident),* $(,)?) => {$(
        pairing_tests!($test:
            grpcjs_client_ours_server => (Ours, GrpcJs),
            ours_client_grpcjs_server => (GrpcJs, Ours),
        );
    )*};
}

/// Client behaviour where the spec and grpc-js's server part ways: checked
/// with grpc-js's client against our server only.
macro_rules! with_grpcjs_client {
    ($($test:ident),* $(,)?) => {$(
        pairing_tests!($test:
            grpcjs_client_ours_server => (Ours, GrpcJs),
        );
    )*};
}

/// Server behaviour where the spec and grpc-js's client part ways: checked
/// with our client against grpc-js's server only.
macro_rules! with_grpcjs_server {
    ($($test:ident),* $(,)?) => {$(
        pairing_tests!($test:
            ours_client_grpcjs_server => (GrpcJs, Ours),
        );
    )*};
}

with_grpcjs!(
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
    extra_request_to_unary_method,
    malformed_request,
    compression_per_call,
    compression_channel_default,
    compression_set_by_server,
    compression_off_for_one_reply,
    compression_of_replies_by_default,
    deadline_seen_by_handler,
    client_cancels,
    rich_error_details,
);

// A second reply to a call that takes one: the spec's UNIMPLEMENTED from
// our client; grpc-js's client waits for its deadline.
with_grpcjs_server!(response_cardinality);
with_grpcjs_client!(response_cardinality_of_grpcjs_client);

// A string field that is not UTF-8: the spec's INTERNAL where our side
// parses it, grpc-js's lenient parse (documented beside each) where it does.
with_grpcjs_client!(unparseable_request, invalid_utf8_reply_accepted_by_grpcjs);
with_grpcjs_server!(unparseable_reply, invalid_utf8_request_accepted_by_grpcjs);
