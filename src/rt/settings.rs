//! The settings both sides' connections share, their defaults, and the
//! builder setters for them ([`connection_setters!`], used by
//! `ServerBuilder` and `ChannelBuilder` alike).
//!
//! The window rule: the connection window
//! is kept at least four times the stream window, so that one stalled stream
//! cannot freeze its connection.

use std::time::Duration;

use crate::rt::keepalive::KeepaliveConfig;

/// HTTP/2 settings of one side's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Http2Settings {
    /// SETTINGS_INITIAL_WINDOW_SIZE: how many bytes the peer may send on a
    /// stream ahead of this side consuming them.
    pub(crate) stream_window: u32,
    /// The connection-level window (a WINDOW_UPDATE on stream 0).
    pub(crate) connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE.
    pub(crate) max_frame_size: u32,
    /// The largest header block accepted from the peer.
    pub(crate) max_header_list_size: u32,
    /// Bytes h2 may buffer for sending per stream.
    pub(crate) max_send_buffer: usize,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            stream_window: 1024 * 1024,
            connection_window: 4 * 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 16 * 1024,
            max_send_buffer: 256 * 1024,
        }
    }
}

impl Http2Settings {
    /// Sets the stream window, growing the connection window to at least
    /// four times it.
    pub(crate) fn set_stream_window(&mut self, bytes: u32) {
        self.stream_window = bytes;
        self.connection_window = self.connection_window.max(bytes.saturating_mul(4));
    }

    /// Sets the connection window, never below four times the stream window.
    pub(crate) fn set_connection_window(&mut self, bytes: u32) {
        self.connection_window = bytes.max(self.stream_window.saturating_mul(4));
    }

    /// h2's budget for buffered small DATA frames: each frame under 256
    /// bytes costs 256 minus its size until it is read out of h2. gRPC peers
    /// send a DATA frame per small message, so the default (half the
    /// connection window) is exhausted by legitimate bursts of a few
    /// thousand small messages read in one go. Four times the connection
    /// window allows about 65,000 buffered tiny frames per connection (a few
    /// MB of bookkeeping), and still stops a flood.
    pub(crate) fn small_frame_budget(&self) -> usize {
        (self.connection_window as usize)
            .saturating_mul(4)
            .max(1024 * 1024)
    }

    /// An h2 server builder with these settings.
    pub(crate) fn server(&self) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_header_list_size(self.max_header_list_size)
            .max_send_buffer_size(self.max_send_buffer)
            .data_frame_budget(self.small_frame_budget());
        b
    }

    /// An h2 client builder with these settings.
    pub(crate) fn client(&self) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            // h2 drops trailer fields past its limit without a word; give it
            // a generous bound and apply ours to whole header blocks (the
            // client's response reader), so that an oversize response fails
            // clearly instead.
            .max_header_list_size(self.max_header_list_size.saturating_mul(4).max(1 << 20))
            .max_send_buffer_size(self.max_send_buffer)
            .data_frame_budget(self.small_frame_budget())
            .enable_push(false);
        b
    }
}

/// What every connection of one side shares: HTTP/2 settings, keepalive,
/// message size limits and the connection thread's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnConfig {
    pub(crate) http2: Http2Settings,
    pub(crate) keepalive: KeepaliveConfig,
    /// Largest message accepted from the peer, after decompression.
    pub(crate) max_receive_message_size: usize,
    /// Largest message this side sends.
    pub(crate) max_send_message_size: usize,
    /// Stack size of connection threads.
    pub(crate) stack_size: usize,
    /// How long a connection has nothing to do before its thread goes
    /// (`rt/parking.rs`); `None`: never.
    pub(crate) park_idle_after: Option<Duration>,
}

impl ConnConfig {
    /// A server's defaults: keepalive every 2 hours, 20 s to answer, also
    /// without calls (as gRPC servers do).
    pub(crate) fn server() -> Self {
        ConnConfig {
            keepalive: KeepaliveConfig {
                interval: Some(Duration::from_secs(2 * 60 * 60)),
                timeout: Duration::from_secs(20),
                without_calls: true,
            },
            ..Self::client()
        }
    }

    /// A client's defaults: keepalive off (20 s to answer when on), only
    /// while calls are open.
    pub(crate) fn client() -> Self {
        ConnConfig {
            http2: Http2Settings::default(),
            keepalive: KeepaliveConfig {
                interval: None,
                timeout: Duration::from_secs(20),
                without_calls: false,
            },
            max_receive_message_size: 4 * 1024 * 1024,
            max_send_message_size: usize::MAX,
            stack_size: 256 * 1024,
            park_idle_after: Some(Duration::ZERO),
        }
    }
}

