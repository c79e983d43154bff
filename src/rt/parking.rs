//! Idle connections without threads of their own.
//!
//! A connection that has nothing to do for now (no call, or calls that
//! all wait) can give its thread up: its whole state moves into a
//! [`Parker`]. At its first park, the connection's socket and its wake-up
//! (an eventfd other threads write to) are registered, edge-triggered, in
//! the parker's shared poll, and stay there while the connection parks
//! and runs in turn. A small pool of threads takes turns waiting on that
//! poll (leader/follower): one thread leads, waiting; the connections its
//! wait reports go to a queue; it wakes followers to share the queue
//! (where there is more than one core to run them on), drives one
//! connection itself until it parks again, and takes the next from the
//! queue, or leads again when the queue is empty. A busy pool thread thus
//! goes from one ready connection to the next with no hand-off and no
//! sleep, and one wait serves many connections in turn.
//!
//! Parks and wakes cost no system call of their own: the registrations
//! are made once, and the wait that reports a connection also says what
//! its socket became ready for. A report about a connection that is
//! running (its socket got more data, another thread woke it) is kept:
//! its next park is refused, and its thread goes on driving it. A
//! connection that goes back to sleeping on a thread of its own (its own
//! poll) takes its registrations out, so that the shared poll hears
//! nothing of it meanwhile, and puts them back at its next park.
//!
//! The parker's own thread keeps the parked connections' timers: at a
//! connection's next deadline it wakes the connection, which then comes up
//! in the shared poll like any wake-up. It also keeps the pool from
//! getting stuck: when no pool thread has waited on the shared poll, nor
//! taken a connection, for a while (every one of them busy, or blocked in
//! a handler), it starts another. Pool threads that find nothing to do for
//! a while end, and so does the parker's thread when it holds no
//! connection; the last pool thread stays while any connection is parked.
//!
//! No wake-up is lost: the connection announces that it sleeps (so other
//! threads write its wake-up from then on) and checks for work before it
//! parks; registering a descriptor that is already ready reports it at
//! once; and a report that comes while the connection runs refuses its
//! next park.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::event::{EventfdFlags, Timespec};

use crate::rt::sync::{Condvar, Mutex};

/// The token of the parker's stop signal in the shared poll.
const STOP: u64 = u64::MAX;

/// The low bit of a registration's token in the shared poll: set for the
/// connection's socket, clear for its wake-up.
const SOCKET_BIT: u64 = 1;

/// How long connections may wait with no pool thread waiting on the shared
/// poll, while none takes a connection either, before the parker wakes a
/// follower or starts another thread.
const STALL: Duration = Duration::from_millis(1);

/// The longest the parker's thread sleeps between looks at a pool that
/// makes progress (its looks start every [`STALL`] and double while each
/// finds connections taken since the one before): a stall that begins
/// meanwhile is noticed within two such sleeps.
const LOOK_MAX: Duration = Duration::from_millis(16);

/// The most connections one wait on the shared poll reports.
const BATCH: usize = 64;

/// How long a pool thread waits for a connection before it ends, and the
/// parker's thread while it holds none.
const LINGER: Duration = Duration::from_secs(2);

thread_local! {
    /// The parker whose pool this thread belongs to (its address), or 0.
    static POOL_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What a socket became ready for, as the shared poll reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// There is something to read.
    pub(crate) readable: bool,
    /// A write would not block.
    pub(crate) writable: bool,
    /// The peer closed its side.
    pub(crate) read_closed: bool,
    /// The socket failed.
    pub(crate) error: bool,
}

impl Readiness {
    /// What either says.
    fn or(self, other: Readiness) -> Readiness {
        Readiness {
            readable: self.readable || other.readable,
            writable: self.writable || other.writable,
            read_closed: self.read_closed || other.read_closed,
            error: self.error || other.error,
        }
    }

    fn of(flags: epoll::EventFlags) -> Readiness {
        use epoll::EventFlags as F;
        Readiness {
            readable: flags.intersects(F::IN | F::PRI),
            writable: flags.contains(F::OUT),
            read_closed: flags.intersects(F::RDHUP | F::HUP),
            error: flags.contains(F::ERR),
        }
    }
}

/// Where a connection hears of its socket's readiness, whichever thread
/// the report comes on.
pub(crate) trait Signals: Send + Sync + 'static {
    /// The connection's socket became ready for `ready`.
    fn socket_ready(&self, ready: Readiness);
}

