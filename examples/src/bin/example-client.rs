//! `example-client --server_host H --server_port N` (or `--target T`): calls
//! all four methods of `nameko.example`, prints each reply, and exits
//! non-zero on any failure. TLS: `--ca_file F`, mutual TLS: `--cert_file F
//! --key_file F`, and `--server_host_override H`. `--token T` sends
//! `authorization: Bearer T` with every call. With `RUST_LOG=info`, every
//! call is logged to stderr.

use clap::Parser;
use grpc_blocking_examples::auth::BearerToken;
use grpc_blocking_examples::call_all_four;
use grpc_blocking_examples::cli::ClientTarget;
use grpc_blocking_examples::logging::LogClientCalls;
use grpc_blocking_examples::nameko::ExampleClient;

/// Calls the four methods of nameko-grpc's example service and prints the
/// replies.
#[derive(Parser, Debug)]
#[command(name = "example-client")]
struct Args {
    #[command(flatten)]
    server: ClientTarget,
    /// Send `authorization: Bearer TOKEN` with every call.
    #[arg(long)]
    token: Option<String>,
}

fn main() {
    env_logger::init();
    let args = Args::parse();
    let run = || -> Result<(), String> {
        let mut builder = args.server.channel()?;
        if let Some(token) = &args.token {
            builder = builder.intercept(BearerToken::new(token));
        }
        if log::log_enabled!(target: "grpc::client", log::Level::Warn) {
            builder = builder.intercept(LogClientCalls);
        }
        let channel = builder.connect().map_err(|e| e.to_string())?;
        call_all_four(&ExampleClient::new(channel)).map_err(|e| format!("call failed: {e}"))
    };
    if let Err(e) = run() {
        eprintln!("example-client: {e}");
        std::process::exit(1);
    }
}
