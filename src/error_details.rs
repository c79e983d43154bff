//! Rich error details: `google.rpc.Status` and the standard error detail
//! messages of googleapis' `google/rpc/error_details.proto`.
//!
//! A [`Status`] can carry, in `grpc-status-details-bin`, a serialized
//! `google.rpc.Status` whose `details` are `Any`-packed messages such as
//! [`BadRequest`] or [`DebugInfo`]. This is the convention grpcio's
//! `grpc_status` package, grpc-go's `status.WithDetails` and tonic-types
//! follow; the field numbers and type URLs below are those of the protos.
//!
//! ```
//! use grpc_blocking::error_details::{BadRequest, ErrorDetail, FieldViolation};
//! use grpc_blocking::{Code, Status};
//!
//! let status = Status::with_error_details(
//!     Code::InvalidArgument,
//!     "the request is not valid",
//!     [ErrorDetail::BadRequest(BadRequest {
//!         field_violations: vec![FieldViolation {
//!             field: "name".into(),
//!             description: "must not be empty".into(),
//!         }],
//!     })],
//! );
//! let details = status.error_details().unwrap();
//! assert!(matches!(&details[0], ErrorDetail::BadRequest(b) if b.field_violations[0].field == "name"));
//! ```

use std::collections::HashMap;

use bytes::Bytes;
use prost::{Message, Name};
use prost_types::Any;

use crate::code::Code;
use crate::status::Status;

/// `google.rpc.Status`: a code, a message and packed details.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// The status code (a [`Code`] number).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Packed detail messages.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.rpc.ErrorInfo`: the reason for an error, with its domain.
#[derive(Clone, PartialEq, Message)]
pub struct ErrorInfo {
    /// A constant, UPPER_SNAKE_CASE reason.
    #[prost(string, tag = "1")]
    pub reason: String,
    /// The logical grouping of the reason (a service name, usually).
    #[prost(string, tag = "2")]
    pub domain: String,
    /// Further structured details.
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

/// `google.rpc.RetryInfo`: when the client may retry.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    /// How long to wait before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

/// `google.rpc.DebugInfo`: debugging information (a stack trace).
#[derive(Clone, PartialEq, Message)]
pub struct DebugInfo {
    /// The stack trace, one frame per entry.
    #[prost(string, repeated, tag = "1")]
    pub stack_entries: Vec<String>,
    /// Additional details.
    #[prost(string, tag = "2")]
    pub detail: String,
}

/// `google.rpc.QuotaFailure`: which quota checks failed.
#[derive(Clone, PartialEq, Message)]
pub struct QuotaFailure {
    /// The failed checks.
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<QuotaViolation>,
}

/// `google.rpc.QuotaFailure.Violation`.
#[derive(Clone, PartialEq, Message)]
pub struct QuotaViolation {
    /// The subject of the failed check (e.g. "project:123").
    #[prost(string, tag = "1")]
    pub subject: String,
    /// What failed.
    #[prost(string, tag = "2")]
    pub description: String,
}

/// `google.rpc.PreconditionFailure`: which preconditions failed.
#[derive(Clone, PartialEq, Message)]
pub struct PreconditionFailure {
    /// The failed preconditions.
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<PreconditionViolation>,
}

/// `google.rpc.PreconditionFailure.Violation`.
#[derive(Clone, PartialEq, Message)]
pub struct PreconditionViolation {
    /// The kind of precondition (e.g. "TOS").
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// The subject that failed it.
    #[prost(string, tag = "2")]
    pub subject: String,
    /// How it failed.
    #[prost(string, tag = "3")]
    pub description: String,
}

/// `google.rpc.BadRequest`: which request fields are invalid.
#[derive(Clone, PartialEq, Message)]
pub struct BadRequest {
    /// The invalid fields.
    #[prost(message, repeated, tag = "1")]
    pub field_violations: Vec<FieldViolation>,
}

/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, PartialEq, Message)]
pub struct FieldViolation {
    /// A path to the field (e.g. `items[2].name`).
    #[prost(string, tag = "1")]
    pub field: String,
    /// Why it is invalid.
    #[prost(string, tag = "2")]
    pub description: String,
}

/// `google.rpc.RequestInfo`: which request failed, for a bug report.
#[derive(Clone, PartialEq, Message)]
pub struct RequestInfo {
    /// An opaque request id.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// Data used to serve the request (e.g. an encrypted stack trace).
    #[prost(string, tag = "2")]
    pub serving_data: String,
}

/// `google.rpc.ResourceInfo`: the resource being accessed.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceInfo {
    /// The resource's type.
    #[prost(string, tag = "1")]
    pub resource_type: String,
    /// The resource's name.
    #[prost(string, tag = "2")]
    pub resource_name: String,
    /// Its owner.
    #[prost(string, tag = "3")]
    pub owner: String,
    /// What went wrong with it.
    #[prost(string, tag = "4")]
    pub description: String,
}

