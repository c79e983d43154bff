//! Transport failures: what went wrong below gRPC.
//!
//! A call's result is a [`Status`](crate::Status). When the failure happened
//! on this side of the wire (the server could not be reached, the connection
//! died), the status is made from a [`TransportError`] and keeps it, so that
//! [`Status::transport_error`](crate::Status::transport_error) tells a caller
//! which kind of failure it was.

use std::io;
use std::time::Duration;

use crate::code::Code;

/// A failure of the connection underneath gRPC, as opposed to a status the
/// peer sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The target is not one of the forms a channel accepts.
    #[error("invalid target {target:?}: {reason}")]
    InvalidUri {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve to any address.
    #[error("could not resolve {target:?}: {source}")]
    Resolve {
        /// The `host:port` that was looked up.
        target: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// Every address of the target refused or failed the TCP connection.
    #[error("could not connect to {target}: {source}")]
    Connect {
        /// The target that was dialled.
        target: String,
        /// The last connection error.
        #[source]
        source: io::Error,
    },
    /// The TCP connection did not complete within the connect timeout.
    #[error("connecting to {target} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The target that was dialled.
        target: String,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// A recent connect failed and the next attempt is not due yet.
    #[error("not connected to {target}: the last attempt failed ({last_error}); next attempt in {retry_in:?}")]
    Backoff {
        /// The target.
        target: String,
        /// When the next attempt is allowed.
        retry_in: Duration,
        /// The error of the last attempt.
        last_error: String,
    },
    /// The TLS handshake failed: the server's certificate was expired, not
    /// valid for the name, or from an unknown issuer; it refused ours; or
    /// one side does not speak TLS. `reason` says which, in rustls's words.
    #[error("TLS with {target} failed: {reason}")]
    Tls {
        /// The target that was dialled.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection ended while the call was in flight.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The HTTP/2 layer reported a protocol error on the connection.
    #[error("HTTP/2 error: {0}")]
    Http2(String),
    /// An operating-system resource (a thread, a poller) could not be created.
    #[error("could not start the connection: {0}")]
    Resource(#[source] io::Error),
}

/// A copy of `e` (an `io::Error` inside is copied as its kind and text).
pub(crate) fn clone_transport_error(e: &TransportError) -> TransportError {
    let io = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
    match e {
        TransportError::InvalidUri { target, reason } => TransportError::InvalidUri {
            target: target.clone(),
            reason: reason.clone(),
        },
        TransportError::Resolve { target, source } => TransportError::Resolve {
            target: target.clone(),
            source: io(source),
        },
        TransportError::Connect { target, source } => TransportError::Connect {
            target: target.clone(),
            source: io(source),
        },
        TransportError::ConnectTimeout { target, timeout } => TransportError::ConnectTimeout {
            target: target.clone(),
            timeout: *timeout,
        },
        TransportError::Backoff {
            target,
            retry_in,
            last_error,
        } => TransportError::Backoff {
            target: target.clone(),
            retry_in: *retry_in,
            last_error: last_error.clone(),
        },
        TransportError::Tls { target, reason } => TransportError::Tls {
            target: target.clone(),
            reason: reason.clone(),
        },
        TransportError::ConnectionLost(m) => TransportError::ConnectionLost(m.clone()),
        TransportError::Http2(m) => TransportError::Http2(m.clone()),
        TransportError::Resource(source) => TransportError::Resource(io(source)),
    }
}

impl TransportError {
    /// The gRPC code a call reports for this failure: `UNAVAILABLE` for all
    /// connection problems (safe to retry), `INTERNAL` for an unusable target.
    pub fn code(&self) -> Code {
        match self {
            TransportError::InvalidUri { .. } => Code::Internal,
            _ => Code::Unavailable,
        }
    }
}
