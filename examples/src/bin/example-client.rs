//! `example-client --server_host H --server_port N`: calls all four methods
//! of `nameko.example`, prints each reply, and exits non-zero on any failure.

use grpc_blocking_examples::args::Args;
use grpc_blocking_examples::call_all_four;
use grpc_blocking_examples::nameko::ExampleClient;

fn main() {
    let args = match Args::parse(std::env::args().skip(1), &["server_host", "server_port"]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("example-client: {e}\nusage: example-client --server_host H --server_port N");
            std::process::exit(2);
        }
    };
    let run = || -> Result<(), String> {
        let host = args.get("server_host").unwrap_or("127.0.0.1");
        let port: u16 = args.required("server_port")?;
        let client =
            ExampleClient::connect(format!("http://{host}:{port}")).map_err(|e| e.to_string())?;
        call_all_four(&client).map_err(|e| format!("call failed: {e}"))
    };
    if let Err(e) = run() {
        eprintln!("example-client: {e}");
        std::process::exit(1);
    }
}
