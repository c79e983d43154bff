//! A gRPC server written frame by frame over plain TCP that records every
//! frame its clients send: type, flags, stream, length, and the decoded
//! header block of HEADERS. The half-close tests (`tests/half_close.rs`)
//! read the record to see exactly how a client ends its request streams,
//! which a server built on an HTTP/2 library cannot show (h2's server API
//! reports the end of a request body, not which frame carried it).
//!
//! It insists on the form grpc/grpc `doc/PROTOCOL-HTTP2.md` prescribes: "In
//! scenarios where the Request stream needs to be closed but no data remains
//! to be sent implementations MUST send an empty DATA frame with this flag
//! set." A request whose HEADERS carry END_STREAM is answered at once with
//! INTERNAL ([`HEADERS_END_STREAM_MESSAGE`]), so an offending client fails
//! loudly instead of hanging (as it did against grpc-go 1.33, issue #9).
//!
//! Any other request is answered when it ends (END_STREAM on DATA): the
//! response headers, one message per request message (the request's bytes
//! echoed back) for methods whose path ends in `_stream`, else exactly one
//! message, the encoding of `nameko.example`'s `ExampleReply` with `seqno`
//! set to the number of request messages; then `grpc-status: 0`. (An
//! `ExampleRequest` echoed back reads as an `ExampleReply` with `message`
//! = `value` and `seqno` = `multiplier`: the two share field numbers and
//! types.) A request reset by the client (RST_STREAM) is not answered.
//!
//! The recorder may advertise `SETTINGS_MAX_CONCURRENT_STREAMS`, so that a
//! client's new calls must wait for a free stream.

use std::collections::HashMap;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use grpc_blocking_examples::nameko::ExampleReply;
use prost::Message as _;

use crate::raw::{
    data, encode_owned, flag, grpc_frame, header, header_frames, kind, ping, setting, settings,
    settings_ack, window_update, Frame, HeaderList, HpackDecoder, RawConn, DEFAULT_MAX_FRAME,
    PREFACE,
};

/// The `grpc-message` of the answer to a request whose HEADERS carried
/// END_STREAM.
pub const HEADERS_END_STREAM_MESSAGE: &str =
    "the request HEADERS carried END_STREAM; PROTOCOL-HTTP2.md requires an empty DATA frame with END_STREAM instead";

/// How long a connection thread waits for a frame before it checks whether
/// the recorder is being dropped.
const POLL: Duration = Duration::from_millis(200);

/// One frame a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Which connection (0 for the first one accepted, and so on).
    pub conn: usize,
    /// The frame type (see [`kind`]).
    pub kind: u8,
    /// The flags.
    pub flags: u8,
    /// The stream id (0: the connection).
    pub stream: u32,
    /// The payload length.
    pub len: usize,
    /// For the frame that completes a header block (HEADERS with
    /// END_HEADERS, or its last CONTINUATION): the decoded fields.
    pub fields: Option<HeaderList>,
    /// For RST_STREAM: the error code.
    pub reset_code: Option<u32>,
}

impl Recorded {
    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// A short form for failure messages: `HEADERS(0x5)`, `DATA[0](0x1)`.
    pub fn short(&self) -> String {
        let name = match self.kind {
            kind::DATA => "DATA",
            kind::HEADERS => "HEADERS",
            kind::PRIORITY => "PRIORITY",
            kind::RST_STREAM => "RST_STREAM",
            kind::SETTINGS => "SETTINGS",
            kind::PING => "PING",
            kind::GOAWAY => "GOAWAY",
            kind::WINDOW_UPDATE => "WINDOW_UPDATE",
            kind::CONTINUATION => "CONTINUATION",
            _ => "OTHER",
        };
        if self.kind == kind::DATA {
            format!("{name}[{}](0x{:x})", self.len, self.flags)
        } else {
            format!("{name}(0x{:x})", self.flags)
        }
    }
}

/// What the recorder knows, shared with its connection threads.
#[derive(Default)]
struct Shared {
    frames: Mutex<Vec<Recorded>>,
    changed: Condvar,
}

impl Shared {
    fn record(&self, frame: Recorded) {
        self.frames.lock().unwrap().push(frame);
        self.changed.notify_all();
    }
}

/// The recording server, on a free port of 127.0.0.1; it stops (closing
/// every connection) when dropped.
pub struct FrameRecorder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl FrameRecorder {
    /// A recorder with no limit on concurrent streams.
    pub fn start() -> FrameRecorder {
        FrameRecorder::with_max_concurrent_streams(None)
    }

