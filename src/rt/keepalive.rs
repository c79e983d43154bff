//! Keepalive pings, the same on both sides: a PING every interval (while
//! calls are open, or always if permitted); a PING not answered within the
//! timeout means the peer is gone and the connection is closed.
//!
//! The timing lives in the connection's [`Timers`] ([`Timer::KeepalivePing`],
//! [`Timer::KeepalivePong`]); this file decides what each timer does.

use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::rt::timers::{Timer, Timers};

/// Keepalive settings of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeepaliveConfig {
    /// Time between pings; `None` turns keepalive off.
    pub(crate) interval: Option<Duration>,
    /// How long a ping may wait for its answer.
    pub(crate) timeout: Duration,
    /// Whether pings go out while no call is open.
    pub(crate) without_calls: bool,
}

/// Sends PINGs and learns of their answers (h2's `PingPong`; a fake in the
/// tests).
pub(crate) trait Pinger {
    /// Sends a PING; false if the connection cannot.
    fn send_ping(&mut self) -> bool;
    /// `Ready(true)` once the PONG arrived, `Ready(false)` if it never will.
    fn poll_pong(&mut self, cx: &mut Context<'_>) -> Poll<bool>;
}

impl Pinger for h2::PingPong {
    fn send_ping(&mut self) -> bool {
        h2::PingPong::send_ping(self, h2::Ping::opaque()).is_ok()
    }
    fn poll_pong(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        h2::PingPong::poll_pong(self, cx).map(|r| r.is_ok())
    }
}

/// What a keepalive timer found out about the peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Nothing is known against it.
    Alive,
    /// The last PING went unanswered: close the connection.
    PeerGone,
}

/// The keepalive state of one connection.
pub(crate) struct Keepalive<P = h2::PingPong> {
    config: KeepaliveConfig,
    pinger: Option<P>,
    /// When the outstanding PING went out.
    sent_at: Option<Instant>,
}

impl<P: Pinger> Keepalive<P> {
    /// Keepalive for a connection whose handshake has not finished.
    pub(crate) fn new(config: KeepaliveConfig) -> Self {
        Keepalive {
            config,
            pinger: None,
            sent_at: None,
        }
    }

    /// How long a PING may wait for its answer.
    pub(crate) fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// The handshake is done: takes the connection's ping handle and arms
    /// the first PING.
    pub(crate) fn start(&mut self, pinger: Option<P>, now: Instant, timers: &mut Timers) {
        self.pinger = pinger;
        self.arm(now, timers);
    }

    fn arm(&self, now: Instant, timers: &mut Timers) {
        if let Some(every) = self.config.interval {
            timers.add(now + every, Timer::KeepalivePing);
        }
    }

    /// Polls for the answer to the outstanding PING; when it arrived, arms
    /// the next one.
    pub(crate) fn poll_pong(&mut self, cx: &mut Context<'_>, now: Instant, timers: &mut Timers) {
        if self.sent_at.is_none() {
            return;
        }
        if let Some(pinger) = &mut self.pinger {
            if let Poll::Ready(true) = pinger.poll_pong(cx) {
                self.sent_at = None;
                self.arm(now, timers);
            }
        }
    }

