//! The grpcio (official Python gRPC) peers of the equivalence tests.
//!
//! * [`PythonEnv::get`] provisions, once per test process, a virtualenv under
//!   the workspace target dir (`target/grpcio-venv`) with the packages pinned
//!   in `tests/peers/python/requirements.txt`, and generates the Python stubs
//!   of `tests/proto/equivalence.proto` and `examples/proto/example.proto`
//!   with grpcio-tools. The work is done by `tests/peers/python/provision.py`
//!   (standard library only) under an exclusive `flock`, so test processes
//!   running side by side do not race; it is reused until `requirements.txt`
//!   changes. A missing `python3` or an unreachable package index fails the
//!   test with a message saying what to install: these tests never skip.
//! * [`GrpcioServer`] runs `server.py` (grpcio serving `equivalence.Equivalence`
//!   and `nameko.example`) on a port it picks, and kills it on drop. It also
//!   ends by itself when this process ends (it serves until its stdin closes).
//! * [`GrpcioClient`] runs `client.py serve`, a grpcio client driven by JSON
//!   lines over stdin/stdout (protocol in `client.py`'s docstring). Requests
//!   carry an id, so many threads can share one client process and its
//!   channels, as they would share one grpcio channel.
//! * [`GrpcioStandardServices`] runs `standard_services.py serve`, grpcio's
//!   own health checking client and server (grpcio-health-checking) and
//!   reflection client (grpcio-reflection), driven the same way, for
//!   `tests/standard_services_grpcio.rs`.
//!
//! Every wait has a timeout: a peer that hangs fails the test.
//!
//! Environment: `GRPC_BLOCKING_PYTHON` names the Python 3 used to create the
//! virtualenv (default `python3`); `CARGO_TARGET_DIR` moves the virtualenv
//! with the target dir.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::peer_process::{tail_of_file, wait_with_timeout, DriverClient, PeerServer, StderrTail};
pub use crate::peer_process::{target_dir, workspace_root};

/// How long the first provisioning (venv + pip install) may take.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long a peer may take to start (importing grpcio on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra time a client command may take beyond its call's own deadline.
const COMMAND_SLACK: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str =
    "The equivalence tests run the official Python gRPC (grpcio, from PyPI) \
as a peer. They need Python 3.10 or later with the venv module and pip on PATH as `python3` \
(or named by GRPC_BLOCKING_PYTHON) and access to the Python package index. \
On Debian/Ubuntu: `apt-get install python3 python3-venv python3-pip`.";

/// The folder of the Python peers' sources.
pub fn peers_dir() -> PathBuf {
    workspace_root().join("tests").join("peers").join("python")
}

/// The protos whose Python stubs the peers use.
pub fn protos() -> Vec<PathBuf> {
    let root = workspace_root();
    vec![
        root.join("tests").join("proto").join("equivalence.proto"),
        root.join("examples").join("proto").join("example.proto"),
    ]
}

/// A provisioned virtualenv with grpcio and the generated stubs.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// The virtualenv's interpreter.
    pub python: PathBuf,
    /// The folder of the generated `*_pb2.py` / `*_pb2_grpc.py`.
    pub stubs: PathBuf,
}

impl PythonEnv {
    /// The environment, provisioned on first use. Panics with what to install
    /// when it cannot be provisioned.
    pub fn get() -> &'static PythonEnv {
        static ENV: OnceLock<Result<PythonEnv, String>> = OnceLock::new();
        match ENV.get_or_init(provision) {
            Ok(env) => env,
            Err(message) => panic!("grpcio peer unavailable: {message}"),
        }
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg("-u")
            .arg(peers_dir().join(script))
            .arg("--stubs")
            .arg(&self.stubs);
        // grpcio must not route loopback calls through a proxy from the
        // environment, nor print its own noise into our protocol.
        for var in [
            "http_proxy",
            "https_proxy",
            "grpc_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }
}

fn provision() -> Result<PythonEnv, String> {
    let system_python = std::env::var("GRPC_BLOCKING_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&system_python)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Err(format!(
                "`{system_python} --version` failed ({status}). {INSTALL_HINT}"
            ))
        }
        Err(e) => return Err(format!("cannot run `{system_python}`: {e}. {INSTALL_HINT}")),
    }

    let target = target_dir();
    fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let venv = target.join("grpcio-venv");
    let log_path = target.join("grpcio-venv.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;

    let mut cmd = Command::new(&system_python);
    cmd.arg(peers_dir().join("provision.py"))
        .arg("--venv")
        .arg(&venv)
        .arg("--requirements")
        .arg(peers_dir().join("requirements.txt"));
    for proto in protos() {
        cmd.arg("--proto").arg(proto);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run provision.py: {e}. {INSTALL_HINT}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = wait_with_timeout(&mut child, PROVISION_TIMEOUT);
    let out = reader.join().unwrap_or_default();
    let log_tail = tail_of_file(&log_path, 40);
    match status {
        None => Err(format!(
            "provisioning the grpcio virtualenv at {} took over {:?}; log {}:\n{log_tail}",
            venv.display(),
            PROVISION_TIMEOUT,
            log_path.display()
        )),
        Some(status) if !status.success() => Err(format!(
            "provisioning the grpcio virtualenv at {} failed ({status}); log {}:\n{log_tail}\n{INSTALL_HINT}",
            venv.display(),
            log_path.display()
        )),
        Some(_) => {
            let line = out.lines().last().unwrap_or("");
            let value: Value = serde_json::from_str(line)
                .map_err(|e| format!("provision.py printed {out:?}: {e}"))?;
            Ok(PythonEnv {
                python: PathBuf::from(value["python"].as_str().unwrap_or_default()),
                stubs: PathBuf::from(value["stubs"].as_str().unwrap_or_default()),
            })
        }
    }
}

/// A grpcio server (`server.py`) on 127.0.0.1, killed on drop.
pub struct GrpcioServer(PeerServer);

impl GrpcioServer {
    /// Starts a server on a free port. Panics if it does not come up.
    pub fn start() -> GrpcioServer {
        GrpcioServer::start_with(&[])
    }

    /// Starts a server with more of `server.py`'s flags: `--address` (a
    /// Unix socket), the TLS flags, `--report_peer` (its docstring). Panics
    /// if it does not come up.
    pub fn start_with(args: &[OsString]) -> GrpcioServer {
        let env = PythonEnv::get();
        let mut command = env.command("server.py");
        command.args(args);
        GrpcioServer(PeerServer::start("grpcio server", command, START_TIMEOUT))
    }

    /// One server shared by all the tests of this process (ends with it).
    pub fn shared() -> &'static GrpcioServer {
        static SERVER: OnceLock<GrpcioServer> = OnceLock::new();
        SERVER.get_or_init(GrpcioServer::start)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.0.addr()
    }

    /// What the server printed on stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.0.stderr()
    }
}

