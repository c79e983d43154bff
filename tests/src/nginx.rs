//! nginx as a gRPC proxy in front of our servers, for `tests/proxy_nginx.rs`
//! and the `via Nginx` pairings of the equivalence machinery.
//!
//! * [`binary`] finds the `nginx` binary (on `PATH`, else `/usr/sbin/nginx`)
//!   and [`version`] asks it its version. Without nginx the test FAILS with
//!   a message saying to `apt-get install nginx` (`.ci/run` installs it):
//!   these tests never skip.
//! * [`Nginx::start`] writes a configuration ([`config`]) into a fresh
//!   temporary folder, with every file nginx writes (pid, error and access
//!   logs, the `*_temp_path` folders) inside it, and starts nginx on a free
//!   port of 127.0.0.1 with `grpc_pass` to the given upstream servers,
//!   round-robin. It waits (bounded) until nginx accepts connections, and
//!   fails with the tail of nginx's error log when it does not come up.
//!   Dropping it kills nginx and removes the folder.
//! * [`OursBehindNginx`] is three of our servers (the equivalence service of
//!   `equivalence.rs`, one instance shared by the three, and nameko's
//!   example service) behind one nginx, with a count of the calls each
//!   server took.
//!
//! nginx runs as one process (`master_process off`, `daemon off`), so that
//! killing it leaves no worker behind and, run as root, it switches to no
//! other user (who could not reach the temporary folder). It is started by
//! a small `sh` wrapper that waits for its stdin to close and then kills
//! nginx and removes the folder: dropping [`Nginx`] closes that stdin, and
//! so does the end of the test process, however it ends. (The shared
//! instance lives in a `static`, which is never dropped.)

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use grpc_blocking::ServerHandle;

use crate::equivalence::{proto, EquivalenceService};
use crate::peer_process::{tail_of_file, wait_with_timeout, StderrTail};

/// What to do when nginx is missing.
pub const INSTALL_HINT: &str =
    "The proxy tests run nginx (1.13.10 or later: grpc_pass) in front of our \
servers. Install it: `apt-get install nginx` on Debian/Ubuntu (.ci/run does so when it is \
missing); only the binary is used, never the system's configuration or service.";

/// How long nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many free ports to try when another process takes ours first.
const PORT_ATTEMPTS: usize = 5;

/// The nginx binary: `nginx` on `PATH`, else `/usr/sbin/nginx` (Debian's,
/// where `PATH` lacks `/usr/sbin`). Panics with [`INSTALL_HINT`] when there
/// is none.
pub fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| is_executable(p))
        .unwrap_or_else(|| panic!("nginx not found on PATH nor at /usr/sbin/nginx. {INSTALL_HINT}"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// nginx's version, as `nginx -v` prints it (`1.22.1`), asked once.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let binary = binary();
        let out = Command::new(&binary)
            .arg("-v")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `{} -v`: {e}. {INSTALL_HINT}", binary.display())
            });
        // `nginx version: nginx/1.22.1`, on stderr.
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let version = text
            .split_once("nginx/")
            .map(|(_, v)| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("`{} -v` printed {text:?}", binary.display()));
        let numbers = version_numbers(&version);
        assert!(
            numbers >= (1, 13, 10),
            "nginx {version} has no grpc_pass (1.13.10 or later). {INSTALL_HINT}"
        );
        version
    })
}

/// (major, minor, patch) of `1.22.1`.
fn version_numbers(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// What may differ between the configurations of the tests' nginx.
///
/// gRPC metadata names may hold `_` and `.` (PROTOCOL-HTTP2.md:
/// `Header-Name → 1*( %x30-39 / %x61-7A / "_" / "-" / ".")`), which
/// nginx's defaults call invalid in a request: a name with `_`
/// (`underscores_in_headers off`) or `.` (no option allows it) is dropped
/// without a word (`ignore_invalid_headers on`; the error log says "client
/// sent invalid header: NAME" at `info`). The default here passes them all,
/// as a gRPC proxy needs; [`Options::nginx_defaults`] keeps nginx's.
#[derive(Clone, Debug)]
pub struct Options {
    /// `underscores_in_headers` (nginx's default: off).
    pub underscores_in_headers: bool,
    /// `ignore_invalid_headers` (nginx's default: on).
    pub ignore_invalid_headers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            underscores_in_headers: true,
            ignore_invalid_headers: false,
        }
    }
}

