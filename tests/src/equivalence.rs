//! The equivalence tests' machinery (issues #3 and #9): our implementation
//! of the test service, and a driver that runs one call in any pairing of a
//! server and a client among grpcio (Python, C-core), grpc-js (Node.js) and
//! ours.
//!
//! A test builds a [`Call`] once and runs it through a [`Pairing`]; the
//! [`Outcome`] (status, the `x-` metadata of headers and trailers, replies)
//! has the same shape whoever the client was, so a test asserts one
//! expectation in every pairing. grpcio is the reference: where it and we
//! disagree, the tests hold grpcio's behaviour, unless the gRPC spec says
//! otherwise.
//!
//! The service's behaviour is specified in `tests/proto/equivalence.proto`;
//! [`EquivalenceService`] here, `tests/peers/python/server.py` and
//! `tests/peers/node/server.js` implement it identically, line for line
//! where they can (server.js lists what grpc-js cannot do).

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use grpc_blocking::error_details::{ErrorDetail, RpcStatus};
use grpc_blocking::server::{Requests, ResponseSink, ServerContext};
use grpc_blocking::{CallOptions, Channel, Code, Encoding, Metadata, MetadataValue, Status};
use prost::Message as _;
use serde_json::{json, Value};

use crate::node::{GrpcJsClient, GrpcJsServer};
use crate::peer_process::DriverClient;
use crate::python::{GrpcioClient, GrpcioServer};

/// The generated code of `tests/proto/equivalence.proto`.
pub mod proto {
    grpc_blocking::include_proto!("equivalence");
}

pub use proto::{
    Metadatum, Observation, ObserveQuery, Reply, ReplyAsText, Request, RequestAsBytes,
};

/// Wire paths of the test service.
pub mod paths {
    pub const UNARY_UNARY: &str = "/equivalence.Equivalence/unary_unary";
    pub const UNARY_STREAM: &str = "/equivalence.Equivalence/unary_stream";
    pub const STREAM_UNARY: &str = "/equivalence.Equivalence/stream_unary";
    pub const STREAM_STREAM: &str = "/equivalence.Equivalence/stream_stream";
    pub const OBSERVED: &str = "/equivalence.Equivalence/observed";
}

/// How long a rendezvous waits for its party.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an observing handler waits for its call to be cancelled.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest an `observed` query waits for its record.
const OBSERVED_WAIT_MAX: Duration = Duration::from_secs(60);
/// The deadline of a call that does not set its own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long past its deadline our client may take before the test fails.
const WATCHDOG_SLACK: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Payload helpers (shared with the Python server's definitions)

/// `n` payload bytes: byte i is i % 251.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc32_table();

/// CRC-32 as zlib computes it, continuing from `crc` (0 to start).
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = CRC32_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// CRC-32 of `data`, as `zlib.crc32(data)`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

// ---------------------------------------------------------------------------
// Our server of `equivalence.Equivalence`

/// Makes calls wait for each other: proves they run at the same time.
#[derive(Default)]
struct Rendezvous {
    arrived: Mutex<HashMap<String, usize>>,
    cond: Condvar,
}

impl Rendezvous {
    fn wait(&self, key: &str, count: usize) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived.entry(key.to_string()).or_insert(0) += 1;
        self.cond.notify_all();
        let (arrived, _) = self
            .cond
            .wait_timeout_while(arrived, RENDEZVOUS_TIMEOUT, |a| a[key] < count)
            .unwrap();
        arrived[key] >= count
    }
}

/// What observing handlers recorded, by key (see `observed` in the proto).
#[derive(Default)]
struct Observations {
    records: Mutex<HashMap<String, Observation>>,
    cond: Condvar,
}

impl Observations {
    fn put(&self, key: &str, update: impl FnOnce(&mut Observation)) {
        let mut records = self.records.lock().unwrap();
        update(records.entry(key.to_string()).or_default());
        self.cond.notify_all();
    }

    fn wait_done(&self, key: &str, timeout: Duration) -> Observation {
        let records = self.records.lock().unwrap();
        let (records, _) = self
            .cond
            .wait_timeout_while(records, timeout, |r| !r.get(key).is_some_and(|o| o.done))
            .unwrap();
        records.get(key).cloned().unwrap_or_default()
    }
}

