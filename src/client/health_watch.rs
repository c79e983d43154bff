//! Client-side health checking (grpc/grpc `doc/health-checking.md`, gRFC
//! A17): a subchannel's connection carries one `grpc.health.v1.Health/Watch`
//! call for the configured service name, and every status it reports
//! decides whether the subchannel gets calls.
//!
//! The two messages are declared here (the same field numbers as
//! `grpc/health/v1/health.proto`), so that the client needs nothing of the
//! server's health service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::call::CallCore;
use crate::client::link::{ClientConn, RequestEnd};
use crate::code::Code;
use crate::metadata::Metadata;
use crate::rt::kept_buffers;
use crate::rt::reader::Credit;
use crate::wire::codec::Compress;
use crate::wire::compression::Encoding;
use crate::wire::headers::{self, RequestHead};

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `SERVING` in `HealthCheckResponse.ServingStatus`.
const SERVING: i32 = 1;

/// The Watch method's path.
const WATCH: &str = "/grpc.health.v1.Health/Watch";

/// Where a health watch goes, and what it may receive.
pub(crate) struct WatchTarget<'a> {
    pub(crate) authority: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) max_receive: usize,
    pub(crate) max_header_list: usize,
}

/// Watches `service`'s health on `conn` while the connection lives,
/// reporting `Some(serving)` for each status and `None` if the server has
/// no health service (then it stops). `report` returns false when nobody
/// listens any more. A watch that ends otherwise starts again after a
/// backoff (1 s, doubling up to 2 min).
pub(crate) fn watch(
    conn: &Arc<ClientConn>,
    target: &WatchTarget<'_>,
    service: &str,
    report: &mut dyn FnMut(Option<bool>) -> bool,
) {
    let mut backoff = Duration::from_secs(1);
    while conn.is_alive() {
        let started = Instant::now();
        let request = headers::request(&RequestHead {
            path: WATCH,
            authority: target.authority,
            scheme: target.scheme,
            metadata: &Metadata::new(),
            timeout: None,
            encoding: Encoding::Identity,
            previous_attempts: 0,
        });
        let body = kept_buffers::encode(
            &HealthCheckRequest {
                service: service.to_owned(),
            },
            Compress::Never.encoding(Encoding::Identity),
            usize::MAX,
        );
        let (Ok(request), Ok(body)) = (request, body) else {
            log::error!("could not build a health check request for {service:?}");
            return;
        };
        // Health replies are small; HTTP/2's initial window, the smallest a
        // stream has, is a safe guess at this connection's.
        let credit = Credit::by_reader(65_535);
        let opened = conn.open(request, Some(body), RequestEnd::Now, None, credit);
        let mut call = CallCore::new(
            opened,
            target.max_receive,
            target.max_header_list,
            None,
            None,
        );
        let end = loop {
            match call.next_message::<HealthCheckResponse>() {
                Some(Ok(reply)) => {
                    if !report(Some(reply.status == SERVING)) {
                        return;
                    }
                }
                Some(Err(status)) => break Some(status),
                None => break None,
            }
        };
        if let Some(status) = &end {
            if status.code() == Code::Unimplemented {
                // A17: no health service means health checking is off for
                // this backend; it serves.
                log::error!(
                    "health checking is configured, but the server has no health service ({}): \
                     treating it as serving",
                    status.message()
                );
                report(None);
                return;
            }
        }
        if !conn.is_alive() {
            return;
        }
        // Not serving until a new watch says otherwise.
        if !report(Some(false)) {
            return;
        }
        if started.elapsed() > backoff {
            backoff = Duration::from_secs(1);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(120));
    }
}
