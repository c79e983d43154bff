//! The standard services (issue #11) between our own client and server:
//! health checking (`grpc.health.v1`) and server reflection (v1 with raw
//! requests, and v1alpha). grpcio's own health and reflection clients are
//! in `standard_services_grpcio.rs`.

use std::collections::HashSet;
use std::time::Duration;

use grpc_blocking::health::v1::health_check_response::ServingStatus;
use grpc_blocking::health::v1::{HealthCheckRequest, HealthClient, HealthListRequest};
use grpc_blocking::prost::Message;
use grpc_blocking::prost_types::{DescriptorProto, FileDescriptorProto};
use grpc_blocking::reflection::v1::server_reflection_request::MessageRequest;
use grpc_blocking::reflection::v1::server_reflection_response::MessageResponse;
use grpc_blocking::reflection::v1::{
    ExtensionRequest, ServerReflectionClient, ServerReflectionRequest, ServerReflectionResponse,
};
use grpc_blocking::reflection::v1alpha;
use grpc_blocking::server::{ResponseSink, ServerContext, Service};
use grpc_blocking::{
    CallOptions, Channel, Code, RequestSink, Server, ServerHandle, Status, Streaming,
};
use grpc_blocking_examples::acme::shop::v1::ShopServer;
use grpc_blocking_examples::grpc::testing::TestServiceServer;
use grpc_blocking_examples::interop::InteropService;
use grpc_blocking_examples::nameko::ExampleServer;
use grpc_blocking_examples::shop::ShopService;
use grpc_blocking_examples::ExampleService;
use grpc_blocking_tests::support::with_timeout;

const EXAMPLE: &str = "nameko.example";
const TEST_SERVICE: &str = "grpc.testing.TestService";
const SHOP: &str = "acme.shop.v1.Shop";

/// A server with the example, interop and shop services, reflection on.
fn full_server() -> ServerHandle {
    Server::builder()
        .add_service(ExampleServer::new(ExampleService))
        .add_service(TestServiceServer::new(InteropService))
        .add_service(ShopServer::new(ShopService::with_catalogue()))
        .reflection(true)
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn()
        .unwrap()
}

fn health_client(server: &ServerHandle) -> HealthClient {
    HealthClient::connect(server.target()).unwrap()
}

/// The status of `service`, or the code of the error.
fn check(client: &HealthClient, service: &str) -> Result<ServingStatus, Code> {
    client.status(service).map_err(|e| e.code())
}

fn watch(
    client: &HealthClient,
    service: &str,
) -> Streaming<grpc_blocking::health::v1::HealthCheckResponse> {
    client.watch(HealthCheckRequest {
        service: service.into(),
    })
}

fn next_status(
    stream: &mut Streaming<grpc_blocking::health::v1::HealthCheckResponse>,
) -> Option<ServingStatus> {
    stream.next().map(|r| r.unwrap().status())
}

#[test]
fn health_is_on_by_default_serving_for_the_server_and_each_service() {
    with_timeout(30, || {
        let server = full_server();
        let client = health_client(&server);
        for service in ["", EXAMPLE, TEST_SERVICE, SHOP, "grpc.health.v1.Health"] {
            assert_eq!(
                check(&client, service),
                Ok(ServingStatus::Serving),
                "{service:?}"
            );
        }
        let err = client.status("no.Such").unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("no.Such"), "{}", err.message());

        let health = server.health().unwrap();
        health.set_not_serving(EXAMPLE);
        health.set_serving("custom.Name");
        assert_eq!(check(&client, EXAMPLE), Ok(ServingStatus::NotServing));
        assert_eq!(check(&client, "custom.Name"), Ok(ServingStatus::Serving));
        health.clear_status("custom.Name");
        assert_eq!(check(&client, "custom.Name").unwrap_err(), Code::NotFound);

        let list = client.list(HealthListRequest {}).unwrap();
        let mut names: Vec<_> = list.statuses.keys().cloned().collect();
        names.sort();
        assert!(names.contains(&String::new()) && names.contains(&EXAMPLE.to_owned()));
        assert_eq!(list.statuses[EXAMPLE].status(), ServingStatus::NotServing);
    });
}

#[test]
fn statuses_set_before_serving_are_kept() {
    with_timeout(30, || {
        let server = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .bind("127.0.0.1:0")
            .unwrap();
        let health = server.health().unwrap();
        assert_eq!(health.status(EXAMPLE), Some(ServingStatus::Serving));
        health.set_not_serving("");
        let server = server.spawn().unwrap();
        let client = health_client(&server);
        assert_eq!(check(&client, ""), Ok(ServingStatus::NotServing));
        assert_eq!(check(&client, EXAMPLE), Ok(ServingStatus::Serving));
    });
}

