//! TLS, mutual TLS and Unix domain sockets between our client and server
//! (issue #10); the same against grpcio are in `transports_grpcio.rs`.

use std::time::Duration;

use grpc_blocking::server::{Peer, ServerContext, UnaryHandlers};
use grpc_blocking::tls::{ClientTlsConfig, ServerTlsConfig};
use grpc_blocking::{CallOptions, Channel, Code, Server, ServerHandle, Status};
use grpc_blocking_examples::nameko::{ExampleClient, ExampleReply, ExampleRequest};
use grpc_blocking_examples::{call_all_four, ExampleService};
use grpc_blocking_tests::certs::{Certs, CLIENT_DNS, CLIENT_URI, SERVER_NAME};
use grpc_blocking_tests::stubbed;
use grpc_blocking_tests::support::{req, with_timeout};

fn tls_server(tls: ServerTlsConfig) -> ServerHandle {
    Server::builder()
        .add_service(grpc_blocking_examples::nameko::ExampleServer::new(
            ExampleService,
        ))
        .tls(tls)
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

#[test]
fn the_four_patterns_over_tls() {
    with_timeout(60, || {
        let certs = Certs::get();
        let server = tls_server(certs.server_tls());
        assert!(server.target().starts_with("https://127.0.0.1:"));
        let channel = Channel::builder(server.target())
            .tls(certs.client_tls())
            .connect()
            .unwrap();
        call_all_four(&ExampleClient::new(channel)).unwrap();
    });
}

/// Messages larger than a TLS record, an HTTP/2 frame and the flow-control
/// windows, both ways over TLS: unary with the handler on the connection
/// thread and on a worker, and a bidirectional stream.
#[test]
fn large_messages_over_tls() {
    with_timeout(120, || {
        let certs = Certs::get();
        for handlers in [
            UnaryHandlers::Adaptive,
            UnaryHandlers::Inline,
            UnaryHandlers::Workers,
        ] {
            let server = Server::builder()
                .add_service(grpc_blocking_examples::nameko::ExampleServer::new(
                    ExampleService,
                ))
                .unary_handlers(handlers)
                .tls(certs.server_tls())
                .bind("127.0.0.1:0")
                .unwrap()
                .spawn()
                .unwrap();
            let channel = Channel::builder(server.target())
                .tls(certs.client_tls())
                .connect()
                .unwrap();
            let client = ExampleClient::new(channel);
            let big = "t".repeat(3 * 1024 * 1024);
            let reply = client.unary_unary(req(&big, 1)).unwrap();
            assert_eq!(reply.message.len(), big.len(), "handlers: {handlers:?}");
            let (mut sink, mut replies) = client.stream_stream_sender(CallOptions::new());
            for seqno in 1..=4 {
                sink.send(req(&big[..1024 * 1024], 1)).unwrap();
                let reply = replies.next().unwrap().unwrap();
                assert_eq!(
                    (reply.message.len(), reply.seqno),
                    (1024 * 1024, seqno),
                    "handlers: {handlers:?}"
                );
            }
            sink.finish();
            assert!(replies.next().is_none());
        }
    });
}

/// Tells the handler's view of its peer back in the reply.
struct WhoAmI;

impl stubbed::Example for WhoAmI {
    fn unary_unary(&self, _: ExampleRequest, ctx: &ServerContext) -> Result<ExampleReply, Status> {
        let who = match ctx.peer_certificates() {
            Some(c) => format!("{:?} {:?} {}", c.dns_names(), c.uris(), c.chain().len()),
            None => "anonymous".to_owned(),
        };
        Ok(ExampleReply {
            message: format!("{} {who}", ctx.peer()),
            seqno: 0,
        })
    }
}

fn who_am_i(tls: Option<ServerTlsConfig>) -> ServerHandle {
    let mut b = Server::builder().add_service(stubbed::ExampleServer::new(WhoAmI));
    if let Some(tls) = tls {
        b = b.tls(tls);
    }
    b.bind("127.0.0.1:0").unwrap().spawn().unwrap()
}

#[test]
fn mutual_tls_shows_the_client_certificate_to_handlers() {
    with_timeout(60, || {
        let certs = Certs::get();
        let server = who_am_i(Some(certs.server_tls().client_auth_required(certs.roots())));
        let client = ExampleClient::new(
            Channel::builder(server.target())
                .tls(certs.client_tls().identity(certs.client.identity()))
                .connect()
                .unwrap(),
        );
        let reply = client.unary_unary(req("x", 1)).unwrap();
        assert!(
            reply.message.starts_with("ipv4:127.0.0.1:"),
            "{}",
            reply.message
        );
        assert!(
            reply
                .message
                .ends_with(&format!("[{CLIENT_DNS:?}] [{CLIENT_URI:?}] 1")),
            "{}",
            reply.message
        );
        // Without a client certificate: the handshake fails, and says so.
        let err = Channel::builder(server.target())
            .tls(certs.client_tls())
            .connect()
            .map(|c| ExampleClient::new(c).unary_unary(req("x", 1)))
            .map_err(Status::from)
            .and_then(|r| r)
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.is_transport_error(), "{err}");
        assert!(
            err.message().to_lowercase().contains("certificate"),
            "{err}"
        );
    });
}

