//! Server and client interceptors, call metrics and server statistics
//! (issue #11).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use grpc_blocking::client::{self, CallStart as ClientCallStart};
use grpc_blocking::server::{
    after_call, CallEnd, CallStart, InterceptedService, Interceptor, Requests, ResponseSink,
    ServerContext, UnaryHandlers,
};
use grpc_blocking::{CallOptions, Channel, Code, Metadata, Server, ServerHandle, Status};
use grpc_blocking_examples::nameko::{ExampleClient, ExampleReply, ExampleRequest};
use grpc_blocking_tests::certs::{Certs, CLIENT_DNS};
use grpc_blocking_tests::stubbed;
use grpc_blocking_tests::support::{req, with_timeout, Gate};

/// What the hooks and handlers of a test did, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push(what.into());
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Logs its before- and after-hooks under its name; rejects when told.
struct Named {
    name: &'static str,
    log: Log,
    reject: bool,
}

impl Interceptor for Named {
    fn before(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        self.log.push(format!("before {}", self.name));
        call.trailers_mut()
            .insert(&format!("x-seen-by-{}", self.name), "yes")?;
        if self.reject {
            return Err(Status::permission_denied(format!("{} says no", self.name)));
        }
        Ok(())
    }
    fn after(&self, call: &CallEnd<'_>) {
        self.log
            .push(format!("after {} {:?}", self.name, call.status().code()));
    }
}

fn named(name: &'static str, log: &Log, reject: bool) -> Named {
    Named {
        name,
        log: log.clone(),
        reject,
    }
}

/// The example service, logging its handler and answering with what the
/// interceptors left it.
struct Probe {
    log: Log,
    gate: Arc<Gate>,
}

#[derive(Clone, Debug)]
struct User(String);

impl stubbed::Example for Probe {
    fn unary_unary(
        &self,
        request: ExampleRequest,
        ctx: &ServerContext,
    ) -> Result<ExampleReply, Status> {
        self.log.push("handler");
        match request.value.as_str() {
            "panic" => panic!("the handler broke"),
            "wait" => {
                self.gate.wait_unless_cancelled(ctx);
            }
            _ => {}
        }
        let user = ctx.extensions().get::<User>().map_or("-", |u| u.0.as_str());
        let added = ctx.metadata().get("x-added").unwrap_or("-");
        let auth = ctx.metadata().get("authorization").unwrap_or("-");
        Ok(ExampleReply {
            message: format!("user={user} added={added} auth={auth}"),
            seqno: 0,
        })
    }

    fn stream_stream(
        &self,
        requests: Requests<ExampleRequest>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<ExampleReply>,
    ) -> Result<(), Status> {
        let mut n = 0;
        for r in requests {
            r?;
            n += 1;
        }
        for seqno in 0..2 {
            responses.send(ExampleReply {
                message: "x".repeat(n),
                seqno,
            })?;
        }
        Ok(())
    }
}

fn probe(log: &Log) -> stubbed::ExampleServer<Probe> {
    stubbed::ExampleServer::new(Probe {
        log: log.clone(),
        gate: Arc::new(Gate::default()),
    })
}

fn client(server: &ServerHandle) -> ExampleClient {
    ExampleClient::new(Channel::connect(server.target()).unwrap())
}

/// What the test learns of a call's end: method, code, traffic counts
/// (messages and bytes received, then sent), duration.
type Ended = (String, Code, [u64; 4], Duration);

/// Sends every call's end to a channel the test reads (after-hooks run
/// after the status is sent, so the test waits for them).
fn ends() -> (impl Interceptor, Receiver<Ended>) {
    let (tx, rx): (Sender<_>, _) = mpsc::channel();
    let tx = Mutex::new(tx);
    let hook = after_call(move |end: &CallEnd<'_>| {
        let counts = [
            end.messages_received(),
            end.bytes_received(),
            end.messages_sent(),
            end.bytes_sent(),
        ];
        let _ = tx.lock().unwrap().send((
            end.method().to_owned(),
            end.status().code(),
            counts,
            end.duration(),
        ));
    });
    (hook, rx)
}

fn next_end(rx: &Receiver<Ended>) -> Ended {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("an after-hook ran")
}

