//! The gRPC-over-HTTP/2 headers (grpc/grpc `doc/PROTOCOL-HTTP2.md`), as
//! plain functions: building request, response and trailer headers, and
//! checking what the peer sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, TE, USER_AGENT as USER_AGENT_NAME,
};
use http::{Method, Request, Response, StatusCode};

use crate::code::Code;
use crate::metadata::{self, Metadata};
use crate::status::Status;
use crate::wire::compression::{self, Encoding};
use crate::wire::grpc_message::{decode_message, encode_message};
use crate::wire::timeout;

/// The content type we send.
pub(crate) const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// Our `user-agent`, sent by clients.
pub(crate) const USER_AGENT: &str = concat!("grpc-rust-blocking/", env!("CARGO_PKG_VERSION"));

// gRPC's own header names, made once. A name given as a string is parsed
// on every use and, as HTTP does not define it, copied into an allocation
// of its own on every insert.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_STATUS_DETAILS_BIN: HeaderName = HeaderName::from_static("grpc-status-details-bin");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
const GRPC_PREVIOUS_RPC_ATTEMPTS: HeaderName =
    HeaderName::from_static("grpc-previous-rpc-attempts");

/// The `grpc-status` value of `code`, without formatting a number.
fn status_value(code: Code) -> HeaderValue {
    const VALUES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    match VALUES.get(code.as_i32() as usize) {
        Some(v) => HeaderValue::from_static(v),
        None => HeaderValue::from(code.as_i32()),
    }
}

/// True for `application/grpc`, `application/grpc+proto`,
/// `application/grpc+<suffix>` and `application/grpc;<params>`.
pub(crate) fn is_grpc_content_type(value: &[u8]) -> bool {
    match value.strip_prefix(b"application/grpc") {
        Some(rest) => rest.is_empty() || rest[0] == b'+' || rest[0] == b';',
        None => false,
    }
}

/// Everything a client puts in a request's headers.
pub(crate) struct RequestHead<'a> {
    pub path: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub metadata: &'a Metadata,
    pub timeout: Option<Duration>,
    pub encoding: Encoding,
    /// Attempts of this call before this one (gRFC A6); 0 on the first.
    pub previous_attempts: u32,
}

/// Builds a client's request headers.
pub(crate) fn request(head: &RequestHead<'_>) -> Result<Request<()>, Status> {
    let uri = http::Uri::builder()
        .scheme(head.scheme)
        .authority(head.authority)
        .path_and_query(head.path)
        .build()
        .map_err(|e| Status::internal(format!("invalid request path {:?}: {e}", head.path)))?;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(())
        .map_err(|e| Status::internal(format!("invalid request: {e}")))?;
    let h = req.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    h.insert(TE, HeaderValue::from_static("trailers"));
    h.insert(USER_AGENT_NAME, HeaderValue::from_static(USER_AGENT));
    if let Some(t) = head.timeout {
        if let Ok(v) = HeaderValue::from_str(&timeout::encode_timeout(t)) {
            h.insert(GRPC_TIMEOUT, v);
        }
    }
    if head.encoding != Encoding::Identity {
        h.insert(
            GRPC_ENCODING,
            HeaderValue::from_static(head.encoding.as_str()),
        );
    }
    h.insert(
        GRPC_ACCEPT_ENCODING,
        HeaderValue::from_static(compression::ACCEPT_ENCODING),
    );
    if head.previous_attempts > 0 {
        h.insert(
            GRPC_PREVIOUS_RPC_ATTEMPTS,
            HeaderValue::from(head.previous_attempts),
        );
    }
    head.metadata.write_headers(h);
    Ok(req)
}

/// What a server learns from a request's headers.
#[derive(Debug)]
pub(crate) struct CallHead {
    pub path: MethodPath,
    pub metadata: Metadata,
    pub timeout: Option<Duration>,
    pub encoding: Encoding,
    pub accept_encoding: Vec<Encoding>,
}

