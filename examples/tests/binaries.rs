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
    start_server_with(bin, port, &[])
}

/// [`start_server`] with more flags.
fn start_server_with(bin: &str, port: u16, flags: &[&str]) -> Running {
    let mut child = Command::new(bin)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
        .args(flags)
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
fn shop_sells_out_and_says_so_to_health_checkers() {
    let out = run(&mut Command::new(env!("CARGO_BIN_EXE_shop")), 120);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "orders placed: 30, refused as sold out: 10",
            "shop health once sold out: NOT_SERVING"
        ],
        "{stdout}"
    );
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

/// Runs `f` on its own thread, failing the test if it takes over `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("the check finished in time (or panicked: see above)")
}

/// The services a server's reflection lists.
fn reflected_services(target: String) -> Result<Vec<String>, grpc_blocking::Status> {
    use grpc_blocking::reflection::v1::server_reflection_request::MessageRequest;
    use grpc_blocking::reflection::v1::server_reflection_response::MessageResponse;
    use grpc_blocking::reflection::v1::{ServerReflectionClient, ServerReflectionRequest};
    let client = ServerReflectionClient::connect(target).expect("connect");
    let question = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let answer = client
        .server_reflection_info([question])
        .next()
        .expect("an answer")?;
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a list: {other:?}"),
    }
}

fn health(target: String, service: &str) -> Result<String, grpc_blocking::Code> {
    let client = grpc_blocking::health::HealthClient::connect(target).expect("connect");
    client
        .status(service)
        .map(|s| s.as_str_name().to_owned())
        .map_err(|e| e.code())
}

#[test]
fn the_servers_serve_health_and_reflection_unless_told_not_to() {
    let port = free_port();
    let _server = start_server(env!("CARGO_BIN_EXE_example-server"), port);
    let target = format!("http://127.0.0.1:{port}");
    let t = target.clone();
    within(60, move || {
        assert_eq!(health(t.clone(), ""), Ok("SERVING".into()));
        assert_eq!(health(t.clone(), "nameko.example"), Ok("SERVING".into()));
        assert_eq!(
            reflected_services(t).unwrap(),
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "nameko.example"
            ]
        );
    });

    let port = free_port();
    let _interop = start_server(env!("CARGO_BIN_EXE_interop-server"), port);
    let t = format!("http://127.0.0.1:{port}");
    within(60, move || {
        assert_eq!(
            health(t.clone(), "grpc.testing.TestService"),
            Ok("SERVING".into())
        );
        assert!(reflected_services(t)
            .unwrap()
            .contains(&"grpc.testing.TestService".to_owned()));
    });

    for bin in [
        env!("CARGO_BIN_EXE_example-server"),
        env!("CARGO_BIN_EXE_interop-server"),
    ] {
        let port = free_port();
        let _server = start_server_with(bin, port, &["--no_health", "--no_reflection"]);
        let t = format!("http://127.0.0.1:{port}");
        within(60, move || {
            assert_eq!(
                health(t.clone(), ""),
                Err(grpc_blocking::Code::Unimplemented)
            );
            assert_eq!(
                reflected_services(t).unwrap_err().code(),
                grpc_blocking::Code::Unimplemented
            );
        });
    }
}

#[test]
fn require_token_guards_the_example_service_only() {
    let port = free_port();
    let _server = start_server_with(
        env!("CARGO_BIN_EXE_example-server"),
        port,
        &["--require_token", "s3cret"],
    );
    let client = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_example-client"));
        cmd.args([
            "--server_host",
            "127.0.0.1",
            "--server_port",
            &port.to_string(),
        ]);
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        run(&mut cmd, 60)
    };
    let out = client(Some("s3cret"));
    assert!(out.status.success(), "{}", text(&out));
    for token in [None, Some("wrong")] {
        let out = client(token);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("UNAUTHENTICATED"), "{}", text(&out));
    }
    // Health and reflection need no token.
    let t = format!("http://127.0.0.1:{port}");
    within(60, move || {
        assert_eq!(health(t.clone(), "nameko.example"), Ok("SERVING".into()));
        assert!(reflected_services(t)
            .unwrap()
            .contains(&"nameko.example".to_owned()));
    });
}

#[test]
fn example_server_serves_prometheus_metrics() {
    use std::io::{Read, Write};
    let (port, metrics_port) = (free_port(), free_port());
    let _server = start_server_with(
        env!("CARGO_BIN_EXE_example-server"),
        port,
        &["--metrics_port", &metrics_port.to_string()],
    );
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
    let scrape = move || {
        let mut http = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        http.read_to_string(&mut page).unwrap();
        page
    };
    let page = within(60, move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page = scrape();
            // One of each kind of call, each OK (after-hooks run once the
            // status is sent, so the last may lag a little).
            let done = ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]
                .iter()
                .all(|m| {
                    page.contains(&format!(
                        "grpc_server_handled_total{{grpc_service=\"nameko.example\",grpc_method=\"{m}\",grpc_code=\"OK\"}} 1"
                    ))
                });
            if done || Instant::now() > deadline {
                return page;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    for line in [
        "grpc_server_msg_received_total{grpc_service=\"nameko.example\",grpc_method=\"stream_unary\"} 3",
        "grpc_server_msg_sent_total{grpc_service=\"nameko.example\",grpc_method=\"unary_stream\"} 2",
        "grpc_server_handling_seconds_count{grpc_service=\"nameko.example\",grpc_method=\"unary_unary\"} 1",
        "grpc_server_handler_threads{state=\"busy\"} 0",
        "# EOF",
    ] {
        assert!(page.contains(line), "missing {line:?} in:\n{page}");
    }
}

#[test]
fn bench_and_example_client_spread_over_a_list_of_servers() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _servers: Vec<Running> = ports
        .iter()
        .map(|p| start_server(env!("CARGO_BIN_EXE_example-server"), *p))
        .collect();
    let target = format!(
        "ipv4:{}",
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_example-client")).args([
            "--target",
            &target,
            "--lb",
            "round_robin",
        ]),
        60,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_bench")).args([
            "--target",
            &target,
            "--service_config",
            r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#,
            "--concurrency",
            "3",
            "--duration",
            "0.5",
        ]),
        60,
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let counts: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("backend 127.0.0.1:"))
        .map(|l| {
            l.split(": ")
                .nth(1)
                .unwrap()
                .trim_end_matches(" calls")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(counts.len(), 3, "{stdout}");
    let total: u64 = counts.iter().sum();
    for n in &counts {
        // Round robin: each a third, give or take the calls in flight.
        assert!(
            n * 3 >= total - 10 && n * 3 <= total + 10,
            "{counts:?}\n{stdout}"
        );
    }
    // A bad service config is a usage error naming the field.
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_bench")).args([
            "--target",
            &target,
            "--service_config",
            r#"{"methodConfig": [{"retryPolicy": {"maxAttempts": 1}}]}"#,
        ]),
        60,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("methodConfig[0].retryPolicy.maxAttempts"),
        "{}",
        text(&out)
    );
}

#[test]
fn fleet_spreads_calls_and_follows_its_registry_and_health() {
    let out = run(&mut Command::new(env!("CARGO_BIN_EXE_fleet")), 120);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let counts = |label: &str| -> Vec<u64> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label}: ")))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"));
        line.split(' ')
            .map(|kv| kv.rsplit('=').next().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(counts("two backends"), [15, 15], "{stdout}");
    assert_eq!(counts("three backends"), [10, 10, 10], "{stdout}");
    assert_eq!(counts("one not serving"), [0, 15, 15], "{stdout}");
}
