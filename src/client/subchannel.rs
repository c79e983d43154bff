//! Running a channel's load balancing: the balancer (`balancer.rs`) under a
//! lock, the connections of its subchannels, and the threads that carry
//! out its actions. There is no thread of the channel's own:
//!
//! - a subchannel's thread dials its address and then runs the
//!   connection's loop itself (it is the connection's thread), reports the
//!   connection lost when the loop ends, and, after a failed connect under
//!   round_robin, sleeps out the backoff and tries again;
//! - resolution runs on a short-lived thread (a DNS lookup may block);
//! - with client-side health checking, one thread per connected
//!   subchannel follows its `grpc.health.v1.Health/Watch` stream.
//!
//! Callers pick under the same lock and wait on its condition variable for
//! a change (a connection made or lost, an address list, a health report).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::rt::sync::{Condvar, Mutex, MutexGuard};

use crate::client::balancer::{Action, Balancer, ConnectivityState, SubchannelId};
use crate::client::config::ChannelConfig;
use crate::client::conn;
use crate::client::connect::connect_address;
use crate::client::health_watch::{self, WatchTarget};
use crate::client::link::ClientConn;
use crate::client::resolver::{Address, ResolveNow, Resolver};
use crate::client::target::Target;
use crate::error::TransportError;

/// What a channel's threads share.
pub(crate) struct Shared {
    state: Mutex<LbState>,
    changed: Condvar,
    dialer: Dialer,
}

/// The balancer and the live connections of its subchannels.
pub(crate) struct LbState {
    pub(crate) balancer: Balancer,
    pub(crate) conns: HashMap<SubchannelId, (u64, Arc<ClientConn>)>,
}

/// How a channel reaches an address.
pub(crate) struct Dialer {
    pub(crate) target: Target,
    pub(crate) config: ChannelConfig,
    pub(crate) resolver: Arc<dyn Resolver>,
    /// The rustls configuration, when the target speaks TLS.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Dialer {
    /// Connects to `address` (with TLS, when the target speaks it) within
    /// the connect timeout; returns the connection's handle and its loop.
    fn dial(&self, address: &Address) -> Result<(Arc<ClientConn>, impl FnOnce()), TransportError> {
        let timeout = self.config.connect_timeout;
        let deadline = Instant::now() + timeout;
        let socket = connect_address(address, timeout)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let target = address.to_string();
            let session =
                crate::tls::client_handshake(&socket, tls, &self.target.host, &target, deadline)?;
            let silent_close = session.sent_no_certificate.then(|| TransportError::Tls {
                target,
                reason: crate::tls::NO_CERTIFICATE_SENT.into(),
            });
            let (conn, run) = conn::prepare(
                socket,
                |raw, blocked| crate::transport::Transport::with_tls(raw, blocked, session.conn),
                &self.config.conn,
                silent_close,
            )?;
            return Ok((conn, Box::new(run) as Box<dyn FnOnce() + Send>));
        }
        let _ = deadline;
        let (conn, run) = conn::prepare(
            socket,
            crate::transport::Transport::plain,
            &self.config.conn,
            None,
        )?;
        Ok((conn, Box::new(run) as Box<dyn FnOnce() + Send>))
    }
}

