//! Turns one prost-build [`Service`] into Rust code: the sync service trait,
//! the `XxxServer<T>` adapter and the blocking `XxxClient`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use heck::ToUpperCamelCase;
use proc_macro2::{Ident, TokenStream};
use prost_build::{Comments, Method, Service};
use quote::quote;

use crate::Error;

/// Which halves of the service code to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// The service trait and the `XxxServer<T>` adapter.
    pub(crate) server: bool,
    /// The `XxxClient`.
    pub(crate) client: bool,
}

/// Names of the client's own functions and constants: an rpc whose
/// snake_case name is one of these gets its client functions prefixed with
/// `call_` (`Connect` -> `call_connect`, `call_connect_with`, ...).
const RESERVED_CLIENT_NAMES: &[&str] = &["new", "connect", "connect_lazy", "channel", "clone"];

/// The [`prost_build::ServiceGenerator`] of this crate.
///
/// `generate` cannot return an error, so errors are collected in `errors`,
/// which the builder checks once prost-build is done.
pub(crate) struct Generator {
    options: Options,
    /// Per proto package: the Rust type names already in the package module
    /// (messages, enums, items generated for earlier services), each with a
    /// description of what took it.
    taken: HashMap<String, BTreeMap<String, String>>,
    errors: Rc<RefCell<Vec<Error>>>,
}

impl Generator {
    /// A generator for the files of `fds`, reporting into `errors`.
    pub(crate) fn new(
        options: Options,
        fds: &prost_types::FileDescriptorSet,
        errors: Rc<RefCell<Vec<Error>>>,
    ) -> Self {
        let mut taken: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for file in &fds.file {
            let names = taken.entry(file.package().to_owned()).or_default();
            for message in &file.message_type {
                names.insert(
                    message.name().to_upper_camel_case(),
                    format!("message `{}`", message.name()),
                );
            }
            for enumeration in &file.enum_type {
                names.insert(
                    enumeration.name().to_upper_camel_case(),
                    format!("enum `{}`", enumeration.name()),
                );
            }
        }
        Generator {
            options,
            taken,
            errors,
        }
    }

    /// Records the Rust type names `service` generates in its package,
    /// failing if one is already taken.
    fn claim_names(&mut self, service: &Service, names: &ServiceNames) -> Result<(), Error> {
        let taken = self.taken.entry(service.package.clone()).or_default();
        let mut wanted = Vec::new();
        if self.options.server {
            wanted.push(names.trait_name.to_string());
            wanted.push(names.server_name.to_string());
        }
        if self.options.client {
            wanted.push(names.client_name.to_string());
        }
        for name in &wanted {
            if let Some(owner) = taken.get(name) {
                return Err(service_error(
                    service,
                    format!(
                        "the generated Rust item `{name}` would collide with {owner} of the same package"
                    ),
                ));
            }
        }
        for name in wanted {
            taken.insert(
                name,
                format!("the code of service `{}`", service.proto_name),
            );
        }
        Ok(())
    }
}

impl prost_build::ServiceGenerator for Generator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let result = ServiceNames::new(&service)
            .and_then(|names| self.claim_names(&service, &names))
            .and_then(|()| generate_service(&service, self.options));
        match result {
            Ok(code) => buf.push_str(&code),
            Err(error) => self.errors.borrow_mut().push(error),
        }
    }
}

/// Generates the formatted Rust code for one service.
pub(crate) fn generate_service(service: &Service, options: Options) -> Result<String, Error> {
    let tokens = service_tokens(service, options)?;
    let file = syn::parse2::<syn::File>(tokens).map_err(|e| {
        service_error(
            service,
            format!("internal error: generated code does not parse: {e}"),
        )
    })?;
    Ok(prettyplease::unparse(&file))
}

/// The shape of a method: whether requests and replies are streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

impl Kind {
    fn of(method: &Method) -> Kind {
        match (method.client_streaming, method.server_streaming) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStreaming,
            (true, false) => Kind::ClientStreaming,
            (true, true) => Kind::Bidi,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Unary => "unary request, unary reply",
            Kind::ServerStreaming => "unary request, stream of replies",
            Kind::ClientStreaming => "stream of requests, unary reply",
            Kind::Bidi => "stream of requests, stream of replies",
        }
    }
}

