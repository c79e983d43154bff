//! What one peer may take of a server: handler threads and connections.
//!
//! A peer is a client IP address (every connection of a Unix socket is a
//! peer of its own: its clients have no address). A handler thread is
//! taken by a handler on the pool (streaming handlers, unary ones under
//! `UnaryHandlers::Workers`) and by an inline unary handler that blocked
//! long enough to be handed off (its connection moved to a new thread).
//! Every one of them needs a [`Permit`] from the server's budget: within
//! `max_concurrent_handlers` in all, and within `max_handlers_per_peer`
//! for its peer; so a peer that opens streams and never sends (holding a
//! handler each) takes at most its share, and the others are served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::rt::sync::{Condvar, Mutex};
use crate::server::peer::Peer;

/// Who counts as one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    /// A TCP client's address.
    Ip(IpAddr),
    /// One connection of a Unix socket.
    Conn(u64),
}

impl PeerKey {
    /// The key of a connection from `peer`.
    pub(crate) fn of(peer: &Peer) -> PeerKey {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        match peer {
            Peer::Tcp(addr) => PeerKey::Ip(addr.ip()),
            Peer::Unix(_) => PeerKey::Conn(NEXT.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

/// Why a permit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server runs its maximum of handlers.
    Server(usize),
    /// This peer runs its maximum.
    Peer(usize),
}

/// Counts per peer, within a maximum each.
#[derive(Debug)]
struct PerPeer {
    max: usize,
    used: Mutex<HashMap<PeerKey, usize>>,
}

impl PerPeer {
    fn acquire(&self, peer: PeerKey) -> bool {
        let mut used = self.used.lock();
        let n = used.entry(peer).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, peer: PeerKey) {
        let mut used = self.used.lock();
        if let Some(n) = used.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                used.remove(&peer);
            }
        }
    }
}

/// A server's handler threads, in all and per peer.
#[derive(Debug)]
pub(crate) struct HandlerBudget {
    max: usize,
    used: AtomicUsize,
    peers: PerPeer,
    /// Signalled when the last permit is given back.
    none_used: Condvar,
    lock: Mutex<()>,
}

impl HandlerBudget {
    pub(crate) fn new(max: usize, per_peer: usize) -> Arc<HandlerBudget> {
        Arc::new(HandlerBudget {
            max,
            used: AtomicUsize::new(0),
            peers: PerPeer {
                max: per_peer,
                used: Mutex::new(HashMap::new()),
            },
            none_used: Condvar::new(),
            lock: Mutex::new(()),
        })
    }

    /// Waits until no handler holds a thread (a graceful shutdown's last
    /// step: every handler has returned).
    pub(crate) fn wait_none_used(&self) {
        let mut guard = self.lock.lock();
        while self.in_use() > 0 {
            self.none_used
                .wait_for(&mut guard, std::time::Duration::from_millis(100));
        }
    }

    /// Handler threads taken now.
    pub(crate) fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Whether every handler thread is taken (new calls are refused).
    pub(crate) fn is_full(&self) -> bool {
        self.in_use() >= self.max
    }

    /// The most handler threads the server runs.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A handler thread for `peer`, if the server and the peer have one
    /// left.
    pub(crate) fn acquire(self: &Arc<Self>, peer: PeerKey) -> Result<Permit, Refused> {
        if self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refused::Server(self.max));
        }
        if !self.peers.acquire(peer) {
            self.used.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Peer(self.peers.max));
        }
        Ok(Permit {
            budget: self.clone(),
            peer,
        })
    }
}

/// One handler thread's place in the budget, given back on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    budget: Arc<HandlerBudget>,
    peer: PeerKey,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.peers.release(self.peer);
        if self.budget.used.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _guard = self.budget.lock.lock();
            self.budget.none_used.notify_all();
        }
    }
}

/// Connections per peer.
#[derive(Debug)]
pub(crate) struct ConnectionBudget {
    peers: PerPeer,
}

impl ConnectionBudget {
    pub(crate) fn new(per_peer: usize) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            peers: PerPeer {
                max: per_peer,
                used: Mutex::new(HashMap::new()),
            },
        })
    }

    /// Counts a connection from `peer`; `false` when the peer has its
    /// maximum already.
    pub(crate) fn open(&self, peer: PeerKey) -> bool {
        self.peers.acquire(peer)
    }

    /// A connection from `peer` ended.
    pub(crate) fn close(&self, peer: PeerKey) {
        self.peers.release(peer);
    }

    /// The most connections a peer may have.
    pub(crate) fn max(&self) -> usize {
        self.peers.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> PeerKey {
        PeerKey::Ip(IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn a_peer_gets_its_share_and_the_server_its_maximum() {
        let budget = HandlerBudget::new(5, 3);
        let a: Vec<Permit> = (0..3).map(|_| budget.acquire(ip(1)).unwrap()).collect();
        assert_eq!(budget.acquire(ip(1)).unwrap_err(), Refused::Peer(3));
        let b: Vec<Permit> = (0..2).map(|_| budget.acquire(ip(2)).unwrap()).collect();
        assert_eq!(budget.acquire(ip(3)).unwrap_err(), Refused::Server(5));
        drop(a);
        assert!(budget.acquire(ip(1)).is_ok());
        drop(b);
        assert_eq!(budget.used.load(Ordering::SeqCst), 0);
        assert!(budget.peers.used.lock().is_empty());
    }

    #[test]
    fn connections_per_peer() {
        let budget = ConnectionBudget::new(2);
        assert!(budget.open(ip(1)) && budget.open(ip(1)));
        assert!(!budget.open(ip(1)));
        assert!(budget.open(ip(2)));
        budget.close(ip(1));
        assert!(budget.open(ip(1)));
        let unix = PeerKey::of(&Peer::Unix("/s".into()));
        assert_ne!(unix, PeerKey::of(&Peer::Unix("/s".into())));
    }
}