#[test]
fn optional_client_certificates() {
    with_timeout(60, || {
        let certs = Certs::get();
        let server = who_am_i(Some(certs.server_tls().client_auth_optional(certs.roots())));
        let anonymous = ExampleClient::new(
            Channel::builder(server.target())
                .tls(certs.client_tls())
                .connect()
                .unwrap(),
        );
        assert!(anonymous
            .unary_unary(req("x", 1))
            .unwrap()
            .message
            .ends_with(" anonymous"));
        let known = ExampleClient::new(
            Channel::builder(server.target())
                .tls(certs.client_tls().identity(certs.client.identity()))
                .connect()
                .unwrap(),
        );
        assert!(known
            .unary_unary(req("x", 1))
            .unwrap()
            .message
            .contains(CLIENT_URI));
    });
}

/// A client's TLS failure: UNAVAILABLE, a transport error, with `needle` in
/// its message.
fn assert_tls_failure(target: &str, tls: ClientTlsConfig, needle: &str) {
    let channel = Channel::builder(target)
        .tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
        .unwrap();
    let err = ExampleClient::new(channel)
        .unary_unary(req("x", 1))
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.is_transport_error(), "{err}");
    assert!(err.message().contains(needle), "{needle:?} not in: {err}");
}

#[test]
fn certificate_errors_say_what_is_wrong() {
    with_timeout(60, || {
        let certs = Certs::get();
        for (pem, needle) in [
            (&certs.expired, "certificate expired"),
            (&certs.wrong_name, "not valid for name"),
            (&certs.untrusted, "UnknownIssuer"),
        ] {
            let server = tls_server(ServerTlsConfig::new(pem.identity()).unwrap());
            assert_tls_failure(&server.target(), certs.client_tls(), needle);
            // The server keeps serving good clients.
            drop(server);
        }
        // The right certificate, reached by another name: SNI and the
        // expected name follow the override.
        let server = tls_server(certs.server_tls());
        let port = server.local_addr().port();
        let channel = Channel::builder(format!("https://127.0.0.1:{port}"))
            .tls(certs.client_tls().server_name(SERVER_NAME))
            .connect()
            .unwrap();
        ExampleClient::new(channel)
            .unary_unary(req("x", 1))
            .unwrap();
    });
}

#[test]
fn plaintext_and_tls_mixed_up_say_which_side_speaks_tls() {
    with_timeout(60, || {
        let certs = Certs::get();
        // A TLS client on a plaintext port.
        let plain = who_am_i(None);
        let port = plain.local_addr().port();
        assert_tls_failure(
            &format!("https://127.0.0.1:{port}"),
            certs.client_tls(),
            "does not speak TLS",
        );
        // A plaintext client on a TLS port.
        let tls = who_am_i(Some(certs.server_tls()));
        let port = tls.local_addr().port();
        let client = ExampleClient::new(
            Channel::builder(format!("http://127.0.0.1:{port}"))
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy()
                .unwrap(),
        );
        let err = client.unary_unary(req("x", 1)).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("over TLS"), "{err}");
        // Both still serve their own kind.
        let ok = ExampleClient::connect(plain.target()).unwrap();
        ok.unary_unary(req("x", 1)).unwrap();
        let ok = ExampleClient::new(
            Channel::builder(tls.target())
                .tls(certs.client_tls())
                .connect()
                .unwrap(),
        );
        ok.unary_unary(req("x", 1)).unwrap();
    });
}

#[test]
fn the_four_patterns_over_a_unix_socket_and_the_socket_is_the_peer() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grpc.sock");
        let server = Server::builder()
            .add_service(grpc_blocking_examples::nameko::ExampleServer::new(
                ExampleService,
            ))
            .bind_unix(&path)
            .unwrap()
            .spawn()
            .unwrap();
        assert_eq!(server.target(), format!("unix:{}", path.display()));
        for target in [
            format!("unix:{}", path.display()),
            format!("unix://{}", path.display()),
        ] {
            call_all_four(&ExampleClient::connect(target).unwrap()).unwrap();
        }
        server.shutdown().unwrap();
        assert!(!path.exists(), "the socket file is removed at shutdown");

        let peer = who_am_unix(&path);
        assert_eq!(peer, format!("unix:{} anonymous", path.display()));
    });
}

