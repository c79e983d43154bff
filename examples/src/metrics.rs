//! Server metrics in the Prometheus text format (OpenMetrics), served over
//! plain HTTP/1.1: per-call counts, latencies and traffic from an
//! interceptor's after-hook, and the server's own statistics
//! ([`ServerStats`](grpc_blocking::server::ServerStats)) read at each
//! scrape. The metrics are prometheus-client's, the HTTP server
//! tiny_http's.
//!
//! The names follow the go-grpc-prometheus conventions, so existing
//! dashboards fit:
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `grpc_server_handled_total` | service, method, code | calls ended |
//! | `grpc_server_handling_seconds` | service, method | call durations (histogram) |
//! | `grpc_server_msg_received_total`, `grpc_server_msg_sent_total` | service, method | messages |
//! | `grpc_server_received_bytes_total`, `grpc_server_sent_bytes_total` | service, method | their bytes on the wire |
//! | `grpc_server_connections` | | connections open |
//! | `grpc_server_connections_parked` | | of those, idle ones holding no thread |
//! | `grpc_server_calls_in_flight` | | calls open |
//! | `grpc_server_handler_threads` | state (`busy`, `idle`) | handler threads |
//!
//! ```
//! use std::io::{Read, Write};
//! use grpc_blocking::Server;
//! use grpc_blocking_examples::metrics::Metrics;
//! use grpc_blocking_examples::nameko::{ExampleClient, ExampleRequest, ExampleServer};
//! use grpc_blocking_examples::ExampleService;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = Metrics::new();
//! let server = Server::builder()
//!     .intercept(metrics.clone())
//!     .add_service(ExampleServer::new(ExampleService))
//!     .bind("127.0.0.1:0")?
//!     .spawn()?;
//! let endpoint = metrics.serve("127.0.0.1:0", server.stats_handle())?;
//!
//! let client = ExampleClient::connect(server.target())?;
//! client.unary_unary(ExampleRequest::default())?;
//!
//! // What Prometheus would scrape (after-hooks run once the status is
//! // sent, so wait for the count).
//! let scrape = || -> std::io::Result<String> {
//!     let mut http = std::net::TcpStream::connect(endpoint.addr())?;
//!     http.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
//!     let mut page = String::new();
//!     http.read_to_string(&mut page)?;
//!     Ok(page)
//! };
//! let line = "grpc_server_handled_total{grpc_service=\"nameko.example\",grpc_method=\"unary_unary\",grpc_code=\"OK\"} 1";
//! let mut page = scrape()?;
//! while !page.contains(line) {
//!     std::thread::sleep(std::time::Duration::from_millis(10));
//!     page = scrape()?;
//! }
//! assert!(page.starts_with("HTTP/1.1 200 OK"));
//! assert!(page.contains("grpc_server_connections 1"));
//! # Ok(())
//! # }
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use grpc_blocking::server::{CallEnd, Interceptor, StatsHandle};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A call's method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
}

/// A call's method and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: String,
}

/// A handler thread's state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type Histograms = Family<MethodLabels, Histogram, fn() -> Histogram>;

struct Inner {
    registry: Registry,
    handled: Family<CodeLabels, Counter>,
    seconds: Histograms,
    msg_received: Family<MethodLabels, Counter>,
    msg_sent: Family<MethodLabels, Counter>,
    bytes_received: Family<MethodLabels, Counter>,
    bytes_sent: Family<MethodLabels, Counter>,
    connections: Gauge,
    parked: Gauge,
    in_flight: Gauge,
    handlers: Family<StateLabels, Gauge>,
}

