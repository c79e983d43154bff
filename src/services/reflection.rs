//! gRPC server reflection, `grpc.reflection.v1` and
//! `grpc.reflection.v1alpha` (grpc/grpc `doc/server-reflection.md`): how
//! grpcurl, Postman, evans and grpcio-reflection learn a server's services
//! and messages with no proto file at hand.
//!
//! Turn it on with [`ServerBuilder::reflection`]. It describes every
//! service the server hosts from the file descriptors the code generator
//! embeds in each generated server (the service's proto file and every file
//! it imports, the well-known types included), so adding a generated
//! service is all it takes. A service implemented by hand, without
//! descriptors, is listed but not described.
//!
//! Both versions answer the same questions: `list_services`,
//! `file_by_filename`, `file_containing_symbol` (a service, method,
//! message, field, enum, enum value or extension, nested or not),
//! `file_containing_extension` and `all_extension_numbers_of_type`. A file
//! comes with every file it depends on. A question without an answer gets
//! an `error_response` (`NOT_FOUND`), and the stream goes on.
//!
//! ```
//! use grpc_blocking::reflection::v1::server_reflection_request::MessageRequest;
//! use grpc_blocking::reflection::v1::server_reflection_response::MessageResponse;
//! use grpc_blocking::reflection::v1::{ServerReflectionClient, ServerReflectionRequest};
//! use grpc_blocking::Server;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder().reflection(true).bind("127.0.0.1:0")?.spawn()?;
//! let client = ServerReflectionClient::connect(server.target())?;
//! let question = ServerReflectionRequest {
//!     message_request: Some(MessageRequest::ListServices(String::new())),
//!     ..Default::default()
//! };
//! let mut answers = client.server_reflection_info([question]);
//! let Some(MessageResponse::ListServicesResponse(list)) = answers.next().unwrap()?.message_response
//! else {
//!     panic!("not a list of services");
//! };
//! let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
//! assert_eq!(
//!     names,
//!     [
//!         "grpc.health.v1.Health",
//!         "grpc.reflection.v1.ServerReflection",
//!         "grpc.reflection.v1alpha.ServerReflection",
//!     ]
//! );
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
};

use crate::code::Code;
use crate::server::plugin::Plugin;
use crate::server::service::Registry;
use crate::server::{Requests, ResponseSink, ServerBuilder, ServerContext};
use crate::status::Status;

/// Reflection v1's messages, service trait, server adapter and client,
/// generated from `grpc/reflection/v1/reflection.proto`.
pub mod v1 {
    include!("generated/grpc.reflection.v1.rs");
}

/// Reflection v1alpha's messages, service trait, server adapter and client
/// (the same messages as v1, under the older package name), generated from
/// `grpc/reflection/v1alpha/reflection.proto`.
pub mod v1alpha {
    include!("generated/grpc.reflection.v1alpha.rs");
}

use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;
use v1::{
    ErrorResponse, ExtensionNumberResponse, ExtensionRequest, FileDescriptorResponse,
    ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};

/// What reflection knows of a server: its services, their files, and
/// where each symbol and extension is defined.
#[derive(Debug, Default)]
struct Index {
    services: Vec<String>,
    /// Each file's encoded descriptor and the names of its dependencies.
    files: HashMap<String, (Vec<u8>, Vec<String>)>,
    /// Every symbol's full name (no leading dot), to its file.
    symbols: HashMap<String, String>,
    /// Message types, by full name.
    messages: HashSet<String>,
    /// Extensions, by extended message, then field number, to their file.
    extensions: HashMap<String, BTreeMap<i32, String>>,
}

impl Index {
    /// Indexes the services of `registry` and the files they embed (the
    /// first file of each name wins).
    fn new(registry: &Registry) -> Index {
        let mut index = Index::default();
        for service in registry.iter() {
            index.services.push(service.name().to_owned());
            for bytes in service.file_descriptors() {
                match FileDescriptorProto::decode(*bytes) {
                    Ok(file) => index.add_file(file, bytes),
                    Err(e) => log::error!(
                        "reflection: service {} embeds a file descriptor that does not decode: {e}",
                        service.name()
                    ),
                }
            }
        }
        index
    }

