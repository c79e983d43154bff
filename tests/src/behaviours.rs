//! The behaviours of the equivalence tests (issues #3 and #9), each a
//! function of a [`Pairing`]: `tests/equivalence.rs` runs them in the
//! pairings of grpcio and ours, `tests/equivalence_grpcjs.rs` in those of
//! grpc-js and ours. One expectation holds in every pairing, except where a
//! behaviour says which implementation does what and why (the gRPC spec
//! decides between them; where it leaves a choice, each may make its own).
//!
//! The test service is `proto/equivalence.proto`; the machinery (the peers,
//! our server of the service, the driver) is in `equivalence.rs`,
//! `python.rs` and `node.rs`.

/// Declares a module `$test` with one `#[test]` per listed pairing
/// (`name => (server, client)`, each a [`Peer`] variant), each calling the
/// behaviour `$test(Pairing)` of the scope where it is used.
#[macro_export]
macro_rules! pairing_tests {
    ($test:ident: $($case:ident => ($server:ident, $client:ident)),* $(,)?) => {
        mod $test {
            $(
                #[test]
                fn $case() {
                    super::$test($crate::equivalence::Pairing::new(
                        $crate::equivalence::Peer::$server,
                        $crate::equivalence::Peer::$client,
                    ))
                }
            )*
        }
    };
}

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use grpc_blocking::{Code, Encoding, Status};

use crate::equivalence::*;
use crate::support::every_error_detail;

const MIB: usize = 1 << 20;

/// A request with `value` and nothing else.
pub fn req(value: &str) -> Request {
    Request {
        value: value.into(),
        ..Default::default()
    }
}

/// The (message, seqno) of each reply.
pub fn msgs(replies: &[Reply]) -> Vec<(&str, i32)> {
    replies
        .iter()
        .map(|r| (r.message.as_str(), r.seqno))
        .collect()
}

/// Metadata as HTTP/2 defines its meaning: the order of values of one name
/// matters, the order between names does not.
fn by_name(md: &MdList) -> MdList {
    let mut md = md.clone();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    md
}

/// Metadata as the gRPC spec defines its meaning (PROTOCOL-HTTP2.md,
/// Custom-Metadata): besides [`by_name`], "Duplicate header names may have
/// their values joined with "," as the delimiter and be considered
/// semantically equivalent", and an ASCII value's leading or trailing
/// whitespace "may be stripped". grpc-js does join them: Node's http2 hands
/// it the values of a repeated field joined with ", " (it splits `-bin`
/// values again, as the spec asks). So in the pairings with grpc-js the
/// values of each ASCII name are compared joined, trimmed around each
/// comma.
fn joined(md: &MdList) -> MdList {
    let mut out: MdList = Vec::new();
    for (name, value) in by_name(md) {
        let Md::Text(text) = value else {
            out.push((name, value));
            continue;
        };
        match out.last_mut() {
            Some((last, Md::Text(all))) if *last == name => {
                all.push(',');
                all.push_str(&text);
            }
            _ => out.push((name, Md::Text(text))),
        }
    }
    for (_, value) in &mut out {
        if let Md::Text(text) = value {
            *text = text.split(',').map(str::trim).collect::<Vec<_>>().join(",");
        }
    }
    out
}

/// Asserts two metadata lists mean the same in the pairing `p` (see
/// [`by_name`], [`joined`]).
#[track_caller]
fn assert_md(p: Pairing, actual: &MdList, expected: &MdList, what: &str) {
    if p.client == Peer::GrpcJs || p.server == Peer::GrpcJs {
        assert_eq!(joined(actual), joined(expected), "{what}");
    } else {
        assert_eq!(by_name(actual), by_name(expected), "{what}");
    }
}

/// A key no other test run of this process shares.
fn unique(prefix: &str, p: Pairing) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:?}-{:?}-{}-{}",
        p.client,
        p.server,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------

/// nameko-grpc's example service (`nameko.example`), with its documented
/// behaviour.
pub fn example_service(p: Pairing) {
    let ex = |value: &str, multiplier| ExampleRequest {
        value: value.into(),
        multiplier,
    };
    let show = |replies: Vec<ExampleReply>| -> Vec<(String, i32)> {
        replies.into_iter().map(|r| (r.message, r.seqno)).collect()
    };
    let s = |m: &str, n| (m.to_string(), n);

    let out = p.call::<_, ExampleReply>(Call::new(
        example_paths::UNARY_UNARY,
        Kind::UnaryUnary,
        vec![ex("A", 2)],
    ));
    assert_eq!(show(out.ok()), vec![s("AA", 0)], "{p}");
    let out = p.call::<_, ExampleReply>(Call::new(
        example_paths::UNARY_UNARY,
        Kind::UnaryUnary,
        vec![ex("A", 0)],
    ));
    assert_eq!(
        show(out.ok()),
        vec![s("A", 0)],
        "{p}: multiplier 0 counts as 1"
    );

    let out = p.call::<_, ExampleReply>(Call::new(
        example_paths::UNARY_STREAM,
        Kind::UnaryStream,
        vec![ex("A", 3)],
    ));
    assert_eq!(show(out.ok()), vec![s("AAA", 1), s("AAA", 2)], "{p}");

    let two = vec![ex("A", 1), ex("B", 2)];
    let out = p.call::<_, ExampleReply>(Call::new(
        example_paths::STREAM_UNARY,
        Kind::StreamUnary,
        two.clone(),
    ));
    assert_eq!(show(out.ok()), vec![s("A,BB", 0)], "{p}");

    let out = p.call::<_, ExampleReply>(Call::new(
        example_paths::STREAM_STREAM,
        Kind::StreamStream,
        two,
    ));
    assert_eq!(show(out.ok()), vec![s("A", 1), s("BB", 2)], "{p}");
}

/// The four patterns of the test service, plain.
pub fn four_patterns(p: Pairing) {
    let r = p
        .run(
            Kind::UnaryUnary,
            vec![Request {
                multiplier: 3,
                ..req("ab")
            }],
        )
        .single();
    assert_eq!(
        (r.message.as_str(), r.seqno, r.payload_len, r.payload_crc32),
        ("ababab", 0, 0, 0),
        "{p}"
    );
    assert!(
        r.payload.is_empty() && r.received_metadata.is_empty(),
        "{p}: {r:?}"
    );
    let r = p
        .run(
            Kind::UnaryUnary,
            vec![Request {
                multiplier: -1,
                ..req("ab")
            }],
        )
        .single();
    assert_eq!(
        r.message, "",
        "{p}: a negative multiplier repeats zero times"
    );

    let replies = p
        .run(
            Kind::UnaryStream,
            vec![Request {
                multiplier: 2,
                ..req("x")
            }],
        )
        .ok();
    assert_eq!(msgs(&replies), vec![("xx", 1), ("xx", 2)], "{p}");
    let replies = p
        .run(
            Kind::UnaryStream,
            vec![Request {
                response_count: Some(5),
                ..req("y")
            }],
        )
        .ok();
    assert_eq!(
        msgs(&replies),
        (1..=5).map(|i| ("y", i)).collect::<Vec<_>>(),
        "{p}"
    );

    let three = vec![
        req("a"),
        Request {
            multiplier: 2,
            ..req("b")
        },
        Request {
            multiplier: 3,
            ..req("c")
        },
    ];
    let r = p.run(Kind::StreamUnary, three.clone()).single();
    assert_eq!((r.message.as_str(), r.seqno), ("a,bb,ccc", 0), "{p}");

    let replies = p.run(Kind::StreamStream, three).ok();
    assert_eq!(msgs(&replies), vec![("a", 1), ("bb", 2), ("ccc", 3)], "{p}");
}