/// What a connection registers in the shared poll at its first park.
pub(crate) struct Sources<'a> {
    /// The connection's socket, if it has one.
    pub(crate) socket: Option<BorrowedFd<'a>>,
    /// The connection waits for its socket to take more bytes: a park must
    /// hear when it can be written to. (Otherwise the socket is registered
    /// for reads only, so that a fresh registration of a socket that can
    /// be written to, as most can, reports nothing.)
    pub(crate) write_blocked: bool,
    /// Readable (edge-triggered: each write is reported) when another
    /// thread wakes the connection.
    pub(crate) wake: BorrowedFd<'a>,
}

/// A connection's registrations in a parker's shared poll, from its first
/// park until [`Registration::release`] or until it is dropped. Dropping
/// it forgets the connection; its descriptors leave the poll as they
/// close.
pub(crate) struct Registration {
    token: u64,
    parker: Weak<Inner>,
}

impl Registration {
    /// Takes `sources` (the ones registered) out of the shared poll: the
    /// connection sleeps on a thread of its own for now.
    pub(crate) fn release(self, sources: Sources<'_>) {
        if let Some(inner) = self.parker.upgrade() {
            if let Some(socket) = sources.socket {
                let _ = epoll::delete(&inner.epoll, socket);
            }
            let _ = epoll::delete(&inner.epoll, sources.wake);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.parker.upgrade() {
            inner.state.lock().regs.remove(&self.token);
        }
    }
}

/// What the parker needs of a parked connection's event loop.
pub(crate) trait Wakeable {
    /// What brings the connection back: see [`Sources`].
    fn sources(&self) -> Sources<'_>;
    /// Where the connection hears of its socket's readiness (asked once, as
    /// it registers).
    fn signals(&self) -> Arc<dyn Signals>;
    /// Where the connection keeps its [`Registration`] between parks.
    fn registration(&mut self) -> &mut Option<Registration>;
    /// When the connection must run again, whatever else happens (its next
    /// timer).
    fn next_deadline(&self) -> Option<Instant>;
    /// Wakes the connection (its next deadline is due).
    fn wake(&self);
}

/// A connection's state, while no thread drives it.
pub(crate) trait Parkable: Send + 'static {
    /// Its event loop, as the parker sees it.
    fn wakeable(&mut self) -> &mut dyn Wakeable;
    /// Drives the connection on a pool thread until it parks again, ends,
    /// or moves to a thread of its own.
    fn resume(self: Box<Self>);
}

struct Entry {
    value: Box<dyn Parkable>,
    deadline: Option<Instant>,
}

/// A registered connection, parked or not.
struct Reg {
    signals: Arc<dyn Signals>,
    /// Its socket is registered for writes too.
    writes: bool,
    /// The shared poll reported the connection while it ran: its next park
    /// is refused.
    woken: bool,
    /// What its socket was reported ready for while it ran. Told again when
    /// its park is refused: the thread that ran it may have marked the
    /// socket blocked after the report cleared the mark (a read that came
    /// back short as more bytes arrived).
    missed: Readiness,
}

#[derive(Default)]
struct State {
    /// Every registered connection, by token.
    regs: HashMap<u64, Reg>,
    /// The parked ones.
    entries: HashMap<u64, Entry>,
    /// The parked connections' deadlines, by time (woken ones leave).
    deadlines: BTreeSet<(Instant, u64)>,
    next_token: u64,
    /// Connections reported ready, for the next free pool thread.
    queue: VecDeque<Entry>,
    /// Pool threads, started or starting.
    threads: usize,
    /// Pool threads waiting for a turn as leader or for queued connections.
    followers: usize,
    /// A pool thread waits on the shared poll.
    leader: bool,
    /// The parker's own thread runs, and when it wakes next.
    watching: bool,
    watch_until: Option<Instant>,
    stop: bool,
}

impl State {
    fn take(&mut self, token: u64) -> Option<Entry> {
        let entry = self.entries.remove(&token)?;
        if let Some(at) = entry.deadline {
            self.deadlines.remove(&(at, token));
        }
        Some(entry)
    }

    /// Whether connections wait for a thread that nobody leads the poll
    /// for (every pool thread is driving a connection, or blocked in one).
    fn unled(&self) -> bool {
        !self.leader && (!self.entries.is_empty() || !self.queue.is_empty())
    }
}

struct Inner {
    /// The shared poll, holding every parked connection's.
    epoll: OwnedFd,
    /// Readable (level-triggered) once the parker is gone: the leader
    /// leaves its wait.
    stop: OwnedFd,
    state: Mutex<State>,
    /// Followers sleep on it.
    turn: Condvar,
    /// The parker's thread sleeps on it.
    tick: Condvar,
    /// Connections taken by pool threads so far (progress, for stalls).
    taken: AtomicU64,
    /// Times the parker's thread has looked at the pool.
    #[cfg(test)]
    looks: AtomicU64,
    /// How many connections the queue holds (read without the lock).
    queued: AtomicUsize,
    /// The parker's thread sleeps until told (a pool thread led the poll
    /// and none had taken a connection since its previous look): the next
    /// leader to see connections ready tells it.
    dozing: AtomicBool,
    /// Threads the pool starts without waiting for a stall.
    base: usize,
    /// The cores this process may run on.
    cores: usize,
    /// The parker's own thread's name, and the pool threads'.
    name: &'static str,
    thread_name: &'static str,
    stack_size: usize,
}