impl Shared {
    pub(crate) fn new(balancer: Balancer, dialer: Dialer) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            state: Mutex::new(LbState {
                balancer,
                conns: HashMap::new(),
            }),
            changed: Condvar::new(),
            dialer,
        });
        let weak = Arc::downgrade(&shared);
        shared
            .dialer
            .resolver
            .subscribe(ResolveNow(Arc::new(move || {
                if let Some(shared) = weak.upgrade() {
                    shared.update(|b, now| b.resolve_now(now));
                }
            })));
        shared
    }

    pub(crate) fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The state, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, LbState> {
        self.state.lock()
    }

    /// Waits for a change, until `deadline` if any; false on timeout.
    pub(crate) fn wait(
        &self,
        state: &mut MutexGuard<'_, LbState>,
        deadline: Option<Instant>,
    ) -> bool {
        match deadline {
            Some(at) => !self.changed.wait_until(state, at).timed_out(),
            None => {
                self.changed.wait(state);
                true
            }
        }
    }

    /// Applies `f` to the balancer, then carries out the actions it asked
    /// for and wakes the callers waiting for a change.
    pub(crate) fn update(self: &Arc<Self>, f: impl FnOnce(&mut Balancer, Instant)) {
        let mut state = self.lock();
        f(&mut state.balancer, Instant::now());
        self.settle(state);
    }

    /// Carries out the balancer's pending actions and wakes the waiters,
    /// then lets the lock go.
    pub(crate) fn settle(self: &Arc<Self>, mut state: MutexGuard<'_, LbState>) {
        self.settle_keep(&mut state);
    }

    /// Carries out the balancer's pending actions (releasing connections,
    /// starting threads: they wait for the lock the caller holds) and wakes
    /// the waiters.
    pub(crate) fn settle_keep(self: &Arc<Self>, state: &mut MutexGuard<'_, LbState>) {
        let actions = state.balancer.take_actions();
        for action in actions {
            match action {
                Action::Release { id } => {
                    // Calls in flight hold the connection; it closes after
                    // them.
                    state.conns.remove(&id);
                }
                other => self.start(other),
            }
        }
        self.changed.notify_all();
    }

    fn start(self: &Arc<Self>, action: Action) {
        let shared = self.clone();
        let (name, job): (&str, Box<dyn FnOnce() + Send>) = match action {
            Action::Resolve => ("grpc-resolver", Box::new(move || shared.resolve())),
            Action::Connect {
                id,
                attempt,
                address,
            } => (
                "grpc-client-conn",
                Box::new(move || shared.run_subchannel(id, attempt, address)),
            ),
            Action::WatchHealth { id, attempt } => (
                "grpc-health-watch",
                Box::new(move || shared.watch_health(id, attempt)),
            ),
            Action::Release { .. } => return,
        };
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .stack_size(self.dialer.config.conn.stack_size)
            .spawn(job);
        if let Err(e) = spawned {
            log::error!("could not start a {name} thread: {e}");
        }
    }

    fn resolve(self: &Arc<Self>) {
        let result = self.dialer.resolver.resolve();
        self.update(|b, now| b.on_resolved(result, now));
    }

    /// A subchannel's thread: dial, then run the connection until it ends;
    /// after a failed connect, wait out the backoff (round_robin's retry
    /// is then started by the balancer).
    fn run_subchannel(self: &Arc<Self>, id: SubchannelId, attempt: u64, address: Address) {
        match self.dialer.dial(&address) {
            Ok((conn, run)) => {
                let weak: Weak<Shared> = Arc::downgrade(self);
                conn.on_down(Box::new(move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.update(|b, now| b.on_lost(id, attempt, now));
                    }
                }));
                {
                    let mut state = self.lock();
                    if !state.balancer.on_connected(id, attempt) {
                        // Released meanwhile (the channel closed, the
                        // address went away): hang up.
                        drop(state);
                        drop(conn);
                        run();
                        return;
                    }
                    state.conns.insert(id, (attempt, conn));
                    self.settle(state);
                }
                run();
            }
            Err(error) => {
                self.update(|b, now| b.on_connect_failed(id, attempt, error, now));
                self.wait_out_backoff();
            }
        }
    }

    /// Sleeps until the balancer's next timer (a backoff ending, a
    /// deferred resolution) and runs it, while there is one and the
    /// channel lives.
    fn wait_out_backoff(self: &Arc<Self>) {
        let mut state = self.lock();
        loop {
            if state.balancer.state() == ConnectivityState::Shutdown {
                return;
            }
            let Some(at) = state.balancer.next_wakeup() else {
                return;
            };
            if Instant::now() >= at {
                state.balancer.on_timer(Instant::now());
                self.settle(state);
                return;
            }
            // Woken early by any change: look again.
            self.changed.wait_until(&mut state, at);
        }
    }

    /// Follows subchannel `id`'s health while its connection lives.
    fn watch_health(self: &Arc<Self>, id: SubchannelId, attempt: u64) {
        let Some(service) = self.dialer.config.health_check_service.clone() else {
            return;
        };
        let conn = match self.lock().conns.get(&id) {
            Some((a, conn)) if *a == attempt => conn.clone(),
            _ => return,
        };
        let weak = Arc::downgrade(self);
        let dialer = &self.dialer;
        let target = WatchTarget {
            authority: &dialer.target.authority_header,
            scheme: dialer.target.scheme(dialer.target.tls),
            max_receive: dialer.config.conn.max_receive_message_size,
            max_header_list: dialer.config.conn.http2.max_header_list_size as usize,
        };
        health_watch::watch(
            &conn,
            &target,
            &service,
            &mut |serving| match weak.upgrade() {
                Some(shared) => {
                    shared.update(|b, _| b.on_health(id, attempt, serving));
                    true
                }
                None => false,
            },
        );
    }

    /// Closes the channel: no new calls; connections close once their
    /// calls end.
    pub(crate) fn shut_down(self: &Arc<Self>) {
        let mut state = self.lock();
        state.balancer.shut_down();
        state.conns.clear();
        self.settle(state);
    }
}
