//! A raw HTTP/2 client for the tests that must send what our own client
//! never would: unknown `grpc-encoding`s, compressed flags without an
//! encoding, corrupt or oversized compressed messages, a `grpc-timeout` on a
//! request that never ends, a narrow `grpc-accept-encoding`.
//!
//! It is `h2` on a current-thread tokio runtime that runs only inside this
//! module's blocking calls (the runtime is test code; the library has none).
//! Every wait is bounded, so a server that never answers fails the test
//! instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::SendStream;
use http::{HeaderMap, Request, StatusCode};
use tokio::runtime::Runtime;

/// How long any one wait for the server may take.
const WAIT: Duration = Duration::from_secs(20);

/// One HTTP/2 connection to a server.
pub struct RawClient {
    rt: Runtime,
    send: SendRequest<Bytes>,
    authority: String,
}

/// A request in flight: its send half (kept open until `end` is asked for)
/// and the future of its response.
pub struct RawCall {
    body: Option<SendStream<Bytes>>,
    response: ResponseFuture,
}

/// A complete response: the header block, the body and the trailers.
#[derive(Debug)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers (for a Trailers-Only response, the status too).
    pub headers: HeaderMap,
    /// The body: zero or more gRPC frames.
    pub body: Vec<u8>,
    /// The trailers, `None` for a Trailers-Only response.
    pub trailers: Option<HeaderMap>,
}

impl RawResponse {
    /// The header block that carries the gRPC status: the trailers, or the
    /// headers of a Trailers-Only response.
    fn status_block(&self) -> &HeaderMap {
        self.trailers.as_ref().unwrap_or(&self.headers)
    }

    /// `grpc-status` as a number, if there is one.
    pub fn grpc_status(&self) -> Option<i32> {
        self.status_block()
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    /// `grpc-message`, percent-decoded (empty when absent).
    pub fn grpc_message(&self) -> String {
        self.status_block()
            .get("grpc-message")
            .map(|v| grpc_blocking::internal::grpc_message::decode_message(v.as_bytes()))
            .unwrap_or_default()
    }

    /// True when the status came in the headers, with no body and no
    /// trailers (a Trailers-Only response).
    pub fn is_trailers_only(&self) -> bool {
        self.trailers.is_none() && self.headers.contains_key("grpc-status")
    }

    /// A response header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body split into gRPC frames: (compressed flag, payload).
    pub fn messages(&self) -> Vec<(bool, Vec<u8>)> {
        parse_frames(&self.body)
    }
}

/// One gRPC frame: the compressed flag, the length, the payload.
pub fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(u8::from(compressed));
    let len = u32::try_from(payload.len()).expect("a test frame under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a body into frames; panics on a truncated one.
pub fn parse_frames(mut body: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "a truncated frame header: {body:?}");
        let flag = body[0];
        assert!(flag <= 1, "compressed flag {flag}");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + len, "a truncated frame");
        out.push((flag == 1, body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

impl RawClient {
    /// Connects and completes the HTTP/2 handshake.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let (send, connection) = rt.block_on(async {
            let tcp = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
                .await
                .expect("connect in time")
                .expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            tokio::time::timeout(WAIT, h2::client::handshake(tcp))
                .await
                .expect("handshake in time")
                .expect("handshake")
        });
        // Runs whenever the runtime does, i.e. inside our block_on calls.
        rt.spawn(async move {
            let _ = connection.await;
        });
        RawClient {
            rt,
            send,
            authority: addr.to_string(),
        }
    }

    /// Sends the request headers of a gRPC call to `path`
    /// (`content-type: application/grpc` and `te: trailers` plus `headers`),
    /// leaving the request open.
    pub fn start(&mut self, path: &str, headers: &[(&str, &str)]) -> RawCall {
        self.open(path, headers, false)
    }

    /// A whole call whose request HEADERS carry END_STREAM and no DATA
    /// follows, as lenient clients end a request without messages (the
    /// spec asks for an empty DATA frame with END_STREAM instead); then the
    /// response.
    pub fn call_headers_only(&mut self, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        let call = self.open(path, headers, true);
        self.finish(call)
    }

    fn open(&mut self, path: &str, headers: &[(&str, &str)], end: bool) -> RawCall {
        let mut builder = Request::builder()
            .method("POST")
            .uri(format!("http://{}{}", self.authority, path))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(()).expect("a valid request");
        let send = self.send.clone();
        let (response, body) = self.rt.block_on(async move {
            let mut ready = tokio::time::timeout(WAIT, send.ready())
                .await
                .expect("ready in time")
                .expect("the connection takes a new stream");
            ready
                .send_request(request, end)
                .expect("send the request headers")
        });
        RawCall {
            body: (!end).then_some(body),
            response,
        }
    }

    /// Sends `data` on the request (ending it if `end`). A send on a stream
    /// the server already closed is ignored: the response says what happened.
    pub fn send(&mut self, call: &mut RawCall, data: Vec<u8>, end: bool) {
        if let Some(body) = &mut call.body {
            let _ = body.send_data(Bytes::from(data), end);
            // Let the connection task write it out.
            self.rt.block_on(tokio::task::yield_now());
        }
        if end {
            call.body = None;
        }
    }

    /// Waits for the whole response (headers, body, trailers). The request
    /// side stays as it is: a request that was never ended stays open.
    pub fn finish(&mut self, call: RawCall) -> RawResponse {
        let RawCall { body, response } = call;
        let result = self.rt.block_on(async move {
            tokio::time::timeout(WAIT, async move {
                let response = response.await.expect("response headers");
                let (parts, mut recv) = response.into_parts();
                let mut data = Vec::new();
                while let Some(chunk) = recv.data().await {
                    let chunk = chunk.expect("response data");
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    data.extend_from_slice(&chunk);
                }
                let trailers = recv.trailers().await.expect("response trailers");
                RawResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body: data,
                    trailers,
                }
            })
            .await
        });
        drop(body);
        result.expect("the server answered in time")
    }

    /// A whole call: headers, `body` and the end of the request, then the
    /// response.
    pub fn call(&mut self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> RawResponse {
        let mut call = self.start(path, headers);
        self.send(&mut call, body, true);
        self.finish(call)
    }
}
