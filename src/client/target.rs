//! Where a channel connects: the target forms it accepts (grpc/grpc
//! `doc/naming.md`), parsed.
//!
//! | target | connects to | `:authority` |
//! | --- | --- | --- |
//! | `host:port`, `http://host:port` | TCP, plaintext (h2c) | `host:port` |
//! | `https://host:port` (port 443 if left out) | TCP, TLS | `host:port` |
//! | `unix:relative/path`, `unix:/absolute/path`, `unix:///absolute/path` | a Unix domain socket | `localhost` |
//! | `unix-abstract:name` | a socket in Linux's abstract namespace | `localhost` |

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::TransportError;
use crate::transport::UnixAddr;

/// Something a channel can connect to: a target string (`"http://host:port"`,
/// `"https://host:port"`, `"host:port"`, `"unix:/path"`,
/// `"unix-abstract:name"`, as `&str` or `String`), or a [`SocketAddr`].
pub trait IntoTarget {
    /// The target as text, the form [`Channel::connect`](crate::Channel::connect) parses.
    fn into_target(self) -> String;
}

impl IntoTarget for &str {
    fn into_target(self) -> String {
        self.to_owned()
    }
}

impl IntoTarget for String {
    fn into_target(self) -> String {
        self
    }
}

impl IntoTarget for &String {
    fn into_target(self) -> String {
        self.clone()
    }
}

impl IntoTarget for SocketAddr {
    fn into_target(self) -> String {
        self.to_string()
    }
}

/// How to reach a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dial {
    /// TCP to `host:port`, every address the name resolves to.
    Tcp(String),
    /// A Unix domain socket.
    Unix(UnixAddr),
}

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Where to connect.
    pub(crate) dial: Dial,
    /// The host a TLS certificate must be valid for (and the SNI).
    pub(crate) host: String,
    /// What to send as `:authority` (unless overridden).
    pub(crate) authority_header: String,
    /// Whether the target asks for TLS (`https://`).
    pub(crate) tls: bool,
}

impl Target {
    /// The `:scheme` of requests.
    pub(crate) fn scheme(&self, tls: bool) -> &'static str {
        if tls {
            "https"
        } else {
            "http"
        }
    }

    /// The target as a person reads it, for errors.
    pub(crate) fn describe(&self) -> String {
        match &self.dial {
            Dial::Tcp(authority) => authority.clone(),
            Dial::Unix(addr) => format!("unix:{addr}"),
        }
    }
}

/// Parses a target string.
pub(crate) fn parse_target(target: &str) -> Result<Target, TransportError> {
    let invalid = |reason: &str| TransportError::InvalidUri {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(name) = target.strip_prefix("unix-abstract:") {
        if name.is_empty() {
            return Err(invalid("expected unix-abstract:NAME"));
        }
        return Ok(unix(UnixAddr::Abstract(name.as_bytes().to_vec())));
    }
    if let Some(rest) = target.strip_prefix("unix:") {
        let path = match rest.strip_prefix("//") {
            // unix://[authority]/path: only an empty authority is allowed.
            Some(after) if after.starts_with('/') => after,
            Some(_) => {
                return Err(invalid(
                    "unix:// needs an absolute path and no host: unix:///path, or unix:path",
                ))
            }
            None => rest,
        };
        if path.is_empty() {
            return Err(invalid("expected unix:PATH"));
        }
        return Ok(unix(UnixAddr::Path(PathBuf::from(path))));
    }
    let (rest, tls) = if let Some(rest) = target.strip_prefix("http://") {
        (rest, false)
    } else if let Some(rest) = target.strip_prefix("https://") {
        (rest, true)
    } else if target.contains("://") {
        return Err(invalid(
            "the scheme must be http://, https://, unix: or unix-abstract:",
        ));
    } else {
        (target, false)
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid("expected http://host:port"));
    }
    let authority = if tls && !has_port(authority) {
        format!("{authority}:443")
    } else {
        authority.to_owned()
    };
    let Some((host, _)) = authority
        .rsplit_once(':')
        .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    else {
        return Err(invalid("expected http://host:port with a numeric port"));
    };
    if http::uri::Authority::try_from(authority.as_str()).is_err() {
        return Err(invalid("the host:port is not a valid authority"));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Target {
        dial: Dial::Tcp(authority.clone()),
        host,
        authority_header: authority,
        tls,
    })
}

fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((host, port)) => !port.contains(']') && !host.is_empty(),
        None => false,
    }
}

fn unix(addr: UnixAddr) -> Target {
    Target {
        dial: Dial::Unix(addr),
        host: "localhost".into(),
        authority_header: "localhost".into(),
        tls: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_targets() {
        let t = parse_target("http://localhost:50051").unwrap();
        assert_eq!(t.dial, Dial::Tcp("localhost:50051".into()));
        assert_eq!((t.host.as_str(), t.tls), ("localhost", false));
        assert_eq!(
            parse_target("127.0.0.1:1").unwrap().authority_header,
            "127.0.0.1:1"
        );
        let t = parse_target("http://[::1]:8080/").unwrap();
        assert_eq!(t.dial, Dial::Tcp("[::1]:8080".into()));
        assert_eq!(t.host, "::1");
        for bad in [
            "",
            "http://",
            "localhost",
            "http://host:port",
            "ftp://h:1",
            "http://h:1/x",
        ] {
            let err = parse_target(bad).unwrap_err();
            assert!(
                matches!(err, TransportError::InvalidUri { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn https_targets_ask_for_tls_with_443_by_default() {
        let t = parse_target("https://example.com").unwrap();
        assert!(t.tls);
        assert_eq!(t.dial, Dial::Tcp("example.com:443".into()));
        assert_eq!(t.host, "example.com");
        let t = parse_target("https://foo.test.example:8443").unwrap();
        assert_eq!(t.authority_header, "foo.test.example:8443");
        let t = parse_target("https://[::1]").unwrap();
        assert_eq!(t.dial, Dial::Tcp("[::1]:443".into()));
    }

    #[test]
    fn unix_targets_as_naming_md_gives_them() {
        let path = |p: &str| Dial::Unix(UnixAddr::Path(PathBuf::from(p)));
        assert_eq!(
            parse_target("unix:relative/sock").unwrap().dial,
            path("relative/sock")
        );
        assert_eq!(
            parse_target("unix:/abs/sock").unwrap().dial,
            path("/abs/sock")
        );
        assert_eq!(
            parse_target("unix:///abs/sock").unwrap().dial,
            path("/abs/sock")
        );
        let t = parse_target("unix-abstract:my name").unwrap();
        assert_eq!(t.dial, Dial::Unix(UnixAddr::Abstract(b"my name".to_vec())));
        assert_eq!(t.authority_header, "localhost");
        for bad in ["unix:", "unix://host/sock", "unix-abstract:"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_users_have_converts() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(addr.into_target(), "127.0.0.1:9");
        assert_eq!(String::from("h:1").into_target(), "h:1");
        assert_eq!((&String::from("h:2")).into_target(), "h:2");
        assert_eq!("h:3".into_target(), "h:3");
    }
}