#[test]
fn server_interceptors_run_in_order_around_the_handler() {
    with_timeout(30, || {
        let log = Log::default();
        let server = Server::builder()
            .intercept(named("a", &log, false))
            .intercept(named("b", &log, false))
            .add_service(InterceptedService::new(probe(&log)).intercept(named("s", &log, false)))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let response = client(&server)
            .channel()
            .unary_start::<_, ExampleReply>(
                "/nameko.example/unary_unary",
                req("x", 1),
                CallOptions::new(),
            )
            .wait_response()
            .unwrap();
        for name in ["a", "b", "s"] {
            assert_eq!(
                response.trailers.get(&format!("x-seen-by-{name}")),
                Some("yes")
            );
        }
        // The after-hooks run once the status is sent.
        let expected = [
            "before a",
            "before b",
            "before s",
            "handler",
            "after s Ok",
            "after b Ok",
            "after a Ok",
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.0.lock().unwrap().len() < expected.len() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(log.take(), expected);
    });
}

#[test]
fn a_rejection_ends_the_call_before_the_handler_and_every_after_hook_sees_it() {
    with_timeout(30, || {
        let log = Log::default();
        let (ends, rx) = ends();
        let server = Server::builder()
            .intercept(ends)
            .intercept(named("a", &log, false))
            .intercept(named("b", &log, true))
            .add_service(InterceptedService::new(probe(&log)).intercept(named("s", &log, false)))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let err = client(&server)
            .channel()
            .unary_start::<_, ExampleReply>(
                "/nameko.example/unary_unary",
                req("x", 1),
                CallOptions::new(),
            )
            .wait_response()
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(err.message(), "b says no");
        // The trailers set by the interceptors that ran go with it.
        assert_eq!(err.metadata().get("x-seen-by-a"), Some("yes"));
        assert_eq!(err.metadata().get("x-seen-by-b"), Some("yes"));
        let (method, code, counts, _) = next_end(&rx);
        assert_eq!(
            (method.as_str(), code),
            ("/nameko.example/unary_unary", Code::PermissionDenied)
        );
        assert_eq!(counts, [0, 0, 0, 0]);
        assert_eq!(
            log.take(),
            [
                "before a",
                "before b",
                "after b PermissionDenied",
                "after a PermissionDenied"
            ]
        );
    });
}

#[test]
fn interceptors_add_metadata_headers_and_values_the_handler_sees() {
    with_timeout(30, || {
        let log = Log::default();
        let server = Server::builder()
            .intercept(|call: &mut CallStart<'_>| {
                let user = call.metadata().get("x-user").unwrap_or("nobody").to_owned();
                call.metadata_mut().insert("x-added", "by-interceptor")?;
                call.response_headers_mut()
                    .insert("x-interceptor", "hello")?;
                call.extensions_mut().insert(User(user));
                assert!(matches!(call.peer(), grpc_blocking::server::Peer::Tcp(_)));
                assert!(call.deadline().is_some());
                assert_eq!(call.service_name(), "nameko.example");
                assert_eq!(call.method_name(), "unary_unary");
                Ok(())
            })
            .add_service(probe(&log))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let mut md = Metadata::new();
        md.insert("x-user", "ada").unwrap();
        let response = client(&server)
            .channel()
            .unary_start::<_, ExampleReply>(
                "/nameko.example/unary_unary",
                req("x", 1),
                CallOptions::new()
                    .metadata(md)
                    .timeout(Duration::from_secs(10)),
            )
            .wait_response()
            .unwrap();
        assert_eq!(
            response.message.message,
            "user=ada added=by-interceptor auth=-"
        );
        assert_eq!(response.headers.get("x-interceptor"), Some("hello"));
    });
}

#[test]
fn after_hooks_see_deadlines_cancellations_and_panics() {
    with_timeout(60, || {
        let log = Log::default();
        let (ends, rx) = ends();
        let server = Server::builder()
            .intercept(ends)
            .add_service(probe(&log))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let client = client(&server);

        // A deadline passes while the handler waits.
        let err = client
            .unary_unary_with(
                req("wait", 1),
                CallOptions::new().timeout(Duration::from_millis(200)),
            )
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(next_end(&rx).1, Code::DeadlineExceeded);

        // The client cancels.
        log.take();
        let mut call = client.unary_unary_start(req("wait", 1), CallOptions::new());
        while log.take().is_empty() {
            // Until the handler runs.
            std::thread::sleep(Duration::from_millis(5));
        }
        call.cancel();
        assert_eq!(next_end(&rx).1, Code::Cancelled);

        // The handler panics.
        let err = client.unary_unary(req("panic", 1)).unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(next_end(&rx).1, Code::Unknown);

        // And a normal call still works.
        assert!(client.unary_unary(req("x", 1)).is_ok());
        assert_eq!(next_end(&rx).1, Code::Ok);
    });
}

