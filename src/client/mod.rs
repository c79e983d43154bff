//! The blocking gRPC client: a [`Channel`] and the calls made on it.
//!
//! | file | what |
//! | --- | --- |
//! | `builder.rs`, `config.rs` | the settings and their defaults |
//! | `target.rs` | the target forms a channel accepts |
//! | `resolver.rs` | from a target to its backends' addresses: DNS, lists, an application's own |
//! | `balancer.rs` | load balancing as a state machine: pick_first, round_robin, connectivity states |
//! | `subchannel.rs` | running it: one thread per backend connection, resolution, health watches |
//! | `health_watch.rs` | client-side health checking of one backend |
//! | `connect.rs`, `backoff.rs` | dialling one address, and waiting between failed attempts |
//! | `channel.rs` | the channel and the four kinds of call |
//! | `options.rs` | per-call options: metadata, deadline, compression, context propagation |
//! | `interceptor.rs` | code that runs before and after every call |
//! | `conn.rs` | one connection's thread |
//! | `link.rs` | what calls and connection threads say to each other |
//! | `response.rs` | a call's response as a state machine: headers, messages, status |
//! | `call.rs`, `sink.rs` | the handles callers hold: the response side and the request sink |
//! | `retry.rs` | starting again a call the server never processed |
//! | `service_config.rs` | the service config: parsing and checking it, and the retry arithmetic it configures |

mod backoff;
mod balancer;
mod builder;
mod call;
mod channel;
mod config;
mod conn;
mod connect;
mod health_watch;
mod interceptor;
mod link;
mod options;
mod resolver;
mod response;
mod retry;
mod service_config;
mod sink;
mod subchannel;
mod target;

pub use balancer::{ConnectivityState, SubchannelInfo};
pub use builder::ChannelBuilder;
pub use call::{Response, Streaming, UnaryCall};
pub use channel::Channel;
pub use interceptor::{after_call, AfterCall, CallEnd, CallStart, Interceptor};
pub use options::CallOptions;
pub use resolver::{Address, ManualResolver, ResolveNow, Resolver};
pub use service_config::{
    HedgingPolicy, LoadBalancingPolicy, MethodConfig, RetryPolicy, RetryThrottling, ServiceConfig,
    ServiceConfigError,
};
pub use sink::RequestSink;
pub use target::IntoTarget;
