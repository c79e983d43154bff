//! A logging interceptor on the [`log`] facade, for either side: one line
//! per call when it ends, with its method, peer, status, duration and
//! traffic. OK calls log at `info`, failed ones at `warn`; nothing is
//! formatted when the level is off.
//!
//! ```
//! use grpc_blocking::{Channel, Server};
//! use grpc_blocking_examples::logging::{LogCalls, LogClientCalls};
//! use grpc_blocking_examples::nameko::{ExampleClient, ExampleRequest, ExampleServer};
//! use grpc_blocking_examples::ExampleService;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder()
//!     .intercept(LogCalls)
//!     .add_service(ExampleServer::new(ExampleService))
//!     .bind("127.0.0.1:0")?
//!     .spawn()?;
//! let channel = Channel::builder(server.target()).intercept(LogClientCalls).connect()?;
//! ExampleClient::new(channel).unary_unary(ExampleRequest::default())?;
//! // With a logger installed (env_logger, say, and RUST_LOG=info):
//! // INFO  grpc::server: /nameko.example/unary_unary from ipv4:127.0.0.1:41302: OK in 85µs, 1 message (5 B) in, 1 out (7 B)
//! # Ok(())
//! # }
//! ```

use grpc_blocking::server::{CallEnd, Interceptor};
use grpc_blocking::{client, Code};
use log::Level;

/// The server side: logs every call under the target `grpc::server`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogCalls;

fn level(code: Code) -> Level {
    if code == Code::Ok {
        Level::Info
    } else {
        Level::Warn
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl Interceptor for LogCalls {
    fn after(&self, call: &CallEnd<'_>) {
        let status = call.status();
        let level = level(status.code());
        if !log::log_enabled!(target: "grpc::server", level) {
            return;
        }
        let (n_in, n_out) = (call.messages_received(), call.messages_sent());
        log::log!(
            target: "grpc::server",
            level,
            "{} from {}: {}{}{} in {:?}, {n_in} message{} ({} B) in, {n_out} out ({} B)",
            call.method(),
            call.peer(),
            status.code(),
            if status.message().is_empty() { "" } else { ": " },
            status.message(),
            call.duration(),
            plural(n_in),
            call.bytes_received(),
            call.bytes_sent(),
        );
    }
}

/// The client side: logs every call under the target `grpc::client`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogClientCalls;

impl client::Interceptor for LogClientCalls {
    fn after(&self, call: &client::CallEnd<'_>) {
        let status = call.status();
        let level = level(status.code());
        if !log::log_enabled!(target: "grpc::client", level) {
            return;
        }
        let (n_out, n_in) = (call.messages_sent(), call.messages_received());
        log::log!(
            target: "grpc::client",
            level,
            "{}: {}{}{} in {:?}, {n_out} message{} ({} B) out, {n_in} in ({} B)",
            call.method(),
            status.code(),
            if status.message().is_empty() { "" } else { ": " },
            status.message(),
            call.duration(),
            plural(n_out),
            call.bytes_sent(),
            call.bytes_received(),
        );
    }
}
