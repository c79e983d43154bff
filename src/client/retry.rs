//! Starting a call again.
//!
//! - **Transparent retry**: a call the server never processed (refused
//!   with REFUSED_STREAM, above a GOAWAY's last stream, or never sent
//!   before its connection died) starts again, up to
//!   [`TRANSPARENT_RETRIES`] times, whatever the service config says.
//! - **Retry policy** (gRFC A6, from the service config's `retryPolicy`):
//!   a call that ends with a retryable status before the server sent any
//!   response headers (not yet *committed*) starts again after a backoff,
//!   up to `maxAttempts`, within its deadline, while the channel's retry
//!   throttle allows, and as the server's `grpc-retry-pushback-ms` says.
//!   Each attempt after the first carries `grpc-previous-rpc-attempts`.
//!
//! A call whose request is known whole (unary, server streaming) sends it
//! again. A streaming request is replayed from [`Replay`], the copy its
//! sink keeps of what it sent; once that copy would pass the per-call or
//! the per-channel buffer limit, the call is committed and no longer
//! retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rt::sync::Mutex;
use bytes::Bytes;

use crate::client::link::{ClientCmd, ClientConn, Opened};
use crate::client::options::CallOptions;
use crate::client::service_config::{
    parse_retry_pushback, retry_backoff, RetryPolicy, RetryPushback, RetryThrottle,
};
use crate::code::Code;
use crate::rt::call_state::CallState;
use crate::rt::reader::Credit;
use crate::rt::StreamKey;
use crate::status::Status;

/// Transparent retries of one call.
pub(crate) const TRANSPARENT_RETRIES: u8 = 2;

/// What a retry needs of its channel: to open the call again.
pub(crate) trait Reopen: Send + Sync {
    /// Opens the call again on a live (maybe new) connection, with `body`
    /// as its whole request (or none, for a streaming request), as attempt
    /// number `previous_attempts + 1`, its response credited as `credit`
    /// says.
    fn reopen(
        &self,
        path: &'static str,
        options: &CallOptions,
        body: Option<Bytes>,
        previous_attempts: u32,
        credit: Credit,
    ) -> Result<Opened, Status>;
}

/// A retry policy as one call follows it.
pub(crate) struct PolicyRetry {
    pub(crate) policy: RetryPolicy,
    pub(crate) throttle: Option<Arc<RetryThrottle>>,
    /// Attempts made so far (1 once the call started).
    attempts: u32,
    /// Retries since the last pushback (the backoff restarts after one).
    retries: u32,
}

impl PolicyRetry {
    pub(crate) fn new(policy: RetryPolicy, throttle: Option<Arc<RetryThrottle>>) -> Self {
        PolicyRetry {
            policy,
            throttle,
            attempts: 1,
            retries: 0,
        }
    }
}

/// How one call is started again.
pub(crate) struct RetryPlan {
    reopen: Arc<dyn Reopen>,
    path: &'static str,
    options: CallOptions,
    /// The whole request; `None` for a streaming one (see `replay`).
    body: Option<Bytes>,
    replay: Option<Arc<Replay>>,
    /// Who returns each attempt's response credit.
    credit: Credit,
    transparent_left: u8,
    policy: Option<PolicyRetry>,
    /// The server answered with response headers: no more attempts, but
    /// the call's end still counts for the throttle.
    committed: bool,
}

impl RetryPlan {
    /// A plan for a call whose whole request is `body`.
    pub(crate) fn whole(
        reopen: Arc<dyn Reopen>,
        path: &'static str,
        options: CallOptions,
        body: Bytes,
        policy: Option<PolicyRetry>,
        credit: Credit,
    ) -> Self {
        RetryPlan {
            reopen,
            path,
            options,
            body: Some(body),
            replay: None,
            credit,
            transparent_left: TRANSPARENT_RETRIES,
            policy,
            committed: false,
        }
    }

