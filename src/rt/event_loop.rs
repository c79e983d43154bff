//! The connection thread's event loop plumbing.
//!
//! h2 drives I/O through `tokio::io::{AsyncRead, AsyncWrite}` and wakes tasks
//! through `std::task::Waker`, but needs no runtime. Each connection thread
//! therefore owns:
//!
//! - a non-blocking transport (plaintext or TLS, `transport::Transport`),
//!   wrapped in [`Socket`] for h2; it records when a read or write would
//!   block so the thread knows what to wait for;
//! - a `mio::Poll` the thread sleeps in: the socket is registered once,
//!   edge-triggered for both directions, so a wait is one `epoll_wait` and
//!   nothing else (its timeout, in milliseconds, is the next timer);
//! - a [`Wake`]: the connection's cross-thread wake-up (an eventfd, in the
//!   poll), a set of "dirty" keys (streams whose h2 futures were woken),
//!   and a `sleeping` flag so other threads only pay for a wake-up when
//!   the connection thread is actually asleep (or parked);
//! - while the connection parks (`rt/parking.rs`), its socket and its
//!   wake-up are also registered in the parker's shared poll, which then
//!   reports their readiness instead of its own poll.
//!
//! Edge-triggered readiness means a direction is waited for only once it
//! has run dry: a read that would block, or a short read (the kernel hands
//! over everything it has, so a read that fills less than its buffer
//! emptied the socket), marks the socket drained until the next readable
//! event, and no further read is tried meanwhile (`transport::Blocked`).
//!
//! Every h2 future is polled with a waker made by [`stream_waker`] for its
//! stream (or [`conn_waker`] for the connection itself); waking it marks that
//! stream (or the connection) dirty. The loop then re-polls exactly what is
//! dirty.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::rt::sync::Mutex;
use crossbeam_channel::Receiver;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll as MioPoll, Token};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::rt::parking::{Readiness, Registration, Signals, Sources, Wakeable};
use crate::rt::timers::{Timer, Timers};
use crate::rt::StreamKey;
use crate::transport::{Blocked, RawSocket, Transport};
use crate::wire::unix_authority::AuthorityFilter;

/// The poll token of the socket.
const SOCKET: Token = Token(0);
/// The poll token of the cross-thread waker.
const WAKER: Token = Token(1);

/// Shared wake-up state of one connection thread.
pub(crate) struct Wake {
    /// Written to wake the thread: readable, edge-triggered, in the
    /// connection's poll and (while it parks) in the parker's. It is never
    /// read: each write is an edge.
    eventfd: OwnedFd,
    sleeping: AtomicBool,
    /// The connection itself needs a poll.
    conn_dirty: AtomicBool,
    /// Streams that need a poll.
    dirty: Mutex<Vec<StreamKey>>,
    /// What the socket last blocked on, cleared as it becomes ready.
    blocked: Arc<Blocked>,
}

impl Wake {
    fn new(blocked: Arc<Blocked>) -> io::Result<Wake> {
        use rustix::event::EventfdFlags;
        let eventfd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Wake {
            eventfd,
            sleeping: AtomicBool::new(false),
            conn_dirty: AtomicBool::new(false),
            dirty: Mutex::new(Vec::new()),
            blocked,
        })
    }

    /// A wake-up with no connection thread behind it, for unit tests of
    /// what queues commands.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Arc<Wake> {
        Arc::new(Wake::new(Arc::default()).expect("an eventfd"))
    }

    /// Wakes the connection thread if it sleeps. Call after queueing work.
    pub(crate) fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            if rustix::io::write(&self.eventfd, &one) == Err(rustix::io::Errno::AGAIN) {
                // The counter is full (after 2^64 wake-ups): empty it.
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.eventfd, &mut buf);
                let _ = rustix::io::write(&self.eventfd, &one);
            }
        }
    }

    /// Marks `what` as needing a poll and wakes the thread.
    fn mark(&self, what: Option<StreamKey>) {
        match what {
            Some(key) => self.dirty.lock().push(key),
            None => self.conn_dirty.store(true, Ordering::SeqCst),
        }
        self.wake();
    }
}

impl Signals for Wake {
    fn socket_ready(&self, ready: Readiness) {
        if ready.read_closed || ready.error {
            self.blocked.read_closed.store(true, Ordering::Relaxed);
        }
        if ready.readable || ready.read_closed || ready.error {
            self.blocked.read.store(false, Ordering::Relaxed);
        }
        if ready.writable || ready.error {
            self.blocked.write.store(false, Ordering::Relaxed);
        }
        self.conn_dirty.store(true, Ordering::SeqCst);
    }
}

