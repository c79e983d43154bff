//! `example-server --port N [--host H]`: serves `nameko.example` until killed.
//!
//! The example's unary handler is pure computation and never blocks, so it
//! runs on the connection thread
//! (`ServerBuilder::run_unary_handlers_inline`). Set the environment variable
//! `EXAMPLE_SERVER_INLINE=0` to run it on the worker pool instead, as a
//! server with blocking handlers must (the benchmark script measures both).

use grpc_blocking::Server;
use grpc_blocking_examples::args::Args;
use grpc_blocking_examples::nameko::ExampleServer;
use grpc_blocking_examples::ExampleService;

fn main() {
    let args = match Args::parse(std::env::args().skip(1), &["port", "host"]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("example-server: {e}\nusage: example-server --port N [--host H]");
            std::process::exit(2);
        }
    };
    let run = || -> Result<(), String> {
        let port: u16 = args.required("port")?;
        let host = args.get("host").unwrap_or("127.0.0.1");
        let inline = std::env::var("EXAMPLE_SERVER_INLINE").map_or(true, |v| v != "0");
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
