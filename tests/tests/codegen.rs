//! The generated code of `proto/codegen/*.proto`: the items exist with the
//! shapes the API contract gives them (checked mostly at compile time, by
//! implementing the traits and naming the client functions with their exact
//! types), the names and paths are the proto's verbatim, and a served
//! implementation answers a generated client for all four kinds of rpc.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use grpc_blocking::server::{Requests, ResponseSink, ServerContext, Service};
use grpc_blocking::{CallOptions, Channel, Code, Server, Status, Streaming, UnaryCall};
use grpc_blocking::{RequestSink, TransportError};
use grpc_blocking_tests::a::b::c as nested;
use grpc_blocking_tests::codegen::{camel, common, keywords, multi, wkt};
use grpc_blocking_tests::no_package;

// ---- server side: the traits, implemented with the contract's signatures ----

/// Implements every generated trait of the test protos.
#[derive(Default)]
struct Impl {
    /// Values for `Nested::lookup`, by key.
    values: Mutex<HashMap<String, String>>,
}

impl no_package::Example for Impl {
    fn unary_unary(
        &self,
        request: no_package::Ping,
        _ctx: &ServerContext,
    ) -> Result<no_package::Pong, Status> {
        Ok(no_package::Pong {
            value: request.value,
        })
    }

    fn unary_stream(
        &self,
        request: no_package::Ping,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<no_package::Pong>,
    ) -> Result<(), Status> {
        for _ in 0..2 {
            responses.send(no_package::Pong {
                value: request.value.clone(),
            })?;
        }
        Ok(())
    }
}

impl nested::Nested for Impl {
    fn lookup(&self, request: common::Key, _ctx: &ServerContext) -> Result<nested::Value, Status> {
        let values = self.values.lock().unwrap();
        match values.get(&request.id) {
            Some(data) => Ok(nested::Value { data: data.clone() }),
            None => Err(Status::not_found(request.id)),
        }
    }

    fn watch(
        &self,
        requests: Requests<common::Key>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<nested::Value>,
    ) -> Result<(), Status> {
        for key in requests {
            responses.send(nested::Value { data: key?.id })?;
        }
        Ok(())
    }
}

impl wkt::Clock for Impl {
    fn now(&self, _request: (), _ctx: &ServerContext) -> Result<prost_types::Timestamp, Status> {
        Ok(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        })
    }

    fn ticks(
        &self,
        _request: (),
        _ctx: &ServerContext,
        responses: &mut ResponseSink<prost_types::Timestamp>,
    ) -> Result<(), Status> {
        for seconds in 0..3 {
            responses.send(prost_types::Timestamp { seconds, nanos: 0 })?;
        }
        Ok(())
    }

    fn sync(
        &self,
        requests: Requests<prost_types::Timestamp>,
        _ctx: &ServerContext,
    ) -> Result<(), Status> {
        for time in requests {
            time?;
        }
        Ok(())
    }
}

impl multi::First for Impl {
    fn one(&self, request: multi::Msg, _ctx: &ServerContext) -> Result<multi::Msg, Status> {
        Ok(multi::Msg { n: request.n + 1 })
    }
}

impl multi::Second for Impl {
    fn two(
        &self,
        requests: Requests<multi::Msg>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<multi::Msg>,
    ) -> Result<(), Status> {
        for msg in requests {
            responses.send(multi::Msg { n: msg?.n * 2 })?;
        }
        Ok(())
    }
}

impl camel::Greeter for Impl {
    fn say_hello(
        &self,
        request: camel::HelloRequest,
        _ctx: &ServerContext,
    ) -> Result<camel::HelloReply, Status> {
        Ok(camel::HelloReply {
            greeting: format!("Hello, {}!", request.name),
        })
    }

    fn get_http_status(
        &self,
        _request: camel::HelloRequest,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<camel::HelloReply>,
    ) -> Result<(), Status> {
        responses.send(camel::HelloReply {
            greeting: "200".to_owned(),
        })
    }

