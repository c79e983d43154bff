//! The grpc-js (`@grpc/grpc-js`, gRPC for Node.js in pure JavaScript over
//! Node's own HTTP/2) peers of the equivalence tests.
//!
//! * [`NodeEnv::get`] provisions, once per test process, the packages pinned
//!   in `tests/peers/node/package-lock.json` (`@grpc/grpc-js`,
//!   `@grpc/proto-loader`, `protobufjs`): `npm ci` into `<target>/grpcjs-peer`
//!   (the cargo target dir), under an exclusive `flock` of
//!   `<target>/grpcjs-peer.lock` so test processes running side by side do
//!   not race. The install is reused until `package.json` or
//!   `package-lock.json` changes (a copy of both is kept beside it and
//!   compared). A missing `node` or `npm`, or a failing `npm ci`, fails the
//!   test with a message saying what to install: these tests never skip.
//! * [`GrpcJsServer`] runs `tests/peers/node/server.js` (grpc-js serving
//!   `equivalence.Equivalence` and `nameko.example`) on a port it picks, and
//!   kills it on drop; it also ends by itself when this process ends (it
//!   serves until its stdin closes).
//! * [`GrpcJsClient`] runs `tests/peers/node/client.js serve`, a grpc-js
//!   client driven by the JSON lines of the grpcio driver
//!   (`tests/peers/python/client.py`'s docstring), so the harness drives
//!   both alike.
//!
//! The scripts load the protos at run time with `@grpc/proto-loader` (no
//! generated code). Every wait has a timeout: a peer that hangs fails the
//! test.
//!
//! Environment: `GRPC_BLOCKING_NODE` and `GRPC_BLOCKING_NPM` name the
//! `node` and `npm` to use (default: from `PATH`); `CARGO_TARGET_DIR` moves
//! the install with the target dir.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::peer_process::{
    tail_of_file, target_dir, wait_with_timeout, workspace_root, DriverClient, PeerServer,
};

/// How long `npm ci` (or waiting for another process's) may take.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a peer may take to start (loading the protos on a loaded
/// machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra time a client command may take beyond its call's own deadline.
const COMMAND_SLACK: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "The grpc-js equivalence tests run @grpc/grpc-js (from the npm \
registry) as a peer. They need Node.js 16 or later and npm on PATH (or named by GRPC_BLOCKING_NODE \
and GRPC_BLOCKING_NPM) and access to the npm registry. On Debian/Ubuntu: \
`apt-get install nodejs npm`.";

/// The files that pin the packages, in `tests/peers/node/`.
const PINS: [&str; 2] = ["package.json", "package-lock.json"];

/// The folder of the grpc-js peers' sources.
pub fn peers_dir() -> PathBuf {
    workspace_root().join("tests").join("peers").join("node")
}

/// A provisioned install of the grpc-js packages.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    /// The `node` to run the peers with.
    pub node: PathBuf,
    /// The folder `npm ci` installed into (its `node_modules` beside the
    /// copied `package.json`); the scripts take it as `--modules`.
    pub modules: PathBuf,
}

