//! The [`Status`] every call ends with.
//!
//! On the wire a status travels in the `grpc-status` (decimal code),
//! `grpc-message` (percent-encoded UTF-8) and `grpc-status-details-bin`
//! (serialized `google.rpc.Status`) headers of the response trailers, or of
//! the headers of a Trailers-Only response; `wire/headers.rs` reads and
//! writes them.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::code::Code;
use crate::error::TransportError;
use crate::metadata::{Metadata, MetadataError};

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

/// Metadata a handler or caller tried to build but could not is a bug on
/// this side: `INTERNAL`, with what was wrong, so that `?` works on
/// [`Metadata::insert`] in a function returning `Result<_, Status>`.
impl From<MetadataError> for Status {
    fn from(error: MetadataError) -> Status {
        Status::internal(error.to_string())
    }
}

impl From<TransportError> for Status {
    fn from(error: TransportError) -> Status {
        Status::from_transport(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
