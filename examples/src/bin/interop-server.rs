//! `interop-server --port N [--host H] [--use_tls --tls_cert_file F
//! --tls_key_file F]`: serves `grpc.testing.TestService` (the gRPC interop
//! test service) until killed.
//!
//! The host defaults to `0.0.0.0` (every interface), as the official
//! servers listen. Health checking (SERVING for `""` and the test service)
//! and server reflection are served unless `--no_health` or
//! `--no_reflection` is given. The flags are the official interop servers'; with
//! `--use_tls`, the certificate and key files must be given (no test
//! certificate is built in).

use std::path::PathBuf;

use clap::Parser;
use grpc_blocking::tls::{Identity, ServerTlsConfig};
use grpc_blocking_examples::cli::StandardServices;
use grpc_blocking_examples::interop;

/// Serves the gRPC interop test service (`grpc.testing.TestService`).
#[derive(Parser, Debug)]
#[command(name = "interop-server")]
struct Args {
    /// The port to listen on.
    #[arg(long)]
    port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Serve TLS, with --tls_cert_file and --tls_key_file.
    #[arg(long = "use_tls", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false")]
    use_tls: bool,
    /// PEM file of the server's certificate chain (with --use_tls).
    #[arg(long = "tls_cert_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM file of the server's private key (with --use_tls).
    #[arg(long = "tls_key_file")]
    tls_key_file: Option<PathBuf>,
    #[command(flatten)]
    standard: StandardServices,
}

fn main() {
    let args = Args::parse();
    let run = || -> Result<(), String> {
        let mut builder = args.standard.apply(interop::server_builder());
        if args.use_tls {
            let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
                return Err(
                    "--use_tls needs --tls_cert_file and --tls_key_file (no test certificate \
                     is built in)"
                        .into(),
                );
            };
            let identity = Identity::from_pem_files(cert, key).map_err(|e| e.to_string())?;
            builder = builder.tls(ServerTlsConfig::new(identity).map_err(|e| e.to_string())?);
        }
        let (host, port) = (args.host.as_str(), args.port);
        let server = builder
            .bind((host, port))
            .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        println!("interop-server listening on {addr}");
        server.serve().map_err(|e| e.to_string())
    };
    if let Err(e) = run() {
        eprintln!("interop-server: {e}");
        std::process::exit(1);
    }
}