#[test]
fn watch_sends_the_status_then_every_change_to_every_watcher() {
    with_timeout(30, || {
        let server = full_server();
        let health = server.health().unwrap();
        let client = health_client(&server);
        let mut watchers: Vec<_> = (0..20).map(|_| watch(&client, EXAMPLE)).collect();
        for w in &mut watchers {
            assert_eq!(next_status(w), Some(ServingStatus::Serving));
        }
        health.set_not_serving(EXAMPLE);
        for w in &mut watchers {
            assert_eq!(next_status(w), Some(ServingStatus::NotServing));
        }
        // Setting the same status again is no change: the next word each
        // watcher hears is the next real change. (Changes made faster
        // than a watcher reads them reach it as the latest status.)
        health.set_not_serving(EXAMPLE);
        health.set_serving(EXAMPLE);
        for w in &mut watchers {
            assert_eq!(next_status(w), Some(ServingStatus::Serving));
        }
        health.clear_status(EXAMPLE);
        for w in &mut watchers {
            assert_eq!(next_status(w), Some(ServingStatus::ServiceUnknown));
        }
    });
}

#[test]
fn watching_an_unknown_service_says_so_until_it_is_known() {
    with_timeout(30, || {
        let server = full_server();
        let client = health_client(&server);
        let mut w = watch(&client, "later.Service");
        assert_eq!(next_status(&mut w), Some(ServingStatus::ServiceUnknown));
        server.health().unwrap().set_serving("later.Service");
        assert_eq!(next_status(&mut w), Some(ServingStatus::Serving));
    });
}

