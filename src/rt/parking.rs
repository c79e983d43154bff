//! Idle connections without threads of their own.
//!
//! A connection that has nothing to do (no call, nothing to write) can
//! give its thread up: its whole state moves into a [`Parker`]. The
//! parker's one thread waits on every parked connection at once: each
//! connection's own poll (an epoll instance, which is itself readable once
//! anything registered in it is ready) is registered in the parker's poll.
//! When a parked connection's socket has data, another thread wakes it, or
//! its next timer is due, the parker queues it for a small pool of threads
//! that drive connections until they park again. Many connections with a
//! call now and then thus share a few threads, and one `epoll_wait`
//! returns many of them, instead of a thread per connection waking per
//! call.
//!
//! No thread is stuck for good: a connection whose handler blocks is
//! handed to a thread of its own (`server/handoff.rs`), and when queued
//! connections wait while no pool thread takes any, the parker starts
//! another. Pool threads that find nothing to do for a while end, and so
//! does the parker's thread when it holds no connection.
//!
//! No wake-up is lost: the connection announces that it sleeps (so other
//! threads signal its poll's waker from then on) and checks for work before
//! it parks, and registering a poll that is already ready reports it at
//! once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::rt::sync::{Condvar, Mutex};

/// The parker's own wake-up: a new deadline, or the end.
const WAKER: Token = Token(usize::MAX);

/// How long queued connections may wait while no pool thread takes one
/// before the parker starts another thread.
const STALL: Duration = Duration::from_millis(1);

/// How long a pool thread waits for a connection before it ends, and the
/// parker's thread while it holds none.
const LINGER: Duration = Duration::from_secs(2);

/// A connection's state, while no thread drives it.
pub(crate) trait Parkable: Send + 'static {
    /// A descriptor that becomes readable when the connection needs a
    /// thread again (its poll's).
    fn wake_fd(&self) -> RawFd;
    /// When the connection must run again, whatever else happens (its next
    /// timer).
    fn next_deadline(&self) -> Option<Instant>;
    /// Drives the connection on a pool thread until it parks again, ends,
    /// or moves to a thread of its own.
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

    /// Records a registered value; true if its deadline is now the first.
    fn record(&mut self, token: usize, entry: Entry) -> bool {
        let mut first = false;
        if let Some(at) = entry.deadline {
            first = self.deadlines.first().is_none_or(|&(next, _)| at < next);
            self.deadlines.insert((at, token));
        }
        self.entries.insert(token, entry);
        first
    }
}

/// What the pool's threads share, under one lock.
#[derive(Default)]
struct Pool {
    queue: VecDeque<Box<dyn Parkable>>,
    /// Threads in the pool, and those of them waiting for a connection.
    total: usize,
    idle: usize,
    /// Connections taken from the queue so far (the parker's sign of
    /// progress).
    taken: u64,
    /// The server is gone: threads end.
    closed: bool,
}

/// The pool of threads that drive woken connections.
struct Workers {
    pool: Mutex<Pool>,
    ready: Condvar,
    /// Threads the pool starts without waiting for a stall.
    base: usize,
    thread_name: &'static str,
    stack_size: usize,
}

impl Workers {
    /// Starts a pool thread (the caller counted it in `total`); false if
    /// none could be started.
    fn spawn(self: &Arc<Self>) -> bool {
        let workers = self.clone();
        let spawned = std::thread::Builder::new()
            .name(self.thread_name.into())
            .stack_size(self.stack_size)
            .spawn(move || workers.work());
        if let Err(e) = spawned {
            self.pool.lock().total -= 1;
            log::error!("could not start a thread for woken connections: {e}");
            return false;
        }
        true
    }

    /// A pool thread: drives queued connections until none comes for a
    /// while.
    fn work(&self) {
        let mut pool = self.pool.lock();
        loop {
            if let Some(value) = pool.queue.pop_front() {
                pool.taken += 1;
                drop(pool);
                value.resume();
                pool = self.pool.lock();
                continue;
            }
            if pool.closed {
                break;
            }
            pool.idle += 1;
            let waited = self.ready.wait_for(&mut pool, LINGER);
            pool.idle -= 1;
            if waited.timed_out() && pool.queue.is_empty() {
                break;
            }
        }
        pool.total -= 1;
    }

    /// Queues woken connections, and makes sure a thread will take them.
    fn queue(self: &Arc<Self>, values: impl IntoIterator<Item = Box<dyn Parkable>>) {
        let mut pool = self.pool.lock();
        let before = pool.queue.len();
        pool.queue.extend(values);
        let added = pool.queue.len() - before;
        for _ in 0..added.min(pool.idle) {
            self.ready.notify_one();
        }
        let start = added > pool.idle && pool.total < self.base;
        if start {
            pool.total += 1;
        }
        drop(pool);
        if start {
            self.spawn();
        }
    }

    /// Called now and then by the parker: when queued connections have
    /// waited since the last call while no thread took any (every pool
    /// thread busy, or blocked in a handler), starts one more thread.
    /// `seen` is the progress seen at the last call.
    fn unstall(self: &Arc<Self>, seen: &mut u64) {
        let mut pool = self.pool.lock();
        let stalled = !pool.queue.is_empty() && pool.taken == *seen && pool.idle == 0;
        *seen = pool.taken;
        if stalled {
            pool.total += 1;
        }
        drop(pool);
        if stalled {
            self.spawn();
        }
    }

    /// Whether connections wait in the queue.
    fn backlog(&self) -> bool {
        !self.pool.lock().queue.is_empty()
    }