/// Wakes a connection thread for one of its streams (`Some`) or for the
/// connection itself (`None`).
struct KeyWaker {
    what: Option<StreamKey>,
    wake: Arc<Wake>,
}

impl std::task::Wake for KeyWaker {
    fn wake(self: Arc<Self>) {
        self.wake.mark(self.what);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wake.mark(self.what);
    }
}

/// A waker that marks stream `key` dirty.
pub(crate) fn stream_waker(wake: &Arc<Wake>, key: StreamKey) -> Waker {
    Waker::from(Arc::new(KeyWaker {
        what: Some(key),
        wake: wake.clone(),
    }))
}

/// A waker that marks the connection itself dirty.
pub(crate) fn conn_waker(wake: &Arc<Wake>) -> Waker {
    Waker::from(Arc::new(KeyWaker {
        what: None,
        wake: wake.clone(),
    }))
}

/// Bytes read from the socket in one round before h2 is made to yield, so
/// that the thread gets back to its streams (moving data to handlers and
/// callers) between reads instead of parsing a whole socket buffer at once.
const READ_ROUND: usize = 64 * 1024;

/// The most read from the socket in one system call.
const READ_MOST: usize = 64 * 1024;

/// The most read from the socket at a time through the authority filter
/// (the filter's output goes to h2 as h2 asks for it).
const FILTERED_READ: usize = 16 * 1024;

std::thread_local! {
    /// Where this thread's reads from a socket land before they are copied
    /// to h2's buffer. h2's reader hands over its buffer's spare room as
    /// memory never written (a fresh `ReadBuf` each read), and reading into
    /// it directly would mean zeroing all of it first: 8 KiB and more per
    /// read, whatever the read brings. With many connections those buffers
    /// are cold, and the zeroing cost a server at 1,000 connections with a
    /// call each about 0.8 µs a call, in cache misses. This buffer stays
    /// warm, grows only to the largest room asked for (at most
    /// [`READ_MOST`]), and only the bytes read are copied on.
    static READ_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads at most `most` bytes from `transport` into this thread's
/// [`READ_SCRATCH`] and hands what came to `take`: how many.
fn read_with(
    transport: &mut Transport,
    most: usize,
    take: impl FnOnce(&[u8]),
) -> io::Result<usize> {
    READ_SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < most {
            scratch.resize(most, 0);
        }
        let n = transport.read(&mut scratch[..most])?;
        take(&scratch[..n]);
        Ok(n)
    })
}

/// A connection's transport (plaintext, or TLS) as h2 wants it.
pub(crate) struct Socket {
    transport: Transport,
    /// Bytes read in the current round.
    round: usize,
    /// Bytes already read (while sniffing the protocol) that h2 must see
    /// first.
    replay: bytes::Bytes,
    /// A server's Unix socket: what h2 reads goes through this first.
    authority_filter: Option<Box<AuthorityFilter>>,
}

