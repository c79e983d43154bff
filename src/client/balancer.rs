//! Load balancing (grpc/grpc `doc/load-balancing.md`) as a plain state
//! machine: events in (addresses resolved, a connect succeeded or failed, a
//! connection lost, a health report, time passing), actions out (resolve,
//! connect this address, watch its health, let a connection go), and a
//! pick for every call. No sockets and no threads here: the channel
//! (`channel.rs`, `subchannel.rs`) runs the actions and feeds the events.
//!
//! - **pick_first** (the default): one connection. It tries the addresses
//!   in order until one connects; when every one has failed the channel is
//!   in TRANSIENT_FAILURE, calls fail fast with the last error, and the
//!   next call after the backoff tries again. A lost connection leaves the
//!   channel IDLE until the next call.
//! - **round_robin**: one subchannel (connection) per address, each
//!   connecting at once and again whenever it is lost (after a backoff when
//!   connecting fails). Calls rotate over the READY ones; with health
//!   checking, only over those whose health service says SERVING.

use std::time::{Duration, Instant};

use crate::client::backoff::Backoff;
use crate::client::resolver::Address;
use crate::error::TransportError;
use crate::status::Status;

/// A channel's, or a subchannel's, connectivity state (grpc/grpc
/// `doc/connectivity-semantics-and-api.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectivityState {
    /// Not connected, and not trying: the next call (or
    /// [`Channel::state`](crate::Channel::state) with `try_to_connect`)
    /// connects.
    Idle,
    /// Resolving or connecting; calls wait.
    Connecting,
    /// Connected: calls go out.
    Ready,
    /// The last attempt failed; calls fail fast with its error (unless
    /// they wait for ready) until the next attempt.
    TransientFailure,
    /// The channel was closed.
    Shutdown,
}

impl std::fmt::Display for ConnectivityState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectivityState::Idle => "IDLE",
            ConnectivityState::Connecting => "CONNECTING",
            ConnectivityState::Ready => "READY",
            ConnectivityState::TransientFailure => "TRANSIENT_FAILURE",
            ConnectivityState::Shutdown => "SHUTDOWN",
        })
    }
}

/// The load-balancing policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    PickFirst,
    RoundRobin,
}

/// A subchannel, as the channel names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SubchannelId(pub(crate) u64);

/// What the channel must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Ask the resolver for the addresses.
    Resolve,
    /// Dial `address` for subchannel `id`; report with `attempt`.
    Connect {
        id: SubchannelId,
        attempt: u64,
        address: Address,
    },
    /// Watch the health of subchannel `id`'s connection (attempt `attempt`).
    WatchHealth { id: SubchannelId, attempt: u64 },
    /// Forget subchannel `id`'s connection: no new calls; those in flight
    /// finish, and the connection closes after them.
    Release { id: SubchannelId },
}

/// Where a call goes.
#[derive(Debug, Clone)]
pub(crate) enum Pick {
    /// On this subchannel's connection.
    Ready(SubchannelId),
    /// Nowhere yet: wait for a change.
    Queue,
    /// Nowhere: fail (unless the call waits for ready).
    Fail(Status),
}

/// A subchannel's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Idle,
    Connecting(u64),
    Ready(u64),
    Failed { retry_at: Instant },
}

/// What a subchannel's health service says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Not checked (or the server has no health service): serving.
    Unchecked,
    /// Checked, no answer yet.
    Unknown,
    Serving,
    NotServing,
}

#[derive(Debug)]
struct Sub {
    id: SubchannelId,
    address: Address,
    conn: Conn,
    health: Health,
    backoff: Backoff,
    last_error: Option<Status>,
    calls: u64,
}

impl Sub {
    fn state(&self) -> ConnectivityState {
        match (self.conn, self.health) {
            (Conn::Idle, _) => ConnectivityState::Idle,
            (Conn::Connecting(_), _) => ConnectivityState::Connecting,
            (Conn::Failed { .. }, _) => ConnectivityState::TransientFailure,
            (Conn::Ready(_), Health::Unchecked | Health::Serving) => ConnectivityState::Ready,
            // A17: CONNECTING until the first health report.
            (Conn::Ready(_), Health::Unknown) => ConnectivityState::Connecting,
            (Conn::Ready(_), Health::NotServing) => ConnectivityState::TransientFailure,
        }
    }
}