/// The Rust type names generated for a service.
struct ServiceNames {
    trait_name: Ident,
    server_name: Ident,
    client_name: Ident,
}

impl ServiceNames {
    fn new(service: &Service) -> Result<Self, Error> {
        // prost-build gives the UpperCamel name, sanitized (`Self` -> `Self_`).
        let base = service.name.strip_suffix('_').unwrap_or(&service.name);
        Ok(ServiceNames {
            trait_name: ident(service, &service.name)?,
            server_name: ident(service, &format!("{base}Server"))?,
            client_name: ident(service, &format!("{base}Client"))?,
        })
    }
}

/// One rpc with every Rust name and type derived from it.
struct Rpc<'a> {
    method: &'a Method,
    kind: Kind,
    /// The wire path, `/package.Service/Method`.
    path: String,
    trait_fn: Ident,
    client_fn: Ident,
    client_with: Ident,
    client_sender: Ident,
    path_const: Ident,
    /// The proto-derived name the client functions would have had, when they
    /// were renamed to dodge one of the client's own functions.
    renamed_from: Option<String>,
    input: syn::Type,
    output: syn::Type,
}

impl<'a> Rpc<'a> {
    fn new(service: &Service, full_name: &str, method: &'a Method) -> Result<Self, Error> {
        // prost-build gives the snake_case name, sanitized: `r#type`, `self_`.
        let base = method.name.strip_prefix("r#").unwrap_or(&method.name);
        let (client_base, renamed_from) = if RESERVED_CLIENT_NAMES.contains(&base) {
            (format!("call_{base}"), Some(base.to_owned()))
        } else {
            (base.to_owned(), None)
        };
        let client_fn = if renamed_from.is_some() {
            client_base.clone()
        } else {
            method.name.clone()
        };
        let const_base = base.trim_end_matches('_').to_uppercase();
        Ok(Rpc {
            method,
            kind: Kind::of(method),
            path: format!("/{full_name}/{}", method.proto_name),
            trait_fn: ident(service, &method.name)?,
            client_fn: ident(service, &client_fn)?,
            client_with: ident(service, &suffixed(&client_base, "with"))?,
            client_sender: ident(service, &suffixed(&client_base, "sender"))?,
            path_const: ident(service, &suffixed(&const_base, "PATH"))?,
            renamed_from,
            input: rust_type(service, method, &method.input_type)?,
            output: rust_type(service, method, &method.output_type)?,
        })
    }

    /// Whether the client gets a `_sender` function for this rpc.
    fn has_sender(&self) -> bool {
        matches!(self.kind, Kind::ClientStreaming | Kind::Bidi)
    }
}

/// Method names clippy judges by their name alone (`new`, `from_*`,
/// `into_*`, ... and the methods of std traits): the proto dictates them, so
/// lints about them are allowed on the items that have such methods.
const NAME_PREFIXES_CLIPPY_JUDGES: &[&str] = &["as_", "from_", "into_", "is_", "to_"];
const NAMES_CLIPPY_JUDGES: &[&str] = &[
    "new",
    "add",
    "as_mut",
    "as_ref",
    "bitand",
    "bitor",
    "bitxor",
    "borrow",
    "borrow_mut",
    "clone",
    "cmp",
    "default",
    "deref",
    "deref_mut",
    "div",
    "drop",
    "eq",
    "from_iter",
    "from_str",
    "hash",
    "index",
    "index_mut",
    "into_iter",
    "mul",
    "neg",
    "next",
    "not",
    "rem",
    "shl",
    "shr",
    "sub",
];

/// `#[allow]` for the clippy lints on method names, if one of `names` may
/// trigger them.
fn allow_name_lints<'a>(names: impl IntoIterator<Item = &'a Ident>) -> TokenStream {
    let judged = names.into_iter().any(|name| {
        let name = name.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name);
        NAMES_CLIPPY_JUDGES.contains(&name)
            || NAME_PREFIXES_CLIPPY_JUDGES
                .iter()
                .any(|prefix| name.starts_with(prefix))
    });
    if judged {
        quote! {
            #[allow(
                clippy::new_ret_no_self,
                clippy::should_implement_trait,
                clippy::wrong_self_convention
            )]
        }
    } else {
        TokenStream::new()
    }
}

