//! `interop-client --server_host H --server_port N --test_case NAME`: runs
//! gRPC interop test cases against a server and prints one line per case
//! (`PASS name` or `FAIL name: why`), then `N passed, M failed`; exits
//! non-zero if any case failed.
//!
//! `NAME` is a case, a comma-separated list of cases, or `all` (the
//! default). The flags are the official interop clients'; the ones about TLS
//! and cloud credentials are accepted and ignored with a note, except
//! `--use_tls=true`, an error: TLS is not supported yet. One flag is ours:
//! `--case_timeout_secs S` (default 30), after which a hung case fails.

use std::time::Duration;

use grpc_blocking_examples::args::Args;
use grpc_blocking_examples::interop::client::{parse_cases, run_cases_with, ClientConfig};

const USAGE: &str =
    "usage: interop-client --server_host H --server_port N --test_case NAME[,NAME...]|all \
[--use_tls=false] [--case_timeout_secs S]";

const FLAGS: &[&str] = &[
    "server_host",
    "server_port",
    "test_case",
    "use_tls",
    "case_timeout_secs",
    "server_host_override",
    // Accepted and ignored (see `ignored_flags_note`).
    "use_test_ca",
    "default_service_account",
    "oauth_scope",
    "service_account_key_file",
    "service_config_json",
];

/// Notes on stderr for the flags this client accepts but does not act on.
fn ignored_flags_note(args: &Args) {
    if args.get("use_test_ca").is_some() {
        eprintln!("interop-client: note: --use_test_ca is ignored (no TLS)");
    }
    for flag in [
        "default_service_account",
        "oauth_scope",
        "service_account_key_file",
        "service_config_json",
    ] {
        if args.get(flag).is_some() {
            eprintln!(
                "interop-client: note: --{flag} is ignored (only the cases without cloud \
                 credentials are implemented)"
            );
        }
    }
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1), FLAGS) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("interop-client: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let setup = || -> Result<(ClientConfig, Vec<&'static str>), String> {
        if args.parse_or("use_tls", false)? {
            return Err("--use_tls=true: TLS is not supported yet; use --use_tls=false".into());
        }
        ignored_flags_note(&args);
        let host = args.get("server_host").unwrap_or("localhost");
        let port: u16 = args.required("server_port")?;
        let cases = parse_cases(args.get("test_case").unwrap_or("all"))?;
        let mut config = ClientConfig::new(host, port);
        config.authority = args.get("server_host_override").map(str::to_owned);
        let secs: u64 = args.parse_or("case_timeout_secs", config.case_timeout.as_secs())?;
        config.case_timeout = Duration::from_secs(secs.max(1));
        Ok((config, cases))
    };
    let (config, cases) = match setup() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("interop-client: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let report = run_cases_with(&config, &cases, |result| println!("{result}"));
    println!("{}", report.summary());
    if report.failed() > 0 {
        std::process::exit(1);
    }
}
