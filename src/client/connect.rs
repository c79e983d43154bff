//! Dialling one backend address: TCP within the connect timeout, or a Unix
//! socket. (TLS, when the target speaks it, follows in `subchannel.rs`.)

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::client::resolver::Address;
use crate::error::TransportError;
use crate::transport::{RawSocket, UnixAddr};

/// Connects to one address (no TLS yet), within `timeout`.
pub(crate) fn connect_address(
    address: &Address,
    timeout: Duration,
) -> Result<RawSocket, TransportError> {
    match address {
        Address::Tcp(addr) => connect_tcp(*addr, timeout).map(RawSocket::Tcp),
        other => match other.unix() {
            Some(unix) => connect_unix(&unix).map(RawSocket::Unix),
            None => Err(TransportError::InvalidUri {
                target: other.to_string(),
                reason: "not an address this library can dial".into(),
            }),
        },
    }
}

fn connect_unix(addr: &UnixAddr) -> Result<std::os::unix::net::UnixStream, TransportError> {
    // A local connect does not wait: it succeeds or fails at once.
    addr.connect().map_err(|source| TransportError::Connect {
        target: format!("unix:{addr}"),
        source,
    })
}

fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, TransportError> {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(TransportError::ConnectTimeout {
            target: addr.to_string(),
            timeout,
        }),
        Err(source) => Err(TransportError::Connect {
            target: addr.to_string(),
            source,
        }),
    }
}
