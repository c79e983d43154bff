//! `example-client --server_host H --server_port N`: calls all four methods
//! of `nameko.example`, prints each reply, and exits non-zero on any failure.

use clap::Parser;
use grpc_blocking_examples::call_all_four;
use grpc_blocking_examples::nameko::ExampleClient;

/// Calls the four methods of nameko-grpc's example service and prints the
/// replies.
#[derive(Parser, Debug)]
#[command(name = "example-client")]
struct Args {
    /// The server's host name or address.
    #[arg(long = "server_host", default_value = "127.0.0.1")]
    server_host: String,
    /// The server's port.
    #[arg(long = "server_port")]
    server_port: u16,
}

fn main() {
    let args = Args::parse();
    let run = || -> Result<(), String> {
        let target = format!("http://{}:{}", args.server_host, args.server_port);
        let client = ExampleClient::connect(target).map_err(|e| e.to_string())?;
        call_all_four(&client).map_err(|e| format!("call failed: {e}"))
    };
    if let Err(e) = run() {
        eprintln!("example-client: {e}");
        std::process::exit(1);
    }
}
