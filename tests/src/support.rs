//! Small helpers shared by the integration tests: a timeout guard for
//! blocking tests, servers on free ports, and thread counting.

use std::time::Duration;

use grpc_blocking::error_details::{
    BadRequest, DebugInfo, ErrorDetail, ErrorInfo, FieldViolation, Help, HelpLink,
    LocalizedMessage, PreconditionFailure, PreconditionViolation, QuotaFailure, QuotaViolation,
    RequestInfo, ResourceInfo, RetryInfo,
};
use grpc_blocking::server::Service;
use grpc_blocking::{Server, ServerHandle};

/// Runs `f` on its own thread and panics if it does not finish within
/// `secs` seconds, so that a hang fails the test instead of stalling CI.
/// A panic inside `f` is re-raised with its message.
pub fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn the test thread");
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the test body ended without a result"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within {secs} s (a hang?)")
        }
    }
}

/// Starts `service` on a free loopback port in the background.
pub fn serve(service: impl Service) -> ServerHandle {
    Server::builder()
        .add_service(service)
        .bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .spawn()
        .expect("start the server")
}

/// The `http://` target of a running server.
pub fn target(server: &ServerHandle) -> String {
    format!("http://{}", server.local_addr())
}

/// Threads of this process right now (Linux: entries of /proc/self/task).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .count()
}

/// Waits (up to `secs`) until the process has at most `n` threads; returns
/// the last count seen.
pub fn wait_for_threads_at_most(n: usize, secs: u64) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let now = thread_count();
        if now <= n || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An example request.
pub fn req(value: &str, multiplier: i32) -> grpc_blocking_examples::nameko::ExampleRequest {
    grpc_blocking_examples::nameko::ExampleRequest {
        value: value.to_owned(),
        multiplier,
    }
}

/// A `kB` field of `/proc/<pid>/status` (`pid` may be `self`), in KiB.
pub fn status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// The resident set (VmRSS) of process `pid` (or `self`), in KiB.
pub fn rss_kib(pid: &str) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Threads of process `pid` (or `self`) whose name is `name`.
pub fn threads_named(pid: &str, name: &str) -> usize {
    // The kernel keeps 15 bytes of a thread's name.
    let comm = &name[..name.len().min(15)];
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .count()
}

/// Waits until `counter` has not moved for 500 ms (at most 30 s) and
/// returns it: how far a producer got before something stopped it.
pub fn settle(counter: &std::sync::atomic::AtomicUsize) -> usize {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut last = counter.load(Ordering::SeqCst);
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = counter.load(Ordering::SeqCst);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > Duration::from_millis(500) || Instant::now() > give_up {
            return now;
        }
    }
}

/// Threads of this process that belong to grpc-blocking (their names start
/// with `grpc-`): unaffected by the test harness starting threads of its own.
pub fn library_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("grpc-"))
        })
        .count()
}

/// Waits (up to `secs`) until at most `n` grpc-blocking threads are left;
/// returns the last count.
pub fn wait_for_library_threads_at_most(n: usize, secs: u64) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let now = library_threads();
        if now <= n || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gate test handlers wait on until the test opens it. Every wait is
/// bounded (30 s), so a broken test cannot pin a worker for ever.
#[derive(Default)]
pub struct Gate {
    open: parking_lot::Mutex<bool>,
    cv: parking_lot::Condvar,
}

impl Gate {
    /// Waits until the gate opens (at most 30 s).
    pub fn wait(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut open = self.open.lock();
        while !*open {
            if self.cv.wait_until(&mut open, deadline).timed_out() {
                return;
            }
        }
    }

    /// Waits until the gate opens (true), or the call is cancelled or 30 s
    /// pass (false).
    pub fn wait_unless_cancelled(&self, ctx: &grpc_blocking::server::ServerContext) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut open = self.open.lock();
        while !*open {
            if ctx.is_cancelled() || std::time::Instant::now() > deadline {
                return false;
            }
            self.cv.wait_for(&mut open, Duration::from_millis(20));
        }
        true
    }

    /// Opens the gate for every waiter, now and later.
    pub fn open(&self) {
        *self.open.lock() = true;
        self.cv.notify_all();
    }
}

/// One of every standard `google.rpc` error detail, with values that need
/// care on the wire (non-ASCII, newlines, `%`), and one unknown `Any`.
pub fn every_error_detail() -> Vec<ErrorDetail> {
    vec![
        ErrorDetail::ErrorInfo(ErrorInfo {
            reason: "QUOTA_GONE".into(),
            domain: "tests.example.invalid".into(),
            metadata: [
                ("user".to_string(), "u1".to_string()),
                ("zone".to_string(), "\u{e9}t\u{e9}".to_string()),
            ]
            .into(),
        }),
        ErrorDetail::BadRequest(BadRequest {
            field_violations: vec![
                FieldViolation {
                    field: "value".into(),
                    description: "must not be empty".into(),
                },
                FieldViolation {
                    field: "payload[3]".into(),
                    description: "must be positive \u{2603}".into(),
                },
            ],
        }),
        ErrorDetail::DebugInfo(DebugInfo {
            stack_entries: vec!["frame one".into(), "frame two\nline".into()],
            detail: "some detail %41".into(),
        }),
        ErrorDetail::RetryInfo(RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: 3,
                nanos: 500_000,
            }),
        }),
        ErrorDetail::QuotaFailure(QuotaFailure {
            violations: vec![QuotaViolation {
                subject: "project:1".into(),
                description: "daily limit".into(),
            }],
        }),
        ErrorDetail::PreconditionFailure(PreconditionFailure {
            violations: vec![PreconditionViolation {
                r#type: "TOS".into(),
                subject: "user:1".into(),
                description: "terms not accepted".into(),
            }],
        }),
        ErrorDetail::RequestInfo(RequestInfo {
            request_id: "req-1".into(),
            serving_data: "shard 7".into(),
        }),
        ErrorDetail::ResourceInfo(ResourceInfo {
            resource_type: "file".into(),
            resource_name: "/a/b".into(),
            owner: "me".into(),
            description: "missing".into(),
        }),
        ErrorDetail::Help(Help {
            links: vec![HelpLink {
                description: "docs".into(),
                url: "https://example.invalid/help".into(),
            }],
        }),
        ErrorDetail::LocalizedMessage(LocalizedMessage {
            locale: "fr-FR".into(),
            message: "\u{e9}chec".into(),
        }),
        // A type neither side knows, passed through as it is.
        ErrorDetail::Other(prost_types::Any {
            type_url: "type.googleapis.com/tests.Unknown".into(),
            value: vec![8, 1, 18, 2, b'h', b'i'],
        }),
    ]
}

/// Raises the soft RLIMIT_NOFILE so that `fds` descriptors fit, up to the
/// hard limit; panics if even that is too low.
pub fn ensure_fds(fds: usize) {
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

/// Calls `check` until it says done (at most `secs` seconds, every 5 ms)
/// and returns the value it gave last.
pub fn eventually<T>(secs: u64, mut check: impl FnMut() -> (bool, T)) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, value) = check();
        if ok || std::time::Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
