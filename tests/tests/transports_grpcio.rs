//! Mutual TLS and Unix domain sockets against grpcio, both ways (issue #10);
//! the same between our own client and server are in `transports.rs`.
//!
//! * The grpcio server is `tests/peers/python/server.py` with its transport
//!   flags: `--tls_cert_file --tls_key_file --client_ca_file` (mutual TLS,
//!   `require_client_auth=True`), `--address unix:PATH` or
//!   `unix-abstract:NAME`, and `--report_peer`, which puts what grpcio knows
//!   of the client (`context.peer()`, `context.auth_context()`) in every
//!   call's trailing metadata.
//! * The grpcio client is `client.py example` (the four calls of
//!   nameko-grpc's example service, one JSON line each) with its TLS flags
//!   `--use_tls --ca_file --cert_file --key_file --server_host_override`.
//! * Our server serves the example service through [`Recording`], which
//!   keeps what each handler saw of its peer.
//!
//! TLS uses the test certificates (`Certs`); clients dial 127.0.0.1 and
//! expect `foo.test.example`.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use grpc_blocking::server::{Peer, Requests, ResponseSink, ServerContext};
use grpc_blocking::tls::{ClientTlsConfig, PeerCertificates};
use grpc_blocking::Status;
use grpc_blocking::{CallOptions, Channel, Code, Metadata, Server, ServerBuilder, ServerHandle};
use grpc_blocking_examples::nameko::{
    Example, ExampleClient, ExampleReply, ExampleRequest, ExampleServer,
};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::certs::{Certs, CLIENT_DNS, CLIENT_URI, SERVER_NAME};
use grpc_blocking_tests::python::{example_lines, run_example_client_with, GrpcioServer};
use grpc_blocking_tests::support::{req, with_timeout};
use parking_lot::Mutex;
use serde_json::{json, Value};

/// How long one test may take (a grpcio process or two, four calls each).
const TEST_TIMEOUT_SECS: u64 = 180;
/// How long the grpcio example client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

// ---- mutual TLS ------------------------------------------------------------

/// (a) grpcio's client with a client certificate, our server requiring one:
/// the calls work and every handler sees the client's names.
#[test]
fn grpcio_client_with_a_certificate_to_our_server_requiring_one() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let certs = Certs::get();
        let (server, recording) = serve_recording(|b| {
            b.tls(certs.server_tls().client_auth_required(certs.roots()))
                .bind("127.0.0.1:0")
        });
        let lines = grpcio_example(&server, &grpcio_tls_flags(true));
        assert_eq!(Value::Array(lines), example_lines());
        let seen = recording.take();
        assert_eq!(methods(&seen), ALL_FOUR);
        for call in &seen {
            let certificates = call
                .certificates
                .as_ref()
                .unwrap_or_else(|| panic!("{}: no client certificate seen", call.method));
            assert_eq!(certificates.dns_names(), [CLIENT_DNS], "{}", call.method);
            assert_eq!(certificates.uris(), [CLIENT_URI], "{}", call.method);
            assert_eq!(certificates.chain().len(), 1, "{}", call.method);
            assert!(
                matches!(call.peer, Peer::Tcp(addr) if addr.ip().is_loopback()),
                "{:?}",
                call.peer
            );
        }
    });
}

/// (b) grpcio's client without a certificate, our server requiring one:
/// every call fails UNAVAILABLE and no handler runs; a client with a
/// certificate is served right after.
#[test]
fn grpcio_client_without_a_certificate_is_refused_by_our_server() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let certs = Certs::get();
        let (server, recording) = serve_recording(|b| {
            b.tls(certs.server_tls().client_auth_required(certs.roots()))
                .bind("127.0.0.1:0")
        });
        let lines = grpcio_example(&server, &grpcio_tls_flags(false));
        assert_eq!(lines.len(), 4, "{lines:?}");
        for (line, method) in lines.iter().zip(ALL_FOUR) {
            assert_eq!(line["method"], method, "{line}");
            assert_eq!(
                line["code"],
                Code::Unavailable as i32,
                "grpcio should report UNAVAILABLE: {line}"
            );
        }
        assert!(recording.take().is_empty(), "a handler ran");

        let lines = grpcio_example(&server, &grpcio_tls_flags(true));
        assert_eq!(Value::Array(lines), example_lines());
    });
}