/// Holds idle connections, and has a pool of threads drive each again
/// when it wakes.
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
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let stop = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &stop,
            epoll::EventData::new_u64(STOP),
            epoll::EventFlags::IN,
        )?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let base = cores.max(2);
        Ok(Parker {
            inner: Arc::new(Inner {
                epoll,
                stop,
                state: Mutex::new(State::default()),
                turn: Condvar::new(),
                tick: Condvar::new(),
                taken: AtomicU64::new(0),
                #[cfg(test)]
                looks: AtomicU64::new(0),
                queued: AtomicUsize::new(0),
                dozing: AtomicBool::new(false),
                base,
                cores,
                name,
                thread_name,
                stack_size,
            }),
        })
    }

    /// Parks `value` until it has something to do. Gives it back when it
    /// cannot be parked (no thread could be started to watch it, or its
    /// registration failed) or must not be (the shared poll reported it
    /// while it ran): the caller keeps driving it.
    pub(crate) fn park<T: Parkable>(&self, mut value: Box<T>) -> Result<(), Box<T>> {
        let inner = &self.inner;
        let deadline = value.wakeable().next_deadline();
        let mut state = inner.state.lock();
        if state.stop {
            return Err(value);
        }
        let known = value
            .wakeable()
            .registration()
            .as_ref()
            .filter(|r| Weak::as_ptr(&r.parker) == Arc::as_ptr(inner))
            .map(|r| r.token);
        let token = match known {
            Some(token) => {
                if let Some(reg) = state.regs.get_mut(&token) {
                    if std::mem::take(&mut reg.woken) {
                        // Something came while it ran: it goes on.
                        let missed = std::mem::take(&mut reg.missed);
                        if missed != Readiness::default() {
                            reg.signals.socket_ready(missed);
                        }
                        return Err(value);
                    }
                    let sources = value.wakeable().sources();
                    if sources.write_blocked && !reg.writes {
                        if let Err(e) = watch_writes(inner, &sources, token) {
                            log::error!("could not park a connection (it keeps its thread): {e}");
                            return Err(value);
                        }
                        reg.writes = true;
                    }
                }
                token
            }
            None => {
                // Wake-ups left from before (while it ran, or slept on its
                // own poll) would be reported as soon as it registers: they
                // are taken here, and the connection goes on instead.
                let mut count = [0u8; 8];
                match rustix::io::read(value.wakeable().sources().wake, &mut count) {
                    Err(rustix::io::Errno::AGAIN) => {}
                    Ok(_) => return Err(value),
                    Err(e) => {
                        log::error!("could not park an idle connection (it keeps its thread): {e}");
                        return Err(value);
                    }
                }
                let token = state.next_token;
                state.next_token = (state.next_token + 1) % (STOP >> 1);
                if let Err(e) = register(inner, &value.wakeable().sources(), token) {
                    log::error!("could not park an idle connection (it keeps its thread): {e}");
                    return Err(value);
                }
                let wakeable = value.wakeable();
                let writes = wakeable.sources().write_blocked;
                state.regs.insert(
                    token,
                    Reg {
                        signals: wakeable.signals(),
                        writes,
                        woken: false,
                        missed: Readiness::default(),
                    },
                );
                // Unlocked below, once the entry is in: a report of the new
                // registration waits for the lock and finds it.
                *value.wakeable().registration() = Some(Registration {
                    token,
                    parker: Arc::downgrade(inner),
                });
                token
            }
        };
        if !state.watching {
            let watcher = inner.clone();
            let spawned = std::thread::Builder::new()
                .name(inner.name.into())
                .stack_size(64 * 1024)
                .spawn(move || watch(&watcher));
            match spawned {
                Ok(_) => state.watching = true,
                Err(e) => {
                    log::error!("could not start the thread that holds idle connections: {e}");
                    return Err(value);
                }
            }
        }
        if state.threads == 0 && !Inner::spawn(inner, &mut state) {
            return Err(value);
        }
        while state.threads < inner.base && Inner::spawn(inner, &mut state) {}
        let mut sooner = false;
        if let Some(at) = deadline {
            sooner = state.watch_until.is_none_or(|until| at < until);
            state.deadlines.insert((at, token));
        }
        state.entries.insert(token, Entry { value, deadline });
        // A pool thread leads once it is back from this connection; any
        // other thread (a connection's own, the acceptor) makes sure one
        // leads.
        let ours = POOL_OF.with(|p| p.get()) == Arc::as_ptr(inner) as usize;
        if !ours && !state.leader {
            if state.followers > 0 {
                inner.turn.notify_one();
            } else {
                // Every pool thread is busy: the parker's thread watches
                // them for a stall.
                sooner = true;
            }
        }
        drop(state);
        if sooner {
            // The parker's sleep must end sooner.
            inner.tick.notify_one();
        }
        Ok(())
    }

    /// Whether woken connections wait for a pool thread to take them (a
    /// hint, read without the lock).
    pub(crate) fn backlog(&self) -> bool {
        self.inner.queued.load(Ordering::Relaxed) > 0
    }

    /// Connections parked now (queued ones included: no thread has taken
    /// them yet).
    pub(crate) fn parked(&self) -> usize {
        let state = self.inner.state.lock();
        state.entries.len() + state.queue.len()
    }
}