    fn collect_names(
        &self,
        requests: Requests<camel::HelloRequest>,
        _ctx: &ServerContext,
    ) -> Result<camel::HelloReply, Status> {
        let names = requests
            .map(|r| r.map(|r| r.name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(camel::HelloReply {
            greeting: format!("Hello, {}!", names.join(" and ")),
        })
    }

    fn chat_with_everyone(
        &self,
        requests: Requests<camel::HelloRequest>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<camel::HelloReply>,
    ) -> Result<(), Status> {
        for request in requests {
            responses.send(camel::HelloReply {
                greeting: format!("Hi, {}!", request?.name),
            })?;
        }
        Ok(())
    }
}

impl keywords::Match for Impl {
    fn r#type(
        &self,
        request: keywords::Word,
        _ctx: &ServerContext,
    ) -> Result<keywords::Word, Status> {
        Ok(request)
    }

    fn self_(
        &self,
        request: keywords::Word,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<keywords::Word>,
    ) -> Result<(), Status> {
        responses.send(request)
    }

    fn connect(
        &self,
        requests: Requests<keywords::Word>,
        _ctx: &ServerContext,
    ) -> Result<keywords::Word, Status> {
        let mut text = String::new();
        for word in requests {
            text.push_str(&word?.text);
        }
        Ok(keywords::Word { text })
    }

    fn new(
        &self,
        requests: Requests<keywords::Word>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<keywords::Word>,
    ) -> Result<(), Status> {
        for word in requests {
            responses.send(word?)?;
        }
        Ok(())
    }
}

/// The generated traits are dyn-compatible and `Send + Sync + 'static`.
#[test]
fn traits_are_object_safe_and_thread_safe() {
    fn assert_send_sync_static<T: ?Sized + Send + Sync + 'static>() {}
    assert_send_sync_static::<dyn no_package::Example>();
    assert_send_sync_static::<dyn nested::Nested>();
    assert_send_sync_static::<dyn wkt::Clock>();
    assert_send_sync_static::<dyn multi::First>();
    assert_send_sync_static::<dyn multi::Second>();
    assert_send_sync_static::<dyn camel::Greeter>();
    assert_send_sync_static::<dyn keywords::Match>();

    let boxed: Box<dyn multi::First> = Box::new(Impl::default());
    let _: &dyn multi::First = &*boxed;
}

/// `XxxServer<T>` is a `Service` whose name and methods are the proto's,
/// verbatim.
#[test]
fn servers_report_proto_names_verbatim() {
    #[track_caller]
    fn check(service: impl Service, name: &str, methods: &[&str]) {
        let service: &dyn Service = &service;
        assert_eq!(service.name(), name);
        assert_eq!(service.methods(), methods);
    }
    let it = Impl::default;
    check(
        no_package::ExampleServer::new(it()),
        "example",
        &["unary_unary", "unary_stream"],
    );
    check(
        nested::NestedServer::new(it()),
        "a.b.c.Nested",
        &["Lookup", "Watch"],
    );
    check(
        wkt::ClockServer::new(it()),
        "codegen.wkt.Clock",
        &["Now", "Ticks", "Sync"],
    );
    check(
        multi::FirstServer::new(it()),
        "codegen.multi.First",
        &["One"],
    );
    check(
        multi::SecondServer::new(it()),
        "codegen.multi.second",
        &["two"],
    );
    check(
        camel::GreeterServer::new(it()),
        "codegen.camel.Greeter",
        &[
            "SayHello",
            "GetHTTPStatus",
            "CollectNames",
            "ChatWithEveryone",
        ],
    );
    check(
        keywords::MatchServer::new(it()),
        "codegen.keywords.match",
        &["type", "Self", "Connect", "new"],
    );
}

/// `from_arc` serves an implementation the application keeps a handle to,
/// and the adapter is `Clone` without `T: Clone`.
#[test]
fn server_from_arc_and_clone() {
    let shared = std::sync::Arc::new(Impl::default());
    let server = multi::FirstServer::from_arc(std::sync::Arc::clone(&shared));
    let copy = server.clone();
    assert_eq!(std::sync::Arc::strong_count(&shared), 3);
    assert_eq!(copy.name(), "codegen.multi.First");
    assert!(format!("{copy:?}").starts_with("FirstServer"));
}

// ---- client side: names, paths and exact signatures ----

#[test]
fn client_path_constants() {
    assert_eq!(no_package::ExampleClient::SERVICE_NAME, "example");
    assert_eq!(
        no_package::ExampleClient::UNARY_UNARY_PATH,
        "/example/unary_unary"
    );
    assert_eq!(
        no_package::ExampleClient::UNARY_STREAM_PATH,
        "/example/unary_stream"
    );
    assert_eq!(nested::NestedClient::SERVICE_NAME, "a.b.c.Nested");
    assert_eq!(nested::NestedClient::LOOKUP_PATH, "/a.b.c.Nested/Lookup");
    assert_eq!(nested::NestedClient::WATCH_PATH, "/a.b.c.Nested/Watch");
    assert_eq!(wkt::ClockClient::NOW_PATH, "/codegen.wkt.Clock/Now");
    assert_eq!(multi::FirstClient::ONE_PATH, "/codegen.multi.First/One");
    assert_eq!(multi::SecondClient::TWO_PATH, "/codegen.multi.second/two");
    assert_eq!(
        camel::GreeterClient::SAY_HELLO_PATH,
        "/codegen.camel.Greeter/SayHello"
    );
    assert_eq!(
        camel::GreeterClient::GET_HTTP_STATUS_PATH,
        "/codegen.camel.Greeter/GetHTTPStatus"
    );
    assert_eq!(
        camel::GreeterClient::CHAT_WITH_EVERYONE_PATH,
        "/codegen.camel.Greeter/ChatWithEveryone"
    );
    assert_eq!(
        keywords::MatchClient::TYPE_PATH,
        "/codegen.keywords.match/type"
    );
    assert_eq!(
        keywords::MatchClient::SELF_PATH,
        "/codegen.keywords.match/Self"
    );
    assert_eq!(
        keywords::MatchClient::CONNECT_PATH,
        "/codegen.keywords.match/Connect"
    );
    assert_eq!(
        keywords::MatchClient::NEW_PATH,
        "/codegen.keywords.match/new"
    );
}

/// Every client function of the four kinds of rpc, named with its exact type
/// (a compile-time check; the test only makes sure it is built).
#[test]
#[allow(clippy::type_complexity)] // Spelling the types out is the point.
fn client_signatures() {
    use camel::{GreeterClient as C, HelloReply as Reply, HelloRequest as Req};
    type Reqs = Vec<Req>;

    let _: fn(Channel) -> C = C::new;
    // Targets as callers have them.
    let _: fn(&str) -> Result<C, TransportError> = |t| C::connect(t);
    let _: fn(String) -> Result<C, TransportError> = |t| C::connect_lazy(t);
    let _: fn(std::net::SocketAddr) -> Result<C, TransportError> = |t| C::connect(t);
    let _: fn(&C) -> &Channel = C::channel;

    // Unary.
    let _: fn(&C, Req) -> Result<Reply, Status> = C::say_hello;
    let _: fn(&C, Req, CallOptions) -> Result<Reply, Status> = C::say_hello_with;
    let _: fn(&C, Req, CallOptions) -> UnaryCall<Reply> = C::say_hello_start;
    // Server streaming.
    let _: fn(&C, Req) -> Streaming<Reply> = C::get_http_status;
    let _: fn(&C, Req, CallOptions) -> Streaming<Reply> = C::get_http_status_with;
    // Client streaming: any iterator on the calling thread, a sendable one
    // for the helper thread, or a sink.
    let _: fn(&C, Reqs) -> Result<Reply, Status> = C::collect_names::<Reqs>;
    let _: fn(&C, Reqs, CallOptions) -> Result<Reply, Status> = C::collect_names_with::<Reqs>;
    let _: fn(&C, Reqs, CallOptions) -> UnaryCall<Reply> = C::collect_names_start::<Reqs>;
    let _: fn(&C, CallOptions) -> (RequestSink<Req>, UnaryCall<Reply>) = C::collect_names_sender;
    // Bidirectional streaming.
    let _: fn(&C, Reqs) -> Streaming<Reply> = C::chat_with_everyone::<Reqs>;
    let _: fn(&C, Reqs, CallOptions) -> Streaming<Reply> = C::chat_with_everyone_with::<Reqs>;
    let _: fn(&C, CallOptions) -> (RequestSink<Req>, Streaming<Reply>) =
        C::chat_with_everyone_sender;

    // Keywords and names the client defines itself.
    use keywords::{MatchClient as M, Word};
    let _: fn(&M, Word) -> Result<Word, Status> = M::r#type;
    let _: fn(&M, Word, CallOptions) -> Result<Word, Status> = M::type_with;
    let _: fn(&M, Word, CallOptions) -> UnaryCall<Word> = M::type_start;
    let _: fn(&M, Word) -> Streaming<Word> = M::self_;
    let _: fn(&M, Word, CallOptions) -> Streaming<Word> = M::self_with;
    let _: fn(&M, Vec<Word>) -> Result<Word, Status> = M::call_connect::<Vec<Word>>;
    let _: fn(&M, CallOptions) -> (RequestSink<Word>, UnaryCall<Word>) = M::call_connect_sender;
    let _: fn(&M, Vec<Word>) -> Streaming<Word> = M::call_new::<Vec<Word>>;
    let _: fn(Channel) -> M = M::new;

    // Well-known types: `Empty` is `()`, the others are `prost_types`.
    use wkt::ClockClient as K;
    let _: fn(&K, ()) -> Result<prost_types::Timestamp, Status> = K::now;
    let _: fn(&K, ()) -> Streaming<prost_types::Timestamp> = K::ticks;
    let _: fn(&K, Vec<prost_types::Timestamp>) -> Result<(), Status> =
        K::sync::<Vec<prost_types::Timestamp>>;

    // Messages of another package.
    use nested::NestedClient as N;
    let _: fn(&N, common::Key) -> Result<nested::Value, Status> = N::lookup;
}

/// Clients are `Clone + Debug + Send + Sync`.
#[test]
fn clients_are_cheap_shared_handles() {
    fn assert_client<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    assert_client::<no_package::ExampleClient>();
    assert_client::<nested::NestedClient>();
    assert_client::<wkt::ClockClient>();
    assert_client::<multi::FirstClient>();
    assert_client::<multi::SecondClient>();
    assert_client::<camel::GreeterClient>();
    assert_client::<keywords::MatchClient>();
}

/// Code blocks in proto comments become `text` blocks, so they are no
/// doctests (the crate's doctests would fail on them otherwise).
#[test]
fn comment_code_blocks_are_not_rust() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/codegen.camel.rs"));
    let fences: Vec<&str> = generated
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("///"))
        .map(str::trim)
        .filter(|line| line.starts_with("```"))
        .collect();
    // Two blocks: the fenced one on the service (on the trait and the
    // client) and the indented one on `SayHello` (on the trait and client fns).
    assert_eq!(fences.len(), 8, "{fences:?}");
    for opening in fences.iter().step_by(2) {
        assert!(opening.starts_with("```text"), "{opening}");
    }
    assert!(generated.contains("/// Greets people."));
    assert!(generated.contains("<https://example.invalid/status>"));
    assert!(generated.contains("/// Trailing comment."));
}