/// `base_suffix`, without doubling an underscore that sanitizing added.
fn suffixed(base: &str, suffix: &str) -> String {
    if base.is_empty() || base.ends_with('_') {
        format!("{base}{suffix}")
    } else {
        format!("{base}_{suffix}")
    }
}

fn ident(service: &Service, name: &str) -> Result<Ident, Error> {
    syn::parse_str::<Ident>(name).map_err(|e| {
        service_error(
            service,
            format!("`{name}` is not a valid Rust identifier: {e}"),
        )
    })
}

fn rust_type(service: &Service, method: &Method, path: &str) -> Result<syn::Type, Error> {
    syn::parse_str::<syn::Type>(path).map_err(|e| {
        service_error(
            service,
            format!(
                "method `{}`: `{path}` is not a valid Rust type: {e}",
                method.proto_name
            ),
        )
    })
}

fn full_name(service: &Service) -> String {
    if service.package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{}.{}", service.package, service.proto_name)
    }
}

fn service_error(service: &Service, message: String) -> Error {
    Error::Service {
        service: full_name(service),
        message,
    }
}

/// Fails when two rpcs would generate the same Rust item.
fn check_collisions(service: &Service, rpcs: &[Rpc<'_>], options: Options) -> Result<(), Error> {
    if options.server {
        let mut trait_fns: BTreeMap<String, &str> = BTreeMap::new();
        for rpc in rpcs {
            if let Some(other) = trait_fns.insert(rpc.trait_fn.to_string(), &rpc.method.proto_name)
            {
                return Err(service_error(
                    service,
                    format!(
                        "methods `{other}` and `{}` both map to the Rust name `{}`",
                        rpc.method.proto_name, rpc.trait_fn
                    ),
                ));
            }
        }
    }
    if options.client {
        let mut items: BTreeMap<String, String> = BTreeMap::new();
        for fixed in RESERVED_CLIENT_NAMES.iter().chain(&["SERVICE_NAME"]) {
            items.insert((*fixed).to_owned(), "the client itself".to_owned());
        }
        for rpc in rpcs {
            let owner = format!("method `{}`", rpc.method.proto_name);
            let mut names = vec![&rpc.client_fn, &rpc.client_with, &rpc.path_const];
            if rpc.has_sender() {
                names.push(&rpc.client_sender);
            }
            for name in names {
                if let Some(other) = items.insert(name.to_string(), owner.clone()) {
                    return Err(service_error(
                        service,
                        format!("the client item `{name}` of {owner} collides with one of {other}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn service_tokens(service: &Service, options: Options) -> Result<TokenStream, Error> {
    let full_name = full_name(service);
    let names = ServiceNames::new(service)?;
    let rpcs = service
        .methods
        .iter()
        .map(|method| Rpc::new(service, &full_name, method))
        .collect::<Result<Vec<_>, _>>()?;
    check_collisions(service, &rpcs, options)?;

    let mut tokens = TokenStream::new();
    if options.server {
        tokens.extend(server_tokens(service, &full_name, &names, &rpcs, options));
    }
    if options.client {
        tokens.extend(client_tokens(service, &full_name, &names, &rpcs));
    }
    Ok(tokens)
}

fn server_tokens(
    service: &Service,
    full_name: &str,
    names: &ServiceNames,
    rpcs: &[Rpc<'_>],
    options: Options,
) -> TokenStream {
    let ServiceNames {
        trait_name,
        server_name,
        ..
    } = names;
    // The type parameter of the adapter must not shadow the trait.
    let t = if trait_name == "T" {
        Ident::new("S", proc_macro2::Span::call_site())
    } else {
        Ident::new("T", proc_macro2::Span::call_site())
    };

    let server_link = format!("[`{server_name}`]");
    let trait_doc = if options.client {
        format!(
            "The `{full_name}` service: implement this trait and serve it with {server_link}; \
             [`{}`] calls it.",
            names.client_name
        )
    } else {
        format!("The `{full_name}` service: implement this trait and serve it with {server_link}.")
    };
    let trait_docs = docs(&service.comments, &[trait_doc]);

    let trait_methods = rpcs.iter().map(|rpc| {
        let name = &rpc.trait_fn;
        let input = &rpc.input;
        let output = &rpc.output;
        let mut generated = vec![format!("Handles `{}`: {}.", rpc.path, rpc.kind.describe())];
        match rpc.kind {
            Kind::Unary | Kind::ClientStreaming => {}
            Kind::ServerStreaming | Kind::Bidi => generated.push(
                "Send the replies with `responses.send(..)`; returning `Ok(())` ends the call \
                 with status OK."
                    .to_owned(),
            ),
        }
        let method_docs = docs(&rpc.method.comments, &generated);
        match rpc.kind {
            Kind::Unary => quote! {
                #method_docs
                fn #name(
                    &self,
                    request: #input,
                    ctx: &::grpc_blocking::server::ServerContext,
                ) -> ::core::result::Result<#output, ::grpc_blocking::Status>;
            },
            Kind::ServerStreaming => quote! {
                #method_docs
                fn #name(
                    &self,
                    request: #input,
                    ctx: &::grpc_blocking::server::ServerContext,
                    responses: &mut ::grpc_blocking::server::ResponseSink<#output>,
                ) -> ::core::result::Result<(), ::grpc_blocking::Status>;
            },
            Kind::ClientStreaming => quote! {
                #method_docs
                fn #name(
                    &self,
                    requests: ::grpc_blocking::server::Requests<#input>,
                    ctx: &::grpc_blocking::server::ServerContext,
                ) -> ::core::result::Result<#output, ::grpc_blocking::Status>;
            },
            Kind::Bidi => quote! {
                #method_docs
                fn #name(
                    &self,
                    requests: ::grpc_blocking::server::Requests<#input>,
                    ctx: &::grpc_blocking::server::ServerContext,
                    responses: &mut ::grpc_blocking::server::ResponseSink<#output>,
                ) -> ::core::result::Result<(), ::grpc_blocking::Status>;
            },
        }
    });

    let server_docs = docs(
        &Comments::default(),
        &[format!(
            "The server side of [`{trait_name}`]: serves an implementation as \
             `{full_name}`; pass it to `ServerBuilder::add_service`."
        )],
    );
    let new_docs = docs(
        &Comments::default(),
        &["Wraps `inner`, ready to be added to a server.".to_owned()],
    );
    let from_arc_docs = docs(
        &Comments::default(),
        &[
            "Wraps an implementation that is already shared, e.g. one the application keeps \
           a handle to."
                .to_owned(),
        ],
    );
    let server_name_str = server_name.to_string();

    let proto_names = rpcs.iter().map(|rpc| &rpc.method.proto_name);
    let unary_names = rpcs
        .iter()
        .filter(|rpc| rpc.kind == Kind::Unary)
        .map(|rpc| &rpc.method.proto_name);
    let dispatch = if rpcs.is_empty() {
        quote! {
            let _ = method;
            call.unimplemented();
        }
    } else {
        let arms = rpcs.iter().map(|rpc| {
            let proto_name = &rpc.method.proto_name;
            let name = &rpc.trait_fn;
            match rpc.kind {
                Kind::Unary => quote! {
                    #proto_name => ::grpc_blocking::server::unary(call, |request, ctx| {
                        #t::#name(&self.inner, request, ctx)
                    }),
                },
                Kind::ServerStreaming => quote! {
                    #proto_name => ::grpc_blocking::server::server_streaming(
                        call,
                        |request, ctx, responses| {
                            #t::#name(&self.inner, request, ctx, responses)
                        },
                    ),
                },
                Kind::ClientStreaming => quote! {
                    #proto_name => ::grpc_blocking::server::client_streaming(
                        call,
                        |requests, ctx| #t::#name(&self.inner, requests, ctx),
                    ),
                },
                Kind::Bidi => quote! {
                    #proto_name => ::grpc_blocking::server::bidi_streaming(
                        call,
                        |requests, ctx, responses| {
                            #t::#name(&self.inner, requests, ctx, responses)
                        },
                    ),
                },
            }
        });
        quote! {
            match method {
                #(#arms)*
                _ => call.unimplemented(),
            }
        }
    };

    let trait_allow = allow_name_lints(rpcs.iter().map(|rpc| &rpc.trait_fn));

    quote! {
        #trait_docs
        #trait_allow
        pub trait #trait_name: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#trait_methods)*
        }

        #server_docs
        pub struct #server_name<#t> {
            inner: ::std::sync::Arc<#t>,
        }

        impl<#t: #trait_name> #server_name<#t> {
            #new_docs
            pub fn new(inner: #t) -> Self {
                Self::from_arc(::std::sync::Arc::new(inner))
            }

            #from_arc_docs
            pub fn from_arc(inner: ::std::sync::Arc<#t>) -> Self {
                Self { inner }
            }
        }

        impl<#t> ::core::clone::Clone for #server_name<#t> {
            fn clone(&self) -> Self {
                Self {
                    inner: ::std::sync::Arc::clone(&self.inner),
                }
            }
        }

        impl<#t> ::core::fmt::Debug for #server_name<#t> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#server_name_str).finish_non_exhaustive()
            }
        }

        impl<#t: #trait_name> ::grpc_blocking::server::Service for #server_name<#t> {
            fn name(&self) -> &'static str {
                #full_name
            }

            fn methods(&self) -> &'static [&'static str] {
                &[#(#proto_names),*]
            }

            fn unary_methods(&self) -> &'static [&'static str] {
                &[#(#unary_names),*]
            }

            fn call(&self, method: &str, call: ::grpc_blocking::server::ServerCall) {
                #dispatch
            }
        }
    }
}