    /// A recorder that advertises `SETTINGS_MAX_CONCURRENT_STREAMS` = `max`
    /// (when given).
    pub fn with_max_concurrent_streams(max: Option<u32>) -> FrameRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the frame recorder");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the recorder's address");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (shared, stop, sockets) = (shared.clone(), stop.clone(), sockets.clone());
            thread::Builder::new()
                .name("frame recorder".into())
                .spawn(move || {
                    let mut next = 0;
                    while !stop.load(Ordering::Acquire) {
                        let socket = match listener.accept() {
                            Ok((socket, _)) => socket,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                thread::sleep(Duration::from_millis(2));
                                continue;
                            }
                            Err(_) => break,
                        };
                        let _ = socket.set_nonblocking(false);
                        if let Ok(s) = socket.try_clone() {
                            sockets.lock().unwrap().push(s);
                        }
                        let index = next;
                        next += 1;
                        let (shared, stop) = (shared.clone(), stop.clone());
                        let spawned = thread::Builder::new()
                            .name(format!("frame recorder conn {index}"))
                            .spawn(move || serve_conn(socket, index, max, &shared, &stop));
                        spawned.expect("spawn a recorder connection thread");
                    }
                })
                .expect("spawn the frame recorder")
        };
        FrameRecorder {
            addr,
            shared,
            stop,
            sockets,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every frame recorded so far, in the order each connection sent them.
    pub fn frames(&self) -> Vec<Recorded> {
        self.shared.frames.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) until `done` holds for the frames recorded
    /// so far; returns them, or panics with `what` and the record.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let frames = self.shared.frames.lock().unwrap();
        let (frames, _) = self
            .shared
            .changed
            .wait_timeout_while(frames, timeout, |f| !done(f))
            .unwrap();
        assert!(
            done(&frames),
            "the frame recorder did not see {what} within {timeout:?}; it saw: {}",
            describe(&frames)
        );
        frames.clone()
    }

    /// The (connection, stream) of every request whose headers carry
    /// `x-case: case`, in the order they arrived.
    pub fn streams_of(&self, case: &str) -> Vec<(usize, u32)> {
        streams_tagged(&self.frames(), case)
    }
}

impl Drop for FrameRecorder {
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

/// The (connection, stream) of every request whose headers carry
/// `x-case: case`, in the order they arrived.
pub fn streams_tagged(frames: &[Recorded], case: &str) -> Vec<(usize, u32)> {
    frames
        .iter()
        .filter(|f| {
            f.fields
                .as_ref()
                .is_some_and(|fields| header(fields, "x-case") == Some(case))
        })
        .map(|f| (f.conn, f.stream))
        .collect()
}

/// The frames of one stream (stream-level frames only), in order.
pub fn stream_frames(frames: &[Recorded], conn: usize, stream: u32) -> Vec<Recorded> {
    frames
        .iter()
        .filter(|f| f.conn == conn && f.stream == stream)
        .cloned()
        .collect()
}

/// The frames in their short form, one connection and stream after the
/// other, for failure messages.
pub fn describe(frames: &[Recorded]) -> String {
    let mut out = String::new();
    for f in frames {
        out.push_str(&format!(
            "\n  conn {} stream {}: {}",
            f.conn,
            f.stream,
            f.short()
        ));
    }
    out
}

/// One request stream as the connection thread tracks it.
#[derive(Default)]
struct Request {
    path: String,
    body: Vec<u8>,
}

fn serve_conn(
    mut socket: TcpStream,
    index: usize,
    max_streams: Option<u32>,
    shared: &Shared,
    stop: &AtomicBool,
) {
    let _ = socket.set_read_timeout(Some(Duration::from_secs(20)));
    let mut preface = [0u8; 24];
    if socket.read_exact(&mut preface).is_err() || preface[..] != PREFACE[..] {
        return;
    }
    let mut conn = RawConn::from_stream(socket);
    let values: Vec<(u16, u32)> = max_streams
        .map(|m| (setting::MAX_CONCURRENT_STREAMS, m))
        .into_iter()
        .collect();
    if conn.write(&settings(&values)).is_err() {
        return;
    }
    let mut hpack = HpackDecoder::default();
    // A header block waiting for CONTINUATION: stream, HEADERS flags, block.
    let mut partial: Option<(u32, u8, Vec<u8>)> = None;
    let mut requests: HashMap<u32, Request> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        let frame = match conn.read_frame_until(Instant::now() + POLL) {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        };
        let mut recorded = Recorded {
            conn: index,
            kind: frame.kind,
            flags: frame.flags,
            stream: frame.stream,
            len: frame.payload.len(),
            fields: None,
            reset_code: (frame.kind == kind::RST_STREAM && frame.payload.len() == 4).then(|| {
                u32::from_be_bytes([
                    frame.payload[0],
                    frame.payload[1],
                    frame.payload[2],
                    frame.payload[3],
                ])
            }),
        };
        // The header block this frame completes: stream, HEADERS flags, block.
        let mut block_done = None;
        match frame.kind {
            kind::HEADERS => {
                let block = header_block_fragment(&frame);
                if frame.has(flag::END_HEADERS) {
                    block_done = Some((frame.stream, frame.flags, block));
                } else {
                    partial = Some((frame.stream, frame.flags, block));
                }
            }
            kind::CONTINUATION => {
                if let Some((stream, flags, mut block)) = partial.take() {
                    block.extend_from_slice(&frame.payload);
                    if frame.has(flag::END_HEADERS) {
                        block_done = Some((stream, flags, block));
                    } else {
                        partial = Some((stream, flags, block));
                    }
                }
            }
            _ => {}
        }
        let mut fields = None;
        if let Some((_, _, block)) = &block_done {
            match hpack.decode(block) {
                Ok(decoded) => fields = Some(decoded),
                Err(_) => return,
            }
        }
        recorded.fields = fields.clone();
        shared.record(recorded);

        let mut out = Vec::new();
        match frame.kind {
            kind::SETTINGS if !frame.has(flag::ACK) => out.extend_from_slice(&settings_ack()),
            kind::PING if !frame.has(flag::ACK) && frame.payload.len() == 8 => {
                let mut payload = [0u8; 8];
                payload.copy_from_slice(&frame.payload);
                out.extend_from_slice(&ping(payload, true));
            }
            kind::DATA => {
                if !frame.payload.is_empty() {
                    let n = u32::try_from(frame.payload.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&window_update(0, n));
                    out.extend_from_slice(&window_update(frame.stream, n));
                }
                if let Some(request) = requests.get_mut(&frame.stream) {
                    request.body.extend_from_slice(data_payload(&frame));
                    if frame.has(flag::END_STREAM) {
                        let request = requests.remove(&frame.stream).unwrap_or_default();
                        answer(&mut out, frame.stream, &request);
                    }
                }
            }
            kind::RST_STREAM => {
                requests.remove(&frame.stream);
            }
            _ => {}
        }
        if let (Some((stream, flags, _)), Some(fields)) = (block_done, fields) {
            // A second header block on a request (trailers) is not gRPC:
            // ignored.
            if let std::collections::hash_map::Entry::Vacant(entry) = requests.entry(stream) {
                if flags & flag::END_STREAM != 0 {
                    refuse(&mut out, stream);
                } else {
                    let path = header(&fields, ":path").unwrap_or_default().to_string();
                    entry.insert(Request {
                        path,
                        body: Vec::new(),
                    });
                }
            }
        }
        if !out.is_empty() && conn.write(&out).is_err() {
            return;
        }
    }
}

