//! TLS and mutual TLS with rustls (the `tls` feature).
//!
//! - A server serves TLS with a [`ServerTlsConfig`]: its certificate chain
//!   and key ([`Identity`]), which a [`CertificateReloader`] can replace
//!   while the server runs (new connections get the new certificate,
//!   established ones keep theirs), and optionally client certificates
//!   checked against [`RootCertificates`], required or optional.
//! - A client connects to `https://` targets with a [`ClientTlsConfig`]:
//!   the roots it trusts (Mozilla's, from the `webpki-roots` crate, unless
//!   given), a name to expect instead of the target's host (which is also
//!   the SNI and the `:authority`), and its own identity for mutual TLS.
//! - Both sides speak HTTP/2 only: ALPN `h2` is advertised; a server also
//!   accepts clients that send no ALPN (as gRPC's C core does), and a client
//!   requires the server to choose `h2`.
//! - A handler sees a mutual-TLS client's verified certificate in
//!   [`PeerCertificates`], with its subject alternative names.
//!
//! The cryptography is rustls's `ring` provider, which builds with a C
//! compiler alone. PEM is read by `rustls-pki-types`.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::TransportError;
use crate::transport::{Blocked, RawSocket};

/// The ALPN protocol of gRPC.
const H2: &[u8] = b"h2";

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// PEM text held no item of the kind needed.
    #[error("no {what} found in the PEM {source_name}")]
    Missing {
        /// What was looked for ("certificate", "private key").
        what: &'static str,
        /// Where ("data", or the file's name).
        source_name: String,
    },
    /// PEM text could not be parsed.
    #[error("invalid PEM {source_name}: {reason}")]
    Pem {
        /// Where ("data", or the file's name).
        source_name: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the settings (a key that does not match its
    /// certificate, an unusable root, ...).
    #[error("invalid TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

fn pem_error(source_name: &str, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        source_name: source_name.to_owned(),
        reason: e.to_string(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn certificates(pem: &[u8], source_name: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(source_name, e))?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            what: "certificate",
            source_name: source_name.to_owned(),
        });
    }
    Ok(chain)
}

fn the_crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain (leaf first) and its private key: what a server
/// presents, and what a client presents for mutual TLS.
#[derive(Clone)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// From PEM: the certificate chain (leaf first) and the private key
    /// (PKCS #8, PKCS #1 or SEC1).
    pub fn from_pem(
        cert_chain: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Result<Identity, TlsError> {
        Self::parse(cert_chain.as_ref(), "data", key.as_ref(), "data")
    }

    /// From PEM files: the certificate chain and the private key.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Identity, TlsError> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        Self::parse(
            &read_file(cert_path)?,
            &cert_path.display().to_string(),
            &read_file(key_path)?,
            &key_path.display().to_string(),
        )
    }

    fn parse(
        chain: &[u8],
        chain_name: &str,
        key: &[u8],
        key_name: &str,
    ) -> Result<Identity, TlsError> {
        let chain = certificates(chain, chain_name)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
                what: "private key",
                source_name: key_name.to_owned(),
            },
            e => pem_error(key_name, e),
        })?;
        Ok(Identity {
            chain,
            key: Arc::new(key),
        })
    }

    /// The identity as rustls signs with it; checks that the key is usable
    /// and matches the certificate.
    fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        Ok(CertifiedKey::from_der(
            self.chain.clone(),
            self.key.clone_key(),
            &the_crypto(),
        )?)
    }
}

/// Certificates trusted as roots: of the servers a client accepts, or of
/// the client certificates a server accepts.
#[derive(Clone)]
pub struct RootCertificates {
    store: Arc<RootCertStore>,
}

impl fmt::Debug for RootCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCertificates")
            .field("roots", &self.store.len())
            .finish()
    }
}

impl RootCertificates {
    /// The roots of Mozilla's CA program, compiled in (the `webpki-roots`
    /// crate): what an `https://` client trusts by default.
    pub fn webpki() -> RootCertificates {
        let mut store = RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        RootCertificates {
            store: Arc::new(store),
        }
    }

    /// Every certificate in PEM text.
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<RootCertificates, TlsError> {
        Self::parse(pem.as_ref(), "data")
    }