    /// A plan for a call whose requests go through a sink that keeps a
    /// copy in `replay`.
    pub(crate) fn streaming(
        reopen: Arc<dyn Reopen>,
        path: &'static str,
        options: CallOptions,
        replay: Arc<Replay>,
        policy: PolicyRetry,
        credit: Credit,
    ) -> Self {
        RetryPlan {
            reopen,
            path,
            options,
            body: None,
            replay: Some(replay),
            credit,
            transparent_left: 0,
            policy: Some(policy),
            committed: false,
        }
    }

    fn open(&self) -> Result<Opened, Status> {
        // Transparent retries are not attempts of their own (A6).
        let previous = self.policy.as_ref().map_or(0, |p| p.attempts - 1);
        let opened = self.reopen.reopen(
            self.path,
            &self.options,
            self.body.clone(),
            previous,
            self.credit,
        )?;
        if let Some(replay) = &self.replay {
            if !replay.switch_to(&opened) {
                return Err(Status::unavailable(
                    "the call was committed while it was being started again",
                ));
            }
        }
        Ok(opened)
    }

    /// Starts the call again after the server never processed it;
    /// `None` when no transparent retry is left.
    pub(crate) fn transparent(&mut self) -> Option<Result<Opened, Status>> {
        self.transparent_left = self.transparent_left.checked_sub(1)?;
        Some(self.open())
    }

    /// The server sent response headers (or the request outgrew its
    /// copy): the call is committed, and its copy is let go.
    pub(crate) fn commit(&mut self) {
        if let Some(replay) = &self.replay {
            replay.commit();
        }
        self.committed = true;
        self.transparent_left = 0;
    }

    /// Whether the call is committed.
    pub(crate) fn is_committed(&self) -> bool {
        self.committed
    }

    /// An attempt ended with `status`, with the server's pushback, if any:
    /// counts it for the throttle, and returns when to start the next
    /// attempt, or `None` to end the call with `status`.
    pub(crate) fn after(&mut self, status: &Status, pushback: Option<&[u8]>) -> Option<Duration> {
        let committed = self.committed;
        let policy = self.policy.as_mut()?;
        let code = status.code();
        let retryable = policy.policy.is_retryable(code);
        if let Some(throttle) = &policy.throttle {
            if code == Code::Ok {
                throttle.record_success();
            } else if (retryable || pushback.is_some()) && !throttle.record_failure() {
                return None;
            }
        }
        if committed || code == Code::Ok || !retryable {
            return None;
        }
        if self.replay.as_ref().is_some_and(|r| r.is_committed()) {
            return None;
        }
        if policy.attempts >= policy.policy.max_attempts {
            return None;
        }
        let delay = match pushback.map(parse_retry_pushback) {
            Some(RetryPushback::DoNotRetry) => return None,
            Some(RetryPushback::RetryAfter(delay)) => {
                policy.retries = 0;
                delay
            }
            None => {
                policy.retries += 1;
                retry_backoff(&policy.policy, policy.retries, fastrand::f64())
            }
        };
        if let Some(deadline) = self.options.deadline_from(Instant::now()) {
            if Instant::now() + delay >= deadline {
                return None;
            }
        }
        Some(delay)
    }

    /// Starts the next attempt (after [`after`](Self::after) said when).
    pub(crate) fn next_policy_attempt(&mut self) -> Result<Opened, Status> {
        if let Some(policy) = &mut self.policy {
            policy.attempts += 1;
        }
        self.open()
    }
}

/// Where a streaming request's messages go now.
struct SinkTarget {
    conn: Arc<ClientConn>,
    key: StreamKey,
    call: Arc<CallState>,
}

struct ReplayInner {
    target: SinkTarget,
    frames: Vec<Bytes>,
    size: usize,
    committed: bool,
    finished: bool,
}

/// A streaming request's copy of what it sent, for retries: the frames,
/// while they fit the per-call limit and the channel's total.
pub(crate) struct Replay {
    inner: Mutex<ReplayInner>,
    limit: usize,
    /// Bytes all of the channel's calls keep, and their limit.
    channel: Arc<AtomicUsize>,
    channel_limit: usize,
}

