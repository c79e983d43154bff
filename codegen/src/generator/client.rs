//! The client half of a service: `XxxClient`, a blocking client over a
//! `grpc_blocking::Channel` with, per rpc, a plain call, a `_with` call that
//! takes `CallOptions` (and blocks or streams exactly like the plain one),
//! a non-blocking `_start` for rpcs whose plain call blocks for one reply,
//! and a `_sender` for rpcs that stream requests.

use proc_macro2::{Ident, TokenStream};
use prost_build::Service;
use quote::quote;

use crate::generator::docs::{docs, plain_docs};
use crate::generator::names::{allow_name_lints, Kind, Rpc, ServiceNames};

pub(crate) fn client_tokens(
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
    let service_name_docs = plain_docs(&[&format!(
        "The full name of the service, `{full_name}`, as used in wire paths."
    )]);
    let new_docs = plain_docs(&["Creates a client that sends its calls over `channel`."]);
    let connect_docs = plain_docs(&[
        "Connects to `target` (`\"http://127.0.0.1:50051\"`, `\"host:port\"`, or a \
         `SocketAddr`) and returns a client using that connection.",
    ]);
    let connect_lazy_docs = plain_docs(&[
        "Creates a client for `target` that connects on its first call, so that a server that \
         is not up yet is no error here.",
    ]);
    let channel_docs = plain_docs(&["The channel this client sends its calls over."]);

    let path_consts = rpcs.iter().map(|rpc| {
        let name = &rpc.path_const;
        let path = &rpc.path;
        let const_docs = plain_docs(&[&format!(
            "The wire path of `{}`: `{path}`.",
            rpc.method.proto_name
        )]);
        quote! {
            #const_docs
            pub const #name: &'static str = #path;
        }
    });

    let iter = iter_param(rpcs);
    let client_allow = allow_name_lints(rpcs.iter().flat_map(|rpc| {
        [
            &rpc.client_fn,
            &rpc.client_with,
            &rpc.client_start,
            &rpc.client_sender,
        ]
    }));
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
                target: impl ::grpc_blocking::IntoTarget,
            ) -> ::core::result::Result<Self, ::grpc_blocking::TransportError> {
                ::grpc_blocking::Channel::connect(target).map(Self::new)
            }

            #connect_lazy_docs
            pub fn connect_lazy(
                target: impl ::grpc_blocking::IntoTarget,
            ) -> ::core::result::Result<Self, ::grpc_blocking::TransportError> {
                ::grpc_blocking::Channel::connect_lazy(target).map(Self::new)
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

/// The generated functions of one rpc.
fn client_method_tokens(rpc: &Rpc<'_>, iter: &Ident) -> TokenStream {
    let Rpc {
        path,
        path_const,
        client_fn,
        client_with,
        client_start,
        client_sender,
        input,
        output,
        ..
    } = rpc;
    let options = quote!(options: ::grpc_blocking::CallOptions);
    let status = quote!(::grpc_blocking::Status);
    // The plain call's request parameter, generics and bounds; what it
    // returns; and the channel method its `_with` form calls.
    let iter_bound = quote!(#iter: ::core::iter::IntoIterator<Item = #input>);
    let send_bound = quote! {
        #iter: ::core::iter::IntoIterator<Item = #input> + ::core::marker::Send + 'static,
        #iter::IntoIter: ::core::marker::Send,
    };
    let single = (quote!(request: #input), quote!(request), quote!(), quote!());
    let stream = |bound: &TokenStream| {
        (
            quote!(requests: #iter),
            quote!(requests),
            quote!(<#iter>),
            quote!(where #bound),
        )
    };
    let ((param, arg, generics, bounds), returns, channel_fn) = match rpc.kind {
        Kind::Unary => (
            single,
            quote!(::core::result::Result<#output, #status>),
            quote!(unary),
        ),
        Kind::ServerStreaming => (
            single,
            quote!(::grpc_blocking::Streaming<#output>),
            quote!(server_streaming),
        ),
        Kind::ClientStreaming => (
            stream(&iter_bound),
            quote!(::core::result::Result<#output, #status>),
            quote!(client_streaming),
        ),
        Kind::Bidi => (
            stream(&send_bound),
            quote!(::grpc_blocking::Streaming<#output>),
            quote!(bidi_streaming),
        ),
    };
    let main_docs = docs(&rpc.method.comments, &main_doc(rpc));
    let with_docs = plain_docs(&[&format!(
        "`{client_fn}` with call `options` (metadata, timeout, compression, ...): it {} exactly \
         as `{client_fn}` does.",
        match rpc.kind {
            Kind::Unary | Kind::ClientStreaming => "blocks",
            Kind::ServerStreaming | Kind::Bidi => "streams",
        }
    )]);
    let mut tokens = quote! {
        #main_docs
        pub fn #client_fn #generics(&self, #param) -> #returns #bounds {
            self.#client_with(#arg, ::grpc_blocking::CallOptions::default())
        }

        #with_docs
        pub fn #client_with #generics(&self, #param, #options) -> #returns #bounds {
            self.channel.#channel_fn(Self::#path_const, #arg, options)
        }
    };
    if rpc.has_start() {
        let start_docs = plain_docs(&[&format!(
            "Starts a call to `{path}` with `options` and returns a handle to it at once: do \
             other work, then `wait()` on it for the reply (or `wait_response()` for the reply \
             with the response's metadata). Dropping the handle cancels the call.{}",
            if rpc.kind == Kind::ClientStreaming {
                " A helper thread sends `requests`."
            } else {
                ""
            }
        )]);
        let (start_generics, start_bounds, start_fn) = match rpc.kind {
            Kind::ClientStreaming => (
                quote!(<#iter>),
                quote!(where #send_bound),
                quote!(client_streaming_start),
            ),
            _ => (quote!(), quote!(), quote!(unary_start)),
        };
        tokens.extend(quote! {
            #start_docs
            pub fn #client_start #start_generics(
                &self,
                #param,
                #options,
            ) -> ::grpc_blocking::UnaryCall<#output> #start_bounds {
                self.channel.#start_fn(Self::#path_const, #arg, options)
            }
        });
    }
    if rpc.has_sender() {
        let (sender_fn, response, what) = match rpc.kind {
            Kind::Bidi => (
                quote!(bidi_streaming_sender),
                quote!(::grpc_blocking::Streaming<#output>),
                "the stream of replies",
            ),
            _ => (
                quote!(client_streaming_sender),
                quote!(::grpc_blocking::UnaryCall<#output>),
                "a handle to wait on for the reply",
            ),
        };
        let sender_docs = plain_docs(&[&format!(
            "Starts a call to `{path}` with `options` and returns a sink to send the requests on \
             and {what}; finish (or drop) the sink to end the requests."
        )]);
        tokens.extend(quote! {
            #sender_docs
            pub fn #client_sender(
                &self,
                #options,
            ) -> (::grpc_blocking::RequestSink<#input>, #response) {
                self.channel.#sender_fn(Self::#path_const, options)
            }
        });
    }
    tokens
}

/// The doc paragraphs of an rpc's plain call.
fn main_doc(rpc: &Rpc<'_>) -> Vec<String> {
    let Rpc {
        path,
        client_fn,
        client_with,
        client_start,
        client_sender,
        ..
    } = rpc;
    let mut doc = vec![format!("Calls `{path}`: {}.", rpc.kind.describe())];
    doc.push(match rpc.kind {
        Kind::Unary => format!(
            "Waits for the reply. `{client_with}` takes call options; `{client_start}` starts the \
             call and returns at once."
        ),
        Kind::ServerStreaming => format!(
            "Iterate the returned stream for the replies; dropping it early cancels the call. \
             `{client_with}` takes call options."
        ),
        Kind::ClientStreaming => format!(
            "Sends `requests` from the calling thread, then waits for the reply. `{client_with}` \
             takes call options; `{client_start}` sends from a helper thread and returns at \
             once; `{client_sender}` returns a sink to send requests on."
        ),
        Kind::Bidi => format!(
            "Sends `requests` from a helper thread while the returned stream yields the replies; \
             dropping the stream early cancels the call. `{client_with}` takes call options; \
             `{client_sender}` returns a sink to send requests on."
        ),
    });
    if let Some(original) = &rpc.renamed_from {
        doc.push(format!(
            "Named `{client_fn}` rather than `{original}`, which the client itself defines."
        ));
    }
    doc
}