    /// Every certificate in a PEM file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<RootCertificates, TlsError> {
        let path = path.as_ref();
        Self::parse(&read_file(path)?, &path.display().to_string())
    }

    fn parse(pem: &[u8], source_name: &str) -> Result<RootCertificates, TlsError> {
        let mut store = RootCertStore::empty();
        for cert in certificates(pem, source_name)? {
            store.add(cert)?;
        }
        Ok(RootCertificates {
            store: Arc::new(store),
        })
    }
}

/// Whether a server asks clients for certificates.
#[derive(Clone, Debug)]
enum ClientAuth {
    None,
    Optional(RootCertificates),
    Required(RootCertificates),
}

/// The server's certificate, replaceable while the server runs.
#[derive(Debug)]
struct Reloadable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

/// Replaces a TLS server's certificate and key while it runs: connections
/// made afterwards get the new ones; established connections are left as
/// they are. Cheap to clone.
#[derive(Clone)]
pub struct CertificateReloader {
    target: Arc<Reloadable>,
}

impl fmt::Debug for CertificateReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateReloader")
            .finish_non_exhaustive()
    }
}

impl CertificateReloader {
    /// Serves `identity` from now on; fails (and changes nothing) if its key
    /// is unusable or does not match its certificate.
    pub fn reload(&self, identity: &Identity) -> Result<(), TlsError> {
        let key = Arc::new(identity.certified_key()?);
        if let Ok(mut current) = self.target.current.write() {
            *current = key;
        }
        Ok(())
    }
}

/// A server's TLS settings: its identity, and whether it asks clients for
/// certificates.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use grpc_blocking::tls::{Identity, RootCertificates, ServerTlsConfig};
/// let tls = ServerTlsConfig::new(Identity::from_pem_files("server.pem", "server.key")?)?
///     .client_auth_required(RootCertificates::from_pem_file("clients-ca.pem")?);
/// let reloader = tls.certificate_reloader();
/// let server = grpc_blocking::Server::builder().tls(tls).bind("0.0.0.0:50051")?;
/// // Later, when the certificate is renewed:
/// reloader.reload(&Identity::from_pem_files("server.pem", "server.key")?)?;
/// # drop(server);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ServerTlsConfig {
    certificate: Arc<Reloadable>,
    client_auth: ClientAuth,
}

impl ServerTlsConfig {
    /// TLS with `identity`, no client certificates asked for.
    pub fn new(identity: Identity) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig {
            certificate: Arc::new(Reloadable {
                current: RwLock::new(Arc::new(identity.certified_key()?)),
            }),
            client_auth: ClientAuth::None,
        })
    }

    /// Requires a client certificate issued under `roots` (mutual TLS): a
    /// client without one fails its handshake.
    pub fn client_auth_required(mut self, roots: RootCertificates) -> Self {
        self.client_auth = ClientAuth::Required(roots);
        self
    }

    /// Asks for a client certificate issued under `roots`, but also serves
    /// clients that send none; a handler tells them apart by
    /// [`ServerContext::peer_certificates`](crate::server::ServerContext::peer_certificates).
    pub fn client_auth_optional(mut self, roots: RootCertificates) -> Self {
        self.client_auth = ClientAuth::Optional(roots);
        self
    }

    /// A handle that replaces the certificate while the server runs.
    pub fn certificate_reloader(&self) -> CertificateReloader {
        CertificateReloader {
            target: self.certificate.clone(),
        }
    }

    /// The rustls configuration.
    pub(crate) fn build(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(the_crypto())
            .with_safe_default_protocol_versions()?;
        let verifier = match &self.client_auth {
            ClientAuth::None => None,
            ClientAuth::Optional(roots) => Some(
                WebPkiClientVerifier::builder_with_provider(roots.store.clone(), the_crypto())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?,
            ),
            ClientAuth::Required(roots) => Some(
                WebPkiClientVerifier::builder_with_provider(roots.store.clone(), the_crypto())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?,
            ),
        };
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.certificate.clone());
        config.alpn_protocols = vec![H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// A client's TLS settings: the roots it trusts, the name it expects, and
/// its identity for mutual TLS.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use grpc_blocking::tls::{ClientTlsConfig, Identity, RootCertificates};
/// use grpc_blocking::Channel;
/// let tls = ClientTlsConfig::new()
///     .roots(RootCertificates::from_pem_file("ca.pem")?)
///     .identity(Identity::from_pem_files("client.pem", "client.key")?);
/// let channel = Channel::builder("https://localhost:50051").tls(tls).connect()?;
/// # drop(channel);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientTlsConfig {
    roots: RootCertificates,
    identity: Option<Identity>,
    server_name: Option<String>,
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        ClientTlsConfig::new()
    }
}

