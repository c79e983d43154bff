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

use clap::Parser;
use grpc_blocking_examples::interop::client::{parse_cases, run_cases_with, ClientConfig};

/// Runs gRPC interop test cases against a server.
#[derive(Parser, Debug)]
#[command(name = "interop-client")]
struct Args {
    /// The server's host name or address.
    #[arg(long = "server_host", default_value = "localhost")]
    server_host: String,
    /// The server's port.
    #[arg(long = "server_port")]
    server_port: u16,
    /// A case, a comma-separated list of cases, or `all`.
    #[arg(long = "test_case", default_value = "all")]
    test_case: String,
    /// Use TLS (not supported yet: only `false` is accepted).
    #[arg(long = "use_tls", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false")]
    use_tls: bool,
    /// The `:authority` to send instead of `host:port`.
    #[arg(long = "server_host_override")]
    server_host_override: Option<String>,
    /// Seconds after which a hung case fails (ours, not an official flag).
    #[arg(long = "case_timeout_secs", default_value_t = 30)]
    case_timeout_secs: u64,
    /// Ignored (no TLS).
    #[arg(long = "use_test_ca", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    use_test_ca: Option<bool>,
    /// Ignored (no cloud credentials).
    #[arg(long = "default_service_account")]
    default_service_account: Option<String>,
    /// Ignored (no cloud credentials).
    #[arg(long = "oauth_scope")]
    oauth_scope: Option<String>,
    /// Ignored (no cloud credentials).
    #[arg(long = "service_account_key_file")]
    service_account_key_file: Option<String>,
    /// Ignored (no cloud credentials).
    #[arg(long = "service_config_json")]
    service_config_json: Option<String>,
}

impl Args {
    /// Notes on stderr for the flags this client accepts but does not act on.
    fn note_ignored_flags(&self) {
        if self.use_test_ca.is_some() {
            eprintln!("interop-client: note: --use_test_ca is ignored (no TLS)");
        }
        for (flag, given) in [
            ("default_service_account", &self.default_service_account),
            ("oauth_scope", &self.oauth_scope),
            ("service_account_key_file", &self.service_account_key_file),
            ("service_config_json", &self.service_config_json),
        ] {
            if given.is_some() {
                eprintln!(
                    "interop-client: note: --{flag} is ignored (only the cases without cloud \
                     credentials are implemented)"
                );
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    if args.use_tls {
        eprintln!("interop-client: --use_tls=true: TLS is not supported yet; use --use_tls=false");
        std::process::exit(2);
    }
    args.note_ignored_flags();
    let cases = match parse_cases(&args.test_case) {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("interop-client: {e}");
            std::process::exit(2);
        }
    };
    let mut config = ClientConfig::new(&args.server_host, args.server_port);
    config.authority = args.server_host_override.clone();
    config.case_timeout = Duration::from_secs(args.case_timeout_secs.max(1));
    let report = run_cases_with(&config, &cases, |result| println!("{result}"));
    println!("{}", report.summary());
    if report.failed() > 0 {
        std::process::exit(1);
    }
}
