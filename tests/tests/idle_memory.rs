//! Memory per idle connection: 1,000 client connections (env
//! `IDLE_CONNECTIONS` to change) held open to one server, each after one
//! unary call, and VmRSS measured before and after.
//!
//! Three measurements, each in a process whose heap nothing else has used
//! (memory freed by an earlier phase would be reused without showing in
//! VmRSS):
//!
//! 1. **combined**: server and clients in this process (the test's own
//!    process, measured first);
//! 2. **server alone**: the server in a child process, the clients in
//!    another; the server's VmRSS is read from `/proc/<pid>/status`;
//! 3. **client alone**: the clients' child reports its own growth.
//!
//! The children are this test binary run again on the same test with
//! `IDLE_MEMORY_CHILD=server` or `=clients`, which makes the test play that
//! role instead; they talk over stdout and stop when their stdin closes (or
//! after 5 minutes).
//!
//! Connection threads have 256 KiB stacks on both sides: that is virtual
//! memory; only the pages a thread touches count in VmRSS. Run with
//! `-- --nocapture` to see the numbers. This file is its own test binary so
//! that nothing else runs in the process while it measures.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use grpc_blocking_examples::nameko::{ExampleClient, ExampleRequest, ExampleServer};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::support::{
    rss_kib, serve, status_kib, target, threads_named, with_timeout,
};

/// What the children are told to find their role by.
const CHILD_ENV: &str = "IDLE_MEMORY_CHILD";
/// Prefix of the lines the children report on.
const TAG: &str = "IDLE-MEMORY";