/// Zero-length messages and streams with no messages.
pub fn empty_messages_and_streams(p: Pairing) {
    // An all-default request and reply encode to zero bytes.
    let r = p.run(Kind::UnaryUnary, vec![Request::default()]).single();
    assert_eq!(r, Reply::default(), "{p}");

    let out = p.run(
        Kind::UnaryStream,
        vec![Request {
            response_count: Some(0),
            ..req("z")
        }],
    );
    assert!(out.ok().is_empty(), "{p}: no replies");

    let r = p.run(Kind::StreamUnary, vec![]).single();
    assert_eq!(r, Reply::default(), "{p}: no requests, empty reply");

    let out = p.run(Kind::StreamStream, vec![]);
    assert!(out.ok().is_empty(), "{p}: no requests, no replies");

    let replies = p
        .run(
            Kind::StreamStream,
            vec![Request::default(), Request::default()],
        )
        .ok();
    assert_eq!(msgs(&replies), vec![("", 1), ("", 2)], "{p}");
}

/// Long streams both ways.
pub fn many_messages(p: Pairing) {
    let replies = p
        .run(
            Kind::UnaryStream,
            vec![Request {
                response_count: Some(1000),
                ..req("m")
            }],
        )
        .ok();
    assert_eq!(replies.len(), 1000, "{p}");
    assert!(
        replies
            .iter()
            .enumerate()
            .all(|(i, r)| r.seqno == i as i32 + 1 && r.message == "m"),
        "{p}"
    );

    let requests: Vec<Request> = (0..500).map(|i| req(&i.to_string())).collect();
    let r = p.run(Kind::StreamUnary, requests.clone()).single();
    let expected: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    assert_eq!(r.message, expected.join(","), "{p}");

    let replies = p.run(Kind::StreamStream, requests).ok();
    assert_eq!(replies.len(), 500, "{p}");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(
            (r.message.as_str(), r.seqno),
            (i.to_string().as_str(), i as i32 + 1),
            "{p}"
        );
    }
}

/// Full duplex: each request is sent only once the previous reply arrived.
pub fn bidi_ping_pong(p: Pairing) {
    let requests: Vec<Request> = (0..20).map(|i| req(&format!("ping{i}"))).collect();
    let replies = p
        .call::<_, Reply>(Call::to(Kind::StreamStream, requests).pingpong())
        .ok();
    let got: Vec<(String, i32)> = replies.into_iter().map(|r| (r.message, r.seqno)).collect();
    let expected: Vec<(String, i32)> = (0..20).map(|i| (format!("ping{i}"), i + 1)).collect();
    assert_eq!(got, expected, "{p}");
}

fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

fn sample_metadata() -> MdList {
    vec![
        ("x-text".into(), Md::Text("hello world".into())),
        ("x-data-bin".into(), Md::Bin(all_bytes())),
        ("x-dup".into(), Md::Text("first".into())),
        ("x-dup".into(), Md::Text("second".into())),
        ("x-dup-bin".into(), Md::Bin(vec![0xff, 0x00])),
        ("x-dup-bin".into(), Md::Bin(vec![0x01])),
    ]
}

fn one_request(kind: Kind, request: Request) -> Vec<Request> {
    if kind.streams_requests() {
        vec![request, Request::default()]
    } else {
        vec![request]
    }
}

/// Request metadata (text, `-bin`, repeated names) reaches the handler, in
/// every pattern.
pub fn request_metadata(p: Pairing) {
    let md = sample_metadata();
    for kind in Kind::ALL {
        let call = Call::to(kind, one_request(kind, req("m"))).metadata(md.clone());
        let replies = p.call::<_, Reply>(call).ok();
        assert!(!replies.is_empty(), "{p} {kind:?}");
        for r in &replies {
            assert_md(
                p,
                &received(r),
                &md,
                &format!("{p} {kind:?}: metadata the server saw"),
            );
        }
    }
}

/// Interleaved names: the values of each name keep their order, both ways.
///
/// grpcio also keeps the order *between* different names as the application
/// gave it; grpc-blocking groups entries by name (h2's `HeaderMap` does, on
/// both sides). HTTP (RFC 9110, section 5.3) says the order of fields with
/// different names is not significant, so the spec decides here, not grpcio:
/// the test compares metadata by name (stable sort), like all the others.
pub fn metadata_order_within_names(p: Pairing) {
    let md: MdList = vec![
        ("x-a".into(), Md::Text("1".into())),
        ("x-b".into(), Md::Text("2".into())),
        ("x-a".into(), Md::Text("3".into())),
        ("x-c-bin".into(), Md::Bin(vec![3])),
        ("x-b".into(), Md::Text("4".into())),
        ("x-c-bin".into(), Md::Bin(vec![1])),
        ("x-a".into(), Md::Text("0".into())),
    ];
    for kind in Kind::ALL {
        let request = Request {
            echo_initial: true,
            echo_trailing: true,
            ..req("o")
        };
        let out =
            p.call::<_, Reply>(Call::to(kind, one_request(kind, request)).metadata(md.clone()));
        let what = format!("{p} {kind:?}");
        assert_eq!(out.code, Code::Ok, "{what}: {out:?}");
        assert_md(
            p,
            &received(&out.responses[0]),
            &md,
            &format!("{what}: request metadata as the handler saw it"),
        );
        assert_md(
            p,
            &out.headers,
            &md,
            &format!("{what}: initial metadata as the client saw it"),
        );
        assert_md(
            p,
            &out.trailers,
            &md,
            &format!("{what}: trailing metadata as the client saw it"),
        );
    }
}

/// The fields of a response a pairing's client shows as metadata besides
/// the handler's own: (in the headers, in the trailers, in the trailers of
/// a Trailers-Only response). grpcio's client and ours show none of the
/// protocol's own fields. grpc-js brings two differences, neither against
/// the spec (which says nothing of what a client's API shows, and whose
/// grammar reads any other field as Custom-Metadata): grpc-js's client
/// shows the response's `content-type` (and, in a Trailers-Only response,
/// `content-type` and `grpc-accept-encoding` with the trailers); grpc-js's
/// server sends a `date` field with its response headers (Node's http2 adds
/// one), which our client shows as the metadata the spec says it is.
///
/// Through nginx, nginx adds its own `server` and `date` fields to the
/// headers of every response (its `grpc_hide_header` defaults drop the
/// server's own), a Trailers-Only one included, and `content-length: 0` to
/// a Trailers-Only response (checked with nginx 1.22.1). Both clients show
/// `server` and `date` (with the trailers of a Trailers-Only response);
/// grpcio's client shows `content-length` too, ours does not (it counts
/// `content-length` among the protocol's own fields, with `content-type`
/// and `te`).
fn protocol_fields_shown(p: Pairing) -> [&'static [&'static str]; 3] {
    match (p.proxy, p.client) {
        (Some(Proxy::Nginx), Peer::Grpcio) => {
            return [
                &["date", "server"],
                &[],
                &["content-length", "date", "server"],
            ]
        }
        (Some(Proxy::Nginx), _) => return [&["date", "server"], &[], &["date", "server"]],
        (None, _) => {}
    }
    match (p.client, p.server) {
        (Peer::GrpcJs, _) => [
            &["content-type"],
            &[],
            &["content-type", "grpc-accept-encoding"],
        ],
        (_, Peer::GrpcJs) => [&["date"], &[], &["date"]],
        _ => [&[], &[], &[]],
    }
}

