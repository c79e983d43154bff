//! `interop-server --port N [--host H] [--use_tls=false]`: serves
//! `grpc.testing.TestService` (the gRPC interop test service) until killed.
//!
//! The host defaults to `0.0.0.0` (every interface), as the official
//! servers listen. The flags are the official interop servers'; TLS is not
//! supported yet, so `--use_tls=true` is an error.

use grpc_blocking_examples::args::Args;
use grpc_blocking_examples::interop;

const USAGE: &str = "usage: interop-server --port N [--host H] [--use_tls=false]";

fn main() {
    let args = match Args::parse(std::env::args().skip(1), &["port", "host", "use_tls"]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("interop-server: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let run = || -> Result<(), String> {
        if args.parse_or("use_tls", false)? {
            return Err("--use_tls=true: TLS is not supported yet; use --use_tls=false".into());
        }
        let port: u16 = args.required("port")?;
        let host = args.get("host").unwrap_or("0.0.0.0");
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