/// Why a request was refused before reaching a handler.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// Not gRPC at all: answer with this HTTP status and no gRPC status.
    Http(StatusCode, &'static str),
    /// gRPC, but unusable: answer Trailers-Only with this status.
    Grpc(Status),
}

/// A checked `/package.Service/Method`, kept once and shared: a call's
/// handler, context and interceptors all read it without a copy of their
/// own.
#[derive(Clone)]
pub(crate) struct MethodPath {
    path: Arc<str>,
    /// Where the method's `/` is.
    split: usize,
}

impl MethodPath {
    /// `path`, if [`split_path`] takes it.
    fn parse(path: &str) -> Option<Self> {
        let (service, _) = split_path(path)?;
        Some(MethodPath {
            path: Arc::from(path),
            split: service.len() + 1,
        })
    }

    /// The whole path, e.g. `/nameko.example/unary_unary`.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The service's full name, e.g. `nameko.example`.
    pub(crate) fn service(&self) -> &str {
        &self.path[1..self.split]
    }

    /// The method's name, e.g. `unary_unary`.
    pub(crate) fn method(&self) -> &str {
        &self.path[self.split + 1..]
    }
}

impl std::fmt::Debug for MethodPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

/// Splits `/package.Service/Method`.
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// Checks a request's headers.
pub(crate) fn parse_request(parts: &http::request::Parts) -> Result<CallHead, Rejection> {
    if parts.method != Method::POST {
        return Err(Rejection::Http(
            StatusCode::METHOD_NOT_ALLOWED,
            "gRPC requests must use POST",
        ));
    }
    let ct = parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    if !ct.is_some_and(is_grpc_content_type) {
        return Err(Rejection::Http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/grpc",
        ));
    }
    let te = parts.headers.get(TE).map(|v| v.as_bytes());
    if te != Some(b"trailers") {
        // As grpc-java does: a proxy on the way may drop trailers, which
        // would lose every call's status.
        return Err(Rejection::Grpc(Status::internal(format!(
            "expected header te: trailers, got {:?}; an intermediary may not support trailers",
            te.map(String::from_utf8_lossy).unwrap_or_default()
        ))));
    }
    let raw_path = parts.uri.path();
    let Some(path) = MethodPath::parse(raw_path) else {
        return Err(Rejection::Grpc(Status::unimplemented(format!(
            "malformed method path {raw_path:?}: expected /package.Service/Method"
        ))));
    };
    let timeout = match parts.headers.get(GRPC_TIMEOUT) {
        None => None,
        Some(v) => Some(
            timeout::parse_timeout(v.as_bytes())
                .map_err(|e| Rejection::Grpc(Status::internal(e.to_string())))?,
        ),
    };
    let encoding = match parts.headers.get(GRPC_ENCODING) {
        None => Encoding::Identity,
        Some(v) => {
            let name = v.to_str().unwrap_or("");
            match Encoding::parse(name) {
                Some(e) => e,
                None => {
                    // The Trailers-Only answer carries our grpc-accept-encoding.
                    return Err(Rejection::Grpc(Status::unimplemented(format!(
                        "message compression {name:?} is not supported; supported: {}",
                        compression::ACCEPT_ENCODING
                    ))));
                }
            }
        }
    };
    let accept_encoding = parts
        .headers
        .get_all(GRPC_ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(compression::parse_accept_encoding)
        .collect();
    Ok(CallHead {
        path,
        metadata: Metadata::from_headers(&parts.headers),
        timeout,
        encoding,
        accept_encoding,
    })
}

/// A server's response headers (initial metadata).
pub(crate) fn response(metadata: &Metadata, encoding: Encoding) -> Response<()> {
    let mut res = Response::new(());
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    if encoding != Encoding::Identity {
        h.insert(GRPC_ENCODING, HeaderValue::from_static(encoding.as_str()));
    }
    h.insert(
        GRPC_ACCEPT_ENCODING,
        HeaderValue::from_static(compression::ACCEPT_ENCODING),
    );
    metadata.write_headers(h);
    res
}

/// A server's trailers for `status`.
pub(crate) fn trailers(status: &Status) -> HeaderMap {
    let mut h = HeaderMap::new();
    write_status(status, &mut h);
    h
}