    fn close(&self) {
        let mut pool = self.pool.lock();
        pool.closed = true;
        pool.queue.clear();
        drop(pool);
        self.ready.notify_all();
    }
}

struct Inner {
    state: Mutex<State>,
    /// The parker's own thread's name.
    name: &'static str,
    registry: Registry,
    waker: Waker,
    workers: Arc<Workers>,
}

/// Holds idle connections on one thread (started at the first park), and
/// has a pool of threads drive each again when it wakes.
pub(crate) struct Parker {
    inner: Arc<Inner>,
}

impl Parker {
    /// A parker whose own thread is named `name` and whose woken
    /// connections run on threads named `thread_name` with stacks of
    /// `stack_size` bytes.
    pub(crate) fn new(
        name: &'static str,
        thread_name: &'static str,
        stack_size: usize,
    ) -> io::Result<Parker> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let base = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        Ok(Parker {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    poll: Some(poll),
                    ..State::default()
                }),
                name,
                registry,
                waker,
                workers: Arc::new(Workers {
                    pool: Mutex::new(Pool::default()),
                    ready: Condvar::new(),
                    base,
                    thread_name,
                    stack_size,
                }),
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
                .name(self.inner.name.into())
                // It may drop connections (at the end): room for that.
                .stack_size(256 * 1024)
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
        let first = state.record(
            token,
            Entry {
                value,
                fd,
                deadline,
            },
        );
        drop(state);
        if first {
            // The parker's sleep must end sooner.
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
/// or for the next deadline, and queues those that do; starts a pool
/// thread when queued connections stall.
fn watch(inner: &Arc<Inner>, mut poll: Poll) {
    let mut events = Events::with_capacity(256);
    let workers = &inner.workers;
    let mut seen = 0;
    // Since when nothing has been parked or queued.
    let mut empty_since = None;
    loop {
        let timeout = {
            let mut state = inner.state.lock();
            if state.stop {
                break;
            }
            let now = Instant::now();
            let backlog = workers.backlog();
            if state.entries.is_empty() && !backlog {
                let since = *empty_since.get_or_insert(now);
                if now.duration_since(since) >= LINGER {
                    // Nothing to hold for a while: the thread ends, and the
                    // next park starts it again with the same poll.
                    state.poll = Some(poll);
                    state.started = false;
                    return;
                }
            } else {
                empty_since = None;
            }
            let next = state
                .deadlines
                .first()
                .map(|(at, _)| at.saturating_duration_since(now));
            if backlog {
                Some(next.map_or(STALL, |n| n.min(STALL)))
            } else if state.entries.is_empty() {
                Some(LINGER)
            } else {
                next
            }
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
        if !due.is_empty() {
            for entry in &due {
                let _ = inner.registry.deregister(&mut SourceFd(&entry.fd));
            }
            workers.queue(due.into_iter().map(|entry| entry.value));
        }
        workers.unstall(&mut seen);
    }
    // Whatever is still parked or queued ends here (the server is gone).
    workers.close();
    let entries = std::mem::take(&mut inner.state.lock().entries);
    drop(entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A parked value: a poll with a waker in it, whose readability wakes
    /// it, and a channel told on which thread it resumed.
    struct Probe {
        poll: Poll,
        _waker: Arc<Waker>,
        deadline: Option<Instant>,
        resumed: mpsc::Sender<String>,
        /// Blocks the resume until this receives (or its sender goes).
        hold: Option<mpsc::Receiver<()>>,
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
            if let Some(hold) = &self.hold {
                let _ = hold.recv();
            }
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
            hold: None,
        };
        (Box::new(p), waker, rx)
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_wake_up_resumes_a_parked_value_on_a_pool_thread() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
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
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        let (p, waker, resumed) = probe(None);
        waker.wake().expect("wake");
        assert!(parker.park(p).is_ok());
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
    }

    #[test]
    fn a_deadline_resumes_a_value_nothing_wakes() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
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
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
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

    #[test]
    fn values_still_resume_while_every_pool_thread_is_blocked() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        // More blocked resumes than the pool starts threads for at once.
        let blocked = parker.inner.workers.base + 1;
        let mut holds = Vec::new();
        for _ in 0..blocked {
            let (mut p, waker, resumed) = probe(None);
            let (release, hold) = mpsc::channel();
            p.hold = Some(hold);
            assert!(parker.park(p).is_ok());
            waker.wake().expect("wake");
            assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
            holds.push(release);
        }
        // Every pool thread is stuck in a resume: another wakes anyway.
        let (p, waker, resumed) = probe(None);
        assert!(parker.park(p).is_ok());
        waker.wake().expect("wake");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        drop(holds);
    }

    /// Threads of this process named `name`.
    fn threads_named(name: &str) -> usize {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        tasks
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
            })
            .count()
    }

    #[test]
    fn the_parkers_thread_ends_when_it_holds_nothing_and_comes_back() {
        let parker = Parker::new("parker-linger", "resumed-linger", 64 * 1024).expect("a parker");
        for round in 0..2 {
            let (p, waker, resumed) = probe(None);
            assert!(parker.park(p).is_ok());
            // A new thread takes its name as it starts.
            let deadline = Instant::now() + WAIT;
            while threads_named("parker-linger") == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(threads_named("parker-linger"), 1, "round {round}");
            waker.wake().expect("wake");
            assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed-linger"));
            let deadline = Instant::now() + WAIT;
            while threads_named("parker-linger") + threads_named("resumed-linger") > 0
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(threads_named("parker-linger"), 0, "round {round}");
            assert_eq!(threads_named("resumed-linger"), 0, "round {round}");
        }
    }
}
