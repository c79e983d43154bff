//! Name resolution (grpc/grpc `doc/naming.md`): from a target to the
//! addresses of its backends. A channel asks its [`Resolver`] when it first
//! needs a connection, when a connection is lost or a connect fails (at
//! most every [`min_resolve_interval`](crate::ChannelBuilder::min_resolve_interval)),
//! and whenever the resolver says its addresses changed.
//!
//! Built in: DNS (every A and AAAA address of `host:port`), static lists
//! (`ipv4:`, `ipv6:` targets), Unix sockets, and [`ManualResolver`], a list
//! the application updates. An application with its own registry
//! implements [`Resolver`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::transport::UnixAddr;

/// One backend a channel can connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix domain socket's path.
    Unix(PathBuf),
    /// A Unix domain socket's name in Linux's abstract namespace.
    UnixAbstract(Vec<u8>),
}

impl Address {
    /// The Unix socket address, for dialling.
    pub(crate) fn unix(&self) -> Option<UnixAddr> {
        match self {
            Address::Tcp(_) => None,
            Address::Unix(p) => Some(UnixAddr::Path(p.clone())),
            Address::UnixAbstract(n) => Some(UnixAddr::Abstract(n.clone())),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Tcp(addr)
    }
}

impl From<UnixAddr> for Address {
    fn from(addr: UnixAddr) -> Self {
        match addr {
            UnixAddr::Path(p) => Address::Unix(p),
            UnixAddr::Abstract(n) => Address::UnixAbstract(n),
        }
    }
}

impl fmt::Display for Address {
    /// `127.0.0.1:50051`, `[::1]:50051`, `unix:/run/app.sock`,
    /// `unix-abstract:name`: the forms a target takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::UnixAbstract(n) => write!(f, "unix-abstract:{}", String::from_utf8_lossy(n)),
        }
    }
}

/// Where a channel learns its backends' addresses.
///
/// `resolve` may block (a DNS lookup, a call to a registry): the channel
/// calls it from its own thread, never from a caller's. A resolver whose
/// addresses change on their own (pushed by a registry) tells the channel
/// through the [`ResolveNow`] handle it is given in `subscribe`.
///
/// ```
/// use std::io;
/// use grpc_blocking::client::{Address, Resolver};
///
/// /// Backends from a file, one address per line.
/// struct FromFile(std::path::PathBuf);
///
/// impl Resolver for FromFile {
///     fn resolve(&self) -> io::Result<Vec<Address>> {
///         std::fs::read_to_string(&self.0)?
///             .lines()
///             .map(|l| l.trim().parse().map(Address::Tcp))
///             .collect::<Result<_, _>>()
///             .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
///     }
/// }
/// # let _ = FromFile("backends.txt".into());
/// ```
pub trait Resolver: Send + Sync + 'static {
    /// The backends' addresses now. An error, or no address, leaves the
    /// channel with the addresses it had (or, at first, fails its calls
    /// `UNAVAILABLE` with the error).
    fn resolve(&self) -> io::Result<Vec<Address>>;

    /// Called once, when the channel starts using the resolver, with a
    /// handle to ask it to resolve again. The default keeps nothing.
    fn subscribe(&self, resolve_now: ResolveNow) {
        let _ = resolve_now;
    }
}

/// Asks a channel to call its resolver again, now (not limited by the
/// channel's minimum interval between resolutions). Cheap to clone; does
/// nothing once the channel is gone.
#[derive(Clone)]
pub struct ResolveNow(pub(crate) Arc<dyn Fn() + Send + Sync>);

impl ResolveNow {
    /// Asks for a resolution.
    pub fn notify(&self) {
        (self.0)()
    }
}

impl fmt::Debug for ResolveNow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveNow").finish_non_exhaustive()
    }
}

/// A list of addresses the application sets, for a registry of its own:
/// every channel using it (a clone of it) follows each
/// [`set_addresses`](ManualResolver::set_addresses).
///
/// ```no_run
/// use std::net::SocketAddr;
/// use grpc_blocking::client::ManualResolver;
/// use grpc_blocking::Channel;
///
/// let first: SocketAddr = "127.0.0.1:50051".parse()?;
/// let second: SocketAddr = "127.0.0.1:50052".parse()?;
/// let backends = ManualResolver::new([first]);
/// let channel = Channel::builder("http://orders:50051")
///     .resolver(backends.clone())
///     .round_robin()
///     .connect_lazy()?;
/// // Later, the registry says a backend joined:
/// backends.set_addresses([first, second]);
/// # drop(channel);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct ManualResolver {
    inner: Arc<Mutex<Manual>>,
}