/// A Trailers-Only response: headers that carry the status and end the call,
/// used when a call fails before any message. `initial` is metadata the
/// handler asked to send first; it joins the same header block.
pub(crate) fn trailers_only(status: &Status, initial: &Metadata) -> Response<()> {
    let mut res = Response::new(());
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    h.insert(
        GRPC_ACCEPT_ENCODING,
        HeaderValue::from_static(compression::ACCEPT_ENCODING),
    );
    initial.write_headers(h);
    write_status(status, h);
    res
}

/// A plain HTTP error response for something that is not a gRPC request.
pub(crate) fn http_error(status: StatusCode) -> Response<()> {
    let mut res = Response::new(());
    *res.status_mut() = status;
    res
}

/// What a client learns from a response's headers.
#[derive(Debug)]
pub(crate) enum ResponseHead {
    /// A normal response: messages and trailers follow.
    Messages {
        metadata: Metadata,
        encoding: Encoding,
    },
    /// A Trailers-Only response: the call is over.
    TrailersOnly(Status),
}

/// Checks a response's headers: an HTTP status other than 200 or a missing
/// gRPC content type becomes a status, as the spec says.
pub(crate) fn parse_response(parts: &http::response::Parts) -> Result<ResponseHead, Status> {
    let grpc_status = read_status(&parts.headers);
    if parts.status != StatusCode::OK {
        if let Some(s) = grpc_status {
            return Ok(ResponseHead::TrailersOnly(s));
        }
        let code = code_for_http_status(parts.status.as_u16());
        return Err(Status::new(
            code,
            format!(
                "the server answered with HTTP status {} instead of a gRPC response",
                parts.status
            ),
        ));
    }
    if let Some(s) = grpc_status {
        return Ok(ResponseHead::TrailersOnly(s));
    }
    let ct = parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    if !ct.is_some_and(is_grpc_content_type) {
        return Err(Status::unknown(format!(
            "the server answered with content-type {:?} instead of application/grpc",
            ct.map(String::from_utf8_lossy).unwrap_or_default()
        )));
    }
    let encoding = match parts.headers.get(GRPC_ENCODING) {
        None => Encoding::Identity,
        Some(v) => {
            let name = v.to_str().unwrap_or("");
            Encoding::parse(name).ok_or_else(|| {
                Status::internal(format!(
                    "the server compressed its response with {name:?}, which this client does not support"
                ))
            })?
        }
    };
    Ok(ResponseHead::Messages {
        metadata: Metadata::from_headers(&parts.headers),
        encoding,
    })
}

/// The status in a response's trailers; a missing `grpc-status` is an error.
pub(crate) fn parse_trailers(trailers: &HeaderMap) -> Status {
    read_status(trailers).unwrap_or_else(|| {
        Status::new(
            Code::Unknown,
            "the server ended the response without a grpc-status",
        )
    })
}

/// The size of a header block as HTTP/2 counts it for
/// SETTINGS_MAX_HEADER_LIST_SIZE: each field's name and value plus 32.
pub(crate) fn header_list_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Writes `grpc-status`, `grpc-message` and `grpc-status-details-bin`, then
/// the status's metadata, into `headers`.
pub(crate) fn write_status(status: &Status, headers: &mut HeaderMap) {
    headers.insert(GRPC_STATUS, status_value(status.code()));
    if !status.message().is_empty() {
        if let Ok(value) = HeaderValue::from_str(&encode_message(status.message())) {
            headers.insert(GRPC_MESSAGE, value);
        }
    }
    if !status.details().is_empty() {
        if let Ok(value) = HeaderValue::from_str(&metadata::encode_binary(status.details())) {
            headers.insert(GRPC_STATUS_DETAILS_BIN, value);
        }
    }
    status.metadata().write_headers(headers);
}

