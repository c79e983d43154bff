//! Unit tests: compile small protos written to a temporary directory and
//! look at the generated code.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;
use quote::ToTokens;

use crate::{configure, Builder, Error};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "grpc-blocking-codegen-{}-{test}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The generated files of one compile, by file name.
#[derive(Debug)]
struct Output {
    files: BTreeMap<String, String>,
}

impl Output {
    fn file(&self, name: &str) -> &str {
        self.files
            .get(name)
            .unwrap_or_else(|| panic!("no generated file {name}; have {:?}", self.files.keys()))
    }

    fn parse(&self, name: &str) -> syn::File {
        syn::parse_file(self.file(name)).expect("generated code parses")
    }
}

/// Writes `protos` (name, source) under `<tmp>/proto`, compiles them all
/// with `builder` and returns the generated files.
fn compile_with(builder: Builder, test: &str, protos: &[(&str, &str)]) -> Result<Output, Error> {
    let tmp = TempDir::new(test);
    let proto_dir = tmp.path().join("proto");
    let out_dir = tmp.path().join("out");
    for (name, source) in protos {
        let path = proto_dir.join(name);
        fs::create_dir_all(path.parent().expect("proto path has a parent")).expect("mkdir");
        fs::write(&path, source).expect("write proto");
    }
    let names: Vec<&str> = protos.iter().map(|(name, _)| *name).collect();
    builder
        .out_dir(&out_dir)
        .emit_rerun_if_changed(false)
        .compile(&names, &[&proto_dir])?;
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&out_dir).expect("read out dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, fs::read_to_string(entry.path()).expect("read output"));
    }
    Ok(Output { files })
}

fn compile(test: &str, protos: &[(&str, &str)]) -> Result<Output, Error> {
    compile_with(configure(), test, protos)
}

/// Tokens as text without whitespace and without the trailing commas that
/// line breaks add, so that formatting does not matter.
fn squash(tokens: impl ToTokens) -> String {
    norm(tokens.to_token_stream().to_string())
}

/// Text normalized like [`squash`] normalizes tokens: whitespace only where
/// it separates two words, no trailing commas.
fn norm(text: impl AsRef<str>) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut s = String::new();
    let mut pending_space = false;
    for c in text.as_ref().chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && s.ends_with(word) && word(c) {
            s.push(' ');
        }
        pending_space = false;
        s.push(c);
    }
    for (from, to) in [(",)", ")"), (",}", "}"), (",]", "]"), (",>", ">")] {
        s = s.replace(from, to);
    }
    s.trim_end_matches(',').to_owned()
}