#[derive(Default)]
struct Manual {
    addresses: Vec<Address>,
    subscribers: Vec<ResolveNow>,
}

impl fmt::Debug for ManualResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualResolver")
            .field("addresses", &self.addresses())
            .finish()
    }
}

impl ManualResolver {
    /// A resolver answering `addresses` until told otherwise.
    pub fn new<A: Into<Address>>(addresses: impl IntoIterator<Item = A>) -> Self {
        let resolver = ManualResolver::default();
        resolver.lock().addresses = addresses.into_iter().map(Into::into).collect();
        resolver
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manual> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the addresses; every channel using this resolver resolves
    /// again at once.
    pub fn set_addresses<A: Into<Address>>(&self, addresses: impl IntoIterator<Item = A>) {
        let subscribers = {
            let mut m = self.lock();
            m.addresses = addresses.into_iter().map(Into::into).collect();
            m.subscribers.clone()
        };
        for s in subscribers {
            s.notify();
        }
    }

    /// The addresses now.
    pub fn addresses(&self) -> Vec<Address> {
        self.lock().addresses.clone()
    }
}

impl Resolver for ManualResolver {
    fn resolve(&self) -> io::Result<Vec<Address>> {
        Ok(self.addresses())
    }

    fn subscribe(&self, resolve_now: ResolveNow) {
        self.lock().subscribers.push(resolve_now);
    }
}

/// DNS: every address `host:port` resolves to (A and AAAA), in the system
/// resolver's order.
#[derive(Debug, Clone)]
pub(crate) struct DnsResolver {
    pub(crate) authority: String,
}

impl Resolver for DnsResolver {
    fn resolve(&self) -> io::Result<Vec<Address>> {
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .authority
            .to_socket_addrs()?
            .filter(|a| seen.insert(*a))
            .map(Address::Tcp)
            .collect())
    }
}

/// A fixed list (`ipv4:`, `ipv6:` and Unix socket targets).
#[derive(Debug, Clone)]
pub(crate) struct StaticResolver(pub(crate) Vec<Address>);

impl Resolver for StaticResolver {
    fn resolve(&self) -> io::Result<Vec<Address>> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn addresses_print_as_targets() {
        assert_eq!(
            Address::Tcp("127.0.0.1:5".parse().unwrap()).to_string(),
            "127.0.0.1:5"
        );
        assert_eq!(
            Address::Tcp("[::1]:5".parse().unwrap()).to_string(),
            "[::1]:5"
        );
        assert_eq!(Address::Unix("/a/b".into()).to_string(), "unix:/a/b");
        assert_eq!(
            Address::UnixAbstract(b"n".to_vec()).to_string(),
            "unix-abstract:n"
        );
    }

    #[test]
    fn a_manual_resolver_tells_its_subscribers() {
        let r = ManualResolver::new(["127.0.0.1:1".parse::<SocketAddr>().unwrap()]);
        let told = Arc::new(AtomicUsize::new(0));
        let t = told.clone();
        r.clone().subscribe(ResolveNow(Arc::new(move || {
            t.fetch_add(1, Ordering::SeqCst);
        })));
        r.set_addresses(["127.0.0.1:2".parse::<SocketAddr>().unwrap()]);
        assert_eq!(told.load(Ordering::SeqCst), 1);
        assert_eq!(
            r.resolve().unwrap(),
            [Address::Tcp("127.0.0.1:2".parse().unwrap())]
        );
    }

    #[test]
    fn dns_resolves_localhost_and_ip_literals() {
        let r = DnsResolver {
            authority: "127.0.0.1:80".into(),
        };
        assert_eq!(
            r.resolve().unwrap(),
            [Address::Tcp("127.0.0.1:80".parse().unwrap())]
        );
        let r = DnsResolver {
            authority: "localhost:80".into(),
        };
        assert!(!r.resolve().unwrap().is_empty());
    }
}