fn client_tokens(
    service: &Service,
    full_name: &str,
    names: &ServiceNames,
    rpcs: &[Rpc<'_>],
) -> TokenStream {
    let client_name = &names.client_name;
    let client_docs = docs(
        &service.comments,
        &[format!(
            "Blocking client for `{full_name}`. Cheap to clone; share it between threads."
        )],
    );
    let plain = |lines: &[&str]| {
        docs(
            &Comments::default(),
            &lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>(),
        )
    };
    let service_name_docs = plain(&[&format!(
        "The full name of the service, `{full_name}`, as used in wire paths."
    )]);
    let new_docs = plain(&["Creates a client that sends its calls over `channel`."]);
    let connect_docs = plain(&[
        "Connects to `uri` (e.g. `http://127.0.0.1:50051`) and returns a client using that \
         connection.",
    ]);
    let connect_lazy_docs = plain(&[
        "Creates a client for `uri` that connects on its first call, so that a server that is \
         not up yet is no error here.",
    ]);
    let channel_docs = plain(&["The channel this client sends its calls over."]);

    let path_consts = rpcs.iter().map(|rpc| {
        let name = &rpc.path_const;
        let path = &rpc.path;
        let const_docs = plain(&[&format!(
            "The wire path of `{}`: `{path}`.",
            rpc.method.proto_name
        )]);
        quote! {
            #const_docs
            pub const #name: &'static str = #path;
        }
    });

    let iter = iter_param(rpcs);
    let client_allow = allow_name_lints(
        rpcs.iter()
            .flat_map(|rpc| [&rpc.client_fn, &rpc.client_with, &rpc.client_sender]),
    );
    let methods = rpcs.iter().map(|rpc| client_method_tokens(rpc, &iter));

    quote! {
        #client_docs
        #[derive(Clone, Debug)]
        pub struct #client_name {
            channel: ::grpc_blocking::Channel,
        }

        #client_allow
        impl #client_name {
            #service_name_docs
            pub const SERVICE_NAME: &'static str = #full_name;

            #(#path_consts)*

            #new_docs
            pub fn new(channel: ::grpc_blocking::Channel) -> Self {
                Self { channel }
            }

            #connect_docs
            pub fn connect(
                uri: &str,
            ) -> ::core::result::Result<Self, ::grpc_blocking::TransportError> {
                ::grpc_blocking::Channel::connect(uri).map(Self::new)
            }

            #connect_lazy_docs
            pub fn connect_lazy(
                uri: &str,
            ) -> ::core::result::Result<Self, ::grpc_blocking::TransportError> {
                ::grpc_blocking::Channel::lazy(uri).map(Self::new)
            }

            #channel_docs
            pub fn channel(&self) -> &::grpc_blocking::Channel {
                &self.channel
            }

            #(#methods)*
        }
    }
}