/// Asserts the metadata a client shows is `expected` plus the fields named
/// in `protocol` (whatever their values), in any order.
#[track_caller]
fn assert_shown(actual: &MdList, expected: &MdList, protocol: &[&str], what: &str) {
    let mut names: Vec<&str> = actual
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| protocol.contains(n))
        .collect();
    names.sort_unstable();
    let mut wanted = protocol.to_vec();
    wanted.sort_unstable();
    assert_eq!(
        names, wanted,
        "{what}: the protocol's fields shown in {actual:?}"
    );
    let rest: MdList = actual
        .iter()
        .filter(|(n, _)| !protocol.contains(&n.as_str()))
        .cloned()
        .collect();
    assert_eq!(by_name(&rest), by_name(expected), "{what}");
}

/// Handlers see the application's metadata plus `user-agent`, none of the
/// protocol's own headers (`content-type`, `te`, `grpc-timeout`, `:path`,
/// ...); clients see only the metadata the handler sent, none of the
/// response's own headers and trailers (`grpc-status`, `content-type`, ...),
/// except as [`protocol_fields_shown`] says.
pub fn reserved_headers_hidden(p: Pairing) {
    let [in_headers, in_trailers, in_trailers_only] = protocol_fields_shown(p);
    for kind in Kind::ALL {
        let request = Request {
            all_metadata: true,
            echo_initial: true,
            echo_trailing: true,
            ..req("h")
        };
        let mut requests = vec![request.clone()];
        if kind.streams_requests() {
            requests.push(request);
        }
        let out = p.call::<_, Reply>(Call::to(kind, requests).metadata(text_md(&[("x-k", "v")])));
        let what = format!("{p} {kind:?}");
        assert_shown(
            &out.all_headers,
            &text_md(&[("x-k", "v")]),
            in_headers,
            &format!("{what}: headers the client shows"),
        );
        assert_shown(
            &out.all_trailers,
            &text_md(&[("x-k", "v")]),
            in_trailers,
            &format!("{what}: trailers the client shows"),
        );
        let replies = out.ok();
        let seen = received(&replies[0]);
        let mut names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected = vec!["user-agent", "x-k"];
        if p.client == Peer::GrpcJs {
            // Besides, grpc-js's client sends `accept-encoding: identity`,
            // HTTP's field, which the spec's grammar reads as
            // Custom-Metadata (and its custom metadata before
            // `user-agent`: the order between names is not significant).
            expected.push("accept-encoding");
            expected.sort_unstable();
            names.sort_unstable();
        }
        assert_eq!(
            names, expected,
            "{what}: metadata the handler sees: {seen:?}"
        );
    }
    // Failing calls too (a Trailers-Only response).
    for kind in Kind::ALL {
        let out = p.run(kind, failing(kind, Code::NotFound.as_i32(), "gone"));
        out.assert_status(Code::NotFound, "gone");
        let what = format!("{p} {kind:?}, failing");
        assert_shown(&out.all_headers, &vec![], &[], &format!("{what}: headers"));
        assert_shown(
            &out.all_trailers,
            &vec![],
            in_trailers_only,
            &format!("{what}: trailers"),
        );
    }
}

/// Unusual but valid values: empty, every printable ASCII character, long.
pub fn metadata_edge_values(p: Pairing) {
    let printable: String = (0x21u8..=0x7e).map(char::from).collect();
    let md: MdList = vec![
        ("x-empty".into(), Md::Text(String::new())),
        ("x-empty-bin".into(), Md::Bin(Vec::new())),
        (
            "x-printable".into(),
            Md::Text(format!("{printable} with spaces inside")),
        ),
        ("x-long".into(), Md::Text("L".repeat(1000))),
        ("x-long-bin".into(), Md::Bin(pattern(600))),
        ("x-digits-0123456789_.-name".into(), Md::Text("v".into())),
    ];
    for kind in [Kind::UnaryUnary, Kind::StreamStream] {
        let request = Request {
            echo_initial: true,
            echo_trailing: true,
            ..req("e")
        };
        let out = p.call::<_, Reply>(Call::to(kind, vec![request]).metadata(md.clone()));
        let what = format!("{p} {kind:?}");
        assert_md(p, &out.headers, &md, &format!("{what}: headers"));
        assert_md(p, &out.trailers, &md, &format!("{what}: trailers"));
        let replies = out.ok();
        assert_md(
            p,
            &received(&replies[0]),
            &md,
            &format!("{what}: metadata the server saw"),
        );
    }
}

fn echo(kind: Kind, p: Pairing, initial: bool, trailing: bool) -> Outcome<Reply> {
    let request = Request {
        echo_initial: initial,
        echo_trailing: trailing,
        ..req("m")
    };
    let out =
        p.call::<_, Reply>(Call::to(kind, one_request(kind, request)).metadata(sample_metadata()));
    assert_eq!(out.code, Code::Ok, "{p} {kind:?}: {out:?}");
    out
}

/// Metadata the handler sends as initial metadata arrives in the headers.
pub fn response_initial_metadata(p: Pairing) {
    for kind in Kind::ALL {
        let out = echo(kind, p, true, false);
        assert_md(
            p,
            &out.headers,
            &sample_metadata(),
            &format!("{p} {kind:?}: headers"),
        );
        assert_md(
            p,
            &out.trailers,
            &vec![],
            &format!("{p} {kind:?}: trailers"),
        );
    }
}

/// Metadata the handler sets as trailing metadata arrives in the trailers.
pub fn response_trailing_metadata(p: Pairing) {
    for kind in Kind::ALL {
        let out = echo(kind, p, false, true);
        assert_md(p, &out.headers, &vec![], &format!("{p} {kind:?}: headers"));
        assert_md(
            p,
            &out.trailers,
            &sample_metadata(),
            &format!("{p} {kind:?}: trailers"),
        );
    }
}

/// Both: initial metadata in the headers, trailing in the trailers.
pub fn response_initial_and_trailing_metadata(p: Pairing) {
    for kind in Kind::ALL {
        let out = echo(kind, p, true, true);
        assert_md(
            p,
            &out.headers,
            &sample_metadata(),
            &format!("{p} {kind:?}: headers"),
        );
        assert_md(
            p,
            &out.trailers,
            &sample_metadata(),
            &format!("{p} {kind:?}: trailers"),
        );
    }
}

/// Non-ASCII, newlines, tabs and `%` (also as `%41`, which must not decode).
pub const TRICKY_MESSAGE: &str = "failed: ünïcödé ✓ 🦀, 100% sure\nsecond line\r\n\ttab %41 %% end";

fn failing(kind: Kind, code: i32, message: &str) -> Vec<Request> {
    let request = Request {
        status_code: code,
        status_message: message.into(),
        response_count: Some(0),
        ..req("f")
    };
    one_request(kind, request)
}

/// Every status code (1..=16) a handler returns reaches the client with its
/// message, in every pattern.
pub fn every_error_code(p: Pairing) {
    for code in 1..=16 {
        for kind in Kind::ALL {
            let out = p.run(kind, failing(kind, code, TRICKY_MESSAGE));
            let what = format!("{p} {kind:?} code {code}");
            assert_eq!(
                (out.code.as_i32(), out.message.as_str()),
                (code, TRICKY_MESSAGE),
                "{what}: {out:?}"
            );
            assert!(out.responses.is_empty(), "{what}: {out:?}");
        }
    }
}

/// Status messages that stress the percent-encoding of `grpc-message`.
pub fn error_message_encoding(p: Pairing) {
    let long: String = "ü%\n".repeat(100);
    let messages = [
        "",
        "plain",
        "%",
        "%%",
        "%zz",
        "%4",
        "100%",
        "\n",
        " leading and trailing ",
        "tab\there",
        "nul \u{0} inside",
        "日本語のメッセージ",
        "emoji 🎉🦀",
        "~!@#$^&*()_+{}|:\"<>?`-=[]\\;',./",
        long.as_str(),
    ];
    for message in messages {
        for kind in [Kind::UnaryUnary, Kind::StreamStream] {
            let out = p.run(kind, failing(kind, Code::InvalidArgument.as_i32(), message));
            out.assert_status(Code::InvalidArgument, message);
        }
    }
}

