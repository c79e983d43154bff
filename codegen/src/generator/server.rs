//! The server half of a service: the sync trait users implement, and the
//! `XxxServer<T>` adapter that dispatches calls to it.

use proc_macro2::{Ident, TokenStream};
use prost_build::{Comments, Service};
use quote::quote;

use crate::generator::docs::docs;
use crate::generator::names::{allow_name_lints, Kind, Rpc, ServiceNames};
use crate::generator::Options;

pub(crate) fn server_tokens(
    service: &Service,
    full_name: &str,
    names: &ServiceNames,
    rpcs: &[Rpc<'_>],
    options: Options,
    descriptors: &[Vec<u8>],
) -> TokenStream {
    let files = descriptors
        .iter()
        .map(|bytes| proc_macro2::Literal::byte_string(bytes));
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
        if options.default_stubs {
            generated.push(
                "Not overriding it answers `UNIMPLEMENTED` (the code was generated with default \
                 stubs)."
                    .to_owned(),
            );
        }
        let method_docs = docs(&rpc.method.comments, &generated);
        let ctx = quote!(ctx: &::grpc_blocking::server::ServerContext);
        let responses = quote!(responses: &mut ::grpc_blocking::server::ResponseSink<#output>);
        let requests = quote!(requests: ::grpc_blocking::server::Requests<#input>);
        let (params, args, reply) = match rpc.kind {
            Kind::Unary => (
                quote!(request: #input, #ctx),
                quote!(request, ctx),
                quote!(#output),
            ),
            Kind::ServerStreaming => (
                quote!(request: #input, #ctx, #responses),
                quote!(request, ctx, responses),
                quote!(()),
            ),
            Kind::ClientStreaming => (
                quote!(#requests, #ctx),
                quote!(requests, ctx),
                quote!(#output),
            ),
            Kind::Bidi => (
                quote!(#requests, #ctx, #responses),
                quote!(requests, ctx, responses),
                quote!(()),
            ),
        };
        let signature = quote! {
            fn #name(&self, #params) -> ::core::result::Result<#reply, ::grpc_blocking::Status>
        };
        if options.default_stubs {
            let message = format!("{} is not implemented by this server", rpc.path);
            quote! {
                #method_docs
                #signature {
                    let _ = (#args);
                    ::core::result::Result::Err(::grpc_blocking::Status::unimplemented(#message))
                }
            }
        } else {
            quote! {
                #method_docs
                #signature;
            }
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
    let server_streaming_names = rpcs
        .iter()
        .filter(|rpc| rpc.kind == Kind::ServerStreaming)
        .map(|rpc| &rpc.method.proto_name);
    let client_streaming_names = rpcs
        .iter()
        .filter(|rpc| rpc.kind == Kind::ClientStreaming)
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

            fn server_streaming_methods(&self) -> &'static [&'static str] {
                &[#(#server_streaming_names),*]
            }

            fn client_streaming_methods(&self) -> &'static [&'static str] {
                &[#(#client_streaming_names),*]
            }

            fn file_descriptors(&self) -> &'static [&'static [u8]] {
                &[#(#files),*]
            }

            fn call(&self, method: &str, call: ::grpc_blocking::server::ServerCall) {
                #dispatch
            }
        }
    }
}
