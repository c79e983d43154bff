//! The acceptor: takes new connections (refusing those over the limit with
//! a GOAWAY that says why), starts a thread for each, and drains them all
//! at shutdown.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rt::sync::{Condvar, Mutex};
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::server::conn;
use crate::server::limits::PeerKey;
use crate::server::link::{ConnCmd, ConnHandle};
use crate::server::peer::Peer;
use crate::server::state::ServerShared;
use crate::transport::{Listener, RawSocket};
use crate::wire::goaway;

/// The poll token of the listener.
const LISTENER: Token = Token(0);
/// The poll token of the waker `stop` uses.
const WAKER: Token = Token(1);
/// How soon a failed accept (out of file descriptors) is tried again.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How long a refused connection is kept open, its input drained, so that
/// the client reads the GOAWAY that says why before the socket closes
/// (closing with unread input resets a TCP connection, and a Unix socket
/// client writing into a closed socket fails before it reads).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Refused connections lingering at once, at most; beyond it one is closed
/// at once (a flood of refusals must not hold the file descriptors).
const MAX_LINGERING: usize = 256;
/// How often lingering connections are drained.
const LINGER_POLL: Duration = Duration::from_millis(20);

/// A refused connection waiting for its client to go.
struct Lingering {
    socket: RawSocket,
    until: Instant,
}

impl Lingering {
    /// Reads what the client sent; true while the socket should stay.
    fn drain(&self, now: Instant) -> bool {
        let mut sink = [0u8; 4096];
        loop {
            match (&self.socket).read(&mut sink) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return now < self.until,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
}

/// A server's acceptor and the connections it started.
pub(crate) struct Acceptor {
    shared: Arc<ServerShared>,
    conns: Mutex<HashMap<u64, Arc<ConnHandle>>>,
    conns_done: Condvar,
    next_conn: AtomicU64,
    stop: AtomicBool,
    /// The acceptor thread's wait (its only user), and how `stop` wakes it.
    poll: Mutex<Poll>,
    waker: Waker,
    /// Refused connections still draining (the acceptor's thread only).
    lingering: Mutex<Vec<Lingering>>,
}

impl Acceptor {
    pub(crate) fn new(shared: ServerShared) -> io::Result<Acceptor> {
        let poll = Poll::new()?;
        Ok(Acceptor {
            shared: Arc::new(shared),
            conns: Mutex::new(HashMap::new()),
            conns_done: Condvar::new(),
            next_conn: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            waker: Waker::new(poll.registry(), WAKER)?,
            poll: Mutex::new(poll),
            lingering: Mutex::new(Vec::new()),
        })
    }

    /// What the server's connections share.
    pub(crate) fn shared(&self) -> &ServerShared {
        &self.shared
    }

    /// Connections being served.
    pub(crate) fn connections(&self) -> usize {
        self.conns.lock().len()
    }

    /// Asks [`Acceptor::run`] to return; returns at once.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Accepts connections from `listener` until stopped.
    pub(crate) fn run(self: &Arc<Self>, listener: &Listener) -> io::Result<()> {
        let mut poll = self.poll.lock();
        let fd = listener.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)?;
        let result = self.accept_until_stopped(&mut poll, listener);
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
        result
    }

    fn accept_until_stopped(
        self: &Arc<Self>,
        poll: &mut Poll,
        listener: &Listener,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(4);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            // Readiness is edge-triggered: accept until the backlog is
            // empty, every time.
            let mut retry_soon = false;
            loop {
                match listener.accept() {
                    Ok(socket) => self.start_connection(socket),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving
                        // the connections we have, retry shortly (no new
                        // edge comes for connections already waiting).
                        log::error!("accept failed: {e}");
                        retry_soon = true;
                        break;
                    }
                }
            }
            let timeout = {
                let mut lingering = self.lingering.lock();
                let now = Instant::now();
                lingering.retain(|l| l.drain(now));
                let linger = (!lingering.is_empty()).then_some(LINGER_POLL);
                if retry_soon {
                    Some(linger.map_or(ACCEPT_RETRY, |l| l.min(ACCEPT_RETRY)))
                } else {
                    linger
                }
            };
            match poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn start_connection(self: &Arc<Self>, socket: RawSocket) {
        let limit = self.shared.config.max_connections;
        if self.conns.lock().len() >= limit {
            self.refuse(
                socket,
                &format!("the server is at its limit of {limit} connections"),
            );
            return;
        }
        let peer = match socket.tcp_peer() {
            Some(addr) => Peer::Tcp(addr),
            None => Peer::Unix(String::new()),
        };
        let peer_key = PeerKey::of(&peer);
        if !self.shared.peer_connections.open(peer_key) {
            let max = self.shared.peer_connections.max();
            self.refuse(
                socket,
                &format!(
                    "this client already has {max} connections, the most one client may have \
                     (ServerBuilder::max_connections_per_peer)"
                ),
            );
            return;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        // The connection may move between threads (adaptive inline
        // handlers): it says itself when it is over.
        let acceptor = self.clone();
        let on_end = conn::OnEnd(Some(Box::new(move || {
            acceptor.shared.connections.fetch_sub(1, Ordering::Relaxed);
            acceptor.shared.peer_connections.close(peer_key);
            let mut conns = acceptor.conns.lock();
            conns.remove(&id);
            if conns.is_empty() {
                acceptor.conns_done.notify_all();
            }
        })));
        let (handle, conn) = match conn::prepare(socket, self.shared.clone(), peer_key, on_end) {
            Ok(x) => x,
            Err(e) => {
                log::error!("could not set up a connection: {e}");
                return;
            }
        };
        self.conns.lock().insert(id, handle);
        if let Err(e) = conn.start("grpc-conn") {
            log::error!("could not start a connection thread: {e}");
        }
    }

    /// Graceful shutdown: GOAWAY everywhere, wait for calls to finish up to
    /// the grace period, then close what is left, and stop the handler pool.
    pub(crate) fn drain(&self) {
        // Health turns NOT_SERVING (and its watchers hear it) before the
        // connections are told to go away.
        self.shared.plugins.shutting_down();
        for c in self.conns.lock().values() {
            c.control(ConnCmd::Shutdown);
        }
        let deadline = Instant::now() + self.shared.config.shutdown_grace;
        let mut conns = self.conns.lock();
        while !conns.is_empty() {
            if self.conns_done.wait_until(&mut conns, deadline).timed_out() {
                for c in conns.values() {
                    c.control(ConnCmd::Abort);
                }
                // Aborted connections end promptly; wait for their threads.
                while !conns.is_empty() {
                    self.conns_done.wait(&mut conns);
                }
            }
        }
        drop(conns);
        self.shared.pool.shutdown();
        // Inline handlers handed off run on threads of their own: their
        // permits come back as they return.
        self.shared.handlers.wait_none_used();
        self.shared.handoff.stop();
    }
}

impl Acceptor {
    /// Refuses a connection over the limit, never blocking the acceptor:
    /// writes the GOAWAY that says why, and keeps the connection a moment,
    /// draining what the client sends, so that the client reads it.
    fn refuse(&self, socket: RawSocket, reason: &str) {
        log::warn!("refusing a connection: {reason}");
        let _ = socket.set_nonblocking(true);
        let _ = (&socket).write_all(&goaway::refusal(reason));
        let _ = socket.shutdown(Shutdown::Write);
        let mut lingering = self.lingering.lock();
        if lingering.len() < MAX_LINGERING {
            lingering.push(Lingering {
                socket,
                until: Instant::now() + REFUSAL_LINGER,
            });
        }
    }
}