/// A handler that fails after replying: the client gets the replies, then the
/// status.
pub fn error_after_replies(p: Pairing) {
    let request = Request {
        status_code: Code::DataLoss.as_i32(),
        status_message: "after three".into(),
        response_count: Some(3),
        ..req("r")
    };
    let out = p.run(Kind::UnaryStream, vec![request]);
    out.assert_status(Code::DataLoss, "after three");
    assert_eq!(
        msgs(&out.responses),
        vec![("r", 1), ("r", 2), ("r", 3)],
        "{p}"
    );

    let fail = Request {
        status_code: Code::Aborted.as_i32(),
        status_message: "third".into(),
        ..req("c")
    };
    let out = p.run(Kind::StreamStream, vec![req("a"), req("b"), fail]);
    out.assert_status(Code::Aborted, "third");
    assert_eq!(msgs(&out.responses), vec![("a", 1), ("b", 2)], "{p}");

    let fail = Request {
        status_code: Code::OutOfRange.as_i32(),
        status_message: "second".into(),
        ..req("b")
    };
    let out = p.run(Kind::StreamUnary, vec![req("a"), fail, req("c")]);
    out.assert_status(Code::OutOfRange, "second");
    assert!(out.responses.is_empty(), "{p}");
}

/// A handler that fails on the first request while the client still has
/// 8 MiB to send (far more than the flow-control windows): the client stops
/// and reports the handler's status, it does not hang.
pub fn server_fails_while_client_streams(p: Pairing) {
    for kind in [Kind::StreamUnary, Kind::StreamStream] {
        let mut requests = vec![Request {
            status_code: Code::Unavailable.as_i32(),
            status_message: "stop sending".into(),
            ..req("first")
        }];
        requests.extend((0..128).map(|_| Request {
            payload: pattern(64 * 1024),
            ..req("more")
        }));
        let out = p.run(kind, requests);
        out.assert_status(Code::Unavailable, "stop sending");
        assert!(out.responses.is_empty(), "{p} {kind:?}");
    }
}

/// Metadata sent before a failure still reaches the client: initial metadata
/// in the headers, trailing metadata with the status (also in a
/// Trailers-Only response).
pub fn error_with_metadata(p: Pairing) {
    let md = sample_metadata();
    for kind in Kind::ALL {
        for (initial, trailing) in [(true, true), (false, true), (true, false)] {
            let request = Request {
                status_code: Code::FailedPrecondition.as_i32(),
                status_message: "with metadata".into(),
                response_count: Some(0),
                echo_initial: initial,
                echo_trailing: trailing,
                ..req("f")
            };
            let out =
                p.call::<_, Reply>(Call::to(kind, one_request(kind, request)).metadata(md.clone()));
            let what = format!("{p} {kind:?} initial={initial} trailing={trailing}");
            out.assert_status(Code::FailedPrecondition, "with metadata");
            let expect = |yes: bool| if yes { md.clone() } else { vec![] };
            assert_md(
                p,
                &out.headers,
                &expect(initial),
                &format!("{what}: headers"),
            );
            assert_md(
                p,
                &out.trailers,
                &expect(trailing),
                &format!("{what}: trailers"),
            );
        }
    }
}

/// 1 MiB messages each way, in every pattern.
pub fn one_mib_messages(p: Pairing) {
    let big = pattern(MIB);
    let big_crc = crc32(&big);

    // Client to server.
    let r = p
        .run(
            Kind::UnaryUnary,
            vec![Request {
                payload: big.clone(),
                ..req("up")
            }],
        )
        .single();
    assert_eq!(
        (r.payload_len, r.payload_crc32),
        (MIB as i64, big_crc),
        "{p}: unary request"
    );
    // Server to client.
    let r = p
        .run(
            Kind::UnaryUnary,
            vec![Request {
                response_size: MIB as i32,
                ..req("down")
            }],
        )
        .single();
    assert!(r.payload == big, "{p}: unary reply payload differs");
    // Both ways at once.
    let r = p
        .run(
            Kind::UnaryUnary,
            vec![Request {
                payload: big.clone(),
                echo_payload: true,
                ..req("both")
            }],
        )
        .single();
    assert!(
        r.payload == big && r.payload_crc32 == big_crc,
        "{p}: unary echo"
    );

    let replies = p
        .run(
            Kind::UnaryStream,
            vec![Request {
                response_size: MIB as i32,
                response_count: Some(3),
                ..req("s")
            }],
        )
        .ok();
    assert_eq!(replies.len(), 3, "{p}");
    assert!(
        replies.iter().all(|r| r.payload == big),
        "{p}: server-streamed payloads differ"
    );

    let three: Vec<Request> = (0..3)
        .map(|_| Request {
            payload: big.clone(),
            ..req("c")
        })
        .collect();
    let r = p.run(Kind::StreamUnary, three).single();
    let crc3 = crc32_update(crc32_update(big_crc, &big), &big);
    assert_eq!(
        (r.payload_len, r.payload_crc32),
        (3 * MIB as i64, crc3),
        "{p}: client-streamed payloads"
    );

    let three: Vec<Request> = (0..3)
        .map(|_| Request {
            payload: big.clone(),
            echo_payload: true,
            ..req("b")
        })
        .collect();
    let replies = p.run(Kind::StreamStream, three).ok();
    assert_eq!(replies.len(), 3, "{p}");
    assert!(
        replies
            .iter()
            .all(|r| r.payload == big && r.payload_len == MIB as i64),
        "{p}: bidi payloads differ"
    );
}

/// Messages over the default 4 MiB receive limit fail with
/// RESOURCE_EXHAUSTED, whichever side receives them.
pub fn over_default_size_limit(p: Pairing) {
    let five = 5 * MIB;
    let out = p.run(
        Kind::UnaryUnary,
        vec![Request {
            payload: pattern(five),
            ..req("up")
        }],
    );
    assert_eq!(
        out.code,
        Code::ResourceExhausted,
        "{p}: request over the server's limit: {}",
        out.message
    );
    let out = p.run(
        Kind::UnaryUnary,
        vec![Request {
            response_size: five as i32,
            ..req("down")
        }],
    );
    assert_eq!(
        out.code,
        Code::ResourceExhausted,
        "{p}: reply over the client's limit: {}",
        out.message
    );
    // The connection is still good.
    let r = p.run(Kind::UnaryUnary, vec![req("after")]).single();
    assert_eq!(r.message, "after", "{p}");
}

/// The default 4 MiB receive limit, to the byte: a message of exactly
/// 4 MiB passes, one byte more fails (both ways).
pub fn size_limit_boundary(p: Pairing) {
    // A message with only its bytes field set: 1 tag byte, a 4-byte length
    // (lengths from 2^21 to 2^28 - 1), then the bytes.
    let at_limit = 4 * MIB - 5;
    let r = p
        .run(
            Kind::UnaryUnary,
            vec![Request {
                payload: pattern(at_limit),
                ..Default::default()
            }],
        )
        .single();
    assert_eq!(r.payload_len, at_limit as i64, "{p}: a 4 MiB request");
    let out = p.run(
        Kind::UnaryUnary,
        vec![Request {
            payload: pattern(at_limit + 1),
            ..Default::default()
        }],
    );
    assert_eq!(
        out.code,
        Code::ResourceExhausted,
        "{p}: 4 MiB + 1 request: {}",
        out.message
    );

    let r = p
        .run(
            Kind::UnaryUnary,
            vec![Request {
                response_size: at_limit as i32,
                ..Default::default()
            }],
        )
        .single();
    assert_eq!(r.payload.len(), at_limit, "{p}: a 4 MiB reply");
    let out = p.run(
        Kind::UnaryUnary,
        vec![Request {
            response_size: at_limit as i32 + 1,
            ..Default::default()
        }],
    );
    assert_eq!(
        out.code,
        Code::ResourceExhausted,
        "{p}: 4 MiB + 1 reply: {}",
        out.message
    );
}