/// (c) our client with a client certificate, grpcio's server requiring one:
/// the calls work, and grpcio saw our certificate's names and the server
/// name we sent (SNI).
#[test]
fn our_client_with_a_certificate_to_grpcio_server_requiring_one() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let certs = Certs::get();
        let server = grpcio_mtls_server();
        let client = our_tls_client(
            &server,
            certs.client_tls().identity(certs.client.identity()),
        );
        assert_eq!(Value::Array(our_example_lines(&client)), example_lines());

        let trailers = reported_peer(&client);
        assert_eq!(trailers.get("x-auth-transport-security-type"), Some("ssl"));
        assert_eq!(trailers.get("x-auth-peer-dns"), Some(CLIENT_DNS));
        assert_eq!(trailers.get("x-auth-peer-uri"), Some(CLIENT_URI));
        assert_eq!(trailers.get("x-auth-peer-spiffe-id"), Some(CLIENT_URI));
        assert_eq!(
            trailers.get("x-auth-ssl-requested-server-name"),
            Some(SERVER_NAME)
        );
    });
}

/// (d) our client without a certificate, grpcio's server requiring one:
/// UNAVAILABLE, a transport error, with TLS's reason; a client with a
/// certificate is served right after.
#[test]
fn our_client_without_a_certificate_is_refused_by_grpcio_server() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let certs = Certs::get();
        let server = grpcio_mtls_server();
        let client = our_tls_client(&server, certs.client_tls());
        let err = client.unary_unary(req("A", 2)).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.is_transport_error(), "{err}");
        // grpcio closes the connection after the handshake without an
        // alert, so the reason is our client's: it had no certificate to
        // give when the server asked for one.
        assert!(
            err.message().starts_with("TLS with ")
                && err.message().contains("asked for a client certificate"),
            "the reason should say a certificate was asked for: {err}"
        );

        let client = our_tls_client(
            &server,
            certs.client_tls().identity(certs.client.identity()),
        );
        assert_eq!(Value::Array(our_example_lines(&client)), example_lines());
    });
}

/// grpcio's server requiring client certificates from the test CA, telling
/// what it saw of its clients in every call's trailing metadata.
fn grpcio_mtls_server() -> GrpcioServer {
    let certs = Certs::get();
    GrpcioServer::start_with(&[
        "--tls_cert_file".into(),
        certs.server.cert_path.clone().into(),
        "--tls_key_file".into(),
        certs.server.key_path.clone().into(),
        "--client_ca_file".into(),
        certs.ca.cert_path.clone().into(),
        "--report_peer".into(),
    ])
}

/// Our client to a grpcio TLS server on 127.0.0.1, expecting
/// `foo.test.example`.
fn our_tls_client(server: &GrpcioServer, tls: ClientTlsConfig) -> ExampleClient {
    let channel = Channel::builder(format!("https://127.0.0.1:{}", server.port()))
        .tls(tls.server_name(SERVER_NAME))
        .connect_timeout(Duration::from_secs(10))
        .connect_lazy()
        .expect("a channel");
    ExampleClient::new(channel)
}

/// The flags of grpcio's example client for TLS to our server on
/// 127.0.0.1, with the client certificate or without.
fn grpcio_tls_flags(with_certificate: bool) -> Vec<OsString> {
    let certs = Certs::get();
    let mut flags: Vec<OsString> = vec![
        "--use_tls".into(),
        "--ca_file".into(),
        certs.ca.cert_path.clone().into(),
        "--server_host_override".into(),
        SERVER_NAME.into(),
    ];
    if with_certificate {
        flags.extend([
            "--cert_file".into(),
            certs.client.cert_path.clone().into(),
            "--key_file".into(),
            certs.client.key_path.clone().into(),
        ]);
    }
    flags
}

/// What a grpcio server with `--report_peer` says it saw of our client, read
/// from the trailing metadata of a unary call.
fn reported_peer(client: &ExampleClient) -> Metadata {
    let response = client
        .unary_unary_start(req("A", 2), CallOptions::default())
        .wait_response()
        .expect("a call reporting the peer");
    response.trailers
}

