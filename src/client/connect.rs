//! Dialling a target: every address its name resolves to, in order, within
//! the connect timeout.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::TransportError;

/// Connects to `authority` (`host:port`), trying each resolved address.
pub(crate) fn connect_tcp(authority: &str, timeout: Duration) -> Result<TcpStream, TransportError> {
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
