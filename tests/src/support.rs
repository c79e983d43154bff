//! Small helpers shared by the integration tests: a timeout guard for
//! blocking tests, servers on free ports, and thread counting.

use std::time::Duration;

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