// ---- Unix domain sockets -----------------------------------------------------

/// grpcio's client to our server on a Unix socket (`unix:PATH`): the four
/// patterns work, and the handlers see the socket's path as their peer.
#[test]
fn grpcio_client_to_our_server_on_a_unix_socket() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("ours.sock");
        let (server, recording) = serve_recording(|b| b.bind_unix(&path));
        let target = format!("unix:{}", path.display());
        assert_eq!(server.target(), target);
        let lines =
            run_example_client_with(&target, &[], CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Value::Array(lines), example_lines());
        assert_peers(&recording, &Peer::Unix(path.display().to_string()));
    });
}

/// Our client to grpcio's server on a Unix socket, as `unix:PATH` and as
/// `unix:///ABSOLUTE`: the four patterns work, and grpcio saw a Unix peer.
#[test]
fn our_client_to_grpcio_server_on_a_unix_socket() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("grpcio.sock");
        let server = grpcio_server_at(&format!("unix:{}", path.display()));
        assert!(
            is_socket(&path),
            "grpcio made no socket at {}",
            path.display()
        );
        for target in [
            format!("unix:{}", path.display()),
            format!("unix://{}", path.display()),
        ] {
            let client = ExampleClient::connect(&target).expect("connect");
            assert_eq!(
                Value::Array(our_example_lines(&client)),
                example_lines(),
                "{target}"
            );
            let peer = reported_peer(&client);
            assert!(
                peer.get("x-peer").is_some_and(|p| p.starts_with("unix:")),
                "{target}: grpcio saw {:?}; its stderr:\n{}",
                peer.get("x-peer"),
                server.stderr()
            );
        }
    });
}

/// Our client to grpcio's server on an abstract Unix socket
/// (`unix-abstract:NAME`).
#[test]
fn our_client_to_grpcio_server_on_an_abstract_unix_socket() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let target = format!("unix-abstract:{}", abstract_name("grpcio"));
        let _server = grpcio_server_at(&target);
        let client = ExampleClient::connect(&target).expect("connect");
        assert_eq!(Value::Array(our_example_lines(&client)), example_lines());
        let peer = reported_peer(&client);
        assert!(
            peer.get("x-peer").is_some_and(|p| p.starts_with("unix")),
            "grpcio saw {:?}",
            peer.get("x-peer")
        );
    });
}

/// grpcio's client to our server on an abstract Unix socket.
#[test]
fn grpcio_client_to_our_server_on_an_abstract_unix_socket() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let name = abstract_name("ours");
        let (server, recording) = serve_recording(|b| b.bind_unix_abstract(&name));
        let target = format!("unix-abstract:{name}");
        assert_eq!(server.target(), target);
        let lines =
            run_example_client_with(&target, &[], CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Value::Array(lines), example_lines());
        assert_peers(&recording, &Peer::Unix(format!("@{name}")));
    });
}

/// A grpcio server killed on a Unix socket leaves its socket file; our
/// server binds the path all the same (nothing listens), and grpcio's
/// client reaches it there.
#[test]
fn our_server_replaces_the_socket_file_a_killed_grpcio_server_left() {
    with_timeout(TEST_TIMEOUT_SECS, || {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("shared.sock");
        let target = format!("unix:{}", path.display());
        let grpcio = grpcio_server_at(&target);
        // Killed (SIGKILL), it cannot clean up.
        drop(grpcio);
        assert!(
            is_socket(&path),
            "the killed grpcio server left no socket file"
        );

        let (_server, recording) = serve_recording(|b| b.bind_unix(&path));
        let lines =
            run_example_client_with(&target, &[], CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Value::Array(lines), example_lines());
        assert_peers(&recording, &Peer::Unix(path.display().to_string()));
    });
}

/// grpcio's server on `address` (`unix:PATH`, `unix-abstract:NAME`),
/// reporting its peers.
fn grpcio_server_at(address: &str) -> GrpcioServer {
    GrpcioServer::start_with(&["--address".into(), address.into(), "--report_peer".into()])
}

