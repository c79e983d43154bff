//! `example-server --port N [--host H]` (or `--unix PATH`): serves
//! `nameko.example` until killed. TLS: `--tls_cert_file F --tls_key_file
//! F`, and `--client_ca_file F` to require client certificates.
//!
//! It also serves health checking (SERVING for `""` and `nameko.example`)
//! and server reflection, so that grpcurl, `grpc_health_probe` and
//! Kubernetes' probes work against it with no proto file at hand;
//! `--no_health` and `--no_reflection` turn them off. `--require_token T`
//! rejects every `nameko.example` call without `authorization: Bearer T`
//! (`UNAUTHENTICATED`); health and reflection stay open. `--metrics_port N`
//! serves Prometheus metrics at `http://HOST:N/metrics`. With
//! `RUST_LOG=info`, every call is logged to stderr.
//!
//! Unary handlers run as the library's default has them: adaptively on the
//! connection's thread (`ServerBuilder::unary_handlers`). The environment
//! variable `EXAMPLE_SERVER_HANDLERS` chooses another way for the benchmark
//! script: `inline` (always on the connection thread, for handlers that
//! promise never to block) or `workers` (on the handler pool).

use std::path::PathBuf;

use clap::Parser;
use grpc_blocking::server::{InterceptedService, UnaryHandlers};
use grpc_blocking::tls::{Identity, RootCertificates, ServerTlsConfig};
use grpc_blocking::Server;
use grpc_blocking_examples::auth::RequireBearerToken;
use grpc_blocking_examples::cli::StandardServices;
use grpc_blocking_examples::logging::LogCalls;
use grpc_blocking_examples::metrics::Metrics;
use grpc_blocking_examples::nameko::ExampleServer;
use grpc_blocking_examples::ExampleService;

/// Serves nameko-grpc's example service (`nameko.example`) until killed.
#[derive(Parser, Debug)]
#[command(name = "example-server")]
struct Args {
    /// The port to listen on (0: any free port, printed at start).
    #[arg(long, required_unless_present = "unix")]
    port: Option<u16>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Serve on a Unix domain socket at this path instead of TCP.
    #[arg(long, conflicts_with = "port")]
    unix: Option<PathBuf>,
    /// PEM file of the server's certificate chain: serve TLS (with --tls_key_file).
    #[arg(long = "tls_cert_file", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM file of the server's private key (with --tls_cert_file).
    #[arg(long = "tls_key_file", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// PEM file of the CAs whose client certificates are required (mutual TLS).
    #[arg(long = "client_ca_file", requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    #[command(flatten)]
    standard: StandardServices,
    /// Reject nameko.example calls without `authorization: Bearer TOKEN`.
    #[arg(long = "require_token", value_name = "TOKEN")]
    require_token: Option<String>,
    /// Serve Prometheus metrics on this port (at /metrics, on --host).
    #[arg(long = "metrics_port")]
    metrics_port: Option<u16>,
}

impl Args {
    fn tls(&self) -> Result<Option<ServerTlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) else {
            return Ok(None);
        };
        let identity = Identity::from_pem_files(cert, key).map_err(|e| e.to_string())?;
        let mut tls = ServerTlsConfig::new(identity).map_err(|e| e.to_string())?;
        if let Some(ca) = &self.client_ca_file {
            let roots = RootCertificates::from_pem_file(ca).map_err(|e| e.to_string())?;
            tls = tls.client_auth_required(roots);
        }
        Ok(Some(tls))
    }
}

fn main() {
    env_logger::init();
    let args = Args::parse();
    let handlers = match std::env::var("EXAMPLE_SERVER_HANDLERS").as_deref() {
        Ok("inline") => UnaryHandlers::Inline,
        Ok("workers") => UnaryHandlers::Workers,
        _ => UnaryHandlers::Adaptive,
    };
    let run = || -> Result<(), String> {
        let example = ExampleServer::new(ExampleService);
        let mut builder = match &args.require_token {
            Some(token) => Server::builder().add_service(
                InterceptedService::new(example).intercept(RequireBearerToken::new(token)),
            ),
            None => Server::builder().add_service(example),
        };
        builder = args.standard.apply(builder).unary_handlers(handlers);
        if log::log_enabled!(target: "grpc::server", log::Level::Warn) {
            builder = builder.intercept(LogCalls);
        }
        let metrics = args.metrics_port.map(|_| Metrics::new());
        if let Some(metrics) = &metrics {
            builder = builder.intercept(metrics.clone());
        }
        if let Some(tls) = args.tls()? {
            builder = builder.tls(tls);
        }
        let server = match (&args.unix, args.port) {
            (Some(path), _) => builder
                .bind_unix(path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?,
            (None, port) => {
                let (host, port) = (args.host.as_str(), port.unwrap_or(0));
                builder
                    .bind((host, port))
                    .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?
            }
        };
        let _endpoint = match (&metrics, args.metrics_port) {
            (Some(metrics), Some(port)) => {
                let host = args.host.as_str();
                let endpoint = metrics
                    .serve((host, port), server.stats_handle())
                    .map_err(|e| format!("cannot serve metrics on {host}:{port}: {e}"))?;
                println!(
                    "example-server metrics at http://{}/metrics",
                    endpoint.addr()
                );
                Some(endpoint)
            }
            _ => None,
        };
        println!("example-server listening on {}", server.target());
        server.serve().map_err(|e| e.to_string())
    };
    if let Err(e) = run() {
        eprintln!("example-server: {e}");
        std::process::exit(1);
    }
}