#[test]
fn a_cancelled_watch_frees_its_handler_thread() {
    with_timeout(30, || {
        let server = full_server();
        let client = health_client(&server);
        let mut w = watch(&client, "");
        assert_eq!(next_status(&mut w), Some(ServingStatus::Serving));
        assert_eq!(server.stats().handlers_busy, 1);
        drop(w);
        // The handler wakes on the cancellation, not on a status change.
        while server.stats().handlers_busy != 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A watch with a deadline ends with it.
        let mut w = client.watch_with(
            HealthCheckRequest::default(),
            CallOptions::new().timeout(Duration::from_millis(200)),
        );
        assert_eq!(next_status(&mut w), Some(ServingStatus::Serving));
        let end = w.next().unwrap().unwrap_err();
        assert_eq!(end.code(), Code::DeadlineExceeded);
        while server.stats().handlers_busy != 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

#[test]
fn shutdown_turns_everything_not_serving_and_ends_the_watches() {
    with_timeout(30, || {
        // A grace period longer than the test's timeout: a watch that
        // held the drain up would fail the test.
        let server = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .shutdown_grace_period(Duration::from_secs(120))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let health = server.health().unwrap();
        let client = health_client(&server);
        let mut whole = watch(&client, "");
        let mut example = watch(&client, EXAMPLE);
        assert_eq!(next_status(&mut whole), Some(ServingStatus::Serving));
        assert_eq!(next_status(&mut example), Some(ServingStatus::Serving));

        let shutdown = std::thread::spawn(move || server.shutdown());
        assert_eq!(next_status(&mut whole), Some(ServingStatus::NotServing));
        assert_eq!(next_status(&mut example), Some(ServingStatus::NotServing));
        // Then the watches end cleanly.
        assert!(whole.next().is_none());
        assert!(example.next().is_none());
        shutdown.join().unwrap().unwrap();
        assert_eq!(health.status(""), Some(ServingStatus::NotServing));
        // Nothing turns it back.
        health.set_serving("");
        assert_eq!(health.status(""), Some(ServingStatus::NotServing));
    });
}

#[test]
fn health_can_be_turned_off_or_replaced() {
    with_timeout(30, || {
        let server = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .health(false)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        assert!(server.health().is_none());
        assert_eq!(check(&health_client(&server), ""), Err(Code::Unimplemented));

        /// An application's own health service: always NOT_SERVING.
        struct Mine;
        impl grpc_blocking::health::v1::Health for Mine {
            fn check(
                &self,
                _: HealthCheckRequest,
                _: &ServerContext,
            ) -> Result<grpc_blocking::health::v1::HealthCheckResponse, Status> {
                Ok(grpc_blocking::health::v1::HealthCheckResponse {
                    status: ServingStatus::NotServing as i32,
                })
            }
            fn list(
                &self,
                _: HealthListRequest,
                _: &ServerContext,
            ) -> Result<grpc_blocking::health::v1::HealthListResponse, Status> {
                Err(Status::unimplemented("no list"))
            }
            fn watch(
                &self,
                _: HealthCheckRequest,
                _: &ServerContext,
                _: &mut ResponseSink<grpc_blocking::health::v1::HealthCheckResponse>,
            ) -> Result<(), Status> {
                Err(Status::unimplemented("no watch"))
            }
        }
        let server = Server::builder()
            .add_service(grpc_blocking::health::v1::HealthServer::new(Mine))
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        assert_eq!(
            check(&health_client(&server), ""),
            Ok(ServingStatus::NotServing)
        );
    });
}

// ---------------------------------------------------------------------------
// Reflection, v1, with raw requests.

/// One reflection stream, asked one question at a time.
struct Reflector {
    sink: RequestSink<ServerReflectionRequest>,
    answers: Streaming<ServerReflectionResponse>,
}

impl Reflector {
    fn new(channel: &Channel) -> Reflector {
        let (sink, answers) = ServerReflectionClient::new(channel.clone())
            .server_reflection_info_sender(CallOptions::new());
        Reflector { sink, answers }
    }

    fn ask(&mut self, question: MessageRequest) -> MessageResponse {
        let request = ServerReflectionRequest {
            host: "localhost".into(),
            message_request: Some(question),
        };
        self.sink.send(request.clone()).unwrap();
        let answer = self.answers.next().unwrap().unwrap();
        assert_eq!(answer.valid_host, "localhost");
        assert_eq!(answer.original_request, Some(request));
        answer.message_response.unwrap()
    }

    fn files(&mut self, question: MessageRequest) -> Vec<FileDescriptorProto> {
        match self.ask(question.clone()) {
            MessageResponse::FileDescriptorResponse(r) => r
                .file_descriptor_proto
                .iter()
                .map(|b| FileDescriptorProto::decode(b.as_slice()).unwrap())
                .collect(),
            other => panic!("{question:?}: {other:?}"),
        }
    }

    fn error(&mut self, question: MessageRequest) -> (i32, String) {
        match self.ask(question.clone()) {
            MessageResponse::ErrorResponse(e) => (e.error_code, e.error_message),
            other => panic!("{question:?}: {other:?}"),
        }
    }
}

/// Checks that `files` starts with the file defining what was asked for
/// and holds every file it depends on, transitively, each once.
#[track_caller]
fn assert_self_contained(files: &[FileDescriptorProto], first: &str) {
    assert_eq!(files[0].name(), first);
    let names: Vec<&str> = files.iter().map(|f| f.name()).collect();
    let unique: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    for f in files {
        for dep in &f.dependency {
            assert!(
                unique.contains(dep.as_str()),
                "{first}: {dep} missing from {names:?}"
            );
        }
    }
}

/// Every message (nested ones too) of a file, by full name.
fn messages(prefix: &str, list: &[DescriptorProto], out: &mut Vec<String>) {
    for m in list {
        let name = format!("{prefix}.{}", m.name());
        messages(&name, &m.nested_type, out);
        for e in &m.enum_type {
            out.push(format!("{name}.{}", e.name()));
        }
        out.push(name);
    }
}

#[test]
fn reflection_lists_every_service() {
    with_timeout(30, || {
        let server = full_server();
        let channel = Channel::connect(server.target()).unwrap();
        let mut r = Reflector::new(&channel);
        let MessageResponse::ListServicesResponse(list) =
            r.ask(MessageRequest::ListServices(String::new()))
        else {
            panic!("not a service list");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                SHOP,
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                TEST_SERVICE,
                EXAMPLE,
            ]
        );
    });
}

#[test]
fn reflection_describes_every_service_method_message_and_enum_with_its_imports() {
    with_timeout(60, || {
        let server = full_server();
        let channel = Channel::connect(server.target()).unwrap();
        let mut r = Reflector::new(&channel);
        let services: [(&str, &dyn Service); 3] = [
            (EXAMPLE, &ExampleServer::new(ExampleService)),
            (TEST_SERVICE, &TestServiceServer::new(InteropService)),
            (SHOP, &ShopServer::new(ShopService::with_catalogue())),
        ];
        let mut asked = 0;
        for (name, service) in services {
            // The service, and each of its methods, by symbol.
            let files = r.files(MessageRequest::FileContainingSymbol(name.into()));
            let own = files[0].name().to_owned();
            assert_self_contained(&files, &own);
            for method in service.methods() {
                let symbol = format!("{name}.{method}");
                let files = r.files(MessageRequest::FileContainingSymbol(symbol));
                assert_self_contained(&files, &own);
                asked += 1;
            }
            // Every message and enum of every file it brought, by symbol,
            // and every file by name.
            for file in &files {
                let by_name = r.files(MessageRequest::FileByFilename(file.name().into()));
                assert_self_contained(&by_name, file.name());
                let mut symbols = Vec::new();
                messages(file.package(), &file.message_type, &mut symbols);
                for e in &file.enum_type {
                    symbols.push(format!("{}.{}", file.package(), e.name()));
                }
                for symbol in symbols {
                    let found = r.files(MessageRequest::FileContainingSymbol(symbol.clone()));
                    assert_self_contained(&found, file.name());
                    asked += 1;
                }
            }
        }
        // The shop's file brings its import and a well-known type.
        let files = r.files(MessageRequest::FileContainingSymbol(SHOP.into()));
        let names: Vec<&str> = files.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "acme/shop/v1/shop.proto",
                "acme/common/v1/money.proto",
                "google/protobuf/timestamp.proto"
            ]
        );
        let files = r.files(MessageRequest::FileContainingSymbol(
            "google.protobuf.Timestamp".into(),
        ));
        assert_eq!(files[0].name(), "google/protobuf/timestamp.proto");
        assert!(asked > 30, "{asked}");
    });
}