impl Socket {
    /// Reads what is available without h2 (before the HTTP/2 handshake):
    /// `WouldBlock` when nothing is.
    pub(crate) fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.transport.read(buf)
    }

    /// The transport underneath.
    pub(crate) fn transport(&mut self) -> &mut Transport {
        &mut self.transport
    }

    /// Bytes h2 must read before the socket's own.
    pub(crate) fn set_replay(&mut self, bytes: bytes::Bytes) {
        self.replay = bytes;
    }

    /// Drops `:authority` from the requests h2 reads (a server's Unix
    /// socket: see [`AuthorityFilter`]).
    pub(crate) fn filter_authority(&mut self) {
        self.authority_filter = Some(Box::default());
    }

    /// Reads for h2 through the authority filter: its output, refilled
    /// from the replayed bytes, then from the transport.
    fn read_filtered(&mut self, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some(filter) = self.authority_filter.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            if filter.has_output() {
                let n = buf.remaining().min(filter.output().len());
                buf.put_slice(&filter.output()[..n]);
                filter.consume(n);
                return Poll::Ready(Ok(()));
            }
            if !self.replay.is_empty() {
                let replay = std::mem::take(&mut self.replay);
                filter.feed(&replay);
                continue;
            }
            match read_with(&mut self.transport, FILTERED_READ, |bytes| {
                filter.feed(bytes)
            }) {
                Ok(0) => {
                    filter.finish();
                    if !filter.has_output() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// `Poll` for a non-blocking operation's result.
fn poll_io<T>(result: io::Result<T>) -> Poll<io::Result<T>> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.authority_filter.is_some() {
            if self.round >= READ_ROUND {
                self.round = 0;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let before = buf.filled().len();
            let polled = self.read_filtered(buf);
            if polled.is_pending() {
                self.round = 0;
            }
            self.round += buf.filled().len() - before;
            return polled;
        }
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            let chunk = self.replay.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        if self.round >= READ_ROUND {
            // Yield: the connection is polled again on the next turn of the
            // loop, after the streams have had their turn.
            self.round = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let most = buf.remaining().min(READ_MOST);
        match read_with(&mut self.transport, most, |bytes| buf.put_slice(bytes)) {
            Ok(n) => {
                self.round += n;
                Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.round = 0;
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_io(self.transport.write(buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_io(self.transport.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_io(self.transport.flush())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.transport.shutdown_write())
    }
}

/// One connection thread's wait: the socket's readiness, a notify from other
/// threads, or the next of its timers.
pub(crate) struct EventLoop {
    /// The connection's timers: the next one bounds each sleep.
    pub(crate) timers: Timers,
    wake: Arc<Wake>,
    poll: MioPoll,
    /// The socket (kept open here for as long as it is registered).
    raw: Arc<RawSocket>,
    /// The registrations in a parker's shared poll, while there are any.
    registration: Option<Registration>,
    events: Events,
    /// The list [`drive`] moves dirty streams into, kept between its calls
    /// with its room (a connection that parks between calls would
    /// otherwise grow a new one for each).
    dirty: Vec<StreamKey>,
}

impl EventLoop {
    /// Makes `socket` non-blocking and sets up the poller. Returns the loop,
    /// and the socket to hand to h2 (plaintext: `with_transport` sets TLS
    /// up).
    pub(crate) fn new(socket: RawSocket) -> io::Result<(EventLoop, Socket)> {
        Self::with_transport(socket, Transport::plain)
    }

    /// [`EventLoop::new`] with the transport made by `transport` from the
    /// raw socket and its blocked flags (a client's TLS session, say).
    pub(crate) fn with_transport(
        socket: RawSocket,
        transport: impl FnOnce(Arc<RawSocket>, Arc<Blocked>) -> Transport,
    ) -> io::Result<(EventLoop, Socket)> {
        socket.set_nonblocking(true)?;
        socket.set_nodelay();
        let raw = Arc::new(socket);
        let poll = MioPoll::new()?;
        poll.registry().register(
            &mut SourceFd(&raw.as_raw_fd()),
            SOCKET,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let blocked = Arc::new(Blocked::default());
        let wake = Arc::new(Wake::new(blocked.clone())?);
        poll.registry().register(
            &mut SourceFd(&wake.eventfd.as_raw_fd()),
            WAKER,
            Interest::READABLE,
        )?;
        let socket = Socket {
            transport: transport(raw.clone(), blocked),
            round: 0,
            replay: bytes::Bytes::new(),
            authority_filter: None,
        };
        Ok((
            EventLoop {
                timers: Timers::default(),
                wake,
                poll,
                raw,
                registration: None,
                events: Events::with_capacity(4),
                dirty: Vec::new(),
            },
            socket,
        ))
    }

    /// The shared wake-up handle, for other threads and for wakers.
    pub(crate) fn wake_handle(&self) -> &Arc<Wake> {
        &self.wake
    }

    /// Bytes read from the socket so far.
    pub(crate) fn bytes_read(&self) -> usize {
        self.wake.blocked.total_read.load(Ordering::Relaxed)
    }

    /// Moves the dirty streams into `into` (which is cleared first); returns
    /// whether the connection itself is dirty.
    pub(crate) fn take_dirty(&self, into: &mut Vec<StreamKey>) -> bool {
        into.clear();
        std::mem::swap(&mut *self.wake.dirty.lock(), into);
        self.wake.conn_dirty.swap(false, Ordering::SeqCst)
    }

    /// Announces that the thread sleeps (from now on, other threads' wake-ups
    /// write the connection's eventfd), then checks `has_work` and the dirty
    /// marks, closing the race with a waker that queued work just before:
    /// false, and nothing announced, if there is work. Before a sleep, and before the
    /// connection gives its thread up (`rt/parking.rs`).
    pub(crate) fn prepare_park(&self, has_work: impl Fn() -> bool) -> bool {
        self.wake.sleeping.store(true, Ordering::SeqCst);
        if has_work()
            || self.wake.conn_dirty.load(Ordering::SeqCst)
            || !self.wake.dirty.lock().is_empty()
        {
            self.wake.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Takes the connection out of the parker's shared poll, if it is in
    /// one: it waits on its own poll from now on.
    fn unregister(&mut self) {
        if let Some(registration) = self.registration.take() {
            registration.release(self.sources());
        }
    }

    /// A thread drives the connection (again, after a park or a park
    /// refused): what the shared poll reported is in the blocked flags and
    /// the dirty marks already, and the connection is looked at once more
    /// whatever woke it.
    fn resumed(&self) {
        self.wake.sleeping.store(false, Ordering::SeqCst);
        self.wake.conn_dirty.store(true, Ordering::SeqCst);
    }

    /// Sleeps until the socket is ready for what last blocked, another thread
    /// wakes us, or `timeout` passes. `has_work` is checked after announcing
    /// sleep and before sleeping. After a socket event, the connection is
    /// dirty. Returns whether anything happened (false: the time passed).
    pub(crate) fn sleep(
        &mut self,
        timeout: Option<Duration>,
        has_work: impl Fn() -> bool,
    ) -> io::Result<bool> {
        if !self.prepare_park(has_work) {
            return Ok(true);
        }
        // Its own poll holds what came meanwhile (each registration queues
        // its events), so nothing is lost by leaving the shared poll.
        self.unregister();
        self.wait(timeout)
    }

    /// One wait on the poll, up to `timeout`, with the sleep announced;
    /// records what the socket became ready for. Returns whether anything
    /// happened.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let result = self.poll.poll(&mut self.events, timeout);
        self.wake.sleeping.store(false, Ordering::SeqCst);
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for ev in self.events.iter() {
            if ev.token() == SOCKET {
                self.wake.socket_ready(Readiness {
                    readable: ev.is_readable(),
                    writable: ev.is_writable() || ev.is_write_closed(),
                    read_closed: ev.is_read_closed(),
                    error: ev.is_error(),
                });
            }
        }
        Ok(!self.events.is_empty())
    }
}

impl Wakeable for EventLoop {
    fn sources(&self) -> Sources<'_> {
        Sources {
            socket: Some(self.raw.as_fd()),
            write_blocked: self.wake.blocked.write.load(Ordering::Relaxed),
            wake: self.wake.eventfd.as_fd(),
        }
    }

    fn signals(&self) -> Arc<dyn Signals> {
        self.wake.clone()
    }

    fn registration(&mut self) -> &mut Option<Registration> {
        &mut self.registration
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_at()
    }

    fn wake(&self) {
        self.wake.wake()
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        // The socket would leave the shared poll as it closes, but the
        // wake-up may outlive the connection (in wakers other threads hold).
        self.unregister();
    }
}

/// One connection thread's work, as [`drive`] runs it.
pub(crate) trait Driver {
    /// What other threads send the connection.
    type Cmd;
    /// The connection's event loop (and its timers).
    fn event_loop(&mut self) -> &mut EventLoop;
    /// Applies one command from another thread.
    fn apply(&mut self, cmd: Self::Cmd);
    /// Polls one stream whose waker fired.
    fn poll_stream(&mut self, key: StreamKey);
    /// Polls the connection itself (socket readiness, or its waker fired).
    fn poll_conn(&mut self);
    /// Handles a timer that is due.
    fn on_timer(&mut self, timer: Timer);
    /// True once the connection is over.
    fn done(&self) -> bool;
    /// True when [`drive`] should return to its caller before sleeping
    /// (a server connection with a handler to run off the loop).
    fn wants_yield(&self) -> bool {
        false
    }
    /// How long the connection may have nothing to do before [`drive`]
    /// returns [`Drive::Park`] (its thread can go: `rt/parking.rs`); `None`
    /// keeps the thread.
    fn park_after(&self) -> Option<Duration> {
        None
    }
    /// True when the connection parks as soon as it would sleep (a zero
    /// [`Driver::park_after`]): then it may park with calls in flight too.
    fn parks_at_once(&self) -> bool {
        self.park_after() == Some(Duration::ZERO)
    }
    /// True when nothing of the connection needs a thread but a wake-up:
    /// nothing of its own to run, and no call (unless it parks at once:
    /// then calls in flight wait parked too, their wake-ups and timers
    /// bringing the connection back).
    fn parkable(&self) -> bool {
        false
    }
}

/// Why [`drive`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drive {
    /// The connection is over.
    Done,
    /// The driver asked to run something off the loop; call again after.
    Yield,
    /// The connection has had nothing to do for its
    /// [`Driver::park_after`]: it may give its thread up.
    Park,
}

/// Runs a connection thread's loop until the driver is done: commands from
/// other threads, then the streams and the connection whose wakers fired,
/// then due timers; then sleep until the socket, a wake-up or the next timer.
pub(crate) fn drive<D: Driver>(driver: &mut D, commands: &Receiver<D::Cmd>) -> io::Result<Drive> {
    let mut dirty = std::mem::take(&mut driver.event_loop().dirty);
    let result = drive_with(driver, commands, &mut dirty);
    driver.event_loop().dirty = dirty;
    result
}

/// [`drive`], with the list to move dirty streams into.
fn drive_with<D: Driver>(
    driver: &mut D,
    commands: &Receiver<D::Cmd>,
    dirty: &mut Vec<StreamKey>,
) -> io::Result<Drive> {
    // The first poll starts the handshake (and, on a call after a yield or
    // a park, looks at the connection again: cheap when nothing is new).
    driver.event_loop().resumed();
    let mut conn_dirty = true;
    let mut active = Instant::now();
    loop {
        while let Ok(cmd) = commands.try_recv() {
            driver.apply(cmd);
        }
        conn_dirty |= driver.event_loop().take_dirty(dirty);
        for &key in dirty.iter() {
            driver.poll_stream(key);
        }
        if conn_dirty {
            conn_dirty = false;
            driver.poll_conn();
        }
        let now = Instant::now();
        while let Some(timer) = driver.event_loop().timers.pop_due(now) {
            driver.on_timer(timer);
        }
        if driver.done() {
            return Ok(Drive::Done);
        }
        if driver.wants_yield() {
            return Ok(Drive::Yield);
        }
        let now = Instant::now();
        let mut timeout = driver.event_loop().timers.next_in(now);
        if let Some(after) = driver.park_after().filter(|_| driver.parkable()) {
            let left = (active + after).saturating_duration_since(now);
            if left.is_zero() {
                return Ok(Drive::Park);
            }
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        if driver
            .event_loop()
            .sleep(timeout, || !commands.is_empty())?
        {
            active = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::mem::MaybeUninit;

    #[test]
    fn a_read_for_h2_writes_only_the_bytes_it_read() {
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let (_poll, mut socket) = EventLoop::new(RawSocket::Unix(ours)).expect("an event loop");
        peer.write_all(b"hello").expect("write");
        let mut room = [MaybeUninit::<u8>::uninit(); 8192];
        let mut buf = ReadBuf::uninit(&mut room);
        let mut cx = Context::from_waker(Waker::noop());
        let polled = Pin::new(&mut socket).poll_read(&mut cx, &mut buf);
        assert!(matches!(polled, Poll::Ready(Ok(()))), "{polled:?}");
        assert_eq!(buf.filled(), b"hello");
        // Not the whole room: zeroing it costs every read, cold, whatever
        // the read brings.
        assert_eq!(buf.initialized().len(), 5);
    }

    #[test]
    fn a_read_for_h2_takes_at_most_read_most_bytes_and_the_rest_follows() {
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let (_poll, mut socket) = EventLoop::new(RawSocket::Unix(ours)).expect("an event loop");
        let sent: Vec<u8> = (0..READ_MOST + 100).map(|i| i as u8).collect();
        // The socket's buffer holds it all (a short read would mark the
        // socket drained until its poll says otherwise, and no poll runs
        // here).
        peer.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("a write timeout");
        peer.write_all(&sent)
            .expect("the socket's buffer takes 64 KiB");
        let mut room = vec![MaybeUninit::<u8>::uninit(); 2 * READ_MOST];
        let mut got = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        // A read, the yield at the end of a round (READ_ROUND), a read.
        for _ in 0..3 {
            let mut buf = ReadBuf::uninit(&mut room);
            if Pin::new(&mut socket)
                .poll_read(&mut cx, &mut buf)
                .is_pending()
            {
                continue;
            }
            assert_eq!(buf.initialized().len(), buf.filled().len());
            got.push(buf.filled().to_vec());
        }
        assert_eq!(got[0].len(), READ_MOST);
        assert_eq!(got.concat(), sent);
    }
}
