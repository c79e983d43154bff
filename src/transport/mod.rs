//! The byte streams connections run on: TCP or a Unix domain socket, with
//! TLS over either (the `tls` feature).
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | the raw socket ([`RawSocket`]), and [`Transport`], what a connection thread reads and writes: plaintext, or TLS over the raw socket, non-blocking either way |
//! | `unix.rs` | Unix socket addresses: paths, Linux's abstract names, binding over a stale socket file |
//! | `tls.rs` | TLS configuration (certificates, keys, roots, client authentication), the client's handshake, the verified peer's identity |
//!
//! A [`Transport`] never blocks: a read or write that cannot go on returns
//! `WouldBlock` and records which way the socket blocked ([`Blocked`]), so
//! the connection thread's event loop knows what to wait for.

pub(crate) mod unix;

pub(crate) use unix::UnixAddr;

#[cfg(feature = "tls")]
pub mod tls;

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A connected socket.
#[derive(Debug)]
pub(crate) enum RawSocket {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix domain socket.
    Unix(UnixStream),
}

impl RawSocket {
    /// Switches the socket between blocking and non-blocking I/O.
    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            RawSocket::Tcp(s) => s.set_nonblocking(nonblocking),
            RawSocket::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }

    /// Turns Nagle's algorithm off (TCP only: gRPC messages are written
    /// whole and should leave at once).
    pub(crate) fn set_nodelay(&self) {
        if let RawSocket::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    /// Closes one or both directions.
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            RawSocket::Tcp(s) => s.shutdown(how),
            RawSocket::Unix(s) => s.shutdown(how),
        }
    }

    /// The TCP peer's address (a Unix socket's peer has none worth telling).
    pub(crate) fn tcp_peer(&self) -> Option<SocketAddr> {
        match self {
            RawSocket::Tcp(s) => s.peer_addr().ok(),
            RawSocket::Unix(_) => None,
        }
    }

    /// Sets read and write timeouts (for blocking I/O during a client's TLS
    /// handshake).
    #[cfg(feature = "tls")]
    pub(crate) fn set_timeouts(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            RawSocket::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            RawSocket::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }
}

impl Read for &RawSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            RawSocket::Tcp(s) => (&*s).read(buf),
            RawSocket::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &RawSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            RawSocket::Tcp(s) => (&*s).write(buf),
            RawSocket::Unix(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self {
            RawSocket::Tcp(s) => (&*s).write_vectored(bufs),
            RawSocket::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl AsFd for RawSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            RawSocket::Tcp(s) => s.as_fd(),
            RawSocket::Unix(s) => s.as_fd(),
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix domain socket; a socket file is removed when the listener is
    /// dropped.
    Unix(UnixListener, UnixAddr),
}

impl Listener {
    /// Takes one pending connection.
    pub(crate) fn accept(&self) -> io::Result<RawSocket> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| RawSocket::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| RawSocket::Unix(s)),
        }
    }

    /// Switches accepting between blocking and non-blocking.
    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(nonblocking),
            Listener::Unix(l, _) => l.set_nonblocking(nonblocking),
        }
    }

    /// The TCP address listened on.
    pub(crate) fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// The Unix socket listened on.
    pub(crate) fn unix_addr(&self) -> Option<&UnixAddr> {
        match self {
            Listener::Tcp(_) => None,
            Listener::Unix(_, addr) => Some(addr),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, UnixAddr::Path(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Which way a non-blocking socket last blocked, and how much it has read.
#[derive(Debug, Default)]
pub(crate) struct Blocked {
    /// The socket has nothing more to read until it is readable again: a
    /// read would block, or a read came back short (the kernel hands over
    /// all it has, so a short read emptied the socket). Reads are not tried
    /// until the next readable event clears it (edge-triggered polling
    /// reports new data after any read).
    pub(crate) read: AtomicBool,
    /// The peer closed its side (or the socket failed): a short read no
    /// longer means the socket is drained, as the end of stream (or the
    /// error) waits behind the data and no new event announces it.
    pub(crate) read_closed: AtomicBool,
    /// A write would have blocked: wait until the socket is writable.
    pub(crate) write: AtomicBool,
    /// Bytes read from the socket so far (TLS records included).
    pub(crate) total_read: AtomicUsize,
}

/// How a [`Transport`] carries bytes over its socket.
enum Layer {
    /// As they are.
    Plain,
    /// Inside TLS.
    #[cfg(feature = "tls")]
    Tls(Box<rustls::Connection>),
}

/// What a connection thread reads and writes: plaintext, or TLS over a
/// raw socket, non-blocking either way. Every `WouldBlock` is recorded in
/// [`Blocked`].
pub(crate) struct Transport {
    raw: Arc<RawSocket>,
    blocked: Arc<Blocked>,
    layer: Layer,
}

/// Retries `op` while it is interrupted; records a `WouldBlock` in `flag`.
fn retry<T>(flag: &AtomicBool, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                flag.store(true, Ordering::Relaxed);
                return Err(e);
            }
            other => return other,
        }
    }
}

