//! The gRPC interoperability tests (gRPC's `doc/interop-test-descriptions.md`)
//! with grpc-blocking: the server side of `grpc.testing.TestService` and the
//! client's test cases.
//!
//! The `interop-server` and `interop-client` binaries are thin wrappers
//! around this module, and the integration tests (`tests/tests/interop.rs`)
//! call the same functions in-process:
//!
//! - [`InteropService`] implements `TestService` with every server feature
//!   the spec describes that needs no credentials: response sizes and types,
//!   echoed status, echoed metadata, `interval_us`, compressed responses and
//!   the check of compressed requests. [`server`] binds it.
//! - [`client::run_cases`] (also here as [`run_cases`]) runs named test
//!   cases against a server, each with its own timeout, and returns a
//!   [`client::Report`] whose last line is `N passed, M failed`.
//!
//! ```no_run
//! use grpc_blocking_examples::interop;
//! let server = interop::server(("127.0.0.1", 0))?.spawn()?;
//! let port = server.local_addr().port();
//! let report = interop::run_cases("127.0.0.1", port, interop::ALL_CASES);
//! println!("{report}");
//! assert_eq!(report.failed(), 0);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::net::ToSocketAddrs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grpc_blocking::server::{Requests, ResponseSink, ServerContext};
use grpc_blocking::{Code, Encoding, Metadata, Server, Status};

use crate::grpc::testing::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse, TestService, TestServiceServer,
};

pub mod client;

pub use client::{run_cases, CaseResult, ClientConfig, Report, ALL_CASES};

/// The request metadata key whose value the server echoes in its initial
/// metadata (response headers).
pub const ECHO_INITIAL_KEY: &str = "x-grpc-test-echo-initial";

/// The binary request metadata key whose value the server echoes in its
/// trailing metadata.
pub const ECHO_TRAILING_KEY: &str = "x-grpc-test-echo-trailing-bin";

/// A payload of `size` zero bytes, of the only type the servers know
/// (`COMPRESSABLE`).
pub fn zero_payload(size: usize) -> Payload {
    Payload {
        r#type: PayloadType::Compressable as i32,
        body: vec![0; size],
    }
}

/// Binds an interop server (serving [`InteropService`] as
/// `grpc.testing.TestService`, and nothing as
/// `grpc.testing.UnimplementedService`) to `addr`; port 0 picks a free one.
/// Call `serve()` or `spawn()` on the result.
pub fn server(addr: impl ToSocketAddrs) -> std::io::Result<Server> {
    server_builder().bind(addr)
}

/// A server builder with `grpc.testing.TestService` added, to set more
/// (TLS, a Unix socket) before binding.
pub fn server_builder() -> grpc_blocking::ServerBuilder {
    Server::builder().add_service(TestServiceServer::new(InteropService))
}

/// `grpc.testing.TestService` as the interop spec's server section describes
/// it. `UnimplementedCall` answers UNIMPLEMENTED, as the spec wants.
#[derive(Debug, Default, Clone, Copy)]
pub struct InteropService;

/// The metadata echo of one call: the trailing value is set at the start,
/// the initial value goes out with the response headers.
struct Echo {
    initial: Option<Metadata>,
}

impl Echo {
    /// Reads the echo keys from the request metadata and sets the trailing
    /// echo on the call.
    fn start(ctx: &ServerContext) -> Echo {
        if let Some(value) = ctx.metadata().get_bin(ECHO_TRAILING_KEY) {
            let mut trailing = Metadata::new();
            if trailing.insert_bin(ECHO_TRAILING_KEY, value).is_ok() {
                ctx.set_trailing_metadata(trailing);
            }
        }
        let initial = ctx.metadata().get(ECHO_INITIAL_KEY).and_then(|value| {
            let mut initial = Metadata::new();
            initial
                .insert(ECHO_INITIAL_KEY, value)
                .ok()
                .map(|()| initial)
        });
        Echo { initial }
    }