    fn add_file(&mut self, file: FileDescriptorProto, bytes: &[u8]) {
        let name = file.name().to_owned();
        if self.files.contains_key(&name) {
            return;
        }
        self.files
            .insert(name.clone(), (bytes.to_vec(), file.dependency.clone()));
        let package = file.package();
        for message in &file.message_type {
            self.add_message(package, message, &name);
        }
        for e in &file.enum_type {
            self.add_enum(package, e, &name);
        }
        for ext in &file.extension {
            self.add_extension(package, ext, &name);
        }
        for service in &file.service {
            let service_name = join(package, service.name());
            for method in &service.method {
                self.add_symbol(join(&service_name, method.name()), &name);
            }
            self.add_symbol(service_name, &name);
        }
    }

    fn add_symbol(&mut self, symbol: String, file: &str) {
        self.symbols
            .entry(symbol)
            .or_insert_with(|| file.to_owned());
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto, file: &str) {
        let full = join(scope, message.name());
        for field in &message.field {
            self.add_symbol(join(&full, field.name()), file);
        }
        for oneof in &message.oneof_decl {
            self.add_symbol(join(&full, oneof.name()), file);
        }
        for nested in &message.nested_type {
            self.add_message(&full, nested, file);
        }
        for e in &message.enum_type {
            self.add_enum(&full, e, file);
        }
        for ext in &message.extension {
            self.add_extension(&full, ext, file);
        }
        self.messages.insert(full.clone());
        self.add_symbol(full, file);
    }

    fn add_enum(&mut self, scope: &str, e: &EnumDescriptorProto, file: &str) {
        // Enum values are scoped like their enum's siblings (as in C++).
        for value in &e.value {
            self.add_symbol(join(scope, value.name()), file);
        }
        self.add_symbol(join(scope, e.name()), file);
    }

    fn add_extension(&mut self, scope: &str, ext: &FieldDescriptorProto, file: &str) {
        let extendee = ext.extendee().trim_start_matches('.').to_owned();
        self.extensions
            .entry(extendee)
            .or_default()
            .entry(ext.number())
            .or_insert_with(|| file.to_owned());
        self.add_symbol(join(scope, ext.name()), file);
    }

    /// `name` and every file it depends on, transitively, each once.
    fn file_with_dependencies(&self, name: &str) -> Result<FileDescriptorResponse, Status> {
        if !self.files.contains_key(name) {
            return Err(Status::not_found(format!("unknown file {name:?}")));
        }
        let mut seen = HashSet::new();
        let mut todo = vec![name];
        let mut out = Vec::new();
        while let Some(file) = todo.pop() {
            if !seen.insert(file) {
                continue;
            }
            // A dependency no service embeds is left out; the client then
            // asks for it by name, and hears NOT_FOUND.
            let Some((bytes, deps)) = self.files.get(file) else {
                continue;
            };
            out.push(bytes.clone());
            todo.extend(deps.iter().rev().map(String::as_str));
        }
        Ok(FileDescriptorResponse {
            file_descriptor_proto: out,
        })
    }

    fn answer(&self, question: Option<&MessageRequest>) -> Result<MessageResponse, Status> {
        let Some(question) = question else {
            return Err(Status::invalid_argument(
                "the request asks nothing: set one of file_by_filename, file_containing_symbol, \
                 file_containing_extension, all_extension_numbers_of_type, list_services",
            ));
        };
        let files = match question {
            MessageRequest::FileByFilename(name) => self.file_with_dependencies(name)?,
            MessageRequest::FileContainingSymbol(symbol) => {
                let symbol = symbol.trim_start_matches('.');
                let file = self
                    .symbols
                    .get(symbol)
                    .ok_or_else(|| Status::not_found(format!("unknown symbol {symbol:?}")))?;
                self.file_with_dependencies(file)?
            }
            MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type,
                extension_number,
            }) => {
                let extendee = containing_type.trim_start_matches('.');
                let file = self
                    .extensions
                    .get(extendee)
                    .and_then(|numbers| numbers.get(extension_number))
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "no extension {extension_number} of {extendee:?} is known"
                        ))
                    })?;
                self.file_with_dependencies(file)?
            }
            MessageRequest::AllExtensionNumbersOfType(name) => {
                let name = name.trim_start_matches('.');
                if !self.messages.contains(name) {
                    return Err(Status::not_found(format!("unknown message type {name:?}")));
                }
                let numbers = self
                    .extensions
                    .get(name)
                    .map(|n| n.keys().copied().collect())
                    .unwrap_or_default();
                return Ok(MessageResponse::AllExtensionNumbersResponse(
                    ExtensionNumberResponse {
                        base_type_name: name.to_owned(),
                        extension_number: numbers,
                    },
                ));
            }
            MessageRequest::ListServices(_) => {
                return Ok(MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                }))
            }
        };
        Ok(MessageResponse::FileDescriptorResponse(files))
    }

    /// The response to one request.
    fn respond(&self, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let answer = self
            .answer(request.message_request.as_ref())
            .unwrap_or_else(|status| {
                MessageResponse::ErrorResponse(ErrorResponse {
                    error_code: status.code() as i32,
                    error_message: status.message().to_owned(),
                })
            });
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(answer),
        }
    }
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// Both versions' service: one index, filled when the server binds.
#[derive(Clone, Default)]
struct Reflection {
    index: Arc<OnceLock<Index>>,
}

