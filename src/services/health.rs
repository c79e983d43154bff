//! gRPC health checking, `grpc.health.v1.Health` (grpc/grpc
//! `doc/health-checking.md`): what load balancers, Kubernetes' gRPC probes
//! and `grpc_health_probe` call to learn whether a server, or one of its
//! services, serves.
//!
//! Every server serves it unless told not to
//! ([`ServerBuilder::health`]), with `""` (the server as a whole) and each
//! service it hosts `SERVING`. The application changes a status through the
//! [`HealthReporter`] from [`Server::health`](crate::Server::health) or
//! [`ServerHandle::health`](crate::ServerHandle::health); a graceful
//! shutdown turns every status `NOT_SERVING` before calls drain, and ends
//! the watches.
//!
//! ```
//! use grpc_blocking::health::{HealthClient, ServingStatus};
//! use grpc_blocking::Server;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder().bind("127.0.0.1:0")?.spawn()?;
//! let health = server.health().expect("health checking is on by default");
//!
//! let client = HealthClient::connect(server.target())?;
//! assert_eq!(client.status("")?, ServingStatus::Serving);
//!
//! health.set_status("", ServingStatus::NotServing);
//! assert_eq!(client.status("")?, ServingStatus::NotServing);
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::rt::sync::{Condvar, Mutex};

use crate::server::plugin::Plugin;
use crate::server::service::Registry;
use crate::server::{ResponseSink, ServerBuilder, ServerContext};
use crate::status::Status;
use crate::{Server, ServerHandle};

/// The health checking protocol's messages, service trait, server adapter
/// and client, generated from `grpc/health/v1/health.proto`.
pub mod v1 {
    include!("generated/grpc.health.v1.rs");
}

pub use v1::health_check_response::ServingStatus;
pub use v1::HealthClient;

use v1::{HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse};

/// The full name of the health service.
const SERVICE: &str = "grpc.health.v1.Health";

impl HealthClient {
    /// Checks `service` (`""` for the server as a whole): its status, or
    /// `NOT_FOUND` for a service the server does not know.
    pub fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        let reply = self.check(HealthCheckRequest {
            service: service.to_owned(),
        })?;
        Ok(reply.status())
    }
}

/// The statuses a server reports, by service name.
struct Table {
    statuses: BTreeMap<String, ServingStatus>,
    /// Set by a graceful shutdown: everything is `NOT_SERVING` for good.
    shutting_down: bool,
}

struct Shared {
    table: Mutex<Table>,
    /// Signalled on every change, at shutdown, and when a watch is
    /// cancelled.
    changed: Condvar,
}

/// The application's handle on a server's health statuses: cheap to clone,
/// usable from any thread. Every change reaches the clients watching.
#[derive(Clone)]
pub struct HealthReporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HealthReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthReporter")
            .field("statuses", &self.shared.table.lock().statuses)
            .finish()
    }
}

impl HealthReporter {
    /// A reporter that knows no service yet.
    fn new() -> Self {
        HealthReporter {
            shared: Arc::new(Shared {
                table: Mutex::new(Table {
                    statuses: BTreeMap::new(),
                    shutting_down: false,
                }),
                changed: Condvar::new(),
            }),
        }
    }

    /// Sets `service`'s status (`""` for the server as a whole); a service
    /// not known before becomes known. Ignored once the server is shutting
    /// down (everything is then `NOT_SERVING`).
    pub fn set_status(&self, service: &str, status: ServingStatus) {
        let mut table = self.shared.table.lock();
        if table.shutting_down {
            return;
        }
        table.statuses.insert(service.to_owned(), status);
        self.shared.changed.notify_all();
    }

    /// `set_status(service, ServingStatus::Serving)`.
    pub fn set_serving(&self, service: &str) {
        self.set_status(service, ServingStatus::Serving);
    }

    /// `set_status(service, ServingStatus::NotServing)`.
    pub fn set_not_serving(&self, service: &str) {
        self.set_status(service, ServingStatus::NotServing);
    }

    /// Forgets `service`: Check answers `NOT_FOUND` for it, and its
    /// watchers see `SERVICE_UNKNOWN`.
    pub fn clear_status(&self, service: &str) {
        let mut table = self.shared.table.lock();
        if table.statuses.remove(service).is_some() {
            self.shared.changed.notify_all();
        }
    }

    /// `service`'s status, if the server knows it.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.shared.table.lock().statuses.get(service).copied()
    }

    /// Turns everything `NOT_SERVING` for good and ends the watches.
    fn shut_down(&self) {
        let mut table = self.shared.table.lock();
        table.shutting_down = true;
        for status in table.statuses.values_mut() {
            *status = ServingStatus::NotServing;
        }
        self.shared.changed.notify_all();
    }

    /// Sets `service` to `SERVING` unless the application already set it.
    fn serve_by_default(&self, service: &str) {
        let mut table = self.shared.table.lock();
        table
            .statuses
            .entry(service.to_owned())
            .or_insert(ServingStatus::Serving);
    }
}

/// The health service a server hosts: answers from its reporter.
struct HealthService {
    reporter: HealthReporter,
}