/// The call's time remaining in ms, -1 without a deadline.
fn remaining_ms(ctx: &ServerContext) -> i64 {
    ctx.time_remaining()
        .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// grpc-blocking's implementation of `equivalence.Equivalence`.
#[derive(Default)]
pub struct EquivalenceService {
    rendezvous: Rendezvous,
    observations: Observations,
}

fn x_metadata(ctx: &ServerContext) -> Metadata {
    select_metadata(ctx, false)
}

/// The invocation metadata: the `x-` entries, or all of them.
fn select_metadata(ctx: &ServerContext, all: bool) -> Metadata {
    let mut md = Metadata::new();
    for (name, value) in ctx.metadata().iter() {
        if !all && !name.starts_with("x-") {
            continue;
        }
        match value {
            MetadataValue::Ascii(s) => md.insert(name, s).expect("valid ascii metadata"),
            MetadataValue::Binary(b) => md.insert_bin(name, b).expect("valid binary metadata"),
        }
    }
    md
}

fn as_metadata_list(md: &Metadata) -> Vec<Metadatum> {
    md.iter()
        .map(|(name, value)| Metadatum {
            name: name.to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

fn message_of(request: &Request) -> String {
    let times = if request.multiplier == 0 {
        1
    } else {
        request.multiplier
    };
    request.value.repeat(times.max(0) as usize)
}

fn fail_if_asked(request: &Request) -> Result<(), Status> {
    if !request.raise_message.is_empty() {
        panic!("{}", request.raise_message);
    }
    if !request.error_status.is_empty() {
        let rpc = RpcStatus::decode(request.error_status.as_slice())
            .expect("error_status is a serialized google.rpc.Status");
        let details = rpc
            .details
            .into_iter()
            .map(|any| ErrorDetail::from_any(any.clone()).unwrap_or(ErrorDetail::Other(any)));
        return Err(Status::with_error_details(
            Code::from_i32(rpc.code),
            rpc.message,
            details,
        ));
    }
    if request.status_code != 0 {
        return Err(Status::new(
            Code::from_i32(request.status_code),
            request.status_message.clone(),
        ));
    }
    Ok(())
}

fn reply(
    request: &Request,
    ctx: &ServerContext,
    md: &Metadata,
    message: String,
    seqno: i32,
    payload_len: usize,
    crc: u32,
) -> Reply {
    let payload = if request.echo_payload {
        request.payload.clone()
    } else {
        pattern(request.response_size.max(0) as usize)
    };
    let all;
    let md = if request.all_metadata {
        all = select_metadata(ctx, true);
        &all
    } else {
        md
    };
    Reply {
        message,
        seqno,
        payload,
        payload_len: payload_len as i64,
        payload_crc32: crc,
        received_metadata: as_metadata_list(md),
        request_compressed: request.report_compressed.then(|| ctx.request_compressed()),
    }
}

impl EquivalenceService {
    /// Steps 1 to 4 of the proto's description; returns the `x-` metadata.
    fn prepare(
        &self,
        request: &Request,
        ctx: &ServerContext,
        first: bool,
    ) -> Result<Metadata, Status> {
        let md = x_metadata(ctx);
        if request.rendezvous_count > 0
            && !self
                .rendezvous
                .wait(&request.rendezvous_key, request.rendezvous_count as usize)
        {
            return Err(Status::aborted("rendezvous timed out"));
        }
        if request.sleep_ms > 0 {
            thread::sleep(Duration::from_millis(request.sleep_ms as u64));
        }
        if first {
            if request.echo_initial {
                ctx.send_initial_metadata(md.clone())?;
            }
            if request.echo_trailing {
                ctx.set_trailing_metadata(md.clone());
            }
            if !request.response_compression.is_empty() {
                let encoding = Encoding::parse(&request.response_compression)
                    .expect("response_compression names a known encoding");
                ctx.set_compression(encoding)?;
            }
        }
        Ok(md)
    }

    /// Step 6: observe the call's deadline and cancellation.
    fn observe(&self, request: &Request, ctx: &ServerContext, headers_sent: bool) {
        let key = request.observe_key.as_str();
        if key.is_empty() {
            return;
        }
        let start = remaining_ms(ctx);
        self.observations.put(key, |o| {
            o.found = true;
            o.has_deadline = start >= 0;
            o.remaining_ms_at_start = start;
        });
        if !headers_sent {
            // Fails only once the call is over, which the loop below sees.
            let _ = ctx.send_initial_metadata(Metadata::new());
        }
        let give_up = Instant::now() + OBSERVE_TIMEOUT;
        while !ctx.is_cancelled() && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(5));
        }
        let cancelled = ctx.is_cancelled();
        let at_cancel = remaining_ms(ctx);
        self.observations.put(key, |o| {
            o.done = true;
            o.cancelled = cancelled;
            o.remaining_ms_at_cancel = at_cancel;
        });
    }
}

impl proto::Equivalence for EquivalenceService {
    fn unary_unary(&self, request: Request, ctx: &ServerContext) -> Result<Reply, Status> {
        let md = self.prepare(&request, ctx, true)?;
        self.observe(&request, ctx, request.echo_initial);
        fail_if_asked(&request)?;
        let message = message_of(&request);
        Ok(reply(
            &request,
            ctx,
            &md,
            message,
            0,
            request.payload.len(),
            crc32(&request.payload),
        ))
    }

    fn unary_stream(
        &self,
        request: Request,
        ctx: &ServerContext,
        responses: &mut ResponseSink<Reply>,
    ) -> Result<(), Status> {
        let md = self.prepare(&request, ctx, true)?;
        let count = request.response_count.unwrap_or(2);
        let message = message_of(&request);
        for i in 0..count {
            let r = reply(
                &request,
                ctx,
                &md,
                message.clone(),
                i + 1,
                request.payload.len(),
                crc32(&request.payload),
            );
            responses.send(r)?;
        }
        self.observe(&request, ctx, request.echo_initial || count > 0);
        fail_if_asked(&request)
    }

    fn stream_unary(
        &self,
        requests: Requests<Request>,
        ctx: &ServerContext,
    ) -> Result<Reply, Status> {
        let mut messages = Vec::new();
        let mut payload_len = 0;
        let mut crc = 0;
        let mut last = Request::default();
        let mut md = x_metadata(ctx);
        let mut headers_sent = false;
        for (index, request) in requests.enumerate() {
            let request = request?;
            md = self.prepare(&request, ctx, index == 0)?;
            headers_sent = headers_sent || (index == 0 && request.echo_initial);
            self.observe(&request, ctx, headers_sent);
            headers_sent = headers_sent || !request.observe_key.is_empty();
            fail_if_asked(&request)?;
            messages.push(message_of(&request));
            payload_len += request.payload.len();
            crc = crc32_update(crc, &request.payload);
            last = request;
        }
        Ok(reply(
            &last,
            ctx,
            &md,
            messages.join(","),
            0,
            payload_len,
            crc,
        ))
    }

    fn stream_stream(
        &self,
        requests: Requests<Request>,
        ctx: &ServerContext,
        responses: &mut ResponseSink<Reply>,
    ) -> Result<(), Status> {
        for (index, request) in requests.enumerate() {
            let request = request?;
            let md = self.prepare(&request, ctx, index == 0)?;
            fail_if_asked(&request)?;
            let message = message_of(&request);
            let r = reply(
                &request,
                ctx,
                &md,
                message,
                index as i32 + 1,
                request.payload.len(),
                crc32(&request.payload),
            );
            if request.reply_uncompressed {
                responses.send_uncompressed(r)?;
            } else {
                responses.send(r)?;
            }
            self.observe(&request, ctx, true);
        }
        Ok(())
    }

    fn observed(&self, query: ObserveQuery, _ctx: &ServerContext) -> Result<Observation, Status> {
        let wait = Duration::from_millis(query.wait_ms.max(0) as u64).min(OBSERVED_WAIT_MAX);
        Ok(self.observations.wait_done(&query.key, wait))
    }
}

// ---------------------------------------------------------------------------
// nameko-grpc's example service, `nameko.example`

use grpc_blocking_examples::nameko::ExampleServer;
pub use grpc_blocking_examples::nameko::{ExampleReply, ExampleRequest};
/// The examples crate's server of `nameko.example`: the one the issue asks to
/// check against grpcio.
pub use grpc_blocking_examples::ExampleService;

/// Wire paths of nameko-grpc's example service.
pub mod example_paths {
    pub const UNARY_UNARY: &str = "/nameko.example/unary_unary";
    pub const UNARY_STREAM: &str = "/nameko.example/unary_stream";
    pub const STREAM_UNARY: &str = "/nameko.example/stream_unary";
    pub const STREAM_STREAM: &str = "/nameko.example/stream_stream";
}

/// Our server: both services on 127.0.0.1, started once per test process.
pub fn our_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let server = grpc_blocking::Server::builder()
            .add_service(proto::EquivalenceServer::new(EquivalenceService::default()))
            .add_service(ExampleServer::new(ExampleService))
            .bind("127.0.0.1:0")
            .expect("bind our server");
        let handle = server.spawn().expect("start our server");
        let addr = handle.local_addr();
        // Serves until the test process ends.
        std::mem::forget(handle);
        addr
    })
}

