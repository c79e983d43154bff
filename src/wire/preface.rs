//! Telling an HTTP/2 client from anything else on the gRPC port.
//!
//! A gRPC client opens with the HTTP/2 connection preface (RFC 9113,
//! section 3.4). A server reads the first bytes before handing the socket
//! to h2: an HTTP/1.x request gets a plain HTTP/1.1 error response that
//! says what this port is (instead of a silent close), anything else is
//! closed.

/// The HTTP/2 client connection preface.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The most bytes read while deciding.
pub(crate) const MAX_SNIFF: usize = 8 * 1024;

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// Not enough bytes to tell yet.
    NeedMore,
    /// The HTTP/2 preface: hand the connection to h2.
    Http2,
    /// An HTTP/1.x request: send this response, then close.
    Http1(Vec<u8>),
    /// A TLS ClientHello (a handshake record, TLS 1.0 or later).
    Tls,
    /// Neither: close.
    Garbage,
}

/// Classifies the first bytes of a connection.
pub(crate) fn sniff(buf: &[u8]) -> Sniffed {
    // A TLS record: content type 22 (handshake), major version 3.
    if buf.first() == Some(&0x16) {
        return match buf.get(1) {
            None => Sniffed::NeedMore,
            Some(3) => Sniffed::Tls,
            Some(_) => Sniffed::Garbage,
        };
    }
    let n = buf.len().min(PREFACE.len());
    if buf[..n] == PREFACE[..n] {
        return if n == PREFACE.len() {
            Sniffed::Http2
        } else {
            Sniffed::NeedMore
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(status) => {
            if status.is_partial() && req.path.is_none() && buf.len() < MAX_SNIFF {
                return Sniffed::NeedMore;
            }
            Sniffed::Http1(http1_response(req.method, req.path))
        }
        // Too many headers: still an HTTP/1 request.
        Err(httparse::Error::TooManyHeaders) => Sniffed::Http1(http1_response(None, None)),
        Err(_) => Sniffed::Garbage,
    }
}

fn http1_response(method: Option<&str>, path: Option<&str>) -> Vec<u8> {
    let what = match (method, path) {
        (Some(m), Some(p)) => format!("{m} {p} over HTTP/1.x"),
        _ => "an HTTP/1.x request".to_owned(),
    };
    let body = format!(
        "This port serves gRPC, which needs HTTP/2 (with prior knowledge, or TLS with ALPN h2); \
         {what} cannot be served here.\n"
    );
    format!(
        "HTTP/1.1 505 HTTP Version Not Supported\r\n\
         content-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_and_its_prefixes() {
        assert_eq!(sniff(PREFACE), Sniffed::Http2);
        let mut more = PREFACE.to_vec();
        more.extend_from_slice(b"\x00\x00\x00\x04");
        assert_eq!(sniff(&more), Sniffed::Http2);
        for i in 1..PREFACE.len() {
            assert_eq!(sniff(&PREFACE[..i]), Sniffed::NeedMore, "{i}");
        }
    }

    #[test]
    fn http1_requests_get_an_error_that_names_the_problem() {
        for req in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /nameko.example/unary_unary HTTP/1.1\r\n",
            b"GET /",
        ] {
            match sniff(req) {
                Sniffed::Http1(resp) => {
                    let text = String::from_utf8(resp).unwrap();
                    assert!(text.starts_with("HTTP/1.1 505 "), "{text}");
                    assert!(text.contains("gRPC"));
                    assert!(text.contains("connection: close"));
                }
                Sniffed::NeedMore => {
                    assert_eq!(req, b"GET /", "only a cut request line may need more")
                }
                other => panic!("{other:?}"),
            }
        }
        match sniff(b"POST /a/b HTTP/1.1\r\n\r\n") {
            Sniffed::Http1(r) => {
                assert!(String::from_utf8(r)
                    .unwrap()
                    .contains("POST /a/b over HTTP/1.x"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_tls_client_hello_is_told_apart() {
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00"), Sniffed::Tls);
        assert_eq!(sniff(b"\x16"), Sniffed::NeedMore);
        assert_eq!(sniff(b"\x16\x07"), Sniffed::Garbage);
    }

    #[test]
    fn garbage_is_closed() {
        assert_eq!(sniff(b"\x00\x00\x00\x00"), Sniffed::Garbage);
        assert_eq!(sniff(b"GET\x00/ HTTP/1.1\r\n"), Sniffed::Garbage);
    }
}
