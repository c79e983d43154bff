//! `example-server --port N [--host H]`: serves `nameko.example` until killed.

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
        let server = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
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
