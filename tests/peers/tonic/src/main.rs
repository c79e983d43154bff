//! `tonic-example-server`: nameko-grpc's example service, `nameko.example`,
//! on tonic.
//!
//! The baseline grpc-blocking's example server is measured against (see
//! `../bench-vs-tonic.sh`). Default tonic settings, tokio's multi-thread
//! runtime, and `Server::serve`, which binds the socket itself and so applies
//! tonic's default `TCP_NODELAY` (on).
//!
//! Usage: `tonic-example-server --port N [--host H] [--tls_cert_file F
//! --tls_key_file F]` (host defaults to 127.0.0.1). With the two PEM files
//! it serves TLS through tonic's rustls support (the `tls-ring` feature:
//! rustls with the `ring` provider, as grpc-blocking uses), with tonic's
//! default `ServerTlsConfig` otherwise. Prints nothing but errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// Messages and server stubs generated from `examples/proto/example.proto`.
/// tonic names the stream types after the proto's snake_case methods
/// (`unary_streamStream`), hence the `allow`.
#[allow(non_camel_case_types)]
pub mod nameko {
    tonic::include_proto!("nameko");
}

use nameko::example_server::{Example, ExampleServer};
use nameko::{ExampleReply, ExampleRequest};

/// The boxed stream both streaming methods answer with.
type ReplyStream = Pin<Box<dyn Stream<Item = Result<ExampleReply, Status>> + Send>>;

/// `value` repeated `multiplier` times, where 0 counts as 1 and a negative
/// multiplier gives the empty string (Python's `value * (multiplier or 1)`).
fn repeat(request: &ExampleRequest) -> String {
    let times = if request.multiplier == 0 {
        1
    } else {
        usize::try_from(request.multiplier).unwrap_or(0)
    };
    request.value.repeat(times)
}

/// The example service, behaving as nameko-grpc's documentation says.
#[derive(Debug, Default)]
struct ExampleService;

#[tonic::async_trait]
impl Example for ExampleService {
    async fn unary_unary(
        &self,
        request: Request<ExampleRequest>,
    ) -> Result<Response<ExampleReply>, Status> {
        let message = repeat(request.get_ref());
        Ok(Response::new(ExampleReply { message, seqno: 0 }))
    }

    type unary_streamStream = ReplyStream;

    async fn unary_stream(
        &self,
        request: Request<ExampleRequest>,
    ) -> Result<Response<Self::unary_streamStream>, Status> {
        let message = repeat(request.get_ref());
        let replies = [1, 2].map(|seqno| {
            Ok(ExampleReply {
                message: message.clone(),
                seqno,
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }

    async fn stream_unary(
        &self,
        request: Request<Streaming<ExampleRequest>>,
    ) -> Result<Response<ExampleReply>, Status> {
        let mut requests = request.into_inner();
        let mut messages = Vec::new();
        while let Some(request) = requests.next().await {
            messages.push(repeat(&request?));
        }
        Ok(Response::new(ExampleReply {
            message: messages.join(","),
            seqno: 0,
        }))
    }

    type stream_streamStream = ReplyStream;

    async fn stream_stream(
        &self,
        request: Request<Streaming<ExampleRequest>>,
    ) -> Result<Response<Self::stream_streamStream>, Status> {
        let mut seqno = 0;
        let replies = request.into_inner().map(move |request| {
            seqno += 1;
            request.map(|request| ExampleReply {
                message: repeat(&request),
                seqno,
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// The usage line printed for `--help` and after a bad argument.
const USAGE: &str =
    "usage: tonic-example-server --port N [--host H] [--tls_cert_file F --tls_key_file F]";

/// What the command line asks for.
struct Args {
    addr: SocketAddr,
    /// The certificate chain and key PEM files: serve TLS.
    tls: Option<(PathBuf, PathBuf)>,
}

/// Parses the flags; `None` means `--help` was asked for.
fn parse_args() -> Result<Option<Args>, String> {
    let mut host = String::from("127.0.0.1");
    let mut port = None;
    let mut cert = None;
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = |args: &mut dyn Iterator<Item = String>| {
            args.next().ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--host" => host = value(&mut args)?,
            "--port" => {
                let text = value(&mut args)?;
                port = Some(
                    text.parse::<u16>()
                        .map_err(|e| format!("bad --port {text:?}: {e}"))?,
                );
            }
            "--tls_cert_file" => cert = Some(PathBuf::from(value(&mut args)?)),
            "--tls_key_file" => key = Some(PathBuf::from(value(&mut args)?)),
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let port = port.ok_or("--port is required")?;
    let ip = host
        .parse()
        .map_err(|e| format!("bad --host {host:?} (an IP address): {e}"))?;
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--tls_cert_file and --tls_key_file go together".into()),
    };
    Ok(Some(Args {
        addr: SocketAddr::new(ip, port),
        tls,
    }))
}

/// tonic's TLS settings for the certificate chain and key in these files.
fn tls_config((cert, key): &(PathBuf, PathBuf)) -> Result<ServerTlsConfig, String> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    Ok(ServerTlsConfig::new().identity(identity))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("tonic-example-server: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(files) = &args.tls {
        let configured = tls_config(files).and_then(|tls| {
            builder
                .tls_config(tls)
                .map_err(|e| format!("bad TLS settings: {e}"))
        });
        builder = match configured {
            Ok(builder) => builder,
            Err(message) => {
                eprintln!("tonic-example-server: {message}");
                return ExitCode::FAILURE;
            }
        };
    }
    let served = builder
        .add_service(ExampleServer::new(ExampleService))
        .serve(args.addr)
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tonic-example-server: {e}");
            ExitCode::FAILURE
        }
    }
}
