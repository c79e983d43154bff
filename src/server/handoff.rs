//! Adaptive inline handlers: a connection thread runs a unary handler
//! itself, and if the handler has not returned within a time limit (it
//! blocks: on I/O, a lock, another call), another thread takes the
//! connection over, so that the connection's other calls go on. Fast
//! handlers thus cost no thread hand-off at all, and blocking ones stay
//! safe; it is how Go's scheduler hands a processor on when a goroutine
//! blocks in a system call.
//!
//! While its handler runs, a connection waits in a [`Slot`]; a monitor
//! thread (one per server, asleep while no handler runs inline) looks at
//! the slots and restarts, on a new thread, any connection parked for
//! longer than the limit. It looks every limit's length while its looks
//! find handlers running, and less and less often, up to every
//! [`LOOK_MAX`], while they find none (as Go's system monitor backs off
//! when idle); after [`LINGER`] with no park at all, it sleeps until a
//! park wakes it. The handler's thread, once its handler returns, takes its
//! connection back, or finds it gone and ends.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::rt::sync::{Condvar, Mutex};

/// Something parked that the monitor may hand to a new thread.
trait Parked: Send + Sync {
    /// When it was parked (nanoseconds since the monitor's epoch), or 0.
    fn parked_at(&self) -> u64;
    /// Takes it and restarts it on a new thread, if a permit for the
    /// blocked handler can be had.
    fn take_over(&self, name: &str, stack_size: usize);
}

/// What a slot holds, under its lock.
struct SlotState<T, P> {
    value: Option<T>,
    /// The park the value belongs to.
    ticket: u64,
    /// The permits of handlers whose connection was taken over, by park:
    /// their threads drop them once their handler returns.
    permits: Vec<(u64, P)>,
}

/// Where a connection waits while its thread runs a handler.
pub(crate) struct Slot<T, P> {
    state: Mutex<SlotState<T, P>>,
    parked_at: AtomicU64,
    /// A permit for a handler that keeps a thread of its own (the server's
    /// and the peer's handler budget); `None` when none is left.
    permit: Box<dyn Fn() -> Option<P> + Send + Sync>,
    /// What a new thread runs with a connection taken over.
    restart: Arc<dyn Fn(T) + Send + Sync>,
}

impl<T: Send + 'static, P: Send + 'static> Parked for Slot<T, P> {
    fn parked_at(&self) -> u64 {
        self.parked_at.load(Ordering::Acquire)
    }

    fn take_over(&self, name: &str, stack_size: usize) {
        let mut state = self.state.lock();
        if state.value.is_none() {
            return;
        }
        // Without a permit the connection waits for its handler (tried
        // again at the next scan): blocked handlers never take more
        // threads than the budget.
        let Some(permit) = (self.permit)() else {
            return;
        };
        let Some(value) = state.value.take() else {
            return;
        };
        let ticket = state.ticket;
        state.permits.push((ticket, permit));
        self.parked_at.store(0, Ordering::Release);
        drop(state);
        let restart = self.restart.clone();
        let cell = Arc::new(Mutex::new(Some(value)));
        let moved = cell.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .stack_size(stack_size)
            .spawn(move || {
                if let Some(value) = moved.lock().take() {
                    restart(value)
                }
            });
        if let Err(e) = spawned {
            // The handler's thread takes its connection back when it can.
            log::error!("could not start a thread to take a connection over: {e}");
            if let Some(value) = cell.lock().take() {
                let mut state = self.state.lock();
                state.value = Some(value);
                state.permits.retain(|(t, _)| *t != ticket);
            }
        }
    }
}

impl<T: Send + 'static, P: Send + 'static> Slot<T, P> {
    /// A slot whose taken-over value goes to `restart`, on a new thread,
    /// when `permit` gives a permit for the handler left behind.
    pub(crate) fn new(
        permit: impl Fn() -> Option<P> + Send + Sync + 'static,
        restart: impl Fn(T) + Send + Sync + 'static,
    ) -> Self {
        Slot {
            state: Mutex::new(SlotState {
                value: None,
                ticket: 0,
                permits: Vec::new(),
            }),
            parked_at: AtomicU64::new(0),
            permit: Box::new(permit),
            restart: Arc::new(restart),
        }
    }
}

/// A park: what [`Handoff::unpark`] needs to take the value back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// A server's monitor of parked connections.
pub(crate) struct Handoff {
    epoch: Instant,
    limit: Duration,
    stack_size: usize,
    slots: Mutex<Vec<Weak<dyn Parked>>>,
    parked: AtomicUsize,
    /// Parks so far.
    parks: AtomicU64,
    /// Times the monitor has looked at the slots.
    #[cfg(test)]
    looks: AtomicU64,
    /// The monitor thread is asleep (waiting for a park), or not started.
    asleep: AtomicBool,
    state: Mutex<MonitorState>,
    wake: Condvar,
}

#[derive(Default)]
struct MonitorState {
    running: bool,
    stop: bool,
}