impl ClientTlsConfig {
    /// Trusts Mozilla's roots ([`RootCertificates::webpki`]), presents no
    /// client certificate, and expects the target's host name.
    pub fn new() -> ClientTlsConfig {
        ClientTlsConfig {
            roots: RootCertificates::webpki(),
            identity: None,
            server_name: None,
        }
    }

    /// Trusts `roots` instead of Mozilla's.
    pub fn roots(mut self, roots: RootCertificates) -> Self {
        self.roots = roots;
        self
    }

    /// Presents `identity` when the server asks for a certificate (mutual
    /// TLS).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Expects the server's certificate to be valid for `name` instead of
    /// the target's host, and sends `name` as SNI and as `:authority`
    /// (interop's `--server_host_override`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The name to expect, if overridden.
    pub(crate) fn server_name_override(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The rustls configuration.
    pub(crate) fn build(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(the_crypto())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots.store.clone());
        let mut config = match &self.identity {
            Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// A TLS peer's verified certificate chain (leaf first, DER) and the subject
/// alternative names of its leaf, for a handler to authorize by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificates {
    chain: Vec<Vec<u8>>,
    dns_names: Vec<String>,
    uris: Vec<String>,
}

impl PeerCertificates {
    /// From what rustls verified; `None` when the peer sent no certificate.
    pub(crate) fn of(conn: &rustls::Connection) -> Option<PeerCertificates> {
        let chain = conn.peer_certificates()?;
        let leaf = webpki::EndEntityCert::try_from(chain.first()?).ok()?;
        Some(PeerCertificates {
            dns_names: leaf.valid_dns_names().map(str::to_owned).collect(),
            uris: leaf.valid_uri_names().map(str::to_owned).collect(),
            chain: chain.iter().map(|c| c.to_vec()).collect(),
        })
    }

    /// The certificates, leaf first, each DER-encoded.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The DNS names among the leaf's subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The URIs among the leaf's subject alternative names (SPIFFE IDs, for
    /// one).
    pub fn uris(&self) -> &[String] {
        &self.uris
    }
}

/// A server's TLS session for a new connection.
pub(crate) fn server_session(config: &Arc<ServerConfig>) -> io::Result<rustls::Connection> {
    rustls::ServerConnection::new(config.clone())
        .map(rustls::Connection::Server)
        .map_err(io::Error::other)
}

/// A client's TLS session, its handshake done.
pub(crate) struct ClientSession {
    /// The session.
    pub(crate) conn: rustls::Connection,
    /// The server asked for a client certificate and this client had none.
    /// In TLS 1.3 the client's handshake ends before the server checks
    /// its certificate, and a server that requires one may then close the
    /// connection without a word (gRPC's C core does), so a connection
    /// lost before the server said anything is explained with this.
    pub(crate) sent_no_certificate: bool,
}

/// What a client says when the server closes the connection right after a
/// handshake in which it asked for a certificate this client did not have.
pub(crate) const NO_CERTIFICATE_SENT: &str =
    "the server closed the connection right after the TLS handshake, before any HTTP/2: it \
     asked for a client certificate and this channel has none (ClientTlsConfig::identity), \
     so it probably requires one";

/// Asks the configured resolver for the client's certificate, and notes
/// when the server asked and there was none.
#[derive(Debug)]
struct NoteDeclined {
    inner: Arc<dyn ResolvesClientCert>,
    declined: AtomicBool,
}

impl ResolvesClientCert for NoteDeclined {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let key = self.inner.resolve(root_hint_subjects, sigschemes);
        if key.is_none() {
            self.declined.store(true, Ordering::Relaxed);
        }
        key
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// The TLS handshake of a client, on the calling thread, over a connected
/// blocking socket, done by `deadline`. ALPN must come back `h2`.
pub(crate) fn client_handshake(
    raw: &RawSocket,
    config: &Arc<ClientConfig>,
    server_name: &str,
    target: &str,
    deadline: Instant,
) -> Result<ClientSession, TransportError> {
    let tls_error = |reason: String| TransportError::Tls {
        target: target.to_owned(),
        reason,
    };
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
        tls_error(format!(
            "{server_name:?} is not a valid TLS server name: {e}"
        ))
    })?;
    // This connection's own copy of the settings (Arcs, mostly), to learn
    // whether the server asked for a certificate that is not there.
    let declined = Arc::new(NoteDeclined {
        inner: config.client_auth_cert_resolver.clone(),
        declined: AtomicBool::new(false),
    });
    let mut noting = ClientConfig::clone(config);
    noting.client_auth_cert_resolver = declined.clone();
    let mut conn = rustls::ClientConnection::new(Arc::new(noting), name)
        .map_err(|e| tls_error(e.to_string()))?;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(tls_error(
                "the TLS handshake did not finish within the connect timeout".into(),
            ));
        }
        raw.set_timeouts(Some(left))
            .map_err(TransportError::Resource)?;
        if let Err(e) = conn.complete_io(&mut &*raw) {
            return Err(tls_error(handshake_failure(e)));
        }
    }
    raw.set_timeouts(None).map_err(TransportError::Resource)?;
    if conn.alpn_protocol() != Some(H2) {
        return Err(tls_error(
            "the server did not agree to HTTP/2 (no ALPN \"h2\"): it is not a gRPC server".into(),
        ));
    }
    Ok(ClientSession {
        conn: rustls::Connection::Client(conn),
        sent_no_certificate: declined.declined.load(Ordering::Relaxed),
    })
}

