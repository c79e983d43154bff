//! `example-server --port N [--host H]`: serves `nameko.example` until killed.
//!
//! The example's unary handler is pure computation and never blocks, so it
//! runs on the connection thread
//! (`ServerBuilder::run_unary_handlers_inline`). Set the environment variable
//! `EXAMPLE_SERVER_INLINE=0` to run it on the worker pool instead, as a
//! server with blocking handlers must (the benchmark script measures both).

use clap::Parser;
use grpc_blocking::Server;
use grpc_blocking_examples::nameko::ExampleServer;
use grpc_blocking_examples::ExampleService;

/// Serves nameko-grpc's example service (`nameko.example`) until killed.
#[derive(Parser, Debug)]
#[command(name = "example-server")]
struct Args {
    /// The port to listen on (0: any free port, printed at start).
    #[arg(long)]
    port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

fn main() {
    let args = Args::parse();
    let inline = std::env::var("EXAMPLE_SERVER_INLINE").map_or(true, |v| v != "0");
    let (host, port) = (args.host.as_str(), args.port);
    let run = || -> Result<(), String> {
        let server = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .run_unary_handlers_inline(inline)
            .bind((host, port))
            .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        println!("example-server listening on {addr}");
        server.serve().map_err(|e| e.to_string())
    };
    if let Err(e) = run() {
        eprintln!("example-server: {e}");
        std::process::exit(1);
    }
}