impl Replay {
    pub(crate) fn new(
        opened: &Opened,
        limit: usize,
        channel: Arc<AtomicUsize>,
        channel_limit: usize,
    ) -> Self {
        Replay {
            inner: Mutex::new(ReplayInner {
                target: SinkTarget {
                    conn: opened.conn.clone(),
                    key: opened.key,
                    call: opened.state.clone(),
                },
                frames: Vec::new(),
                size: 0,
                committed: false,
                finished: false,
            }),
            limit,
            channel,
            channel_limit,
        }
    }

    fn release(&self, inner: &mut ReplayInner) {
        inner.frames.clear();
        self.channel.fetch_sub(inner.size, Ordering::Relaxed);
        inner.size = 0;
    }

    fn commit(&self) {
        let mut inner = self.inner.lock();
        inner.committed = true;
        self.release(&mut inner);
    }

    fn is_committed(&self) -> bool {
        self.inner.lock().committed
    }

    /// Sends one framed message: keeps a copy while it may be needed, and
    /// blocks while the current attempt's queue is full.
    pub(crate) fn send(&self, frame: Bytes) -> Result<(), Status> {
        let (conn, key, call) = {
            let mut inner = self.inner.lock();
            if !inner.committed {
                let len = frame.len();
                let total = self.channel.fetch_add(len, Ordering::Relaxed) + len;
                if inner.size + len > self.limit || total > self.channel_limit {
                    // Too big to keep: no retry from here on.
                    self.channel.fetch_sub(len, Ordering::Relaxed);
                    inner.committed = true;
                    self.release(&mut inner);
                } else {
                    inner.size += len;
                    inner.frames.push(frame.clone());
                }
            }
            let t = &inner.target;
            (t.conn.clone(), t.key, t.call.clone())
        };
        if let Err(e) = call.reserve(frame.len()) {
            // A retry may have moved the call on meanwhile, with this
            // frame in its replay.
            let moved = self.inner.lock().target.key != key;
            return if moved { Ok(()) } else { Err(e) };
        }
        call.note_sent(frame.len());
        conn.send(ClientCmd::Data(key, frame));
        Ok(())
    }

    /// Half-closes the request.
    pub(crate) fn finish(&self) {
        let mut inner = self.inner.lock();
        inner.finished = true;
        let t = &inner.target;
        t.conn.send(ClientCmd::End(t.key));
    }

    /// Moves the request to a new attempt: sends it everything sent so
    /// far (and the half-close). False once committed.
    fn switch_to(&self, opened: &Opened) -> bool {
        let mut inner = self.inner.lock();
        if inner.committed {
            opened.conn.send(ClientCmd::Cancel(opened.key));
            return false;
        }
        for frame in &inner.frames {
            opened.state.note_sent(frame.len());
            opened.conn.send(ClientCmd::Data(opened.key, frame.clone()));
        }
        if inner.finished {
            opened.conn.send(ClientCmd::End(opened.key));
        }
        inner.target = SinkTarget {
            conn: opened.conn.clone(),
            key: opened.key,
            call: opened.state.clone(),
        };
        true
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let mut inner = self.inner.lock();
        self.channel.fetch_sub(inner.size, Ordering::Relaxed);
        inner.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::link::{Alive, CallEvent};
    use crate::rt::mailbox::mailbox;

    struct Never;
    impl Reopen for Never {
        fn reopen(
            &self,
            _: &'static str,
            _: &CallOptions,
            _: Option<Bytes>,
            _: u32,
            _: Credit,
        ) -> Result<Opened, Status> {
            Err(Status::unavailable("no"))
        }
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            backoff_multiplier: 2.0,
            retryable_status_codes: vec![Code::Unavailable],
        }
    }

    fn plan(max_attempts: u32, throttle: Option<Arc<RetryThrottle>>) -> RetryPlan {
        RetryPlan::whole(
            Arc::new(Never),
            "/a/b",
            CallOptions::new(),
            Bytes::new(),
            Some(PolicyRetry::new(policy(max_attempts), throttle)),
            Credit::by_reader(65_535),
        )
    }

