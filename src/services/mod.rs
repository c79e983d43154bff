//! The standard services a gRPC server is expected to offer, built on the
//! server's public API like any application's service and plugged in
//! through `server/plugin.rs`:
//!
//! | file | what |
//! | --- | --- |
//! | `health.rs` | `grpc.health.v1.Health` (the `health` feature): the reporter the application keeps, Check, List and Watch |
//! | `reflection.rs` | `grpc.reflection.v1` and `v1alpha` (the `reflection` feature): the descriptor index, and the answers |
//! | `proto/` | the protos of both, with the names and numbers every gRPC client uses |
//! | `generated/` | their messages, service traits and clients, pre-generated from `proto/` so that no user compiles them (`codegen`'s test `pregenerated_library_services_are_current` regenerates them and fails on any difference; `UPDATE_GOLDEN=1` rewrites them) |
//!
//! This file holds the standard services' builder settings and their
//! defaults.

#[cfg(feature = "health")]
pub mod health;
#[cfg(feature = "reflection")]
pub mod reflection;

use crate::server::ServerBuilder;

impl Default for ServerBuilder {
    /// A builder with no services and the standard services' defaults:
    /// health checking on (with the `health` feature), reflection off.
    fn default() -> Self {
        let builder = ServerBuilder::bare();
        #[cfg(feature = "health")]
        let builder = builder.health(true);
        builder
    }
}
