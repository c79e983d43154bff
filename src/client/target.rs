//! Where a channel connects: the target forms it accepts, parsed.

use std::net::SocketAddr;

use crate::error::TransportError;

/// Something a channel can connect to: `"http://host:port"`,
/// `"host:port"` (as `&str` or `String`), or a [`SocketAddr`].
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

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port` as given: where to connect.
    pub(crate) authority: String,
    /// What to send as `:authority` (the same, unless overridden).
    pub(crate) authority_header: String,
    /// The `:scheme`.
    pub(crate) scheme: &'static str,
}

/// Parses `http://host:port` or `host:port`.
pub(crate) fn parse_target(target: &str) -> Result<Target, TransportError> {
    let invalid = |reason: &str| TransportError::InvalidUri {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = if let Some(rest) = target.strip_prefix("http://") {
        rest
    } else if target.starts_with("https://") {
        return Err(invalid("TLS (https) is not supported yet; use http://"));
    } else if target.contains("://") {
        return Err(invalid("the scheme must be http://"));
    } else {
        target
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid("expected http://host:port"));
    }
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(invalid("expected http://host:port with a numeric port"));
    }
    if http::uri::Authority::try_from(authority).is_err() {
        return Err(invalid("the host:port is not a valid authority"));
    }
    Ok(Target {
        authority: authority.to_owned(),
        authority_header: authority.to_owned(),
        scheme: "http",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("http://localhost:50051").unwrap().authority,
            "localhost:50051"
        );
        assert_eq!(
            parse_target("127.0.0.1:1").unwrap().authority,
            "127.0.0.1:1"
        );
        assert_eq!(
            parse_target("http://[::1]:8080/").unwrap().authority,
            "[::1]:8080"
        );
        for bad in [
            "",
            "http://",
            "localhost",
            "http://host:port",
            "ftp://h:1",
            "http://h:1/x",
            "https://h:1",
        ] {
            let err = parse_target(bad).unwrap_err();
            assert!(
                matches!(err, TransportError::InvalidUri { .. }),
                "{bad}: {err}"
            );
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
