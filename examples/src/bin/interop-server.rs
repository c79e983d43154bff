//! `interop-server --port N [--host H] [--use_tls=false]`: serves
//! `grpc.testing.TestService` (the gRPC interop test service) until killed.
//!
//! The host defaults to `0.0.0.0` (every interface), as the official
//! servers listen. The flags are the official interop servers'; TLS is not
//! supported yet, so `--use_tls=true` is an error.

use clap::Parser;
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
    /// Serve TLS (not supported yet: only `false` is accepted).
    #[arg(long = "use_tls", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false")]
    use_tls: bool,
}

fn main() {
    let args = Args::parse();
    let run = || -> Result<(), String> {
        if args.use_tls {
            return Err("--use_tls=true: TLS is not supported yet; use --use_tls=false".into());
        }
        let (host, port) = (args.host.as_str(), args.port);
        let server = interop::server((host, port))
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