/// Reads a status from trailers (or Trailers-Only headers); `None` when there
/// is no `grpc-status`. Its metadata is the other (non-reserved) fields.
pub(crate) fn read_status(headers: &HeaderMap) -> Option<Status> {
    let code = Code::from_header(headers.get(GRPC_STATUS)?.as_bytes());
    let message = headers
        .get(GRPC_MESSAGE)
        .map(|v| decode_message(v.as_bytes()))
        .unwrap_or_default();
    let details = headers
        .get(GRPC_STATUS_DETAILS_BIN)
        .and_then(|v| metadata::decode_binary(v.as_bytes()).ok())
        .map(Bytes::from)
        .unwrap_or_default();
    Some(
        Status::with_details(code, message, details).with_metadata(Metadata::from_headers(headers)),
    )
}

/// The gRPC code for an HTTP status other than 200, as grpc/grpc
/// `doc/http-grpc-status-mapping.md` gives it (used when a response has no
/// `grpc-status`).
pub(crate) fn code_for_http_status(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn header_list_size_counts_names_values_and_32_per_field() {
        let mut h = HeaderMap::new();
        assert_eq!(header_list_size(&h), 0);
        h.insert("ab", HeaderValue::from_static("xyz"));
        h.append("ab", HeaderValue::from_static("1"));
        assert_eq!(header_list_size(&h), (2 + 3 + 32) + (2 + 1 + 32));
    }

    #[test]
    fn content_types() {
        for ok in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"application/grpc+json",
            b"application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc_content_type(ok));
        }
        for bad in [&b"application/json"[..], b"application/grpcx", b""] {
            assert!(!is_grpc_content_type(bad));
        }
    }

    #[test]
    fn paths() {
        assert_eq!(split_path("/a.B/C"), Some(("a.B", "C")));
        assert_eq!(split_path("/svc/m"), Some(("svc", "m")));
        for bad in ["", "/", "//m", "/svc/", "svc/m", "/a/b/c"] {
            assert_eq!(split_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_round_trip() {
        let mut md = Metadata::new();
        md.insert("x-a", "1").unwrap();
        let req = request(&RequestHead {
            path: "/nameko.example/unary_unary",
            authority: "localhost:1",
            scheme: "http",
            metadata: &md,
            timeout: Some(Duration::from_millis(1500)),
            encoding: Encoding::Gzip,
            previous_attempts: 2,
        })
        .unwrap();
        assert_eq!(req.headers()["grpc-previous-rpc-attempts"], "2");
        assert_eq!(req.headers()["te"], "trailers");
        let head = parse_request(&parts(req)).unwrap();
        assert_eq!(head.path.path(), "/nameko.example/unary_unary");
        assert_eq!(head.path.service(), "nameko.example");
        assert_eq!(head.path.method(), "unary_unary");
        // The user-agent is shown to handlers, as grpcio does.
        assert_eq!(head.metadata.get("user-agent"), Some(USER_AGENT));
        assert_eq!(head.metadata.get("x-a"), Some("1"));
        // A retry's attempt count is the handler's to read (gRFC A6).
        assert_eq!(head.metadata.get("grpc-previous-rpc-attempts"), Some("2"));
        assert_eq!(head.metadata.len(), 3);
        assert_eq!(head.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(head.encoding, Encoding::Gzip);
        assert!(head.accept_encoding.contains(&Encoding::Deflate));
    }

    #[test]
    fn bad_requests_are_rejected_with_the_right_answer() {
        let base = || {
            Request::builder()
                .method(Method::POST)
                .uri("http://h/svc/m")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
        };
        let r = parse_request(&parts(
            Request::builder()
                .method(Method::POST)
                .uri("http://h/svc/m")
                .header("content-type", "application/grpc")
                .body(())
                .unwrap(),
        ));
        assert!(
            matches!(r, Err(Rejection::Grpc(s)) if s.code() == Code::Internal && s.message().contains("te: trailers"))
        );
        let r = parse_request(&parts(base().method(Method::GET).body(()).unwrap()));
        assert!(matches!(
            r,
            Err(Rejection::Http(StatusCode::METHOD_NOT_ALLOWED, _))
        ));
        let r = parse_request(&parts(
            Request::builder()
                .method(Method::POST)
                .uri("http://h/svc/m")
                .header("content-type", "text/html")
                .body(())
                .unwrap(),
        ));
        assert!(matches!(
            r,
            Err(Rejection::Http(StatusCode::UNSUPPORTED_MEDIA_TYPE, _))
        ));
        let r = parse_request(&parts(base().uri("http://h/nope").body(()).unwrap()));
        assert!(matches!(r, Err(Rejection::Grpc(s)) if s.code() == Code::Unimplemented));
        let r = parse_request(&parts(
            base().header("grpc-timeout", "1x").body(()).unwrap(),
        ));
        assert!(matches!(r, Err(Rejection::Grpc(s)) if s.code() == Code::Internal));
        let r = parse_request(&parts(
            base().header("grpc-encoding", "br").body(()).unwrap(),
        ));
        match r {
            Err(Rejection::Grpc(s)) => {
                assert_eq!(s.code(), Code::Unimplemented);
                assert!(s.message().contains("br"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn responses_are_checked() {
        let (p, _) = response(&Metadata::new(), Encoding::Identity).into_parts();
        assert!(matches!(
            parse_response(&p),
            Ok(ResponseHead::Messages { .. })
        ));
        let (p, _) = trailers_only(&Status::not_found("x"), &Metadata::new()).into_parts();
        match parse_response(&p) {
            Ok(ResponseHead::TrailersOnly(s)) => assert_eq!(s.code(), Code::NotFound),
            other => panic!("{other:?}"),
        }
        let (p, _) = http_error(StatusCode::SERVICE_UNAVAILABLE).into_parts();
        assert_eq!(parse_response(&p).unwrap_err().code(), Code::Unavailable);
        let (p, _) = http_error(StatusCode::NOT_FOUND).into_parts();
        assert_eq!(parse_response(&p).unwrap_err().code(), Code::Unimplemented);
        let (mut p, _) = response(&Metadata::new(), Encoding::Identity).into_parts();
        p.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert_eq!(parse_response(&p).unwrap_err().code(), Code::Unknown);
        assert_eq!(parse_trailers(&HeaderMap::new()).code(), Code::Unknown);
    }

    #[test]
    fn http_status_mapping_follows_the_spec() {
        assert_eq!(code_for_http_status(400), Code::Internal);
        assert_eq!(code_for_http_status(401), Code::Unauthenticated);
        assert_eq!(code_for_http_status(403), Code::PermissionDenied);
        assert_eq!(code_for_http_status(404), Code::Unimplemented);
        for s in [429, 502, 503, 504] {
            assert_eq!(code_for_http_status(s), Code::Unavailable);
        }
        assert_eq!(code_for_http_status(500), Code::Unknown);
        assert_eq!(code_for_http_status(302), Code::Unknown);
    }

    #[test]
    fn status_headers_round_trip() {
        let mut md = Metadata::new();
        md.insert("x-trailer", "v").unwrap();
        md.insert_bin("x-data-bin", &[0, 1, 2, 255]).unwrap();
        let status = Status::with_details(
            Code::FailedPrecondition,
            "no\nway 100%",
            Bytes::from_static(b"\x08\x09"),
        )
        .with_metadata(md.clone());
        let mut headers = HeaderMap::new();
        write_status(&status, &mut headers);
        assert_eq!(headers["grpc-status"], "9");
        assert_eq!(headers["grpc-message"], "no%0Away 100%25");
        let back = read_status(&headers).unwrap();
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), "no\nway 100%");
        assert_eq!(back.details(), b"\x08\x09");
        assert_eq!(back.metadata(), &md);
        assert!(read_status(&HeaderMap::new()).is_none());
    }

    #[test]
    fn every_code_is_written_as_its_number() {
        for code in Code::ALL {
            let mut headers = HeaderMap::new();
            write_status(&Status::new(code, ""), &mut headers);
            assert_eq!(headers["grpc-status"], code.as_i32().to_string().as_str());
            assert_eq!(read_status(&headers).unwrap().code(), code);
        }
    }
}