// ---------------------------------------------------------------------------
// The driver

/// Which implementation plays a side of a pairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The official Python gRPC (grpcio), the reference.
    Grpcio,
    /// grpc-blocking.
    Ours,
    /// The official Node.js gRPC in pure JavaScript (@grpc/grpc-js).
    GrpcJs,
}

/// A proxy between a pairing's client and its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// nginx (`grpc_pass`), round-robin over three of our servers
    /// ([`crate::nginx::OursBehindNginx`]); our server only.
    Nginx,
}

impl Proxy {
    /// Its name in test messages.
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
        }
    }
}

impl Peer {
    /// Its name in test messages.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Grpcio => "grpcio",
            Peer::Ours => "ours",
            Peer::GrpcJs => "grpc-js",
        }
    }
}

/// The four call patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    UnaryUnary,
    UnaryStream,
    StreamUnary,
    StreamStream,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::UnaryUnary,
        Kind::UnaryStream,
        Kind::StreamUnary,
        Kind::StreamStream,
    ];

    /// grpcio's name for the pattern (also the test service's method name).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::UnaryUnary => "unary_unary",
            Kind::UnaryStream => "unary_stream",
            Kind::StreamUnary => "stream_unary",
            Kind::StreamStream => "stream_stream",
        }
    }

    /// The path of the test service's method of this pattern.
    pub fn path(self) -> &'static str {
        match self {
            Kind::UnaryUnary => paths::UNARY_UNARY,
            Kind::UnaryStream => paths::UNARY_STREAM,
            Kind::StreamUnary => paths::STREAM_UNARY,
            Kind::StreamStream => paths::STREAM_STREAM,
        }
    }

    pub fn streams_requests(self) -> bool {
        matches!(self, Kind::StreamUnary | Kind::StreamStream)
    }

    pub fn streams_responses(self) -> bool {
        matches!(self, Kind::UnaryStream | Kind::StreamStream)
    }
}

/// A metadata value as both clients report it.
#[derive(Clone, PartialEq, Eq)]
pub enum Md {
    Text(String),
    Bin(Vec<u8>),
}