/// What a failed client handshake means, in words.
fn handshake_failure(e: io::Error) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match (e.kind(), tls) {
        (_, Some(rustls::Error::InvalidMessage(_))) => format!(
            "the server does not speak TLS (it answered the TLS ClientHello with bytes that are \
             not TLS: a plaintext server? use http://): {e}"
        ),
        (_, Some(err)) => err.to_string(),
        (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, None) => {
            "the TLS handshake did not finish within the connect timeout".into()
        }
        (io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset, None) => format!(
            "the server closed the connection during the TLS handshake (a plaintext server? use \
             http://): {e}"
        ),
        _ => e.to_string(),
    }
}

/// Sends the TLS records waiting to go out; `WouldBlock` while the socket
/// does not take them all.
pub(crate) fn flush(
    conn: &mut rustls::Connection,
    raw: &RawSocket,
    blocked: &Blocked,
) -> io::Result<()> {
    while conn.wants_write() {
        super::retry(&blocked.write, || conn.write_tls(&mut &*raw))?;
    }
    Ok(())
}

/// Reads decrypted bytes: what TLS holds, else more records from the
/// socket (`WouldBlock` when none are there). `Ok(0)` is the peer's
/// close_notify; an EOF without it is `UnexpectedEof`.
pub(crate) fn read(
    conn: &mut rustls::Connection,
    raw: &RawSocket,
    blocked: &Blocked,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        // Handshake messages, alerts and key updates go out first.
        match flush(conn, raw, blocked) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        match conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
        conn.read_tls(&mut super::RawReader { raw, blocked })?;
        if let Err(e) = conn.process_new_packets() {
            // Send the alert that says why, if the socket takes it.
            let _ = flush(conn, raw, blocked);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
}

/// Encrypts what TLS's buffer takes of `bufs` and sends what the socket
/// takes; `WouldBlock` when TLS's buffer is full and the socket takes
/// nothing.
pub(crate) fn write(
    conn: &mut rustls::Connection,
    raw: &RawSocket,
    blocked: &Blocked,
    bufs: &[IoSlice<'_>],
) -> io::Result<usize> {
    let wanted: usize = bufs.iter().map(|b| b.len()).sum();
    let n = conn.writer().write_vectored(bufs)?;
    match flush(conn, raw, blocked) {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
        _ => {}
    }
    if n == 0 && wanted > 0 {
        // TLS's buffer is full: take more once the socket took some.
        let n = conn.writer().write_vectored(bufs)?;
        if n == 0 {
            blocked
                .write
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        return Ok(n);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_say_what_is_missing() {
        let err = Identity::from_pem("", "").unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Missing {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        let err = RootCertificates::from_pem("not pem at all").unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        let err =
            Identity::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(matches!(err, TlsError::Io { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn the_webpki_roots_are_there() {
        assert!(RootCertificates::webpki().store.len() > 100);
    }
}