// ---- end to end: a served implementation answers a generated client ----

/// Serves every test service on a free local port; shut down on drop.
struct TestServer {
    handle: Option<grpc_blocking::ServerHandle>,
    uri: String,
}

impl TestServer {
    fn start() -> TestServer {
        let server = Server::builder()
            .add_service(no_package::ExampleServer::new(Impl::default()))
            .add_service(nested::NestedServer::new(Impl {
                values: Mutex::new(HashMap::from([("k".to_owned(), "v".to_owned())])),
            }))
            .add_service(wkt::ClockServer::new(Impl::default()))
            .add_service(multi::FirstServer::new(Impl::default()))
            .add_service(multi::SecondServer::new(Impl::default()))
            .add_service(camel::GreeterServer::new(Impl::default()))
            .add_service(keywords::MatchServer::new(Impl::default()))
            .bind("127.0.0.1:0")
            .expect("bind a local port");
        let handle = server.spawn().expect("start the server");
        let uri = format!("http://{}", handle.local_addr());
        TestServer {
            handle: Some(handle),
            uri,
        }
    }

    fn channel(&self) -> Channel {
        Channel::connect(&self.uri).expect("connect to the test server")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.shutdown();
        }
    }
}

fn options() -> CallOptions {
    CallOptions::new().timeout(Duration::from_secs(10))
}