/// 50 calls of every pattern at once on one channel: the server's rendezvous
/// proves all 50 handlers run at the same time.
pub fn concurrent_calls(p: Pairing) {
    const N: usize = 50;
    let key = unique("concurrent", p);
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let key = key.clone();
            thread::spawn(move || {
                let kind = Kind::ALL[i % 4];
                let value = format!("call{i}");
                let first = Request {
                    rendezvous_key: key,
                    rendezvous_count: N as i32,
                    payload: pattern(i * 1000),
                    ..req(&value)
                };
                let requests = if kind.streams_requests() {
                    vec![first, req(&value)]
                } else {
                    vec![first]
                };
                let md = text_md(&[("x-call", &value)]);
                let replies = p
                    .call::<_, Reply>(Call::to(kind, requests).metadata(md.clone()))
                    .ok();
                let expected: Vec<(String, i32)> = match kind {
                    Kind::UnaryUnary => vec![(value.clone(), 0)],
                    Kind::UnaryStream => vec![(value.clone(), 1), (value.clone(), 2)],
                    Kind::StreamUnary => vec![(format!("{value},{value}"), 0)],
                    Kind::StreamStream => vec![(value.clone(), 1), (value.clone(), 2)],
                };
                let got: Vec<(String, i32)> = replies
                    .iter()
                    .map(|r| (r.message.clone(), r.seqno))
                    .collect();
                assert_eq!(got, expected, "{p} call {i}");
                assert_eq!(
                    received(&replies[0]),
                    md,
                    "{p} call {i}: metadata crossed calls"
                );
                assert_eq!(replies[0].payload_len, (i * 1000) as i64, "{p} call {i}");
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (i, t) in threads.into_iter().enumerate() {
        if t.join().is_err() {
            failures.push(i);
        }
    }
    assert!(
        failures.is_empty(),
        "{p}: calls {failures:?} failed (see their messages above)"
    );
}

fn unknown(p: Pairing, path: &'static str) {
    let mut messages = BTreeSet::new();
    for kind in Kind::ALL {
        let out = p.call::<_, Reply>(Call::new(path, kind, one_request(kind, req("u"))));
        assert_eq!(
            out.code,
            Code::Unimplemented,
            "{p} {kind:?} {path}: {out:?}"
        );
        assert!(out.responses.is_empty(), "{p} {kind:?}");
        messages.insert(out.message);
    }
    // The message is not specified; print it for comparison.
    eprintln!("{p}: {path} -> UNIMPLEMENTED {messages:?}");
}

/// A method the service does not have: UNIMPLEMENTED.
pub fn unknown_method(p: Pairing) {
    unknown(p, "/equivalence.Equivalence/no_such_method");
}

/// A service the server does not have: UNIMPLEMENTED.
pub fn unknown_service(p: Pairing) {
    unknown(p, "/equivalence.NoSuchService/unary_unary");
    unknown(p, "/nameko.Example/unary_unary");
}

/// A handler slower than the client's deadline: DEADLINE_EXCEEDED.
pub fn deadline_exceeded(p: Pairing) {
    for kind in [Kind::UnaryUnary, Kind::UnaryStream] {
        let request = Request {
            sleep_ms: 5000,
            ..req("slow")
        };
        let out =
            p.call::<_, Reply>(Call::to(kind, vec![request]).timeout(Duration::from_millis(300)));
        assert_eq!(out.code, Code::DeadlineExceeded, "{p} {kind:?}: {out:?}");
        eprintln!("{p} {kind:?}: DEADLINE_EXCEEDED {:?}", out.message);
    }
}

/// A handler that raises (Python), panics (Rust) or fails with a plain
/// Error (JavaScript): UNKNOWN, and the server keeps serving. The message
/// is each server's own (the spec leaves it open): grpcio's, which ours
/// copies, names where the exception came from: "Exception calling
/// application: ..." from a handler that returns one reply, "Exception
/// iterating responses: ..." from one that streams them; grpc-js sends the
/// error's message.
pub fn handler_panic(p: Pairing) {
    let message = "boom: ünïcödé 100%\nnext line";
    for kind in Kind::ALL {
        let request = Request {
            raise_message: message.into(),
            response_count: Some(1),
            ..req("p")
        };
        let out = p.run(kind, vec![request]);
        let expected = match p.server {
            // grpc-js: an asynchronous handler fails with an Error that
            // carries no gRPC code (tests/peers/node/server.js).
            Peer::GrpcJs => message.to_string(),
            Peer::Grpcio | Peer::Ours if kind.streams_responses() => {
                format!("Exception iterating responses: {message}")
            }
            Peer::Grpcio | Peer::Ours => format!("Exception calling application: {message}"),
        };
        out.assert_status(Code::Unknown, &expected);
        let replies = if kind == Kind::UnaryStream { 1 } else { 0 };
        assert_eq!(out.responses.len(), replies, "{p} {kind:?}");
    }
    // The server is still serving.
    assert_eq!(
        p.run(Kind::UnaryUnary, vec![req("alive")]).single().message,
        "alive",
        "{p}"
    );
}

/// A method that takes one request, called with none: UNIMPLEMENTED (the
/// gRPC spec's "request cardinality violation", doc/statuscodes.md; grpcio
/// agrees).
pub fn no_request_to_unary_method(p: Pairing) {
    for path in [paths::UNARY_UNARY, paths::UNARY_STREAM] {
        let out = p.call::<Request, Reply>(Call::new(path, Kind::StreamStream, vec![]));
        assert_eq!(out.code, Code::Unimplemented, "{p} {path}: {out:?}");
        assert!(out.responses.is_empty(), "{p} {path}");
    }
}

/// A method that takes one request, called with two: UNIMPLEMENTED per the
/// gRPC spec (doc/statuscodes.md, "request cardinality violation"). grpcio's
/// server does not follow it (it answers the first request and ignores the
/// second), hence our server only.
pub fn extra_request_to_unary_method(p: Pairing) {
    for path in [paths::UNARY_UNARY, paths::UNARY_STREAM] {
        let out = p.call::<Request, Reply>(Call::new(
            path,
            Kind::StreamStream,
            vec![req("one"), req("two")],
        ));
        assert_eq!(out.code, Code::Unimplemented, "{p} {path}: {out:?}");
    }
}

/// A call that expects one reply and gets none (with OK) or two:
/// UNIMPLEMENTED per the gRPC spec (doc/statuscodes.md, "response
/// cardinality violation"). grpcio's client does not follow it (no reply:
/// OK with `None`; two replies: it waits until the deadline), hence our
/// client only.
pub fn response_cardinality(p: Pairing) {
    for (path, kind) in [
        (paths::UNARY_STREAM, Kind::UnaryUnary),
        (paths::STREAM_STREAM, Kind::StreamUnary),
    ] {
        for count in [0, 2] {
            let request = Request {
                response_count: Some(count),
                ..req("c")
            };
            let requests = if kind == Kind::UnaryUnary {
                vec![request]
            } else {
                (0..count).map(|_| request.clone()).collect()
            };
            let out = p.call::<Request, Reply>(Call::new(path, kind, requests));
            assert_eq!(
                out.code,
                Code::Unimplemented,
                "{p} {path} as {kind:?}, {count} replies: {out:?}"
            );
        }
    }
}

/// Where grpc-js and the spec disagree: response cardinality (see
/// [`response_cardinality`]). grpc-js's client follows the spec when no
/// reply comes (UNIMPLEMENTED, "No message received"), and when a
/// client-streaming call gets two (UNIMPLEMENTED, "Too many responses
/// received"); but a unary call that gets two hangs until its deadline and
/// ends with DEADLINE_EXCEEDED (as grpcio's does), where the spec says
/// UNIMPLEMENTED: grpc-js 1.14.7's unary call (`makeUnaryRequest`) asks
/// for no message after the first, so it never reads the second one, nor
/// the status after it. The test gives those calls a short deadline and
/// holds grpc-js to what it does.
pub fn response_cardinality_of_grpcjs_client(p: Pairing) {
    assert_eq!(p.client, Peer::GrpcJs, "a grpc-js client behaviour");
    for (path, kind) in [
        (paths::UNARY_STREAM, Kind::UnaryUnary),
        (paths::STREAM_STREAM, Kind::StreamUnary),
    ] {
        for count in [0, 2] {
            let request = Request {
                response_count: Some(count),
                ..req("c")
            };
            let requests = if kind == Kind::UnaryUnary {
                vec![request]
            } else {
                (0..count).map(|_| request.clone()).collect()
            };
            let timeout = Duration::from_secs(2);
            let out = p.call::<Request, Reply>(Call::new(path, kind, requests).timeout(timeout));
            let expected = match (count, kind) {
                (0, _) => (Code::Unimplemented, "No message received"),
                (_, Kind::StreamUnary) => (Code::Unimplemented, "Too many responses received"),
                // grpc-js's own message, with timings.
                _ => (Code::DeadlineExceeded, out.message.as_str()),
            };
            assert_eq!(
                (out.code, out.message.as_str()),
                expected,
                "{p} {path} as {kind:?}, {count} replies: {out:?}"
            );
        }
    }
}

/// A request the server cannot parse: INTERNAL (doc/statuscodes.md: "Error
/// parsing request proto"). The message is not specified.
pub fn unparseable_request(p: Pairing) {
    for kind in Kind::ALL {
        let bad = vec![RequestAsBytes {
            value: vec![0xff, 0xfe],
        }];
        let out = p.call::<_, Reply>(Call::new(kind.path(), kind, bad).raw());
        assert_eq!(out.code, Code::Internal, "{p} {kind:?}: {out:?}");
        assert!(out.responses.is_empty(), "{p} {kind:?}");
    }
}

/// A reply the client cannot parse: INTERNAL (doc/statuscodes.md: "Error
/// parsing response proto"). The message is not specified.
pub fn unparseable_reply(p: Pairing) {
    for kind in Kind::ALL {
        // Payload bytes 128..=250 are not UTF-8.
        let requests = vec![Request {
            response_size: 300,
            ..Default::default()
        }];
        let call = Call::new(kind.path(), kind, requests).response_type("equivalence.ReplyAsText");
        let out = p.call::<_, ReplyAsText>(call);
        assert_eq!(out.code, Code::Internal, "{p} {kind:?}: {out:?}");
        assert!(out.responses.is_empty(), "{p} {kind:?}");
    }
}

/// Bytes sent as they are, whatever they encode: a request no protobuf
/// library would build. Decoding skips every field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawMessage(pub Vec<u8>);

impl prost::Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// A request that is no protobuf message at all (field 9, `payload`, says
/// 5 bytes follow; 1 does), which every protobuf library fails to parse:
/// INTERNAL (doc/statuscodes.md: "Error parsing request proto").
pub fn malformed_request(p: Pairing) {
    for kind in Kind::ALL {
        let bad = vec![RawMessage(vec![0x4a, 0x05, 0x01])];
        let out = p.call::<_, Reply>(Call::new(kind.path(), kind, bad).raw());
        assert_eq!(out.code, Code::Internal, "{p} {kind:?}: {out:?}");
        assert!(out.responses.is_empty(), "{p} {kind:?}");
    }
}

/// Where grpc-js and the spec disagree: a request whose string field holds
/// bytes that are not UTF-8. proto3 says a string field holds UTF-8 text,
/// and a request that does not parse gets INTERNAL (doc/statuscodes.md:
/// "Error parsing request proto"; our server and grpcio's do so, see
/// [`unparseable_request`]). grpc-js's server parses it with protobufjs,
/// which decodes the bytes lossily (U+FFFD for each bad sequence) without
/// error, and the handler runs with that text.
pub fn invalid_utf8_request_accepted_by_grpcjs(p: Pairing) {
    assert_eq!(p.server, Peer::GrpcJs, "a grpc-js server behaviour");
    for kind in Kind::ALL {
        let bad = vec![RequestAsBytes {
            value: vec![0xff, 0xfe],
        }];
        let out = p.call::<_, Reply>(Call::new(kind.path(), kind, bad).raw());
        let what = format!("{p} {kind:?}");
        let replies = out.ok();
        let expected = if kind == Kind::UnaryStream { 2 } else { 1 };
        assert_eq!(replies.len(), expected, "{what}: {replies:?}");
        assert_eq!(replies[0].message, "\u{fffd}\u{fffd}", "{what}");
    }
}

/// Where grpc-js and the spec disagree: a reply whose string field holds
/// bytes that are not UTF-8 (read as `ReplyAsText`). The spec's answer is
/// INTERNAL (doc/statuscodes.md: "Error parsing response proto"; our client
/// and grpcio's give it, see [`unparseable_reply`]); grpc-js's client
/// parses it with protobufjs, which decodes the bytes lossily (U+FFFD for
/// each bad sequence), and the call succeeds.
pub fn invalid_utf8_reply_accepted_by_grpcjs(p: Pairing) {
    assert_eq!(p.client, Peer::GrpcJs, "a grpc-js client behaviour");
    for kind in Kind::ALL {
        // Payload bytes 128..=250 are not UTF-8.
        let requests = vec![Request {
            response_size: 300,
            ..Default::default()
        }];
        let call = Call::new(kind.path(), kind, requests).response_type("equivalence.ReplyAsText");
        let out = p.call::<_, ReplyAsText>(call);
        let what = format!("{p} {kind:?}");
        let replies = out.ok();
        assert!(!replies.is_empty(), "{what}");
        for reply in &replies {
            let expected = String::from_utf8_lossy(&pattern(300)).into_owned();
            assert!(reply.payload.contains('\u{fffd}'), "{what}: {reply:?}");
            assert_eq!(reply.payload, expected, "{what}: decoded lossily");
        }
    }
}

// ---------------------------------------------------------------------------
// Compression (grpc/grpc doc/compression.md)
//
// What each side can see of it: our server reports the compressed flag of
// the request it answers (`Reply.request_compressed`, from
// `ServerContext::request_compressed`), our client that of each reply
// (`Response::compressed`, `Streaming::last_message_compressed`); grpcio's
// API shows neither, on either side. So every compression test also counts
// the bytes on the wire each way (`Call::count_wire`, a proxy): with 64 KiB
// of very compressible payload per message, a compressed direction carries
// a few KiB, a plain one more than the payloads. That view is the same in
// all four pairings.

const COMPRESSING: [Encoding; 2] = [Encoding::Gzip, Encoding::Deflate];

/// The payload of each message of the compression tests (it compresses to
/// about 1% of its size: a 251-byte cycle).
const BIG: usize = 64 * 1024;

/// Requests of `kind` for the compression tests: each carries BIG payload
/// bytes and asks for BIG bytes in each reply; `tweak` adds to each.
fn compressible(kind: Kind, tweak: impl Fn(Request) -> Request) -> Vec<Request> {
    let one = tweak(Request {
        payload: pattern(BIG),
        response_size: BIG as i32,
        report_compressed: true,
        ..req("z")
    });
    if kind.streams_requests() {
        vec![one.clone(), one]
    } else {
        vec![one]
    }
}

/// How many BIG messages a call of `kind` sends each way: (requests,
/// replies).
fn big_messages(kind: Kind) -> (usize, usize) {
    match kind {
        Kind::UnaryUnary => (1, 1),
        Kind::UnaryStream => (1, 2),
        Kind::StreamUnary => (2, 1),
        Kind::StreamStream => (2, 2),
    }
}

/// What `bytes` on the wire that carried `messages` BIG messages say:
/// compressed (under a quarter of their plain size), plain (at least their
/// size), or neither (a failure).
fn compressed_on_wire(bytes: u64, messages: usize) -> Option<bool> {
    let plain = (messages * BIG) as u64;
    if bytes < plain / 4 {
        Some(true)
    } else if bytes >= plain {
        Some(false)
    } else {
        None
    }
}

/// Checks a compression test's call: it succeeded, every request arrived
/// intact, and each direction was compressed or not as expected (on the
/// wire, and by the flags of whichever side is ours).
#[track_caller]
fn check_compression(
    p: Pairing,
    kind: Kind,
    out: Outcome<Reply>,
    requests_compressed: bool,
    replies_compressed: bool,
    what: &str,
) {
    let what = format!("{p} {kind:?} {what}");
    let wire = out.wire.expect("count_wire");
    let responses_compressed = out.responses_compressed.clone();
    let replies = out.ok();
    let (up, down) = big_messages(kind);
    assert_eq!(replies.len(), down, "{what}: replies");
    let crc = crc32(&pattern(BIG));
    for r in &replies {
        let expected = if kind == Kind::StreamUnary {
            (2 * BIG as i64, crc32_update(crc, &pattern(BIG)))
        } else {
            (BIG as i64, crc)
        };
        assert_eq!(
            (r.payload_len, r.payload_crc32),
            expected,
            "{what}: the request payload as the server saw it"
        );
        assert!(
            r.payload == pattern(BIG),
            "{what}: the reply payload differs"
        );
    }
    assert_eq!(
        compressed_on_wire(wire.up, up),
        Some(requests_compressed),
        "{what}: requests compressed on the wire? {wire:?}"
    );
    assert_eq!(
        compressed_on_wire(wire.down, down),
        Some(replies_compressed),
        "{what}: replies compressed on the wire? {wire:?}"
    );
    // grpcio's and grpc-js's servers do not show the flag (the field stays
    // unset).
    let seen: Vec<Option<bool>> = replies.iter().map(|r| r.request_compressed).collect();
    let expected = match p.server {
        Peer::Grpcio | Peer::GrpcJs => None,
        Peer::Ours => Some(requests_compressed),
    };
    assert_eq!(
        seen,
        vec![expected; down],
        "{what}: the compressed flag of the requests, as the server saw it"
    );
    // grpcio's and grpc-js's clients do not show the flag.
    let expected = match p.client {
        Peer::Grpcio | Peer::GrpcJs => None,
        Peer::Ours => Some(vec![replies_compressed; down]),
    };
    assert_eq!(
        responses_compressed, expected,
        "{what}: the compressed flag of the replies, as the client saw it"
    );
}

/// The client compresses its requests, per call, with each algorithm (and
/// not at all without one); the server decompresses them, in every pattern.
/// The replies are not compressed: both servers answer without compression
/// here because each request asks for identity replies
/// (`response_compression`), which keeps this test about requests (the
/// default is `compression_of_replies_by_default`).
pub fn compression_per_call(p: Pairing) {
    let identity_replies = |r: Request| Request {
        response_compression: "identity".into(),
        ..r
    };
    for encoding in [None, Some(Encoding::Gzip), Some(Encoding::Deflate)] {
        for kind in Kind::ALL {
            let mut call = Call::to(kind, compressible(kind, identity_replies)).count_wire();
            if let Some(encoding) = encoding {
                call = call.compression(encoding);
            }
            let out = p.call::<_, Reply>(call);
            let what = format!("call compression {encoding:?}");
            check_compression(p, kind, out, encoding.is_some(), false, &what);
        }
    }
}

/// A channel's default compression compresses the requests of its calls; a
/// call's own choice wins over it (identity on a compressing channel).
pub fn compression_channel_default(p: Pairing) {
    let identity_replies = |r: Request| Request {
        response_compression: "identity".into(),
        ..r
    };
    for encoding in COMPRESSING {
        for kind in Kind::ALL {
            let call = Call::to(kind, compressible(kind, identity_replies))
                .channel_compression(encoding)
                .count_wire();
            let out = p.call::<_, Reply>(call);
            check_compression(p, kind, out, true, false, &format!("channel {encoding}"));
        }
        let kind = Kind::UnaryUnary;
        let call = Call::to(kind, compressible(kind, identity_replies))
            .channel_compression(encoding)
            .compression(Encoding::Identity)
            .count_wire();
        let out = p.call::<_, Reply>(call);
        let what = format!("channel {encoding}, call identity");
        check_compression(p, kind, out, false, false, &what);
    }
}

/// A handler that sets the response compression (grpcio:
/// `context.set_compression`; ours: `ServerContext::set_compression`) gets
/// its replies compressed with it, whether the requests were compressed with
/// the same algorithm (the server answering in the request's algorithm),
/// not at all, or with the other one; and identity turns it off for a
/// compressed request. A grpc-js server has no way to compress its replies
/// (its handlers cannot ask, and it never does by itself): they go plain,
/// which the spec allows (doc/compression.md: a peer "MAY choose to respond
/// using a different compression method ... including not performing any
/// compression").
pub fn compression_set_by_server(p: Pairing) {
    let replies_compressed = p.server != Peer::GrpcJs;
    let other = |e: Encoding| {
        if e == Encoding::Gzip {
            Encoding::Deflate
        } else {
            Encoding::Gzip
        }
    };
    for encoding in COMPRESSING {
        let answer_in = |r: Request| Request {
            response_compression: encoding.as_str().into(),
            ..r
        };
        for request_encoding in [Some(encoding), None, Some(other(encoding))] {
            for kind in Kind::ALL {
                let mut call = Call::to(kind, compressible(kind, answer_in)).count_wire();
                if let Some(e) = request_encoding {
                    call = call.compression(e);
                }
                let out = p.call::<_, Reply>(call);
                let what = format!("requests {request_encoding:?}, replies {encoding}");
                let requests_compressed = request_encoding.is_some();
                check_compression(p, kind, out, requests_compressed, replies_compressed, &what);
            }
        }
        let identity_replies = |r: Request| Request {
            response_compression: "identity".into(),
            ..r
        };
        for kind in Kind::ALL {
            let call = Call::to(kind, compressible(kind, identity_replies))
                .compression(encoding)
                .count_wire();
            let out = p.call::<_, Reply>(call);
            let what = format!("requests {encoding}, replies identity");
            check_compression(p, kind, out, true, false, &what);
        }
    }
}

/// One streamed reply sent without compression (grpcio:
/// `context.disable_next_message_compression()`; ours:
/// `ResponseSink::send_uncompressed`) in a stream of compressed ones: only
/// that message goes plain. (From a grpc-js server all three go plain: it
/// never compresses replies, see [`compression_set_by_server`].)
pub fn compression_off_for_one_reply(p: Pairing) {
    let compressing = p.server != Peer::GrpcJs;
    for encoding in COMPRESSING {
        let request = |plain: bool| Request {
            response_size: BIG as i32,
            response_compression: encoding.as_str().into(),
            reply_uncompressed: plain,
            ..req("s")
        };
        let call = Call::to(
            Kind::StreamStream,
            vec![request(false), request(true), request(false)],
        )
        .count_wire();
        let out = p.call::<_, Reply>(call);
        let what = format!("{p} {encoding}");
        let wire = out.wire.expect("count_wire");
        let flags = out.responses_compressed.clone();
        let replies = out.ok();
        assert_eq!(msgs(&replies), vec![("s", 1), ("s", 2), ("s", 3)], "{what}");
        assert!(
            replies.iter().all(|r| r.payload == pattern(BIG)),
            "{what}: a reply payload differs"
        );
        let plain = if compressing { 1 } else { 3 };
        // One plain message and two compressed ones (or three plain ones).
        assert!(
            ((plain * BIG) as u64..(plain * BIG + BIG / 2) as u64).contains(&wire.down),
            "{what}: {wire:?}"
        );
        if p.client == Peer::Ours {
            let expected = vec![compressing, false, compressing];
            assert_eq!(flags, Some(expected), "{what}");
        }
    }
}

/// The reply compression when the handler does not choose. Here the two
/// servers differ on purpose, each within the spec (doc/compression.md: "a
/// gRPC peer MAY choose to respond using a different compression method to
/// that of the request, including not performing any compression"):
/// grpcio's server does not compress replies unless told to (per call or
/// server-wide); grpc-blocking's server answers in the request's algorithm
/// when the client accepts it, which our requirements ask for (MISSION
/// feature 8, issue #4, and nameko-grpc's documented behaviour). Either way,
/// every client reads the replies.
pub fn compression_of_replies_by_default(p: Pairing) {
    let replies_compressed = p.server == Peer::Ours;
    for encoding in COMPRESSING {
        for kind in Kind::ALL {
            let call = Call::to(kind, compressible(kind, |r| r))
                .compression(encoding)
                .count_wire();
            let out = p.call::<_, Reply>(call);
            let what = format!("requests {encoding}, no reply compression set");
            check_compression(p, kind, out, true, replies_compressed, &what);
        }
    }
}

// ---------------------------------------------------------------------------
// Deadlines and cancellation, as the handler sees them
//
// A handler asked to observe (`Request.observe_key`) records the deadline,
// waits until the call is cancelled (grpcio: `context.is_active()` false;
// ours: `ServerContext::is_cancelled`) and records that; the test reads the
// record with a second call (`observed`).

/// An observing call's requests of `kind`: for the request streams, a second
/// request the handler does not reach before the call ends.
fn observing(kind: Kind, key: &str, first: Request) -> Vec<Request> {
    let observe = Request {
        observe_key: key.into(),
        ..first
    };
    match kind {
        Kind::UnaryUnary | Kind::UnaryStream => vec![observe],
        Kind::StreamUnary => vec![observe, req("after")],
        // The handler replies to the first, then observes on the second.
        Kind::StreamStream => vec![req("before"), observe],
    }
}

/// A client timeout against a handler that outlives it: the client gets
/// DEADLINE_EXCEEDED; the handler saw the deadline (its time remaining at
/// the start, at most the timeout plus grpcio's rounding up) and then the
/// call's cancellation, with (almost) no time left.
pub fn deadline_seen_by_handler(p: Pairing) {
    let timeout = Duration::from_secs(3);
    for kind in Kind::ALL {
        let key = unique("deadline", p);
        let call = Call::to(kind, observing(kind, &key, req("d"))).timeout(timeout);
        let out = p.call::<_, Reply>(call);
        let what = format!("{p} {kind:?}");
        assert_eq!(out.code, Code::DeadlineExceeded, "{what}: {out:?}");
        let seen = p.observed(&key);
        assert!(seen.found && seen.done, "{what}: {seen:?}");
        assert!(seen.has_deadline, "{what}: {seen:?}");
        assert!(
            seen.remaining_ms_at_start > 0
                && seen.remaining_ms_at_start <= timeout.as_millis() as i64 + 1000,
            "{what}: time remaining at the start: {seen:?}"
        );
        assert!(
            seen.cancelled,
            "{what}: the handler did not see the call end: {seen:?}"
        );
        assert!(
            (0..=1000).contains(&seen.remaining_ms_at_cancel),
            "{what}: time remaining when the handler saw the call end: {seen:?}"
        );
        eprintln!("{what}: DEADLINE_EXCEEDED {:?}; {seen:?}", out.message);
    }
}

/// The client cancels (grpcio: `call.cancel()`; ours: `UnaryCall::cancel`,
/// `Streaming::cancel`) while the handler runs: mid-stream for the response
/// streams (after two replies), once the response headers arrived for the
/// others, its request stream still open. The client reports CANCELLED, and
/// the handler sees the cancellation. No deadline: the handler sees none.
pub fn client_cancels(p: Pairing) {
    for kind in Kind::ALL {
        let key = unique("cancel", p);
        let first = Request {
            response_count: Some(2),
            ..req("c")
        };
        let after = if kind.streams_responses() { 2 } else { 0 };
        let call = Call::to(kind, observing(kind, &key, first))
            .no_deadline()
            .cancel_after(after);
        let out = p.call::<_, Reply>(call);
        let what = format!("{p} {kind:?}");
        assert_eq!(out.code, Code::Cancelled, "{what}: {out:?}");
        assert_eq!(
            out.responses.len(),
            after,
            "{what}: replies before the cancel"
        );
        let seen = p.observed(&key);
        assert!(seen.found && seen.done, "{what}: {seen:?}");
        assert!(
            !seen.has_deadline && seen.remaining_ms_at_start == -1,
            "{what}: a call without a deadline: {seen:?}"
        );
        assert!(
            seen.cancelled,
            "{what}: the handler did not see the cancel: {seen:?}"
        );
        eprintln!("{what}: CANCELLED {:?}", out.message);
    }
}

// ---------------------------------------------------------------------------
// Rich error details (google.rpc.Status in grpc-status-details-bin)

/// A handler fails with a rich status (grpcio:
/// `context.abort_with_status(rpc_status.to_status(...))`; ours:
/// `Status::with_error_details`); the client reads the code, the message and
/// the details (grpcio: `rpc_status.from_call`, which also checks that the
/// details' code and message are the call's; ours: `Status::rpc_status`,
/// `Status::error_details`), in every pattern: in a Trailers-Only response
/// and in trailers after replies.
pub fn rich_error_details(p: Pairing) {
    let codes = [
        Code::InvalidArgument,
        Code::FailedPrecondition,
        Code::ResourceExhausted,
        Code::Unavailable,
    ];
    for (kind, code) in Kind::ALL.into_iter().zip(codes) {
        let message = format!("{kind:?} failed: ünïcödé 100%");
        let status = Status::with_error_details(code, message.clone(), every_error_detail());
        let failing = Request {
            error_status: status.details().to_vec(),
            response_count: Some(2),
            ..req("r")
        };
        let requests = match kind {
            Kind::UnaryUnary | Kind::UnaryStream => vec![failing],
            Kind::StreamUnary | Kind::StreamStream => vec![req("first"), failing],
        };
        let out = p.run(kind, requests);
        let what = format!("{p} {kind:?}");
        out.assert_status(code, &message);
        let replies = match kind {
            Kind::UnaryStream => 2,
            Kind::StreamStream => 1,
            _ => 0,
        };
        assert_eq!(
            out.responses.len(),
            replies,
            "{what}: replies before the failure"
        );
        let rich = out
            .rich_status
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no google.rpc.Status in the details: {out:?}"));
        assert_eq!(
            (rich.code, rich.message.as_str()),
            (code.as_i32(), message.as_str()),
            "{what}: the google.rpc.Status's code and message"
        );
        assert_eq!(
            out.error_details,
            every_error_detail(),
            "{what}: the details"
        );
    }
}
