//! One peer cannot starve the others (issue #13): the starvation probe (a
//! client opening 2 connections of 1,000 bidi streams each, sending
//! HEADERS only: no message, no end, no deadline) gets its share of the
//! handler threads and no more, and the other clients' calls go on as when
//! the server is idle. Also the per-peer connection limit. The attacker
//! connects from 127.0.0.2, the other clients from 127.0.0.1: two peers.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use grpc_blocking::{CallOptions, Channel, Server};
use grpc_blocking_examples::nameko::{ExampleClient, ExampleServer};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::raw::{
    encode_headers, grpc_request_headers, header, headers, settings, Event, RawConn, PREFACE,
};
use grpc_blocking_tests::support::{library_threads, req, with_timeout};

/// A raw HTTP/2 connection to `server` from the source address `from`.
fn connect_from(from: &str, server: SocketAddr) -> RawConn {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&server.into()).unwrap();
    let mut conn = RawConn::from_stream(TcpStream::from(socket));
    let mut hello = PREFACE.to_vec();
    hello.extend_from_slice(&settings(&[]));
    conn.write(&hello).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.next_event_until(deadline) {
            Some(Event::Settings { ack: false, .. }) => return conn,
            Some(Event::Closed) | None => panic!("no handshake with {server}"),
            Some(_) => {}
        }
    }
}

/// Opens `n` bidi streams on `conn` with HEADERS only.
fn open_streams(conn: &mut RawConn, n: u32) {
    let fields = grpc_request_headers("/nameko.example/stream_stream");
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let block = encode_headers(&fields);
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(&headers(2 * i + 1, &block, false, true));
    }
    conn.write(&batch).unwrap();
}

/// How many streams of `conn` were refused RESOURCE_EXHAUSTED (read for
/// `wait`), and the first refusal's message.
fn refused(conn: &mut RawConn, wait: Duration) -> (usize, String) {
    let (events, _) = conn.events_for(wait);
    let mut n = 0;
    let mut message = String::new();
    for e in events {
        if let Event::Headers { fields, .. } = e {
            if header(&fields, "grpc-status") == Some("8") {
                n += 1;
                if message.is_empty() {
                    message = header(&fields, "grpc-message").unwrap_or("").to_owned();
                }
            }
        }
    }
    (n, message)
}

/// Times `n` unary calls and `m` bidi calls of the victim.
fn victim_round(client: &ExampleClient, n: usize, m: usize) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        let v = format!("v{i}");
        assert_eq!(client.unary_unary(req(&v, 1)).unwrap().message, v);
    }
    for _ in 0..m {
        let replies: Vec<_> = client
            .stream_stream((0..3).map(|_| req("b", 1)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(replies.len(), 3);
    }
    started.elapsed()
}

#[test]
fn a_peer_holding_two_thousand_silent_streams_gets_its_share_and_no_more() {
    with_timeout(120, || {
        let baseline_threads = library_threads();
        let server = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let addr = server.local_addr();
        let victim = ExampleClient::new(Channel::connect(server.target()).unwrap());
        victim_round(&victim, 50, 5);
        let idle = victim_round(&victim, 200, 20);

        let mut attackers: Vec<RawConn> = (0..2).map(|_| connect_from("127.0.0.2", addr)).collect();
        for a in &mut attackers {
            open_streams(a, 1000);
        }
        // The server refuses what is beyond the peer's share (512 of 1024
        // handlers by default), each at once, with a status that says why.
        let mut total_refused = 0;
        let mut message = String::new();
        for a in &mut attackers {
            let (n, m) = refused(a, Duration::from_secs(3));
            total_refused += n;
            if message.is_empty() {
                message = m;
            }
        }
        assert_eq!(total_refused, 2000 - 512, "{message}");
        assert!(message.contains("max_handlers_per_peer"), "{message}");
        let stats = server.stats();
        assert_eq!(stats.handlers_busy, 512, "{stats:?}");

        // The other client is served as when the server was idle.
        let attacked = victim_round(&victim, 200, 20);
        println!(
            "starvation probe: 2 connections x 1000 silent bidi streams from one peer; \
             {total_refused} refused, 512 held; another client's 200 unary + 20 bidi calls took \
             {attacked:?} (idle: {idle:?}); threads {} -> {}",
            baseline_threads,
            library_threads()
        );
        // Threads stay bounded by the share.
        assert!(library_threads() <= baseline_threads + 512 + 16);
        drop(attackers);
    });
}

#[test]
fn a_peer_may_hold_only_its_share_of_connections() {
    with_timeout(60, || {
        let server = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .max_connections_per_peer(3)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let addr = server.local_addr();
        let held: Vec<RawConn> = (0..3).map(|_| connect_from("127.0.0.2", addr)).collect();
        // A fourth from the same peer is refused, saying why.
        let mut fourth = RawConn::from_stream({
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let local: SocketAddr = "127.0.0.2:0".parse().unwrap();
            socket.bind(&local.into()).unwrap();
            socket.connect(&addr.into()).unwrap();
            TcpStream::from(socket)
        });
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(&[]));
        let _ = fourth.write(&hello);
        let (events, closed) = fourth.events_for(Duration::from_secs(5));
        let debug = events.iter().find_map(|e| match e {
            Event::GoAway { debug, .. } => Some(debug.clone()),
            _ => None,
        });
        assert!(closed, "{events:?}");
        assert!(
            debug
                .as_deref()
                .is_some_and(|d| d.contains("max_connections_per_peer")),
            "{events:?}"
        );
        // Another peer is served.
        let client = ExampleClient::connect(server.target()).unwrap();
        let reply = client
            .unary_unary_with(req("x", 1), CallOptions::new())
            .map(|r| r.message)
            .map_err(|e| e.code());
        assert_eq!(reply, Ok("x".to_owned()));
        drop(held);
    });
}
