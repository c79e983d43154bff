//! Where a channel connects: the target forms it accepts (grpc/grpc
//! `doc/naming.md`), parsed.
//!
//! | target | connects to | `:authority` |
//! | --- | --- | --- |
//! | `host:port`, `http://host:port`, `dns:host:port`, `dns:///host:port` | TCP to every address DNS gives, plaintext (h2c) | `host:port` |
//! | `https://host:port` (port 443 if left out) | TCP to every address DNS gives, TLS | `host:port` |
//! | `ipv4:addr:port,addr:port,...`, `ipv6:[addr]:port,...` (port 443 if left out) | TCP to those addresses | the first `addr:port` |
//! | `unix:relative/path`, `unix:/absolute/path`, `unix:///absolute/path` | a Unix domain socket | `localhost` |
//! | `unix-abstract:name` | a socket in Linux's abstract namespace | `localhost` |
//!
//! `dns:`, `ipv4:` and `ipv6:` targets speak TLS when the channel is given
//! TLS settings; `http://` and `https://` say which themselves.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::client::resolver::Address;
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

/// How to find a target's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dial {
    /// TCP to `host:port`, every address the name resolves to.
    Tcp(String),
    /// A fixed list of addresses (`ipv4:`, `ipv6:`).
    Static(Vec<Address>),
    /// A Unix domain socket.
    Unix(UnixAddr),
}

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Where to connect.
    pub(crate) dial: Dial,
    /// Whether the scheme fixed plaintext or TLS (`http://`, `https://`),
    /// or TLS settings on the channel may turn it on (every other form).
    pub(crate) scheme_given: bool,
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
            Dial::Static(list) => list
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            Dial::Unix(addr) => format!("unix:{addr}"),
        }
    }
}

/// Parses `ipv4:` and `ipv6:` address lists (port 443 where left out).
fn parse_ip_list(list: &str, v6: bool) -> Result<Vec<Address>, String> {
    let mut out = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        let addr = if v6 {
            if let Some(rest) = item.strip_prefix('[') {
                let (ip, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("{item:?}: expected [address]:port"))?;
                let ip: std::net::Ipv6Addr = ip
                    .parse()
                    .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
                let port = match after.strip_prefix(':') {
                    Some(port) => port
                        .parse::<u16>()
                        .map_err(|_| format!("{port:?} is not a port"))?,
                    None if after.is_empty() => 443,
                    None => return Err(format!("{item:?}: expected [address]:port")),
                };
                SocketAddr::new(IpAddr::V6(ip), port)
            } else {
                let ip: std::net::Ipv6Addr = item.parse().map_err(|_| {
                    format!("{item:?} is not an IPv6 address (use [address]:port for a port)")
                })?;
                SocketAddr::new(IpAddr::V6(ip), 443)
            }
        } else {
            let (ip, port) = match item.rsplit_once(':') {
                Some((ip, port)) => (
                    ip,
                    port.parse::<u16>()
                        .map_err(|_| format!("{port:?} is not a port"))?,
                ),
                None => (item, 443),
            };
            let ip: std::net::Ipv4Addr = ip
                .parse()
                .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
            SocketAddr::new(IpAddr::V4(ip), port)
        };
        out.push(Address::Tcp(addr));
    }
    Ok(out)
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
    for (scheme, v6) in [("ipv4:", false), ("ipv6:", true)] {
        if let Some(list) = target.strip_prefix(scheme) {
            let addresses = parse_ip_list(list, v6).map_err(|e| invalid(&e))?;
            let first = match &addresses[0] {
                Address::Tcp(a) => *a,
                _ => unreachable!("IP lists hold TCP addresses"),
            };
            return Ok(Target {
                dial: Dial::Static(addresses),
                scheme_given: false,
                host: first.ip().to_string(),
                authority_header: first.to_string(),
                tls: false,
            });
        }
    }
    let (rest, tls, scheme_given) = if let Some(rest) = target.strip_prefix("http://") {
        (rest, false, true)
    } else if let Some(rest) = target.strip_prefix("https://") {
        (rest, true, true)
    } else if let Some(rest) = target.strip_prefix("dns:") {
        // dns:host:port, dns:///host:port; dns://server/host:port would name
        // a DNS server, which the system resolver cannot take.
        let rest = match rest.strip_prefix("//") {
            Some(after) => after.strip_prefix('/').ok_or_else(|| {
                invalid("a DNS server in the target (dns://server/...) is not supported: use dns:///host:port")
            })?,
            None => rest,
        };
        (rest, false, false)
    } else if target.contains("://") {
        return Err(invalid(
            "the scheme must be http://, https://, dns:, ipv4:, ipv6:, unix: or unix-abstract:",
        ));
    } else {
        (target, false, false)
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
        scheme_given,
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
        scheme_given: false,
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
    fn dns_and_address_list_targets() {
        for t in ["dns:localhost:5", "dns:///localhost:5"] {
            let t = parse_target(t).unwrap();
            assert_eq!(t.dial, Dial::Tcp("localhost:5".into()));
            assert!(!t.scheme_given);
        }
        assert!(parse_target("dns://8.8.8.8/localhost:5").is_err());
        let t = parse_target("ipv4:127.0.0.1:1,127.0.0.2:2,10.0.0.1").unwrap();
        let tcp = |s: &str| Address::Tcp(s.parse().unwrap());
        assert_eq!(
            t.dial,
            Dial::Static(vec![
                tcp("127.0.0.1:1"),
                tcp("127.0.0.2:2"),
                tcp("10.0.0.1:443")
            ])
        );
        assert_eq!(
            (t.authority_header.as_str(), t.host.as_str()),
            ("127.0.0.1:1", "127.0.0.1")
        );
        let t = parse_target("ipv6:[::1]:7,::2").unwrap();
        assert_eq!(t.dial, Dial::Static(vec![tcp("[::1]:7"), tcp("[::2]:443")]));
        assert_eq!(t.authority_header, "[::1]:7");
        for bad in [
            "ipv4:",
            "ipv4:1.2.3:4",
            "ipv4:127.0.0.1:x",
            "ipv6:[::1",
            "ipv6:1.2.3.4",
            "ipv6:[::1]x",
        ] {
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
