//! Transparent retry: a call the server never processed (refused with
//! REFUSED_STREAM, above a GOAWAY's last stream, or never sent before its
//! connection died) is started again, up to [`TRANSPARENT_RETRIES`] times,
//! when its whole request is known (unary and server-streaming calls). The
//! retry keeps the first attempt's deadline.

use std::sync::Arc;

use bytes::Bytes;

use crate::client::link::Opened;
use crate::client::options::CallOptions;
use crate::status::Status;

/// Transparent retries of one call.
pub(crate) const TRANSPARENT_RETRIES: u8 = 2;

/// What a retry needs of its channel: to open the call again.
pub(crate) trait Reopen: Send + Sync {
    /// Opens the call on a live (maybe new) connection, with `body` as its
    /// whole request.
    fn reopen(
        &self,
        path: &'static str,
        options: &CallOptions,
        body: Bytes,
    ) -> Result<Opened, Status>;
}

/// How one call is started again.
pub(crate) struct RetryPlan {
    reopen: Arc<dyn Reopen>,
    path: &'static str,
    options: CallOptions,
    body: Bytes,
    attempts_left: u8,
}

impl RetryPlan {
    pub(crate) fn new(
        reopen: Arc<dyn Reopen>,
        path: &'static str,
        options: CallOptions,
        body: Bytes,
    ) -> Self {
        RetryPlan {
            reopen,
            path,
            options,
            body,
            attempts_left: TRANSPARENT_RETRIES,
        }
    }

    /// Starts the next attempt; `None` when none is left.
    pub(crate) fn next_attempt(&mut self) -> Option<Result<Opened, Status>> {
        self.attempts_left = self.attempts_left.checked_sub(1)?;
        Some(
            self.reopen
                .reopen(self.path, &self.options, self.body.clone()),
        )
    }
}