/// A name in the abstract namespace no other test process uses.
fn abstract_name(what: &str) -> String {
    format!("grpc-blocking-{what}-{}", std::process::id())
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Checks that the four calls came from `peer`.
fn assert_peers(recording: &Recording, peer: &Peer) {
    let seen = recording.take();
    assert_eq!(methods(&seen), ALL_FOUR);
    for call in &seen {
        assert_eq!(&call.peer, peer, "{}", call.method);
        assert!(call.certificates.is_none(), "{}", call.method);
    }
}

// ---- our side ----------------------------------------------------------------

const ALL_FOUR: [&str; 4] = [
    "unary_unary",
    "unary_stream",
    "stream_unary",
    "stream_stream",
];

/// What one call's handler saw of its peer.
#[derive(Debug)]
struct Seen {
    method: &'static str,
    peer: Peer,
    certificates: Option<PeerCertificates>,
}

/// nameko-grpc's example service ([`ExampleService`]), keeping what each
/// handler saw of its peer.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<Seen>>>);

impl Recording {
    fn record(&self, method: &'static str, ctx: &ServerContext) {
        self.0.lock().push(Seen {
            method,
            peer: ctx.peer().clone(),
            certificates: ctx.peer_certificates().cloned(),
        });
    }

    /// What was seen so far (and forgets it).
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock())
    }
}

fn methods(seen: &[Seen]) -> Vec<&'static str> {
    seen.iter().map(|s| s.method).collect()
}

impl Example for Recording {
    fn unary_unary(&self, r: ExampleRequest, ctx: &ServerContext) -> Result<ExampleReply, Status> {
        self.record("unary_unary", ctx);
        ExampleService.unary_unary(r, ctx)
    }

    fn unary_stream(
        &self,
        r: ExampleRequest,
        ctx: &ServerContext,
        responses: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        self.record("unary_stream", ctx);
        ExampleService.unary_stream(r, ctx, responses)
    }

    fn stream_unary(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        self.record("stream_unary", ctx);
        ExampleService.stream_unary(requests, ctx)
    }

    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        ctx: &ServerContext,
        responses: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        self.record("stream_stream", ctx);
        ExampleService.stream_stream(requests, ctx, responses)
    }
}

/// Our example server, recording, bound by `bind`.
fn serve_recording(
    bind: impl FnOnce(ServerBuilder) -> std::io::Result<Server>,
) -> (ServerHandle, Recording) {
    let recording = Recording::default();
    let builder = Server::builder().add_service(ExampleServer::new(recording.clone()));
    let server = bind(builder)
        .expect("bind our server")
        .spawn()
        .expect("start our server");
    (server, recording)
}

/// grpcio's example client against our TLS server on 127.0.0.1.
fn grpcio_example(server: &ServerHandle, flags: &[OsString]) -> Vec<Value> {
    let target = format!("127.0.0.1:{}", server.local_addr().port());
    run_example_client_with(target, flags, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// The calls `client.py example` makes, made by our client, as the lines it
/// prints.
fn our_example_lines(client: &ExampleClient) -> Vec<Value> {
    fn line(method: &str, replies: Result<Vec<ExampleReply>, Status>) -> Value {
        match replies {
            Ok(replies) => json!({
                "method": method,
                "replies": replies
                    .iter()
                    .map(|r| json!({"message": r.message, "seqno": r.seqno}))
                    .collect::<Vec<_>>(),
            }),
            Err(status) => json!({
                "method": method,
                "code": status.code() as i32,
                "details": status.message(),
            }),
        }
    }
    let timeout = || CallOptions::default().timeout(Duration::from_secs(30));
    let two = || vec![req("A", 1), req("B", 2)];
    vec![
        line(
            "unary_unary",
            client
                .unary_unary_with(req("A", 2), timeout())
                .map(|r| vec![r]),
        ),
        line(
            "unary_stream",
            client.unary_stream_with(req("A", 2), timeout()).collect(),
        ),
        line(
            "stream_unary",
            client.stream_unary_with(two(), timeout()).map(|r| vec![r]),
        ),
        line(
            "stream_stream",
            client.stream_stream_with(two(), timeout()).collect(),
        ),
    ]
}