fn who_am_unix(path: &std::path::Path) -> String {
    let server = Server::builder()
        .add_service(stubbed::ExampleServer::new(WhoAmI))
        .bind_unix(path)
        .unwrap()
        .spawn()
        .unwrap();
    let client = ExampleClient::connect(server.target()).unwrap();
    let reply = client.unary_unary(req("x", 1)).unwrap().message;
    server.shutdown().unwrap();
    reply
}

#[test]
fn abstract_unix_sockets() {
    with_timeout(60, || {
        let name = format!("grpc-blocking-{}", std::process::id());
        let server = Server::builder()
            .add_service(grpc_blocking_examples::nameko::ExampleServer::new(
                ExampleService,
            ))
            .bind_unix_abstract(&name)
            .unwrap()
            .spawn()
            .unwrap();
        assert_eq!(server.target(), format!("unix-abstract:{name}"));
        call_all_four(&ExampleClient::connect(server.target()).unwrap()).unwrap();
    });
}

#[test]
fn tls_over_a_unix_socket() {
    with_timeout(60, || {
        let certs = Certs::get();
        let dir = tempfile::tempdir().unwrap();
        let server = Server::builder()
            .add_service(grpc_blocking_examples::nameko::ExampleServer::new(
                ExampleService,
            ))
            .tls(certs.server_tls())
            .bind_unix(dir.path().join("tls.sock"))
            .unwrap()
            .spawn()
            .unwrap();
        let channel = Channel::builder(server.target())
            .tls(certs.client_tls())
            .connect()
            .unwrap();
        call_all_four(&ExampleClient::new(channel)).unwrap();
    });
}

#[test]
fn peers_of_tcp_calls() {
    with_timeout(60, || {
        let server = who_am_i(None);
        let client = ExampleClient::connect(server.local_addr()).unwrap();
        let message = client.unary_unary(req("x", 1)).unwrap().message;
        let peer = message.split(' ').next().unwrap();
        assert!(peer.starts_with("ipv4:127.0.0.1:"), "{message}");
        let _ = Peer::Unix(String::new());
    });
}

