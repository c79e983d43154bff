//! Bearer-token authentication on both sides, as interceptors: the server
//! rejects calls without `authorization: Bearer TOKEN` with
//! `UNAUTHENTICATED`; the client sends the token it is given, read afresh
//! for every call so that it can rotate.
//!
//! ```
//! use grpc_blocking::server::InterceptedService;
//! use grpc_blocking::{Channel, Code, Server};
//! use grpc_blocking_examples::auth::{BearerToken, RequireBearerToken};
//! use grpc_blocking_examples::nameko::{ExampleClient, ExampleRequest, ExampleServer};
//! use grpc_blocking_examples::ExampleService;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Only the example service wants the token: health checks stay open.
//! let service = InterceptedService::new(ExampleServer::new(ExampleService))
//!     .intercept(RequireBearerToken::new("s3cret"));
//! let server = Server::builder().add_service(service).bind("127.0.0.1:0")?.spawn()?;
//!
//! let token = BearerToken::new("s3cret");
//! let channel = Channel::builder(server.target())
//!     .intercept(token.clone())
//!     .connect()?;
//! let client = ExampleClient::new(channel);
//! let request = ExampleRequest { value: "hi".into(), multiplier: 1 };
//! assert_eq!(client.unary_unary(request.clone())?.message, "hi");
//!
//! // A new token replaces the old one for every call from now on.
//! token.set("wrong");
//! assert_eq!(client.unary_unary(request).unwrap_err().code(), Code::Unauthenticated);
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, RwLock};

use grpc_blocking::client;
use grpc_blocking::server::{CallStart, Interceptor};
use grpc_blocking::Status;

/// The metadata key of the token, as HTTP's `Authorization` header.
pub const AUTHORIZATION: &str = "authorization";

/// A server interceptor that lets through only calls carrying
/// `authorization: Bearer TOKEN` with its token.
#[derive(Debug, Clone)]
pub struct RequireBearerToken {
    expected: String,
}

impl RequireBearerToken {
    /// Requires `token`.
    pub fn new(token: &str) -> Self {
        RequireBearerToken {
            expected: format!("Bearer {token}"),
        }
    }
}

/// Compares in time that does not depend on where the values differ, so
/// that response times say nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for RequireBearerToken {
    fn before(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        match call.metadata().get(AUTHORIZATION) {
            Some(value) if same(value.as_bytes(), self.expected.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("the bearer token is not valid")),
            None => Err(Status::unauthenticated(
                "this service needs `authorization: Bearer <token>` metadata",
            )),
        }
    }
}

/// A client interceptor that sends `authorization: Bearer TOKEN` with
/// every call. Clones share the token: [`set`](BearerToken::set) on one
/// changes it for all, from the next call on.
#[derive(Debug, Clone)]
pub struct BearerToken {
    token: Arc<RwLock<String>>,
}

impl BearerToken {
    /// Sends `token`.
    pub fn new(token: &str) -> Self {
        BearerToken {
            token: Arc::new(RwLock::new(token.to_owned())),
        }
    }

    /// Replaces the token (a refreshed one) for the calls that follow.
    pub fn set(&self, token: &str) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token.to_owned();
    }
}

impl client::Interceptor for BearerToken {
    fn before(&self, call: &mut client::CallStart<'_>) -> Result<(), Status> {
        let value = format!(
            "Bearer {}",
            self.token.read().unwrap_or_else(|e| e.into_inner())
        );
        call.metadata_mut().insert(AUTHORIZATION, &value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"Bearer a", b"Bearer a"));
        assert!(!same(b"Bearer a", b"Bearer b"));
        assert!(!same(b"Bearer a", b"Bearer ab"));
        assert!(!same(b"", b"x"));
    }
}
