//! Command-line pieces the binaries share: where a client connects and with
//! which TLS settings (`example-client`, `bench`, `interop-client`), and the
//! standard services a server offers (`example-server`, `interop-server`).

use std::path::PathBuf;

use grpc_blocking::tls::{ClientTlsConfig, Identity, RootCertificates};
use grpc_blocking::{ChannelBuilder, ServerBuilder};

/// A server's standard-service flags: health checking and reflection are
/// on unless turned off.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct StandardServices {
    /// Do not serve gRPC health checking (grpc.health.v1.Health).
    #[arg(long = "no_health")]
    pub no_health: bool,
    /// Do not serve gRPC server reflection (grpc.reflection.v1 and v1alpha).
    #[arg(long = "no_reflection")]
    pub no_reflection: bool,
}

impl StandardServices {
    /// `builder` with the services the flags ask for.
    pub fn apply(self, builder: ServerBuilder) -> ServerBuilder {
        builder
            .health(!self.no_health)
            .reflection(!self.no_reflection)
    }
}

/// A client's target and TLS flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientTarget {
    /// Any target the library accepts (`http://host:port`,
    /// `https://host:port`, `dns:///host:port`, `ipv4:a:p,b:p`,
    /// `ipv6:[a]:p,...`, `unix:PATH`, `unix-abstract:NAME`); instead of
    /// --server_host and --server_port.
    #[arg(long, conflicts_with_all = ["server_host", "server_port"])]
    pub target: Option<String>,
    /// The server's host name or address.
    #[arg(long = "server_host")]
    pub server_host: Option<String>,
    /// The server's port.
    #[arg(long = "server_port")]
    pub server_port: Option<u16>,
    /// PEM file of the CA certificates to trust (TLS; default: Mozilla's roots).
    #[arg(long = "ca_file")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate chain, for mutual TLS (with --key_file).
    #[arg(long = "cert_file", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of this client's private key, for mutual TLS (with --cert_file).
    #[arg(long = "key_file", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, sent as SNI and
    /// `:authority`, when the target's host is not it.
    #[arg(long = "server_host_override")]
    pub server_host_override: Option<String>,
    /// The load-balancing policy over the target's addresses: pick_first
    /// (one connection, the default) or round_robin (one per address).
    #[arg(long, value_parser = ["pick_first", "round_robin"])]
    pub lb: Option<String>,
}

impl ClientTarget {
    /// The target: `--target`, or `http://HOST:PORT` (`https://` when a TLS
    /// flag is given) from --server_host (default 127.0.0.1) and
    /// --server_port.
    pub fn target(&self) -> Result<String, String> {
        if let Some(t) = &self.target {
            return Ok(t.clone());
        }
        let port = self
            .server_port
            .ok_or("--server_port (or --target) is required")?;
        let host = self.server_host.as_deref().unwrap_or("127.0.0.1");
        let scheme = if self.wants_tls() { "https" } else { "http" };
        Ok(format!("{scheme}://{host}:{port}"))
    }

    /// Whether a TLS flag was given.
    pub fn wants_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.server_host_override.is_some()
    }

    /// A channel builder for the target with the TLS flags applied (when the
    /// target is `https://` or a TLS flag was given).
    pub fn channel(&self) -> Result<ChannelBuilder, String> {
        let target = self.target()?;
        let mut builder = grpc_blocking::Channel::builder(target.as_str());
        match self.lb.as_deref() {
            Some("round_robin") => builder = builder.round_robin(),
            Some(_) => builder = builder.pick_first(),
            None => {}
        }
        if !self.wants_tls() {
            return Ok(builder);
        }
        Ok(builder.tls(self.tls()?))
    }

    /// The TLS settings the flags give.
    pub fn tls(&self) -> Result<ClientTlsConfig, String> {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_file {
            tls = tls.roots(RootCertificates::from_pem_file(ca).map_err(|e| e.to_string())?);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            tls = tls.identity(Identity::from_pem_files(cert, key).map_err(|e| e.to_string())?);
        }
        if let Some(name) = &self.server_host_override {
            tls = tls.server_name(name);
        }
        Ok(tls)
    }
}
