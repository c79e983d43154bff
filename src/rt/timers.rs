//! A connection thread's timers: each a [`Timer`] (what to do) due at an
//! instant.
//!
//! Ordered by time so the next one bounds the thread's sleep, and removable,
//! so that a call that ends before its deadline takes its timer with it
//! (otherwise a busy connection with long deadlines would hold one entry per
//! finished call until each deadline passed).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::rt::StreamKey;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A call's deadline.
    Deadline(StreamKey),
    /// A call whose handler waits for its whole request before it starts
    /// has waited long enough: start it.
    StartBy(StreamKey),
    /// The peer must have finished its HTTP/2 (or TLS) handshake by now.
    Handshake,
    /// Time to send a keepalive PING.
    KeepalivePing,
    /// The outstanding keepalive PING must have been answered by now.
    KeepalivePong,
    /// The connection has had no call for the idle timeout.
    Idle,
    /// The connection has reached its maximum age: send GOAWAY.
    Age,
    /// The grace period after the maximum age is over: close.
    AgeGrace,
    /// A closing connection has had its time to say goodbye.
    Close,
}

/// Pending timers of one connection.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Instant, Timer)>,
}

impl Timers {
    /// Arms `timer` at `at`.
    pub(crate) fn add(&mut self, at: Instant, timer: Timer) {
        self.set.insert((at, timer));
    }

    /// Disarms `timer` at `at`, if it is still pending.
    pub(crate) fn remove(&mut self, at: Instant, timer: Timer) {
        self.set.remove(&(at, timer));
    }

    /// How long until the next timer is due (zero if one is overdue).
    pub(crate) fn next_in(&self, now: Instant) -> Option<Duration> {
        self.set
            .first()
            .map(|(at, _)| at.saturating_duration_since(now))
    }

    /// When the next timer is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }

    /// Takes the next timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let &(at, timer) = self.set.first()?;
        if at > now {
            return None;
        }
        self.set.pop_first();
        Some(timer)
    }

    /// Timers pending.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_order_and_removable() {
        let now = Instant::now();
        let secs = Duration::from_secs;
        let mut t = Timers::default();
        t.add(now + secs(2), Timer::Deadline(StreamKey(2)));
        t.add(now + secs(1), Timer::Deadline(StreamKey(1)));
        t.add(now + secs(3), Timer::KeepalivePing);
        t.remove(now + secs(2), Timer::Deadline(StreamKey(2)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_in(now), Some(secs(1)));
        assert_eq!(t.pop_due(now), None);
        let later = now + secs(5);
        assert_eq!(t.pop_due(later), Some(Timer::Deadline(StreamKey(1))));
        assert_eq!(t.pop_due(later), Some(Timer::KeepalivePing));
        assert_eq!(t.pop_due(later), None);
        assert_eq!(t.next_in(now), None);
    }

    #[test]
    fn the_same_instant_holds_different_timers() {
        let at = Instant::now();
        let mut t = Timers::default();
        t.add(at, Timer::Idle);
        t.add(at, Timer::Age);
        t.add(at, Timer::Idle);
        assert_eq!(t.len(), 2);
    }
}