impl fmt::Debug for Md {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Md::Text(s) => write!(f, "{s:?}"),
            Md::Bin(b) => write!(f, "bin{b:?}"),
        }
    }
}

/// Ordered metadata pairs.
pub type MdList = Vec<(String, Md)>;

/// ASCII metadata pairs.
pub fn text_md(pairs: &[(&str, &str)]) -> MdList {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Md::Text(v.to_string())))
        .collect()
}

/// The `x-` entries of a reply's `received_metadata`, as an [`MdList`].
pub fn received(reply: &Reply) -> MdList {
    reply
        .received_metadata
        .iter()
        .map(|m| {
            let value = if m.name.ends_with("-bin") {
                Md::Bin(m.value.clone())
            } else {
                Md::Text(String::from_utf8_lossy(&m.value).into_owned())
            };
            (m.name.clone(), value)
        })
        .collect()
}

fn only_x(md: MdList) -> MdList {
    md.into_iter()
        .filter(|(name, _)| name.starts_with("x-"))
        .collect()
}

fn md_from_ours(md: &Metadata) -> MdList {
    md.iter()
        .map(|(name, value)| {
            let value = match value {
                MetadataValue::Ascii(s) => Md::Text(s.clone()),
                MetadataValue::Binary(b) => Md::Bin(b.clone()),
            };
            (name.to_string(), value)
        })
        .collect()
}

fn md_to_ours(md: &MdList) -> Metadata {
    let mut out = Metadata::new();
    for (name, value) in md {
        match value {
            Md::Text(s) => out.insert(name, s),
            Md::Bin(b) => out.insert_bin(name, b),
        }
        .unwrap_or_else(|e| panic!("our client refuses metadata {name}: {e:?}"));
    }
    out
}

fn md_to_json(md: &MdList) -> Value {
    Value::Array(
        md.iter()
            .map(|(name, value)| match value {
                Md::Text(s) => json!({"name": name, "text": s}),
                Md::Bin(b) => json!({"name": name, "bin": BASE64.encode(b)}),
            })
            .collect(),
    )
}

fn md_from_json(value: &Value) -> MdList {
    let mut out = Vec::new();
    for item in value.as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
        let name = item["name"].as_str().unwrap_or_default().to_string();
        let value = match (item.get("bin"), item.get("text")) {
            (Some(b), _) => Md::Bin(
                BASE64
                    .decode(b.as_str().unwrap_or_default())
                    .expect("base64 metadata"),
            ),
            (None, Some(t)) => Md::Text(t.as_str().unwrap_or_default().to_string()),
            (None, None) => panic!("bad metadata item {item}"),
        };
        out.push((name, value));
    }
    out
}

/// One call, described independently of the client that makes it.
#[derive(Clone, Debug)]
pub struct Call<Req> {
    pub path: &'static str,
    pub kind: Kind,
    pub requests: Vec<Req>,
    pub metadata: MdList,
    pub timeout: Duration,
    /// stream_stream only: send request i+1 only after reply i arrived.
    pub pingpong: bool,
    /// grpcio client: send the encoded requests as they are, through a raw
    /// multi-callable, even to a method of its stubs (our client always
    /// sends what `Req` encodes to).
    pub raw: bool,
    /// grpcio client: the full proto name of `Resp`, when it is not the
    /// method's reply type (grpcio then parses replies as that type).
    pub response_type: Option<&'static str>,
    /// Whether the call has a deadline, `timeout` after it starts. Without
    /// one, `timeout` still bounds how long the test waits for the call.
    pub deadline: bool,
    /// The call's compression of its requests (grpcio:
    /// `compression=` of the call; ours: [`CallOptions::compression`]).
    pub compression: Option<Encoding>,
    /// Make the call on a channel of its own whose default compression is
    /// this (grpcio: `grpc.insecure_channel(..., compression=...)`; ours:
    /// `ChannelBuilder::default_compression`).
    pub channel_compression: Option<Encoding>,
    /// Make the call on a channel of its own through a [`WireTap`], and
    /// report the bytes that went each way in [`Outcome::wire`].
    pub count_wire: bool,
    /// Cancel the call once this many replies arrived (0: once the response
    /// headers did), its request stream still open (grpcio: `call.cancel()`;
    /// ours: `UnaryCall::cancel`, `Streaming::cancel`).
    pub cancel_after: Option<usize>,
}

impl<Req> Call<Req> {
    pub fn new(path: &'static str, kind: Kind, requests: Vec<Req>) -> Self {
        Call {
            path,
            kind,
            requests,
            metadata: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            pingpong: false,
            raw: false,
            response_type: None,
            deadline: true,
            compression: None,
            channel_compression: None,
            count_wire: false,
            cancel_after: None,
        }
    }

    /// No deadline (see [`Call::deadline`]).
    pub fn no_deadline(mut self) -> Self {
        self.deadline = false;
        self
    }

    /// See [`Call::compression`].
    pub fn compression(mut self, encoding: Encoding) -> Self {
        self.compression = Some(encoding);
        self
    }

    /// See [`Call::channel_compression`].
    pub fn channel_compression(mut self, encoding: Encoding) -> Self {
        self.channel_compression = Some(encoding);
        self
    }

    /// See [`Call::count_wire`].
    pub fn count_wire(mut self) -> Self {
        self.count_wire = true;
        self
    }