/// Registers `sources` in the shared poll, edge-triggered, under `token`.
fn register(inner: &Inner, sources: &Sources<'_>, token: u64) -> io::Result<()> {
    use epoll::EventFlags as F;
    let key = token << 1;
    epoll::add(
        &inner.epoll,
        sources.wake,
        epoll::EventData::new_u64(key),
        F::IN | F::ET,
    )?;
    if let Some(socket) = sources.socket {
        let data = epoll::EventData::new_u64(key | SOCKET_BIT);
        if let Err(e) = epoll::add(&inner.epoll, socket, data, socket_interest(sources)) {
            let _ = epoll::delete(&inner.epoll, sources.wake);
            return Err(e.into());
        }
    }
    Ok(())
}

/// What a registered socket is watched for.
fn socket_interest(sources: &Sources<'_>) -> epoll::EventFlags {
    use epoll::EventFlags as F;
    let flags = F::IN | F::RDHUP | F::ET;
    if sources.write_blocked {
        flags | F::OUT
    } else {
        flags
    }
}

/// Has the shared poll watch a registered socket for writes too (it
/// reports at once if the socket can be written to by now).
fn watch_writes(inner: &Inner, sources: &Sources<'_>, token: u64) -> io::Result<()> {
    if let Some(socket) = sources.socket {
        let data = epoll::EventData::new_u64((token << 1) | SOCKET_BIT);
        epoll::modify(&inner.epoll, socket, data, socket_interest(sources))?;
    }
    Ok(())
}

impl Drop for Parker {
    fn drop(&mut self) {
        let (entries, queue) = {
            let mut state = self.inner.state.lock();
            state.stop = true;
            state.deadlines.clear();
            (
                std::mem::take(&mut state.entries),
                std::mem::take(&mut state.queue),
            )
        };
        // Level-triggered and never read: the leader leaves its wait.
        let _ = rustix::io::write(&self.inner.stop, &1u64.to_ne_bytes());
        self.inner.turn.notify_all();
        self.inner.tick.notify_one();
        // Whatever is still parked ends here.
        drop((entries, queue));
    }
}

impl Inner {
    /// Starts a pool thread, counted in `state`; false if none could be.
    fn spawn(inner: &Arc<Inner>, state: &mut State) -> bool {
        let pool = inner.clone();
        let spawned = std::thread::Builder::new()
            .name(inner.thread_name.into())
            .stack_size(inner.stack_size)
            .spawn(move || pool.work());
        match spawned {
            Ok(_) => {
                state.threads += 1;
                true
            }
            Err(e) => {
                log::error!("could not start a thread for woken connections: {e}");
                false
            }
        }
    }