/// The setters of [`ConnConfig`] for a builder whose `$($conn).+` field is
/// one (`config.conn`): the same names, behaviour and docs on
/// `ServerBuilder` and `ChannelBuilder`.
macro_rules! connection_setters {
    ($($conn:ident).+) => {
        /// Largest message accepted from the peer, after decompression
        /// (default 4 MiB). A larger one ends its call with
        /// `RESOURCE_EXHAUSTED`.
        pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
            self.$($conn).+.max_receive_message_size = bytes;
            self
        }

        /// Largest message this side sends (default: unlimited). Sending a
        /// larger one fails with `RESOURCE_EXHAUSTED`.
        pub fn max_send_message_size(mut self, bytes: usize) -> Self {
            self.$($conn).+.max_send_message_size = bytes;
            self
        }

        /// The HTTP/2 flow-control window of each stream (default 1 MiB):
        /// how many bytes the peer may send on a call ahead of this side
        /// reading them. The connection window is kept at least 4 times
        /// larger.
        pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
            self.$($conn).+.http2.set_stream_window(bytes);
            self
        }

        /// The HTTP/2 flow-control window of each connection, over all its
        /// calls (default 4 MiB; never less than 4 times the stream window).
        pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
            self.$($conn).+.http2.set_connection_window(bytes);
            self
        }

        /// Largest HTTP/2 frame payload the peer may send (default 16 KiB,
        /// the protocol's minimum; at most 16 MiB - 1).
        pub fn max_frame_size(mut self, bytes: u32) -> Self {
            self.$($conn).+.http2.max_frame_size = bytes.clamp(16 * 1024, 16 * 1024 * 1024 - 1);
            self
        }

        /// Largest header block accepted from the peer, in bytes as HTTP/2
        /// counts them (default 16 KiB). A server refuses a larger request
        /// with HTTP 431; a client fails a call whose response headers or
        /// trailers are larger with `RESOURCE_EXHAUSTED`.
        pub fn max_header_list_size(mut self, bytes: u32) -> Self {
            self.$($conn).+.http2.max_header_list_size = bytes;
            self
        }

        /// Bytes of outgoing messages HTTP/2 may buffer per call while the
        /// peer's window is closed (default 256 KiB); a sender blocks beyond
        /// it.
        pub fn max_send_buffer_size(mut self, bytes: usize) -> Self {
            self.$($conn).+.http2.max_send_buffer = bytes;
            self
        }

        /// Time between HTTP/2 keepalive PINGs; `None` turns them off
        /// (default: every 2 hours on a server, off on a client). A PING not
        /// answered within [`keepalive_timeout`](Self::keepalive_timeout)
        /// closes the connection, and its calls end `UNAVAILABLE`.
        pub fn keepalive_interval(mut self, interval: Option<::std::time::Duration>) -> Self {
            self.$($conn).+.keepalive.interval = interval;
            self
        }

        /// How long a keepalive PING may wait for its answer (default 20 s).
        pub fn keepalive_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.$($conn).+.keepalive.timeout = timeout;
            self
        }

        /// Whether keepalive PINGs go out on a connection with no call open
        /// (default: true on a server, false on a client).
        pub fn keepalive_without_calls(mut self, permit: bool) -> Self {
            self.$($conn).+.keepalive.without_calls = permit;
            self
        }

        /// Stack size of connection threads (default 256 KiB). They run no
        /// application code, except a server's unary handlers when they run
        /// on connection threads (the default): the threads then get at
        /// least the handler stack size.
        pub fn connection_stack_size(mut self, bytes: usize) -> Self {
            self.$($conn).+.stack_size = bytes;
            self
        }

        /// How long a connection may have nothing to do (no call in
        /// flight, or a handshake the peer is slow to finish) before it
        /// gives its thread up (default: at once, and then also whenever
        /// its calls all wait, and a server's accepted connection starts
        /// without a thread; a longer delay parks only connections with no
        /// call, after it, except on a server with more than 512
        /// connections open, where connections park as with no delay). The
        /// connection stays open: a small pool of threads (the server's,
        /// or the process's for clients) waits on all such connections
        /// together, and the thread that sees one wake (its peer sends, a
        /// call starts, a timer is due) drives it until it is idle again,
        /// then waits for the next. An idle connection thus costs its few
        /// KiB of heap and no thread, and busy connections share the
        /// pool's threads with no hand-off between them. A handler that
        /// blocks still gets its connection moved to a thread of its own.
        /// `None` keeps a thread for every connection while it lives.
        pub fn park_idle_connections_after(
            mut self,
            after: Option<::std::time::Duration>,
        ) -> Self {
            self.$($conn).+.park_idle_after = after;
            self
        }
    };
}
pub(crate) use connection_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_window_stays_four_times_the_stream_window() {
        let mut s = Http2Settings::default();
        s.set_stream_window(2 * 1024 * 1024);
        assert_eq!(s.connection_window, 8 * 1024 * 1024);
        s.set_connection_window(1024);
        assert_eq!(s.connection_window, 8 * 1024 * 1024);
        s.set_connection_window(64 * 1024 * 1024);
        assert_eq!(s.connection_window, 64 * 1024 * 1024);
        // A smaller stream window leaves a larger connection window alone.
        s.set_stream_window(65_535);
        assert_eq!(s.connection_window, 64 * 1024 * 1024);
    }

    #[test]
    fn the_small_frame_budget_grows_with_the_connection_window() {
        let mut s = Http2Settings::default();
        assert_eq!(s.small_frame_budget(), 16 * 1024 * 1024);
        s.connection_window = 65_535;
        assert_eq!(s.small_frame_budget(), 1024 * 1024);
    }

    #[test]
    fn server_and_client_defaults_differ_only_in_keepalive() {
        let (server, client) = (ConnConfig::server(), ConnConfig::client());
        assert_eq!(server.keepalive.interval, Some(Duration::from_secs(7200)));
        assert!(server.keepalive.without_calls);
        assert_eq!(client.keepalive.interval, None);
        assert!(!client.keepalive.without_calls);
        assert_eq!(
            ConnConfig {
                keepalive: client.keepalive,
                ..server
            },
            client
        );
    }
}
