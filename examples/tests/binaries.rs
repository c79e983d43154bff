//! The example binaries, run as a user runs them: `demo` (the README's first
//! command), `example-server` with `example-client`, the interop pair, and
//! a short `bench`. Every child process is killed on drop and every wait is
//! bounded.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to completion, failing the test after `secs`.
fn run(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("poll the child").is_some() {
            return child.wait_with_output().expect("collect the output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish within {secs} s; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server binary with `--port` and waits until it prints that it
/// listens (or the port answers).
fn start_server(bin: &str, port: u16) -> Running {
    let mut child = Command::new(bin)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Drain stdout so the server never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{bin} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(rx);
    running
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const EXPECTED_REPLIES: [&str; 7] = [
    "unary_unary: \"AAA\"",
    "unary_stream: \"BB\" (seqno 1)",
    "unary_stream: \"BB\" (seqno 2)",
    "stream_unary: \"C,DD,EEE\"",
    "stream_stream: \"F\" (seqno 1)",
    "stream_stream: \"GG\" (seqno 2)",
    "stream_stream: \"H\" (seqno 3)",
];

#[test]
fn demo_runs_all_four_patterns() {
    let out = run(&mut Command::new(env!("CARGO_BIN_EXE_demo")), 60);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for line in EXPECTED_REPLIES {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn example_client_calls_example_server() {
    let port = free_port();
    let _server = start_server(env!("CARGO_BIN_EXE_example-server"), port);
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_example-client")).args([
            "--server_host",
            "127.0.0.1",
            "--server_port",
            &port.to_string(),
        ]),
        60,
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, EXPECTED_REPLIES, "{stdout}");
}

#[test]
fn example_client_fails_without_a_server_and_on_bad_flags() {
    let port = free_port();
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_example-client")).args([
            "--server_host",
            "127.0.0.1",
            "--server_port",
            &port.to_string(),
        ]),
        60,
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("connect"), "{}", text(&out));
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_example-client")).args(["--port", "1"]),
        60,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--port"), "{}", text(&out));
    // A missing flag is a usage error, which names the flag.
    let out = run(&mut Command::new(env!("CARGO_BIN_EXE_example-server")), 60);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--port"), "{}", text(&out));
}

#[test]
fn interop_client_passes_every_case_against_interop_server() {
    let port = free_port();
    let _server = start_server(env!("CARGO_BIN_EXE_interop-server"), port);
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_interop-client")).args([
            "--server_host",
            "127.0.0.1",
            "--server_port",
            &port.to_string(),
            "--test_case",
            "all",
        ]),
        300,
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("18 passed, 0 failed"),
        "{stdout}"
    );
    // A comma list runs just those.
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_interop-client")).args([
            "--server_port",
            &port.to_string(),
            "--server_host",
            "127.0.0.1",
            "--test_case",
            "empty_unary,large_unary",
        ]),
        120,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("2 passed, 0 failed\n"),
        "{}",
        text(&out)
    );
}

#[test]
fn bench_reports_a_result_line() {
    let port = free_port();
    let _server = start_server(env!("CARGO_BIN_EXE_example-server"), port);
    for rpc in ["unary", "server_stream", "client_stream", "bidi"] {
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_bench")).args([
                "--server_host",
                "127.0.0.1",
                "--server_port",
                &port.to_string(),
                "--connections",
                "2",
                "--concurrency",
                "4",
                "--duration",
                "0.3",
                "--rpc",
                rpc,
                "--payload",
                "16",
            ]),
            120,
        );
        assert!(out.status.success(), "{rpc}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result = stdout
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .unwrap_or_else(|| panic!("no RESULT line for {rpc}:\n{stdout}"));
        assert!(result.contains(&format!("rpc={rpc}")), "{result}");
        assert!(result.contains("errors=0"), "{result}");
    }
}

#[test]
fn every_binary_explains_its_flags_with_help() {
    for (bin, flags) in [
        (
            env!("CARGO_BIN_EXE_example-server"),
            &["--port", "--host"][..],
        ),
        (
            env!("CARGO_BIN_EXE_example-client"),
            &["--server_host", "--server_port"][..],
        ),
        (
            env!("CARGO_BIN_EXE_interop-server"),
            &["--port", "--host", "--use_tls"][..],
        ),
        (
            env!("CARGO_BIN_EXE_interop-client"),
            &[
                "--server_host",
                "--server_port",
                "--test_case",
                "--use_tls",
                "--server_host_override",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_bench"),
            &[
                "--server_port",
                "--connections",
                "--concurrency",
                "--duration",
                "--rpc",
                "--payload",
            ][..],
        ),
    ] {
        let out = run(Command::new(bin).arg("--help"), 60);
        assert!(out.status.success(), "{bin}: {}", text(&out));
        let help = text(&out);
        for flag in flags {
            assert!(
                help.contains(flag),
                "{bin} --help does not mention {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn boolean_flags_are_bare_or_take_true_or_false() {
    let bin = env!("CARGO_BIN_EXE_interop-server");
    // `--use_tls` alone and `--use_tls=true` mean true: the certificate
    // files are then required.
    for form in ["--use_tls", "--use_tls=true"] {
        let out = run(Command::new(bin).args(["--port", "1", form]), 60);
        assert_eq!(out.status.code(), Some(1), "{form}: {}", text(&out));
        assert!(
            text(&out).contains("--tls_cert_file"),
            "{form}: {}",
            text(&out)
        );
    }
    let out = run(
        Command::new(bin).args(["--port", "1", "--use_tls=maybe"]),
        60,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
