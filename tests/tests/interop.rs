//! The gRPC interop test cases (gRPC's doc/interop-test-descriptions.md, the
//! 18 that need no cloud credentials) in the four pairings {our server,
//! grpcio server} x {our client, grpcio client}, in cleartext and over TLS.
//! Each test runs every case and asserts the client's summary line:
//! `18 passed, 0 failed`.
//!
//! * Our server is `grpc_blocking_examples::interop::server_builder`,
//!   in-process on a free port; our client is
//!   `grpc_blocking_examples::interop::run_cases_with` (the same functions
//!   as the `interop-server` and `interop-client` binaries).
//! * The grpcio peers are `tests/peers/python/interop/interop_server.py` and
//!   `interop_client.py`, run with the virtualenv of the equivalence tests
//!   (`PythonEnv`, provisioned on first use). Their Python stubs are generated
//!   here from our copy of the interop protos (`examples/proto/grpc/testing/`)
//!   with grpc_tools.protoc, once, into
//!   `<target>/grpcio-interop-stubs/<hash of the protos and requirements>/`.
//! * Over TLS, every side uses the test certificates (`Certs`): the servers
//!   the server certificate, the clients the test CA, and every client dials
//!   127.0.0.1 expecting `foo.test.example` (the interop flags
//!   `--use_tls --use_test_ca --ca_file --server_host_override`; grpcio's
//!   `ssl_server_credentials`, `ssl_channel_credentials` and
//!   `grpc.ssl_target_name_override`).
//! * grpcio cannot tell whether a message arrived compressed, so its peers
//!   read that from a relay on the wire (`wiretap.py`). Over TLS the relay
//!   has to be a TLS end itself (Python's `ssl`), so only the cases that
//!   need it go through it: the grpcio client routes its two
//!   server-compression cases through its relay by itself, and against the
//!   grpcio server the two client-compression cases are run on its wire-tap
//!   port, every other case on grpcio's own TLS port (`Server::runs`).
//!
//! Every test starts its own servers (the grpcio server's compression checks
//! assume one client at a time), every case has its own timeout in the
//! clients, and every wait here has one too.
//!
//! `cargo test -p grpc-blocking-tests --test interop ours_client` runs the
//! pairings of our client; `-- over_tls` the pairings over TLS.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use grpc_blocking::ServerHandle;
use grpc_blocking_examples::interop::{self, ClientConfig, Report, ALL_CASES};
use grpc_blocking_tests::certs::{Certs, SERVER_NAME};
use grpc_blocking_tests::python::{peers_dir, target_dir, workspace_root, PythonEnv};
use grpc_blocking_tests::support::with_timeout;

/// The whole run of one pairing (18 cases, each with its own 30 s timeout).
const PAIRING_TIMEOUT_SECS: u64 = 18 * 30 + 120;
/// How long the grpcio server may take to start, or protoc to run.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The interop protos, relative to their include root `examples/proto`.
const PROTOS: [&str; 3] = [
    "grpc/testing/empty.proto",
    "grpc/testing/messages.proto",
    "grpc/testing/test.proto",
];

/// The cases whose server-side checks read the grpcio server's wire tap
/// (`expect_compressed`).
const SERVER_WIRETAP_CASES: [&str; 2] = ["client_compressed_unary", "client_compressed_streaming"];

// ---- the pairings ---------------------------------------------------------

#[test]
fn ours_client_ours_server() {
    pairing(Side::Ours, Side::Ours, Transport::Plaintext);
}

#[test]
fn ours_client_grpcio_server() {
    pairing(Side::Ours, Side::Grpcio, Transport::Plaintext);
}

#[test]
fn grpcio_client_ours_server() {
    pairing(Side::Grpcio, Side::Ours, Transport::Plaintext);
}

#[test]
fn grpcio_client_grpcio_server() {
    pairing(Side::Grpcio, Side::Grpcio, Transport::Plaintext);
}

#[test]
fn ours_client_ours_server_over_tls() {
    pairing(Side::Ours, Side::Ours, Transport::Tls);
}

#[test]
fn ours_client_grpcio_server_over_tls() {
    pairing(Side::Ours, Side::Grpcio, Transport::Tls);
}

#[test]
fn grpcio_client_ours_server_over_tls() {
    pairing(Side::Grpcio, Side::Ours, Transport::Tls);
}

#[test]
fn grpcio_client_grpcio_server_over_tls() {
    pairing(Side::Grpcio, Side::Grpcio, Transport::Tls);
}

/// Whose implementation plays a part.
#[derive(Clone, Copy, Debug)]
enum Side {
    Ours,
    Grpcio,
}

/// Cleartext (h2c) or TLS with the test certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Plaintext,
    Tls,
}