/// Reads from the socket unless it is known to be drained (see
/// [`Blocked::read`]); a short read marks it drained.
pub(crate) struct RawReader<'a> {
    pub(crate) raw: &'a RawSocket,
    pub(crate) blocked: &'a Blocked,
}

impl Read for RawReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.blocked.read.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = retry(&self.blocked.read, || (&*self.raw).read(buf))?;
        if n > 0 && n < buf.len() && !self.blocked.read_closed.load(Ordering::Relaxed) {
            self.blocked.read.store(true, Ordering::Relaxed);
        }
        self.blocked.total_read.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

impl Transport {
    /// A plaintext stream over `raw`.
    pub(crate) fn plain(raw: Arc<RawSocket>, blocked: Arc<Blocked>) -> Transport {
        Transport {
            raw,
            blocked,
            layer: Layer::Plain,
        }
    }

    /// Reads what is available (plaintext, decrypted when TLS is on).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.layer {
            Layer::Plain => RawReader {
                raw: &self.raw,
                blocked: &self.blocked,
            }
            .read(buf),
            #[cfg(feature = "tls")]
            Layer::Tls(conn) => tls::read(conn, &self.raw, &self.blocked, buf),
        }
    }

    /// Writes what the socket takes now (encrypting it when TLS is on).
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Writes what the socket takes now, from several buffers.
    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.layer {
            Layer::Plain => retry(&self.blocked.write, || (&*self.raw).write_vectored(bufs)),
            #[cfg(feature = "tls")]
            Layer::Tls(conn) => tls::write(conn, &self.raw, &self.blocked, bufs),
        }
    }

    /// Sends what is buffered (TLS records); `WouldBlock` while the socket
    /// does not take it all.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match &mut self.layer {
            Layer::Plain => Ok(()),
            #[cfg(feature = "tls")]
            Layer::Tls(conn) => tls::flush(conn, &self.raw, &self.blocked),
        }
    }

    /// Writes a short reply without TLS (best effort: what the socket takes
    /// at once), then closes the connection: the writing side at once, the
    /// reading side once the peer has closed its own (or after a second),
    /// draining what it still sends meanwhile. Closing with unread input
    /// would reset the connection, and a reset can discard the reply before
    /// the peer reads it.
    pub(crate) fn reply_and_close(&mut self, reply: &[u8]) {
        const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
        let _ = (&*self.raw).write(reply);
        let _ = self.raw.shutdown(Shutdown::Write);
        let until = std::time::Instant::now() + LINGER;
        let mut sink = [0u8; 4096];
        while std::time::Instant::now() < until {
            match (&*self.raw).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = self.raw.shutdown(Shutdown::Both);
    }

    /// Closes the writing side (after a TLS close_notify, when TLS is on).
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Layer::Tls(conn) = &mut self.layer {
            conn.send_close_notify();
            let _ = tls::flush(conn, &self.raw, &self.blocked);
        }
        match self.raw.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }

    /// Starts TLS on this transport: `conn` is a fresh server session, and
    /// `received` what was read off the socket before (the ClientHello's
    /// first bytes, read to tell TLS from plaintext). An error (a
    /// ClientHello TLS refuses) has its alert sent first, when the socket
    /// takes it.
    #[cfg(feature = "tls")]
    pub(crate) fn start_tls(
        &mut self,
        mut conn: rustls::Connection,
        received: &[u8],
    ) -> io::Result<()> {
        let mut rest = received;
        let mut result = Ok(());
        while !rest.is_empty() && result.is_ok() {
            result = conn.read_tls(&mut rest).and_then(|_| {
                conn.process_new_packets()
                    .map(drop)
                    .map_err(io::Error::other)
            });
        }
        if result.is_err() {
            let _ = tls::flush(&mut conn, &self.raw, &self.blocked);
        }
        self.layer = Layer::Tls(Box::new(conn));
        result
    }

    /// A stream whose TLS session (a client's, handshake done) is `conn`.
    #[cfg(feature = "tls")]
    pub(crate) fn with_tls(
        raw: Arc<RawSocket>,
        blocked: Arc<Blocked>,
        conn: rustls::Connection,
    ) -> Transport {
        Transport {
            raw,
            blocked,
            layer: Layer::Tls(Box::new(conn)),
        }
    }

    /// The TLS session, when TLS is on.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(&self) -> Option<&rustls::Connection> {
        match &self.layer {
            Layer::Tls(conn) => Some(conn),
            Layer::Plain => None,
        }
    }

    /// Whether a TLS handshake is under way.
    pub(crate) fn tls_handshaking(&self) -> bool {
        match &self.layer {
            Layer::Plain => false,
            #[cfg(feature = "tls")]
            Layer::Tls(conn) => conn.is_handshaking(),
        }
    }
}