impl Options {
    /// nginx's own defaults for the fields of [`Options`].
    pub fn nginx_defaults() -> Options {
        Options {
            underscores_in_headers: false,
            ignore_invalid_headers: true,
        }
    }
}

/// The configuration nginx runs with: listening on `listen` with HTTP/2
/// (cleartext: h2c with prior knowledge, as gRPC clients speak it), passing
/// every request with `grpc_pass` to `upstreams`, round-robin; every file it
/// writes is under `dir`. `options` says the rest.
///
/// `nginx_version` picks the syntax of HTTP/2: `listen ... http2` up to
/// 1.25.0 (Debian 12 has 1.22.1), `http2 on` from 1.25.1.
pub fn config(
    dir: &Path,
    listen: SocketAddr,
    upstreams: &[SocketAddr],
    nginx_version: &str,
    options: &Options,
) -> String {
    let dir = dir.display();
    let on_off = |on: bool| if on { "on" } else { "off" };
    let underscores = on_off(options.underscores_in_headers);
    let ignore_invalid = on_off(options.ignore_invalid_headers);
    let (listen_http2, http2_on) = if version_numbers(nginx_version) >= (1, 25, 1) {
        ("", "\n        http2 on;")
    } else {
        (" http2", "")
    };
    let servers: String = upstreams
        .iter()
        .map(|addr| format!("        server {addr} max_fails=0;\n"))
        .collect();
    format!(
        r#"# Written by grpc-blocking's tests (tests/src/nginx.rs) for nginx {nginx_version}.
# One process, in the foreground, killed by the test: no master, no workers
# to outlive it, no switch to another user.
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    # One line per call: the server that took it, and its grpc-status (in
    # the trailers, or in the headers of a Trailers-Only response).
    log_format grpc '$remote_addr:$remote_port "$request" $status '
                    'upstream=$upstream_addr upstream_status=$upstream_status '
                    'grpc_status_trailer=$upstream_trailer_grpc_status '
                    'grpc_status_header=$upstream_http_grpc_status '
                    'request_time=$request_time';
    access_log {dir}/access.log grpc;

    # Everything nginx writes stays in this folder.
    client_body_temp_path {dir}/client_body_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;

    # gRPC messages of any size (the default limit of a request body is
    # 1 MiB, answered with 413), and metadata up to 64 KiB a field.
    client_max_body_size 0;
    large_client_header_buffers 4 64k;
    # Metadata names with `_` and `.` (see Options).
    underscores_in_headers {underscores};
    ignore_invalid_headers {ignore_invalid};
    # Streams and calls may stay quiet for as long as a test lets them
    # (the defaults: 60 s). One connection takes any number of calls (the
    # default, 1000, then GOAWAY) and stays open while idle.
    client_body_timeout 300s;
    send_timeout 300s;
    keepalive_timeout 600s;
    keepalive_requests 1000000;

    upstream grpc_backends {{
        # Round-robin, per call. max_fails=0: a failed call never takes a
        # server out of the rotation. keepalive: calls reuse the
        # connections to the servers (one call at a time on each).
{servers}        keepalive 16;
    }}

    server {{
        listen {listen}{listen_http2};{http2_on}

        location / {{
            grpc_pass grpc://grpc_backends;
            # A call lasts as long as its client and server want (the
            # defaults end one quiet for 60 s); gRPC deadlines are the
            # client's and the server's business (grpc-timeout passes).
            grpc_read_timeout 300s;
            grpc_send_timeout 300s;
            grpc_connect_timeout 10s;
            # Response headers (the server's initial metadata) up to 64 KiB.
            grpc_buffer_size 64k;
            # Never send a call to a second server after the first failed:
            # it may have run there.
            grpc_next_upstream off;
            # nginx passes `te: trailers` when the client sent it (grpc_pass
            # does by default), and the response's trailers, grpc-status
            # and grpc-message among them.
        }}
    }}
}}
"#
    )
}