    /// See [`Call::cancel_after`].
    pub fn cancel_after(mut self, replies: usize) -> Self {
        self.cancel_after = Some(replies);
        self
    }

    /// Whether the call needs a channel of its own.
    fn own_channel(&self) -> bool {
        self.count_wire || self.channel_compression.is_some()
    }

    pub fn metadata(mut self, md: MdList) -> Self {
        self.metadata = md;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn pingpong(mut self) -> Self {
        self.pingpong = true;
        self
    }

    /// See [`Call::raw`].
    pub fn raw(mut self) -> Self {
        self.raw = true;
        self
    }

    /// See [`Call::response_type`].
    pub fn response_type(mut self, full_name: &'static str) -> Self {
        self.response_type = Some(full_name);
        self
    }
}

impl Call<Request> {
    /// A call of the test service's method of `kind`.
    pub fn to(kind: Kind, requests: Vec<Request>) -> Self {
        Call::new(kind.path(), kind, requests)
    }
}

/// How a call ended, as either client saw it. `headers` and `trailers` keep
/// only the `x-` entries (the ones the tests send), in order; `all_headers`
/// and `all_trailers` are everything the client's API shows.
#[derive(Clone, Debug)]
pub struct Outcome<Resp> {
    pub code: Code,
    pub message: String,
    pub headers: MdList,
    pub trailers: MdList,
    pub all_headers: MdList,
    pub all_trailers: MdList,
    pub responses: Vec<Resp>,
    /// Whether each reply arrived with its compressed flag set (ours:
    /// `Response::compressed`, `Streaming::last_message_compressed`); `None`
    /// from grpcio, whose API does not show it.
    pub responses_compressed: Option<Vec<bool>>,
    /// The `google.rpc.Status` of the status's details (grpcio:
    /// `grpc_status.rpc_status.from_call`; ours: `Status::rpc_status`).
    pub rich_status: Option<RpcStatus>,
    /// Its details, unpacked (ours: `Status::error_details`; grpcio's: the
    /// `Any`s `from_call` gave, unpacked with `ErrorDetail::from_any`).
    pub error_details: Vec<ErrorDetail>,
    /// Bytes on the wire each way, with [`Call::count_wire`].
    pub wire: Option<WireBytes>,
}

impl<Resp> Outcome<Resp> {
    fn new(
        code: Code,
        message: String,
        all_headers: MdList,
        all_trailers: MdList,
        responses: Vec<Resp>,
    ) -> Self {
        Outcome {
            code,
            message,
            headers: only_x(all_headers.clone()),
            trailers: only_x(all_trailers.clone()),
            all_headers,
            all_trailers,
            responses,
            responses_compressed: None,
            rich_status: None,
            error_details: Vec::new(),
            wire: None,
        }
    }
}

impl<Resp: fmt::Debug> Outcome<Resp> {
    /// The replies of a call that must have succeeded.
    #[track_caller]
    pub fn ok(self) -> Vec<Resp> {
        assert_eq!(
            self.code,
            Code::Ok,
            "call failed: {} {:?}",
            self.code,
            self.message
        );
        self.responses
    }

    /// The only reply of a call that must have succeeded with one reply.
    #[track_caller]
    pub fn single(self) -> Resp {
        let mut responses = self.ok();
        assert_eq!(responses.len(), 1, "expected one reply, got {responses:?}");
        responses.pop().unwrap()
    }

    /// Asserts the call failed with `code` and `message`.
    #[track_caller]
    pub fn assert_status(&self, code: Code, message: &str) {
        assert_eq!(
            (self.code, self.message.as_str()),
            (code, message),
            "status of {self:?}"
        );
    }
}

/// A client and a server, and the proxy between them if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pairing {
    pub server: Peer,
    pub client: Peer,
    pub proxy: Option<Proxy>,
}

impl fmt::Display for Pairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} client -> ", self.client.name())?;
        if let Some(proxy) = self.proxy {
            write!(f, "{} -> ", proxy.name())?;
        }
        write!(f, "{} server", self.server.name())
    }
}

impl Pairing {
    pub const ALL: [Pairing; 4] = [
        Pairing::new(Peer::Grpcio, Peer::Grpcio),
        Pairing::new(Peer::Grpcio, Peer::Ours),
        Pairing::new(Peer::Ours, Peer::Grpcio),
        Pairing::new(Peer::Ours, Peer::Ours),
    ];

    pub const fn new(server: Peer, client: Peer) -> Pairing {
        Pairing {
            server,
            client,
            proxy: None,
        }
    }

    /// The same client and server, with `proxy` between them.
    pub const fn via(self, proxy: Proxy) -> Pairing {
        Pairing {
            proxy: Some(proxy),
            ..self
        }
    }

    /// Where the client connects: the server's address, or the proxy's in
    /// front of it; starting them (once per process) if needed.
    pub fn server_addr(&self) -> SocketAddr {
        match (self.proxy, self.server) {
            (None, Peer::Grpcio) => GrpcioServer::shared().addr(),
            (None, Peer::Ours) => our_server(),
            (None, Peer::GrpcJs) => GrpcJsServer::shared().addr(),
            (Some(Proxy::Nginx), Peer::Ours) => crate::nginx::OursBehindNginx::shared().addr(),
            (Some(proxy), server) => panic!(
                "{} fronts our servers only, not {}",
                proxy.name(),
                server.name()
            ),
        }
    }