fn connections() -> usize {
    std::env::var("IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

// ---------------------------------------------------------------------------
// Process measurements.

/// Waits (up to `secs`) until process `pid` has exactly `n` threads named
/// `name`; returns the last count.
fn wait_threads(pid: &str, name: &str, n: usize, secs: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = threads_named(pid, name);
        if now == n || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raises the soft RLIMIT_NOFILE so that `fds` descriptors fit, up to the
/// hard limit; panics if even that is too low.
fn ensure_fds(fds: usize) {
    let need = u64::try_from(fds).unwrap_or(u64::MAX);
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    if soft < need {
        let now = rlimit::increase_nofile_limit(need).expect("raise RLIMIT_NOFILE");
        assert!(
            now >= need,
            "need {need} file descriptors, the limit is {now} (hard {hard})"
        );
    }
}

/// Lets the connection threads settle (handshakes, window updates).
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

// ---------------------------------------------------------------------------
// Clients.

/// `n` clients, each on its own connection, each after one call.
fn open_clients(target: &str, n: usize) -> Vec<ExampleClient> {
    (0..n)
        .map(|i| {
            let client = ExampleClient::connect(target)
                .unwrap_or_else(|e| panic!("connection {i} of {n}: {e}"));
            let reply = client
                .unary_unary(ExampleRequest {
                    value: "x".into(),
                    multiplier: 1,
                })
                .unwrap_or_else(|s| panic!("call on connection {i}: {s}"));
            assert_eq!(reply.message, "x");
            client
        })
        .collect()
}

/// A few connections and calls, then gone: first-use costs (lazy statics,
/// allocator arenas, the handler pool's first worker) stay out of the
/// per-connection numbers.
fn warm_up(target: &str) {
    drop(open_clients(target, 4));
}

// ---------------------------------------------------------------------------
// Children.

/// A child process running one of the helper tests below.
struct ChildProc {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl ChildProc {
    fn spawn(role: &str, envs: &[(&str, String)]) -> ChildProc {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(exe);
        cmd.args([
            "idle_connection_memory",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start a child process");
        let out = BufReader::new(child.stdout.take().expect("child stdout"));
        ChildProc { child, out }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The words after the next `TAG` line.
    fn report(&mut self) -> Vec<String> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).expect("read the child");
            assert!(n > 0, "the child ended without reporting");
            // libtest may have written "test name ... " on the same line.
            if let Some(at) = line.find(TAG) {
                return line[at + TAG.len()..]
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
            }
        }
    }

    /// Closes its stdin (the signal to stop) and waits for it.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let status = self.child.wait().expect("wait for the child");
        assert!(status.success(), "child failed: {status}\n{rest}");
    }
}

/// In a child: reports `words`, then waits for stdin to close (at most 5
/// minutes, so that an orphan stops by itself).
fn report_and_wait(words: &str) {
    println!("{TAG} {words}");
    let _ = std::io::stdout().flush();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(300));
}

/// The role this process plays: `None` for the test itself.
fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Child role: the server.
fn child_server() {
    ensure_fds(connections() * 4 + 256);
    let server = serve(ExampleServer::new(ExampleService));
    let target = target(&server);
    warm_up(&target);
    assert_eq!(wait_threads("self", "grpc-conn", 0, 30), 0);
    report_and_wait(&target);
    drop(server);
}

/// Child role: the clients.
fn child_clients() {
    let n = connections();
    ensure_fds(n * 4 + 256);
    let target = std::env::var("IDLE_MEMORY_TARGET").expect("IDLE_MEMORY_TARGET");
    warm_up(&target);
    assert_eq!(wait_threads("self", "grpc-client-conn", 0, 30), 0);
    let before = rss_kib("self");
    let clients = open_clients(&target, n);
    assert_eq!(wait_threads("self", "grpc-client-conn", n, 30), n);
    settle();
    let after = rss_kib("self");
    report_and_wait(&format!("{before} {after}"));
    drop(clients);
}

// ---------------------------------------------------------------------------
// The measurement.

/// Bytes per connection from a VmRSS growth in KiB.
fn per_conn(before_kib: u64, after_kib: u64, n: usize) -> u64 {
    after_kib.saturating_sub(before_kib) * 1024 / u64::try_from(n.max(1)).unwrap_or(1)
}

/// Phase 1: server and clients in this process.
fn combined(n: usize) -> (u64, u64) {
    let server = serve(ExampleServer::new(ExampleService));
    let target = target(&server);
    warm_up(&target);
    assert_eq!(wait_threads("self", "grpc-conn", 0, 30), 0);
    assert_eq!(wait_threads("self", "grpc-client-conn", 0, 30), 0);
    let before = rss_kib("self");
    let before_virt = status_kib("self", "VmSize");
    let clients = open_clients(&target, n);
    assert_eq!(wait_threads("self", "grpc-conn", n, 30), n);
    assert_eq!(wait_threads("self", "grpc-client-conn", n, 30), n);
    settle();
    let after = rss_kib("self");
    let after_virt = status_kib("self", "VmSize");
    drop(clients);
    drop(server);
    println!(
        "combined (server + client in one process): VmRSS {} -> {} MiB for {n} connections: \
         {} bytes per connection; virtual {} KiB per connection",
        before / 1024,
        after / 1024,
        per_conn(before, after, n),
        per_conn(before_virt, after_virt, n) / 1024,
    );
    (
        per_conn(before, after, n),
        per_conn(before_virt, after_virt, n),
    )
}

/// Phases 2 and 3: server and clients in separate child processes.
fn separate(n: usize) -> (u64, u64) {
    let mut server = ChildProc::spawn("server", &[]);
    let target = server
        .report()
        .into_iter()
        .next()
        .expect("the server's address");
    let server_pid = server.pid();
    let server_before = rss_kib(&server_pid);
    let mut clients = ChildProc::spawn(
        "clients",
        &[
            ("IDLE_MEMORY_TARGET", target),
            ("IDLE_CONNECTIONS", n.to_string()),
        ],
    );
    let words = clients.report();
    let parse = |i: usize| -> u64 { words[i].parse().expect("a KiB count") };
    let (client_before, client_after) = (parse(0), parse(1));
    assert_eq!(wait_threads(&server_pid, "grpc-conn", n, 30), n);
    settle();
    let server_after = rss_kib(&server_pid);
    clients.finish();
    server.finish();
    let server_only = per_conn(server_before, server_after, n);
    let client_only = per_conn(client_before, client_after, n);
    println!(
        "server alone: VmRSS {} -> {} MiB: {server_only} bytes per connection; \
         client alone: VmRSS {} -> {} MiB: {client_only} bytes per connection",
        server_before / 1024,
        server_after / 1024,
        client_before / 1024,
        client_after / 1024,
    );
    (server_only, client_only)
}

#[test]
fn idle_connection_memory() {
    match child_role().as_deref() {
        None => {}
        Some("server") => return child_server(),
        Some("clients") => return child_clients(),
        Some(other) => panic!("unknown {CHILD_ENV} role {other:?}"),
    }
    let n = connections();
    // Both sides in one process: socket, poller and wake-up per side.
    ensure_fds(n * 8 + 256);
    with_timeout(300, move || {
        let (both, virt) = combined(n);
        let (server, client) = separate(n);
        println!(
            "per idle connection: {} KiB server and client together in one process \
             ({} KiB virtual), {} KiB server alone, {} KiB client alone",
            both / 1024,
            virt / 1024,
            server / 1024,
            client / 1024
        );
        // Generous bounds: thread stacks are 256 KiB of address space per
        // side, of which only touched pages count.
        assert!(
            both < 1024 * 1024,
            "{both} bytes per idle connection (server + client)"
        );
        assert!(
            server < 1024 * 1024,
            "{server} bytes per idle server connection"
        );
        assert!(
            client < 1024 * 1024,
            "{client} bytes per idle client connection"
        );
    });
}
