//! gRPC status codes and the [`Status`] every call ends with.
//!
//! The codes and their numbers are those of grpc/grpc `doc/statuscodes.md`.
//! On the wire a status travels in the `grpc-status` (decimal code),
//! `grpc-message` (percent-encoded UTF-8, see [`encode_message`]) and
//! `grpc-status-details-bin` (serialized `google.rpc.Status`) headers of the
//! response trailers, or of the headers of a Trailers-Only response.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::error::TransportError;
use crate::metadata::{self, Metadata};

/// A gRPC status code (grpc/grpc `doc/statuscodes.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// 0: not an error; returned on success.
    Ok = 0,
    /// 1: the operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// 2: unknown error, for example an error from another address space or a
    /// handler that failed without saying why.
    Unknown = 2,
    /// 3: the client specified an invalid argument.
    InvalidArgument = 3,
    /// 4: the deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// 5: some requested entity was not found.
    NotFound = 5,
    /// 6: the entity that a client attempted to create already exists.
    AlreadyExists = 6,
    /// 7: the caller does not have permission to execute the operation.
    PermissionDenied = 7,
    /// 8: some resource has been exhausted (quota, message size, handlers).
    ResourceExhausted = 8,
    /// 9: the system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// 10: the operation was aborted, typically because of a concurrency issue.
    Aborted = 10,
    /// 11: the operation was attempted past the valid range.
    OutOfRange = 11,
    /// 12: the operation is not implemented or not supported by the server.
    Unimplemented = 12,
    /// 13: an internal invariant was broken.
    Internal = 13,
    /// 14: the service is currently unavailable; retrying may succeed.
    Unavailable = 14,
    /// 15: unrecoverable data loss or corruption.
    DataLoss = 15,
    /// 16: the request lacks valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// All 17 codes, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a number; numbers outside 0..=16 are [`Code::Unknown`], as
    /// the spec asks of receivers.
    pub fn from_i32(value: i32) -> Code {
        usize::try_from(value)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code's number on the wire.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code's canonical upper-case name, e.g. `"NOT_FOUND"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Parses the `grpc-status` header value: a decimal number. Anything that
    /// is not a number is [`Code::Unknown`].
    pub fn from_header(value: &[u8]) -> Code {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map(Code::from_i32)
            .unwrap_or(Code::Unknown)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gRPC code for an HTTP status other than 200, as the spec's
/// `doc/http-grpc-status-mapping.md` gives it (used when a response has no
/// `grpc-status`).
pub fn code_for_http_status(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The outcome of a call that did not succeed (or, with [`Code::Ok`], did).
///
/// A `Status` carries a [`Code`], a message meant for a person, optional
/// binary details (`grpc-status-details-bin`, by convention a serialized
/// `google.rpc.Status`) and the trailing metadata that came with it.
///
/// Statuses made on this side from a transport failure (connection refused,
/// connection lost, ...) say so: [`Status::transport_error`] returns the typed
/// cause, so a caller can tell "the server said UNAVAILABLE" from "we never
/// reached the server".
#[derive(Clone)]
pub struct Status {
    code: Code,
    message: String,
    details: Bytes,
    metadata: Metadata,
    /// The error this status was made from, if any (a transport failure, or
    /// an application error given to [`Status::from_error`]).
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

macro_rules! status_ctor {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            details: Bytes::new(),
            metadata: Metadata::new(),
            source: None,
        }
    }

    /// A status with binary details (sent as `grpc-status-details-bin`).
    pub fn with_details(code: Code, message: impl Into<String>, details: Bytes) -> Status {
        let mut status = Status::new(code, message);
        status.details = details;
        status
    }

    /// The status for a transport failure: `UNAVAILABLE` with the failure's
    /// text, keeping the typed cause for [`Status::transport_error`].
    pub fn from_transport(error: TransportError) -> Status {
        let code = error.code();
        let mut status = Status::new(code, error.to_string());
        status.source = Some(Arc::new(error));
        status
    }

    /// The status for an application error a handler did not convert
    /// itself: `UNKNOWN` with `Exception calling application: <error>`, as
    /// grpcio reports unhandled exceptions. The error is kept as the
    /// status's source, so the server's error mappings
    /// (`ServerBuilder::map_error`) can turn it into a better status.
    ///
    /// ```
    /// use grpc_blocking::{Code, Status};
    /// fn handler() -> Result<(), Status> {
    ///     std::fs::read("/definitely/not/here").map_err(Status::from_error)?;
    ///     Ok(())
    /// }
    /// let err = handler().unwrap_err();
    /// assert_eq!(err.code(), Code::Unknown);
    /// assert!(err.message().starts_with("Exception calling application: "));
    /// assert!(err.source_error().unwrap().downcast_ref::<std::io::Error>().is_some());
    /// ```
    pub fn from_error(
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Status {
        let error: Box<dyn std::error::Error + Send + Sync + 'static> = error.into();
        let mut status = Status::new(
            Code::Unknown,
            format!("Exception calling application: {error}"),
        );
        status.source = Some(Arc::from(error));
        status
    }

    /// The error this status was made from, if any.
    pub fn source_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// Keeps `other`'s source error on this status.
    pub(crate) fn with_source_of(mut self, other: Status) -> Status {
        self.source = other.source;
        self
    }

    status_ctor! {
        /// A `CANCELLED` status.
        cancelled => Cancelled,
        /// An `UNKNOWN` status.
        unknown => Unknown,
        /// An `INVALID_ARGUMENT` status.
        invalid_argument => InvalidArgument,
        /// A `DEADLINE_EXCEEDED` status.
        deadline_exceeded => DeadlineExceeded,
        /// A `NOT_FOUND` status.
        not_found => NotFound,
        /// An `ALREADY_EXISTS` status.
        already_exists => AlreadyExists,
        /// A `PERMISSION_DENIED` status.
        permission_denied => PermissionDenied,
        /// A `RESOURCE_EXHAUSTED` status.
        resource_exhausted => ResourceExhausted,
        /// A `FAILED_PRECONDITION` status.
        failed_precondition => FailedPrecondition,
        /// An `ABORTED` status.
        aborted => Aborted,
        /// An `OUT_OF_RANGE` status.
        out_of_range => OutOfRange,
        /// An `UNIMPLEMENTED` status.
        unimplemented => Unimplemented,
        /// An `INTERNAL` status.
        internal => Internal,
        /// An `UNAVAILABLE` status.
        unavailable => Unavailable,
        /// A `DATA_LOSS` status.
        data_loss => DataLoss,
        /// An `UNAUTHENTICATED` status.
        unauthenticated => Unauthenticated,
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message (already percent-decoded).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The binary details (`grpc-status-details-bin`); empty when there are none.
    pub fn details(&self) -> &[u8] {
        &self.details
    }

    /// The metadata that came with the status (the response's trailers on the
    /// client), or that will be sent with it (on the server).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Mutable access to the status's metadata.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Replaces the metadata, builder style.
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        self.metadata = metadata;
        self
    }

    /// True when this status was made locally from a transport failure rather
    /// than received from the peer.
    pub fn is_transport_error(&self) -> bool {
        self.transport_error().is_some()
    }

    /// The transport failure behind this status, if it was made from one.
    pub fn transport_error(&self) -> Option<&TransportError> {
        self.source.as_deref()?.downcast_ref::<TransportError>()
    }

    /// Writes `grpc-status`, `grpc-message` and `grpc-status-details-bin` and
    /// then the status's metadata into `headers`.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("grpc-status", HeaderValue::from(self.code.as_i32()));
        if !self.message.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&encode_message(&self.message)) {
                headers.insert("grpc-message", value);
            }
        }
        if !self.details.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&metadata::encode_binary(&self.details)) {
                headers.insert("grpc-status-details-bin", value);
            }
        }
        self.metadata.write_headers(headers);
    }

    /// Reads a status from trailers (or Trailers-Only headers). `None` when
    /// there is no `grpc-status`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Status> {
        let code = Code::from_header(headers.get("grpc-status")?.as_bytes());
        let message = headers
            .get("grpc-message")
            .map(|v| decode_message(v.as_bytes()))
            .unwrap_or_default();
        let details = headers
            .get("grpc-status-details-bin")
            .and_then(|v| metadata::decode_binary(v.as_bytes()).ok())
            .map(Bytes::from)
            .unwrap_or_default();
        let mut status = Status::with_details(code, message, details);
        status.metadata = Metadata::from_headers(headers);
        Some(status)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.code).field("message", &self.message);
        if !self.details.is_empty() {
            d.field("details", &format_args!("{} bytes", self.details.len()));
        }
        if !self.metadata.is_empty() {
            d.field("metadata", &self.metadata);
        }
        if let Some(t) = &self.source {
            d.field("source", t);
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|t| t as &(dyn std::error::Error + 'static))
    }
}

