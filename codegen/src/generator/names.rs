//! Every Rust name the generator derives from a service and its methods,
//! and the checks that they neither collide with each other nor with the
//! generated client's own items.

use std::collections::BTreeMap;

use proc_macro2::{Ident, TokenStream};
use prost_build::{Method, Service};
use quote::quote;

use crate::generator::Options;
use crate::Error;

/// Names of the client's own functions and constants: an rpc whose
/// snake_case name is one of these gets its client functions prefixed with
/// `call_` (`Connect` -> `call_connect`, `call_connect_with`, ...).
pub(crate) const RESERVED_CLIENT_NAMES: &[&str] =
    &["new", "connect", "connect_lazy", "channel", "clone"];

/// The shape of a method: whether requests and replies are streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

impl Kind {
    pub(crate) fn of(method: &Method) -> Kind {
        match (method.client_streaming, method.server_streaming) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStreaming,
            (true, false) => Kind::ClientStreaming,
            (true, true) => Kind::Bidi,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::Unary => "unary request, unary reply",
            Kind::ServerStreaming => "unary request, stream of replies",
            Kind::ClientStreaming => "stream of requests, unary reply",
            Kind::Bidi => "stream of requests, stream of replies",
        }
    }
}

/// The Rust type names generated for a service.
pub(crate) struct ServiceNames {
    pub(crate) trait_name: Ident,
    pub(crate) server_name: Ident,
    pub(crate) client_name: Ident,
}

impl ServiceNames {
    pub(crate) fn new(service: &Service) -> Result<Self, Error> {
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
pub(crate) struct Rpc<'a> {
    pub(crate) method: &'a Method,
    pub(crate) kind: Kind,
    /// The wire path, `/package.Service/Method`.
    pub(crate) path: String,
    pub(crate) trait_fn: Ident,
    pub(crate) client_fn: Ident,
    pub(crate) client_with: Ident,
    pub(crate) client_start: Ident,
    pub(crate) client_sender: Ident,
    pub(crate) path_const: Ident,
    /// The proto-derived name the client functions would have had, when they
    /// were renamed to dodge one of the client's own functions.
    pub(crate) renamed_from: Option<String>,
    pub(crate) input: syn::Type,
    pub(crate) output: syn::Type,
}

impl<'a> Rpc<'a> {
    pub(crate) fn new(
        service: &Service,
        full_name: &str,
        method: &'a Method,
    ) -> Result<Self, Error> {
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
            client_start: ident(service, &suffixed(&client_base, "start"))?,
            client_sender: ident(service, &suffixed(&client_base, "sender"))?,
            path_const: ident(service, &suffixed(&const_base, "PATH"))?,
            renamed_from,
            input: rust_type(service, method, &method.input_type)?,
            output: rust_type(service, method, &method.output_type)?,
        })
    }

    /// Whether the client gets a `_start` function for this rpc (a
    /// non-blocking start of a call whose plain form blocks).
    pub(crate) fn has_start(&self) -> bool {
        matches!(self.kind, Kind::Unary | Kind::ClientStreaming)
    }

    /// Whether the client gets a `_sender` function for this rpc.
    pub(crate) fn has_sender(&self) -> bool {
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
pub(crate) fn allow_name_lints<'a>(names: impl IntoIterator<Item = &'a Ident>) -> TokenStream {
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

pub(crate) fn ident(service: &Service, name: &str) -> Result<Ident, Error> {
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

pub(crate) fn full_name(service: &Service) -> String {
    if service.package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{}.{}", service.package, service.proto_name)
    }
}

pub(crate) fn service_error(service: &Service, message: String) -> Error {
    Error::Service {
        service: full_name(service),
        message,
    }
}

/// Fails when two rpcs would generate the same Rust item.
pub(crate) fn check_collisions(
    service: &Service,
    rpcs: &[Rpc<'_>],
    options: Options,
) -> Result<(), Error> {
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
            if rpc.has_start() {
                names.push(&rpc.client_start);
            }
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