fn hello(name: &str) -> camel::HelloRequest {
    camel::HelloRequest {
        name: name.to_owned(),
    }
}

fn greetings(stream: Streaming<camel::HelloReply>) -> Vec<String> {
    stream.map(|reply| reply.expect("reply").greeting).collect()
}

#[test]
fn four_kinds_of_rpc_end_to_end() {
    let server = TestServer::start();
    let client = camel::GreeterClient::new(server.channel());

    // Unary.
    assert_eq!(
        client.say_hello(hello("world")).unwrap().greeting,
        "Hello, world!"
    );
    let reply = client.say_hello_with(hello("options"), options());
    assert_eq!(reply.unwrap().greeting, "Hello, options!");
    let call = client.say_hello_start(hello("started"), options());
    assert_eq!(call.wait().unwrap().greeting, "Hello, started!");

    // Server streaming.
    assert_eq!(greetings(client.get_http_status(hello("x"))), ["200"]);
    assert_eq!(
        greetings(client.get_http_status_with(hello("x"), options())),
        ["200"]
    );

    // Client streaming: calling thread, helper thread, sink.
    let names = vec![hello("Ann"), hello("Bob")];
    assert_eq!(
        client
            .collect_names(names.iter().cloned())
            .unwrap()
            .greeting,
        "Hello, Ann and Bob!"
    );
    assert_eq!(
        client
            .collect_names_with(names.clone(), options())
            .unwrap()
            .greeting,
        "Hello, Ann and Bob!"
    );
    let (mut sink, reply) = client.collect_names_sender(options());
    sink.send(hello("Cy")).unwrap();
    sink.finish();
    assert_eq!(reply.wait().unwrap().greeting, "Hello, Cy!");

    // Bidirectional streaming: iterator or sink.
    assert_eq!(
        greetings(client.chat_with_everyone(names.clone())),
        ["Hi, Ann!", "Hi, Bob!"]
    );
    assert_eq!(
        greetings(client.chat_with_everyone_with(names, options())),
        ["Hi, Ann!", "Hi, Bob!"]
    );
    let (mut sink, mut replies) = client.chat_with_everyone_sender(options());
    sink.send(hello("Dee")).unwrap();
    assert_eq!(replies.next().unwrap().unwrap().greeting, "Hi, Dee!");
    sink.finish();
    assert!(replies.next().is_none());
}

