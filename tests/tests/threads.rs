//! Dropping servers and clients ends their threads, and idle server
//! connections hold none. These tests have a binary of their own: thread
//! counts are per process, and other tests running in parallel would blur
//! them (the two here take turns).

use std::sync::Mutex;
use std::time::Duration;

use grpc_blocking::{CallOptions, Channel, Server, ServerHandle};
use grpc_blocking_examples::nameko::{ExampleClient, ExampleRequest, ExampleServer};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::support::{
    eventually, req, target, thread_count, threads_named, wait_for_threads_at_most, with_timeout,
};

/// The example service on a free port, its idle connections parking
/// after `after`.
fn serve_parking(after: Option<Duration>) -> ServerHandle {
    Server::builder()
        .park_idle_connections_after(after)
        .add_service(ExampleServer::new(ExampleService))
        .bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .spawn()
        .expect("start the server")
}

/// The tests count the process's threads: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn dropping_servers_and_clients_ends_their_threads() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    with_timeout(120, || {
        // The guard thread of with_timeout is part of the baseline.
        let baseline = thread_count();
        // A thread per connection on both sides (idle connections would
        // otherwise give theirs up at once).
        let server = serve_parking(None);
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let channel = Channel::builder(target(&server))
                    .park_idle_connections_after(None)
                    .connect()
                    .unwrap();
                ExampleClient::new(channel)
            })
            .collect();
        for c in &clients {
            let replies = c
                .stream_stream(vec![
                    ExampleRequest {
                        value: "a".into(),
                        multiplier: 1
                    };
                    3
                ])
                .count();
            assert_eq!(replies, 3);
        }
        // acceptor + 4 server connections + 4 client connections + workers.
        let busy = thread_count();
        assert!(
            busy >= baseline + 9,
            "expected server and client threads, have {busy} vs {baseline}"
        );

        // Dropping the clients ends their connection threads, and the
        // server's connection threads with them.
        drop(clients);
        let after_clients = wait_for_threads_at_most(busy - 8, 10);
        assert!(
            after_clients <= busy - 8,
            "{after_clients} threads left after dropping clients (busy {busy})"
        );

        // Dropping the server ends the acceptor and the handler pool.
        drop(server);
        // At most: the other test's thread may have ended meanwhile.
        let end = wait_for_threads_at_most(baseline, 10);
        assert!(
            end <= baseline,
            "threads left behind after dropping the server: {end}, baseline {baseline}"
        );
    });
}

#[test]
fn idle_connections_hold_no_thread_and_the_parker_ends_with_its_server() {
    // The other test of this binary counts threads too.
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    with_timeout(120, || {
        let baseline = thread_count();
        let server = serve_parking(Some(Duration::from_millis(20)));
        let clients: Vec<_> = (0..4)
            .map(|_| ExampleClient::connect(target(&server)).unwrap())
            .collect();
        for c in &clients {
            assert_eq!(c.unary_unary(req("a", 1)).unwrap().message, "a");
        }
        // Four idle connections, open, and no server connection thread.
        let stats = eventually(10, || {
            let now = server.stats();
            (now.connections_parked == 4, now)
        });
        assert_eq!((stats.connections, stats.connections_parked), (4, 4));
        assert_eq!(threads_named("self", "grpc-conn"), 0);
        assert_eq!(threads_named("self", "grpc-parker"), 1);
        // Each wakes for its next call.
        for c in &clients {
            assert_eq!(c.unary_unary(req("b", 1)).unwrap().message, "b");
        }
        drop(clients);
        drop(server);
        // At most: the other test's threads may have ended meanwhile.
        let end = wait_for_threads_at_most(baseline, 10);
        assert!(
            end <= baseline,
            "threads left behind after dropping the server and its parked connections: \
             {end}, baseline {baseline}"
        );
    });
}

#[test]
fn idle_client_connections_hold_no_thread() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    with_timeout(120, || {
        // The server keeps its threads, so that only the clients' change.
        let server = serve_parking(None);
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let channel = Channel::builder(target(&server))
                    .park_idle_connections_after(Some(Duration::from_millis(20)))
                    .connect()
                    .unwrap();
                ExampleClient::new(channel)
            })
            .collect();
        for round in 0..3 {
            for c in &clients {
                assert_eq!(c.unary_unary(req("a", 1)).unwrap().message, "a");
                assert_eq!(c.unary_stream(req("s", 1)).count(), 2);
            }
            // Idle, every client connection gives its thread up, and the
            // server still has all three open.
            let left = eventually(10, || {
                let n = threads_named("self", "grpc-client-conn");
                (n == 0, n)
            });
            assert_eq!(left, 0, "round {round}");
            assert_eq!(server.stats().connections, 3, "round {round}");
        }
        // Dropping the channels closes their parked connections.
        drop(clients);
        let open = eventually(10, || {
            let n = server.stats().connections;
            (n == 0, n)
        });
        assert_eq!(open, 0);
    });
}

#[test]
fn connections_with_calls_open_but_nothing_to_do_hold_no_thread() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    with_timeout(120, || {
        const CALLS: usize = 24;
        // Both sides park at once, the default.
        let server = serve_parking(Some(Duration::ZERO));
        let mut calls: Vec<_> = (0..CALLS)
            .map(|_| {
                let channel = Channel::builder(target(&server)).connect().unwrap();
                let client = ExampleClient::new(channel);
                let (mut sink, mut replies) = client.stream_stream_sender(CallOptions::default());
                sink.send(req("a", 1)).unwrap();
                assert_eq!(replies.next().unwrap().unwrap().message, "a");
                (client, sink, replies)
            })
            .collect();
        // Every call is open, its handler waiting for the next request:
        // the connections wait parked on both sides, and a few pool
        // threads serve them all.
        let stats = eventually(10, || {
            let now = server.stats();
            (now.connections_parked == CALLS, now)
        });
        assert_eq!(
            (stats.connections, stats.connections_parked),
            (CALLS, CALLS)
        );
        let client_threads = eventually(10, || {
            let n = threads_named("self", "grpc-client-conn");
            (n == 0, n)
        });
        assert_eq!(client_threads, 0);
        let pools = (
            threads_named("self", "grpc-conn-pool"),
            threads_named("self", "grpc-client-pool"),
        );
        assert!(
            pools.0 < CALLS / 3 && pools.1 < CALLS / 3,
            "pool threads (server, client) for {CALLS} open calls: {pools:?}"
        );
        assert_eq!(threads_named("self", "grpc-conn"), 0);
        // Each call goes on where it was, and ends.
        for (_, sink, replies) in &mut calls {
            sink.send(req("b", 2)).unwrap();
            assert_eq!(replies.next().unwrap().unwrap().message, "bb");
        }
        for (_, sink, mut replies) in calls {
            sink.finish();
            assert!(replies.next().is_none());
        }
    });
}