impl v1::Health for HealthService {
    fn check(
        &self,
        request: HealthCheckRequest,
        _ctx: &ServerContext,
    ) -> Result<HealthCheckResponse, Status> {
        match self.reporter.status(&request.service) {
            Some(status) => Ok(response(status)),
            None => Err(Status::not_found(format!(
                "unknown service {:?}: this server reports no health for it",
                request.service
            ))),
        }
    }

    fn list(
        &self,
        _request: HealthListRequest,
        _ctx: &ServerContext,
    ) -> Result<HealthListResponse, Status> {
        let table = self.reporter.shared.table.lock();
        Ok(HealthListResponse {
            statuses: table
                .statuses
                .iter()
                .map(|(name, status)| (name.clone(), response(*status)))
                .collect(),
        })
    }

    fn watch(
        &self,
        request: HealthCheckRequest,
        ctx: &ServerContext,
        responses: &mut ResponseSink<HealthCheckResponse>,
    ) -> Result<(), Status> {
        let shared = &self.reporter.shared;
        // A cancelled watch wakes up to see it.
        let waker = shared.clone();
        ctx.on_cancel(move || {
            let _table = waker.table.lock();
            waker.changed.notify_all();
        });
        let mut sent = None;
        loop {
            let (status, last) = {
                let mut table = shared.table.lock();
                loop {
                    if ctx.is_cancelled() {
                        return Err(Status::cancelled("the watch was cancelled"));
                    }
                    let now = table
                        .statuses
                        .get(&request.service)
                        .copied()
                        .unwrap_or(ServingStatus::ServiceUnknown);
                    if sent != Some(now) || table.shutting_down {
                        break (now, table.shutting_down);
                    }
                    shared.changed.wait(&mut table);
                }
            };
            if sent != Some(status) {
                responses.send(response(status))?;
                sent = Some(status);
            }
            if last {
                // The server is going away: the watch ends cleanly, its
                // last word NOT_SERVING (or SERVICE_UNKNOWN).
                return Ok(());
            }
        }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

/// Health checking plugged into a server.
struct HealthPlugin {
    reporter: HealthReporter,
}

impl Plugin for HealthPlugin {
    fn install(&self, registry: &mut Registry) {
        if registry.get(SERVICE).is_some() {
            // The application brought its own health service.
            return;
        }
        registry.add(Arc::new(v1::HealthServer::new(HealthService {
            reporter: self.reporter.clone(),
        })));
    }

    fn installed(&self, registry: &Registry) {
        self.reporter.serve_by_default("");
        for service in registry.iter() {
            self.reporter.serve_by_default(service.name());
        }
    }

    fn shutting_down(&self) {
        self.reporter.shut_down();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl ServerBuilder {
    /// Whether the server serves gRPC health checking,
    /// `grpc.health.v1.Health` (default: on). It starts with `""` (the
    /// server as a whole) and every service the server hosts `SERVING`;
    /// change statuses through [`Server::health`]. A graceful shutdown
    /// turns them all `NOT_SERVING` before in-flight calls drain, and ends
    /// every watch. A health service added with
    /// [`add_service`](ServerBuilder::add_service) is served instead of
    /// this one.
    ///
    /// It is on by default because the health check that matters is the
    /// one nobody forgot: a load balancer or an orchestrator probing a
    /// server without it sees a dead server.
    pub fn health(mut self, enabled: bool) -> Self {
        if enabled {
            if self.plugins.get::<HealthPlugin>().is_none() {
                self.plugins.set(HealthPlugin {
                    reporter: HealthReporter::new(),
                });
            }
        } else {
            self.plugins.remove::<HealthPlugin>();
        }
        self
    }
}

impl Server {
    /// The handle on this server's health statuses; `None` when health
    /// checking is off ([`ServerBuilder::health`]).
    pub fn health(&self) -> Option<HealthReporter> {
        self.plugins()
            .get::<HealthPlugin>()
            .map(|p| p.reporter.clone())
    }
}

impl ServerHandle {
    /// The handle on this server's health statuses; `None` when health
    /// checking is off ([`ServerBuilder::health`]).
    pub fn health(&self) -> Option<HealthReporter> {
        self.plugins()
            .get::<HealthPlugin>()
            .map(|p| p.reporter.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_turns_everything_not_serving_for_good() {
        let r = HealthReporter::new();
        r.set_serving("");
        r.set_serving("a.B");
        r.shut_down();
        assert_eq!(r.status(""), Some(ServingStatus::NotServing));
        assert_eq!(r.status("a.B"), Some(ServingStatus::NotServing));
        r.set_serving("a.B");
        assert_eq!(r.status("a.B"), Some(ServingStatus::NotServing));
    }

    #[test]
    fn defaults_never_override_what_the_application_set() {
        let r = HealthReporter::new();
        r.set_not_serving("a.B");
        r.serve_by_default("a.B");
        r.serve_by_default("c.D");
        assert_eq!(r.status("a.B"), Some(ServingStatus::NotServing));
        assert_eq!(r.status("c.D"), Some(ServingStatus::Serving));
        r.clear_status("c.D");
        assert_eq!(r.status("c.D"), None);
    }
}