    /// A pool thread. It drives queued connections; when none is queued,
    /// it waits on the shared poll if no other thread does (it leads),
    /// queues what the wait reports, and (on more than one core) wakes
    /// followers for all but the one it drives itself; else it follows,
    /// until its turn. A thread that
    /// waits long for nothing ends, and a leader hands the lead on.
    fn work(&self) {
        POOL_OF.with(|p| p.set(self as *const Inner as usize));
        let timeout = Timespec {
            tv_sec: LINGER.as_secs() as _,
            tv_nsec: 0,
        };
        let mut events = Vec::with_capacity(BATCH);
        let mut state = self.state.lock();
        while !state.stop {
            if let Some(entry) = state.queue.pop_front() {
                self.queued.store(state.queue.len(), Ordering::Relaxed);
                drop(state);
                self.taken.fetch_add(1, Ordering::Relaxed);
                entry.value.resume();
                state = self.state.lock();
                continue;
            }
            if state.leader {
                state.followers += 1;
                let waited = self.turn.wait_for(&mut state, LINGER);
                state.followers -= 1;
                if waited.timed_out() && state.leader && state.queue.is_empty() {
                    // Another thread leads: this one is not needed.
                    break;
                }
                continue;
            }
            state.leader = true;
            drop(state);
            events.clear();
            let waited = epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&timeout),
            );
            state = self.state.lock();
            state.leader = false;
            match waited {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::error!("a thread driving woken connections failed: {e}");
                    break;
                }
            }
            if events.is_empty() {
                if state.entries.is_empty() && state.queue.is_empty() {
                    // Nothing parked for a while: the pool shrinks.
                    break;
                }
                continue;
            }
            for event in &events {
                let key = event.data.u64();
                if key == STOP {
                    state.stop = true;
                    continue;
                }
                let token = key >> 1;
                let Some(reg) = state.regs.get_mut(&token) else {
                    // A connection that is gone.
                    continue;
                };
                let ready = if key & SOCKET_BIT != 0 {
                    let ready = Readiness::of(event.flags);
                    reg.signals.socket_ready(ready);
                    ready
                } else {
                    Readiness::default()
                };
                match state.take(token) {
                    Some(entry) => state.queue.push_back(entry),
                    None => {
                        if let Some(reg) = state.regs.get_mut(&token) {
                            reg.woken = true;
                            reg.missed = reg.missed.or(ready);
                        }
                    }
                }
            }
            self.queued.store(state.queue.len(), Ordering::Relaxed);
            // Followers share the batch only where they can run beside
            // this thread: on one core, a woken follower only preempts it.
            let helpers = if self.cores > 1 {
                state.queue.len().saturating_sub(1)
            } else {
                0
            };
            for _ in 0..state.followers.min(helpers) {
                self.turn.notify_one();
            }
            if self.dozing.swap(false, Ordering::SeqCst) {
                self.tick.notify_one();
            }
        }
        state.threads -= 1;
        if !state.leader && state.followers > 0 {
            // Whoever follows leads now (or ends in turn).
            self.turn.notify_one();
        }
        if state.stop {
            self.turn.notify_all();
        }
    }
}