#[test]
fn a_panicking_interceptor_fails_only_its_call() {
    with_timeout(30, || {
        let log = Log::default();
        let server = Server::builder()
            .intercept(|call: &mut CallStart<'_>| {
                if call.metadata().get("x-break").is_some() {
                    panic!("the interceptor broke");
                }
                Ok(())
            })
            .add_service(probe(&log))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let client = client(&server);
        let mut md = Metadata::new();
        md.insert("x-break", "1").unwrap();
        for _ in 0..3 {
            let err = client
                .unary_unary_with(req("x", 1), CallOptions::new().metadata(md.clone()))
                .unwrap_err();
            assert_eq!(err.code(), Code::Unknown);
            assert!(
                err.message().contains("the interceptor broke"),
                "{}",
                err.message()
            );
            assert!(client.unary_unary(req("x", 1)).is_ok());
        }
        // The handler ran only for the calls the interceptor let through.
        assert_eq!(log.take(), ["handler", "handler", "handler"]);
    });
}

#[test]
fn after_hooks_count_messages_and_bytes_each_way() {
    with_timeout(30, || {
        let log = Log::default();
        let (ends, rx) = ends();
        let server = Server::builder()
            .intercept(ends)
            .add_service(probe(&log))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let replies: Vec<_> = client(&server)
            .stream_stream((0..3).map(|_| req("abc", 1)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(replies.len(), 2);
        let (method, code, counts, duration) = next_end(&rx);
        assert_eq!(
            (method.as_str(), code),
            ("/nameko.example/stream_stream", Code::Ok)
        );
        let request_len = 5 + prost::Message::encoded_len(&req("abc", 1)) as u64;
        let reply_len = |seqno| {
            5 + prost::Message::encoded_len(&ExampleReply {
                message: "xxx".into(),
                seqno,
            }) as u64
        };
        assert_eq!(counts, [3, 3 * request_len, 2, reply_len(0) + reply_len(1)]);
        assert!(duration > Duration::ZERO);
    });
}

#[test]
fn interceptors_see_the_client_certificate_over_mutual_tls() {
    with_timeout(30, || {
        let certs = Certs::get();
        let log = Log::default();
        let server = Server::builder()
            .intercept(|call: &mut CallStart<'_>| {
                let dns = call
                    .peer_certificates()
                    .map(|c| c.dns_names().join(","))
                    .unwrap_or_default();
                if dns != CLIENT_DNS {
                    return Err(Status::unauthenticated(format!("unknown client {dns:?}")));
                }
                Ok(())
            })
            .add_service(probe(&log))
            .tls(certs.server_tls().client_auth_optional(certs.roots()))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let with_cert = Channel::builder(server.target())
            .tls(certs.client_tls().identity(certs.client.identity()))
            .connect()
            .unwrap();
        assert!(ExampleClient::new(with_cert)
            .unary_unary(req("x", 1))
            .is_ok());
        let without = Channel::builder(server.target())
            .tls(certs.client_tls())
            .connect()
            .unwrap();
        let err = ExampleClient::new(without)
            .unary_unary(req("x", 1))
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    });
}

#[test]
fn server_stats_count_connections_calls_and_handlers() {
    for handlers in [UnaryHandlers::Adaptive, UnaryHandlers::Workers] {
        stats_with(handlers);
    }
}

/// Three unary calls block: on the pool, or inline and handed off.
fn stats_with(handlers: UnaryHandlers) {
    with_timeout(30, move || {
        let gate = Arc::new(Gate::default());
        let server = Server::builder()
            .add_service(stubbed::ExampleServer::new(Probe {
                log: Log::default(),
                gate: gate.clone(),
            }))
            .unary_handlers(handlers)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let stats = server.stats_handle();
        assert_eq!(
            (stats.stats().connections, stats.stats().calls_in_flight),
            (0, 0)
        );
        let client = client(&server);
        let calls: Vec<_> = (0..3)
            .map(|_| client.unary_unary_start(req("wait", 1), CallOptions::new()))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.stats().handlers_busy < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let now = stats.stats();
        assert_eq!(
            (now.connections, now.calls_in_flight, now.handlers_busy),
            (1, 3, 3)
        );
        gate.open();
        for call in calls {
            call.wait().unwrap();
        }
        while stats.stats().calls_in_flight > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let now = stats.stats();
        assert_eq!((now.calls_in_flight, now.handlers_busy), (0, 0));
        // Pool workers wait for the next call; the threads of handed-off
        // inline handlers end with them.
        let idle = match handlers {
            UnaryHandlers::Workers => 3,
            _ => 0,
        };
        assert_eq!(now.handlers_idle, idle);
    });
}

// ---------------------------------------------------------------------------
// Client interceptors.

/// A server whose handler answers with the `authorization` it received.
fn echo_server() -> ServerHandle {
    Server::builder()
        .add_service(probe(&Log::default()))
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

#[test]
fn a_client_interceptor_sends_a_token_that_changes_between_calls() {
    with_timeout(30, || {
        let server = echo_server();
        let token = Arc::new(RwLock::new(String::from("one")));
        let current = token.clone();
        let channel = Channel::builder(server.target())
            .intercept(move |call: &mut ClientCallStart<'_>| {
                let value = format!("Bearer {}", current.read().unwrap());
                call.metadata_mut().insert("authorization", &value)?;
                Ok(())
            })
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel);
        let auth = |c: &ExampleClient| c.unary_unary(req("x", 1)).unwrap().message;
        assert_eq!(auth(&client), "user=- added=- auth=Bearer one");
        *token.write().unwrap() = "two".into();
        assert_eq!(auth(&client), "user=- added=- auth=Bearer two");
    });
}