fn find_trait<'a>(file: &'a syn::File, name: &str) -> &'a syn::ItemTrait {
    file.items
        .iter()
        .find_map(|item| match item {
            syn::Item::Trait(t) if t.ident == name => Some(t),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no trait {name}"))
}

/// The signature of `fn name` in trait `trait_name`.
fn trait_fn(file: &syn::File, trait_name: &str, name: &str) -> String {
    find_trait(file, trait_name)
        .items
        .iter()
        .find_map(|item| match item {
            syn::TraitItem::Fn(f) if f.sig.ident == name => Some(squash(&f.sig)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no fn {name} in trait {trait_name}"))
}

/// The inherent impl items of `type_name` (all inherent impls together).
fn inherent_items<'a>(file: &'a syn::File, type_name: &str) -> Vec<&'a syn::ImplItem> {
    file.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Impl(i) if i.trait_.is_none() && squash(&i.self_ty) == type_name => {
                Some(i.items.iter())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// The signature of the inherent fn `name` of `type_name`.
fn inherent_fn(file: &syn::File, type_name: &str, name: &str) -> String {
    inherent_items(file, type_name)
        .into_iter()
        .find_map(|item| match item {
            syn::ImplItem::Fn(f) if f.sig.ident == name => Some(squash(&f.sig)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no fn {name} on {type_name}"))
}

/// The value of the inherent const `name` of `type_name`.
fn inherent_const(file: &syn::File, type_name: &str, name: &str) -> String {
    inherent_items(file, type_name)
        .into_iter()
        .find_map(|item| match item {
            syn::ImplItem::Const(c) if c.ident == name => match &c.expr {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_else(|| panic!("no const {name} on {type_name}"))
}

/// The body of `fn name` in the `Service` impl for `server`.
fn service_fn_body(file: &syn::File, server: &str, name: &str) -> String {
    file.items
        .iter()
        .find_map(|item| match item {
            syn::Item::Impl(i)
                if i.trait_.as_ref().is_some_and(|(_, path, _)| {
                    squash(path) == "::grpc_blocking::server::Service"
                }) && squash(&i.self_ty).starts_with(server) =>
            {
                i.items.iter().find_map(|item| match item {
                    syn::ImplItem::Fn(f) if f.sig.ident == name => Some(squash(&f.block)),
                    _ => None,
                })
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Service::{name} for {server}"))
}

/// The doc text of an item's attributes.
fn doc_of(attrs: &[syn::Attribute]) -> String {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn trait_fn_doc(file: &syn::File, trait_name: &str, name: &str) -> String {
    find_trait(file, trait_name)
        .items
        .iter()
        .find_map(|item| match item {
            syn::TraitItem::Fn(f) if f.sig.ident == name => Some(doc_of(&f.attrs)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no fn {name} in trait {trait_name}"))
}

const EXAMPLE: &str = r#"
syntax = "proto3";
package nameko;
service example {
  rpc unary_unary (ExampleRequest) returns (ExampleReply) {}
  rpc unary_stream (ExampleRequest) returns (stream ExampleReply) {}
  rpc stream_unary (stream ExampleRequest) returns (ExampleReply) {}
  rpc stream_stream (stream ExampleRequest) returns (stream ExampleReply) {}
}
message ExampleRequest { string value = 1; int32 multiplier = 2; }
message ExampleReply { string message = 1; int32 seqno = 2; }
"#;

const CTX: &str = "&::grpc_blocking::server::ServerContext";

#[test]
fn four_patterns_server_signatures() {
    let out = compile("four_server", &[("example.proto", EXAMPLE)]).unwrap();
    let file = out.parse("nameko.rs");
    let result = |ok: &str| format!("::core::result::Result<{ok},::grpc_blocking::Status>");
    assert_eq!(
        trait_fn(&file, "Example", "unary_unary"),
        norm(format!(
            "fn unary_unary(&self, request: ExampleRequest, ctx: {CTX}) -> {}",
            result("ExampleReply")
        ))
    );
    assert_eq!(
        trait_fn(&file, "Example", "unary_stream"),
        norm(format!(
            "fn unary_stream(&self, request: ExampleRequest, ctx: {CTX}, \
             responses: &mut ::grpc_blocking::server::ResponseSink<ExampleReply>) -> {}",
            result("()")
        ))
    );
    assert_eq!(
        trait_fn(&file, "Example", "stream_unary"),
        norm(format!(
            "fn stream_unary(&self, requests: ::grpc_blocking::server::Requests<ExampleRequest>, \
             ctx: {CTX}) -> {}",
            result("ExampleReply")
        ))
    );
    assert_eq!(
        trait_fn(&file, "Example", "stream_stream"),
        norm(format!(
            "fn stream_stream(&self, requests: ::grpc_blocking::server::Requests<ExampleRequest>, \
             ctx: {CTX}, responses: &mut ::grpc_blocking::server::ResponseSink<ExampleReply>) -> {}",
            result("()")
        ))
    );
    let supertraits = squash(&find_trait(&file, "Example").supertraits);
    assert_eq!(
        supertraits,
        "::core::marker::Send+::core::marker::Sync+'static"
    );

    assert_eq!(
        service_fn_body(&file, "ExampleServer", "name"),
        norm(r#"{ "nameko.example" }"#)
    );
    assert_eq!(
        service_fn_body(&file, "ExampleServer", "methods"),
        norm(r#"{ &["unary_unary", "unary_stream", "stream_unary", "stream_stream"] }"#)
    );
    let call = service_fn_body(&file, "ExampleServer", "call");
    for expected in [
        r#""unary_unary" => { ::grpc_blocking::server::unary(call, |request, ctx| { T::unary_unary(&self.inner, request, ctx) }) }"#,
        r#""unary_stream" => { ::grpc_blocking::server::server_streaming(call, |request, ctx, responses| { T::unary_stream(&self.inner, request, ctx, responses) }) }"#,
        r#""stream_unary" => { ::grpc_blocking::server::client_streaming(call, |requests, ctx| T::stream_unary(&self.inner, requests, ctx)) }"#,
        r#""stream_stream" => { ::grpc_blocking::server::bidi_streaming(call, |requests, ctx, responses| { T::stream_stream(&self.inner, requests, ctx, responses) }) }"#,
        "_ => call.unimplemented()",
    ] {
        assert!(call.contains(&norm(expected)), "{call}\nlacks {expected}");
    }
    assert_eq!(
        inherent_fn(&file, "ExampleServer<T>", "new"),
        norm("fn new(inner: T) -> Self")
    );
    assert_eq!(
        inherent_fn(&file, "ExampleServer<T>", "from_arc"),
        norm("fn from_arc(inner: ::std::sync::Arc<T>) -> Self")
    );
}

#[test]
fn four_patterns_client_signatures() {
    let out = compile("four_client", &[("example.proto", EXAMPLE)]).unwrap();
    let file = out.parse("nameko.rs");
    let c = "ExampleClient";
    let opts = "options: ::grpc_blocking::CallOptions";
    let send_iter = "where I: ::core::iter::IntoIterator<Item = ExampleRequest> + ::core::marker::Send + 'static, \
                     I::IntoIter: ::core::marker::Send";
    let expected = [
        ("new", "fn new(channel: ::grpc_blocking::Channel) -> Self".to_owned()),
        (
            "connect",
            "fn connect(target: impl ::grpc_blocking::IntoTarget) -> ::core::result::Result<Self, ::grpc_blocking::TransportError>".to_owned(),
        ),
        (
            "connect_lazy",
            "fn connect_lazy(target: impl ::grpc_blocking::IntoTarget) -> ::core::result::Result<Self, ::grpc_blocking::TransportError>"
                .to_owned(),
        ),
        ("channel", "fn channel(&self) -> &::grpc_blocking::Channel".to_owned()),
        (
            "unary_unary",
            "fn unary_unary(&self, request: ExampleRequest) -> ::core::result::Result<ExampleReply, ::grpc_blocking::Status>".to_owned(),
        ),
        (
            "unary_unary_with",
            format!("fn unary_unary_with(&self, request: ExampleRequest, {opts}) -> ::core::result::Result<ExampleReply, ::grpc_blocking::Status>"),
        ),
        (
            "unary_unary_start",
            format!("fn unary_unary_start(&self, request: ExampleRequest, {opts}) -> ::grpc_blocking::UnaryCall<ExampleReply>"),
        ),
        (
            "unary_stream",
            "fn unary_stream(&self, request: ExampleRequest) -> ::grpc_blocking::Streaming<ExampleReply>".to_owned(),
        ),
        (
            "unary_stream_with",
            format!("fn unary_stream_with(&self, request: ExampleRequest, {opts}) -> ::grpc_blocking::Streaming<ExampleReply>"),
        ),
        (
            "stream_unary",
            "fn stream_unary<I>(&self, requests: I) -> ::core::result::Result<ExampleReply, ::grpc_blocking::Status> \
             where I: ::core::iter::IntoIterator<Item = ExampleRequest>".to_owned(),
        ),
        (
            "stream_unary_with",
            format!("fn stream_unary_with<I>(&self, requests: I, {opts}) -> ::core::result::Result<ExampleReply, ::grpc_blocking::Status> \
                     where I: ::core::iter::IntoIterator<Item = ExampleRequest>"),
        ),
        (
            "stream_unary_start",
            format!("fn stream_unary_start<I>(&self, requests: I, {opts}) -> ::grpc_blocking::UnaryCall<ExampleReply> {send_iter}"),
        ),
        (
            "stream_unary_sender",
            format!("fn stream_unary_sender(&self, {opts}) -> (::grpc_blocking::RequestSink<ExampleRequest>, ::grpc_blocking::UnaryCall<ExampleReply>)"),
        ),
        (
            "stream_stream",
            format!("fn stream_stream<I>(&self, requests: I) -> ::grpc_blocking::Streaming<ExampleReply> {send_iter}"),
        ),
        (
            "stream_stream_with",
            format!("fn stream_stream_with<I>(&self, requests: I, {opts}) -> ::grpc_blocking::Streaming<ExampleReply> {send_iter}"),
        ),
        (
            "stream_stream_sender",
            format!("fn stream_stream_sender(&self, {opts}) -> (::grpc_blocking::RequestSink<ExampleRequest>, ::grpc_blocking::Streaming<ExampleReply>)"),
        ),
    ];
    for (name, signature) in &expected {
        assert_eq!(inherent_fn(&file, c, name), norm(signature), "fn {name}");
    }
    // Unary and server-streaming rpcs have no `_sender`; server-streaming
    // and bidi rpcs, which return a stream at once, no `_start`.
    let fns: Vec<String> = inherent_items(&file, c)
        .into_iter()
        .filter_map(|item| match item {
            syn::ImplItem::Fn(f) => Some(f.sig.ident.to_string()),
            _ => None,
        })
        .collect();
    for absent in [
        "unary_unary_sender",
        "unary_stream_sender",
        "unary_stream_start",
        "stream_stream_start",
    ] {
        assert!(!fns.iter().any(|f| f == absent), "{absent}");
    }
    assert_eq!(fns.len(), expected.len());

    assert_eq!(inherent_const(&file, c, "SERVICE_NAME"), "nameko.example");
    assert_eq!(
        inherent_const(&file, c, "UNARY_UNARY_PATH"),
        "/nameko.example/unary_unary"
    );
    assert_eq!(
        inherent_const(&file, c, "STREAM_STREAM_PATH"),
        "/nameko.example/stream_stream"
    );
}

#[test]
fn no_package_paths_and_file_name() {
    let proto = r#"
        syntax = "proto3";
        service example { rpc unary_unary (Ping) returns (Ping); }
        message Ping {}
    "#;
    let out = compile("no_package", &[("noPackage.proto", proto)]).unwrap();
    assert_eq!(
        out.files.keys().collect::<Vec<_>>(),
        ["_.rs", "_includes.rs"]
    );
    assert_eq!(
        out.file("_includes.rs").lines().last(),
        Some(r#"include!("_.rs");"#),
        "a package-less proto is included at the top"
    );
    let file = out.parse("_.rs");
    assert_eq!(
        inherent_const(&file, "ExampleClient", "UNARY_UNARY_PATH"),
        "/example/unary_unary"
    );
    assert_eq!(
        service_fn_body(&file, "ExampleServer", "name"),
        norm(r#"{ "example" }"#)
    );
}

#[test]
fn nested_package_paths_and_cross_package_types() {
    let common = r#"
        syntax = "proto3";
        package other.pkg;
        message Shared { string id = 1; }
    "#;
    let nested = r#"
        syntax = "proto3";
        package a.b.c;
        import "other/common.proto";
        service Deep { rpc Fetch (other.pkg.Shared) returns (Local); }
        message Local {}
    "#;
    let out = compile(
        "nested",
        &[("a/nested.proto", nested), ("other/common.proto", common)],
    )
    .unwrap();
    assert_eq!(
        out.files.keys().collect::<Vec<_>>(),
        ["_includes.rs", "a.b.c.rs", "other.pkg.rs"]
    );
    // The module tree that `include_protos!` includes: `super::` paths
    // between the packages resolve in it.
    assert_eq!(
        norm(out.file("_includes.rs")),
        norm(
            r#"// This file is @generated by prost-build.
               pub mod a { pub mod b { pub mod c { include!("a.b.c.rs"); } } }
               pub mod other { pub mod pkg { include!("other.pkg.rs"); } }"#
        )
    );
    let file = out.parse("a.b.c.rs");
    assert_eq!(
        inherent_const(&file, "DeepClient", "FETCH_PATH"),
        "/a.b.c.Deep/Fetch"
    );
    assert_eq!(
        service_fn_body(&file, "DeepServer", "name"),
        norm(r#"{ "a.b.c.Deep" }"#)
    );
    assert_eq!(
        trait_fn(&file, "Deep", "fetch"),
        norm(format!(
            "fn fetch(&self, request: super::super::super::other::pkg::Shared, ctx: {CTX}) \
             -> ::core::result::Result<Local, ::grpc_blocking::Status>"
        ))
    );
}

#[test]
fn well_known_types_map_to_prost_types() {
    let proto = r#"
        syntax = "proto3";
        package wkt;
        import "google/protobuf/empty.proto";
        import "google/protobuf/timestamp.proto";
        service Clock {
          rpc Now (google.protobuf.Empty) returns (google.protobuf.Timestamp);
          rpc Ticks (stream google.protobuf.Timestamp) returns (google.protobuf.Empty);
        }
    "#;
    let out = compile("wkt", &[("wkt.proto", proto)]).unwrap();
    // Nothing is generated for the google.protobuf package itself: the
    // types come from grpc-blocking's re-export of prost-types.
    assert_eq!(
        out.files.keys().collect::<Vec<_>>(),
        ["_includes.rs", "wkt.rs"]
    );
    let file = out.parse("wkt.rs");
    assert_eq!(
        inherent_fn(&file, "ClockClient", "now"),
        norm(
            "fn now(&self, request: ()) -> ::core::result::Result<::grpc_blocking::prost_types::Timestamp, ::grpc_blocking::Status>"
        )
    );
    assert_eq!(
        inherent_fn(&file, "ClockClient", "ticks"),
        norm(
            "fn ticks<I>(&self, requests: I) -> ::core::result::Result<(), ::grpc_blocking::Status> \
             where I: ::core::iter::IntoIterator<Item = ::grpc_blocking::prost_types::Timestamp>"
        )
    );
}

#[test]
fn camel_case_methods_become_snake_case() {
    let proto = r#"
        syntax = "proto3";
        package greet;
        service Greeter {
          rpc SayHello (Hello) returns (Hello);
          rpc GetHTTPStatus (Hello) returns (stream Hello);
        }
        message Hello {}
    "#;
    let out = compile("camel", &[("greet.proto", proto)]).unwrap();
    let file = out.parse("greet.rs");
    assert!(trait_fn(&file, "Greeter", "say_hello").starts_with("fn say_hello("));
    assert!(trait_fn(&file, "Greeter", "get_http_status").starts_with("fn get_http_status("));
    assert_eq!(
        inherent_const(&file, "GreeterClient", "SAY_HELLO_PATH"),
        "/greet.Greeter/SayHello"
    );
    assert_eq!(
        inherent_const(&file, "GreeterClient", "GET_HTTP_STATUS_PATH"),
        "/greet.Greeter/GetHTTPStatus"
    );
    inherent_fn(&file, "GreeterClient", "get_http_status_with");
    let call = service_fn_body(&file, "GreeterServer", "call");
    assert!(call.contains(&norm(
        r#""SayHello" => { ::grpc_blocking::server::unary(call, |request, ctx| { T::say_hello(&self.inner, request, ctx) }) }"#
    )));
    assert_eq!(
        service_fn_body(&file, "GreeterServer", "methods"),
        norm(r#"{ &["SayHello", "GetHTTPStatus"] }"#)
    );
}

#[test]
fn keywords_are_escaped_and_client_names_kept_apart() {
    let proto = r#"
        syntax = "proto3";
        package kw;
        service match {
          rpc type (M) returns (M);
          rpc Self (M) returns (stream M);
          rpc Connect (stream M) returns (M);
          rpc new (M) returns (M);
          rpc clone (stream M) returns (stream M);
        }
        message M {}
    "#;
    let out = compile("keywords", &[("kw.proto", proto)]).unwrap();
    let text = out.file("kw.rs");
    let file = out.parse("kw.rs");
    // The service `match` becomes the trait `Match`.
    assert!(trait_fn(&file, "Match", "r#type").starts_with("fn r#type("));
    assert!(trait_fn(&file, "Match", "self_").starts_with("fn self_("));
    assert!(trait_fn(&file, "Match", "connect").starts_with("fn connect("));
    assert!(trait_fn(&file, "Match", "new").starts_with("fn new("));
    assert!(trait_fn(&file, "Match", "clone").starts_with("fn clone("));
    // Names clippy would judge by themselves are the proto's choice.
    assert!(text.contains("clippy::new_ret_no_self"));
    // Calls through the trait by full path, so that `clone` is no problem.
    assert!(text.contains("T::clone(&self.inner, requests, ctx, responses)"));

    let c = "MatchClient";
    inherent_fn(&file, c, "r#type");
    inherent_fn(&file, c, "type_with");
    inherent_fn(&file, c, "self_");
    inherent_fn(&file, c, "self_with");
    // Client functions named after the client's own functions get `call_`.
    inherent_fn(&file, c, "call_connect");
    inherent_fn(&file, c, "call_connect_with");
    inherent_fn(&file, c, "call_connect_sender");
    inherent_fn(&file, c, "call_new");
    inherent_fn(&file, c, "call_clone_sender");
    assert_eq!(
        inherent_fn(&file, c, "new"),
        norm("fn new(channel: ::grpc_blocking::Channel) -> Self")
    );
    assert_eq!(inherent_const(&file, c, "TYPE_PATH"), "/kw.match/type");
    assert_eq!(inherent_const(&file, c, "SELF_PATH"), "/kw.match/Self");
    assert_eq!(
        inherent_const(&file, c, "CONNECT_PATH"),
        "/kw.match/Connect"
    );
}

#[test]
fn comments_become_docs() {
    let proto = r#"
        syntax = "proto3";
        package docs;

        // Detached comment: not part of any doc.

        // Leading comment on service.
        // See https://example.com/docs for [more].
        service Documented {
          // Leading comment on method.
          //
          // ```
          // not rust { at all
          // ```
          //
          // Indented block:
          //
          //     also not rust {
          rpc Commented (M) returns (M); // Trailing comment on method.

          rpc Bare (M) returns (stream M);
        }
        message M {}
    "#;
    let out = compile("comments", &[("docs.proto", proto)]).unwrap();
    let file = out.parse("docs.rs");

    let service_doc = doc_of(&find_trait(&file, "Documented").attrs);
    assert!(
        service_doc.starts_with(" Leading comment on service."),
        "{service_doc}"
    );
    // URLs and brackets escaped as prost-build escapes message docs.
    assert!(
        service_doc.contains("<https://example.com/docs>"),
        "{service_doc}"
    );
    assert!(service_doc.contains(r"\[more\]"), "{service_doc}");
    assert!(!service_doc.contains("Detached"), "{service_doc}");
    assert!(
        service_doc.contains("implement this trait"),
        "{service_doc}"
    );

    let method_doc = trait_fn_doc(&file, "Documented", "commented");
    assert!(
        method_doc.starts_with(" Leading comment on method."),
        "{method_doc}"
    );
    assert!(
        method_doc.contains("Trailing comment on method."),
        "{method_doc}"
    );
    assert!(
        method_doc.contains("Handles `/docs.Documented/Commented`"),
        "{method_doc}"
    );
    // No code block may be taken for a Rust doctest.
    let fences: Vec<&str> = method_doc
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("```"))
        .collect();
    assert!(!fences.is_empty(), "{method_doc}");
    for fence in fences.iter().step_by(2) {
        assert!(fence.starts_with("```text"), "{fence} in\n{method_doc}");
    }
    assert!(
        !method_doc
            .lines()
            .any(|l| l.starts_with("     ") && l.contains("also not rust")),
        "indented code block left as is:\n{method_doc}"
    );

    // The client repeats the proto docs on its main function.
    let client_items = inherent_items(&file, "DocumentedClient");
    let client_doc = client_items
        .iter()
        .find_map(|item| match item {
            syn::ImplItem::Fn(f) if f.sig.ident == "commented" => Some(doc_of(&f.attrs)),
            _ => None,
        })
        .unwrap();
    assert!(
        client_doc.starts_with(" Leading comment on method."),
        "{client_doc}"
    );
    assert!(client_doc.contains("Calls `/docs.Documented/Commented`: unary request, unary reply."));

    // Methods without comments get a generated description.
    assert_eq!(
        trait_fn_doc(&file, "Documented", "bare").lines().next(),
        Some(" Handles `/docs.Documented/Bare`: unary request, stream of replies.")
    );
}

#[test]
fn every_public_item_is_documented() {
    let out = compile("docs_all", &[("example.proto", EXAMPLE)]).unwrap();
    let file = out.parse("nameko.rs");
    let mut checked = 0;
    for item in &file.items {
        match item {
            syn::Item::Trait(t) => {
                assert!(!doc_of(&t.attrs).is_empty(), "trait {}", t.ident);
                for item in &t.items {
                    if let syn::TraitItem::Fn(f) = item {
                        assert!(!doc_of(&f.attrs).is_empty(), "fn {}", f.sig.ident);
                        checked += 1;
                    }
                }
            }
            // prost's messages have docs only where the proto has comments.
            syn::Item::Struct(s) if s.ident != "ExampleRequest" && s.ident != "ExampleReply" => {
                assert!(!doc_of(&s.attrs).is_empty(), "struct {}", s.ident);
                checked += 1;
            }
            syn::Item::Impl(i) if i.trait_.is_none() => {
                for item in &i.items {
                    match item {
                        syn::ImplItem::Fn(f) => {
                            assert!(!doc_of(&f.attrs).is_empty(), "fn {}", f.sig.ident);
                        }
                        syn::ImplItem::Const(c) => {
                            assert!(!doc_of(&c.attrs).is_empty(), "const {}", c.ident);
                        }
                        _ => {}
                    }
                    checked += 1;
                }
            }
            _ => {}
        }
    }
    // 4 trait fns, 2 structs (server, client), 2 server fns, 5 client
    // consts, 16 client fns.
    assert_eq!(checked, 4 + 2 + 2 + 5 + 16);
}

#[test]
fn two_services_in_one_file() {
    let proto = r#"
        syntax = "proto3";
        package multi;
        service First { rpc One (M) returns (M); }
        service second { rpc two (stream M) returns (M); }
        message M {}
    "#;
    let out = compile("two_services", &[("multi.proto", proto)]).unwrap();
    let file = out.parse("multi.rs");
    find_trait(&file, "First");
    find_trait(&file, "Second");
    assert_eq!(
        inherent_const(&file, "FirstClient", "ONE_PATH"),
        "/multi.First/One"
    );
    assert_eq!(
        inherent_const(&file, "SecondClient", "TWO_PATH"),
        "/multi.second/two"
    );
    assert_eq!(
        service_fn_body(&file, "SecondServer", "name"),
        norm(r#"{ "multi.second" }"#)
    );
}

#[test]
fn service_without_methods() {
    let proto = "syntax = \"proto3\"; package empty; service Nothing {}";
    let out = compile("no_methods", &[("empty.proto", proto)]).unwrap();
    let file = out.parse("empty.rs");
    assert_eq!(
        service_fn_body(&file, "NothingServer", "methods"),
        norm("{ &[] }")
    );
    assert_eq!(
        service_fn_body(&file, "NothingServer", "call"),
        norm("{ let _ = method; call.unimplemented(); }")
    );
}

#[test]
fn server_or_client_only() {
    let server_only = compile_with(
        configure().build_client(false),
        "server_only",
        &[("example.proto", EXAMPLE)],
    )
    .unwrap();
    let text = server_only.file("nameko.rs");
    assert!(text.contains("pub trait Example"));
    assert!(text.contains("pub struct ExampleServer"));
    assert!(!text.contains("ExampleClient"));

    let client_only = compile_with(
        configure().build_server(false),
        "client_only",
        &[("example.proto", EXAMPLE)],
    )
    .unwrap();
    let text = client_only.file("nameko.rs");
    assert!(!text.contains("pub trait Example"));
    assert!(!text.contains("ExampleServer"));
    assert!(text.contains("pub struct ExampleClient"));
}

#[test]
fn default_stubs_answer_unimplemented() {
    let stubs = compile_with(
        configure().generate_default_stubs(true),
        "stubs",
        &[("example.proto", EXAMPLE)],
    )
    .unwrap();
    let file = stubs.parse("nameko.rs");
    let example = find_trait(&file, "Example");
    let bodies: Vec<String> = example
        .items
        .iter()
        .filter_map(|item| match item {
            syn::TraitItem::Fn(f) => Some(squash(f.default.as_ref().expect("a default body"))),
            _ => None,
        })
        .collect();
    assert_eq!(bodies.len(), 4);
    assert_eq!(
        bodies[0],
        norm(
            r#"{ let _ = (request, ctx);
                 ::core::result::Result::Err(::grpc_blocking::Status::unimplemented(
                     "/nameko.example/unary_unary is not implemented by this server")) }"#
        )
    );
    assert!(
        bodies[3].contains("let _=(requests,ctx,responses);"),
        "{}",
        bodies[3]
    );
    // Without the option, every method must be implemented.
    let plain = compile("no_stubs", &[("example.proto", EXAMPLE)]).unwrap();
    let file = plain.parse("nameko.rs");
    assert!(find_trait(&file, "Example")
        .items
        .iter()
        .all(|item| match item {
            syn::TraitItem::Fn(f) => f.default.is_none(),
            _ => true,
        }));
}

#[test]
fn writes_file_descriptor_set() {
    let tmp = TempDir::new("fds");
    let fds_path = tmp.path().join("descriptor.bin");
    compile_with(
        configure().file_descriptor_set_path(&fds_path),
        "fds",
        &[(
            "fds.proto",
            r#"syntax = "proto3"; package fds; import "google/protobuf/empty.proto";
               service S { rpc M (google.protobuf.Empty) returns (google.protobuf.Empty); }"#,
        )],
    )
    .unwrap();
    let bytes = fs::read(&fds_path).unwrap();
    let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice()).unwrap();
    let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
    assert_eq!(names, ["google/protobuf/empty.proto", "fds.proto"]);
    assert_eq!(fds.file[1].service[0].name(), "S");
}

#[test]
fn syntax_error_names_file_and_line() {
    let proto = "syntax = \"proto3\";\npackage bad;\nservice S {\n  rpc M (A) returns (A)\n  rpc N (A) returns (A);\n}\n";
    let err = compile("syntax_error", &[("bad.proto", proto)]).unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with("bad.proto:5:3: "), "{shown}");
    let Error::Proto(proto_err) = &err else {
        panic!("not a proto error: {err:?}")
    };
    assert_eq!(proto_err.file(), Some("bad.proto"));
    assert_eq!(proto_err.line(), Some(5));
    assert_eq!(proto_err.column(), Some(3));
    assert!(
        proto_err.message().contains("rpc"),
        "{}",
        proto_err.message()
    );
}

#[test]
fn unexpected_end_of_file_names_the_end() {
    let proto = "syntax = \"proto3\";\npackage eof;\nservice S {\n  rpc M (A) returns (A);";
    let err = compile("eof", &[("eof.proto", proto)]).unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with("eof.proto:4:25: "), "{shown}");
    assert!(shown.contains("end of file"), "{shown}");
}

#[test]
fn unknown_type_names_file_and_line() {
    let proto = "syntax = \"proto3\";\npackage bad;\nservice S {\n  rpc M (Missing) returns (Missing);\n}\n";
    let err = compile("unknown_type", &[("unknown.proto", proto)]).unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with("unknown.proto:4:"), "{shown}");
    assert!(shown.contains("Missing"), "{shown}");
}

#[test]
fn missing_import_is_reported_clearly() {
    let proto = "syntax = \"proto3\";\npackage imp;\nimport \"not/there.proto\";\n";
    let err = compile("missing_import", &[("imp.proto", proto)]).unwrap_err();
    let shown = err.to_string();
    assert_eq!(shown, "imp.proto:3:1: import 'not/there.proto' not found");
}

#[test]
fn proto_outside_the_includes_is_reported() {
    let tmp = TempDir::new("outside");
    let outside = tmp.path().join("outside.proto");
    fs::write(&outside, "syntax = \"proto3\";").unwrap();
    fs::create_dir_all(tmp.path().join("proto")).unwrap();
    let err = configure()
        .out_dir(tmp.path().join("out"))
        .emit_rerun_if_changed(false)
        .compile(&[&outside], &[tmp.path().join("proto")])
        .unwrap_err();
    assert!(
        err.to_string().contains("is not in any include path"),
        "{err}"
    );
}

#[test]
fn missing_proto_file_is_reported() {
    let tmp = TempDir::new("missing_proto");
    let err = configure()
        .out_dir(tmp.path())
        .emit_rerun_if_changed(false)
        .compile(&["nowhere/absent.proto"], &[tmp.path()])
        .unwrap_err();
    assert!(matches!(err, Error::ProtoNotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("proto file `nowhere/absent.proto` not found"),
        "{err}"
    );
}

#[test]
fn colliding_method_names_are_an_error() {
    let proto = r#"
        syntax = "proto3";
        package clash;
        service S { rpc GetFoo (M) returns (M); rpc get_foo (M) returns (M); }
        message M {}
    "#;
    let err = compile("method_clash", &[("clash.proto", proto)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot generate code for service `clash.S`: methods `GetFoo` and `get_foo` both map \
         to the Rust name `get_foo`"
    );
}

#[test]
fn generated_names_colliding_with_messages_are_an_error() {
    let proto = r#"
        syntax = "proto3";
        package clash;
        service example { rpc unary_unary (ExampleClient) returns (ExampleClient); }
        message ExampleClient {}
    "#;
    let err = compile("message_clash", &[("clash.proto", proto)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot generate code for service `clash.example`: the generated Rust item \
         `ExampleClient` would collide with message `ExampleClient` of the same package"
    );
}

#[test]
fn no_out_dir_is_an_error() {
    if std::env::var_os("OUT_DIR").is_some() {
        return;
    }
    let err = configure()
        .emit_rerun_if_changed(false)
        .compile(&["x.proto"], &["."])
        .unwrap_err();
    assert!(matches!(err, Error::NoOutDir), "{err:?}");
}

/// The full output for the examples crate's proto, compared with
/// `tests/golden/nameko.rs`, so that every change to the generated code shows
/// in review. Run with `UPDATE_GOLDEN=1` to rewrite the file.
#[test]
fn golden_example_output() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = manifest.join("../examples/proto");
    let golden_path = manifest.join("tests/golden/nameko.rs");
    let tmp = TempDir::new("golden");
    configure()
        .out_dir(tmp.path())
        .emit_rerun_if_changed(false)
        .compile(&[proto_dir.join("example.proto")], &[&proto_dir])
        .unwrap();
    let generated = fs::read_to_string(tmp.path().join("nameko.rs")).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::create_dir_all(golden_path.parent().unwrap()).unwrap();
        fs::write(&golden_path, &generated).unwrap();
    }
    let golden = fs::read_to_string(&golden_path).unwrap_or_default();
    if generated != golden {
        let first_diff = generated
            .lines()
            .zip(golden.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| generated.lines().count().min(golden.lines().count()));
        panic!(
            "generated code differs from {} from line {} on (UPDATE_GOLDEN=1 rewrites it):\n{}",
            golden_path.display(),
            first_diff + 1,
            generated
        );
    }
}

#[test]
fn watches_protos_imports_and_include_dirs() {
    let tmp = TempDir::new("watched");
    let proto_dir = tmp.path().join("proto");
    fs::create_dir_all(proto_dir.join("dep")).unwrap();
    fs::write(
        proto_dir.join("main.proto"),
        "syntax = \"proto3\"; package w; import \"dep/dep.proto\"; \
         import \"google/protobuf/empty.proto\"; message Main { w.dep.Dep d = 1; }",
    )
    .unwrap();
    fs::write(
        proto_dir.join("dep/dep.proto"),
        "syntax = \"proto3\"; package w.dep; message Dep {}",
    )
    .unwrap();
    let mut watched = crate::builder::Watched::default();
    configure()
        .out_dir(tmp.path().join("out"))
        .compile_watching(
            &[proto_dir.join("main.proto").as_path()],
            &[proto_dir.as_path()],
            &mut watched,
        )
        .unwrap();
    // Built-in google/protobuf files have no path to watch.
    assert_eq!(
        watched.paths,
        [
            proto_dir.clone(),
            proto_dir.join("main.proto"),
            proto_dir.join("dep/dep.proto"),
        ]
    );
}

/// The library ships the code of its own services (health, reflection)
/// pre-generated in `src/services/generated/`, so that its users never
/// compile those protos. This regenerates it from `src/services/proto/` and
/// fails on any difference; `UPDATE_GOLDEN=1` rewrites it.
#[test]
fn pregenerated_library_services_are_current() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = manifest.join("../src/services/proto");
    let generated_dir = manifest.join("../src/services/generated");
    let protos = [
        "grpc/health/v1/health.proto",
        "grpc/reflection/v1/reflection.proto",
        "grpc/reflection/v1alpha/reflection.proto",
    ];
    let tmp = TempDir::new("pregenerated");
    configure()
        .out_dir(tmp.path())
        .emit_rerun_if_changed(false)
        .compile(&protos, &[&proto_dir])
        .unwrap();
    let mut stale = Vec::new();
    for package in [
        "grpc.health.v1",
        "grpc.reflection.v1",
        "grpc.reflection.v1alpha",
    ] {
        let name = format!("{package}.rs");
        let generated = fs::read_to_string(tmp.path().join(&name)).unwrap();
        let shipped_path = generated_dir.join(&name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            fs::create_dir_all(&generated_dir).unwrap();
            fs::write(&shipped_path, &generated).unwrap();
        }
        let shipped = fs::read_to_string(&shipped_path).unwrap_or_default();
        if generated != shipped {
            stale.push(shipped_path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "pre-generated code differs from what the generator writes now: {stale:?} \
         (UPDATE_GOLDEN=1 cargo test -p grpc-blocking-codegen rewrites it)"
    );
}
