//! The standard services against grpcio's own (issue #11): the health
//! checking client and server of grpcio-health-checking and the reflection
//! client of grpcio-reflection, pinned in `tests/peers/python/requirements.txt`
//! and driven through `tests/peers/python/standard_services.py` (protocol in
//! its docstring). Our own client against our own server is in
//! `standard_services.rs`.
//!
//! Each test starts its own Python process; it needs the grpcio virtualenv
//! (`PythonEnv::get`), which it provisions on first use, and fails with what
//! to install when it cannot: these tests never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use grpc_blocking::health::v1::{HealthCheckRequest, HealthCheckResponse, HealthListRequest};
use grpc_blocking::health::{HealthClient, ServingStatus};
use grpc_blocking::prost::Message;
use grpc_blocking::prost_types::field_descriptor_proto::Label;
use grpc_blocking::prost_types::{DescriptorProto, FileDescriptorProto};
use grpc_blocking::server::Service;
use grpc_blocking::{Code, Server, ServerHandle, Streaming};
use grpc_blocking_examples::grpc::testing::TestServiceServer;
use grpc_blocking_examples::interop::InteropService;
use grpc_blocking_examples::nameko::ExampleServer;
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::python::{GrpcioStandardServices, PythonEnv};
use grpc_blocking_tests::support::with_timeout;
use serde_json::{json, Value};

const EXAMPLE: &str = "nameko.example";
const TEST_SERVICE: &str = "grpc.testing.TestService";
const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// How long one test may take once the virtualenv is provisioned.
const TEST_SECS: u64 = 300;
/// How long one command to the peer may take (a grpcio call on a loaded
/// machine, not a wait for something that should not come).
const COMMAND: Duration = Duration::from_secs(60);
/// How long a watch may stay quiet before "nothing happened" is believed.
const QUIET: f64 = 0.3;

/// Provisions the grpcio virtualenv (on first use: a pip install, under
/// its own, longer timeout) before a test's own timeout starts.
fn provisioned() {
    PythonEnv::get();
}