    #[test]
    fn retries_retryable_codes_up_to_max_attempts_with_growing_backoff() {
        let mut p = plan(3, None);
        let unavailable = Status::unavailable("down");
        let first = p.after(&unavailable, None).unwrap();
        assert!(first >= Duration::from_millis(8) && first <= Duration::from_millis(12));
        let _ = p.next_policy_attempt();
        let second = p.after(&unavailable, None).unwrap();
        assert!(second >= Duration::from_millis(16) && second <= Duration::from_millis(24));
        let _ = p.next_policy_attempt();
        // Three attempts made: no more.
        assert_eq!(p.after(&unavailable, None), None);
        // Other codes are never retried.
        let mut p = plan(5, None);
        assert_eq!(p.after(&Status::internal("bug"), None), None);
        assert_eq!(p.after(&Status::new(Code::Ok, ""), None), None);
    }

    #[test]
    fn pushback_sets_the_delay_or_stops_and_commit_stops() {
        let mut p = plan(5, None);
        let unavailable = Status::unavailable("down");
        assert_eq!(
            p.after(&unavailable, Some(b"250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(p.after(&unavailable, Some(b"-1")), None);
        let mut p = plan(5, None);
        p.commit();
        assert_eq!(p.after(&unavailable, None), None);
    }

    #[test]
    fn throttling_stops_retries_once_half_the_tokens_are_gone() {
        let throttle = Arc::new(RetryThrottle::new(
            crate::client::service_config::RetryThrottling {
                max_tokens: 4,
                token_ratio: 1.0,
            },
        ));
        let unavailable = Status::unavailable("down");
        // 4 tokens: failures take them to 3 (retry), 2 (no retry).
        let mut p = plan(5, Some(throttle.clone()));
        assert!(p.after(&unavailable, None).is_some());
        let mut p = plan(5, Some(throttle.clone()));
        assert_eq!(p.after(&unavailable, None), None);
        // Successes earn them back: 2 -> 4, then a failure leaves 3.
        for _ in 0..2 {
            let mut ok = plan(5, Some(throttle.clone()));
            assert_eq!(ok.after(&Status::new(Code::Ok, ""), None), None);
        }
        let mut p = plan(5, Some(throttle));
        assert!(p.after(&unavailable, None).is_some());
    }

    fn opened() -> (Opened, crossbeam_channel::Receiver<ClientCmd>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let wake = crate::rt::event_loop::Wake::for_tests();
        let conn = Arc::new(ClientConn::new(tx, wake, Arc::new(Alive::default())));
        let (_events_tx, events): (_, crate::rt::mailbox::Consumer<CallEvent>) = mailbox();
        (
            Opened {
                key: conn.next_key(),
                conn,
                state: Arc::new(CallState::new()),
                events,
                credited_on_arrival: false,
            },
            rx,
        )
    }

    fn data_sent(rx: &crossbeam_channel::Receiver<ClientCmd>) -> Vec<(u64, usize)> {
        rx.try_iter()
            .filter_map(|c| match c {
                ClientCmd::Data(key, frame) => Some((key.0, frame.len())),
                ClientCmd::End(key) => Some((key.0, usize::MAX)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replay_resends_to_the_new_attempt_until_it_outgrows_its_limit() {
        let (first, rx1) = opened();
        let channel = Arc::new(AtomicUsize::new(0));
        let replay = Replay::new(&first, 10, channel.clone(), 1000);
        replay.send(Bytes::from_static(b"abcd")).unwrap();
        replay.send(Bytes::from_static(b"ef")).unwrap();
        replay.finish();
        assert_eq!(data_sent(&rx1), [(0, 4), (0, 2), (0, usize::MAX)]);
        assert_eq!(channel.load(Ordering::Relaxed), 6);
        let (second, rx2) = opened();
        assert!(replay.switch_to(&second));
        assert_eq!(data_sent(&rx2), [(0, 4), (0, 2), (0, usize::MAX)]);
        // Past the limit: committed, the copy let go.
        let (third, _rx3) = opened();
        let replay = Replay::new(&third, 10, channel.clone(), 1000);
        replay.send(Bytes::from(vec![0; 11])).unwrap();
        assert!(replay.is_committed());
        let (fourth, _rx4) = opened();
        assert!(!replay.switch_to(&fourth));
        drop(replay);
        drop(second);
        assert_eq!(channel.load(Ordering::Relaxed), 6);
    }
}