/// The name of the client's iterator type parameter: `I`, unless a message
/// type of the service is called that.
fn iter_param(rpcs: &[Rpc<'_>]) -> Ident {
    let used: Vec<String> = rpcs
        .iter()
        .flat_map(|rpc| [&rpc.input, &rpc.output])
        .map(|ty| quote!(#ty).to_string())
        .collect();
    let name = ["I", "Iter", "RequestIter"]
        .into_iter()
        .find(|candidate| !used.iter().any(|u| u == candidate))
        .unwrap_or("RequestsIntoIter");
    Ident::new(name, proc_macro2::Span::call_site())
}

fn client_method_tokens(rpc: &Rpc<'_>, iter: &Ident) -> TokenStream {
    let Rpc {
        path,
        path_const,
        client_fn,
        client_with,
        client_sender,
        input,
        output,
        ..
    } = rpc;
    let fn_name = client_fn.to_string();
    let mut main_doc = vec![format!("Calls `{path}`: {}.", rpc.kind.describe())];
    main_doc.push(match rpc.kind {
        Kind::Unary => format!(
            "Waits for the reply; `{client_with}` takes call options and returns a handle \
                 to the call instead."
        ),
        Kind::ServerStreaming => format!(
            "Iterate the returned stream for the replies; dropping it early cancels the \
                 call. `{client_with}` takes call options."
        ),
        Kind::ClientStreaming => format!(
            "Sends `requests` from the calling thread, then waits for the reply. \
                 `{client_with}` sends from a helper thread and takes call options; \
                 `{client_sender}` returns a sink to send requests on."
        ),
        Kind::Bidi => format!(
            "Sends `requests` from a helper thread while the returned stream yields the \
                 replies; dropping the stream early cancels the call. `{client_with}` takes \
                 call options; `{client_sender}` returns a sink to send requests on."
        ),
    });
    if let Some(original) = &rpc.renamed_from {
        main_doc.push(format!(
            "Named `{fn_name}` rather than `{original}`, which the client itself defines."
        ));
    }
    let main_docs = docs(&rpc.method.comments, &main_doc);
    let with_docs = docs(
        &Comments::default(),
        &[match rpc.kind {
            Kind::Unary => format!(
                "Starts a call to `{path}` with `options` (metadata, timeout, ...) and returns \
                 a handle to it: `wait()` on it for the reply."
            ),
            Kind::ServerStreaming => format!(
                "Calls `{path}` with `options` (metadata, timeout, ...); iterate the returned \
                 stream for the replies."
            ),
            Kind::ClientStreaming => format!(
                "Starts a call to `{path}` with `options` (metadata, timeout, ...), sending \
                 `requests` from a helper thread, and returns a handle to it: `wait()` on it \
                 for the reply."
            ),
            Kind::Bidi => format!(
                "Calls `{path}` with `options` (metadata, timeout, ...), sending `requests` from \
                 a helper thread; iterate the returned stream for the replies."
            ),
        }],
    );
    let sender_docs = docs(
        &Comments::default(),
        &[match rpc.kind {
            Kind::Bidi => format!(
                "Starts a call to `{path}` with `options` and returns a sink to send the \
                 requests on and the stream of replies; finish the sink to end the requests."
            ),
            _ => format!(
                "Starts a call to `{path}` with `options` and returns a sink to send the \
                 requests on and a handle to wait on for the reply; finish the sink to end the \
                 requests."
            ),
        }],
    );

    match rpc.kind {
        Kind::Unary => quote! {
            #main_docs
            pub fn #client_fn(
                &self,
                request: #input,
            ) -> ::core::result::Result<#output, ::grpc_blocking::Status> {
                self.#client_with(request, ::grpc_blocking::CallOptions::default()).wait()
            }

            #with_docs
            pub fn #client_with(
                &self,
                request: #input,
                options: ::grpc_blocking::CallOptions,
            ) -> ::grpc_blocking::UnaryCall<#output> {
                self.channel.unary(Self::#path_const, request, options)
            }
        },
        Kind::ServerStreaming => quote! {
            #main_docs
            pub fn #client_fn(&self, request: #input) -> ::grpc_blocking::Streaming<#output> {
                self.#client_with(request, ::grpc_blocking::CallOptions::default())
            }

            #with_docs
            pub fn #client_with(
                &self,
                request: #input,
                options: ::grpc_blocking::CallOptions,
            ) -> ::grpc_blocking::Streaming<#output> {
                self.channel.server_streaming(Self::#path_const, request, options)
            }
        },
        Kind::ClientStreaming => quote! {
            #main_docs
            pub fn #client_fn<#iter>(
                &self,
                requests: #iter,
            ) -> ::core::result::Result<#output, ::grpc_blocking::Status>
            where
                #iter: ::core::iter::IntoIterator<Item = #input>,
            {
                self.channel.client_streaming_blocking(
                    Self::#path_const,
                    requests,
                    ::grpc_blocking::CallOptions::default(),
                )
            }

            #with_docs
            pub fn #client_with<#iter>(
                &self,
                requests: #iter,
                options: ::grpc_blocking::CallOptions,
            ) -> ::grpc_blocking::UnaryCall<#output>
            where
                #iter: ::core::iter::IntoIterator<Item = #input> + ::core::marker::Send + 'static,
                #iter::IntoIter: ::core::marker::Send,
            {
                self.channel.client_streaming(Self::#path_const, requests, options)
            }

            #sender_docs
            pub fn #client_sender(
                &self,
                options: ::grpc_blocking::CallOptions,
            ) -> (
                ::grpc_blocking::RequestSink<#input>,
                ::grpc_blocking::UnaryCall<#output>,
            ) {
                self.channel.client_streaming_sender(Self::#path_const, options)
            }
        },
        Kind::Bidi => quote! {
            #main_docs
            pub fn #client_fn<#iter>(&self, requests: #iter) -> ::grpc_blocking::Streaming<#output>
            where
                #iter: ::core::iter::IntoIterator<Item = #input> + ::core::marker::Send + 'static,
                #iter::IntoIter: ::core::marker::Send,
            {
                self.#client_with(requests, ::grpc_blocking::CallOptions::default())
            }

            #with_docs
            pub fn #client_with<#iter>(
                &self,
                requests: #iter,
                options: ::grpc_blocking::CallOptions,
            ) -> ::grpc_blocking::Streaming<#output>
            where
                #iter: ::core::iter::IntoIterator<Item = #input> + ::core::marker::Send + 'static,
                #iter::IntoIter: ::core::marker::Send,
            {
                self.channel.bidi_streaming(Self::#path_const, requests, options)
            }

            #sender_docs
            pub fn #client_sender(
                &self,
                options: ::grpc_blocking::CallOptions,
            ) -> (
                ::grpc_blocking::RequestSink<#input>,
                ::grpc_blocking::Streaming<#output>,
            ) {
                self.channel.bidi_streaming_sender(Self::#path_const, options)
            }
        },
    }
}

/// The doc comment lines of a proto element, escaped by prost-build the way
/// it escapes message docs (links, brackets; code blocks are already made
/// non-doctests by its `cleanup-markdown` feature).
pub(crate) fn proto_doc_lines(comments: &Comments) -> Vec<String> {
    let without_detached = Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    let mut buf = String::new();
    without_detached.append_with_indent(0, &mut buf);
    let mut lines: Vec<String> = buf
        .lines()
        .map(|line| line.strip_prefix("///").unwrap_or(line).to_owned())
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let leading_blank = lines.iter().take_while(|l| l.trim().is_empty()).count();
    lines.drain(..leading_blank);
    lines
}

/// `#[doc]` attributes: the proto comments, a blank line, then `generated`
/// (one paragraph per entry).
fn docs(comments: &Comments, generated: &[String]) -> TokenStream {
    let mut lines = proto_doc_lines(comments);
    for paragraph in generated {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.push(format!(" {paragraph}"));
    }
    quote! { #(#[doc = #lines])* }
}