/// A server with the example and interop services, reflection on, and a
/// grace period far longer than any test's timeout: a call that held a
/// graceful shutdown up would fail the test.
fn our_server() -> ServerHandle {
    Server::builder()
        .add_service(ExampleServer::new(ExampleService))
        .add_service(TestServiceServer::new(InteropService))
        .reflection(true)
        .shutdown_grace_period(Duration::from_secs(600))
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

/// `host:port`, as grpcio takes it.
fn grpcio_target(server: &ServerHandle) -> String {
    server.local_addr().to_string()
}

/// The grpcio peer, with the target of its client commands (empty for a
/// peer that only serves).
struct Peer {
    peer: GrpcioStandardServices,
    target: String,
}

impl Peer {
    fn new(target: String) -> Peer {
        Peer {
            peer: GrpcioStandardServices::start(),
            target,
        }
    }

    fn ask(&self, mut command: Value) -> Value {
        if command.get("target").is_none() && !self.target.is_empty() {
            command["target"] = json!(self.target);
        }
        self.peer.request(command, COMMAND)
    }

    /// grpcio's Check: (code, status or null, details).
    fn check(&self, service: &str) -> (String, Value, String) {
        let a = self.ask(json!({"op": "health_check", "service": service}));
        (
            a["code"].as_str().unwrap().to_owned(),
            a["status"].clone(),
            a["details"].as_str().unwrap().to_owned(),
        )
    }

    /// Starts a grpcio Watch; returns its id.
    fn watch(&self, service: &str) -> u64 {
        self.ask(json!({"op": "health_watch", "service": service}))["watch"]
            .as_u64()
            .unwrap()
    }

    /// The next event of a watch, waiting up to `wait` seconds, without the
    /// command's id.
    fn next(&self, watch: u64, wait: f64) -> Value {
        let mut a = self.ask(json!({"op": "watch_next", "watch": watch, "wait": wait}));
        a.as_object_mut().unwrap().remove("id");
        a
    }
}

fn status_event(status: &str) -> Value {
    json!({"event": "status", "status": status})
}

fn nothing() -> Value {
    json!({"event": "nothing"})
}

// ---------------------------------------------------------------------------
// grpcio-health-checking's client against our server.

#[test]
fn grpcio_packages_are_the_pinned_versions() {
    provisioned();
    with_timeout(TEST_SECS, || {
        let peer = GrpcioStandardServices::start();
        let v = peer.request(json!({"op": "version"}), COMMAND);
        assert_eq!(v["grpcio"], "1.85.1", "{v}");
        assert_eq!(v["grpcio_health_checking"], "1.85.1", "{v}");
        assert_eq!(v["grpcio_reflection"], "1.85.1", "{v}");
        assert_eq!(v["protobuf"], "7.36.2", "{v}");
    });
}

#[test]
fn grpcio_health_client_checks_and_lists_our_statuses() {
    provisioned();
    with_timeout(TEST_SECS, || {
        let server = our_server();
        let health = server.health().unwrap();
        let peer = Peer::new(grpcio_target(&server));
        for service in ["", EXAMPLE, TEST_SERVICE, HEALTH, REFLECTION_V1ALPHA] {
            let (code, status, _) = peer.check(service);
            assert_eq!(
                (code.as_str(), status),
                ("OK", json!("SERVING")),
                "{service:?}"
            );
        }
        let (code, status, details) = peer.check("no.Such");
        assert_eq!((code.as_str(), status), ("NOT_FOUND", Value::Null));
        assert!(details.contains("no.Such"), "{details}");

        health.set_not_serving(EXAMPLE);
        health.set_serving("custom.Name");
        assert_eq!(peer.check(EXAMPLE).1, "NOT_SERVING");
        assert_eq!(peer.check("custom.Name").1, "SERVING");

        let list = peer.ask(json!({"op": "health_list"}));
        assert_eq!(list["code"], "OK", "{list}");
        assert_eq!(
            list["statuses"],
            json!({
                "": "SERVING",
                "custom.Name": "SERVING",
                EXAMPLE: "NOT_SERVING",
                TEST_SERVICE: "SERVING",
                HEALTH: "SERVING",
                REFLECTION_V1: "SERVING",
                REFLECTION_V1ALPHA: "SERVING",
            })
        );

        health.clear_status("custom.Name");
        assert_eq!(peer.check("custom.Name").0, "NOT_FOUND");
    });
}

#[test]
fn grpcio_health_client_watches_changes_made_through_the_reporter() {
    provisioned();
    with_timeout(TEST_SECS, || {
        let server = our_server();
        let health = server.health().unwrap();
        let peer = Peer::new(grpcio_target(&server));

        let example = peer.watch(EXAMPLE);
        let later = peer.watch("later.Service");
        assert_eq!(peer.next(example, 30.0), status_event("SERVING"));
        assert_eq!(peer.next(later, 30.0), status_event("SERVICE_UNKNOWN"));
        // Nothing more while nothing changes, and the watch stays open.
        assert_eq!(peer.next(example, QUIET), nothing());
        assert_eq!(server.stats().handlers_busy, 2);

        // Each change reaches the Python watcher, once.
        health.set_not_serving(EXAMPLE);
        assert_eq!(peer.next(example, 30.0), status_event("NOT_SERVING"));
        health.set_not_serving(EXAMPLE);
        assert_eq!(peer.next(example, QUIET), nothing());
        health.set_serving(EXAMPLE);
        assert_eq!(peer.next(example, 30.0), status_event("SERVING"));
        health.clear_status(EXAMPLE);
        assert_eq!(peer.next(example, 30.0), status_event("SERVICE_UNKNOWN"));

        health.set_serving("later.Service");
        assert_eq!(peer.next(later, 30.0), status_event("SERVING"));
        assert_eq!(peer.next(example, QUIET), nothing());

        // grpcio cancelling its watches frees our handler threads.
        peer.ask(json!({"op": "watch_cancel", "watch": example}));
        peer.ask(json!({"op": "watch_cancel", "watch": later}));
        assert_eq!(
            peer.next(example, 30.0),
            json!({"event": "end", "code": "CANCELLED", "details": "Locally cancelled by application!"})
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.stats().handlers_busy != 0 {
            assert!(Instant::now() < deadline, "{:?}", server.stats());
            thread::sleep(Duration::from_millis(10));
        }
    });
}

#[test]
fn grpcio_health_client_sees_not_serving_then_a_clean_end_at_shutdown() {
    provisioned();
    with_timeout(TEST_SECS, || {
        let server = our_server();
        let health = server.health().unwrap();
        let peer = Peer::new(grpcio_target(&server));
        let whole = peer.watch("");
        let example = peer.watch(EXAMPLE);
        assert_eq!(peer.next(whole, 30.0), status_event("SERVING"));
        assert_eq!(peer.next(example, 30.0), status_event("SERVING"));

        // Shut down while Python watches. The grace period is 600 s: the
        // shutdown ending at all says the watches did not hold it up.
        let (done, shut) = mpsc::channel();
        let started = Instant::now();
        thread::spawn(move || {
            let _ = done.send(server.shutdown());
        });
        let mut seen = BTreeMap::new();
        for (name, watch) in [("", whole), (EXAMPLE, example)] {
            let events = vec![peer.next(watch, 30.0), peer.next(watch, 30.0)];
            seen.insert(name, events);
        }
        for (name, events) in &seen {
            assert_eq!(
                events,
                &[
                    status_event("NOT_SERVING"),
                    json!({"event": "end", "code": "OK", "details": ""})
                ],
                "what grpcio's watch of {name:?} saw"
            );
        }
        shut.recv_timeout(Duration::from_secs(60))
            .expect("the shutdown did not finish")
            .expect("the shutdown failed");
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(health.status(""), Some(ServingStatus::NotServing));
        assert_eq!(health.status(EXAMPLE), Some(ServingStatus::NotServing));
    });
}

// ---------------------------------------------------------------------------
// grpcio-reflection's client against our server.

/// What our own descriptors say grpcio should find: files, services with
/// their methods, and every message and enum.
#[derive(Default)]
struct Expected {
    files: BTreeMap<String, FileDescriptorProto>,
    /// Service full name -> its file.
    services: BTreeMap<String, String>,
}

impl Expected {
    fn of(services: &[&dyn Service]) -> Expected {
        let mut expected = Expected::default();
        for service in services {
            let files: Vec<FileDescriptorProto> = service
                .file_descriptors()
                .iter()
                .map(|b| FileDescriptorProto::decode(*b).unwrap())
                .collect();
            expected
                .services
                .insert(service.name().to_owned(), files[0].name().to_owned());
            for file in files {
                expected.files.insert(file.name().to_owned(), file);
            }
        }
        expected
    }

    /// The methods of a service as `standard_services.py` reports them.
    fn methods(&self, service: &str) -> Value {
        let file = &self.files[&self.services[service]];
        let prefix = if file.package().is_empty() {
            String::new()
        } else {
            format!("{}.", file.package())
        };
        let s = file
            .service
            .iter()
            .find(|s| format!("{prefix}{}", s.name()) == service)
            .unwrap();
        s.method
            .iter()
            .map(|m| {
                json!({
                    "name": m.name(),
                    "full_name": format!("{service}.{}", m.name()),
                    "input": m.input_type().trim_start_matches('.'),
                    "output": m.output_type().trim_start_matches('.'),
                    "client_streaming": m.client_streaming(),
                    "server_streaming": m.server_streaming(),
                })
            })
            .collect()
    }

    /// A file as `standard_services.py` reports it, and its symbols.
    fn file(&self, name: &str) -> (Value, BTreeMap<String, Value>) {
        let file = &self.files[name];
        let package = file.package();
        let mut messages = Vec::new();
        let mut enums = Vec::new();
        let mut symbols = BTreeMap::new();
        for e in &file.enum_type {
            let full = join(package, e.name());
            symbols.insert(full.clone(), enum_symbol(name, e));
            enums.push(full);
        }
        walk(
            name,
            package,
            &file.message_type,
            &mut messages,
            &mut enums,
            &mut symbols,
        );
        let report = json!({
            "package": package,
            "dependencies": file.dependency,
            "messages": messages,
            "enums": enums,
            "services": file.service.iter().map(|s| join(package, s.name())).collect::<Vec<_>>(),
        });
        (report, symbols)
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn enum_symbol(file: &str, e: &grpc_blocking::prost_types::EnumDescriptorProto) -> Value {
    json!({
        "kind": "enum",
        "file": file,
        "values": e.value.iter().map(|v| json!([v.name(), v.number()])).collect::<Vec<_>>(),
    })
}

/// Messages depth first, each before its nested ones, with their enums,
/// in the order `standard_services.py` walks them.
fn walk(
    file: &str,
    prefix: &str,
    list: &[DescriptorProto],
    messages: &mut Vec<String>,
    enums: &mut Vec<String>,
    symbols: &mut BTreeMap<String, Value>,
) {
    for m in list {
        let full = join(prefix, m.name());
        messages.push(full.clone());
        let fields: Vec<Value> = m
            .field
            .iter()
            .map(|f| {
                json!([
                    f.name(),
                    f.number(),
                    f.r#type,
                    f.type_name().trim_start_matches('.'),
                    f.label() == Label::Repeated,
                ])
            })
            .collect();
        symbols.insert(
            full.clone(),
            json!({"kind": "message", "file": file, "fields": fields}),
        );
        for e in &m.enum_type {
            let name = join(&full, e.name());
            symbols.insert(name.clone(), enum_symbol(file, e));
            enums.push(name);
        }
        walk(file, &full, &m.nested_type, messages, enums, symbols);
    }
}

#[test]
fn grpcio_reflection_client_finds_every_service_method_message_and_enum() {
    provisioned();
    with_timeout(TEST_SECS, || {
        let server = our_server();
        let peer = Peer::new(grpcio_target(&server));
        let listed = [
            HEALTH,
            REFLECTION_V1,
            REFLECTION_V1ALPHA,
            TEST_SERVICE,
            EXAMPLE,
        ];
        let r = peer.ask(json!({"op": "reflect", "services": listed}));

        assert_eq!(r["listed"], json!(listed));
        // The Python process knew no type of ours before it asked: those
        // it knew are the ones grpcio's own packages bring.
        for name in r["in_default_pool"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            assert!(
                name.starts_with("grpc.health.v1.") || name.starts_with("grpc.reflection.v1alpha."),
                "{name} was known without reflection"
            );
        }

        let expected = Expected::of(&[
            &ExampleServer::new(ExampleService),
            &TestServiceServer::new(InteropService),
        ]);
        for service in [EXAMPLE, TEST_SERVICE] {
            assert_eq!(
                r["services"][service],
                json!({"file": expected.services[service], "methods": expected.methods(service)}),
                "{service}"
            );
        }
        // The library's own services are described too.
        let method_names = |service: &str| -> Vec<String> {
            r["services"][service]["methods"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(method_names(HEALTH), ["Check", "List", "Watch"]);
        assert_eq!(r["services"][HEALTH]["file"], "grpc/health/v1/health.proto");
        for service in [REFLECTION_V1, REFLECTION_V1ALPHA] {
            assert_eq!(method_names(service), ["ServerReflectionInfo"], "{service}");
        }

        // Every file, found by name; every message and enum, by symbol.
        let files = r["files"].as_object().unwrap();
        let found: BTreeSet<&str> = files.keys().map(String::as_str).collect();
        let mut wanted: BTreeSet<&str> = expected.files.keys().map(String::as_str).collect();
        wanted.extend([
            "grpc/health/v1/health.proto",
            "grpc/reflection/v1/reflection.proto",
            "grpc/reflection/v1alpha/reflection.proto",
        ]);
        assert_eq!(found, wanted);
        let mut symbols_checked = 0;
        for name in expected.files.keys() {
            let (report, symbols) = expected.file(name);
            assert_eq!(files[name], report, "{name}");
            for (symbol, want) in symbols {
                assert_eq!(r["symbols"][&symbol], want, "{symbol}");
                symbols_checked += 1;
            }
        }
        // Those of the library's own files too (each resolved by symbol).
        for name in wanted.iter().filter(|n| !expected.files.contains_key(**n)) {
            for kind in ["messages", "enums"] {
                for symbol in files[*name][kind].as_array().unwrap() {
                    let found = &r["symbols"][symbol.as_str().unwrap()];
                    assert_eq!(found["file"], *name, "{symbol}");
                }
            }
        }
        assert_eq!(
            r["symbols"].as_object().unwrap().len(),
            files
                .values()
                .map(|f| f["messages"].as_array().unwrap().len()
                    + f["enums"].as_array().unwrap().len())
                .sum::<usize>()
        );
        // example.proto: 2 messages; empty.proto: 1; messages.proto: 12
        // messages and enums.
        assert_eq!(symbols_checked, 15);
    });
}

#[test]
fn grpcio_makes_dynamic_calls_from_reflected_descriptors() {
    provisioned();
    with_timeout(TEST_SECS, || {
        let server = our_server();
        let peer = Peer::new(grpcio_target(&server));
        let call = |method: &str, requests: Value| -> Value {
            let mut a =
                peer.ask(json!({"op": "dynamic_call", "method": method, "requests": requests}));
            a.as_object_mut().unwrap().remove("id");
            a
        };

        let a = call(
            "nameko.example.unary_unary",
            json!([{"value": "ab", "multiplier": 3}]),
        );
        assert_eq!(
            a,
            json!({
                "path": "/nameko.example/unary_unary",
                "kind": "unary_unary",
                "input": "nameko.ExampleRequest",
                "output": "nameko.ExampleReply",
                "code": "OK",
                "details": "",
                "replies": [{"message": "ababab", "seqno": 0}],
            })
        );
        let a = call(
            "nameko.example.unary_stream",
            json!([{"value": "xy", "multiplier": 2}]),
        );
        assert_eq!(
            (&a["kind"], &a["code"]),
            (&json!("unary_stream"), &json!("OK"))
        );
        assert_eq!(
            a["replies"],
            json!([{"message": "xyxy", "seqno": 1}, {"message": "xyxy", "seqno": 2}])
        );
        let a = call(
            "nameko.example.stream_unary",
            json!([{"value": "a"}, {"value": "b", "multiplier": 2}]),
        );
        assert_eq!(
            (&a["kind"], &a["code"]),
            (&json!("stream_unary"), &json!("OK"))
        );
        assert_eq!(a["replies"], json!([{"message": "a,bb", "seqno": 0}]));
        let a = call(
            "nameko.example.stream_stream",
            json!([{"value": "a", "multiplier": 2}, {"value": "b"}]),
        );
        assert_eq!(
            (&a["kind"], &a["code"]),
            (&json!("stream_stream"), &json!("OK"))
        );
        assert_eq!(
            a["replies"],
            json!([{"message": "aa", "seqno": 1}, {"message": "b", "seqno": 2}])
        );

        // The interop service, whose messages live in imported files.
        let a = call("grpc.testing.TestService.EmptyCall", json!([{}]));
        assert_eq!(
            (
                &a["path"],
                &a["input"],
                &a["output"],
                &a["code"],
                &a["replies"]
            ),
            (
                &json!("/grpc.testing.TestService/EmptyCall"),
                &json!("grpc.testing.Empty"),
                &json!("grpc.testing.Empty"),
                &json!("OK"),
                &json!([{}])
            )
        );
        let a = call(
            "grpc.testing.TestService.UnaryCall",
            json!([{"response_size": 4}]),
        );
        assert_eq!(a["code"], "OK", "{a}");
        assert_eq!(
            a["replies"][0]["payload"],
            json!({"type": "COMPRESSABLE", "body": "AAAAAA=="})
        );
        let a = call(
            "grpc.testing.TestService.StreamingOutputCall",
            json!([{"response_parameters": [{"size": 1}, {"size": 2}]}]),
        );
        assert_eq!(a["code"], "OK", "{a}");
        let bodies: Vec<&Value> = a["replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["payload"]["body"])
            .collect();
        assert_eq!(bodies, [&json!("AA=="), &json!("AAA=")]);
        // A status the server sends back reaches the dynamic call.
        let a = call(
            "grpc.testing.TestService.UnaryCall",
            json!([{"response_status": {"code": 9, "message": "no way"}}]),
        );
        assert_eq!(
            (&a["code"], &a["details"], &a["replies"]),
            (&json!("FAILED_PRECONDITION"), &json!("no way"), &json!([]))
        );
    });
}

// ---------------------------------------------------------------------------
// Our health client against grpcio-health-checking's server.

fn watch(client: &HealthClient, service: &str) -> Streaming<HealthCheckResponse> {
    client.watch(HealthCheckRequest {
        service: service.into(),
    })
}

/// The status of `service`, or the code of the error.
fn check(client: &HealthClient, service: &str) -> Result<ServingStatus, Code> {
    client.status(service).map_err(|e| e.code())
}

fn next_status(stream: &mut Streaming<HealthCheckResponse>) -> ServingStatus {
    stream
        .next()
        .expect("the watch ended")
        .expect("the watch failed")
        .status()
}

#[test]
fn our_health_client_checks_and_watches_grpcios_health_server() {
    provisioned();
    with_timeout(TEST_SECS, || {
        let peer = Peer::new(String::new());
        let port = peer.ask(json!({
            "op": "health_serve",
            "statuses": {"": "SERVING", "svc.A": "NOT_SERVING"},
        }))["port"]
            .as_u64()
            .unwrap();
        let set = |service: &str, status: &str| {
            peer.ask(
                json!({"op": "health_set", "port": port, "service": service, "status": status}),
            );
        };
        let client = HealthClient::connect(format!("http://127.0.0.1:{port}")).unwrap();

        assert_eq!(check(&client, ""), Ok(ServingStatus::Serving));
        assert_eq!(check(&client, "svc.A"), Ok(ServingStatus::NotServing));
        // grpcio answers an unknown service with a reply message (empty) *and* a
        // NOT_FOUND status (HealthServicer.Check sets the code and returns
        // a response): the status wins.
        let err = client.status("no.Such").unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::NotFound, ""));
        // grpcio's HealthServicer does not implement List.
        let err = client.list(HealthListRequest {}).unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);

        let mut a = watch(&client, "svc.A");
        let mut unknown = watch(&client, "svc.Later");
        assert_eq!(next_status(&mut a), ServingStatus::NotServing);
        assert_eq!(next_status(&mut unknown), ServingStatus::ServiceUnknown);
        set("svc.A", "SERVING");
        assert_eq!(next_status(&mut a), ServingStatus::Serving);
        assert_eq!(check(&client, "svc.A"), Ok(ServingStatus::Serving));
        set("svc.A", "NOT_SERVING");
        assert_eq!(next_status(&mut a), ServingStatus::NotServing);
        set("svc.Later", "SERVING");
        assert_eq!(next_status(&mut unknown), ServingStatus::Serving);
        set("svc.A", "SERVING");
        assert_eq!(next_status(&mut a), ServingStatus::Serving);

        // grpcio's graceful shutdown: NOT_SERVING for every watcher...
        peer.ask(json!({"op": "health_graceful", "port": port}));
        assert_eq!(next_status(&mut a), ServingStatus::NotServing);
        assert_eq!(next_status(&mut unknown), ServingStatus::NotServing);
        assert_eq!(check(&client, ""), Ok(ServingStatus::NotServing));
        // ...but grpcio's watches end only when its server stops, which
        // cancels them: UNAVAILABLE, where ours end with OK.
        peer.ask(json!({"op": "health_stop", "port": port, "grace": 0.5}));
        for w in [&mut a, &mut unknown] {
            let end = w.next().expect("an end status").unwrap_err();
            assert_eq!(
                (end.code(), end.message()),
                (Code::Unavailable, "Cancelling all calls")
            );
            assert!(w.next().is_none());
        }
    });
}
