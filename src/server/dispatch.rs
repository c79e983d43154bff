//! Where a request goes, decided from its headers alone: the service and
//! method, the response compression, and whether the handler runs on the
//! connection thread or a worker; or the answer that refuses it. A plain
//! function, so the connection thread only moves bytes.

use std::sync::Arc;

use http::request::Parts;

use crate::server::config::UnaryHandlers;
use crate::server::service::{Registry, Service};
use crate::status::Status;
use crate::wire::compression::{self, Encoding};
use crate::wire::headers::{self, CallHead, Rejection};

/// Where a handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// On a worker of the pool (bidi handlers always; client-streaming and
    /// server-streaming ones unless adaptive; unary ones under
    /// `UnaryHandlers::Workers`).
    Pool,
    /// On the connection thread once the request has fully arrived (unary
    /// handlers under `UnaryHandlers::Adaptive`, the default, or `Inline`;
    /// server-streaming ones under `Adaptive`, whose hand-off keeps a
    /// handler that blocks, on a full send queue say, from stalling its
    /// connection; client-streaming ones under `Adaptive` too, which move
    /// to the pool if their request stream has not ended within the inline
    /// time limit).
    Inline,
}

/// An accepted call: what the handler needs to know, and where it runs.
pub(crate) struct Route {
    pub(crate) head: CallHead,
    pub(crate) service: Arc<dyn Service>,
    pub(crate) response_encoding: Encoding,
    pub(crate) run: Run,
    /// The method takes one request message (unary or server-streaming).
    pub(crate) single_request: bool,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("head", &self.head)
            .field("service", &self.service.name())
            .field("response_encoding", &self.response_encoding)
            .field("run", &self.run)
            .field("single_request", &self.single_request)
            .finish()
    }
}

/// Routes a request: checks its headers, finds its service and method, and
/// picks its response compression and where its handler runs.
pub(crate) fn route(
    parts: &Parts,
    registry: &Registry,
    handlers: UnaryHandlers,
) -> Result<Route, Rejection> {
    let head = headers::parse_request(parts)?;
    let service = match registry.get(head.path.service()) {
        Some(s) if s.methods().contains(&head.path.method()) => s.clone(),
        Some(_) => {
            return Err(Rejection::Grpc(Status::unimplemented(format!(
                "unknown method {} for service {}",
                head.path.method(),
                head.path.service()
            ))))
        }
        None => {
            return Err(Rejection::Grpc(Status::unimplemented(format!(
                "unknown service {}",
                head.path.service()
            ))))
        }
    };
    let method = head.path.method();
    let unary = service.unary_methods().contains(&method);
    let single_request = unary || service.server_streaming_methods().contains(&method);
    let inline = match handlers {
        UnaryHandlers::Workers => false,
        UnaryHandlers::Inline => unary,
        UnaryHandlers::Adaptive => {
            single_request || service.client_streaming_methods().contains(&method)
        }
    };
    let run = if inline { Run::Inline } else { Run::Pool };
    let response_encoding = compression::response_encoding(head.encoding, &head.accept_encoding);
    Ok(Route {
        head,
        service,
        response_encoding,
        run,
        single_request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::server::call::ServerCall;
    use http::Request;
    use UnaryHandlers::{Adaptive, Inline, Workers};

    struct Svc;
    impl Service for Svc {
        fn name(&self) -> &'static str {
            "pkg.Svc"
        }
        fn methods(&self) -> &'static [&'static str] {
            &["Unary", "Replies", "Upload", "Stream"]
        }
        fn unary_methods(&self) -> &'static [&'static str] {
            &["Unary"]
        }
        fn server_streaming_methods(&self) -> &'static [&'static str] {
            &["Replies"]
        }
        fn client_streaming_methods(&self) -> &'static [&'static str] {
            &["Upload"]
        }
        fn call(&self, _method: &str, call: ServerCall) {
            call.unimplemented();
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.add(Arc::new(Svc));
        r
    }

    fn parts(path: &str, extra: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder()
            .method("POST")
            .uri(format!("http://h{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn refused(r: Result<Route, Rejection>) -> Status {
        match r {
            Err(Rejection::Grpc(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_services_and_methods_are_unimplemented() {
        let s = refused(route(&parts("/pkg.Nope/Unary", &[]), &registry(), Workers));
        assert_eq!(s.code(), Code::Unimplemented);
        assert_eq!(s.message(), "unknown service pkg.Nope");
        let s = refused(route(&parts("/pkg.Svc/Nope", &[]), &registry(), Workers));
        assert_eq!(s.code(), Code::Unimplemented);
        assert_eq!(s.message(), "unknown method Nope for service pkg.Svc");
    }

    #[test]
    fn all_but_bidi_methods_run_inline_as_the_mode_allows() {
        let r = route(&parts("/pkg.Svc/Unary", &[]), &registry(), Adaptive).unwrap();
        assert_eq!(r.run, Run::Inline);
        assert_eq!(
            (r.head.path.service(), r.head.path.method()),
            ("pkg.Svc", "Unary")
        );
        let run = |method: &str, mode| {
            route(
                &parts(&format!("/pkg.Svc/{method}"), &[]),
                &registry(),
                mode,
            )
            .unwrap()
            .run
        };
        // Adaptive: one request message, whatever the replies; or one reply
        // (once the requests are in, or on the pool after the time limit).
        assert_eq!(run("Replies", Adaptive), Run::Inline);
        assert_eq!(run("Upload", Adaptive), Run::Inline);
        assert_eq!(run("Stream", Adaptive), Run::Pool);
        // Inline (no hand-off): unary only, as a stream's replies may wait
        // for room that only the connection's thread makes.
        assert_eq!(run("Unary", Inline), Run::Inline);
        assert_eq!(run("Replies", Inline), Run::Pool);
        assert_eq!(run("Upload", Inline), Run::Pool);
        assert_eq!(run("Stream", Inline), Run::Pool);
        for method in ["Unary", "Replies", "Upload", "Stream"] {
            assert_eq!(run(method, Workers), Run::Pool, "{method}");
        }
    }

    #[test]
    fn unary_and_server_streaming_methods_take_a_single_request() {
        let single = |method: &str| {
            route(
                &parts(&format!("/pkg.Svc/{method}"), &[]),
                &registry(),
                Workers,
            )
            .unwrap()
            .single_request
        };
        assert!(single("Unary"));
        assert!(single("Replies"));
        assert!(!single("Upload"));
        assert!(!single("Stream"));
    }

    #[test]
    fn responses_are_compressed_as_the_request_when_accepted() {
        let gzip = [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")];
        let r = route(&parts("/pkg.Svc/Unary", &gzip), &registry(), Workers).unwrap();
        assert_eq!(r.response_encoding, Encoding::Gzip);
        let only_deflate = [
            ("grpc-encoding", "gzip"),
            ("grpc-accept-encoding", "deflate"),
        ];
        let r = route(
            &parts("/pkg.Svc/Unary", &only_deflate),
            &registry(),
            Workers,
        )
        .unwrap();
        assert_eq!(r.response_encoding, Encoding::Identity);
        let r = route(&parts("/pkg.Svc/Unary", &[]), &registry(), Workers).unwrap();
        assert_eq!(r.response_encoding, Encoding::Identity);
    }

    #[test]
    fn bad_headers_are_refused_before_routing() {
        let r = route(
            &parts("/pkg.Svc/Unary", &[("grpc-timeout", "1x")]),
            &registry(),
            Workers,
        );
        assert_eq!(refused(r).code(), Code::Internal);
    }
}
