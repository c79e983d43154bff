//! [`Peer`]: where a call came from, and (with TLS) who the client proved
//! to be.

use std::fmt;
use std::net::SocketAddr;

/// Where a call came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peer {
    /// A TCP client, at this address.
    Tcp(SocketAddr),
    /// A client of the Unix socket this server listens on, named by the
    /// socket's path (`@name` for a name in Linux's abstract namespace):
    /// Unix clients have no address of their own.
    Unix(String),
}

impl fmt::Display for Peer {
    /// gRPC's way of naming peers: `ipv4:127.0.0.1:5000`,
    /// `ipv6:[::1]:5000`, `unix:/run/app.sock`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a @ SocketAddr::V4(_)) => write!(f, "ipv4:{a}"),
            Peer::Tcp(a @ SocketAddr::V6(_)) => write!(f, "ipv6:{a}"),
            Peer::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

/// What a connection knows of its peer.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    pub(crate) addr: Peer,
    /// The client's verified certificate, when it sent one over TLS.
    #[cfg(feature = "tls")]
    pub(crate) certificates: Option<crate::tls::PeerCertificates>,
}

impl PeerInfo {
    pub(crate) fn new(addr: Peer) -> Self {
        PeerInfo {
            addr,
            #[cfg(feature = "tls")]
            certificates: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_named_as_grpc_names_them() {
        assert_eq!(
            Peer::Tcp("127.0.0.1:5000".parse().unwrap()).to_string(),
            "ipv4:127.0.0.1:5000"
        );
        assert_eq!(
            Peer::Tcp("[::1]:7".parse().unwrap()).to_string(),
            "ipv6:[::1]:7"
        );
        assert_eq!(
            Peer::Unix("/run/a.sock".into()).to_string(),
            "unix:/run/a.sock"
        );
    }
}
