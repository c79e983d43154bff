//! A fleet of backends for the many-servers tests: the example service
//! answering with the backend's name (so a test counts where calls went),
//! in this process or in a child process a test can kill outright
//! (`src/bin/test-backend.rs`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grpc_blocking::server::{Requests, ResponseSink, ServerContext};
use grpc_blocking::{Server, ServerHandle, Status};
use grpc_blocking_examples::nameko::{Example, ExampleReply, ExampleRequest, ExampleServer};

/// The example service, answering with its backend's name: a unary reply's
/// message is the name; `"sleep:MS"` first waits MS milliseconds (or until
/// the call is cancelled); streams carry the name in every reply.
#[derive(Debug, Clone)]
pub struct NamedBackend {
    /// What replies say.
    pub name: String,
}

fn reply(name: &str, seqno: i32) -> ExampleReply {
    ExampleReply {
        message: name.to_owned(),
        seqno,
    }
}

fn maybe_sleep(request: &ExampleRequest, ctx: &ServerContext) {
    if let Some(ms) = request
        .value
        .strip_prefix("sleep:")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until && !ctx.is_cancelled() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Example for NamedBackend {
    fn unary_unary(
        &self,
        request: ExampleRequest,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        maybe_sleep(&request, ctx);
        Ok(reply(&self.name, 0))
    }

    fn unary_stream(
        &self,
        request: ExampleRequest,
        ctx: &ServerContext,
        responses: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        maybe_sleep(&request, ctx);
        for seqno in 1..=3 {
            responses.send(reply(&self.name, seqno))?;
        }
        Ok(())
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        _ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        let mut n = 0;
        for r in requests {
            r?;
            n += 1;
        }
        Ok(reply(&self.name, n))
    }

    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        for (i, r) in requests.enumerate() {
            r?;
            responses.send(reply(&self.name, i as i32 + 1))?;
        }
        Ok(())
    }
}

/// Serves a [`NamedBackend`] called `name` on `addr` in this process.
pub fn serve_named(name: &str, addr: impl std::net::ToSocketAddrs) -> ServerHandle {
    Server::builder()
        .add_service(ExampleServer::new(NamedBackend { name: name.into() }))
        .bind(addr)
        .expect("bind a backend")
        .spawn()
        .expect("start a backend")
}

/// A backend in a child process (the `test-backend` binary), killed
/// (SIGKILL) on drop.
pub struct BackendProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl BackendProcess {
    /// Starts `bin` (`env!("CARGO_BIN_EXE_test-backend")`) serving a
    /// backend called `name` on `host:port` (port 0 for any), optionally
    /// inside network namespace `netns`, and waits (up to 30 s) until it
    /// listens.
    pub fn start(bin: &Path, host: &str, port: u16, name: &str, netns: Option<&str>) -> Self {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args([host, &port.to_string(), name])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{} did not say where it listens", bin.display()));
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the backend: {line:?}"));
        BackendProcess { child, addr }
    }

    /// Kills the process at once (SIGKILL): its sockets close without a
    /// goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
