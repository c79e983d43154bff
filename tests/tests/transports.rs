//! TLS, mutual TLS and Unix domain sockets between our client and server
//! (issue #10); the same against grpcio are in `transports_grpcio.rs`.

use std::time::Duration;

use grpc_blocking::server::{Peer, ServerContext};
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
        for inline in [true, false] {
            let server = Server::builder()
                .add_service(grpc_blocking_examples::nameko::ExampleServer::new(
                    ExampleService,
                ))
                .run_unary_handlers_inline(inline)
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
            assert_eq!(reply.message.len(), big.len(), "inline: {inline}");
            let (mut sink, mut replies) = client.stream_stream_sender(CallOptions::new());
            for seqno in 1..=4 {
                sink.send(req(&big[..1024 * 1024], 1)).unwrap();
                let reply = replies.next().unwrap().unwrap();
                assert_eq!(
                    (reply.message.len(), reply.seqno),
                    (1024 * 1024, seqno),
                    "inline: {inline}"
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
