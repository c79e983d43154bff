//! [`RequestSink`]: sending a call's request messages one at a time.

use std::marker::PhantomData;
use std::sync::Arc;

use prost::Message;

use crate::client::link::{ClientCmd, ClientConn};
use crate::client::retry::Replay;
use crate::rt::call_state::CallState;
use crate::rt::kept_buffers;
use crate::rt::StreamKey;
use crate::status::Status;
use crate::wire::codec::Compress;
use crate::wire::compression::Encoding;

/// The request stream of a call that started.
struct OpenSink {
    conn: Arc<ClientConn>,
    key: StreamKey,
    call: Arc<CallState>,
    encoding: Encoding,
    max_send: usize,
}

impl OpenSink {
    fn end(&self) {
        self.conn.send(ClientCmd::End(self.key));
    }
}

enum SinkState {
    /// Messages may be sent.
    Open(OpenSink),
    /// Messages may be sent, through the copy kept for retries.
    Replayed {
        replay: Arc<Replay>,
        encoding: Encoding,
        max_send: usize,
    },
    /// The call failed before it started: every send fails with this.
    Failed(Status),
}

/// Sends a call's request messages one at a time.
///
/// [`RequestSink::send`] blocks while the server is not reading (flow
/// control), and fails once the call is over. [`RequestSink::finish`] (or
/// dropping the sink) tells the server no more requests will come.
#[must_use = "dropping a sink ends the request stream"]
pub struct RequestSink<Req> {
    state: SinkState,
    _message: PhantomData<fn(Req)>,
}

impl<Req: Message> RequestSink<Req> {
    pub(crate) fn open(
        conn: Arc<ClientConn>,
        key: StreamKey,
        call: Arc<CallState>,
        encoding: Encoding,
        max_send: usize,
    ) -> Self {
        RequestSink {
            state: SinkState::Open(OpenSink {
                conn,
                key,
                call,
                encoding,
                max_send,
            }),
            _message: PhantomData,
        }
    }

    pub(crate) fn replayed(replay: Arc<Replay>, encoding: Encoding, max_send: usize) -> Self {
        RequestSink {
            state: SinkState::Replayed {
                replay,
                encoding,
                max_send,
            },
            _message: PhantomData,
        }
    }

    pub(crate) fn failed(status: Status) -> Self {
        RequestSink {
            state: SinkState::Failed(status),
            _message: PhantomData,
        }
    }

    /// Sends one request message, compressed with the call's compression;
    /// blocks while flow control holds it back.
    pub fn send(&mut self, message: Req) -> Result<(), Status> {
        self.send_message(&message, Compress::AsCall)
    }

    /// Sends one request message without compressing it, whatever the
    /// call's compression (its compressed flag stays clear).
    pub fn send_uncompressed(&mut self, message: Req) -> Result<(), Status> {
        self.send_message(&message, Compress::Never)
    }

    pub(crate) fn send_message(&mut self, message: &Req, compress: Compress) -> Result<(), Status> {
        let sink = match &self.state {
            SinkState::Open(sink) => sink,
            SinkState::Replayed {
                replay,
                encoding,
                max_send,
            } => {
                let frame = kept_buffers::encode(message, compress.encoding(*encoding), *max_send)?;
                return replay.send(frame);
            }
            SinkState::Failed(status) => return Err(status.clone()),
        };
        let frame = kept_buffers::encode(message, compress.encoding(sink.encoding), sink.max_send)?;
        sink.call.reserve(frame.len())?;
        sink.call.note_sent(frame.len());
        sink.conn.send(ClientCmd::Data(sink.key, frame));
        Ok(())
    }

    /// Ends the request stream (half-close).
    pub fn finish(self) {
        // Dropping does it.
    }
}

impl<Req> Drop for RequestSink<Req> {
    fn drop(&mut self) {
        match &self.state {
            SinkState::Open(sink) => sink.end(),
            SinkState::Replayed { replay, .. } => replay.finish(),
            SinkState::Failed(_) => {}
        }
    }
}

impl<Req> std::fmt::Debug for RequestSink<Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSink").finish_non_exhaustive()
    }
}