/// A grpcio client process (`client.py serve`) driven by JSON lines.
/// Thread-safe: commands from many threads run concurrently in the client.
pub struct GrpcioClient(DriverClient);

impl GrpcioClient {
    /// Starts a client process. Panics if it does not answer.
    pub fn start() -> GrpcioClient {
        let env = PythonEnv::get();
        let mut command = env.command("client.py");
        command.arg("serve");
        GrpcioClient(DriverClient::start(
            "grpcio client",
            command,
            "grpcio",
            START_TIMEOUT,
        ))
    }

    /// One client process shared by all the tests of this process.
    pub fn shared() -> &'static GrpcioClient {
        static CLIENT: OnceLock<GrpcioClient> = OnceLock::new();
        CLIENT.get_or_init(GrpcioClient::start)
    }

    /// Sends one command (an "id" is added) and waits up to `timeout` for
    /// its answer. Errors say why, with the client's stderr.
    pub fn request(&self, command: Value, timeout: Duration) -> Result<Value, String> {
        self.0.request(command, timeout)
    }

    /// The process, for the driver of the equivalence tests.
    pub fn driver(&self) -> &DriverClient {
        &self.0
    }

    /// Extra time to allow beyond a call's deadline when waiting for its answer.
    pub fn slack() -> Duration {
        COMMAND_SLACK
    }
}

/// Runs `client.py example --target TARGET` (the example client's calls to
/// `nameko.example` made by grpcio) and returns its stdout lines.
pub fn run_example_client(
    target: impl std::fmt::Display,
    timeout: Duration,
) -> Result<Vec<Value>, String> {
    run_example_client_with(target, &[], timeout)
}

/// [`run_example_client`] with more of its flags: the TLS flags
/// (`client.py`'s docstring).
pub fn run_example_client_with(
    target: impl std::fmt::Display,
    args: &[OsString],
    timeout: Duration,
) -> Result<Vec<Value>, String> {
    let env = PythonEnv::get();
    let mut child = env
        .command("client.py")
        .arg("example")
        .arg("--target")
        .arg(target.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the grpcio example client: {e}"))?;
    let stderr = StderrTail::default();
    stderr.collect(child.stderr.take().expect("piped stderr"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = wait_with_timeout(&mut child, timeout);
    let out = reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => out
            .lines()
            .map(|l| serde_json::from_str(l).map_err(|e| format!("bad line {l:?}: {e}")))
            .collect(),
        Some(s) => Err(format!(
            "the grpcio example client failed ({s}); stderr:\n{}",
            stderr.text()
        )),
        None => Err(format!(
            "the grpcio example client took over {timeout:?}; stderr:\n{}",
            stderr.text()
        )),
    }
}

/// grpcio's own standard services (`standard_services.py serve`): the
/// health checking client and server of grpcio-health-checking and the
/// reflection client of grpcio-reflection, driven by JSON lines (protocol in
/// the script's docstring). One process per test: it ends when dropped.
pub struct GrpcioStandardServices(DriverClient);

impl GrpcioStandardServices {
    /// Starts the process. Panics if it does not answer.
    pub fn start() -> GrpcioStandardServices {
        let env = PythonEnv::get();
        let mut command = env.command("standard_services.py");
        command.arg("serve");
        GrpcioStandardServices(DriverClient::start(
            "grpcio standard services peer",
            command,
            "grpcio_health_checking",
            START_TIMEOUT,
        ))
    }

    /// Sends one command (an "id" is added) and waits up to `timeout` for
    /// its answer. Panics, with the peer's stderr, on an error answer or no
    /// answer in time.
    pub fn request(&self, command: Value, timeout: Duration) -> Value {
        self.0
            .request(command.clone(), timeout)
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }
}

/// What `client.py example` prints against nameko-grpc's example service
/// when every call works.
pub fn example_lines() -> Value {
    serde_json::json!([
        {"method": "unary_unary", "replies": [{"message": "AA", "seqno": 0}]},
        {"method": "unary_stream", "replies": [{"message": "AA", "seqno": 1}, {"message": "AA", "seqno": 2}]},
        {"method": "stream_unary", "replies": [{"message": "A,BB", "seqno": 0}]},
        {"method": "stream_stream", "replies": [{"message": "A", "seqno": 1}, {"message": "BB", "seqno": 2}]},
    ])
}