/// How long the monitor keeps looking after the last park before it
/// sleeps until a park wakes it.
const LINGER: Duration = Duration::from_millis(100);

/// The longest the monitor waits between looks while it finds no handler
/// running: beyond the limit, the longest a handler that blocks after a
/// quiet while holds its connection's other calls. (Looking every limit
/// for a while after each park cost a wake-up a millisecond at any load,
/// 3-4% of the server's core at 100 and at 1,000 calls/s.)
const LOOK_MAX: Duration = Duration::from_millis(16);

impl Handoff {
    /// A monitor handing connections over after `limit`, to threads with
    /// stacks of `stack_size`.
    pub(crate) fn new(limit: Duration, stack_size: usize) -> Arc<Handoff> {
        Arc::new(Handoff {
            epoch: Instant::now(),
            limit: limit.max(Duration::from_micros(100)),
            stack_size,
            slots: Mutex::new(Vec::new()),
            parked: AtomicUsize::new(0),
            parks: AtomicU64::new(0),
            #[cfg(test)]
            looks: AtomicU64::new(0),
            asleep: AtomicBool::new(true),
            state: Mutex::new(MonitorState::default()),
            wake: Condvar::new(),
        })
    }

    fn now(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Watches `slot` from now on (once per connection).
    pub(crate) fn register<T: Send + 'static, P: Send + 'static>(&self, slot: &Arc<Slot<T, P>>) {
        let weak: Weak<dyn Parked> = Arc::downgrade(slot) as Weak<dyn Parked>;
        self.slots.lock().push(weak);
    }

    /// Parks `value` in `slot` while this thread runs a handler.
    pub(crate) fn park<T: Send + 'static, P>(
        self: &Arc<Self>,
        slot: &Slot<T, P>,
        value: T,
    ) -> Ticket {
        let ticket = {
            let mut state = slot.state.lock();
            state.ticket += 1;
            state.value = Some(value);
            state.ticket
        };
        slot.parked_at.store(self.now(), Ordering::Release);
        self.parks.fetch_add(1, Ordering::Relaxed);
        // SeqCst, with the monitor's `asleep` then `parked`: one of the two
        // sees the other's write.
        self.parked.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) {
            self.start_or_wake();
        }
        Ticket(ticket)
    }

    /// The handler of park `ticket` returned: the value back, or `None` if
    /// another thread took it over meanwhile (and then the permit taken for
    /// this handler is given back).
    pub(crate) fn unpark<T, P>(&self, slot: &Slot<T, P>, ticket: Ticket) -> Option<T> {
        self.parked.fetch_sub(1, Ordering::AcqRel);
        let mut state = slot.state.lock();
        if state.ticket == ticket.0 && state.value.is_some() {
            slot.parked_at.store(0, Ordering::Release);
            return state.value.take();
        }
        let permit = state
            .permits
            .iter()
            .position(|(t, _)| *t == ticket.0)
            .map(|i| state.permits.swap_remove(i));
        drop(state);
        drop(permit);
        None
    }

    fn start_or_wake(self: &Arc<Self>) {
        let mut state = self.state.lock();
        if state.stop {
            return;
        }
        if !state.running {
            state.running = true;
            self.asleep.store(false, Ordering::Release);
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("grpc-handoff".into())
                .stack_size(64 * 1024)
                .spawn(move || monitor(weak));
            if let Err(e) = spawned {
                log::error!("could not start the handler monitor: {e}");
                state.running = false;
            }
            return;
        }
        self.asleep.store(false, Ordering::Release);
        self.wake.notify_one();
    }

    /// Stops the monitor (the server is going away).
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    /// Hands over every connection parked for longer than the limit.
    fn scan(&self) {
        let now = self.now();
        let limit = self.limit.as_nanos() as u64;
        let mut due = Vec::new();
        self.slots.lock().retain(|weak| match weak.upgrade() {
            Some(slot) => {
                let at = slot.parked_at();
                if at != 0 && now.saturating_sub(at) >= limit {
                    due.push(slot);
                }
                true
            }
            None => false,
        });
        for slot in due {
            slot.take_over("grpc-conn", self.stack_size);
        }
    }
}