    /// Makes the call with this pairing's client against its server.
    pub fn call<Req, Resp>(&self, call: Call<Req>) -> Outcome<Resp>
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        self.call_at(self.server_addr(), call)
    }

    /// Makes the call with this pairing's client to `addr`, a server (or
    /// proxy) of the tests' own rather than the pairing's shared one.
    pub fn call_at<Req, Resp>(&self, addr: SocketAddr, call: Call<Req>) -> Outcome<Resp>
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let tap = call.count_wire.then(|| WireTap::start(addr));
        let target = tap.as_ref().map_or(addr, |t| t.addr());
        let mut outcome = match self.client {
            Peer::Grpcio => driver_call(
                GrpcioClient::shared().driver(),
                GrpcioClient::slack(),
                target,
                call,
            ),
            Peer::Ours => our_call(target, call),
            Peer::GrpcJs => driver_call(
                GrpcJsClient::shared().driver(),
                GrpcJsClient::slack(),
                target,
                call,
            ),
        };
        outcome.wire = tap.map(|t| t.bytes());
        outcome
    }

    /// What the handler of the call with `observe_key` = `key` observed
    /// (`observed`, asked through this pairing's client): waits until that
    /// handler is done observing, up to 40 s (it gives up after 30 s).
    pub fn observed(&self, key: &str) -> Observation {
        let query = ObserveQuery {
            key: key.to_string(),
            wait_ms: 40_000,
        };
        let out =
            self.call::<_, Observation>(Call::new(paths::OBSERVED, Kind::UnaryUnary, vec![query]));
        assert_eq!(out.code, Code::Ok, "{self}: observed({key}): {out:?}");
        out.responses
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{self}: observed({key}) without a reply"))
    }

    /// Shorthand: a call of the test service's method of `kind`.
    pub fn run(&self, kind: Kind, requests: Vec<Request>) -> Outcome<Reply> {
        self.call(Call::to(kind, requests))
    }
}

/// A call made by a peer's driver client (grpcio's `client.py serve`,
/// grpc-js's `client.js serve`: the same protocol).
fn driver_call<Req, Resp>(
    client: &DriverClient,
    slack: Duration,
    addr: SocketAddr,
    call: Call<Req>,
) -> Outcome<Resp>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let command = json!({
        "op": "call",
        "target": addr.to_string(),
        "path": call.path,
        "kind": call.kind.as_str(),
        "requests": call.requests.iter().map(|r| BASE64.encode(r.encode_to_vec())).collect::<Vec<_>>(),
        "metadata": md_to_json(&call.metadata),
        "timeout": call.deadline.then_some(call.timeout.as_secs_f64()),
        "pingpong": call.pingpong,
        "raw": call.raw,
        "response_type": call.response_type,
        "compression": call.compression.map(Encoding::as_str),
        "fresh_channel": call.own_channel(),
        "channel_compression": call.channel_compression.map(Encoding::as_str),
        "cancel_after": call.cancel_after,
    });
    let answer = client
        .request(command, call.timeout + slack)
        .unwrap_or_else(|e| panic!("{e}"));
    let decode = |value: &Value| -> Vec<u8> {
        BASE64
            .decode(value.as_str().expect("base64 string"))
            .expect("base64")
    };
    let responses = answer["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .map(|r| {
            Resp::decode(decode(r).as_slice())
                .expect("the peer's client returned a reply we cannot decode")
        })
        .collect();
    let mut outcome = Outcome::new(
        Code::from_i32(answer["code"].as_i64().expect("code") as i32),
        answer["details"].as_str().unwrap_or_default().to_string(),
        md_from_json(&answer["headers"]),
        md_from_json(&answer["trailers"]),
        responses,
    );
    if !answer["rich_status"].is_null() {
        let rpc = RpcStatus::decode(decode(&answer["rich_status"]).as_slice())
            .expect("the peer's rich status decodes as google.rpc.Status");
        // grpcio's `rpc_status.from_call` checks this itself; grpc-js has no
        // such helper.
        assert_eq!(
            (rpc.code, rpc.message.as_str()),
            (outcome.code.as_i32(), outcome.message.as_str()),
            "the details' google.rpc.Status is not the call's status"
        );
        outcome.error_details = rpc
            .details
            .iter()
            .map(|any| {
                ErrorDetail::from_any(any.clone())
                    .unwrap_or_else(|e| panic!("a detail the peer returned: {any:?}: {e}"))
            })
            .collect();
        outcome.rich_status = Some(rpc);
    }
    outcome
}

/// Our client's channel to `addr`: one per server, shared by all calls (as
/// the grpcio client shares one channel per target).
pub fn our_channel(addr: SocketAddr) -> Channel {
    static CHANNELS: OnceLock<Mutex<HashMap<SocketAddr, Channel>>> = OnceLock::new();
    let mut channels = CHANNELS.get_or_init(Default::default).lock().unwrap();
    channels
        .entry(addr)
        .or_insert_with(|| {
            Channel::connect(format!("http://{addr}"))
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
        })
        .clone()
}

