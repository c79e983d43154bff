//! `example-client --server_host H --server_port N` (or `--target T`): calls
//! all four methods of `nameko.example`, prints each reply, and exits
//! non-zero on any failure. TLS: `--ca_file F`, mutual TLS: `--cert_file F
//! --key_file F`, and `--server_host_override H`.

use clap::Parser;
use grpc_blocking_examples::call_all_four;
use grpc_blocking_examples::cli::ClientTarget;
use grpc_blocking_examples::nameko::ExampleClient;

/// Calls the four methods of nameko-grpc's example service and prints the
/// replies.
#[derive(Parser, Debug)]
#[command(name = "example-client")]
struct Args {
    #[command(flatten)]
    server: ClientTarget,
}

fn main() {
    let args = Args::parse();
    let run = || -> Result<(), String> {
        let channel = args
            .server
            .channel()?
            .connect()
            .map_err(|e| e.to_string())?;
        call_all_four(&ExampleClient::new(channel)).map_err(|e| format!("call failed: {e}"))
    };
    if let Err(e) = run() {
        eprintln!("example-client: {e}");
        std::process::exit(1);
    }
}
