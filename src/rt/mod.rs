//! The connection-thread machinery the server and the client share: one OS
//! thread at a time per connection owns the socket and all HTTP/2 state,
//! sleeps in one wait (mio: `epoll_wait` on Linux) or parks the connection
//! in a shared poll, and moves bytes between the socket, h2 and the calls.
//!
//! | file | what |
//! | --- | --- |
//! | `event_loop.rs` | the thread's wait (socket readiness, wake-ups from other threads, the next timer) and the loop that drives a connection |
//! | `parking.rs` | idle connections handing their thread back: a pool of threads waits on them all in turn, and the one that sees a connection wake drives it |
//! | `timers.rs` | the connection's timers: call deadlines, handshake, keepalive, idle, age |
//! | `keepalive.rs` | keepalive pings, one implementation for both sides |
//! | `settings.rs` | HTTP/2 and connection-thread settings, their defaults, the window rule, and the builder setters both sides share |
//! | `sync.rs` | the lock and condition variable every thread uses (the standard library's: no yielding spin) |
//! | `mailbox.rs` | the queue from a connection thread to the thread running one call |
//! | `kept_buffers.rs` | the memory each thread keeps for encoding messages and copying them together, reused from one message to the next |
//! | `reader.rs` | turning received bytes into messages, and when flow-control credit goes back to the peer |
//! | `send_queue.rs` | outgoing message bytes waiting for HTTP/2 flow control |
//! | `call_state.rs` | what a call's two sides share: cancellation, and the bound on queued outgoing bytes |

pub(crate) mod call_state;
pub(crate) mod event_loop;
pub(crate) mod keepalive;
pub(crate) mod kept_buffers;
pub(crate) mod mailbox;
pub(crate) mod parking;
pub(crate) mod reader;
pub(crate) mod send_queue;
pub(crate) mod settings;
pub(crate) mod sync;
pub(crate) mod timers;

/// A stream (call) of one connection, as its connection thread names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StreamKey(pub(crate) u64);