/// A server interceptor that records every call, and the registry it
/// records into. Cheap to clone; clones share the metrics.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
    /// Serialises scrapes: the gauges are set, then encoded.
    scrape: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 13 s, four buckets per factor of ten and a bit.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let handled = Family::<CodeLabels, Counter>::default();
        let seconds: Histograms = Family::new_with_constructor(latency_histogram);
        let counters = || Family::<MethodLabels, Counter>::default();
        let (msg_received, msg_sent, bytes_received, bytes_sent) =
            (counters(), counters(), counters(), counters());
        let connections = Gauge::default();
        let parked = Gauge::default();
        let in_flight = Gauge::default();
        let handlers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "grpc_server_handled",
            "Calls ended, by method and status code",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Call durations, from the request's arrival to the end of its handler",
            seconds.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Request messages received",
            msg_received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Response messages sent",
            msg_sent.clone(),
        );
        registry.register(
            "grpc_server_received_bytes",
            "Bytes of request messages on the wire",
            bytes_received.clone(),
        );
        registry.register(
            "grpc_server_sent_bytes",
            "Bytes of response messages on the wire",
            bytes_sent.clone(),
        );
        registry.register(
            "grpc_server_connections",
            "Connections open",
            connections.clone(),
        );
        registry.register(
            "grpc_server_connections_parked",
            "Idle connections holding no thread (counted in grpc_server_connections too)",
            parked.clone(),
        );
        registry.register(
            "grpc_server_calls_in_flight",
            "Calls open",
            in_flight.clone(),
        );
        registry.register(
            "grpc_server_handler_threads",
            "Handler threads, busy or idle",
            handlers.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                handled,
                seconds,
                msg_received,
                msg_sent,
                bytes_received,
                bytes_sent,
                connections,
                parked,
                in_flight,
                handlers,
            }),
            scrape: Arc::new(Mutex::new(())),
        }
    }

    /// The metrics now, in the text format, with the server statistics
    /// from `stats`.
    pub fn encode(&self, stats: &StatsHandle) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let now = stats.stats();
        let inner = &self.inner;
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        inner.connections.set(gauge(now.connections));
        inner.parked.set(gauge(now.connections_parked));
        inner.in_flight.set(gauge(now.calls_in_flight));
        for (state, n) in [("busy", now.handlers_busy), ("idle", now.handlers_idle)] {
            inner
                .handlers
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(gauge(n));
        }
        let mut page = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut page, &inner.registry);
        page
    }

    /// Serves the metrics at `http://ADDR/metrics` (HTTP/1.1) from a
    /// background thread, with the server statistics from `stats`, until
    /// the returned endpoint is dropped.
    pub fn serve(
        &self,
        addr: impl ToSocketAddrs,
        stats: StatsHandle,
    ) -> std::io::Result<MetricsEndpoint> {
        let http = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the metrics server has no IP address"))?;
        let http = Arc::new(http);
        let serving = http.clone();
        let metrics = self.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = if request.url() == "/metrics" {
                        let content_type = tiny_http::Header::from_bytes(
                            "Content-Type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .expect("a valid header");
                        tiny_http::Response::from_string(metrics.encode(&stats))
                            .with_header(content_type)
                    } else {
                        tiny_http::Response::from_string("try /metrics\n").with_status_code(404)
                    };
                    if let Err(e) = request.respond(response) {
                        log::debug!("a metrics scrape failed: {e}");
                    }
                }
            })?;
        Ok(MetricsEndpoint {
            addr,
            http,
            thread: Some(thread),
        })
    }
}

impl Interceptor for Metrics {
    fn after(&self, call: &CallEnd<'_>) {
        let path = call.method().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let labels = MethodLabels {
            grpc_service: service.to_owned(),
            grpc_method: method.to_owned(),
        };
        let inner = &self.inner;
        inner
            .handled
            .get_or_create(&CodeLabels {
                grpc_service: labels.grpc_service.clone(),
                grpc_method: labels.grpc_method.clone(),
                grpc_code: call.status().code().to_string(),
            })
            .inc();
        inner
            .seconds
            .get_or_create(&labels)
            .observe(call.duration().as_secs_f64());
        inner
            .msg_received
            .get_or_create(&labels)
            .inc_by(call.messages_received());
        inner
            .msg_sent
            .get_or_create(&labels)
            .inc_by(call.messages_sent());
        inner
            .bytes_received
            .get_or_create(&labels)
            .inc_by(call.bytes_received());
        inner
            .bytes_sent
            .get_or_create(&labels)
            .inc_by(call.bytes_sent());
    }
}

/// A running metrics endpoint; dropping it stops the HTTP server.
pub struct MetricsEndpoint {
    addr: SocketAddr,
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsEndpoint {
    /// The address the endpoint listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            // The thread ends at once once unblocked; never wait long.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
