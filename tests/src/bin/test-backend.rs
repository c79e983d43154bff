//! `test-backend HOST PORT NAME`: serves the example service answering with
//! NAME (`grpc_blocking_tests::fleet::NamedBackend`) on HOST:PORT until
//! killed, after printing `listening on ADDR`. The many-servers tests run it
//! as a child process, to kill it outright or to run it in a network
//! namespace.

use std::io::Write;

use grpc_blocking_tests::fleet::serve_named;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, name] = args.as_slice() else {
        eprintln!("usage: test-backend HOST PORT NAME");
        std::process::exit(2);
    };
    let port: u16 = port.parse().unwrap_or_else(|_| {
        eprintln!("test-backend: {port:?} is not a port");
        std::process::exit(2);
    });
    let server = serve_named(name, (host.as_str(), port));
    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
