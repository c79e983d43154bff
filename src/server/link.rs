//! What a call's handler and its connection thread say to each other: the
//! commands a handler sends (through [`ConnHandle`]) and the request events
//! the connection delivers to the handler's mailbox ([`Inbound`]).

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::metadata::Metadata;
use crate::rt::event_loop::Wake;
use crate::rt::StreamKey;
use crate::status::Status;
use crate::wire::compression::Encoding;
use crate::wire::framing::HEADER_LEN;

/// What a handler asks of its stream.
pub(crate) enum StreamCmd {
    /// Send the response headers with this initial metadata.
    Headers(Metadata, Encoding),
    /// Send one or more framed messages.
    Data(Bytes),
    /// End the call with this status (trailers, or Trailers-Only).
    Finish(Status),
    /// The handler consumed this many request bytes: return the credit.
    Release(usize),
}

/// What other threads ask of a connection.
pub(crate) enum ConnCmd {
    /// A command for one stream.
    Stream(StreamKey, StreamCmd),
    /// Send GOAWAY, finish in-flight calls, then close.
    Shutdown,
    /// Close now; in-flight calls end CANCELLED / UNAVAILABLE.
    Abort,
}

/// What the connection thread delivers to a call's request iterator.
pub(crate) enum Inbound {
    /// A chunk of the request body (any number of partial frames).
    Data(Bytes),
    /// The client finished sending.
    End,
    /// The call is over: cancelled, deadline, connection lost.
    Error(Status),
}

/// Who gives a request's flow-control credit back to the client, and so
/// whether a delivered chunk wakes the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credit {
    /// The handler, as it takes messages in, so that a client cannot outrun
    /// a handler that stops reading. Every chunk wakes the handler. Requests
    /// of many messages (client-streaming and bidi calls).
    ByHandler,
    /// The connection, as the bytes arrive: a request of one message, which
    /// its handler takes whole. Up to `left` more bytes are credited (one
    /// message of the largest size the server takes, with its header). The
    /// handler is woken by the chunks that bring the message's 5-byte
    /// header (which may declare a size over the limit), then only by the
    /// end of the request or by bytes beyond one message: it can do nothing
    /// with its one message before it knows that no second one follows.
    OnArrival { left: usize, header_left: usize },
}

/// What the connection does for a chunk it delivered to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Give the chunk's credit back now.
    pub(crate) release: bool,
    /// Wake the handler for it.
    pub(crate) wake: bool,
}

impl Credit {
    /// Credit on arrival for a single-message request of at most
    /// `max_message` bytes (its header not counted).
    pub(crate) fn on_arrival(max_message: usize) -> Self {
        Credit::OnArrival {
            left: max_message.saturating_add(HEADER_LEN),
            header_left: HEADER_LEN,
        }
    }

    /// Accounts for `n` request bytes delivered to the handler.
    pub(crate) fn delivered(&mut self, n: usize) -> Delivered {
        match self {
            Credit::ByHandler => Delivered {
                release: false,
                wake: true,
            },
            Credit::OnArrival { left, header_left } if n <= *left => {
                *left -= n;
                let wake = *header_left > 0;
                *header_left = header_left.saturating_sub(n);
                Delivered {
                    release: true,
                    wake,
                }
            }
            // More than one largest message: the handler will fail the call,
            // and the client gets no credit to send yet more.
            Credit::OnArrival { left, header_left } => {
                *left = 0;
                *header_left = 0;
                Delivered {
                    release: false,
                    wake: true,
                }
            }
        }
    }
}

/// The handle other threads use to reach a connection thread.
pub(crate) struct ConnHandle {
    tx: Sender<ConnCmd>,
    wake: Arc<Wake>,
}

/// Whether a command wakes the connection thread at once, or waits for a
/// later one that will (batching a call's headers, message and status into
/// one wake-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wakeup {
    /// Wake the thread now.
    Now,
    /// Leave it: another command follows that wakes it.
    Later,
}

impl ConnHandle {
    pub(crate) fn new(tx: Sender<ConnCmd>, wake: Arc<Wake>) -> Self {
        ConnHandle { tx, wake }
    }

    /// Queues a command for stream `key`, waking the thread as `wakeup`
    /// says.
    pub(crate) fn send(&self, key: StreamKey, cmd: StreamCmd, wakeup: Wakeup) {
        let _ = self.tx.send(ConnCmd::Stream(key, cmd));
        if wakeup == Wakeup::Now {
            self.wake.wake();
        }
    }

    /// Queues a connection-level command and wakes the thread.
    pub(crate) fn control(&self, cmd: ConnCmd) {
        let _ = self.tx.send(cmd);
        self.wake.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: Delivered = Delivered {
        release: true,
        wake: false,
    };
    const RELEASE_AND_WAKE: Delivered = Delivered {
        release: true,
        wake: true,
    };
    const HOLD_AND_WAKE: Delivered = Delivered {
        release: false,
        wake: true,
    };

    #[test]
    fn a_streaming_request_wakes_its_handler_for_every_chunk_and_keeps_its_credit() {
        let mut c = Credit::ByHandler;
        assert_eq!(c.delivered(10), HOLD_AND_WAKE);
        assert_eq!(c.delivered(1 << 20), HOLD_AND_WAKE);
    }

    #[test]
    fn a_single_message_is_credited_as_it_arrives_up_to_the_largest_message() {
        // 100-byte messages: 105 bytes with the header.
        let mut c = Credit::on_arrival(100);
        // The chunks that bring the message's header wake the handler, which
        // checks the declared size; the rest only add to the message.
        assert_eq!(c.delivered(3), RELEASE_AND_WAKE);
        assert_eq!(c.delivered(57), RELEASE_AND_WAKE);
        assert_eq!(c.delivered(20), RELEASE);
        assert_eq!(c.delivered(25), RELEASE);
        assert!(matches!(c, Credit::OnArrival { left: 0, .. }));
        // One byte more can only be a second message or an oversized one.
        assert_eq!(c.delivered(1), HOLD_AND_WAKE);
        assert_eq!(c.delivered(1), HOLD_AND_WAKE);
    }

    #[test]
    fn a_chunk_that_crosses_the_limit_is_held_whole() {
        let mut c = Credit::on_arrival(100);
        assert_eq!(c.delivered(100), RELEASE_AND_WAKE);
        assert_eq!(c.delivered(6), HOLD_AND_WAKE);
        assert!(matches!(c, Credit::OnArrival { left: 0, .. }));
    }
}