/// A subchannel as [`Channel::subchannels`](crate::Channel::subchannels)
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubchannelInfo {
    /// The backend's address.
    pub address: Address,
    /// Its state (READY only when connected and, with health checking,
    /// SERVING).
    pub state: ConnectivityState,
    /// Calls the channel has sent it.
    pub calls_started: u64,
}

/// The settings a balancer runs with.
#[derive(Debug, Clone)]
pub(crate) struct BalancerConfig {
    pub(crate) policy: Policy,
    pub(crate) health_checking: bool,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) min_resolve_interval: Duration,
    /// What errors name as the target.
    pub(crate) target: String,
}

/// One channel's load balancing.
#[derive(Debug)]
pub(crate) struct Balancer {
    config: BalancerConfig,
    subs: Vec<Sub>,
    next_id: u64,
    next_attempt: u64,
    /// Out of IDLE: connecting or connected (pick_first), or keeping every
    /// subchannel connected (round_robin).
    active: bool,
    /// pick_first: the address being tried, and the connected one.
    pf_index: usize,
    pf_selected: Option<SubchannelId>,
    /// pick_first: every address failed; the next round is due then.
    pf_failed: Option<Instant>,
    pf_backoff: Backoff,
    rr_cursor: usize,
    resolving: bool,
    resolved: bool,
    resolve_error: Option<Status>,
    resolve_retry_at: Option<Instant>,
    last_resolve: Option<Instant>,
    resolve_wanted_at: Option<Instant>,
    last_error: Option<Status>,
    actions: Vec<Action>,
    shutdown: bool,
}

impl Balancer {
    pub(crate) fn new(config: BalancerConfig) -> Self {
        Balancer {
            config,
            subs: Vec::new(),
            next_id: 0,
            next_attempt: 0,
            active: false,
            pf_index: 0,
            pf_selected: None,
            pf_failed: None,
            pf_backoff: Backoff::default(),
            rr_cursor: 0,
            resolving: false,
            resolved: false,
            resolve_error: None,
            resolve_retry_at: None,
            last_resolve: None,
            resolve_wanted_at: None,
            last_error: None,
            actions: Vec::new(),
            shutdown: false,
        }
    }

    fn sub(&mut self, id: SubchannelId) -> Option<&mut Sub> {
        self.subs.iter_mut().find(|s| s.id == id)
    }

