//! nameko-grpc's example service, `nameko.example`, implemented with
//! grpc-blocking, the client calls the `example-client` and `demo` binaries
//! make, a small shop service ([`shop`]) of the kind a new user writes
//! first, and the gRPC interop test service and client ([`interop`]).
//!
//! The binaries of this crate:
//! - `example-server --port N [--host H]` serves [`ExampleService`];
//! - `example-client --server_host H --server_port N` calls all four methods;
//! - `demo` does both in one process, on a free port;
//! - `bench` is a load generator for this service (or any server of the same
//!   proto, such as the tonic peer under `tests/peers/tonic`);
//! - `interop-server --port N [--host H]` serves the gRPC interop test
//!   service, and `interop-client --server_host H --server_port N
//!   --test_case NAME|all` runs the gRPC interop test cases (see
//!   [`interop`]);
//! - `shop` serves the shop and calls it from eight client threads;
//! - `fleet` runs three servers behind one round_robin channel, with health
//!   checking, a retry policy and a backend list the application updates.

use grpc_blocking::server::{Requests, ResponseSink, ServerContext};
use grpc_blocking::Status;

/// The code generated from every proto under `proto/` (see `build.rs`), one
/// module per proto package, nested as the packages are: `nameko`,
/// `acme::shop::v1`, `acme::common::v1`, `grpc::testing`.
pub mod proto {
    grpc_blocking::include_protos!();
}

pub use proto::{acme, grpc, nameko};

pub mod auth;
pub mod call_ids;
pub mod cli;
pub mod interop;
pub mod logging;
pub mod metrics;
pub mod shop;

use nameko::{Example, ExampleClient, ExampleReply, ExampleRequest};

/// `value` repeated `multiplier` times; a multiplier of 0 (unset) counts as 1.
fn repeated(request: &ExampleRequest) -> String {
    let times = usize::try_from(request.multiplier).unwrap_or(0).max(1);
    request.value.repeat(times)
}

/// The example service, with the behaviour nameko-grpc's documentation
/// describes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExampleService;

impl Example for ExampleService {
    fn unary_unary(
        &self,
        request: ExampleRequest,
        _ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        Ok(ExampleReply {
            message: repeated(&request),
            seqno: 0,
        })
    }

    fn unary_stream(
        &self,
        request: ExampleRequest,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        let message = repeated(&request);
        for seqno in 1..=2 {
            responses.send(ExampleReply {
                message: message.clone(),
                seqno,
            })?;
        }
        Ok(())
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        _ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let mut messages = Vec::new();
        for request in requests {
            messages.push(repeated(&request?));
        }
        Ok(ExampleReply {
            message: messages.join(","),
            seqno: 0,
        })
    }

    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for (index, request) in requests.enumerate() {
            responses.send(ExampleReply {
                message: repeated(&request?),
                seqno: i32::try_from(index + 1).unwrap_or(i32::MAX),
            })?;
        }
        Ok(())
    }
}

fn request(value: &str, multiplier: i32) -> ExampleRequest {
    ExampleRequest {
        value: value.to_owned(),
        multiplier,
    }
}

/// Calls all four methods once, printing each reply to stdout, as the
/// `example-client` and `demo` binaries do.
pub fn call_all_four(client: &ExampleClient) -> Result<(), Status> {
    let reply = client.unary_unary(request("A", 3))?;
    println!("unary_unary: {:?}", reply.message);

    for reply in client.unary_stream(request("B", 2)) {
        let reply = reply?;
        println!("unary_stream: {:?} (seqno {})", reply.message, reply.seqno);
    }

    let reply = client.stream_unary(vec![request("C", 1), request("D", 2), request("E", 3)])?;
    println!("stream_unary: {:?}", reply.message);

    for reply in client.stream_stream(vec![request("F", 1), request("G", 2), request("H", 0)]) {
        let reply = reply?;
        println!("stream_stream: {:?} (seqno {})", reply.message, reply.seqno);
    }
    Ok(())
}