/// The monitor thread: scans while handlers run inline, sleeps otherwise.
fn monitor(handoff: Weak<Handoff>) {
    // When a look last found a handler running, or a park since the look
    // before.
    let mut last_busy = Instant::now();
    let mut parks = 0;
    let mut interval = Duration::ZERO;
    loop {
        let Some(h) = handoff.upgrade() else {
            return;
        };
        #[cfg(test)]
        h.looks.fetch_add(1, Ordering::Relaxed);
        let parks_now = h.parks.load(Ordering::Relaxed);
        if parks_now != parks {
            parks = parks_now;
            last_busy = Instant::now();
        }
        if h.parked.load(Ordering::Acquire) > 0 {
            last_busy = Instant::now();
            interval = h.limit;
            h.scan();
        } else if last_busy.elapsed() <= LINGER {
            interval = (interval * 2).clamp(h.limit, LOOK_MAX.max(h.limit));
        } else {
            let mut state = h.state.lock();
            // A park just before `asleep` was set is seen here. Set again
            // before every wait: a park that woke this thread cleared it,
            // and if its handler was back before this thread looked,
            // this thread waits again, and must be woken by the next park.
            while {
                h.asleep.store(true, Ordering::SeqCst);
                h.parked.load(Ordering::SeqCst) == 0 && !state.stop
            } {
                h.wake.wait_for(&mut state, Duration::from_secs(1));
                if h.parked.load(Ordering::Acquire) == 0 && Arc::strong_count(&h) == 1 {
                    break;
                }
            }
            h.asleep.store(false, Ordering::Release);
            if state.stop {
                state.running = false;
                return;
            }
            last_busy = Instant::now();
            interval = h.limit;
        }
        let period = interval;
        drop(h);
        std::thread::sleep(period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A permit of a budget of one: given back on drop.
    struct Permit(Arc<AtomicUsize>);

    impl Drop for Permit {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_value_parked_too_long_is_restarted_elsewhere_else_taken_back() {
        let handoff = Handoff::new(Duration::from_millis(5), 64 * 1024);
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let permits = Arc::new(AtomicUsize::new(1));
        let p = permits.clone();
        let slot = Arc::new(Slot::new(
            move || {
                p.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .ok()
                    .map(|_| Permit(p.clone()))
            },
            move |v: u32| {
                let me = std::thread::current().id();
                tx.lock().unwrap().send((v, me)).unwrap();
            },
        ));
        handoff.register(&slot);
        // Quick: taken back.
        let t1 = handoff.park(&slot, 1);
        assert_eq!(handoff.unpark(&slot, t1), Some(1));
        // Slow: restarted on another thread, with the one permit.
        let t2 = handoff.park(&slot, 2);
        let (v, thread) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(v, 2);
        assert_ne!(thread, std::thread::current().id());
        assert_eq!(permits.load(Ordering::SeqCst), 0);
        // The new thread parks its own value meanwhile: the first handler,
        // returning, does not take that one, and gives its permit back.
        let t3 = handoff.park(&slot, 3);
        assert_eq!(handoff.unpark(&slot, t2), None);
        assert_eq!(permits.load(Ordering::SeqCst), 1);
        assert_eq!(handoff.unpark(&slot, t3), Some(3));
        // No permit left: no takeover, the value waits for its handler.
        permits.store(0, Ordering::SeqCst);
        let t4 = handoff.park(&slot, 4);
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err());
        assert_eq!(handoff.unpark(&slot, t4), Some(4));
        handoff.stop();
    }

    /// Waits up to 10 s for `done`.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_monitor_looks_less_and_less_often_while_handlers_return_quickly() {
        let handoff = Handoff::new(Duration::from_millis(1), 64 * 1024);
        let slot = Arc::new(Slot::new(|| Some(()), |_: u32| panic!("taken over")));
        handoff.register(&slot);
        // A quick handler every millisecond for 200 ms.
        let mut looks = 0;
        for round in 0..200 {
            if round == 20 {
                // Past the first looks, which start every limit.
                looks = handoff.looks.load(Ordering::Relaxed);
            }
            let t = handoff.park(&slot, round);
            assert_eq!(handoff.unpark(&slot, t), Some(round));
            std::thread::sleep(Duration::from_millis(1));
        }
        let looks = handoff.looks.load(Ordering::Relaxed) - looks;
        // Looking every limit (1 ms) would be about 180 looks; every
        // LOOK_MAX (16 ms), about 12 (or a few more, where a look finds
        // a handler running).
        assert!(
            looks < 90,
            "{looks} looks in 180 quick handlers, 1 ms apart"
        );
        handoff.stop();
    }

    #[test]
    fn a_monitor_woken_by_a_quick_park_still_hears_the_next_one() {
        let handoff = Handoff::new(Duration::from_millis(1), 64 * 1024);
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let slot = Arc::new(Slot::new(
            || Some(()),
            move |v: u32| tx.lock().unwrap().send(v).unwrap(),
        ));
        handoff.register(&slot);
        // The monitor starts, then sleeps once nothing has been parked for
        // a while.
        let t = handoff.park(&slot, 1);
        assert_eq!(handoff.unpark(&slot, t), Some(1));
        eventually("the monitor sleeps", || {
            handoff.asleep.load(Ordering::SeqCst)
        });
        // A quick park wakes it, and is over before it looks: it sleeps
        // again, and says so, so that the next park wakes it.
        let t = handoff.park(&slot, 2);
        assert_eq!(handoff.unpark(&slot, t), Some(2));
        eventually("the monitor sleeps again", || {
            handoff.asleep.load(Ordering::SeqCst)
        });
        // A park that lasts is handed over.
        let _t = handoff.park(&slot, 3);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(3));
        handoff.stop();
    }
}
