//! The process side of the equivalence tests' peers, whatever their
//! language: where the workspace and its target dir are, a server process
//! that reports its port, a client process driven by JSON lines, and the
//! waits with timeouts around them. `python.rs` (grpcio) and `node.rs`
//! (grpc-js) build their peers from these.
//!
//! The protocol of a driver client is the one of
//! `tests/peers/python/client.py serve` (its docstring): one JSON command per
//! line on stdin, each with an "id", answered by one JSON line on stdout
//! with the same "id", in any order. A server prints one JSON line,
//! `{"port": N, ...}`, once it serves, and serves until its stdin closes.
//!
//! Every wait has a timeout: a peer that hangs fails the test.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The workspace root (the parent of the `tests` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent folder")
        .to_path_buf()
}

/// The cargo target dir: `CARGO_TARGET_DIR` if set (relative to the
/// workspace root when relative), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Waits for `child` up to `timeout`; kills it and returns None past that.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The last `lines` lines of a text file (empty if it cannot be read).
pub fn tail_of_file(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Collects a child's stderr (the last 64 KiB) for error messages.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<String>>);

impl StderrTail {
    /// Reads `stderr` on a thread of its own until it closes.
    pub fn collect(&self, stderr: impl Read + Send + 'static) {
        let buf = self.0.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                if b.len() > 64 * 1024 {
                    let cut = b.len() - 32 * 1024;
                    let cut = (cut..b.len()).find(|&i| b.is_char_boundary(i)).unwrap_or(0);
                    b.drain(..cut);
                }
                line.clear();
            }
        });
    }

    /// What was collected so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A peer server process on 127.0.0.1, killed on drop. It also ends by
/// itself when this process ends (it serves until its stdin closes).
pub struct PeerServer {
    name: &'static str,
    child: Mutex<Child>,
    // Held open: the server serves until it closes.
    _stdin: ChildStdin,
    port: u16,
    /// The JSON line the server printed when it came up.
    hello: Value,
    stderr: StderrTail,
}

impl PeerServer {
    /// Runs `command` and waits (up to `timeout`) for its `{"port": N}`
    /// line. Panics, with `name` and the server's stderr, if it does not
    /// come up.
    pub fn start(name: &'static str, mut command: Command, timeout: Duration) -> PeerServer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name}: {e}"));
        let stderr = StderrTail::default();
        stderr.collect(child.stderr.take().expect("piped stderr"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(timeout) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the {name} did not report its port ({other:?}); stderr:\n{}",
                    stderr.text()
                );
            }
        };
        let hello: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the {name} printed {line:?}, not its port"));
        let port = hello["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("the {name} printed {line:?}, not its port"));
        PeerServer {
            name,
            child: Mutex::new(child),
            _stdin: stdin,
            port,
            hello,
            stderr,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The JSON line it printed when it came up (port, versions).
    pub fn hello(&self) -> &Value {
        &self.hello
    }

    /// What it printed on stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Its name in messages.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

type Pending = Arc<Mutex<Option<HashMap<u64, mpsc::Sender<Value>>>>>;

/// A peer client process driven by JSON lines, killed on drop.
/// Thread-safe: commands from many threads run concurrently in the client.
pub struct DriverClient {
    name: &'static str,
    child: Mutex<Child>,
    stdin: Mutex<ChildStdin>,
    // None once the client's stdout has closed.
    pending: Pending,
    next_id: AtomicU64,
    stderr: StderrTail,
}

impl DriverClient {
    /// Runs `command` and checks it answers `{"op": "version"}` (within
    /// `timeout`) with a string under `version_key`. Panics, with `name` and
    /// the client's stderr, if it does not.
    pub fn start(
        name: &'static str,
        mut command: Command,
        version_key: &str,
        timeout: Duration,
    ) -> DriverClient {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name}: {e}"));
        let stderr = StderrTail::default();
        stderr.collect(child.stderr.take().expect("piped stderr"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let dispatch = pending.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("{name} printed a non-JSON line: {line}");
                    continue;
                };
                let Some(id) = value["id"].as_u64() else {
                    eprintln!("{name} answered without an id: {line}");
                    continue;
                };
                let waiter = dispatch
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|m| m.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(value);
                }
            }
            // Closed: wake every waiter (their senders drop).
            dispatch.lock().unwrap().take();
        });
        let client = DriverClient {
            name,
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            pending,
            next_id: AtomicU64::new(1),
            stderr,
        };
        let version = client
            .request(json!({"op": "version"}), timeout)
            .unwrap_or_else(|e| panic!("the {name} did not start: {e}"));
        assert!(
            version[version_key].is_string(),
            "unexpected version answer from the {name}: {version}"
        );
        client
    }

    /// Sends one command (an "id" is added) and waits up to `timeout` for
    /// its answer. Errors say why, with the client's stderr.
    pub fn request(&self, mut command: Value, timeout: Duration) -> Result<Value, String> {
        let name = self.name;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        command["id"] = json!(id);
        let (tx, rx) = mpsc::channel();
        match self.pending.lock().unwrap().as_mut() {
            Some(map) => {
                map.insert(id, tx);
            }
            None => {
                return Err(format!(
                    "the {name} has exited; stderr:\n{}",
                    self.stderr.text()
                ))
            }
        }
        let line = format!("{command}\n");
        let written = {
            let mut stdin = self.stdin.lock().unwrap();
            stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush())
        };
        if let Err(e) = written {
            return Err(format!(
                "cannot write to the {name}: {e}; stderr:\n{}",
                self.stderr.text()
            ));
        }
        match rx.recv_timeout(timeout) {
            Ok(answer) => match answer.get("error") {
                Some(error) => Err(format!("{name}: {error}")),
                None => Ok(answer),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(map) = self.pending.lock().unwrap().as_mut() {
                    map.remove(&id);
                }
                Err(format!(
                    "the {name} did not answer within {timeout:?}: {command}; stderr:\n{}",
                    self.stderr.text()
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!(
                "the {name} exited; stderr:\n{}",
                self.stderr.text()
            )),
        }
    }
}

impl Drop for DriverClient {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}