/// A TLS client made by hand with rustls, trusting the test CA and
/// offering `alpn`; returns the connection after the handshake, or the
/// handshake's error.
fn raw_tls(
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> Result<(rustls::ClientConnection, std::net::TcpStream), String> {
    use rustls::pki_types::pem::PemObject;
    let certs = Certs::get();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(certs.ca.cert.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok((conn, tcp))
}

#[test]
fn alpn_h2_is_required_but_no_alpn_is_accepted() {
    with_timeout(60, || {
        let certs = Certs::get();
        let server = tls_server(certs.server_tls());
        // Offering only http/1.1: a TLS alert that says so.
        let err = raw_tls(server.local_addr(), &[b"http/1.1"]).unwrap_err();
        assert!(err.contains("NoApplicationProtocol"), "{err}");
        // Offering nothing (as gRPC's C core may): served, as HTTP/2.
        let (mut conn, mut tcp) = raw_tls(server.local_addr(), &[]).unwrap();
        assert_eq!(conn.alpn_protocol(), None);
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
        std::io::Write::write_all(&mut conn.writer(), &preface).unwrap();
        let mut first = [0u8; 9];
        let mut got = 0;
        while got < first.len() {
            conn.complete_io(&mut tcp).unwrap();
            got += std::io::Read::read(&mut conn.reader(), &mut first[got..]).unwrap_or(0);
        }
        assert_eq!(
            first[3], 4,
            "the server's first frame is SETTINGS: {first:?}"
        );
        // Offering h2: what every gRPC client does.
        let (conn, _) = raw_tls(server.local_addr(), &[b"h2"]).unwrap();
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    });
}

/// True when the server closes `tcp` within `secs` seconds.
fn closed_within(tcp: &mut std::net::TcpStream, secs: u64) -> bool {
    tcp.set_read_timeout(Some(Duration::from_secs(secs)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(tcp, &mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn garbage_or_a_stall_mid_handshake_closes_only_that_connection() {
    with_timeout(60, || {
        let certs = Certs::get();
        let server = Server::builder()
            .add_service(grpc_blocking_examples::nameko::ExampleServer::new(
                ExampleService,
            ))
            .tls(certs.server_tls())
            .handshake_timeout(Duration::from_millis(500))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let good = || {
            let channel = Channel::builder(server.target())
                .tls(certs.client_tls())
                .connect()
                .unwrap();
            ExampleClient::new(channel)
                .unary_unary(req("ok", 1))
                .unwrap();
        };
        // A TLS record header, then garbage.
        let mut garbage = std::net::TcpStream::connect(server.local_addr()).unwrap();
        std::io::Write::write_all(&mut garbage, b"\x16\x03\x01\x00\x40").unwrap();
        std::io::Write::write_all(&mut garbage, &[0xAB; 64]).unwrap();
        assert!(closed_within(&mut garbage, 10), "garbage was not closed");
        good();
        // Half a ClientHello, then nothing: closed at the handshake
        // timeout, while others are served.
        let mut stalled = std::net::TcpStream::connect(server.local_addr()).unwrap();
        std::io::Write::write_all(&mut stalled, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc").unwrap();
        good();
        assert!(
            closed_within(&mut stalled, 10),
            "the stalled handshake was not closed"
        );
        good();
    });
}

#[test]
fn a_reloaded_certificate_serves_new_connections_and_spares_old_ones() {
    with_timeout(60, || {
        let certs = Certs::get();
        let tls = certs.server_tls();
        let reloader = tls.certificate_reloader();
        let server = tls_server(tls);
        let connect = || {
            Channel::builder(server.target())
                .tls(certs.client_tls())
                .connect_timeout(Duration::from_secs(5))
                .connect()
        };
        let before = ExampleClient::new(connect().unwrap());
        before.unary_unary(req("a", 1)).unwrap();
        // A certificate for another name: new connections refuse it...
        reloader.reload(&certs.wrong_name.identity()).unwrap();
        let err = connect().unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        // ...while the established connection goes on.
        before.unary_unary(req("b", 1)).unwrap();
        // And back.
        reloader.reload(&certs.server.identity()).unwrap();
        ExampleClient::new(connect().unwrap())
            .unary_unary(req("c", 1))
            .unwrap();
        // A key that does not match its certificate is refused, and the
        // certificate in use stays.
        let mismatched =
            grpc_blocking::tls::Identity::from_pem(&certs.server.cert, &certs.client.key).unwrap();
        assert!(reloader.reload(&mismatched).is_err());
        ExampleClient::new(connect().unwrap())
            .unary_unary(req("d", 1))
            .unwrap();
    });
}

/// What a Unix socket server shares with a TCP one: the message size limit,
/// the connection limit (a refused connection is told why), keepalive, and a
/// graceful shutdown that lets an in-flight call finish.
#[test]
fn limits_keepalive_and_shutdown_work_unchanged_over_a_unix_socket() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.sock");
        let gate = std::sync::Arc::new(grpc_blocking_tests::support::Gate::default());
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let slow = Slow {
            gate: gate.clone(),
            entered: std::sync::Mutex::new(entered_tx),
        };
        let server = Server::builder()
            .add_service(stubbed::ExampleServer::new(slow))
            .max_receive_message_size(1024)
            .max_connections(1)
            .keepalive_interval(Some(Duration::from_millis(100)))
            .keepalive_timeout(Duration::from_secs(5))
            .shutdown_grace_period(Duration::from_secs(20))
            .bind_unix(&path)
            .unwrap()
            .spawn()
            .unwrap();
        let client = ExampleClient::connect(server.target()).unwrap();
        // The receive limit.
        let err = client.unary_unary(req(&"x".repeat(2000), 1)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        // Keepalive pings come and are answered: the connection lives on.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(client.unary_unary(req("ok", 1)).unwrap().message, "ok");
        // The connection limit: a second client is refused, and told why.
        let second = ExampleClient::connect(server.target()).unwrap();
        let err = second.unary_unary(req("no", 1)).unwrap_err();
        assert!(err.message().contains("limit of 1 connections"), "{err}");
        // A graceful shutdown: the call in flight finishes.
        let held = client.unary_unary_start(req("hold", 1), Default::default());
        entered.recv_timeout(Duration::from_secs(30)).unwrap();
        let shutdown = std::thread::spawn(move || server.shutdown());
        gate.open();
        assert_eq!(held.wait().unwrap().message, "hold");
        shutdown.join().unwrap().unwrap();
        assert!(!path.exists());
    });
}

/// Echoes the request; a request "hold" says it arrived and waits at the
/// gate.
struct Slow {
    gate: std::sync::Arc<grpc_blocking_tests::support::Gate>,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
}

impl stubbed::Example for Slow {
    fn unary_unary(&self, r: ExampleRequest, _: &ServerContext) -> Result<ExampleReply, Status> {
        if r.value == "hold" {
            let _ = self.entered.lock().unwrap().send(());
            self.gate.wait();
        }
        Ok(ExampleReply {
            message: r.value,
            seqno: 0,
        })
    }
}
