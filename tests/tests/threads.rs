//! Dropping servers and clients ends their threads. This test has a binary
//! of its own: thread counts are per process, and other tests running in
//! parallel would blur them.

use grpc_blocking_examples::nameko::{ExampleClient, ExampleRequest, ExampleServer};
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::support::{
    serve, target, thread_count, wait_for_threads_at_most, with_timeout,
};

#[test]
fn dropping_servers_and_clients_ends_their_threads() {
    with_timeout(120, || {
        // The guard thread of with_timeout is part of the baseline.
        let baseline = thread_count();
        let server = serve(ExampleServer::new(ExampleService));
        let clients: Vec<_> = (0..4)
            .map(|_| ExampleClient::connect(target(&server)).unwrap())
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
        let end = wait_for_threads_at_most(baseline, 10);
        assert_eq!(
            end, baseline,
            "threads left behind after dropping the server"
        );
    });
}
