//! Idle connections without threads.
//!
//! A connection that has had nothing to do for a while (no call, nothing to
//! write) gives its thread up: its whole state moves into a [`Parker`] and
//! the thread ends, so an idle connection costs its heap alone, not the
//! pages of a thread's stack. The parker's one thread waits on every parked
//! connection at once: each connection's own poll (an epoll instance, which
//! is itself readable once anything registered in it is ready) is
//! registered in the parker's poll. When a parked connection's socket has
//! data, another thread wakes it, or its next timer is due, the parker
//! hands it to a new thread, which drives it as before.
//!
//! No wake-up is lost: the connection announces that it sleeps (so other
//! threads signal its poll's waker from then on) and checks for work before
//! it parks, and registering a poll that is already ready reports it at
//! once.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::rt::sync::Mutex;

/// The parker's own wake-up: a new deadline, or the end.
const WAKER: Token = Token(usize::MAX);

/// How long a parked connection that could not get a thread waits before
/// the parker tries again.
const RETRY: Duration = Duration::from_millis(100);

/// A connection's state, while no thread drives it.
pub(crate) trait Parkable: Send + 'static {
    /// A descriptor that becomes readable when the connection needs a
    /// thread again (its poll's).
    fn wake_fd(&self) -> RawFd;
    /// When the connection must run again, whatever else happens (its next
    /// timer).
    fn next_deadline(&self) -> Option<Instant>;
    /// Drives the connection again, on the thread the parker started.
    fn resume(self: Box<Self>);
}

struct Entry {
    value: Box<dyn Parkable>,
    fd: RawFd,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct State {
    entries: HashMap<usize, Entry>,
    /// The parked connections' deadlines, by time.
    deadlines: BTreeSet<(Instant, usize)>,
    next_token: usize,
    /// The poll, until the parker's thread starts and takes it.
    poll: Option<Poll>,
    started: bool,
    stop: bool,
}

impl State {
    fn take(&mut self, token: usize) -> Option<Entry> {
        let entry = self.entries.remove(&token)?;
        if let Some(at) = entry.deadline {
            self.deadlines.remove(&(at, token));
        }
        Some(entry)
    }

    /// Watches `fd` for the value about to be recorded under the returned
    /// token.
    fn register(&mut self, fd: RawFd, registry: &Registry) -> io::Result<usize> {
        let token = self.next_token;
        self.next_token = (self.next_token + 1) % WAKER.0;
        registry.register(&mut SourceFd(&fd), Token(token), Interest::READABLE)?;
        Ok(token)
    }

    fn record(&mut self, token: usize, entry: Entry) {
        if let Some(at) = entry.deadline {
            self.deadlines.insert((at, token));
        }
        self.entries.insert(token, entry);
    }
}

struct Inner {
    state: Mutex<State>,
    registry: Registry,
    waker: Waker,
    /// The name and stack size of the threads that resume connections.
    thread_name: &'static str,
    stack_size: usize,
}

/// Holds idle connections on one thread (started at the first park), and
/// gives each a thread of its own again when it has something to do.
pub(crate) struct Parker {
    inner: Arc<Inner>,
}

impl Parker {
    /// A parker whose resumed connections run on threads named
    /// `thread_name` with stacks of `stack_size` bytes.
    pub(crate) fn new(thread_name: &'static str, stack_size: usize) -> io::Result<Parker> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok(Parker {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    poll: Some(poll),
                    ..State::default()
                }),
                registry,
                waker,
                thread_name,
                stack_size,
            }),
        })
    }

    /// Parks `value` until it has something to do. Gives it back when it
    /// cannot be parked (the parker's thread could not start): the caller
    /// keeps driving it.
    pub(crate) fn park<T: Parkable>(&self, value: Box<T>) -> Result<(), Box<T>> {
        let (fd, deadline) = (value.wake_fd(), value.next_deadline());
        let mut state = self.inner.state.lock();
        if !state.started {
            let Some(poll) = state.poll.take() else {
                return Err(value);
            };
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("grpc-parker".into())
                .stack_size(64 * 1024)
                .spawn(move || watch(&inner, poll));
            match spawned {
                Ok(_) => state.started = true,
                Err(e) => {
                    // The poll went with the closure: no parking from now on.
                    log::error!("could not start the thread that holds idle connections: {e}");
                    return Err(value);
                }
            }
        }
        let token = match state.register(fd, &self.inner.registry) {
            Ok(token) => token,
            Err(e) => {
                log::error!("could not park an idle connection (it keeps its thread): {e}");
                return Err(value);
            }
        };
        let value: Box<dyn Parkable> = value;
        state.record(
            token,
            Entry {
                value,
                fd,
                deadline,
            },
        );
        drop(state);
        if deadline.is_some() {
            // The parker's sleep may have to end sooner.
            let _ = self.inner.waker.wake();
        }
        Ok(())
    }

    /// Connections parked now.
    pub(crate) fn parked(&self) -> usize {
        self.inner.state.lock().entries.len()
    }
}

impl Drop for Parker {
    fn drop(&mut self) {
        self.inner.state.lock().stop = true;
        let _ = self.inner.waker.wake();
    }
}

