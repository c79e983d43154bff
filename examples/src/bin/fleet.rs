//! `fleet`: three example servers (on 127.0.0.1, 127.0.0.2 and 127.0.0.3)
//! behind one channel: round_robin with client-side health checking and a
//! retry policy from a service config, and the backends from a list the
//! application keeps (a [`ManualResolver`]). It prints where its calls went
//! as the list grows and as one backend stops serving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use grpc_blocking::client::{ConnectivityState, ManualResolver, ServiceConfig};
use grpc_blocking::{Channel, Server, ServerHandle};
use grpc_blocking_examples::nameko::{ExampleClient, ExampleRequest, ExampleServer};
use grpc_blocking_examples::ExampleService;

/// Round robin over the backends that say they serve `nameko.example`;
/// its calls retried on UNAVAILABLE, at most 3 attempts.
const SERVICE_CONFIG: &str = r#"{
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": "nameko.example"},
    "methodConfig": [{
        "name": [{"service": "nameko.example"}],
        "timeout": "2s",
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"]
        }
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
}"#;

/// Makes `n` calls and prints how many each backend took.
fn spread(label: &str, client: &ExampleClient, n: usize) -> Result<(), String> {
    let before = calls_by_backend(client.channel());
    for _ in 0..n {
        let request = ExampleRequest {
            value: "x".into(),
            multiplier: 1,
        };
        client.unary_unary(request).map_err(|e| e.to_string())?;
    }
    let after = calls_by_backend(client.channel());
    let counts: Vec<String> = after
        .iter()
        .map(|(addr, n)| format!("{addr}={}", n - before.get(addr).copied().unwrap_or(0)))
        .collect();
    println!("{label}: {}", counts.join(" "));
    Ok(())
}

fn calls_by_backend(channel: &Channel) -> BTreeMap<String, u64> {
    channel
        .subchannels()
        .into_iter()
        .map(|s| (s.address.to_string(), s.calls_started))
        .collect()
}

/// Waits until `n` backends are READY (connected, and serving).
fn wait_ready(channel: &Channel, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel
        .subchannels()
        .iter()
        .filter(|s| s.state == ConnectivityState::Ready)
        .count()
        != n
    {
        if Instant::now() > deadline {
            return Err(format!(
                "not {n} backends ready: {:?}",
                channel.subchannels()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn main() {
    let run = || -> Result<(), String> {
        let servers: Vec<ServerHandle> = (1..=3)
            .map(|i| {
                Server::builder()
                    .add_service(ExampleServer::new(ExampleService))
                    .bind(format!("127.0.0.{i}:0"))
                    .and_then(|s| s.spawn())
                    .map_err(|e| format!("cannot start a server on 127.0.0.{i}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let addresses: Vec<_> = servers.iter().map(|s| s.local_addr()).collect();

        // The application's registry: two backends to start with.
        let backends = ManualResolver::new(addresses[..2].to_vec());
        let config = ServiceConfig::from_json(SERVICE_CONFIG).map_err(|e| e.to_string())?;
        let channel = Channel::builder("http://example.fleet:50051")
            .resolver(backends.clone())
            .service_config(config)
            .connect()
            .map_err(|e| e.to_string())?;
        let client = ExampleClient::new(channel.clone());
        wait_ready(&channel, 2)?;
        spread("two backends", &client, 30)?;

        // A third joins the registry.
        backends.set_addresses(addresses.clone());
        wait_ready(&channel, 3)?;
        spread("three backends", &client, 30)?;

        // One says it no longer serves: it gets no calls.
        let health = servers[0]
            .health()
            .ok_or("health checking is on by default")?;
        health.set_not_serving("nameko.example");
        wait_ready(&channel, 2)?;
        spread("one not serving", &client, 30)?;
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("fleet: {e}");
        std::process::exit(1);
    }
}