    /// The actions to run now.
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// When [`on_timer`](Self::on_timer) has work next.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        let mut at = self.resolve_wanted_at;
        if self.active && self.config.policy == Policy::RoundRobin {
            for s in &self.subs {
                if let Conn::Failed { retry_at } = s.conn {
                    at = Some(at.map_or(retry_at, |a| a.min(retry_at)));
                }
            }
        }
        at
    }

    /// Time passed: reconnects and resolutions that are due.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.resolve_wanted_at.is_some_and(|at| at <= now) {
            self.resolve_wanted_at = None;
            self.start_resolving(now);
        }
        if self.active && self.config.policy == Policy::RoundRobin {
            let due: Vec<SubchannelId> = self
                .subs
                .iter()
                .filter(|s| matches!(s.conn, Conn::Failed { retry_at } if retry_at <= now))
                .map(|s| s.id)
                .collect();
            for id in due {
                self.connect(id);
            }
        }
    }

    /// A call, or the application, wants a connection.
    pub(crate) fn exit_idle(&mut self, now: Instant) {
        if self.shutdown || self.active {
            return;
        }
        self.active = true;
        if !self.resolved {
            self.start_resolving(now);
            return;
        }
        self.kick(now);
    }

    fn start_resolving(&mut self, now: Instant) {
        if self.resolving || self.shutdown {
            return;
        }
        self.resolving = true;
        self.last_resolve = Some(now);
        self.actions.push(Action::Resolve);
    }

    /// A connection was lost or a connect failed: resolve again, but not
    /// more often than the minimum interval.
    fn want_resolution(&mut self, now: Instant) {
        if self.resolving || self.resolve_wanted_at.is_some() {
            return;
        }
        match self.last_resolve {
            Some(last) if now < last + self.config.min_resolve_interval => {
                self.resolve_wanted_at = Some(last + self.config.min_resolve_interval);
            }
            _ => self.start_resolving(now),
        }
    }

    /// The resolver asked to be called again.
    pub(crate) fn resolve_now(&mut self, now: Instant) {
        self.resolve_wanted_at = None;
        if self.resolving {
            // Once more when this one ends.
            self.resolve_wanted_at = Some(now);
            return;
        }
        self.start_resolving(now);
    }

    /// The resolver answered.
    pub(crate) fn on_resolved(&mut self, result: std::io::Result<Vec<Address>>, now: Instant) {
        self.resolving = false;
        let addresses = match result {
            Ok(list) if !list.is_empty() => list,
            Ok(_) => {
                return self.resolution_failed(
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the resolver returned no address",
                    ),
                    now,
                )
            }
            Err(e) => return self.resolution_failed(e, now),
        };
        self.resolved = true;
        self.resolve_error = None;
        self.resolve_retry_at = None;
        // Keep the subchannels of addresses still there, in the new order.
        let mut old = std::mem::take(&mut self.subs);
        for address in addresses {
            if self.subs.iter().any(|s| s.address == address) {
                continue;
            }
            match old.iter().position(|s| s.address == address) {
                Some(i) => self.subs.push(old.remove(i)),
                None => {
                    let id = SubchannelId(self.next_id);
                    self.next_id += 1;
                    self.subs.push(Sub {
                        id,
                        address,
                        conn: Conn::Idle,
                        health: Health::Unchecked,
                        backoff: Backoff::default(),
                        last_error: None,
                        calls: 0,
                    });
                }
            }
        }
        for gone in old {
            if self.pf_selected == Some(gone.id) {
                self.pf_selected = None;
            }
            self.actions.push(Action::Release { id: gone.id });
        }
        if self.config.policy == Policy::PickFirst && self.pf_selected.is_none() {
            self.pf_index = 0;
        }
        if self.active {
            self.kick(now);
        }
    }

    fn resolution_failed(&mut self, error: std::io::Error, now: Instant) {
        let status = Status::from_transport(TransportError::Resolve {
            target: self.config.target.clone(),
            source: error,
        });
        if self.subs.is_empty() {
            // Nothing to fall back on: calls fail with this until a later
            // resolution, tried after a backoff.
            self.pf_backoff.failed(
                now,
                self.config.backoff_initial,
                self.config.backoff_max,
                status
                    .transport_error()
                    .expect("made from a transport error"),
            );
            self.resolve_retry_at = self.pf_backoff.next_attempt();
            self.resolve_error = Some(status);
        } else {
            log::warn!(
                "re-resolving {} failed: {}",
                self.config.target,
                status.message()
            );
        }
    }

    /// Starts what the policy wants connected.
    fn kick(&mut self, now: Instant) {
        if !self.active || self.shutdown {
            return;
        }
        match self.config.policy {
            Policy::PickFirst => {
                let busy = self.pf_selected.is_some()
                    || self
                        .subs
                        .iter()
                        .any(|s| matches!(s.conn, Conn::Connecting(_)));
                if busy || self.pf_failed.is_some_and(|at| now < at) {
                    return;
                }
                self.pf_failed = None;
                if let Some(id) = self.subs.get(self.pf_index).map(|s| s.id) {
                    self.connect(id);
                }
            }
            Policy::RoundRobin => {
                let idle: Vec<SubchannelId> = self
                    .subs
                    .iter()
                    .filter(|s| s.conn == Conn::Idle)
                    .map(|s| s.id)
                    .collect();
                for id in idle {
                    self.connect(id);
                }
            }
        }
    }

    fn connect(&mut self, id: SubchannelId) {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let Some(sub) = self.sub(id) else {
            return;
        };
        sub.conn = Conn::Connecting(attempt);
        let address = sub.address.clone();
        self.actions.push(Action::Connect {
            id,
            attempt,
            address,
        });
    }

    /// Subchannel `id`'s connect (attempt `attempt`) succeeded.
    pub(crate) fn on_connected(&mut self, id: SubchannelId, attempt: u64) -> bool {
        let health_checking = self.config.health_checking;
        let policy = self.config.policy;
        let Some(sub) = self.sub(id) else {
            return false;
        };
        if sub.conn != Conn::Connecting(attempt) {
            return false;
        }
        sub.conn = Conn::Ready(attempt);
        sub.backoff.succeeded();
        sub.last_error = None;
        if health_checking && policy == Policy::RoundRobin {
            sub.health = Health::Unknown;
            self.actions.push(Action::WatchHealth { id, attempt });
        }
        if policy == Policy::PickFirst {
            self.pf_selected = Some(id);
            self.pf_backoff.succeeded();
        }
        true
    }

    /// Subchannel `id`'s connect (attempt `attempt`) failed.
    pub(crate) fn on_connect_failed(
        &mut self,
        id: SubchannelId,
        attempt: u64,
        error: TransportError,
        now: Instant,
    ) {
        let (initial, max) = (self.config.backoff_initial, self.config.backoff_max);
        let policy = self.config.policy;
        let Some(sub) = self.sub(id) else {
            return;
        };
        if sub.conn != Conn::Connecting(attempt) {
            return;
        }
        sub.backoff.failed(now, initial, max, &error);
        let retry_at = sub.backoff.next_attempt().unwrap_or(now);
        sub.conn = match policy {
            Policy::RoundRobin => Conn::Failed { retry_at },
            Policy::PickFirst => Conn::Idle,
        };
        let status = Status::from_transport(error);
        sub.last_error = Some(status.clone());
        if policy == Policy::PickFirst {
            self.pf_index += 1;
            if self.pf_index >= self.subs.len() {
                // Every address failed: TRANSIENT_FAILURE until the backoff
                // passes and a call (or a caller waiting) starts a round.
                self.pf_index = 0;
                self.pf_backoff.failed(
                    now,
                    initial,
                    max,
                    status
                        .transport_error()
                        .expect("made from a transport error"),
                );
                self.pf_failed = self.pf_backoff.next_attempt();
                self.last_error = Some(status);
                self.want_resolution(now);
            } else {
                self.kick(now);
            }
        } else {
            self.last_error = Some(status);
            self.want_resolution(now);
        }
    }

    /// Subchannel `id`'s connection (attempt `attempt`) is gone (or takes
    /// no new calls).
    pub(crate) fn on_lost(&mut self, id: SubchannelId, attempt: u64, now: Instant) {
        let Some(sub) = self.sub(id) else {
            return;
        };
        if sub.conn != Conn::Ready(attempt) {
            return;
        }
        sub.conn = Conn::Idle;
        if sub.health != Health::Unchecked {
            sub.health = Health::Unknown;
        }
        self.actions.push(Action::Release { id });
        match self.config.policy {
            Policy::PickFirst => {
                // IDLE until the next call (doc/load-balancing.md).
                self.pf_selected = None;
                self.pf_index = 0;
                self.active = false;
            }
            Policy::RoundRobin => self.kick(now),
        }
        self.want_resolution(now);
    }

    /// Subchannel `id`'s health service said `serving` (or, with `None`,
    /// that it has no health service: checking stops, and it counts as
    /// serving).
    pub(crate) fn on_health(&mut self, id: SubchannelId, attempt: u64, serving: Option<bool>) {
        let Some(sub) = self.sub(id) else {
            return;
        };
        if sub.conn != Conn::Ready(attempt) {
            return;
        }
        sub.health = match serving {
            None => Health::Unchecked,
            Some(true) => Health::Serving,
            Some(false) => Health::NotServing,
        };
    }

    /// The channel is closed.
    pub(crate) fn shut_down(&mut self) {
        self.shutdown = true;
        for s in &self.subs {
            self.actions.push(Action::Release { id: s.id });
        }
        self.subs.clear();
    }

    /// The channel's state.
    pub(crate) fn state(&self) -> ConnectivityState {
        if self.shutdown {
            return ConnectivityState::Shutdown;
        }
        if self.resolve_error.is_some() {
            return ConnectivityState::TransientFailure;
        }
        if !self.active {
            return ConnectivityState::Idle;
        }
        if self.resolving && self.subs.is_empty() {
            return ConnectivityState::Connecting;
        }
        match self.config.policy {
            Policy::PickFirst => {
                if self.pf_selected.is_some() {
                    ConnectivityState::Ready
                } else if self.pf_failed.is_some() {
                    ConnectivityState::TransientFailure
                } else {
                    ConnectivityState::Connecting
                }
            }
            Policy::RoundRobin => {
                let states: Vec<ConnectivityState> = self.subs.iter().map(Sub::state).collect();
                if states.contains(&ConnectivityState::Ready) {
                    ConnectivityState::Ready
                } else if states
                    .iter()
                    .any(|s| matches!(s, ConnectivityState::Connecting | ConnectivityState::Idle))
                {
                    ConnectivityState::Connecting
                } else {
                    ConnectivityState::TransientFailure
                }
            }
        }
    }

    /// Where the next call goes. A call on an IDLE channel starts it
    /// connecting; a call after a failed round's backoff starts the next
    /// round.
    pub(crate) fn pick(&mut self, now: Instant) -> Pick {
        if self.shutdown {
            return Pick::Fail(Status::unavailable("the channel was closed"));
        }
        if let Some(status) = &self.resolve_error {
            if self.resolve_retry_at.is_some_and(|at| now >= at) && !self.resolving {
                self.resolve_retry_at = None;
                self.start_resolving(now);
                return Pick::Queue;
            }
            if self.resolving {
                return Pick::Queue;
            }
            return Pick::Fail(status.clone());
        }
        if !self.active {
            self.exit_idle(now);
        }
        match self.config.policy {
            Policy::PickFirst => {
                if let Some(id) = self.pf_selected {
                    if let Some(sub) = self.sub(id) {
                        sub.calls += 1;
                    }
                    return Pick::Ready(id);
                }
                if let Some(at) = self.pf_failed {
                    if now < at {
                        return Pick::Fail(self.backoff_status(at - now));
                    }
                    self.kick(now);
                }
                Pick::Queue
            }
            Policy::RoundRobin => {
                let ready: Vec<usize> = (0..self.subs.len())
                    .filter(|&i| self.subs[i].state() == ConnectivityState::Ready)
                    .collect();
                if !ready.is_empty() {
                    let i = ready[self.rr_cursor % ready.len()];
                    self.rr_cursor = self.rr_cursor.wrapping_add(1);
                    self.subs[i].calls += 1;
                    return Pick::Ready(self.subs[i].id);
                }
                match self.state() {
                    ConnectivityState::TransientFailure => {
                        let retry = self
                            .subs
                            .iter()
                            .filter_map(|s| match s.conn {
                                Conn::Failed { retry_at } => Some(retry_at),
                                _ => None,
                            })
                            .min()
                            .map(|at| at.saturating_duration_since(now));
                        match retry {
                            Some(left) => Pick::Fail(self.backoff_status(left)),
                            None => Pick::Fail(Status::unavailable(format!(
                                "no backend of {} is serving (its health service says NOT_SERVING)",
                                self.config.target
                            ))),
                        }
                    }
                    _ => Pick::Queue,
                }
            }
        }
    }

    /// The status of a call that fails fast while connecting is backing
    /// off.
    fn backoff_status(&self, retry_in: Duration) -> Status {
        let last = self
            .last_error
            .as_ref()
            .map(|s| s.message().to_owned())
            .unwrap_or_default();
        Status::from_transport(TransportError::Backoff {
            target: self.config.target.clone(),
            retry_in,
            last_error: last,
        })
    }

    /// The last connect error, for a caller that connected eagerly.
    pub(crate) fn last_error(&self) -> Option<&Status> {
        self.resolve_error.as_ref().or(self.last_error.as_ref())
    }

    /// When a pick that failed fast could succeed: the next attempt.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        let subs = self.subs.iter().filter_map(|s| match s.conn {
            Conn::Failed { retry_at } => Some(retry_at),
            _ => None,
        });
        subs.chain(self.pf_failed)
            .chain(self.resolve_retry_at)
            .min()
    }

    /// The subchannels.
    pub(crate) fn subchannels(&self) -> Vec<SubchannelInfo> {
        self.subs
            .iter()
            .map(|s| SubchannelInfo {
                address: s.address.clone(),
                state: s.state(),
                calls_started: s.calls,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u16) -> Address {
        Address::Tcp(format!("127.0.0.1:{n}").parse().unwrap())
    }

    fn balancer(policy: Policy, health: bool) -> Balancer {
        Balancer::new(BalancerConfig {
            policy,
            health_checking: health,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            min_resolve_interval: Duration::from_secs(30),
            target: "t".into(),
        })
    }

    fn refused() -> TransportError {
        TransportError::Connect {
            target: "t".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        }
    }

    /// The connects asked for, by address port.
    /// A round_robin balancer with backends 1 and 2 resolved and both
    /// connected (and the actions so far taken), with their connects.
    fn round_robin_connected(
        health: bool,
        now: Instant,
    ) -> (Balancer, Vec<(SubchannelId, u64, u16)>) {
        let mut b = balancer(Policy::RoundRobin, health);
        b.exit_idle(now);
        b.take_actions();
        b.on_resolved(Ok(vec![addr(1), addr(2)]), now);
        let c = connects(&mut b);
        for (id, attempt, _) in &c {
            b.on_connected(*id, *attempt);
        }
        (b, c)
    }

    fn connects(b: &mut Balancer) -> Vec<(SubchannelId, u64, u16)> {
        b.take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Connect {
                    id,
                    attempt,
                    address: Address::Tcp(a),
                } => Some((id, attempt, a.port())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pick_first_tries_addresses_in_order_then_fails_fast_until_the_backoff() {
        let now = Instant::now();
        let mut b = balancer(Policy::PickFirst, false);
        assert_eq!(b.state(), ConnectivityState::Idle);
        assert!(matches!(b.pick(now), Pick::Queue));
        assert_eq!(b.take_actions(), [Action::Resolve]);
        assert_eq!(b.state(), ConnectivityState::Connecting);
        b.on_resolved(Ok(vec![addr(1), addr(2)]), now);
        let c = connects(&mut b);
        assert_eq!(c.iter().map(|c| c.2).collect::<Vec<_>>(), [1]);
        b.on_connect_failed(c[0].0, c[0].1, refused(), now);
        let c2 = connects(&mut b);
        assert_eq!(c2.iter().map(|c| c.2).collect::<Vec<_>>(), [2]);
        assert_eq!(b.state(), ConnectivityState::Connecting);
        b.on_connect_failed(c2[0].0, c2[0].1, refused(), now);
        assert_eq!(b.state(), ConnectivityState::TransientFailure);
        match b.pick(now) {
            Pick::Fail(s) => {
                assert!(matches!(
                    s.transport_error(),
                    Some(TransportError::Backoff { .. })
                ))
            }
            other => panic!("{other:?}"),
        }
        // After the backoff, a pick starts the next round.
        let later = now + Duration::from_secs(2);
        assert!(matches!(b.pick(later), Pick::Queue));
        let c3 = connects(&mut b);
        assert_eq!(c3.iter().map(|c| c.2).collect::<Vec<_>>(), [1]);
        assert!(b.on_connected(c3[0].0, c3[0].1));
        assert_eq!(b.state(), ConnectivityState::Ready);
        assert!(matches!(b.pick(later), Pick::Ready(id) if id == c3[0].0));
        // A lost connection leaves the channel IDLE until the next call.
        b.on_lost(c3[0].0, c3[0].1, later);
        assert_eq!(b.state(), ConnectivityState::Idle);
        assert!(matches!(b.pick(later), Pick::Queue));
        assert_eq!(connects(&mut b).len(), 1);
    }

    #[test]
    fn round_robin_connects_everything_and_rotates_over_ready_backends() {
        let now = Instant::now();
        let mut b = balancer(Policy::RoundRobin, false);
        b.exit_idle(now);
        b.take_actions();
        b.on_resolved(Ok(vec![addr(1), addr(2), addr(3)]), now);
        let c = connects(&mut b);
        assert_eq!(c.len(), 3);
        assert!(matches!(b.pick(now), Pick::Queue));
        b.on_connected(c[0].0, c[0].1);
        b.on_connected(c[2].0, c[2].1);
        b.on_connect_failed(c[1].0, c[1].1, refused(), now);
        let picks: Vec<SubchannelId> = (0..4)
            .map(|_| match b.pick(now) {
                Pick::Ready(id) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(picks, [c[0].0, c[2].0, c[0].0, c[2].0]);
        // The failed one retries after its backoff.
        let due = b.next_wakeup().unwrap();
        assert!(due > now);
        b.on_timer(due);
        let again = connects(&mut b);
        assert_eq!(again.iter().map(|c| c.2).collect::<Vec<_>>(), [2]);
        b.on_connected(again[0].0, again[0].1);
        let mut seen: Vec<u64> = b.subchannels().iter().map(|s| s.calls_started).collect();
        for _ in 0..3 {
            b.pick(now);
        }
        seen = b
            .subchannels()
            .iter()
            .zip(seen)
            .map(|(s, before)| s.calls_started - before)
            .collect();
        assert_eq!(seen, [1, 1, 1]);
        // A lost one reconnects at once; the others keep serving.
        b.on_lost(c[0].0, c[0].1, now);
        let c4 = connects(&mut b);
        assert_eq!(c4.iter().map(|c| c.2).collect::<Vec<_>>(), [1]);
        assert_eq!(b.state(), ConnectivityState::Ready);
    }

    #[test]
    fn round_robin_fails_fast_when_every_backend_failed() {
        let now = Instant::now();
        let mut b = balancer(Policy::RoundRobin, false);
        b.exit_idle(now);
        b.take_actions();
        b.on_resolved(Ok(vec![addr(1), addr(2)]), now);
        for (id, attempt, _) in connects(&mut b) {
            b.on_connect_failed(id, attempt, refused(), now);
        }
        assert_eq!(b.state(), ConnectivityState::TransientFailure);
        assert!(matches!(b.pick(now), Pick::Fail(_)));
        assert!(b.retry_at().is_some_and(|at| at > now));
    }

    #[test]
    fn health_decides_which_ready_backends_get_calls() {
        let now = Instant::now();
        let (mut b, c) = round_robin_connected(true, now);
        let watches: Vec<Action> = b.take_actions();
        assert_eq!(watches.len(), 2);
        // Connected but not yet reported: CONNECTING.
        assert_eq!(b.state(), ConnectivityState::Connecting);
        assert!(matches!(b.pick(now), Pick::Queue));
        b.on_health(c[0].0, c[0].1, Some(false));
        b.on_health(c[1].0, c[1].1, Some(true));
        for _ in 0..3 {
            assert!(matches!(b.pick(now), Pick::Ready(id) if id == c[1].0));
        }
        b.on_health(c[1].0, c[1].1, Some(false));
        assert_eq!(b.state(), ConnectivityState::TransientFailure);
        assert!(matches!(b.pick(now), Pick::Fail(_)));
        // No health service: counts as serving.
        b.on_health(c[0].0, c[0].1, None);
        assert!(matches!(b.pick(now), Pick::Ready(id) if id == c[0].0));
    }

    #[test]
    fn resolver_updates_keep_known_backends_and_release_gone_ones() {
        let now = Instant::now();
        let (mut b, c) = round_robin_connected(false, now);
        b.resolve_now(now);
        assert_eq!(b.take_actions(), [Action::Resolve]);
        b.on_resolved(Ok(vec![addr(2), addr(3)]), now);
        let actions = b.take_actions();
        assert!(actions.contains(&Action::Release { id: c[0].0 }));
        let new: Vec<u16> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Connect {
                    address: Address::Tcp(a),
                    ..
                } => Some(a.port()),
                _ => None,
            })
            .collect();
        assert_eq!(new, [3]);
        let ports: Vec<String> = b
            .subchannels()
            .iter()
            .map(|s| s.address.to_string())
            .collect();
        assert_eq!(ports, ["127.0.0.1:2", "127.0.0.1:3"]);
        // Stale reports about the released subchannel change nothing.
        b.on_lost(c[0].0, c[0].1, now);
        assert_eq!(b.state(), ConnectivityState::Ready);
    }

    #[test]
    fn resolution_is_limited_to_the_minimum_interval_unless_asked() {
        let now = Instant::now();
        let mut b = balancer(Policy::RoundRobin, false);
        b.exit_idle(now);
        assert_eq!(b.take_actions(), [Action::Resolve]);
        b.on_resolved(Ok(vec![addr(1)]), now);
        let c = connects(&mut b);
        b.on_connected(c[0].0, c[0].1);
        b.on_lost(c[0].0, c[0].1, now + Duration::from_secs(1));
        let actions = b.take_actions();
        assert!(!actions.contains(&Action::Resolve), "{actions:?}");
        assert_eq!(b.next_wakeup(), Some(now + Duration::from_secs(30)));
        b.on_timer(now + Duration::from_secs(30));
        assert!(b.take_actions().contains(&Action::Resolve));
    }

    #[test]
    fn a_failed_first_resolution_fails_calls_then_retries() {
        let now = Instant::now();
        let mut b = balancer(Policy::PickFirst, false);
        assert!(matches!(b.pick(now), Pick::Queue));
        b.take_actions();
        b.on_resolved(Err(std::io::Error::other("no such host")), now);
        assert_eq!(b.state(), ConnectivityState::TransientFailure);
        match b.pick(now) {
            Pick::Fail(s) => assert!(s.message().contains("no such host"), "{}", s.message()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(b.pick(now + Duration::from_secs(5)), Pick::Queue));
        assert_eq!(b.take_actions(), [Action::Resolve]);
    }
}
