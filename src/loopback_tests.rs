//! End-to-end tests of the runtime over loopback TCP, with a service written
//! by hand (no code generator), so the library is tested on its own.

use std::time::Duration;

use crate::server::{self, Server, ServerCall, Service};
use crate::{CallOptions, Channel, Code, Metadata, Status};

#[derive(Clone, PartialEq, prost::Message)]
struct Req {
    #[prost(string, tag = "1")]
    value: String,
    #[prost(int32, tag = "2")]
    multiplier: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(int32, tag = "2")]
    seqno: i32,
}

struct Echo;

fn times(r: &Req) -> String {
    r.value.repeat(r.multiplier.max(1) as usize)
}

impl Service for Echo {
    fn name(&self) -> &'static str {
        "test.Echo"
    }
    fn methods(&self) -> &'static [&'static str] {
        &[
            "Unary",
            "ServerStream",
            "ClientStream",
            "Bidi",
            "Fail",
            "Panic",
        ]
    }
    fn call(&self, method: &str, call: ServerCall) {
        match method {
            "Unary" => server::unary(call, |r: Req, ctx| {
                if let Some(v) = ctx.metadata().get("x-echo") {
                    let mut md = Metadata::new();
                    md.insert("x-echo", v).unwrap();
                    ctx.send_initial_metadata(md.clone())?;
                    ctx.set_trailing_metadata(md);
                }
                Ok(Reply {
                    message: times(&r),
                    seqno: 0,
                })
            }),
            "ServerStream" => server::server_streaming(call, |r: Req, _ctx, out| {
                for i in 1..=r.multiplier {
                    out.send(Reply {
                        message: r.value.clone(),
                        seqno: i,
                    })?;
                }
                Ok(())
            }),
            "ClientStream" => server::client_streaming(call, |reqs, _ctx| {
                let mut parts = Vec::new();
                for r in reqs {
                    let r: Req = r?;
                    parts.push(times(&r));
                }
                Ok(Reply {
                    message: parts.join(","),
                    seqno: 0,
                })
            }),
            "Bidi" => server::bidi_streaming(call, |reqs, _ctx, out| {
                for (i, r) in reqs.enumerate() {
                    let r: Req = r?;
                    out.send(Reply {
                        message: times(&r),
                        seqno: i as i32 + 1,
                    })?;
                }
                Ok(())
            }),
            "Fail" => server::unary(call, |r: Req, _ctx| -> Result<Reply, Status> {
                Err(Status::new(Code::from_i32(r.multiplier), r.value))
            }),
            "Panic" => server::unary(call, |_r: Req, _ctx| -> Result<Reply, Status> {
                panic!("boom")
            }),
            _ => call.unimplemented(),
        }
    }
}

fn req(value: &str, multiplier: i32) -> Req {
    Req {
        value: value.into(),
        multiplier,
    }
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("the test timed out (a hang?)")
}

#[test]
fn four_patterns_errors_and_metadata() {
    with_timeout(60, || {
        let server = Server::builder()
            .add_service(Echo)
            .bind("127.0.0.1:0")
            .unwrap()
            .spawn()
            .unwrap();
        let ch = Channel::connect(format!("http://{}", server.local_addr())).unwrap();

        let r: Reply = ch
            .unary("/test.Echo/Unary", req("ab", 3), CallOptions::new())
            .unwrap();
        assert_eq!(r.message, "ababab");

        let replies: Vec<Reply> = ch
            .server_streaming("/test.Echo/ServerStream", req("x", 3), CallOptions::new())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            replies.iter().map(|r| r.seqno).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );

        let r: Reply = ch
            .client_streaming(
                "/test.Echo/ClientStream",
                vec![req("a", 1), req("b", 2)],
                CallOptions::new(),
            )
            .unwrap();
        assert_eq!(r.message, "a,bb");

        let replies: Vec<Reply> = ch
            .bidi_streaming(
                "/test.Echo/Bidi",
                vec![req("a", 1), req("b", 2), req("c", 0)],
                CallOptions::new(),
            )
            .collect::<Result<_, _>>()
            .unwrap();
        let got: Vec<_> = replies
            .iter()
            .map(|r| (r.message.as_str(), r.seqno))
            .collect();
        assert_eq!(got, vec![("a", 1), ("bb", 2), ("c", 3)]);

        // Interleaved bidi through a sender.
        let (mut tx, mut rx) =
            ch.bidi_streaming_sender::<Req, Reply>("/test.Echo/Bidi", CallOptions::new());
        for i in 0..5 {
            tx.send(req("z", i)).unwrap();
            let r = rx.next().unwrap().unwrap();
            assert_eq!(r.seqno, i + 1);
        }
        tx.finish();
        assert!(rx.next().is_none());

        // Errors: a handler's status, unknown method and service, a panic.
        let err = ch
            .unary::<_, Reply>(
                "/test.Echo/Fail",
                req("no 100%\n\u{e9}", 5),
                CallOptions::new(),
            )
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.message(), "no 100%\n\u{e9}");
        assert!(!err.is_transport_error());
        let err = ch
            .unary::<_, Reply>("/test.Echo/Nope", req("", 0), CallOptions::new())
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        let err = ch
            .unary::<_, Reply>("/test.Nope/Unary", req("", 0), CallOptions::new())
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        let err = ch
            .unary::<_, Reply>("/test.Echo/Panic", req("", 0), CallOptions::new())
            .unwrap_err();
        assert_eq!(err.code(), Code::Unknown);
        assert_eq!(err.message(), "Exception calling application: boom");

        // Metadata both ways.
        let mut md = Metadata::new();
        md.insert("x-echo", "hello").unwrap();
        let resp = ch
            .unary_start::<_, Reply>(
                "/test.Echo/Unary",
                req("a", 1),
                CallOptions::new().metadata(md),
            )
            .wait_response()
            .unwrap();
        assert_eq!(resp.headers.get("x-echo"), Some("hello"));
        assert_eq!(resp.trailers.get("x-echo"), Some("hello"));

        // The server still serves after all that.
        let r: Reply = ch
            .unary("/test.Echo/Unary", req("ok", 1), CallOptions::new())
            .unwrap();
        assert_eq!(r.message, "ok");
        drop(ch);
        server.shutdown().unwrap();
    });
}

#[test]
fn unreachable_server_is_a_transport_error() {
    with_timeout(30, || {
        // Bind and drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Channel::connect(format!("http://127.0.0.1:{port}")).unwrap_err();
        assert!(
            matches!(err, crate::TransportError::Connect { .. }),
            "{err}"
        );
        let ch = Channel::connect_lazy(format!("http://127.0.0.1:{port}")).unwrap();
        let err = ch
            .unary::<_, Reply>("/test.Echo/Unary", req("", 0), CallOptions::new())
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.is_transport_error());
    });
}