/// The parker's thread: wakes parked connections at their deadlines, and
/// gets the pool going again when it is stuck; ends once it has held
/// nothing for a while, or with the parker.
fn watch(inner: &Arc<Inner>) {
    let mut seen = inner.taken.load(Ordering::Relaxed);
    // Since when connections have waited with nobody leading the poll and
    // no connection taken.
    let mut stuck_since: Option<Instant> = None;
    // How long until the next look while the pool leads the poll.
    let mut interval = STALL;
    let mut empty_since = None;
    let mut state = inner.state.lock();
    while !state.stop {
        #[cfg(test)]
        inner.looks.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        while let Some(&(at, token)) = state.deadlines.first() {
            if at > now {
                break;
            }
            state.deadlines.pop_first();
            if let Some(entry) = state.entries.get_mut(&token) {
                entry.deadline = None;
                entry.value.wakeable().wake();
            }
        }
        let taken = inner.taken.load(Ordering::Relaxed);
        if state.unled() {
            let since = match stuck_since {
                Some(since) if taken == seen => since,
                _ => now,
            };
            if now.duration_since(since) >= STALL {
                // Every pool thread has been busy a whole stall with no
                // connection taken: they are stuck (blocked handlers).
                if state.followers > 0 {
                    inner.turn.notify_one();
                } else {
                    Inner::spawn(inner, &mut state);
                }
                stuck_since = None;
            } else {
                stuck_since = Some(since);
            }
        } else {
            stuck_since = None;
        }
        let progress = taken != seen;
        seen = taken;
        if state.entries.is_empty() && state.queue.is_empty() {
            let since = *empty_since.get_or_insert(now);
            if now.duration_since(since) >= LINGER {
                break;
            }
        } else {
            empty_since = None;
        }
        // A stall can only begin once the leader leaves its wait, and it
        // is a stall only while no connection is taken. While the pool
        // takes connections, led or not, this thread looks less and less
        // often, up to LOOK_MAX; while no pool thread leads and none took
        // a connection since the last look, it looks again after a stall's
        // time; once the pool leads and has taken nothing since the last
        // look, it dozes until a leader leaves its wait with connections
        // ready (and tells it), or the next deadline. (Looking every stall
        // while the pool made progress cost a wake-up a millisecond: after
        // any progress, 4-5% of the server's core at 100 and at 1,000
        // calls/s; and under full load, where every pool thread is busy
        // and none leads, 3% of it at 16 connections with 16 calls each.)
        let led = !state.unled();
        interval = if progress {
            (interval * 2).min(LOOK_MAX)
        } else {
            STALL
        };
        let watching = !led || progress;
        let sleep = if watching { interval } else { LINGER };
        let next = state
            .deadlines
            .first()
            .map(|(at, _)| at.saturating_duration_since(now));
        let sleep = next.map_or(sleep, |n| n.min(sleep));
        inner.dozing.store(!watching, Ordering::SeqCst);
        state.watch_until = Some(now + sleep);
        inner.tick.wait_for(&mut state, sleep);
        state.watch_until = None;
        inner.dozing.store(false, Ordering::SeqCst);
    }
    state.watching = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    /// A parked value's wake-up: an eventfd.
    struct Waker(OwnedFd);

    impl Waker {
        fn new() -> Arc<Waker> {
            let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .expect("an eventfd");
            Arc::new(Waker(fd))
        }

        fn wake(&self) -> io::Result<()> {
            rustix::io::write(&self.0, &1u64.to_ne_bytes())?;
            Ok(())
        }
    }

    /// What a probe's socket reported.
    #[derive(Default)]
    struct Seen(Mutex<Vec<Readiness>>);

    impl Signals for Seen {
        fn socket_ready(&self, ready: Readiness) {
            self.0.lock().push(ready);
        }
    }

    /// A parked value: a wake-up, maybe a socket, and a channel told on
    /// which thread it resumed.
    struct Probe {
        waker: Arc<Waker>,
        socket: Option<UnixStream>,
        write_blocked: bool,
        seen: Arc<Seen>,
        registration: Option<Registration>,
        deadline: Option<Instant>,
        resumed: mpsc::Sender<String>,
        /// Blocks the resume until this receives (or its sender goes).
        hold: Option<mpsc::Receiver<()>>,
        /// Where the resume hands the probe back (as a connection goes on
        /// running), if anywhere.
        back: Option<mpsc::Sender<Box<Probe>>>,
        /// How long the resume keeps its thread busy.
        busy: Duration,
    }

    impl Wakeable for Probe {
        fn sources(&self) -> Sources<'_> {
            use std::os::fd::AsFd;
            Sources {
                socket: self.socket.as_ref().map(|s| s.as_fd()),
                write_blocked: self.write_blocked,
                wake: self.waker.0.as_fd(),
            }
        }
        fn signals(&self) -> Arc<dyn Signals> {
            self.seen.clone()
        }
        fn registration(&mut self) -> &mut Option<Registration> {
            &mut self.registration
        }
        fn next_deadline(&self) -> Option<Instant> {
            self.deadline
        }
        fn wake(&self) {
            let _ = self.waker.wake();
        }
    }

    impl Parkable for Probe {
        fn wakeable(&mut self) -> &mut dyn Wakeable {
            self
        }
        fn resume(self: Box<Self>) {
            let name = std::thread::current().name().unwrap_or("").to_string();
            let _ = self.resumed.send(name);
            if let Some(hold) = &self.hold {
                let _ = hold.recv();
            }
            std::thread::sleep(self.busy);
            if let Some(back) = self.back.clone() {
                let _ = back.send(self);
            }
        }
    }

    fn probe(deadline: Option<Instant>) -> (Box<Probe>, Arc<Waker>, mpsc::Receiver<String>) {
        let waker = Waker::new();
        let (tx, rx) = mpsc::channel();
        let p = Probe {
            waker: waker.clone(),
            socket: None,
            write_blocked: false,
            seen: Arc::default(),
            registration: None,
            deadline,
            resumed: tx,
            hold: None,
            back: None,
            busy: Duration::ZERO,
        };
        (Box::new(p), waker, rx)
    }

    const WAIT: Duration = Duration::from_secs(10);

    /// A probe with a socket, handed back after each resume.
    struct SocketProbe {
        probe: Box<Probe>,
        /// The socket's other end.
        theirs: UnixStream,
        seen: Arc<Seen>,
        resumed: mpsc::Receiver<String>,
        returned: mpsc::Receiver<Box<Probe>>,
    }

    fn socket_probe() -> SocketProbe {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let (mut probe, _waker, resumed) = probe(None);
        probe.socket = Some(ours);
        let seen = probe.seen.clone();
        let (back, returned) = mpsc::channel();
        probe.back = Some(back);
        SocketProbe {
            probe,
            theirs,
            seen,
            resumed,
            returned,
        }
    }

    #[test]
    fn the_parkers_thread_looks_at_a_pool_that_leads_and_makes_progress_less_and_less_often() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        let SocketProbe {
            mut probe,
            resumed,
            returned,
            ..
        } = socket_probe();
        // A value woken every millisecond for 200 ms, as a connection
        // with a call every millisecond: the pool leads the poll between
        // calls and takes a connection at each.
        let waker = probe.waker.clone();
        let mut looks = 0;
        for round in 0..200 {
            // (A park is refused when the poll reported the value while it
            // ran: it goes on, and parks again.)
            while let Err(back) = parker.park(probe) {
                probe = back;
            }
            if round == 20 {
                // Past the first looks, which start every stall.
                looks = parker.inner.looks.load(Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(1));
            waker.wake().expect("wake");
            assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
            probe = returned.recv_timeout(WAIT).expect("the probe back");
        }
        let looks = parker.inner.looks.load(Ordering::Relaxed) - looks;
        // Looking every stall (1 ms) would be 180 looks or more; every
        // LOOK_MAX (16 ms), about 12 (or a few more, where a look finds
        // the pool thread driving the value).
        assert!(looks < 90, "{looks} looks in 180 calls, 1 ms apart");
    }

    #[test]
    fn the_parkers_thread_looks_less_and_less_often_at_a_busy_pool_that_nobody_leads() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        // One value more than the pool has threads, each woken again as
        // soon as it is back: every pool thread is busy with one while the
        // other waits, so nobody leads the poll, but values are taken all
        // the time (full load).
        let (back, returned) = mpsc::channel();
        let mut resumes = Vec::new();
        // This thread parks them again as a pool thread parks the
        // connection it drove (a park from elsewhere with every pool
        // thread busy tells the parker's thread to look at once).
        POOL_OF.with(|p| p.set(Arc::as_ptr(&parker.inner) as usize));
        for _ in 0..parker.inner.base + 1 {
            let (mut p, waker, resumed) = probe(None);
            p.back = Some(back.clone());
            p.busy = Duration::from_micros(300);
            assert!(parker.park(p).is_ok());
            waker.wake().expect("wake");
            resumes.push(resumed);
        }
        let start = Instant::now();
        let mut looks = None;
        while start.elapsed() < Duration::from_millis(400) {
            let mut p = returned.recv_timeout(WAIT).expect("a probe back");
            if looks.is_none() && start.elapsed() >= Duration::from_millis(100) {
                // Past the first looks, which start every stall.
                looks = Some(parker.inner.looks.load(Ordering::Relaxed));
            }
            let waker = p.waker.clone();
            while let Err(again) = parker.park(p) {
                p = again;
            }
            waker.wake().expect("wake");
        }
        let looks = parker.inner.looks.load(Ordering::Relaxed) - looks.expect("looks counted");
        // Looking every stall (1 ms) would be about 300 looks; every
        // LOOK_MAX (16 ms), about 19.
        assert!(looks < 100, "{looks} looks in 300 ms at full load");
        drop(resumes);
    }

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
    fn a_value_ready_before_it_parks_goes_on_or_resumes_at_once() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        // Woken before its first park: it is given back, to go on.
        let (p, waker, resumed) = probe(None);
        waker.wake().expect("wake");
        let p = parker.park(p).expect_err("a woken value goes on");
        // Parked, and its socket ready before: it resumes at once.
        let (ours, mut theirs) = UnixStream::pair().expect("a socket pair");
        theirs.write_all(b"x").expect("a write");
        let mut p = p;
        p.socket = Some(ours);
        assert!(parker.park(p).is_ok());
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        drop(waker);
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
        let blocked = parker.inner.base + 1;
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

    #[test]
    fn a_value_parked_from_outside_the_pool_is_led_while_the_pool_is_busy() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        // One pool thread is held in a resume; the others follow.
        let (mut held, waker, resumed) = probe(None);
        let (release, hold) = mpsc::channel::<()>();
        held.hold = Some(hold);
        assert!(parker.park(held).is_ok());
        // The pool's threads start: one leads, the others follow.
        std::thread::sleep(Duration::from_millis(100));
        waker.wake().expect("wake");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        // Long enough for the parker's thread to doze.
        std::thread::sleep(Duration::from_millis(300));
        // This thread is not the pool's: parking here hands the poll to a
        // follower, well before any follower's own wait (LINGER) ends.
        let (p, waker, resumed) = probe(None);
        assert!(parker.park(p).is_ok());
        waker.wake().expect("wake");
        assert_eq!(
            resumed.recv_timeout(LINGER / 2).as_deref(),
            Ok("resumed"),
            "nobody led the poll for a value parked from outside the pool"
        );
        drop(release);
    }

    #[test]
    fn a_value_reported_while_it_runs_is_not_parked_until_it_has_looked() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        let (mut p, waker, resumed) = probe(None);
        let (back, returned) = mpsc::channel();
        p.back = Some(back);
        assert!(parker.park(p).is_ok());
        waker.wake().expect("wake");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        let mut p = returned.recv_timeout(WAIT).expect("the probe back");
        // It runs (on this thread, now) and is woken meanwhile: the wait
        // that reports it finds it running.
        waker.wake().expect("wake");
        std::thread::sleep(Duration::from_millis(20));
        let deadline = Instant::now() + WAIT;
        let refused = loop {
            match parker.park(p) {
                Err(again) => break again,
                Ok(()) => {
                    // The report had not come yet: it resumes for it.
                    assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
                    p = returned.recv_timeout(WAIT).expect("the probe back");
                    assert!(Instant::now() < deadline, "no park was refused");
                    waker.wake().expect("wake");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        // Refused once: the next park holds it until the next wake-up.
        let mut p = refused;
        p.back = None;
        assert!(parker.park(p).is_ok());
        assert!(resumed.recv_timeout(Duration::from_millis(50)).is_err());
        assert_eq!(parker.parked(), 1);
        waker.wake().expect("wake");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
    }

    #[test]
    fn a_parked_values_socket_wakes_it_and_says_what_it_is_ready_for() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        let SocketProbe {
            probe: p,
            mut theirs,
            seen,
            resumed,
            returned,
        } = socket_probe();
        // A fresh socket can be written to, which nobody waits for: it
        // stays parked until there is something to read.
        assert!(parker.park(p).is_ok());
        assert!(resumed.recv_timeout(Duration::from_millis(50)).is_err());
        theirs.write_all(b"x").expect("a write");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        let mut p = returned.recv_timeout(WAIT).expect("the probe back");
        assert!(seen.0.lock().iter().any(|r| r.readable && !r.read_closed));
        seen.0.lock().clear();
        // Parked waiting to write: told at once that it can.
        p.write_blocked = true;
        assert!(parker.park(p).is_ok());
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        let mut p = returned.recv_timeout(WAIT).expect("the probe back");
        assert!(seen.0.lock().iter().any(|r| r.writable));
        seen.0.lock().clear();
        // Its peer leaves: that wakes it too.
        p.back = None;
        assert!(parker.park(p).is_ok());
        assert!(resumed.recv_timeout(Duration::from_millis(50)).is_err());
        drop(theirs);
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        assert!(seen.0.lock().iter().any(|r| r.read_closed));
    }

    #[test]
    fn a_refused_park_tells_the_value_again_what_its_socket_became_ready_for() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        let SocketProbe {
            probe: p,
            mut theirs,
            seen,
            resumed,
            returned,
        } = socket_probe();
        assert!(parker.park(p).is_ok());
        theirs.write_all(b"x").expect("a write");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        let p = returned.recv_timeout(WAIT).expect("the probe back");
        // More bytes come while it runs; the report is heard at once, but
        // its thread may mark the socket drained after that (its read came
        // back short): the refused park says it again.
        theirs.write_all(b"y").expect("a write");
        let deadline = Instant::now() + WAIT;
        while !parker.inner.state.lock().regs.values().any(|r| r.woken) {
            assert!(Instant::now() < deadline, "the report never came");
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.0.lock().clear();
        let _p = parker.park(p).expect_err("reported while it ran");
        assert!(seen.0.lock().iter().any(|r| r.readable));
    }

    #[test]
    fn a_released_value_leaves_the_shared_poll_and_comes_back_at_its_next_park() {
        let parker = Parker::new("parker", "resumed", 64 * 1024).expect("a parker");
        let (mut p, waker, resumed) = probe(None);
        let (back, returned) = mpsc::channel();
        p.back = Some(back.clone());
        assert!(parker.park(p).is_ok());
        waker.wake().expect("wake");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        let mut p = returned.recv_timeout(WAIT).expect("the probe back");
        // It sleeps on a thread of its own: the shared poll hears nothing
        // of its wake-ups, nor keeps them for its next park.
        let registration = p.registration.take().expect("registered");
        registration.release(p.wakeable().sources());
        assert!(parker.inner.state.lock().regs.is_empty());
        waker.wake().expect("wake");
        std::thread::sleep(Duration::from_millis(50));
        assert!(resumed.try_recv().is_err());
        // That wake-up was its own poll's: its next park is refused, so
        // that it looks first. Parked again after that, it registers again.
        let mut p = parker.park(p).expect_err("woken since it left");
        p.back = Some(back);
        assert!(parker.park(p).is_ok());
        assert!(resumed.recv_timeout(Duration::from_millis(50)).is_err());
        waker.wake().expect("wake");
        assert_eq!(resumed.recv_timeout(WAIT).as_deref(), Ok("resumed"));
        // A value that ends is forgotten.
        drop(returned.recv_timeout(WAIT).expect("the probe back"));
        assert!(parker.inner.state.lock().regs.is_empty());
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