/// The wrapper nginx runs under: `sh -c WRAPPER nginx-wrapper NGINX DIR`.
/// Prints nginx's pid, waits for its stdin to close, then kills nginx and
/// removes DIR.
const WRAPPER: &str = r#"
nginx="$1"; dir="$2"
"$nginx" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" </dev/null &
pid=$!
echo "$pid"
cat >/dev/null
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;

/// A running nginx, killed (its folder removed) on drop.
pub struct Nginx {
    addr: SocketAddr,
    pid: u32,
    wrapper: Child,
    // Closed on drop: the wrapper then kills nginx.
    stdin: Option<ChildStdin>,
    stderr: StderrTail,
    // Declared last: removed after nginx is gone.
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free port of 127.0.0.1 with `grpc_pass` to
    /// `upstreams`. Panics, with the tail of nginx's error log, if it does
    /// not accept connections within 20 s.
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        Nginx::start_with(upstreams, &Options::default())
    }

    /// [`Nginx::start`] with other [`Options`].
    pub fn start_with(upstreams: &[SocketAddr], options: &Options) -> Nginx {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Nginx::try_start(upstreams, options) {
                Ok(nginx) => return nginx,
                // Someone took the port between our probe and nginx's bind.
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("nginx found no free port in {PORT_ATTEMPTS} attempts: {last_error}")
    }

    fn try_start(upstreams: &[SocketAddr], options: &Options) -> Result<Nginx, String> {
        let binary = binary();
        let version = version();
        let dir = tempfile::Builder::new()
            .prefix("grpc-blocking-nginx-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary folder for nginx: {e}"))?;
        let addr = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), addr, upstreams, version, options))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("nginx-wrapper")
            .arg(&binary)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run sh to start {}: {e}", binary.display()))?;
        let stderr = StderrTail::default();
        stderr.collect(wrapper.stderr.take().expect("piped stderr"));
        let stdin = wrapper.stdin.take();
        let stdout = wrapper.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let pid = rx
            .recv_timeout(START_TIMEOUT)
            .ok()
            .and_then(|line| line.trim().parse::<u32>().ok());
        let mut nginx = Nginx {
            addr,
            pid: pid.unwrap_or(0),
            wrapper,
            stdin,
            stderr,
            dir,
        };
        if pid.is_none() {
            return Err(nginx.failure("the wrapper did not report nginx's pid"));
        }
        // Ready once nginx has logged its version, which it does after it
        // bound its port (so the port that answers is nginx's, not another
        // process's that took it first), and the port answers.
        let started = format!(": nginx/{version}");
        let give_up = Instant::now() + START_TIMEOUT;
        loop {
            if !nginx.is_running() {
                return Err(nginx.failure("nginx exited"));
            }
            if nginx.error_log().contains(&started)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                break;
            }
            if Instant::now() > give_up {
                return Err(nginx.failure(&format!(
                    "nginx did not accept connections on {addr} within {START_TIMEOUT:?}"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        if !nginx.is_running() || nginx.error_log().contains("[emerg]") {
            return Err(nginx.failure("nginx did not start"));
        }
        Ok(nginx)
    }

    /// A failure message: `what`, nginx's version, the tail of its error
    /// log and what it printed; stops it.
    fn failure(&mut self, what: &str) -> String {
        let message = format!(
            "{what} (nginx {}, {}; config {}):\n--- error log (tail) ---\n{}\n--- stderr ---\n{}",
            version(),
            binary().display(),
            self.dir.path().join("nginx.conf").display(),
            self.error_log_tail(30),
            self.stderr.text()
        );
        self.stop();
        message
    }

    /// Whether nginx is still running (not exited, not a zombie waiting
    /// for the wrapper).
    pub fn is_running(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        // `pid (comm) STATE ...`: the state follows the last `)`.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("");
        self.pid != 0 && state != "Z" && state != "X"
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// nginx's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The folder of its configuration, logs and temporary files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nginx.conf")).unwrap_or_default()
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The last `lines` lines of its error log (for failure messages).
    pub fn error_log_tail(&self, lines: usize) -> String {
        tail_of_file(&self.dir.path().join("error.log"), lines)
    }

    /// Its access log so far: one line per call, with the upstream server
    /// that took it and the call's `grpc-status`.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Kills nginx (through its wrapper) and waits for it.
    fn stop(&mut self) {
        // Closing the wrapper's stdin makes it kill nginx and remove the
        // folder.
        drop(self.stdin.take());
        if wait_with_timeout(&mut self.wrapper, Duration::from_secs(10)).is_none() && self.pid != 0
        {
            // The wrapper was killed; kill nginx itself.
            // SAFETY: kill(2) with a pid we started and a valid signal.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port of 127.0.0.1 free right now.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("the probe's address")
}

/// Three of our servers behind one nginx, round-robin: each serves the
/// equivalence service (one [`EquivalenceService`] for the three, so an
/// `observed` query finds what a handler on another server recorded, and
/// calls of one rendezvous meet across servers) and nameko's example
/// service, and counts the calls it takes.
pub struct OursBehindNginx {
    // Declared first: nginx goes before the servers it proxies to.
    nginx: Nginx,
    servers: Vec<ServerHandle>,
    calls: Arc<Vec<AtomicUsize>>,
}

impl OursBehindNginx {
    /// Number of our servers behind nginx.
    pub const SERVERS: usize = 3;

    /// Starts the servers and nginx. Panics if one does not come up.
    pub fn start() -> OursBehindNginx {
        OursBehindNginx::start_with(&Options::default())
    }

    /// [`OursBehindNginx::start`] with other nginx [`Options`].
    pub fn start_with(options: &Options) -> OursBehindNginx {
        let service = Arc::new(EquivalenceService::default());
        let calls: Arc<Vec<AtomicUsize>> =
            Arc::new((0..Self::SERVERS).map(|_| AtomicUsize::new(0)).collect());
        let servers: Vec<ServerHandle> = (0..Self::SERVERS)
            .map(|index| {
                let calls = calls.clone();
                grpc_blocking::Server::builder()
                    .intercept(move |_: &mut grpc_blocking::server::CallStart<'_>| {
                        calls[index].fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .add_service(proto::EquivalenceServer::from_arc(service.clone()))
                    .add_service(grpc_blocking_examples::nameko::ExampleServer::new(
                        grpc_blocking_examples::ExampleService,
                    ))
                    .bind("127.0.0.1:0")
                    .expect("bind one of our servers behind nginx")
                    .spawn()
                    .expect("start one of our servers behind nginx")
            })
            .collect();
        let upstreams: Vec<SocketAddr> = servers.iter().map(ServerHandle::local_addr).collect();
        let nginx = Nginx::start_with(&upstreams, options);
        OursBehindNginx {
            nginx,
            servers,
            calls,
        }
    }

    /// One instance shared by all the tests of this process: the servers
    /// end with the process, and nginx with them (see the module's
    /// documentation).
    pub fn shared() -> &'static OursBehindNginx {
        static SHARED: OnceLock<OursBehindNginx> = OnceLock::new();
        SHARED.get_or_init(OursBehindNginx::start)
    }

    /// nginx's address: where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.nginx.addr()
    }

    /// The nginx in front.
    pub fn nginx(&self) -> &Nginx {
        &self.nginx
    }

    /// The servers' addresses, in the order of the calls' counts.
    pub fn backends(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(ServerHandle::local_addr).collect()
    }

    /// How many calls each server took so far (counted before its handler
    /// runs, whatever the method).
    pub fn calls_per_server(&self) -> Vec<usize> {
        self.calls
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }
}