impl Reflection {
    fn index(&self) -> Result<&Index, Status> {
        self.index
            .get()
            .ok_or_else(|| Status::new(Code::Unavailable, "reflection is not ready yet"))
    }
}

impl v1::ServerReflection for Reflection {
    fn server_reflection_info(
        &self,
        requests: Requests<ServerReflectionRequest>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<ServerReflectionResponse>,
    ) -> Result<(), Status> {
        let index = self.index()?;
        for request in requests {
            responses.send(index.respond(request?))?;
        }
        Ok(())
    }
}

impl v1alpha::ServerReflection for Reflection {
    fn server_reflection_info(
        &self,
        requests: Requests<v1alpha::ServerReflectionRequest>,
        _ctx: &ServerContext,
        responses: &mut ResponseSink<v1alpha::ServerReflectionResponse>,
    ) -> Result<(), Status> {
        let index = self.index()?;
        for request in requests {
            // The two versions' messages are the same on the wire.
            let request: ServerReflectionRequest = same_on_the_wire(&request?);
            responses.send(same_on_the_wire(&index.respond(request)))?;
        }
        Ok(())
    }
}

/// `message` as the other version's type, through its encoding.
fn same_on_the_wire<A: Message, B: Message + Default>(message: &A) -> B {
    // A message always decodes as a type with the same fields.
    B::decode(message.encode_to_vec().as_slice()).unwrap_or_default()
}

/// Reflection plugged into a server.
struct ReflectionPlugin {
    service: Reflection,
}

impl Plugin for ReflectionPlugin {
    fn install(&self, registry: &mut Registry) {
        registry.add(Arc::new(v1::ServerReflectionServer::new(
            self.service.clone(),
        )));
        registry.add(Arc::new(v1alpha::ServerReflectionServer::new(
            self.service.clone(),
        )));
    }

