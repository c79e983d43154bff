//! Turns one prost-build [`Service`] into Rust code: the sync service trait,
//! the `XxxServer<T>` adapter and the blocking `XxxClient`.
//!
//! | file | what |
//! | --- | --- |
//! | `names.rs` | the Rust names of everything generated, and their collisions |
//! | `server.rs` | the service trait and its server adapter |
//! | `client.rs` | the client |
//! | `docs.rs` | doc comments from the proto's comments |

mod client;
mod descriptors;
mod docs;
mod names;
mod server;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use prost_build::Service;

use crate::generator::client::client_tokens;
use crate::generator::descriptors::Descriptors;
use crate::generator::names::{check_collisions, full_name, service_error, Rpc, ServiceNames};
use crate::generator::server::server_tokens;
use crate::Error;

/// What to generate for each service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// The service trait and the `XxxServer<T>` adapter.
    pub(crate) server: bool,
    /// The `XxxClient`.
    pub(crate) client: bool,
    /// Trait methods with a default body answering `UNIMPLEMENTED`.
    pub(crate) default_stubs: bool,
}

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
    /// The file descriptors each service embeds.
    descriptors: Descriptors,
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
            descriptors: Descriptors::new(fds),
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
            .and_then(|()| {
                let descriptors = self.descriptors.of(&full_name(&service));
                generate_service(&service, self.options, descriptors)
            });
        match result {
            Ok(code) => buf.push_str(&code),
            Err(error) => self.errors.borrow_mut().push(error),
        }
    }
}

/// Generates the formatted Rust code for one service.
pub(crate) fn generate_service(
    service: &Service,
    options: Options,
    descriptors: &[Vec<u8>],
) -> Result<String, Error> {
    let tokens = service_tokens(service, options, descriptors)?;
    let file = syn::parse2::<syn::File>(tokens).map_err(|e| {
        service_error(
            service,
            format!("internal error: generated code does not parse: {e}"),
        )
    })?;
    Ok(prettyplease::unparse(&file))
}

fn service_tokens(
    service: &Service,
    options: Options,
    descriptors: &[Vec<u8>],
) -> Result<TokenStream, Error> {
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
        tokens.extend(server_tokens(
            service,
            &full_name,
            &names,
            &rpcs,
            options,
            descriptors,
        ));
    }
    if options.client {
        tokens.extend(client_tokens(service, &full_name, &names, &rpcs));
    }
    Ok(tokens)
}