    /// Sends the response headers with the initial echo, once, if there is
    /// one (otherwise the first response sends plain headers).
    fn send_headers(&mut self, ctx: &ServerContext) -> Result<(), Status> {
        match self.initial.take() {
            Some(initial) => ctx.send_initial_metadata(initial),
            None => Ok(()),
        }
    }
}

/// The status a request asks for (`response_status`), if it asks for a
/// failing one.
fn echoed_status(status: Option<&EchoStatus>) -> Option<Status> {
    let status = status?;
    let code = Code::from_i32(status.code);
    (code != Code::Ok).then(|| Status::new(code, status.message.clone()))
}

/// Checks a request's `expect_compressed` against how the message arrived:
/// INVALID_ARGUMENT when it should have been compressed and was not, or the
/// other way round (as gRPC's reference C++ server does). An unset field
/// checks nothing.
fn check_compression(expect: Option<&BoolValue>, compressed: bool) -> Result<(), Status> {
    match expect.map(|e| e.value) {
        Some(true) if !compressed => Err(Status::invalid_argument(
            "expected a compressed request message, got an uncompressed one",
        )),
        Some(false) if compressed => Err(Status::invalid_argument(
            "expected an uncompressed request message, got a compressed one",
        )),
        _ => Ok(()),
    }
}

/// Checks the requested payload type (only `COMPRESSABLE` exists).
fn check_payload_type(response_type: i32) -> Result<(), Status> {
    if response_type == PayloadType::Compressable as i32 {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "unsupported response_type {response_type}"
        )))
    }
}

/// A requested payload size as a length; negative sizes are an error.
fn payload_size(size: i32) -> Result<usize, Status> {
    usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("negative response size {size}")))
}

/// Sets the response compression for a call whose responses follow
/// `parameters`: gzip when one of them asks for a compressed message.
fn compression_for(ctx: &ServerContext, parameters: &[ResponseParameters]) -> Result<(), Status> {
    if parameters
        .iter()
        .any(|p| p.compressed.is_some_and(|c| c.value))
    {
        ctx.set_compression(Encoding::Gzip)?;
    }
    Ok(())
}

