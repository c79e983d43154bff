//! `example-server --port N [--host H]` (or `--unix PATH`): serves
//! `nameko.example` until killed. TLS: `--tls_cert_file F --tls_key_file
//! F`, and `--client_ca_file F` to require client certificates.
//!
//! The example's unary handler is pure computation and never blocks, so it
//! runs on the connection thread
//! (`ServerBuilder::run_unary_handlers_inline`). Set the environment variable
//! `EXAMPLE_SERVER_INLINE=0` to run it on the worker pool instead, as a
//! server with blocking handlers must (the benchmark script measures both).

use std::path::PathBuf;

use clap::Parser;
use grpc_blocking::tls::{Identity, RootCertificates, ServerTlsConfig};
use grpc_blocking::Server;
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
    let args = Args::parse();
    let inline = std::env::var("EXAMPLE_SERVER_INLINE").map_or(true, |v| v != "0");
    let run = || -> Result<(), String> {
        let mut builder = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .run_unary_handlers_inline(inline);
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
        println!("example-server listening on {}", server.target());
        server.serve().map_err(|e| e.to_string())
    };
    if let Err(e) = run() {
        eprintln!("example-server: {e}");
        std::process::exit(1);
    }
}
