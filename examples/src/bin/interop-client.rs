//! `interop-client --server_host H --server_port N --test_case NAME`: runs
//! gRPC interop test cases against a server and prints one line per case
//! (`PASS name` or `FAIL name: why`), then `N passed, M failed`; exits
//! non-zero if any case failed.
//!
//! `NAME` is a case, a comma-separated list of cases, or `all` (the
//! default). The flags are the official interop clients': TLS with
//! `--use_tls`, the roots from `--ca_file F` (`--use_test_ca` says to use
//! the test CA, which must then be given with `--ca_file`: none is built
//! in), the expected server name with `--server_host_override H`; the cloud
//! credential flags are accepted and ignored with a note. One flag is ours:
//! `--case_timeout_secs S` (default 30), after which a hung case fails.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use grpc_blocking::tls::{ClientTlsConfig, RootCertificates};
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
    /// Use TLS.
    #[arg(long = "use_tls", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false")]
    use_tls: bool,
    /// With --use_tls: trust the test CA (give it with --ca_file).
    #[arg(long = "use_test_ca", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false")]
    use_test_ca: bool,
    /// With --use_tls: PEM file of the CA certificates to trust (default:
    /// Mozilla's roots).
    #[arg(long = "ca_file")]
    ca_file: Option<PathBuf>,
    /// The server name to expect: the TLS server name (SNI) and the
    /// `:authority`.
    #[arg(long = "server_host_override")]
    server_host_override: Option<String>,
    /// Seconds after which a hung case fails (ours, not an official flag).
    #[arg(long = "case_timeout_secs", default_value_t = 30)]
    case_timeout_secs: u64,
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
    /// The TLS settings the flags give (`None` without --use_tls).
    fn tls(&self) -> Result<Option<ClientTlsConfig>, String> {
        if !self.use_tls {
            return Ok(None);
        }
        let mut tls = ClientTlsConfig::new();
        match (&self.ca_file, self.use_test_ca) {
            (Some(ca), _) => {
                tls = tls.roots(RootCertificates::from_pem_file(ca).map_err(|e| e.to_string())?)
            }
            (None, true) => {
                return Err("--use_test_ca needs --ca_file: no test CA is built in".into())
            }
            (None, false) => {}
        }
        if let Some(name) = &self.server_host_override {
            tls = tls.server_name(name);
        }
        Ok(Some(tls))
    }

    /// Notes on stderr for the flags this client accepts but does not act on.
    fn note_ignored_flags(&self) {
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
    args.note_ignored_flags();
    let tls = match args.tls() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("interop-client: {e}");
            std::process::exit(2);
        }
    };
    let cases = match parse_cases(&args.test_case) {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("interop-client: {e}");
            std::process::exit(2);
        }
    };
    let mut config = ClientConfig::new(&args.server_host, args.server_port);
    if tls.is_none() {
        config.authority = args.server_host_override.clone();
    }
    config.tls = tls;
    config.case_timeout = Duration::from_secs(args.case_timeout_secs.max(1));
    let report = run_cases_with(&config, &cases, |result| println!("{result}"));
    println!("{}", report.summary());
    if report.failed() > 0 {
        std::process::exit(1);
    }
}
