//! Reconnection backoff (grpc/grpc `doc/connection-backoff.md`): after a
//! failed connect, the next attempt waits; the delay starts at the initial
//! backoff and grows by 1.6 per failure up to the maximum, with 20% jitter
//! either way.

use std::time::{Duration, Instant};

use crate::error::TransportError;

/// Growth of the delay per failed attempt.
const MULTIPLIER: f64 = 1.6;
/// Relative jitter either way.
const JITTER: f64 = 0.2;

/// The connect attempts of one channel.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<String>,
}

impl Backoff {
    /// Records a failed attempt at `now`.
    pub(crate) fn failed(
        &mut self,
        now: Instant,
        initial: Duration,
        max: Duration,
        error: &TransportError,
    ) {
        self.failures = self.failures.saturating_add(1);
        let base =
            initial.as_secs_f64() * MULTIPLIER.powi(self.failures.saturating_sub(1).min(64) as i32);
        let capped = base.min(max.as_secs_f64());
        let jittered = capped * (1.0 - JITTER + 2.0 * JITTER * fastrand::f64());
        self.next_attempt = Some(now + Duration::from_secs_f64(jittered));
        self.last_error = Some(error.to_string());
    }

    /// When the next attempt is due, after a failure.
    pub(crate) fn next_attempt(&self) -> Option<Instant> {
        self.next_attempt
    }

    /// Forgets past failures.
    pub(crate) fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_up_to_the_maximum() {
        let now = Instant::now();
        let err = TransportError::ConnectionLost("refused".into());
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(5));
        let mut b = Backoff::default();
        let mut expected = 1.0f64;
        for _ in 0..10 {
            b.failed(now, initial, max, &err);
            let delay = b.next_attempt.unwrap() - now;
            let secs = delay.as_secs_f64();
            assert!(
                secs >= expected * 0.8 - 1e-9 && secs <= expected * 1.2 + 1e-9,
                "{secs} vs {expected}"
            );
            expected = (expected * 1.6).min(5.0);
        }
        assert!(b
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused")));
        b.succeeded();
        assert!(b.next_attempt().is_none());
    }
}