#[test]
fn reflection_errors_are_answers_and_the_stream_goes_on() {
    with_timeout(30, || {
        let server = full_server();
        let channel = Channel::connect(server.target()).unwrap();
        let mut r = Reflector::new(&channel);
        let not_found = Code::NotFound as i32;
        let (code, message) = r.error(MessageRequest::FileContainingSymbol("no.Such".into()));
        assert_eq!(
            (code, message.as_str()),
            (not_found, "unknown symbol \"no.Such\"")
        );
        assert_eq!(
            r.error(MessageRequest::FileByFilename("no/such.proto".into()))
                .0,
            not_found
        );
        assert_eq!(
            r.error(MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type: "nameko.ExampleRequest".into(),
                extension_number: 100,
            }))
            .0,
            not_found
        );
        assert_eq!(
            r.error(MessageRequest::AllExtensionNumbersOfType("no.Such".into()))
                .0,
            not_found
        );
        // A known message without extensions has none.
        match r.ask(MessageRequest::AllExtensionNumbersOfType(
            "nameko.ExampleRequest".into(),
        )) {
            MessageResponse::AllExtensionNumbersResponse(n) => {
                assert_eq!(n.base_type_name, "nameko.ExampleRequest");
                assert!(n.extension_number.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // And the stream still answers.
        let files = r.files(MessageRequest::FileContainingSymbol(EXAMPLE.into()));
        assert_eq!(files[0].name(), "example.proto");
        // A request that asks nothing is an invalid argument, answered too.
        r.sink.send(ServerReflectionRequest::default()).unwrap();
        match r.answers.next().unwrap().unwrap().message_response {
            Some(MessageResponse::ErrorResponse(e)) => {
                assert_eq!(e.error_code, Code::InvalidArgument as i32)
            }
            other => panic!("{other:?}"),
        }
        r.sink.finish();
        assert!(r.answers.next().is_none());
    });
}

#[test]
fn reflection_v1alpha_answers_as_v1_does() {
    with_timeout(30, || {
        use v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
        use v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
        let server = full_server();
        let client = v1alpha::ServerReflectionClient::connect(server.target()).unwrap();
        let questions = vec![
            v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(AlphaRequest::ListServices(String::new())),
            },
            v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(AlphaRequest::FileContainingSymbol(
                    "grpc.testing.SimpleRequest".into(),
                )),
            },
        ];
        let answers: Vec<_> = client
            .server_reflection_info(questions)
            .map(|a| a.unwrap().message_response.unwrap())
            .collect();
        match &answers[..] {
            [AlphaResponse::ListServicesResponse(list), AlphaResponse::FileDescriptorResponse(files)] =>
            {
                assert_eq!(list.service.len(), 6);
                let first =
                    FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
                assert_eq!(first.name(), "grpc/testing/messages.proto");
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn reflection_is_off_by_default() {
    with_timeout(30, || {
        let server = grpc_blocking_tests::support::serve(ExampleServer::new(ExampleService));
        let channel = Channel::connect(server.target()).unwrap();
        let mut answers = ServerReflectionClient::new(channel).server_reflection_info([
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
        ]);
        assert_eq!(
            answers.next().unwrap().unwrap_err().code(),
            Code::Unimplemented
        );
    });
}
