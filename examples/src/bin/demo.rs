//! `demo`: starts the example server on a free port and runs the example
//! client's calls against it, in one process.

use grpc_blocking::Server;
use grpc_blocking_examples::call_all_four;
use grpc_blocking_examples::nameko::{ExampleClient, ExampleServer};
use grpc_blocking_examples::ExampleService;

fn main() {
    let run = || -> Result<(), String> {
        let server = Server::builder()
            .add_service(ExampleServer::new(ExampleService))
            .bind("127.0.0.1:0")
            .map_err(|e| format!("cannot bind: {e}"))?
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let addr = server.local_addr();
        println!("server listening on {addr}");
        let client = ExampleClient::connect(format!("http://{addr}")).map_err(|e| e.to_string())?;
        call_all_four(&client).map_err(|e| format!("call failed: {e}"))?;
        drop(client);
        server.shutdown().map_err(|e| e.to_string())?;
        println!("server stopped; all four patterns worked");
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}
