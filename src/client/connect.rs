//! Dialling a target: every address its name resolves to, in order, or its
//! Unix socket, within the connect timeout; then, for TLS, the handshake.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::client::target::{Dial, Target};
use crate::error::TransportError;
use crate::transport::{RawSocket, UnixAddr};

/// Connects to the target's socket (no TLS yet).
pub(crate) fn connect(target: &Target, timeout: Duration) -> Result<RawSocket, TransportError> {
    match &target.dial {
        Dial::Tcp(authority) => connect_tcp(authority, timeout).map(RawSocket::Tcp),
        Dial::Unix(addr) => connect_unix(addr).map(RawSocket::Unix),
    }
}

fn connect_unix(addr: &UnixAddr) -> Result<std::os::unix::net::UnixStream, TransportError> {
    // A local connect does not wait: it succeeds or fails at once.
    addr.connect().map_err(|source| TransportError::Connect {
        target: format!("unix:{addr}"),
        source,
    })
}

/// Connects to `authority` (`host:port`), trying each resolved address.
fn connect_tcp(authority: &str, timeout: Duration) -> Result<TcpStream, TransportError> {
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|source| TransportError::Resolve {
            target: authority.to_owned(),
            source,
        })?
        .collect();
    let deadline = Instant::now() + timeout;
    let mut last = None;
    for addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::ConnectTimeout {
                target: authority.to_owned(),
                timeout,
            });
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = Some(TransportError::ConnectTimeout {
                    target: authority.to_owned(),
                    timeout,
                })
            }
            Err(source) => {
                last = Some(TransportError::Connect {
                    target: authority.to_owned(),
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| TransportError::Resolve {
        target: authority.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
    }))
}