/// Runs every case with `client` against a fresh `server` and checks that
/// all of them passed.
fn pairing(client: Side, server: Side, transport: Transport) {
    with_timeout(PAIRING_TIMEOUT_SECS, move || {
        let server = match server {
            Side::Ours => Server::Ours(our_server(transport)),
            Side::Grpcio => Server::Grpcio(GrpcioInteropServer::start(transport)),
        };
        for (port, cases) in server.runs() {
            let output = match client {
                Side::Ours => run_our_client(port, &cases, transport),
                Side::Grpcio => run_grpcio_client(port, &cases, transport),
            };
            let pairing = format!("{client:?} client, {server} ({transport:?}, port {port})");
            assert_summary(&pairing, &output, cases.len());
        }
    });
}

/// A running interop server of either side.
enum Server {
    Ours(ServerHandle),
    Grpcio(GrpcioInteropServer),
}

impl Server {
    /// The runs a client makes to cover every case: (port, cases). One run
    /// on the server's port, except against the grpcio server over TLS:
    /// the cases its wire tap checks go to the wire-tap port.
    fn runs(&self) -> Vec<(u16, Vec<&'static str>)> {
        let (port, wiretap) = match self {
            Server::Ours(handle) => (handle.local_addr().port(), None),
            Server::Grpcio(server) => (server.port, Some(server.wiretap_port)),
        };
        match wiretap {
            Some(wiretap) if wiretap != port => {
                let (tapped, direct) = ALL_CASES
                    .iter()
                    .partition(|case| SERVER_WIRETAP_CASES.contains(case));
                vec![(port, direct), (wiretap, tapped)]
            }
            _ => vec![(port, ALL_CASES.to_vec())],
        }
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Server::Ours(_) => write!(f, "our server"),
            Server::Grpcio(server) => {
                write!(f, "grpcio server (its stderr:\n{})", server.stderr_text())
            }
        }
    }
}

/// Checks the last line of a client's output: `N passed, 0 failed`, N the
/// number of cases run.
fn assert_summary(pairing: &str, output: &str, cases: usize) {
    let last = output.lines().last().unwrap_or_default();
    let summary = Report::parse_summary(last)
        .unwrap_or_else(|| panic!("{pairing}: no summary line in the output:\n{output}"));
    assert_eq!(
        summary,
        (cases, 0),
        "{pairing}: expected `{cases} passed, 0 failed`; the client printed:\n{output}"
    );
}

// ---- our side ------------------------------------------------------------

/// Our interop server on a free loopback port.
fn our_server(transport: Transport) -> ServerHandle {
    let mut builder = interop::server_builder();
    if transport == Transport::Tls {
        builder = builder.tls(Certs::get().server_tls());
    }
    builder
        .bind(("127.0.0.1", 0))
        .expect("bind our interop server")
        .spawn()
        .expect("start our interop server")
}

/// Runs `cases` with our client against 127.0.0.1:`port`; returns what the
/// `interop-client` binary would print.
fn run_our_client(port: u16, cases: &[&str], transport: Transport) -> String {
    let mut config = ClientConfig::new("127.0.0.1", port);
    if transport == Transport::Tls {
        // --use_tls --use_test_ca --ca_file ca.pem --server_host_override
        config.tls = Some(Certs::get().client_tls().server_name(SERVER_NAME));
    }
    interop::client::run_cases_with(&config, cases, |_| {}).to_string()
}

// ---- the grpcio peers ----------------------------------------------------

/// The Python stubs of our interop protos, generated once per process.
fn interop_stubs() -> &'static Path {
    static STUBS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match STUBS.get_or_init(generate_stubs) {
        Ok(dir) => dir,
        Err(e) => panic!("cannot generate the Python stubs of the interop protos: {e}"),
    }
}

