//! HTTP/2 stream and connection errors (RST_STREAM and GOAWAY codes) as gRPC
//! statuses, per grpc/grpc `doc/PROTOCOL-HTTP2.md`, "Errors".

use h2::Reason;

use crate::error::TransportError;
use crate::status::Status;

/// What a server reports to a handler whose client reset the stream (or
/// whose request ended in an error): the call was cancelled.
pub(crate) fn status_for_client_reset(reason: Option<Reason>) -> Status {
    match reason {
        Some(Reason::CANCEL) | Some(Reason::NO_ERROR) | None => {
            Status::cancelled("the client cancelled the call")
        }
        Some(r) => Status::cancelled(format!("the client reset the stream ({r})")),
    }
}

/// Whether an h2 error on a client stream means the server never processed
/// the call: it refused the stream, or its GOAWAY's last stream id is below
/// ours (h2 fails exactly those streams with the GOAWAY's error).
pub(crate) fn never_processed(error: &h2::Error) -> bool {
    error.reason() == Some(Reason::REFUSED_STREAM) || error.is_go_away() && error.is_remote()
}

/// The status a client reports for an h2 error on its stream: RST_STREAM
/// codes map as the spec's `doc/PROTOCOL-HTTP2.md` says; a lost connection is
/// `UNAVAILABLE`.
pub(crate) fn status_for_h2_error(error: &h2::Error) -> Status {
    if error.is_io()
        || error.is_go_away() && error.is_remote() && error.reason() != Some(Reason::NO_ERROR)
    {
        return Status::from_transport(TransportError::ConnectionLost(error.to_string()));
    }
    match error.reason() {
        Some(Reason::REFUSED_STREAM) => Status::unavailable(format!(
            "the server refused the stream before processing it ({error}); safe to retry"
        )),
        Some(Reason::CANCEL) => Status::cancelled(format!("the call was cancelled ({error})")),
        Some(Reason::ENHANCE_YOUR_CALM) => {
            Status::resource_exhausted(format!("the server asked us to calm down: {error}"))
        }
        Some(Reason::INADEQUATE_SECURITY) => {
            Status::permission_denied(format!("inadequate security: {error}"))
        }
        _ if error.is_go_away() => Status::from_transport(TransportError::ConnectionLost(format!(
            "the server closed the connection ({error})"
        ))),
        _ => Status::internal(format!("HTTP/2 stream error: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;

    #[test]
    fn client_resets_are_cancellations() {
        for reason in [None, Some(Reason::CANCEL), Some(Reason::NO_ERROR)] {
            let s = status_for_client_reset(reason);
            assert_eq!(s.code(), Code::Cancelled);
            assert_eq!(s.message(), "the client cancelled the call");
        }
        let s = status_for_client_reset(Some(Reason::PROTOCOL_ERROR));
        assert_eq!(s.code(), Code::Cancelled);
        assert!(s.message().contains("protocol error"), "{s}");
    }

    #[test]
    fn stream_errors_map_as_the_spec_says() {
        let of = |r: Reason| status_for_h2_error(&h2::Error::from(r));
        assert_eq!(of(Reason::REFUSED_STREAM).code(), Code::Unavailable);
        assert_eq!(of(Reason::CANCEL).code(), Code::Cancelled);
        assert_eq!(
            of(Reason::ENHANCE_YOUR_CALM).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            of(Reason::INADEQUATE_SECURITY).code(),
            Code::PermissionDenied
        );
        assert_eq!(of(Reason::PROTOCOL_ERROR).code(), Code::Internal);
        assert!(never_processed(&h2::Error::from(Reason::REFUSED_STREAM)));
        assert!(!never_processed(&h2::Error::from(Reason::CANCEL)));
    }
}