/// Sends one streaming response shaped by `parameters`: after waiting its
/// `interval_us`, with its size, compressed or not as it asks.
fn send_sized(
    ctx: &ServerContext,
    responses: &mut ResponseSink<StreamingOutputCallResponse>,
    parameters: &ResponseParameters,
) -> Result<(), Status> {
    let size = payload_size(parameters.size)?;
    if let Ok(us) = u64::try_from(parameters.interval_us) {
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
    let response = StreamingOutputCallResponse {
        payload: Some(zero_payload(size)),
        peer_socket_address: String::new(),
    };
    match parameters.compressed.map(|c| c.value) {
        Some(false) => responses.send_uncompressed(response),
        Some(true) if ctx.compression() == Encoding::Identity => Err(Status::internal(
            "a compressed response was asked for after the response compression was settled",
        )),
        _ => responses.send(response),
    }
}

/// Answers one request of a streaming-output method: its echoed status, or
/// one response per response parameter. `echo` sends the headers before the
/// first response.
fn answer(
    request: &StreamingOutputCallRequest,
    ctx: &ServerContext,
    echo: &mut Echo,
    responses: &mut ResponseSink<StreamingOutputCallResponse>,
) -> Result<(), Status> {
    if let Some(status) = echoed_status(request.response_status.as_ref()) {
        return Err(status);
    }
    check_payload_type(request.response_type)?;
    if !request.response_parameters.is_empty() {
        // The compression can only be chosen before the headers go out: the
        // first request with responses chooses it; for later ones this fails
        // and what was chosen stays (`send_sized` reports a mismatch).
        let _ = compression_for(ctx, &request.response_parameters);
        echo.send_headers(ctx)?;
    }
    for parameters in &request.response_parameters {
        send_sized(ctx, responses, parameters)?;
    }
    Ok(())
}

impl TestService for InteropService {
    fn empty_call(&self, _request: Empty, ctx: &ServerContext) -> Result<Empty, Status> {
        Echo::start(ctx).send_headers(ctx)?;
        Ok(Empty {})
    }

    fn unary_call(
        &self,
        request: SimpleRequest,
        ctx: &ServerContext,
    ) -> Result<SimpleResponse, Status> {
        let mut echo = Echo::start(ctx);
        check_compression(request.expect_compressed.as_ref(), ctx.request_compressed())?;
        check_payload_type(request.response_type)?;
        let size = payload_size(request.response_size)?;
        match request.response_compressed.map(|c| c.value) {
            Some(true) => ctx.set_compression(Encoding::Gzip)?,
            Some(false) => ctx.set_compression(Encoding::Identity)?,
            None => {}
        }
        echo.send_headers(ctx)?;
        if let Some(status) = echoed_status(request.response_status.as_ref()) {
            return Err(status);
        }
        Ok(SimpleResponse {
            payload: Some(zero_payload(size)),
            ..SimpleResponse::default()
        })
    }

    fn cacheable_unary_call(
        &self,
        request: SimpleRequest,
        ctx: &ServerContext,
    ) -> Result<SimpleResponse, Status> {
        let mut echo = Echo::start(ctx);
        let mut headers = echo.initial.take().unwrap_or_default();
        // A caching proxy may keep the response for a minute.
        headers
            .insert("cache-control", "max-age=60, public")
            .map_err(|e| Status::internal(e.to_string()))?;
        ctx.send_initial_metadata(headers)?;
        if let Some(status) = echoed_status(request.response_status.as_ref()) {
            return Err(status);
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(SimpleResponse {
            payload: Some(Payload {
                r#type: PayloadType::Compressable as i32,
                body: nanos.to_string().into_bytes(),
            }),
            ..SimpleResponse::default()
        })
    }

    fn streaming_output_call(
        &self,
        request: StreamingOutputCallRequest,
        ctx: &ServerContext,
        responses: &mut ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let mut echo = Echo::start(ctx);
        if let Some(status) = echoed_status(request.response_status.as_ref()) {
            echo.send_headers(ctx)?;
            return Err(status);
        }
        check_payload_type(request.response_type)?;
        compression_for(ctx, &request.response_parameters)?;
        echo.send_headers(ctx)?;
        for parameters in &request.response_parameters {
            send_sized(ctx, responses, parameters)?;
        }
        Ok(())
    }

    fn streaming_input_call(
        &self,
        requests: Requests<StreamingInputCallRequest>,
        ctx: &ServerContext,
    ) -> Result<StreamingInputCallResponse, Status> {
        let mut echo = Echo::start(ctx);
        let mut total: usize = 0;
        for request in requests {
            let request = request?;
            check_compression(request.expect_compressed.as_ref(), ctx.request_compressed())?;
            total += request.payload.map_or(0, |p| p.body.len());
        }
        echo.send_headers(ctx)?;
        let aggregated_payload_size = i32::try_from(total)
            .map_err(|_| Status::out_of_range("the aggregated payload size overflows int32"))?;
        Ok(StreamingInputCallResponse {
            aggregated_payload_size,
        })
    }

    fn full_duplex_call(
        &self,
        requests: Requests<StreamingOutputCallRequest>,
        ctx: &ServerContext,
        responses: &mut ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let mut echo = Echo::start(ctx);
        for request in requests {
            let request = request?;
            if let Err(status) = answer(&request, ctx, &mut echo, responses) {
                // The echoed status still carries the echoed headers.
                echo.send_headers(ctx)?;
                return Err(status);
            }
        }
        echo.send_headers(ctx)
    }

    fn half_duplex_call(
        &self,
        requests: Requests<StreamingOutputCallRequest>,
        ctx: &ServerContext,
        responses: &mut ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let mut echo = Echo::start(ctx);
        let requests = requests.collect::<Result<Vec<_>, _>>()?;
        for request in &requests {
            if let Err(status) = answer(request, ctx, &mut echo, responses) {
                echo.send_headers(ctx)?;
                return Err(status);
            }
        }
        echo.send_headers(ctx)
    }

    fn unimplemented_call(&self, _request: Empty, _ctx: &ServerContext) -> Result<Empty, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is not implemented, on purpose",
        ))
    }
}