#[test]
fn client_interceptors_run_in_order_may_fail_a_call_and_see_its_end() {
    with_timeout(30, || {
        let server = echo_server();
        let log = Log::default();
        let (l1, l2) = (log.clone(), log.clone());
        let ends = Arc::new(Mutex::new(Vec::new()));
        let e = ends.clone();
        let channel = Channel::builder(server.target())
            .intercept(client::after_call(move |end: &client::CallEnd<'_>| {
                e.lock().unwrap().push((
                    end.method().to_owned(),
                    end.status().code(),
                    end.messages_sent(),
                    end.messages_received(),
                ));
            }))
            .intercept(move |call: &mut ClientCallStart<'_>| {
                l1.push(format!("first {}", call.method()));
                Ok(())
            })
            .intercept(move |call: &mut ClientCallStart<'_>| {
                l2.push("second");
                if call.metadata().get("x-refuse").is_some() {
                    return Err(Status::failed_precondition("refused before sending"));
                }
                // An interceptor may shorten the call's time.
                if call.metadata().get("x-hurry").is_some() {
                    call.set_timeout(Duration::from_millis(100));
                }
                Ok(())
            })
            .connect()
            .unwrap();
        let client = ExampleClient::new(channel);
        assert!(client.unary_unary(req("x", 1)).is_ok());

        let mut refuse = Metadata::new();
        refuse.insert("x-refuse", "1").unwrap();
        let err = client
            .unary_unary_with(req("x", 1), CallOptions::new().metadata(refuse))
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);

        let mut hurry = Metadata::new();
        hurry.insert("x-hurry", "1").unwrap();
        let err = client
            .unary_unary_with(req("wait", 1), CallOptions::new().metadata(hurry))
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);

        // A stream dropped before its end is a cancellation.
        let mut stream = client.stream_stream((0..2).map(|_| req("x", 1)));
        assert!(stream.next().unwrap().is_ok());
        drop(stream);

        let replies: Vec<_> = client
            .stream_stream((0..3).map(|_| req("x", 1)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(replies.len(), 2);

        let path = "/nameko.example/unary_unary";
        let stream_path = "/nameko.example/stream_stream";
        let mut ends = ends.lock().unwrap().clone();
        // How many requests the cancelled stream's feeder thread had sent
        // when it was dropped varies.
        ends[3].2 = 0;
        assert_eq!(
            ends,
            [
                (path.to_owned(), Code::Ok, 1, 1),
                (path.to_owned(), Code::FailedPrecondition, 0, 0),
                (path.to_owned(), Code::DeadlineExceeded, 1, 0),
                (stream_path.to_owned(), Code::Cancelled, 0, 1),
                (stream_path.to_owned(), Code::Ok, 3, 2),
            ]
        );
        assert_eq!(
            log.take()[..4],
            [
                "first /nameko.example/unary_unary".to_owned(),
                "second".to_owned(),
                "first /nameko.example/unary_unary".to_owned(),
                "second".to_owned()
            ]
        );
    });
}
