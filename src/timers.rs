//! A connection thread's timers: call deadlines and the connection's own
//! (handshake, keepalive, idle, age), each a `(when, key)` pair.
//!
//! Ordered by time so the next one bounds the thread's sleep, and removable,
//! so that a call that ends before its deadline takes its timer with it
//! (otherwise a busy connection with long deadlines would hold one entry per
//! finished call until each deadline passed).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Pending timers of one connection.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Instant, u64)>,
}

impl Timers {
    /// Arms a timer for `key` at `at`.
    pub(crate) fn add(&mut self, at: Instant, key: u64) {
        self.set.insert((at, key));
    }

    /// Disarms the timer for `key` at `at`, if it is still pending.
    pub(crate) fn remove(&mut self, at: Instant, key: u64) {
        self.set.remove(&(at, key));
    }

    /// How long until the next timer is due (zero if one is overdue).
    pub(crate) fn next_in(&self, now: Instant) -> Option<Duration> {
        self.set
            .first()
            .map(|(at, _)| at.saturating_duration_since(now))
    }

    /// Takes the next timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let &(at, key) = self.set.first()?;
        if at > now {
            return None;
        }
        self.set.pop_first();
        Some(key)
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
        let mut t = Timers::default();
        t.add(now + Duration::from_secs(2), 2);
        t.add(now + Duration::from_secs(1), 1);
        t.add(now + Duration::from_secs(3), 3);
        t.remove(now + Duration::from_secs(2), 2);
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_in(now), Some(Duration::from_secs(1)));
        assert_eq!(t.pop_due(now), None);
        let later = now + Duration::from_secs(5);
        assert_eq!(t.pop_due(later), Some(1));
        assert_eq!(t.pop_due(later), Some(3));
        assert_eq!(t.pop_due(later), None);
        assert_eq!(t.next_in(now), None);
    }
}