/// `google.rpc.Help`: links to documentation.
#[derive(Clone, PartialEq, Message)]
pub struct Help {
    /// The links.
    #[prost(message, repeated, tag = "1")]
    pub links: Vec<HelpLink>,
}

/// `google.rpc.Help.Link`.
#[derive(Clone, PartialEq, Message)]
pub struct HelpLink {
    /// What the link offers.
    #[prost(string, tag = "1")]
    pub description: String,
    /// The URL.
    #[prost(string, tag = "2")]
    pub url: String,
}

/// `google.rpc.LocalizedMessage`: an error message for the end user.
#[derive(Clone, PartialEq, Message)]
pub struct LocalizedMessage {
    /// The locale (BCP 47, e.g. "en-US").
    #[prost(string, tag = "1")]
    pub locale: String,
    /// The message in that locale.
    #[prost(string, tag = "2")]
    pub message: String,
}

macro_rules! rpc_names {
    ($($ty:ident => $name:literal,)*) => {
        $(
            impl Name for $ty {
                const NAME: &'static str = $name;
                const PACKAGE: &'static str = "google.rpc";
                fn type_url() -> String {
                    concat!("type.googleapis.com/google.rpc.", $name).to_owned()
                }
            }
        )*
    };
}

rpc_names! {
    RpcStatus => "Status",
    ErrorInfo => "ErrorInfo",
    RetryInfo => "RetryInfo",
    DebugInfo => "DebugInfo",
    QuotaFailure => "QuotaFailure",
    PreconditionFailure => "PreconditionFailure",
    BadRequest => "BadRequest",
    RequestInfo => "RequestInfo",
    ResourceInfo => "ResourceInfo",
    Help => "Help",
    LocalizedMessage => "LocalizedMessage",
}

/// One detail of a rich status.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ErrorDetail {
    /// `google.rpc.ErrorInfo`.
    ErrorInfo(ErrorInfo),
    /// `google.rpc.RetryInfo`.
    RetryInfo(RetryInfo),
    /// `google.rpc.DebugInfo`.
    DebugInfo(DebugInfo),
    /// `google.rpc.QuotaFailure`.
    QuotaFailure(QuotaFailure),
    /// `google.rpc.PreconditionFailure`.
    PreconditionFailure(PreconditionFailure),
    /// `google.rpc.BadRequest`.
    BadRequest(BadRequest),
    /// `google.rpc.RequestInfo`.
    RequestInfo(RequestInfo),
    /// `google.rpc.ResourceInfo`.
    ResourceInfo(ResourceInfo),
    /// `google.rpc.Help`.
    Help(Help),
    /// `google.rpc.LocalizedMessage`.
    LocalizedMessage(LocalizedMessage),
    /// Any other packed message, left as it came.
    Other(Any),
}

fn pack<M: Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

impl ErrorDetail {
    /// Packs the detail into an `Any`.
    pub fn to_any(&self) -> Any {
        match self {
            ErrorDetail::ErrorInfo(m) => pack(m),
            ErrorDetail::RetryInfo(m) => pack(m),
            ErrorDetail::DebugInfo(m) => pack(m),
            ErrorDetail::QuotaFailure(m) => pack(m),
            ErrorDetail::PreconditionFailure(m) => pack(m),
            ErrorDetail::BadRequest(m) => pack(m),
            ErrorDetail::RequestInfo(m) => pack(m),
            ErrorDetail::ResourceInfo(m) => pack(m),
            ErrorDetail::Help(m) => pack(m),
            ErrorDetail::LocalizedMessage(m) => pack(m),
            ErrorDetail::Other(any) => any.clone(),
        }
    }

    /// Unpacks a detail; unknown types become [`ErrorDetail::Other`].
    pub fn from_any(any: Any) -> Result<ErrorDetail, prost::DecodeError> {
        fn is<M: Name>(any: &Any) -> bool {
            any.type_url == M::type_url()
                || any.type_url.rsplit('/').next() == Some(M::full_name().as_str())
        }
        let v = &any.value[..];
        Ok(if is::<ErrorInfo>(&any) {
            ErrorDetail::ErrorInfo(ErrorInfo::decode(v)?)
        } else if is::<RetryInfo>(&any) {
            ErrorDetail::RetryInfo(RetryInfo::decode(v)?)
        } else if is::<DebugInfo>(&any) {
            ErrorDetail::DebugInfo(DebugInfo::decode(v)?)
        } else if is::<QuotaFailure>(&any) {
            ErrorDetail::QuotaFailure(QuotaFailure::decode(v)?)
        } else if is::<PreconditionFailure>(&any) {
            ErrorDetail::PreconditionFailure(PreconditionFailure::decode(v)?)
        } else if is::<BadRequest>(&any) {
            ErrorDetail::BadRequest(BadRequest::decode(v)?)
        } else if is::<RequestInfo>(&any) {
            ErrorDetail::RequestInfo(RequestInfo::decode(v)?)
        } else if is::<ResourceInfo>(&any) {
            ErrorDetail::ResourceInfo(ResourceInfo::decode(v)?)
        } else if is::<Help>(&any) {
            ErrorDetail::Help(Help::decode(v)?)
        } else if is::<LocalizedMessage>(&any) {
            ErrorDetail::LocalizedMessage(LocalizedMessage::decode(v)?)
        } else {
            ErrorDetail::Other(any)
        })
    }
}