/// Runs `f` on its own thread and fails the test if it has not finished
/// within `timeout` (a hang must fail, not stall the run).
pub fn with_watchdog<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("watched: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn watched thread");
    match rx.recv_timeout(timeout) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish within {timeout:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what} panicked (see its message above)")
        }
    }
}

fn our_call<Req, Resp>(addr: SocketAddr, call: Call<Req>) -> Outcome<Resp>
where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let what = format!("our client's {} call to {}", call.kind.as_str(), call.path);
    with_watchdog(&what, call.timeout + WATCHDOG_SLACK, move || {
        // A channel of its own is dropped (closed) with this closure.
        let channel = if call.own_channel() {
            let mut builder = Channel::builder(format!("http://{addr}"));
            if let Some(encoding) = call.channel_compression {
                builder = builder.default_compression(encoding);
            }
            builder
                .connect()
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
        } else {
            our_channel(addr)
        };
        our_call_inner(&channel, call)
    })
}

fn failed<Resp>(status: Status, headers: MdList, responses: Vec<Resp>) -> Outcome<Resp> {
    let mut outcome = Outcome::new(
        status.code(),
        status.message().to_string(),
        headers,
        md_from_ours(status.metadata()),
        responses,
    );
    outcome.rich_status = status
        .rpc_status()
        .unwrap_or_else(|e| panic!("our client cannot decode the details of {status:?}: {e}"));
    outcome.error_details = status
        .error_details()
        .unwrap_or_else(|e| panic!("our client cannot unpack the details of {status:?}: {e}"));
    outcome
}

fn our_call_inner<Req, Resp>(channel: &Channel, call: Call<Req>) -> Outcome<Resp>
where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let mut options = CallOptions::new().metadata(md_to_ours(&call.metadata));
    if call.deadline {
        options = options.timeout(call.timeout);
    }
    if let Some(encoding) = call.compression {
        options = options.compression(encoding);
    }
    if let Some(after) = call.cancel_after {
        return our_call_cancelled(channel, call, options, after);
    }
    let mut requests = call.requests;
    match call.kind {
        Kind::UnaryUnary | Kind::StreamUnary => {
            let mut pending = if call.kind == Kind::UnaryUnary {
                assert_eq!(requests.len(), 1, "unary_unary takes one request");
                channel.unary_start::<Req, Resp>(call.path, requests.remove(0), options)
            } else {
                channel.client_streaming_start::<Req, Resp, _>(call.path, requests, options)
            };
            let headers = pending
                .headers()
                .map(|md| md_from_ours(&md))
                .unwrap_or_default();
            match pending.wait_response() {
                Ok(response) => {
                    let mut outcome = Outcome::new(
                        Code::Ok,
                        String::new(),
                        md_from_ours(&response.headers),
                        md_from_ours(&response.trailers),
                        vec![response.message],
                    );
                    outcome.responses_compressed = Some(vec![response.compressed]);
                    outcome
                }
                Err(status) => failed(status, headers, Vec::new()),
            }
        }
        Kind::UnaryStream | Kind::StreamStream if !call.pingpong => {
            let stream = if call.kind == Kind::UnaryStream {
                assert_eq!(requests.len(), 1, "unary_stream takes one request");
                channel.server_streaming::<Req, Resp>(call.path, requests.remove(0), options)
            } else {
                channel.bidi_streaming::<Req, Resp, _>(call.path, requests, options)
            };
            drain(stream, Vec::new(), Vec::new())
        }
        Kind::UnaryStream => panic!("pingpong is for stream_stream calls"),
        Kind::StreamStream => {
            let (mut sink, mut stream) =
                channel.bidi_streaming_sender::<Req, Resp>(call.path, options);
            let mut responses = Vec::new();
            let mut compressed = Vec::new();
            for request in requests {
                if sink.send(request).is_err() {
                    // The call is over; the stream says how.
                    break;
                }
                match stream.next() {
                    Some(Ok(response)) => {
                        responses.push(response);
                        compressed.push(stream.last_message_compressed());
                    }
                    Some(Err(status)) => {
                        let headers = stream
                            .headers()
                            .map(|md| md_from_ours(&md))
                            .unwrap_or_default();
                        return failed(status, headers, responses);
                    }
                    None => break,
                }
            }
            sink.finish();
            drain(stream, responses, compressed)
        }
    }
}

