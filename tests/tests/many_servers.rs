//! A channel over many backends (issue #12): name resolution, pick_first
//! and round_robin, connectivity states, wait_for_ready, client-side health
//! checking, resolver updates, and backends that die.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpc_blocking::client::{ConnectivityState, ManualResolver};
use grpc_blocking::{CallOptions, Channel, Code, ServerHandle, Status};
use grpc_blocking_examples::nameko::ExampleClient;
use grpc_blocking_tests::fleet::{serve_named, BackendProcess};
use grpc_blocking_tests::support::{req, with_timeout};

/// Three in-process backends on 127.0.0.1, .2 and .3.
fn three_backends() -> Vec<ServerHandle> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| serve_named(name, format!("127.0.0.{}:0", i + 1)))
        .collect()
}

fn ipv4_target(servers: &[ServerHandle]) -> String {
    let list: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    format!("ipv4:{}", list.join(","))
}

/// Which backend answered a unary call.
fn who(client: &ExampleClient) -> Result<String, Status> {
    client.unary_unary(req("x", 1)).map(|r| r.message)
}

fn counts(names: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for n in names {
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

#[test]
fn round_robin_spreads_calls_evenly_over_three_backends() {
    with_timeout(120, || {
        let servers = three_backends();
        let channel = Channel::builder(ipv4_target(&servers))
            .round_robin()
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel.clone());
        // Until every backend is connected, calls go to those that are.
        let deadline = Instant::now() + Duration::from_secs(10);
        while channel
            .subchannels()
            .iter()
            .any(|s| s.state != ConnectivityState::Ready)
        {
            assert!(Instant::now() < deadline, "{:?}", channel.subchannels());
            std::thread::sleep(Duration::from_millis(5));
        }
        let before: Vec<u64> = channel
            .subchannels()
            .iter()
            .map(|s| s.calls_started)
            .collect();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let client = client.clone();
                std::thread::spawn(move || {
                    (0..750).map(|_| who(&client).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let names: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let counts = counts(names);
        assert_eq!(counts.len(), 3, "{counts:?}");
        for (name, n) in &counts {
            // ±10% of even.
            assert!((900..=1100).contains(n), "{name}: {n} of 3000 ({counts:?})");
        }
        // The channel counted the same.
        let after: Vec<u64> = channel
            .subchannels()
            .iter()
            .map(|s| s.calls_started)
            .collect();
        let per_sub: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(per_sub.iter().sum::<u64>(), 3000, "{per_sub:?}");
        println!("round_robin spread over 3 backends, 3000 calls: {counts:?}");
    });
}

#[test]
fn pick_first_uses_one_backend_and_moves_on_when_it_fails() {
    with_timeout(60, || {
        // The first address answers nothing.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let servers = three_backends();
        let target = format!(
            "ipv4:{dead_addr},{},{}",
            servers[1].local_addr(),
            servers[2].local_addr()
        );
        let client = ExampleClient::connect(target).unwrap();
        let names: Vec<String> = (0..20).map(|_| who(&client).unwrap()).collect();
        assert_eq!(counts(names), HashMap::from([("b".to_owned(), 20)]));
        // The backend in use goes away: once the channel has noticed, the
        // next call connects to the next address.
        let channel = client.channel().clone();
        let mut servers = servers;
        drop(servers.remove(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while channel.state(false) == ConnectivityState::Ready {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(who(&client).unwrap(), "c");
    });
}

#[test]
fn dns_targets_resolve_localhost() {
    with_timeout(60, || {
        let server = serve_named("local", "127.0.0.1:0");
        let port = server.local_addr().port();
        for target in [
            format!("dns:///localhost:{port}"),
            format!("dns:localhost:{port}"),
            format!("localhost:{port}"),
        ] {
            let client = ExampleClient::connect(target.as_str()).unwrap();
            assert_eq!(who(&client).unwrap(), "local", "{target}");
        }
    });
}

#[test]
fn connectivity_states_are_observable_and_waitable() {
    with_timeout(60, || {
        let server = serve_named("s", "127.0.0.1:0");
        let channel = Channel::connect_lazy(server.target()).unwrap();
        assert_eq!(channel.state(false), ConnectivityState::Idle);
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = channel.state(true);
        assert!(
            matches!(
                first,
                ConnectivityState::Connecting | ConnectivityState::Ready
            ),
            "{first}"
        );
        while channel.state(false) != ConnectivityState::Ready {
            let now = channel.state(false);
            assert!(
                channel.wait_for_state_change(now, deadline),
                "stuck in {now}"
            );
        }
        // The server goes: the channel leaves READY (pick_first goes IDLE
        // until the next call).
        drop(server);
        assert!(channel.wait_for_state_change(ConnectivityState::Ready, deadline));
        assert_eq!(channel.state(false), ConnectivityState::Idle);
        let sub = &channel.subchannels()[0];
        assert_eq!(sub.state, ConnectivityState::Idle);
        drop(channel);
    });
}

#[test]
fn wait_for_ready_waits_for_a_backend_up_to_the_deadline() {
    with_timeout(60, || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channel = Channel::builder(format!("http://127.0.0.1:{port}"))
            .reconnect_backoff_initial(Duration::from_millis(20))
            .reconnect_backoff_max(Duration::from_millis(50))
            .connect_lazy()
            .unwrap();
        let client = ExampleClient::new(channel);
        // Without it, a call fails fast.
        assert_eq!(who(&client).unwrap_err().code(), Code::Unavailable);
        // With it, a call waits, and ends at its deadline.
        let err = client
            .unary_unary_with(
                req("x", 1),
                CallOptions::new()
                    .wait_for_ready(true)
                    .timeout(Duration::from_millis(300)),
            )
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        // A backend that comes up while a call waits serves it.
        let waiting = {
            let client = client.clone();
            std::thread::spawn(move || {
                client
                    .unary_unary_with(
                        req("x", 1),
                        CallOptions::new()
                            .wait_for_ready(true)
                            .timeout(Duration::from_secs(20)),
                    )
                    .map(|r| r.message)
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let server = serve_named("late", ("127.0.0.1", port));
        assert_eq!(waiting.join().unwrap().unwrap(), "late");
        drop(server);
    });
}

#[test]
fn a_backend_reporting_not_serving_gets_no_calls_until_it_serves_again() {
    with_timeout(120, || {
        let servers = three_backends();
        let health: Vec<_> = servers.iter().map(|s| s.health().unwrap()).collect();
        let channel = Channel::builder(ipv4_target(&servers))
            .round_robin()
            .health_check("nameko.example")
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel.clone());
        let ready = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let now = channel
                    .subchannels()
                    .iter()
                    .filter(|s| s.state == ConnectivityState::Ready)
                    .count();
                if now == n {
                    return;
                }
                assert!(Instant::now() < deadline, "{:?}", channel.subchannels());
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        ready(3);
        health[1].set_not_serving("nameko.example");
        ready(2);
        let names = counts((0..300).map(|_| who(&client).unwrap()));
        assert_eq!(names.get("b"), None, "{names:?}");
        assert_eq!(names.len(), 2, "{names:?}");
        health[1].set_serving("nameko.example");
        ready(3);
        let names = counts((0..300).map(|_| who(&client).unwrap()));
        assert_eq!(names.get("b"), Some(&100), "{names:?}");
        // Every backend NOT_SERVING: calls fail fast.
        for h in &health {
            h.set_not_serving("nameko.example");
        }
        ready(0);
        let err = who(&client).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
    });
}

#[test]
fn a_backend_removed_by_the_resolver_is_drained_gracefully() {
    with_timeout(120, || {
        let servers = three_backends();
        let addrs: Vec<_> = servers.iter().map(|s| s.local_addr()).collect();
        let resolver = ManualResolver::new(addrs.clone());
        let channel = Channel::builder("http://fleet.test:1")
            .resolver(resolver.clone())
            .round_robin()
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while channel
            .subchannels()
            .iter()
            .any(|s| s.state != ConnectivityState::Ready)
        {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        // Slow calls in flight on every backend.
        let slow: Vec<_> = (0..6)
            .map(|_| {
                let client = client.clone();
                std::thread::spawn(move || {
                    client.unary_unary(req("sleep:500", 1)).map(|r| r.message)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // "a" leaves the registry.
        resolver.set_addresses(addrs[1..].to_vec());
        let deadline = Instant::now() + Duration::from_secs(10);
        while channel.subchannels().len() != 2 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        // Its in-flight calls finish.
        let finished = counts(slow.into_iter().map(|t| t.join().unwrap().unwrap()));
        assert_eq!(finished.values().sum::<usize>(), 6, "{finished:?}");
        assert_eq!(finished.get("a"), Some(&2), "{finished:?}");
        // New calls go to the others only.
        let names = counts((0..100).map(|_| who(&client).unwrap()));
        assert_eq!(names.get("a"), None, "{names:?}");
        // And it comes back when the registry says so.
        resolver.set_addresses(addrs.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let names = counts((0..30).map(|_| who(&client).unwrap()));
            if names.contains_key("a") {
                break;
            }
            assert!(Instant::now() < deadline, "{names:?}");
        }
    });
}

/// What a load thread saw.
#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    failed: Vec<Status>,
}

/// Runs calls of every pattern in a loop until `stop`, recording outcomes.
fn load(client: ExampleClient, stop: Arc<AtomicBool>, out: Arc<Mutex<Outcomes>>) {
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let result: Result<(), Status> = match i % 4 {
            0 => client.unary_unary(req("x", 1)).map(drop),
            1 => client
                .unary_stream(req("x", 1))
                .collect::<Result<Vec<_>, _>>()
                .map(|r| assert_eq!(r.len(), 3)),
            2 => client
                .stream_unary((0..3).map(|_| req("x", 1)))
                .map(|r| assert_eq!(r.seqno, 3)),
            _ => client
                .stream_stream((0..3).map(|_| req("x", 1)))
                .collect::<Result<Vec<_>, _>>()
                .map(|r| assert_eq!(r.len(), 3)),
        };
        let mut out = out.lock().unwrap();
        match result {
            Ok(()) => out.ok += 1,
            Err(e) => out.failed.push(e),
        }
    }
}

fn backend_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_test-backend"))
}

#[test]
fn a_killed_backend_fails_only_its_calls_in_flight_and_the_others_carry_on() {
    with_timeout(180, || {
        let mut backends: Vec<BackendProcess> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                BackendProcess::start(backend_bin(), &format!("127.0.0.{}", i + 1), 0, name, None)
            })
            .collect();
        let target = format!(
            "ipv4:{}",
            backends
                .iter()
                .map(|b| b.addr.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let channel = Channel::builder(target)
            .round_robin()
            .reconnect_backoff_initial(Duration::from_millis(50))
            .reconnect_backoff_max(Duration::from_millis(200))
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let out = Arc::new(Mutex::new(Outcomes::default()));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (client, stop, out) = (client.clone(), stop.clone(), out.clone());
                std::thread::spawn(move || load(client, stop, out))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let before_kill = out.lock().unwrap().ok;
        assert!(before_kill > 0);
        backends[0].kill();
        std::thread::sleep(Duration::from_millis(700));
        let (ok_after_kill, failed_after_kill) = {
            let o = out.lock().unwrap();
            (o.ok, o.failed.len())
        };
        // Calls keep succeeding on the two others.
        std::thread::sleep(Duration::from_millis(500));
        let ok_later = out.lock().unwrap().ok;
        assert!(ok_later > ok_after_kill, "no call succeeded after the kill");
        // The backend comes back on its port: it gets calls again.
        let port = backends[0].addr.port();
        backends[0] = BackendProcess::start(backend_bin(), "127.0.0.1", port, "a", None);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let names = counts((0..30).map(|_| who(&client).unwrap()));
            if names.contains_key("a") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a never got calls again: {names:?}"
            );
        }
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        let out = out.lock().unwrap();
        // Only the calls in flight on the killed backend failed (at most
        // one per load thread), each UNAVAILABLE from the lost connection.
        assert!(
            out.failed.len() <= 6 && out.failed.len() == failed_after_kill,
            "{} failures: {:?}",
            out.failed.len(),
            out.failed
        );
        for e in &out.failed {
            assert_eq!(e.code(), Code::Unavailable, "{e}");
            assert!(e.is_transport_error(), "{e}");
        }
        println!(
            "killed backend: {} calls ok, {} failed ({:?})",
            out.ok,
            out.failed.len(),
            out.failed
                .iter()
                .map(|e| e.message().to_owned())
                .collect::<Vec<_>>()
        );
    });
}

#[test]
fn with_a_retry_policy_no_unary_call_fails_when_a_backend_is_killed() {
    with_timeout(180, || {
        let mut backends: Vec<BackendProcess> = (1..=3)
            .map(|i| BackendProcess::start(backend_bin(), &format!("127.0.0.{i}"), 0, "x", None))
            .collect();
        let target = format!(
            "ipv4:{}",
            backends
                .iter()
                .map(|b| b.addr.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let config = grpc_blocking::client::ServiceConfig::from_json(
            r#"{"loadBalancingConfig": [{"round_robin": {}}],
                "methodConfig": [{"name": [{"service": "nameko.example"}],
                  "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s",
                    "maxBackoff": "0.1s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        )
        .unwrap();
        let channel = Channel::builder(target)
            .service_config(config)
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel);
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (client, stop) = (client.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut ok, mut failed) = (0usize, Vec::new());
                    while !stop.load(Ordering::SeqCst) {
                        // Slow enough that calls are in flight at the kill.
                        match client.unary_unary(req("sleep:20", 1)) {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(e),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        backends[0].kill();
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::SeqCst);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in threads {
            let (o, f) = t.join().unwrap();
            ok += o;
            failed.extend(f);
        }
        assert!(ok > 0);
        assert!(failed.is_empty(), "{failed:?}");
        println!("killed backend under a retry policy: {ok} calls ok, none failed");
    });
}

#[test]
fn a_backend_cut_off_without_a_goodbye_is_found_by_keepalive_and_left() {
    with_timeout(180, || {
        let ns = grpc_blocking_tests::netns::Netns::create()
            .unwrap_or_else(|e| panic!("this test needs a network namespace: {e}"));
        let far = BackendProcess::start(
            backend_bin(),
            &ns.ns_ip.to_string(),
            0,
            "far",
            Some(&ns.name),
        );
        let near = [
            serve_named("near1", "127.0.0.2:0"),
            serve_named("near2", "127.0.0.3:0"),
        ];
        let target = format!(
            "ipv4:{},{},{}",
            far.addr,
            near[0].local_addr(),
            near[1].local_addr()
        );
        let (interval, timeout) = (Duration::from_millis(200), Duration::from_millis(500));
        let channel = Channel::builder(target)
            .round_robin()
            .keepalive_interval(Some(interval))
            .keepalive_timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while channel
            .subchannels()
            .iter()
            .any(|s| s.state != ConnectivityState::Ready)
        {
            assert!(Instant::now() < deadline, "{:?}", channel.subchannels());
            std::thread::sleep(Duration::from_millis(5));
        }
        let names = counts((0..30).map(|_| who(&client).unwrap()));
        assert_eq!(names.get("far"), Some(&10), "{names:?}");

        ns.cut().unwrap();
        let cut_at = Instant::now();
        // Calls go on from several threads; those picked for the far
        // backend hang until keepalive gives up on it, then fail.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let client = client.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| who(&client))
                        .collect::<Vec<Result<String, Status>>>()
                })
            })
            .collect();
        let far_sub = |c: &Channel| {
            c.subchannels()
                .into_iter()
                .find(|s| s.address.to_string() == far.addr.to_string())
        };
        while far_sub(&channel).is_some_and(|s| s.state == ConnectivityState::Ready) {
            assert!(
                cut_at.elapsed() < Duration::from_secs(30),
                "keepalive never noticed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let noticed = cut_at.elapsed();
        let results: Vec<Result<String, Status>> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let failed: Vec<&Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        for e in &failed {
            assert_eq!(e.code(), Code::Unavailable, "{e}");
        }
        let ok = counts(results.iter().filter_map(|r| r.as_ref().ok().cloned()));
        assert_eq!(ok.get("far"), None, "{ok:?}");
        // After it: every call goes to the two left.
        let after = counts((0..20).map(|_| who(&client).unwrap()));
        assert_eq!(after.get("far"), None, "{after:?}");
        println!(
            "link cut: keepalive ({interval:?} interval, {timeout:?} timeout) left the backend after {noticed:?}; \
             {} calls in flight on it failed UNAVAILABLE, {} went to the others",
            failed.len(),
            ok.values().sum::<usize>()
        );
        drop(far);
    });
}
