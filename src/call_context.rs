//! [`CallContext`]: what a call made from inside a handler may carry
//! forward from the call being handled.
//!
//! The server's context implements it, and the client's
//! [`CallOptions::inherit_deadline`](crate::CallOptions::inherit_deadline)
//! and [`CallOptions::propagate_metadata`](crate::CallOptions::propagate_metadata)
//! read it, so that the server and the client need not know each other.

use std::time::Instant;

use crate::metadata::Metadata;

/// The parts of an incoming call that outgoing calls can inherit: its
/// deadline and its metadata. Implemented by
/// [`ServerContext`](crate::server::ServerContext).
pub trait CallContext {
    /// When the incoming call's deadline passes, if it has one.
    fn deadline(&self) -> Option<Instant>;
    /// The incoming call's metadata.
    fn metadata(&self) -> &Metadata;
}