    /// Handles [`Timer::KeepalivePing`] and [`Timer::KeepalivePong`];
    /// `has_calls` says whether any call is open. A PING that goes out wakes
    /// `conn` (the connection's own waker), so that h2 writes it.
    pub(crate) fn on_timer(
        &mut self,
        timer: Timer,
        now: Instant,
        has_calls: bool,
        timers: &mut Timers,
        conn: &Waker,
    ) -> Liveness {
        match timer {
            Timer::KeepalivePing => {
                if self.config.interval.is_none() || self.sent_at.is_some() {
                    // Off, or a PING is out: its PONG arms the next.
                    return Liveness::Alive;
                }
                let wanted = self.config.without_calls || has_calls;
                let sent = wanted && self.pinger.as_mut().is_some_and(|p| p.send_ping());
                if sent {
                    self.sent_at = Some(now);
                    timers.add(now + self.config.timeout, Timer::KeepalivePong);
                    conn.wake_by_ref();
                } else {
                    self.arm(now, timers);
                }
                Liveness::Alive
            }
            // A PONG timer can outlive its PING (answered in time): only the
            // outstanding PING's age decides.
            Timer::KeepalivePong
                if self
                    .sent_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= self.config.timeout) =>
            {
                Liveness::PeerGone
            }
            _ => Liveness::Alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A pinger whose PONG arrives when the test says.
    #[derive(Default)]
    struct FakePinger {
        sent: usize,
        answered: bool,
    }

    impl Pinger for FakePinger {
        fn send_ping(&mut self) -> bool {
            self.sent += 1;
            self.answered = false;
            true
        }
        fn poll_pong(&mut self, _cx: &mut Context<'_>) -> Poll<bool> {
            if self.answered {
                Poll::Ready(true)
            } else {
                Poll::Pending
            }
        }
    }

    fn config(without_calls: bool) -> KeepaliveConfig {
        KeepaliveConfig {
            interval: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(2),
            without_calls,
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn pings_every_interval_and_notices_a_silent_peer() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut timers = Timers::default();
        let mut k = Keepalive::new(config(true));
        k.start(Some(FakePinger::default()), t0, &mut timers);
        assert_eq!(timers.pop_due(t0 + s(10)), Some(Timer::KeepalivePing));
        let woken = Arc::new(CountWakes::default());
        let conn = Waker::from(woken.clone());
        let ev = k.on_timer(Timer::KeepalivePing, t0 + s(10), false, &mut timers, &conn);
        assert_eq!(ev, Liveness::Alive);
        assert_eq!(k.pinger.as_ref().unwrap().sent, 1);
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the PING wakes the connection"
        );
        // Answered in time: the next PING is armed, the PONG timer is moot.
        k.pinger.as_mut().unwrap().answered = true;
        k.poll_pong(&mut cx(), t0 + s(11), &mut timers);
        assert_eq!(timers.pop_due(t0 + s(12)), Some(Timer::KeepalivePong));
        let ev = k.on_timer(
            Timer::KeepalivePong,
            t0 + s(12),
            false,
            &mut timers,
            Waker::noop(),
        );
        assert_eq!(ev, Liveness::Alive);
        assert_eq!(timers.pop_due(t0 + s(21)), Some(Timer::KeepalivePing));
        // Not answered: the peer is gone at the PONG deadline.
        let ev = k.on_timer(
            Timer::KeepalivePing,
            t0 + s(21),
            false,
            &mut timers,
            Waker::noop(),
        );
        assert_eq!(ev, Liveness::Alive);
        assert_eq!(k.pinger.as_ref().unwrap().sent, 2);
        assert_eq!(timers.pop_due(t0 + s(23)), Some(Timer::KeepalivePong));
        let ev = k.on_timer(
            Timer::KeepalivePong,
            t0 + s(23),
            false,
            &mut timers,
            Waker::noop(),
        );
        assert_eq!(ev, Liveness::PeerGone);
    }

    #[test]
    fn without_calls_off_waits_for_a_call() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut timers = Timers::default();
        let mut k = Keepalive::new(config(false));
        k.start(Some(FakePinger::default()), t0, &mut timers);
        let ev = k.on_timer(
            Timer::KeepalivePing,
            t0 + s(10),
            false,
            &mut timers,
            Waker::noop(),
        );
        assert_eq!(ev, Liveness::Alive);
        assert_eq!(k.pinger.as_ref().unwrap().sent, 0);
        // Re-armed for the next interval, when a call is open.
        assert_eq!(timers.pop_due(t0 + s(20)), Some(Timer::KeepalivePing));
        let ev = k.on_timer(
            Timer::KeepalivePing,
            t0 + s(20),
            true,
            &mut timers,
            Waker::noop(),
        );
        assert_eq!(ev, Liveness::Alive);
        assert_eq!(k.pinger.as_ref().unwrap().sent, 1);
    }

    #[test]
    fn off_arms_nothing() {
        let mut timers = Timers::default();
        let mut k = Keepalive::new(KeepaliveConfig {
            interval: None,
            ..config(true)
        });
        k.start(Some(FakePinger::default()), Instant::now(), &mut timers);
        assert_eq!(timers.next_in(Instant::now()), None);
    }
}