#[test]
fn other_services_end_to_end() {
    let server = TestServer::start();
    let channel = server.channel();

    // No package: `/example/...`.
    let example = no_package::ExampleClient::new(channel.clone());
    let ping = no_package::Ping {
        value: "p".to_owned(),
    };
    assert_eq!(example.unary_unary(ping.clone()).unwrap().value, "p");
    assert_eq!(example.unary_stream(ping).count(), 2);

    // Nested package, messages from another package, errors as statuses.
    let lookup = nested::NestedClient::new(channel.clone());
    let key = |id: &str| common::Key { id: id.to_owned() };
    assert_eq!(lookup.lookup(key("k")).unwrap().data, "v");
    assert_eq!(
        lookup.lookup(key("nope")).unwrap_err().code(),
        Code::NotFound
    );
    let watched: Vec<String> = lookup
        .watch(vec![key("a"), key("b")])
        .map(|v| v.unwrap().data)
        .collect();
    assert_eq!(watched, ["a", "b"]);

    // Well-known types.
    let clock = wkt::ClockClient::new(channel.clone());
    assert_eq!(clock.now(()).unwrap().seconds, 1_700_000_000);
    assert_eq!(clock.ticks(()).count(), 3);
    clock.sync(vec![prost_types::Timestamp::default()]).unwrap();

    // Two services of one package on one server.
    let first = multi::FirstClient::new(channel.clone());
    assert_eq!(first.one(multi::Msg { n: 1 }).unwrap().n, 2);
    let second = multi::SecondClient::new(channel.clone());
    let doubled: Vec<i32> = second
        .two(vec![multi::Msg { n: 1 }, multi::Msg { n: 5 }])
        .map(|m| m.unwrap().n)
        .collect();
    assert_eq!(doubled, [2, 10]);

    // Keyword and renamed methods reach the right handlers.
    let kw = keywords::MatchClient::new(channel);
    let word = |text: &str| keywords::Word {
        text: text.to_owned(),
    };
    assert_eq!(kw.r#type(word("t")).unwrap().text, "t");
    assert_eq!(kw.self_(word("s")).count(), 1);
    assert_eq!(
        kw.call_connect(vec![word("a"), word("b")]).unwrap().text,
        "ab"
    );
    assert_eq!(kw.call_new(vec![word("n")]).count(), 1);
}

/// A method the service does not have is UNIMPLEMENTED.
#[test]
fn unknown_method_is_unimplemented() {
    let server = TestServer::start();
    let channel = server.channel();
    let status = channel
        .unary::<camel::HelloRequest, camel::HelloReply>(
            "/codegen.camel.Greeter/SayGoodbye",
            hello("x"),
            options(),
        )
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

/// `connect_lazy` makes no connection until the first call.
#[test]
fn lazy_client_connects_on_first_call() {
    let server = TestServer::start();
    let client = multi::FirstClient::connect_lazy(&server.uri).unwrap();
    assert_eq!(client.one(multi::Msg { n: 41 }).unwrap().n, 42);
    // The client's channel serves raw calls on the same paths.
    let eager = multi::FirstClient::connect(&server.uri).unwrap();
    let reply: multi::Msg = eager
        .channel()
        .unary(multi::FirstClient::ONE_PATH, multi::Msg { n: 0 }, options())
        .unwrap();
    assert_eq!(reply.n, 1);
}

/// With default stubs (`Builder::generate_default_stubs`), a service that
/// implements no method still serves: every call answers UNIMPLEMENTED,
/// naming the method; overriding one method serves it.
#[test]
fn default_stubs_answer_unimplemented() {
    use grpc_blocking_examples::nameko::{ExampleClient, ExampleReply, ExampleRequest};
    use grpc_blocking_tests::stubbed;

    struct OnlyUnary;
    impl stubbed::Example for OnlyUnary {
        fn unary_unary(
            &self,
            request: ExampleRequest,
            _: &ServerContext,
        ) -> Result<ExampleReply, Status> {
            Ok(ExampleReply {
                message: request.value,
                seqno: 0,
            })
        }
    }

    let server = Server::builder()
        .add_service(stubbed::ExampleServer::new(OnlyUnary))
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap();
    let client = ExampleClient::connect(server.local_addr()).unwrap();
    let req = || ExampleRequest {
        value: "v".into(),
        multiplier: 1,
    };
    assert_eq!(client.unary_unary(req()).unwrap().message, "v");
    let expect = |result: Result<ExampleReply, Status>, method: &str| {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{status}");
        assert_eq!(
            status.message(),
            format!("/nameko.example/{method} is not implemented by this server")
        );
    };
    expect(
        client.unary_stream(req()).next().expect("an item"),
        "unary_stream",
    );
    expect(client.stream_unary(vec![req()]), "stream_unary");
    expect(
        client.stream_stream(vec![req()]).next().expect("an item"),
        "stream_stream",
    );
    server.shutdown().unwrap();
}
