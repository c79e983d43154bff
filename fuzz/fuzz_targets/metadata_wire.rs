//! Metadata, status message and status details through a real call over
//! loopback: the only public path to the crate-private wire decoding
//! (`Metadata::from_headers`, base64 `decode_binary`, `Status::from_headers`
//! with `decode_message`).
//!
//! One in-process server (started once) echoes the call's metadata back as
//! response headers (unless the input asks for a Trailers-Only response) and
//! ends the call with ABORTED, the request's text as the status message, the
//! input's details bytes, and the metadata again in the trailers.
//!
//! Invariants: whatever `Metadata` accepts (but `user-agent`, which the
//! client sets itself) arrives unchanged on the server and back on the
//! client, in the headers and the trailers (each name's values in order; the
//! interleaving of different names is not kept by HTTP/2 header maps, nor
//! asked for by gRPC); the status message and details arrive unchanged; no
//! call hangs (10 s timeout per call).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use grpc_blocking::server::{ServerCall, Service};
use grpc_blocking::{CallOptions, Channel, Code, Metadata, Server, ServerHandle, Status};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    pairs: Vec<(String, Vec<u8>)>,
    message: String,
    details: Vec<u8>,
    trailers_only: bool,
}

/// The request: the status message and details the server should answer
/// with, as a tiny protobuf message (`string` field 1, `bytes` field 2).
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(bytes = "vec", tag = "2")]
    details: Vec<u8>,
}

fn channel() -> &'static Channel {
    static SERVER: OnceLock<(ServerHandle, Channel)> = OnceLock::new();
    let (_, channel) = SERVER.get_or_init(|| {
        let server = Server::builder()
            .add_service(EchoWire)
            .bind("127.0.0.1:0")
            .expect("bind loopback")
            .spawn()
            .expect("start the server");
        let channel =
            Channel::connect(format!("http://{}", server.local_addr())).expect("connect");
        (server, channel)
    });
    channel
}

/// The echo service.
struct EchoWire;

impl Service for EchoWire {
    fn name(&self) -> &'static str {
        "fuzz.Echo"
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Echo", "TrailersOnly"]
    }
    fn call(&self, method: &str, call: ServerCall) {
        let trailers_only = method.ends_with("TrailersOnly");
        grpc_blocking::server::unary::<EchoRequest, EchoRequest, _>(call, |req, ctx| {
            // The client's own `user-agent` is metadata too; leave it out.
            let mut md = ctx.metadata().clone();
            md.remove("user-agent");
            if !trailers_only {
                ctx.send_initial_metadata(md.clone())?;
            }
            Err(
                Status::with_details(Code::Aborted, req.message, Bytes::from(req.details))
                    .with_metadata(md),
            )
        });
    }
}

/// Rough HTTP/2 header-list size (RFC 9113: name + value + 32 per field),
/// to stay under the 16 KiB default limits on both sides.
fn header_list_size(md: &Metadata) -> usize {
    md.iter()
        .map(|(n, v)| n.len() + 32 + v.as_bytes().len() * 4 / 3 + 4)
        .sum()
}

/// The pairs grouped by name, each name's values in their order: HTTP/2
/// headers (and `http::HeaderMap`) keep the order of the values of one name
/// but not the interleaving of different names, and gRPC only asks for the
/// former.
fn by_name(md: &Metadata) -> Vec<(String, grpc_blocking::MetadataValue)> {
    let mut pairs: Vec<_> = md.iter().map(|(n, v)| (n.to_owned(), v.clone())).collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

fuzz_target!(|input: Input| {
    let mut md = Metadata::new();
    for (name, value) in &input.pairs {
        // Names ending in -bin take the bytes; others take them as text when
        // they are text. Whatever Metadata refuses is simply left out.
        if name.eq_ignore_ascii_case("user-agent") {
            // The client sends its own; the echo leaves it out.
            continue;
        }
        if name.to_ascii_lowercase().ends_with("-bin") {
            let _ = md.insert_bin(name, value);
        } else if let Ok(text) = std::str::from_utf8(value) {
            let _ = md.insert(name, text);
        }
    }
    let size = header_list_size(&md) + input.message.len() * 3 + input.details.len() * 4 / 3;
    if size > 12 * 1024 {
        return;
    }
    let path = if input.trailers_only {
        "/fuzz.Echo/TrailersOnly"
    } else {
        "/fuzz.Echo/Echo"
    };
    let request = EchoRequest {
        message: input.message.clone(),
        details: input.details.clone(),
    };
    let mut call = channel().unary_start::<EchoRequest, EchoRequest>(
        path,
        request,
        CallOptions::new()
            .metadata(md.clone())
            .timeout(Duration::from_secs(10)),
    );
    let headers = call.headers();
    let status = call.wait().expect_err("the server always fails the call");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), input.message, "status message");
    assert_eq!(status.details(), &input.details[..], "status details");
    assert_eq!(
        by_name(status.metadata()),
        by_name(&md),
        "trailing metadata"
    );
    if !input.trailers_only {
        let headers = headers.expect("response headers");
        assert_eq!(by_name(&headers), by_name(&md), "initial metadata");
    }
});