/// 64-bit FNV-1a: a hash that stays the same across builds and toolchains.
fn fnv1a(data: &[u8], mut hash: u64) -> u64 {
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Generates `grpc/testing/*_pb2.py` and `*_pb2_grpc.py` with the
/// virtualenv's grpc_tools.protoc into a folder named after the protos and
/// the pinned requirements; made in a temporary folder and renamed into
/// place, so concurrent test processes never see a half-made one.
fn generate_stubs() -> Result<PathBuf, String> {
    let env = PythonEnv::get();
    let include = workspace_root().join("examples").join("proto");
    let mut hash = 0xcbf2_9ce4_8422_2325;
    let requirements = peers_dir().join("requirements.txt");
    for path in PROTOS.iter().map(|p| include.join(p)).chain([requirements]) {
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hash = fnv1a(path.to_string_lossy().as_bytes(), hash);
        hash = fnv1a(&bytes, hash);
    }
    let root = target_dir().join("grpcio-interop-stubs");
    let dir = root.join(format!("{hash:016x}"));
    if dir.join("grpc/testing/test_pb2_grpc.py").is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let tmp = root.join(format!("tmp-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut protoc = python(&env.python);
    protoc
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", include.display()))
        .arg(format!("--python_out={}", tmp.display()))
        .arg(format!("--grpc_python_out={}", tmp.display()))
        .args(PROTOS);
    let (status, stdout, stderr) = run_with_timeout(protoc, START_TIMEOUT)?;
    if !status.is_some_and(|s| s.success()) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(format!(
            "grpc_tools.protoc ended with {status:?}:\n{stdout}{stderr}"
        ));
    }
    if let Err(e) = fs::rename(&tmp, &dir) {
        // Another test process made it first.
        let _ = fs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            return Err(format!("cannot move the stubs to {}: {e}", dir.display()));
        }
    }
    Ok(dir)
}

/// The virtualenv's Python, with the environment the peers need: no proxy
/// for loopback calls, no bytecode files in the source tree.
fn python(interpreter: &Path) -> Command {
    let mut cmd = Command::new(interpreter);
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

/// A command running one of the interop peers (`interop_server.py`,
/// `interop_client.py`) with the stubs.
fn peer(script: &str) -> Command {
    let env = PythonEnv::get();
    let stubs = interop_stubs();
    let mut cmd = python(&env.python);
    cmd.arg("-u")
        .arg(peers_dir().join("interop").join(script))
        .arg("--stubs")
        .arg(stubs);
    cmd
}

/// Reads a pipe to the end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs a command to its end, or kills it after `timeout` (status `None`);
/// returns its status, stdout and stderr.
fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
) -> Result<(Option<ExitStatus>, String, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    Ok((
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    ))
}

/// Runs the grpcio interop client (`cases`) against 127.0.0.1:`port`;
/// returns its stdout.
fn run_grpcio_client(port: u16, cases: &[&str], transport: Transport) -> String {
    let mut cmd = peer("interop_client.py");
    cmd.args(["--server_host", "127.0.0.1", "--server_port"])
        .arg(port.to_string())
        .arg("--test_case")
        .arg(cases.join(","));
    match transport {
        Transport::Plaintext => {
            cmd.arg("--use_tls=false");
        }
        Transport::Tls => {
            cmd.args(["--use_tls", "--use_test_ca", "--ca_file"])
                .arg(&Certs::get().ca.cert_path)
                .args(["--server_host_override", SERVER_NAME]);
        }
    }
    let timeout = Duration::from_secs(PAIRING_TIMEOUT_SECS - 60);
    match run_with_timeout(cmd, timeout) {
        Ok((Some(_), stdout, stderr)) => {
            if stderr.trim().is_empty() {
                stdout
            } else {
                format!("{stdout}\n(stderr:\n{stderr})\n{}", last_line(&stdout))
            }
        }
        Ok((None, stdout, stderr)) => panic!(
            "the grpcio interop client took over {timeout:?}; stdout:\n{stdout}\nstderr:\n{stderr}"
        ),
        Err(e) => panic!("{e}"),
    }
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

/// `interop_server.py` on a free loopback port; killed on drop (and it ends
/// by itself when this process ends: it serves until its stdin closes).
struct GrpcioInteropServer {
    child: Child,
    _stdin: ChildStdin,
    /// grpcio's own port (where it serves TLS itself, with TLS).
    port: u16,
    /// The port of its wire tap (the same as `port` in cleartext).
    wiretap_port: u16,
    stderr: Arc<Mutex<String>>,
}

impl GrpcioInteropServer {
    fn start(transport: Transport) -> GrpcioInteropServer {
        let mut cmd = peer("interop_server.py");
        cmd.args(["--host", "127.0.0.1", "--port", "0"]);
        if transport == Transport::Tls {
            let server = &Certs::get().server;
            cmd.args(["--use_tls", "--tls_cert_file"])
                .arg(&server.cert_path)
                .arg("--tls_key_file")
                .arg(&server.key_path);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the grpcio interop server: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = stderr.clone();
        let pipe = child.stderr.take().expect("piped stderr");
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = collected.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let hello = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => serde_json::from_str::<serde_json::Value>(&line).ok(),
            _ => None,
        };
        let port_of = |key: &str| {
            hello
                .as_ref()
                .and_then(|v| v[key].as_u64())
                .and_then(|p| u16::try_from(p).ok())
        };
        match (port_of("port"), port_of("wiretap_port")) {
            (Some(port), Some(wiretap_port)) => GrpcioInteropServer {
                child,
                _stdin: stdin,
                port,
                wiretap_port,
                stderr,
            },
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                // Let the collector read what is left.
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "the grpcio interop server did not report its ports ({hello:?}); stderr:\n{}",
                    stderr.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        }
    }

    /// What the server has printed on stderr so far (for failure messages).
    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for GrpcioInteropServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
