//! Test certificates, made at test time (no private key is committed): a
//! CA, a server certificate for `localhost`, `127.0.0.1` and
//! `foo.test.example`, a client certificate (DNS `client.test.example`, URI
//! `spiffe://test.example/client`), a second CA nobody trusts with a
//! server certificate under it, an expired server certificate, and one for
//! the wrong name. [`Certs::get`] makes them once per test process and
//! writes every PEM into a temporary folder, for peers in other languages.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use grpc_blocking::tls::{ClientTlsConfig, Identity, RootCertificates, ServerTlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The name the server certificate carries beside `localhost`, as the
/// interop tests' `foo.test.google.fr`: clients that dial `127.0.0.1`
/// expect it with a server-name override.
pub const SERVER_NAME: &str = "foo.test.example";
/// The client certificate's DNS name.
pub const CLIENT_DNS: &str = "client.test.example";
/// The client certificate's URI name.
pub const CLIENT_URI: &str = "spiffe://test.example/client";

/// One certificate (chain) and its key, as PEM, and where they were written.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pem {
    /// As an identity for this library.
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key).expect("a valid test identity")
    }
}

/// Every test certificate.
#[derive(Debug)]
pub struct Certs {
    /// The folder the PEM files are in.
    pub dir: PathBuf,
    /// The CA that issued `server`, `client`, `expired` and `wrong_name`.
    pub ca: Pem,
    pub server: Pem,
    pub client: Pem,
    /// A server certificate whose validity ended in 2020.
    pub expired: Pem,
    /// A server certificate for `other.test.example` only.
    pub wrong_name: Pem,
    /// A server certificate from a CA nobody trusts.
    pub untrusted: Pem,
}

struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn authority(name: &str) -> Authority {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("a CA key");
    let cert = params.self_signed(&key).expect("a CA certificate");
    Authority {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate under `ca` with these names.
fn leaf(ca: &Authority, sans: &[SanType], client: bool, expired: bool) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    params.subject_alt_names = sans.to_vec();
    params
        .distinguished_name
        .push(DnType::CommonName, "grpc-blocking test");
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if expired {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let key = KeyPair::generate().expect("a leaf key");
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("a leaf certificate");
    (cert.pem(), key.serialize_pem())
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("a DNS name"))
}

fn write(dir: &Path, name: &str, cert: String, key: String) -> Pem {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, &cert).expect("write a test certificate");
    std::fs::write(&key_path, &key).expect("write a test key");
    Pem {
        cert,
        key,
        cert_path,
        key_path,
    }
}

impl Certs {
    /// The certificates of this test process.
    pub fn get() -> &'static Certs {
        static CERTS: OnceLock<Certs> = OnceLock::new();
        CERTS.get_or_init(Certs::make)
    }

    fn make() -> Certs {
        // Kept for the life of the process (peers in other languages read
        // the files); the folder lives under the system's temp dir.
        let dir = tempfile::Builder::new()
            .prefix("grpc-blocking-certs-")
            .tempdir()
            .expect("a temporary folder")
            .keep();
        let ca = authority("grpc-blocking test CA");
        let other = authority("untrusted test CA");
        let server_sans = [
            dns("localhost"),
            dns(SERVER_NAME),
            SanType::IpAddress("127.0.0.1".parse().expect("an IP")),
        ];
        let (cert, key) = leaf(&ca, &server_sans, false, false);
        let server = write(&dir, "server", cert, key);
        let client_sans = [
            dns(CLIENT_DNS),
            SanType::URI(CLIENT_URI.try_into().expect("a URI")),
        ];
        let (cert, key) = leaf(&ca, &client_sans, true, false);
        let client = write(&dir, "client", cert, key);
        let (cert, key) = leaf(&ca, &server_sans, false, true);
        let expired = write(&dir, "expired", cert, key);
        let (cert, key) = leaf(&ca, &[dns("other.test.example")], false, false);
        let wrong_name = write(&dir, "wrong-name", cert, key);
        let (cert, key) = leaf(&other, &server_sans, false, false);
        let untrusted = write(&dir, "untrusted", cert, key);
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &ca.pem).expect("write the CA");
        let ca = Pem {
            cert: ca.pem,
            key: String::new(),
            cert_path: ca_path.clone(),
            key_path: ca_path,
        };
        Certs {
            dir,
            ca,
            server,
            client,
            expired,
            wrong_name,
            untrusted,
        }
    }

    /// The test CA as roots.
    pub fn roots(&self) -> RootCertificates {
        RootCertificates::from_pem(&self.ca.cert).expect("the test CA")
    }

    /// A server's TLS settings with the server certificate.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new(self.server.identity()).expect("server TLS settings")
    }

    /// A client's TLS settings trusting the test CA.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().roots(self.roots())
    }
}