impl Status {
    /// A status whose `grpc-status-details-bin` is a `google.rpc.Status`
    /// with the same code and message and these details (readable by
    /// grpcio's `grpc_status.rpc_status.from_call` and by
    /// [`Status::error_details`]).
    pub fn with_error_details(
        code: Code,
        message: impl Into<String>,
        details: impl IntoIterator<Item = ErrorDetail>,
    ) -> Status {
        let message = message.into();
        let rpc = RpcStatus {
            code: code.as_i32(),
            message: message.clone(),
            details: details.into_iter().map(|d| d.to_any()).collect(),
        };
        Status::with_details(code, message, Bytes::from(rpc.encode_to_vec()))
    }

    /// The `google.rpc.Status` in the details, if there is one.
    pub fn rpc_status(&self) -> Result<Option<RpcStatus>, prost::DecodeError> {
        if self.details().is_empty() {
            return Ok(None);
        }
        RpcStatus::decode(self.details()).map(Some)
    }

    /// The error details packed in the `google.rpc.Status` of the details
    /// (empty when there are none).
    pub fn error_details(&self) -> Result<Vec<ErrorDetail>, prost::DecodeError> {
        match self.rpc_status()? {
            None => Ok(Vec::new()),
            Some(rpc) => rpc.details.into_iter().map(ErrorDetail::from_any).collect(),
        }
    }

    /// Adds `detail` to the status's `google.rpc.Status` (creating one with
    /// this status's code and message when there is none).
    pub fn add_error_detail(self, detail: ErrorDetail) -> Status {
        let mut details = self.error_details().unwrap_or_default();
        details.push(detail);
        let metadata = self.metadata().clone();
        let mut status =
            Status::with_error_details(self.code(), self.message().to_owned(), details);
        *status.metadata_mut() = metadata;
        status.with_source_of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_detail() {
        let details = vec![
            ErrorDetail::ErrorInfo(ErrorInfo {
                reason: "R".into(),
                domain: "d".into(),
                metadata: [("k".to_string(), "v".to_string())].into(),
            }),
            ErrorDetail::RetryInfo(RetryInfo {
                retry_delay: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 5,
                }),
            }),
            ErrorDetail::DebugInfo(DebugInfo {
                stack_entries: vec!["a".into(), "b".into()],
                detail: "x".into(),
            }),
            ErrorDetail::QuotaFailure(QuotaFailure {
                violations: vec![QuotaViolation {
                    subject: "s".into(),
                    description: "d".into(),
                }],
            }),
            ErrorDetail::PreconditionFailure(PreconditionFailure {
                violations: vec![PreconditionViolation {
                    r#type: "TOS".into(),
                    subject: "s".into(),
                    description: "d".into(),
                }],
            }),
            ErrorDetail::BadRequest(BadRequest {
                field_violations: vec![FieldViolation {
                    field: "f".into(),
                    description: "d".into(),
                }],
            }),
            ErrorDetail::RequestInfo(RequestInfo {
                request_id: "1".into(),
                serving_data: "s".into(),
            }),
            ErrorDetail::ResourceInfo(ResourceInfo {
                resource_type: "t".into(),
                resource_name: "n".into(),
                owner: "o".into(),
                description: "d".into(),
            }),
            ErrorDetail::Help(Help {
                links: vec![HelpLink {
                    description: "doc".into(),
                    url: "https://example.invalid".into(),
                }],
            }),
            ErrorDetail::LocalizedMessage(LocalizedMessage {
                locale: "en-US".into(),
                message: "m".into(),
            }),
            ErrorDetail::Other(Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: vec![1, 2, 3],
            }),
        ];
        let status = Status::with_error_details(Code::Aborted, "msg", details.clone());
        let rpc = status.rpc_status().unwrap().unwrap();
        assert_eq!(rpc.code, Code::Aborted.as_i32());
        assert_eq!(rpc.message, "msg");
        assert_eq!(
            rpc.details[0].type_url,
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(status.error_details().unwrap(), details);
    }

    #[test]
    fn no_details_and_bad_details() {
        assert!(Status::internal("x").error_details().unwrap().is_empty());
        let bad = Status::with_details(Code::Internal, "x", Bytes::from_static(&[0xff]));
        assert!(bad.error_details().is_err());
        let added = Status::not_found("gone").add_error_detail(ErrorDetail::Help(Help::default()));
        assert_eq!(added.error_details().unwrap().len(), 1);
        assert_eq!(added.code(), Code::NotFound);
    }
}