impl NodeEnv {
    /// The install, provisioned on first use. Panics with what to install
    /// when it cannot be provisioned.
    pub fn get() -> &'static NodeEnv {
        static ENV: OnceLock<Result<NodeEnv, String>> = OnceLock::new();
        match ENV.get_or_init(provision) {
            Ok(env) => env,
            Err(message) => panic!("grpc-js peer unavailable: {message}"),
        }
    }

    /// `node SCRIPT --modules DIR` for a script of `tests/peers/node/`.
    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(&self.node);
        cmd.arg(peers_dir().join(script))
            .arg("--modules")
            .arg(&self.modules);
        // grpc-js must not route loopback calls through a proxy from the
        // environment.
        for var in [
            "http_proxy",
            "https_proxy",
            "grpc_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "GRPC_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

fn program(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `PROGRAM --version`, or why it cannot run.
fn version_of(program: &str) -> Result<String, String> {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}. {INSTALL_HINT}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{program} --version` failed ({}). {INSTALL_HINT}",
            output.status
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The major version of a `node --version` answer (`v20.1.0` -> 20).
fn node_major(version: &str) -> Option<u32> {
    version.strip_prefix('v')?.split('.').next()?.parse().ok()
}

/// An exclusive `flock` on a file, released when dropped (the file closes).
struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock, waiting up to `timeout` for whoever holds it.
    fn acquire(path: &Path, timeout: Duration) -> Result<FileLock, String> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let give_up = Instant::now() + timeout;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory
            // is shared with the call.
            let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if taken == 0 {
                return Ok(FileLock { _file: file });
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(format!("cannot lock {}: {error}", path.display()));
            }
            if Instant::now() >= give_up {
                return Err(format!(
                    "another process held {} for over {timeout:?}",
                    path.display()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The pinning files as they are in the source tree, one after the other.
fn pins() -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    for name in PINS {
        let path = peers_dir().join(name);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        all.extend_from_slice(name.as_bytes());
        all.push(0);
        all.extend_from_slice(&bytes);
        all.push(0);
    }
    Ok(all)
}

fn provision() -> Result<NodeEnv, String> {
    let node = program("GRPC_BLOCKING_NODE", "node");
    let npm = program("GRPC_BLOCKING_NPM", "npm");
    let node_version = version_of(&node)?;
    match node_major(&node_version) {
        Some(major) if major >= 16 => {}
        _ => {
            return Err(format!(
                "`{node} --version` says {node_version:?}; Node.js 16 or later is needed. {INSTALL_HINT}"
            ))
        }
    }
    version_of(&npm)?;

    let target = target_dir();
    fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let dir = target.join("grpcjs-peer");
    let marker = dir.join("installed-pins");
    let log_path = target.join("grpcjs-peer.log");
    let _lock = FileLock::acquire(&target.join("grpcjs-peer.lock"), PROVISION_TIMEOUT)?;

    let wanted = pins()?;
    let installed = fs::read(&marker).ok();
    if installed.as_deref() != Some(wanted.as_slice()) || !dir.join("node_modules").is_dir() {
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(|e| format!("cannot remove the old {}: {e}", dir.display()))?;
        }
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for name in PINS {
            fs::copy(peers_dir().join(name), dir.join(name))
                .map_err(|e| format!("cannot copy {name} into {}: {e}", dir.display()))?;
        }
        npm_ci(&npm, &dir, &log_path)?;
        // Last: a marker only for a complete install.
        fs::write(&marker, &wanted)
            .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    }
    Ok(NodeEnv {
        node: PathBuf::from(node),
        modules: dir,
    })
}

/// `npm ci` in `dir` (scripts of the packages off: none is needed), its
/// output appended to `log_path`.
fn npm_ci(npm: &str, dir: &Path, log_path: &Path) -> Result<(), String> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let mut child = Command::new(npm)
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|e| format!("cannot run `{npm} ci`: {e}. {INSTALL_HINT}"))?;
    let status = wait_with_timeout(&mut child, PROVISION_TIMEOUT);
    let log_tail = tail_of_file(log_path, 40);
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!(
            "`npm ci` in {} failed ({status}); log {}:\n{log_tail}\n{INSTALL_HINT}",
            dir.display(),
            log_path.display()
        )),
        None => Err(format!(
            "`npm ci` in {} took over {PROVISION_TIMEOUT:?}; log {}:\n{log_tail}",
            dir.display(),
            log_path.display()
        )),
    }
}

/// A grpc-js server (`server.js`) on 127.0.0.1, killed on drop.
pub struct GrpcJsServer(PeerServer);

impl GrpcJsServer {
    /// Starts a server on a free port. Panics if it does not come up.
    pub fn start() -> GrpcJsServer {
        let env = NodeEnv::get();
        GrpcJsServer(PeerServer::start(
            "grpc-js server",
            env.command("server.js"),
            START_TIMEOUT,
        ))
    }

    /// One server shared by all the tests of this process (ends with it).
    pub fn shared() -> &'static GrpcJsServer {
        static SERVER: OnceLock<GrpcJsServer> = OnceLock::new();
        SERVER.get_or_init(GrpcJsServer::start)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.0.addr()
    }

    /// The grpc-js version it runs.
    pub fn version(&self) -> String {
        self.0.hello()["grpcjs"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// What the server printed on stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.0.stderr()
    }
}

/// A grpc-js client process (`client.js serve`) driven by JSON lines.
/// Thread-safe: commands from many threads run concurrently in the client.
pub struct GrpcJsClient(DriverClient);

impl GrpcJsClient {
    /// Starts a client process. Panics if it does not answer.
    pub fn start() -> GrpcJsClient {
        let env = NodeEnv::get();
        let mut command = env.command("client.js");
        command.arg("serve");
        GrpcJsClient(DriverClient::start(
            "grpc-js client",
            command,
            "grpcjs",
            START_TIMEOUT,
        ))
    }

    /// One client process shared by all the tests of this process.
    pub fn shared() -> &'static GrpcJsClient {
        static CLIENT: OnceLock<GrpcJsClient> = OnceLock::new();
        CLIENT.get_or_init(GrpcJsClient::start)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn node_major_versions() {
        assert_eq!(node_major("v20.20.2"), Some(20));
        assert_eq!(node_major("v16.0.0"), Some(16));
        assert_eq!(node_major("20.1.0"), None);
        assert_eq!(node_major(""), None);
    }

    #[test]
    fn the_pins_name_exact_versions() {
        let package: Value =
            serde_json::from_slice(&fs::read(peers_dir().join("package.json")).unwrap()).unwrap();
        let dependencies = package["dependencies"].as_object().expect("dependencies");
        assert!(dependencies.contains_key("@grpc/grpc-js"));
        for (name, version) in dependencies {
            let version = version.as_str().unwrap_or_default();
            assert!(
                !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.'),
                "{name} is not pinned to an exact version: {version:?}"
            );
        }
        let mut lock = String::new();
        File::open(peers_dir().join("package-lock.json"))
            .and_then(|mut f| f.read_to_string(&mut lock))
            .expect("package-lock.json");
        let lock: Value = serde_json::from_str(&lock).unwrap();
        for (name, version) in dependencies {
            assert_eq!(
                lock["packages"][format!("node_modules/{name}")]["version"].as_str(),
                version.as_str(),
                "the lock file installs the pinned {name}"
            );
        }
    }
}