    fn installed(&self, registry: &Registry) {
        let _ = self.service.index.set(Index::new(registry));
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl ServerBuilder {
    /// Whether the server answers gRPC server reflection, v1 and v1alpha
    /// (default: off), describing every service it hosts from the
    /// descriptors the code generator embedded. Off by default because it
    /// tells anyone who can connect the whole API; turn it on where the
    /// tools that need it (grpcurl, Postman, evans) are used.
    pub fn reflection(mut self, enabled: bool) -> Self {
        if enabled {
            self.plugins.set(ReflectionPlugin {
                service: Reflection::default(),
            });
        } else {
            self.plugins.remove::<ReflectionPlugin>();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{
        EnumValueDescriptorProto, MethodDescriptorProto, OneofDescriptorProto,
        ServiceDescriptorProto,
    };

    fn index_of(files: Vec<FileDescriptorProto>) -> Index {
        let mut index = Index::default();
        for f in files {
            let bytes = f.encode_to_vec();
            index.add_file(f, &bytes);
        }
        index
    }

    fn field(name: &str) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn sample() -> Index {
        let base = FileDescriptorProto {
            name: Some("base.proto".into()),
            package: Some("b".into()),
            message_type: vec![DescriptorProto {
                name: Some("Base".into()),
                extension_range: vec![Default::default()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let api = FileDescriptorProto {
            name: Some("api.proto".into()),
            package: Some("a.v1".into()),
            dependency: vec!["base.proto".into(), "missing.proto".into()],
            message_type: vec![DescriptorProto {
                name: Some("Req".into()),
                field: vec![field("id")],
                oneof_decl: vec![OneofDescriptorProto {
                    name: Some("choice".into()),
                    ..Default::default()
                }],
                nested_type: vec![DescriptorProto {
                    name: Some("Inner".into()),
                    ..Default::default()
                }],
                enum_type: vec![EnumDescriptorProto {
                    name: Some("Kind".into()),
                    value: vec![EnumValueDescriptorProto {
                        name: Some("KIND_A".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            extension: vec![FieldDescriptorProto {
                name: Some("tag".into()),
                number: Some(100),
                extendee: Some(".b.Base".into()),
                ..Default::default()
            }],
            service: vec![ServiceDescriptorProto {
                name: Some("Api".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Get".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        index_of(vec![api, base])
    }

    fn files(answer: Result<MessageResponse, Status>) -> Vec<String> {
        match answer {
            Ok(MessageResponse::FileDescriptorResponse(r)) => r
                .file_descriptor_proto
                .iter()
                .map(|b| {
                    FileDescriptorProto::decode(b.as_slice())
                        .unwrap()
                        .name()
                        .to_owned()
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    fn symbol(s: &str) -> MessageRequest {
        MessageRequest::FileContainingSymbol(s.into())
    }

    #[test]
    fn every_kind_of_symbol_finds_its_file_with_its_dependencies() {
        let index = sample();
        for s in [
            "a.v1.Api",
            "a.v1.Api.Get",
            "a.v1.Req",
            ".a.v1.Req",
            "a.v1.Req.id",
            "a.v1.Req.choice",
            "a.v1.Req.Inner",
            "a.v1.Req.Kind",
            "a.v1.Req.KIND_A",
            "a.v1.tag",
        ] {
            assert_eq!(
                files(index.answer(Some(&symbol(s)))),
                ["api.proto", "base.proto"],
                "{s}"
            );
        }
        assert_eq!(files(index.answer(Some(&symbol("b.Base")))), ["base.proto"]);
    }

    #[test]
    fn unknown_names_are_not_found() {
        let index = sample();
        for q in [
            symbol("a.v1.Nope"),
            MessageRequest::FileByFilename("nope.proto".into()),
            MessageRequest::AllExtensionNumbersOfType("a.v1.Nope".into()),
            MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type: "b.Base".into(),
                extension_number: 7,
            }),
        ] {
            assert_eq!(
                index.answer(Some(&q)).unwrap_err().code(),
                Code::NotFound,
                "{q:?}"
            );
        }
        assert_eq!(
            index.answer(None).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn extensions_by_number_and_by_type() {
        let index = sample();
        let q = MessageRequest::FileContainingExtension(ExtensionRequest {
            containing_type: ".b.Base".into(),
            extension_number: 100,
        });
        assert_eq!(files(index.answer(Some(&q))), ["api.proto", "base.proto"]);
        let q = MessageRequest::AllExtensionNumbersOfType("b.Base".into());
        match index.answer(Some(&q)) {
            Ok(MessageResponse::AllExtensionNumbersResponse(r)) => {
                assert_eq!(
                    (r.base_type_name.as_str(), r.extension_number),
                    ("b.Base", vec![100])
                )
            }
            other => panic!("{other:?}"),
        }
        let q = MessageRequest::AllExtensionNumbersOfType("a.v1.Req".into());
        match index.answer(Some(&q)) {
            Ok(MessageResponse::AllExtensionNumbersResponse(r)) => {
                assert!(r.extension_number.is_empty())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_keep_the_question_and_the_versions_agree_on_the_wire() {
        let index = sample();
        let request = ServerReflectionRequest {
            host: "h".into(),
            message_request: Some(symbol("nope")),
        };
        let response = index.respond(request.clone());
        assert_eq!(response.valid_host, "h");
        assert_eq!(response.original_request.as_ref(), Some(&request));
        match &response.message_response {
            Some(MessageResponse::ErrorResponse(e)) => {
                assert_eq!(e.error_code, Code::NotFound as i32);
                assert_eq!(e.error_message, "unknown symbol \"nope\"");
            }
            other => panic!("{other:?}"),
        }
        let alpha: v1alpha::ServerReflectionResponse = same_on_the_wire(&response);
        let back: ServerReflectionResponse = same_on_the_wire(&alpha);
        assert_eq!(back, response);
    }
}