/// The parker's thread: waits for any parked connection to need a thread,
/// or for the next deadline, and resumes those that do.
fn watch(inner: &Arc<Inner>, mut poll: Poll) {
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = {
            let state = inner.state.lock();
            if state.stop {
                break;
            }
            let now = Instant::now();
            state
                .deadlines
                .first()
                .map(|(at, _)| at.saturating_duration_since(now))
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::error!("the thread holding idle connections failed: {e}");
                break;
            }
        }
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut state = inner.state.lock();
            if state.stop {
                break;
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    due.extend(state.take(ev.token().0));
                }
            }
            while let Some(&(at, token)) = state.deadlines.first() {
                if at > now {
                    break;
                }
                due.extend(state.take(token));
            }
        }
        for entry in due {
            resume(inner, entry);
        }
    }
    // Whatever is still parked ends here (the server is gone).
    let entries = std::mem::take(&mut inner.state.lock().entries);
    drop(entries);
}

/// Starts a thread driving `entry` again; parks it for a retry when no
/// thread can be had.
fn resume(inner: &Arc<Inner>, entry: Entry) {
    let _ = inner.registry.deregister(&mut SourceFd(&entry.fd));
    let Entry { value, fd, .. } = entry;
    let cell = Arc::new(Mutex::new(Some(value)));
    let moved = cell.clone();
    let spawned = std::thread::Builder::new()
        .name(inner.thread_name.into())
        .stack_size(inner.stack_size)
        .spawn(move || {
            if let Some(value) = moved.lock().take() {
                value.resume();
            }
        });
    if let Err(e) = spawned {
        log::error!("could not start a thread for a connection that woke up: {e}");
        if let Some(value) = cell.lock().take() {
            let deadline = Some(Instant::now() + RETRY);
            let mut state = inner.state.lock();
            match state.register(fd, &inner.registry) {
                Ok(token) => state.record(
                    token,
                    Entry {
                        value,
                        fd,
                        deadline,
                    },
                ),
                Err(e) => {
                    // Nowhere to keep it: the connection ends.
                    log::error!("dropping a connection that woke up: {e}");
                    drop(state);
                    drop(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A parked value: an eventfd-like pipe end whose readability wakes it,
    /// and a channel told on which thread it resumed.
    struct Probe {
        poll: Poll,
        _waker: Arc<Waker>,
        deadline: Option<Instant>,
        resumed: mpsc::Sender<String>,
    }

    impl Parkable for Probe {
        fn wake_fd(&self) -> RawFd {
            use std::os::fd::AsRawFd;
            self.poll.as_raw_fd()
        }
        fn next_deadline(&self) -> Option<Instant> {
            self.deadline
        }
        fn resume(self: Box<Self>) {
            let name = std::thread::current().name().unwrap_or("").to_string();
            let _ = self.resumed.send(name);
        }
    }

    fn probe(deadline: Option<Instant>) -> (Box<Probe>, Arc<Waker>, mpsc::Receiver<String>) {
        let poll = Poll::new().expect("a poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("a waker"));
        let (tx, rx) = mpsc::channel();
        let p = Probe {
            poll,
            _waker: waker.clone(),
            deadline,
            resumed: tx,
        };
        (Box::new(p), waker, rx)
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_wake_up_resumes_a_parked_value_on_a_new_thread() {
        let parker = Parker::new("resumed", 64 * 1024).expect("a parker");
        let (p, waker, resumed) = probe(None);
        assert!(parker.park(p).is_ok());
        assert_eq!(parker.parked(), 1);
        assert!(resumed.recv_timeout(Duration::from_millis(50)).is_err());
        waker.wake().expect("wake");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        assert_eq!(parker.parked(), 0);
    }

    #[test]
    fn a_value_ready_before_it_parks_resumes_at_once() {
        let parker = Parker::new("resumed", 64 * 1024).expect("a parker");
        let (p, waker, resumed) = probe(None);
        waker.wake().expect("wake");
        assert!(parker.park(p).is_ok());
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
    }

    #[test]
    fn a_deadline_resumes_a_value_nothing_wakes() {
        let parker = Parker::new("resumed", 64 * 1024).expect("a parker");
        // A later deadline first, so the parker sleeps long before the
        // second park shortens its sleep.
        let (late, _late_waker, late_resumed) = probe(Some(Instant::now() + WAIT * 6));
        assert!(parker.park(late).is_ok());
        let (p, _waker, resumed) = probe(Some(Instant::now() + Duration::from_millis(20)));
        assert!(parker.park(p).is_ok());
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        assert!(late_resumed.try_recv().is_err());
        assert_eq!(parker.parked(), 1);
    }

    #[test]
    fn many_values_each_resume_once_when_woken() {
        let parker = Parker::new("resumed", 64 * 1024).expect("a parker");
        let probes: Vec<_> = (0..50).map(|_| probe(None)).collect();
        let mut wakers = Vec::new();
        for (p, waker, resumed) in probes {
            assert!(parker.park(p).is_ok());
            wakers.push((waker, resumed));
        }
        assert_eq!(parker.parked(), 50);
        for (waker, resumed) in wakers.iter().step_by(2) {
            waker.wake().expect("wake");
            assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        }
        assert_eq!(parker.parked(), 25);
        for (_, resumed) in wakers.iter().skip(1).step_by(2) {
            assert!(resumed.try_recv().is_err());
        }
    }
}
