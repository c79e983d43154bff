//! [`CallOptions`]: the metadata, deadline and compression of one call.

use std::time::{Duration, Instant};

use crate::call_context::CallContext;
use crate::metadata::{Metadata, MetadataValue};
use crate::wire::compression::Encoding;

/// Options for one call: metadata, timeout or deadline, compression.
///
/// ```
/// use std::time::Duration;
/// use grpc_blocking::{CallOptions, Metadata};
/// let mut md = Metadata::new();
/// md.insert("x-request-id", "42").unwrap();
/// let options = CallOptions::new().metadata(md).timeout(Duration::from_secs(2));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub(crate) metadata: Metadata,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    pub(crate) encoding: Option<Encoding>,
    /// `None`: as the service config says (default false).
    pub(crate) wait_for_ready: Option<bool>,
    /// Attempts made before this one (a retry's `grpc-previous-rpc-attempts`).
    pub(crate) previous_attempts: u32,
}

impl CallOptions {
    /// Default options: no metadata, no timeout, the channel's compression.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Metadata to send with the request.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The call's timeout: sent to the server as `grpc-timeout` and enforced
    /// here; when it passes the call ends with `DEADLINE_EXCEEDED`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// An absolute deadline for the call (combined with
    /// [`CallOptions::timeout`], the earlier one wins).
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// With `true`, the call waits for a backend to be ready (up to its
    /// deadline) instead of failing at once with `UNAVAILABLE` while the
    /// channel is in TRANSIENT_FAILURE (default false, as in gRPC).
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.wait_for_ready = Some(wait);
        self
    }

    /// Compresses this call's requests with `encoding` (overrides the
    /// channel's default).
    pub fn compression(mut self, encoding: Encoding) -> Self {
        self.encoding = Some(encoding);
        self
    }

    /// Makes a call from inside a handler inherit the incoming call's
    /// deadline (pass the handler's
    /// [`ServerContext`](crate::server::ServerContext)), so the whole chain
    /// of calls gives up together.
    pub fn inherit_deadline(mut self, incoming: &impl CallContext) -> Self {
        if let Some(d) = incoming.deadline() {
            self.deadline = Some(self.deadline.map_or(d, |mine| mine.min(d)));
        }
        self
    }

    /// Copies the incoming call's metadata entries named in `names` into
    /// this call's metadata: context propagation (a call-id stack, a trace
    /// id) from a handler to the calls it makes.
    pub fn propagate_metadata(mut self, incoming: &impl CallContext, names: &[&str]) -> Self {
        for (name, value) in incoming.metadata().iter() {
            if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                // Received metadata was validated on the way in.
                let _ = match value {
                    MetadataValue::Ascii(v) => self.metadata.insert(name, v),
                    MetadataValue::Binary(b) => self.metadata.insert_bin(name, b),
                };
            }
        }
        self
    }

    /// The time left for the call, from its timeout and deadline.
    pub(crate) fn time_left(&self, now: Instant) -> Option<Duration> {
        let from_deadline = self.deadline.map(|d| d.saturating_duration_since(now));
        match (self.timeout, from_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies a method's service config: its timeout (the earlier of it
    /// and the call's own wins) and its `waitForReady` (unless the call
    /// chose).
    pub(crate) fn with_method_config(
        mut self,
        method: &crate::client::service_config::MethodConfig,
        now: Instant,
    ) -> Self {
        if let Some(timeout) = method.timeout {
            let d = now + timeout;
            self.deadline = Some(self.deadline.map_or(d, |mine| mine.min(d)));
        }
        if self.wait_for_ready.is_none() {
            self.wait_for_ready = method.wait_for_ready;
        }
        self
    }

    /// The call's deadline, counting its timeout from `now`.
    pub(crate) fn deadline_from(&self, now: Instant) -> Option<Instant> {
        self.time_left(now).map(|left| now + left)
    }

    /// The same options with the timeout turned into a deadline from `now`,
    /// so that retries keep the first attempt's deadline.
    pub(crate) fn fixed_deadline(mut self, now: Instant) -> Self {
        if let Some(t) = self.time_left(now) {
            self.deadline = Some(now + t);
            self.timeout = None;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Incoming {
        deadline: Option<Instant>,
        metadata: Metadata,
    }

    impl CallContext for Incoming {
        fn deadline(&self) -> Option<Instant> {
            self.deadline
        }
        fn metadata(&self) -> &Metadata {
            &self.metadata
        }
    }

    #[test]
    fn the_earlier_of_timeout_and_deadline_wins() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let o = CallOptions::new().timeout(s(5)).deadline(now + s(3));
        assert_eq!(o.time_left(now), Some(s(3)));
        let o = CallOptions::new().timeout(s(2)).deadline(now + s(3));
        assert_eq!(o.time_left(now), Some(s(2)));
        assert_eq!(CallOptions::new().time_left(now), None);
        let fixed = CallOptions::new().timeout(s(2)).fixed_deadline(now);
        assert_eq!(fixed.time_left(now + s(1)), Some(s(1)));
    }

    #[test]
    fn inherits_the_deadline_and_chosen_metadata() {
        let now = Instant::now();
        let mut metadata = Metadata::new();
        metadata.insert("x-call-id", "1").unwrap();
        metadata.insert("x-other", "2").unwrap();
        metadata.insert_bin("x-trace-bin", &[0, 255]).unwrap();
        let incoming = Incoming {
            deadline: Some(now + Duration::from_secs(1)),
            metadata,
        };
        let o = CallOptions::new()
            .timeout(Duration::from_secs(10))
            .inherit_deadline(&incoming)
            .propagate_metadata(&incoming, &["X-Call-Id", "x-trace-bin"]);
        assert_eq!(o.time_left(now), Some(Duration::from_secs(1)));
        assert_eq!(o.metadata.get("x-call-id"), Some("1"));
        assert_eq!(o.metadata.get_bin("x-trace-bin"), Some(&[0, 255][..]));
        assert_eq!(o.metadata.get("x-other"), None);
    }
}