/// The header block fragment of a HEADERS frame (padding and priority
/// fields removed).
fn header_block_fragment(frame: &Frame) -> Vec<u8> {
    let mut payload = &frame.payload[..];
    let mut pad = 0;
    if frame.has(flag::PADDED) && !payload.is_empty() {
        pad = usize::from(payload[0]);
        payload = &payload[1..];
    }
    if frame.has(flag::PRIORITY) {
        payload = &payload[5.min(payload.len())..];
    }
    payload[..payload.len().saturating_sub(pad)].to_vec()
}

/// The payload of a DATA frame without its padding.
fn data_payload(frame: &Frame) -> &[u8] {
    let payload = &frame.payload[..];
    if !frame.has(flag::PADDED) || payload.is_empty() {
        return payload;
    }
    let pad = usize::from(payload[0]);
    &payload[1..payload.len().saturating_sub(pad).max(1)]
}

/// The gRPC messages of a request body; a truncated tail is dropped.
fn messages(mut body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if body.len() < 5 + len {
            break;
        }
        out.push(&body[5..5 + len]);
        body = &body[5 + len..];
    }
    out
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Answers a complete request (see the module's description).
fn answer(out: &mut Vec<u8>, stream: u32, request: &Request) {
    let head = owned(&[(":status", "200"), ("content-type", "application/grpc")]);
    out.extend_from_slice(&header_frames(
        stream,
        &encode_owned(&head),
        false,
        DEFAULT_MAX_FRAME,
    ));
    let received = messages(&request.body);
    let mut body = Vec::new();
    if request.path.ends_with("_stream") {
        for message in &received {
            body.extend_from_slice(&grpc_frame(0, message));
        }
    } else {
        let reply = ExampleReply {
            message: String::new(),
            seqno: i32::try_from(received.len()).unwrap_or(i32::MAX),
        };
        body.extend_from_slice(&grpc_frame(0, &reply.encode_to_vec()));
    }
    if !body.is_empty() {
        out.extend_from_slice(&data(stream, &body, false));
    }
    let trailers = owned(&[("grpc-status", "0")]);
    out.extend_from_slice(&header_frames(
        stream,
        &encode_owned(&trailers),
        true,
        DEFAULT_MAX_FRAME,
    ));
}

/// Answers a request whose HEADERS carried END_STREAM: Trailers-Only,
/// INTERNAL.
fn refuse(out: &mut Vec<u8>, stream: u32) {
    let fields = owned(&[
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "13"),
        ("grpc-message", HEADERS_END_STREAM_MESSAGE),
    ]);
    out.extend_from_slice(&header_frames(
        stream,
        &encode_owned(&fields),
        true,
        DEFAULT_MAX_FRAME,
    ));
}
