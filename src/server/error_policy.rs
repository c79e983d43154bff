//! How a handler's failure becomes the status the client sees.
//!
//! - A handler returns `Err(status)`: that status, as it is (an error type's
//!   own `From<E> for Status` conversion applies through `?`).
//! - A status made by [`Status::from_error`] from an error type the handler
//!   did not convert: the server's mapping for that error type
//!   ([`ServerBuilder::map_error`](crate::ServerBuilder::map_error)) if there
//!   is one, else `UNKNOWN` "Exception calling application: ...".
//! - A handler panics: the mapping for the panic's payload type (for
//!   `std::panic::panic_any(MyError)`), else `UNKNOWN` with the message
//!   `Exception calling application: <panic message>` (or `Exception
//!   iterating responses: ...` for a handler streaming its responses), as
//!   grpcio reports an unhandled exception. The worker thread survives.
//! - With the server's debug option on, an unmapped failure carries a
//!   `google.rpc.DebugInfo` detail: the panic's backtrace, or the error's
//!   chain of causes. Off by default: backtraces tell a client about the
//!   server's internals.

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::error::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use crate::error_details::{DebugInfo, ErrorDetail};
use crate::status::Status;

type ErrorMapper =
    Box<dyn Fn(&(dyn Error + Send + Sync + 'static)) -> Option<Status> + Send + Sync>;
type PanicMapper = Box<dyn Fn(&(dyn Any + Send)) -> Option<Status> + Send + Sync>;

/// What a handler answers with: one response, or a stream of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Responses {
    /// Unary and client-streaming handlers.
    One,
    /// Server-streaming and bidirectional handlers.
    Stream,
}

/// The server's rules for turning handler failures into statuses.
#[derive(Default)]
pub(crate) struct ErrorPolicy {
    errors: Vec<ErrorMapper>,
    panics: Vec<PanicMapper>,
    pub(crate) debug: bool,
}

impl std::fmt::Debug for ErrorPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorPolicy")
            .field("mappings", &self.errors.len())
            .field("debug", &self.debug)
            .finish()
    }
}

thread_local! {
    /// Set while a handler runs with debugging on: the panic hook then
    /// records a backtrace here.
    static CAPTURE: Cell<bool> = const { Cell::new(false) };
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Chains a panic hook that records the backtrace of panics in handlers
/// that run with debugging on, then defers to the hook that was there.
fn install_backtrace_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURE.with(Cell::get) {
                let bt = Backtrace::force_capture().to_string();
                LAST_BACKTRACE.with(|b| *b.borrow_mut() = Some(bt));
            }
            previous(info);
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the handler panicked".to_owned()
    }
}

impl ErrorPolicy {
    /// Adds a mapping for error type `E` (from `Status::from_error` sources
    /// and from `panic_any` payloads).
    pub(crate) fn add<E, F>(&mut self, map: F)
    where
        E: Error + Send + Sync + 'static,
        F: Fn(&E) -> Status + Send + Sync + 'static,
    {
        let map = std::sync::Arc::new(map);
        let m = map.clone();
        self.errors
            .push(Box::new(move |e| e.downcast_ref::<E>().map(|e| m(e))));
        self.panics
            .push(Box::new(move |p| p.downcast_ref::<E>().map(|e| map(e))));
    }

    /// Runs a handler, turning a panic into a status. `responses` picks
    /// grpcio's wording: a panic while producing a response stream is
    /// "Exception iterating responses", any other "Exception calling
    /// application".
    pub(crate) fn run<T>(
        &self,
        responses: Responses,
        handler: impl FnOnce() -> Result<T, Status>,
    ) -> Result<T, Status> {
        if self.debug {
            install_backtrace_hook();
            CAPTURE.with(|c| c.set(true));
        }
        let result = catch_unwind(AssertUnwindSafe(handler));
        if self.debug {
            CAPTURE.with(|c| c.set(false));
        }
        match result {
            Ok(r) => r,
            Err(payload) => Err(self.panic_status(&*payload, responses)),
        }
    }

    fn panic_status(&self, payload: &(dyn Any + Send), responses: Responses) -> Status {
        if let Some(status) = self.panics.iter().find_map(|m| m(payload)) {
            return status;
        }
        let message = panic_message(payload);
        let what = match responses {
            Responses::Stream => "Exception iterating responses",
            Responses::One => "Exception calling application",
        };
        let status = Status::unknown(format!("{what}: {message}"));
        if !self.debug {
            return status;
        }
        let backtrace = LAST_BACKTRACE.with(|b| b.borrow_mut().take());
        status.add_error_detail(ErrorDetail::DebugInfo(DebugInfo {
            stack_entries: backtrace
                .map(|b| b.lines().map(|l| l.trim().to_owned()).collect())
                .unwrap_or_default(),
            detail: message,
        }))
    }

    /// Applies the mappings to a status a handler returned.
    pub(crate) fn map(&self, status: Status) -> Status {
        let Some(source) = status.source_error() else {
            return status;
        };
        if status.is_transport_error() {
            return status;
        }
        if let Some(mapped) = self.errors.iter().find_map(|m| m(source)) {
            return mapped;
        }
        if !self.debug {
            return status;
        }
        let mut chain = Vec::new();
        let mut cause: Option<&(dyn Error + 'static)> = Some(source);
        while let Some(e) = cause {
            chain.push(e.to_string());
            cause = e.source();
        }
        let detail = chain.first().cloned().unwrap_or_default();
        status.add_error_detail(ErrorDetail::DebugInfo(DebugInfo {
            stack_entries: chain,
            detail,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;

    #[derive(Debug, thiserror::Error)]
    #[error("out of tokens")]
    struct NoMoreTokens;

    #[test]
    fn panics_become_unknown_and_mapped_types_use_their_mapping() {
        let mut policy = ErrorPolicy::default();
        let err = policy
            .run::<()>(Responses::One, || panic!("boom"))
            .unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(err.message(), "Exception calling application: boom");
        let err = policy
            .run::<()>(Responses::Stream, || panic!("boom"))
            .unwrap_err();
        assert_eq!(err.message(), "Exception iterating responses: boom");
        assert!(err.details().is_empty());
        policy.add(|_: &NoMoreTokens| Status::resource_exhausted("Out of tokens!"));
        let err = policy
            .run::<()>(Responses::One, || std::panic::panic_any(NoMoreTokens))
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        let err = policy
            .run::<()>(Responses::One, || Err(Status::from_error(NoMoreTokens)))
            .unwrap_err();
        let err = policy.map(err);
        assert_eq!(err.message(), "Out of tokens!");
        let other = policy.map(Status::from_error(std::io::Error::other("disk")));
        assert_eq!(other.code(), Code::Unknown);
        assert!(other.details().is_empty());
    }

    #[test]
    fn debug_adds_debug_info() {
        let policy = ErrorPolicy {
            debug: true,
            ..ErrorPolicy::default()
        };
        let err = policy
            .run::<()>(Responses::Stream, || panic!("with trace"))
            .unwrap_err();
        let details = err.error_details().unwrap();
        match &details[..] {
            [ErrorDetail::DebugInfo(d)] => {
                assert_eq!(d.detail, "with trace");
                assert!(!d.stack_entries.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let err = policy.map(Status::from_error(std::io::Error::other("disk full")));
        assert!(
            matches!(&err.error_details().unwrap()[..], [ErrorDetail::DebugInfo(d)] if d.detail == "disk full")
        );
    }
}