/// A call cancelled by our client once `after` replies arrived (0: once the
/// response headers did), its request stream still open; the outcome is
/// what the call reports after the cancel.
fn our_call_cancelled<Req, Resp>(
    channel: &Channel,
    call: Call<Req>,
    options: CallOptions,
    after: usize,
) -> Outcome<Resp>
where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let mut requests = call.requests;
    match call.kind {
        Kind::UnaryUnary | Kind::StreamUnary => {
            assert_eq!(
                after, 0,
                "a call with one reply is cancelled after its headers"
            );
            let (sink, mut pending) = if call.kind == Kind::UnaryUnary {
                assert_eq!(requests.len(), 1, "unary_unary takes one request");
                let pending =
                    channel.unary_start::<Req, Resp>(call.path, requests.remove(0), options);
                (None, pending)
            } else {
                let (mut sink, pending) =
                    channel.client_streaming_sender::<Req, Resp>(call.path, options);
                for request in requests {
                    if sink.send(request).is_err() {
                        break;
                    }
                }
                (Some(sink), pending)
            };
            let headers = match pending.headers() {
                Ok(md) => md_from_ours(&md),
                Err(status) => return failed(status, Vec::new(), Vec::new()),
            };
            pending.cancel();
            drop(sink);
            match pending.wait_response() {
                Ok(response) => Outcome::new(
                    Code::Ok,
                    String::new(),
                    md_from_ours(&response.headers),
                    md_from_ours(&response.trailers),
                    vec![response.message],
                ),
                Err(status) => failed(status, headers, Vec::new()),
            }
        }
        Kind::UnaryStream | Kind::StreamStream => {
            let (sink, mut stream) = if call.kind == Kind::UnaryStream {
                assert_eq!(requests.len(), 1, "unary_stream takes one request");
                let stream =
                    channel.server_streaming::<Req, Resp>(call.path, requests.remove(0), options);
                (None, stream)
            } else {
                let (mut sink, stream) =
                    channel.bidi_streaming_sender::<Req, Resp>(call.path, options);
                for request in requests {
                    if sink.send(request).is_err() {
                        break;
                    }
                }
                (Some(sink), stream)
            };
            let headers = match stream.headers() {
                Ok(md) => md_from_ours(&md),
                Err(status) => return failed(status, Vec::new(), Vec::new()),
            };
            let mut responses = Vec::new();
            let mut compressed = Vec::new();
            while responses.len() < after {
                match stream.next() {
                    Some(Ok(response)) => {
                        responses.push(response);
                        compressed.push(stream.last_message_compressed());
                    }
                    Some(Err(status)) => return failed(status, headers, responses),
                    // The call ended before the cancel: drain says how.
                    None => break,
                }
            }
            stream.cancel();
            drop(sink);
            drain(stream, responses, compressed)
        }
    }
}

/// Reads a response stream to its end.
fn drain<Resp>(
    mut stream: grpc_blocking::Streaming<Resp>,
    mut responses: Vec<Resp>,
    mut compressed: Vec<bool>,
) -> Outcome<Resp>
where
    Resp: prost::Message + Default + Send + 'static,
{
    let headers = stream.headers();
    let mut error = None;
    while let Some(item) = stream.next() {
        match item {
            Ok(response) => {
                responses.push(response);
                compressed.push(stream.last_message_compressed());
            }
            Err(status) => {
                error = Some(status);
                break;
            }
        }
    }
    let (headers, header_error) = match headers {
        Ok(md) => (md_from_ours(&md), None),
        Err(status) => (Vec::new(), Some(status)),
    };
    let mut outcome = match error.or(header_error) {
        Some(status) => failed(status, headers, responses),
        None => {
            let trailers = stream.trailers().map(md_from_ours).unwrap_or_default();
            Outcome::new(Code::Ok, String::new(), headers, trailers, responses)
        }
    };
    outcome.responses_compressed = Some(compressed);
    outcome
}

// ---------------------------------------------------------------------------
// Bytes on the wire

/// Bytes that went through a [`WireTap`]: `up` from the client to the
/// server, `down` back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireBytes {
    pub up: u64,
    pub down: u64,
}

/// A TCP proxy in front of a server that counts the bytes each way: the one
/// view of compression that needs neither side's API (grpcio shows no
/// compressed flag, on either side). A byte is counted before it is passed
/// on, so whatever a peer has received is counted.
pub struct WireTap {
    addr: SocketAddr,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl WireTap {
    /// A proxy on a free port of 127.0.0.1 to `target`.
    pub fn start(target: SocketAddr) -> WireTap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the wire tap");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the wire tap's address");
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (up, down, stop, sockets) =
                (up.clone(), down.clone(), stop.clone(), sockets.clone());
            thread::Builder::new()
                .name("wire tap".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let client = match listener.accept() {
                            Ok((client, _)) => client,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                thread::sleep(Duration::from_millis(5));
                                continue;
                            }
                            Err(_) => break,
                        };
                        let server =
                            match TcpStream::connect_timeout(&target, Duration::from_secs(20)) {
                                Ok(server) => server,
                                Err(_) => continue,
                            };
                        let _ = client.set_nonblocking(false);
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let clones = (client.try_clone(), server.try_clone());
                        let (Ok(client2), Ok(server2)) = clones else {
                            continue;
                        };
                        {
                            let mut all = sockets.lock().unwrap();
                            if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                                all.push(c);
                                all.push(s);
                            }
                        }
                        pump(client, server2, up.clone());
                        pump(server, client2, down.clone());
                    }
                })
                .expect("spawn the wire tap")
        };
        WireTap {
            addr,
            up,
            down,
            stop,
            sockets,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bytes so far.
    pub fn bytes(&self) -> WireBytes {
        WireBytes {
            up: self.up.load(Ordering::Acquire),
            down: self.down.load(Ordering::Acquire),
        }
    }
}

/// Copies `from` to `to`, counting, until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, count: Arc<AtomicU64>) {
    let spawned = thread::Builder::new()
        .name("wire tap pump".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                count.fetch_add(n as u64, Ordering::AcqRel);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
    spawned.expect("spawn a wire tap pump");
}

impl Drop for WireTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