impl From<TransportError> for Status {
    fn from(error: TransportError) -> Status {
        Status::from_transport(error)
    }
}

/// Percent-encodes a status message for `grpc-message`: every byte of its
/// UTF-8 form outside printable ASCII (0x20..=0x7E), and `%` itself, becomes
/// `%XX` with upper-case hex digits; so does a space that starts or ends
/// the message, because HTTP/2 (RFC 9113, section 8.2.1) forbids a field
/// value that starts or ends with whitespace (Node's HTTP/2, under grpc-js,
/// drops such a field).
pub fn encode_message(message: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = message.as_bytes();
    let mut out = String::with_capacity(message.len());
    for (i, &b) in bytes.iter().enumerate() {
        let at_an_end = i == 0 || i + 1 == bytes.len();
        if (0x20..=0x7E).contains(&b) && b != b'%' && !(b == b' ' && at_an_end) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
    out
}

/// Decodes a `grpc-message` value. As the spec asks, a `%` not followed by
/// two hex digits is kept as it is, and bytes that are not valid UTF-8 after
/// decoding are replaced rather than failing the call.
pub fn decode_message(value: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (
                value.get(i + 1).copied().and_then(hex),
                value.get(i + 2).copied().and_then(hex),
            ) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_numbers_map_to_unknown() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(code.as_i32(), i as i32);
            assert_eq!(Code::from_i32(i as i32), *code);
            assert_eq!(Code::from_header(i.to_string().as_bytes()), *code);
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::from_header(b"abc"), Code::Unknown);
        assert_eq!(Code::NotFound.to_string(), "NOT_FOUND");
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
    fn message_percent_encoding_round_trips() {
        for msg in [
            "",
            "plain",
            "100% sure",
            "line\nbreak\ttab",
            "\u{00e9}t\u{00e9} \u{1F600}",
            "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n",
        ] {
            let enc = encode_message(msg);
            assert!(enc.bytes().all(|b| (0x20..=0x7E).contains(&b)), "{enc}");
            assert_eq!(decode_message(enc.as_bytes()), msg);
        }
        assert_eq!(encode_message("a%b\n"), "a%25b%0A");
        // No whitespace at either end of the field value (RFC 9113, 8.2.1).
        assert_eq!(encode_message(" a b "), "%20a b%20");
        assert_eq!(encode_message(" "), "%20");
        assert_eq!(decode_message(b"%20a b%20"), " a b ");
    }

    #[test]
    fn message_decoding_is_lenient() {
        assert_eq!(decode_message(b"100%"), "100%");
        assert_eq!(decode_message(b"%zz%4"), "%zz%4");
        assert_eq!(decode_message(b"%FF"), "\u{FFFD}");
        assert_eq!(decode_message(b"%e2%98%BA"), "\u{263A}");
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
        status.write_headers(&mut headers);
        assert_eq!(headers["grpc-status"], "9");
        let back = Status::from_headers(&headers).unwrap();
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), "no\nway 100%");
        assert_eq!(back.details(), b"\x08\x09");
        assert_eq!(back.metadata(), &md);
        assert!(Status::from_headers(&HeaderMap::new()).is_none());
    }

    #[test]
    fn transport_statuses_are_distinguishable() {
        let s = Status::from_transport(TransportError::ConnectionLost("peer closed".into()));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.is_transport_error());
        assert!(s.message().contains("peer closed"));
        assert!(!Status::unavailable("busy").is_transport_error());
        assert_eq!(Status::not_found("x").to_string(), "NOT_FOUND: x");
    }
}
