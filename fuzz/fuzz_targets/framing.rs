//! The length-prefixed message decoder (`grpc_blocking::internal::framing::FrameDecoder`)
//! fed arbitrary bytes in arbitrary chunks, with a small (and changing)
//! message size limit, checked against a straightforward model that decodes
//! the same bytes from one flat buffer.
//!
//! Invariants: no panic; every frame is at most the limit in force; frames,
//! errors, `finish()` and `buffered_len()` agree with the model at every step;
//! an error is sticky.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use grpc_blocking::internal::framing::{encode_frame, Frame, FrameDecoder, FrameError, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Queue a chunk (possibly empty).
    Push(Vec<u8>),
    /// Queue an encoded message (so that valid frames are common too).
    PushFrame { payload: Vec<u8>, compressed: bool },
    /// One `next_frame` call.
    Next,
    /// `next_frame` until it returns `Ok(None)` or an error.
    Drain,
    /// `finish`.
    Finish,
    /// `set_max_message_size`.
    SetLimit(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    limit: u8,
    ops: Vec<Op>,
}

/// The reference decoder: the whole stream in one buffer and a position.
struct Model {
    data: Vec<u8>,
    pos: usize,
    pending: Option<(bool, usize)>,
    limit: usize,
    error: Option<FrameError>,
}

fn be_len(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

impl Model {
    fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.step();
        if let Err(e) = &r {
            self.error = Some(e.clone());
        }
        r
    }

    fn step(&mut self) -> Result<Option<Frame>, FrameError> {
        let (compressed, len) = match self.pending {
            Some(h) => h,
            None => {
                let Some(&flag) = self.data.get(self.pos) else {
                    return Ok(None);
                };
                if flag > 1 {
                    return Err(FrameError::ReservedFlag(flag));
                }
                if self.data.len() - self.pos < HEADER_LEN {
                    return Ok(None);
                }
                let len = be_len(&self.data[self.pos + 1..self.pos + 5]);
                if len > self.limit {
                    return Err(FrameError::TooLarge {
                        size: len,
                        limit: self.limit,
                    });
                }
                self.pos += HEADER_LEN;
                self.pending = Some((flag == 1, len));
                (flag == 1, len)
            }
        };
        if len > self.limit {
            return Err(FrameError::TooLarge {
                size: len,
                limit: self.limit,
            });
        }
        if self.data.len() - self.pos < len {
            return Ok(None);
        }
        let payload = Bytes::copy_from_slice(&self.data[self.pos..self.pos + len]);
        self.pos += len;
        self.pending = None;
        Ok(Some(Frame {
            compressed,
            payload,
        }))
    }

    fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut pos = self.pos;
        let truncated = |len: usize, avail: usize| FrameError::Truncated {
            expected: HEADER_LEN + len,
            received: HEADER_LEN + avail,
        };
        if let Some((_, len)) = self.pending {
            if len > self.limit {
                return Err(FrameError::TooLarge {
                    size: len,
                    limit: self.limit,
                });
            }
            let avail = self.data.len() - pos;
            if avail < len {
                return Err(truncated(len, avail));
            }
            pos += len;
        }
        while pos < self.data.len() {
            let flag = self.data[pos];
            if flag > 1 {
                return Err(FrameError::ReservedFlag(flag));
            }
            let rem = self.data.len() - pos;
            if rem < HEADER_LEN {
                return Err(FrameError::Truncated {
                    expected: HEADER_LEN,
                    received: rem,
                });
            }
            let len = be_len(&self.data[pos + 1..pos + 5]);
            if len > self.limit {
                return Err(FrameError::TooLarge {
                    size: len,
                    limit: self.limit,
                });
            }
            pos += HEADER_LEN;
            let avail = self.data.len() - pos;
            if avail < len {
                return Err(truncated(len, avail));
            }
            pos += len;
        }
        Ok(())
    }

    fn buffered(&self) -> usize {
        self.data.len() - self.pos
    }
}

fn check_next(dec: &mut FrameDecoder, model: &mut Model) -> bool {
    let limit = model.limit;
    let got = dec.next_frame();
    let want = model.next();
    assert_eq!(got, want, "next_frame disagrees with the model");
    if let Ok(Some(frame)) = &got {
        assert!(
            frame.payload.len() <= limit,
            "frame of {} bytes over the limit {limit}",
            frame.payload.len()
        );
    }
    assert_eq!(dec.buffered_len(), model.buffered(), "buffered_len");
    matches!(got, Ok(Some(_)))
}

fuzz_target!(|input: Input| {
    let limit = usize::from(input.limit);
    let mut dec = FrameDecoder::new(limit);
    let mut model = Model {
        data: Vec::new(),
        pos: 0,
        pending: None,
        limit,
        error: None,
    };
    for op in input.ops {
        match op {
            Op::Push(chunk) => {
                model.data.extend_from_slice(&chunk);
                dec.push(Bytes::from(chunk));
            }
            Op::PushFrame {
                payload,
                compressed,
            } => {
                let mut out = bytes::BytesMut::new();
                encode_frame(&payload, compressed, &mut out).expect("small payload encodes");
                assert_eq!(out.len(), HEADER_LEN + payload.len());
                model.data.extend_from_slice(&out);
                dec.push(out.freeze());
            }
            Op::Next => {
                check_next(&mut dec, &mut model);
            }
            Op::Drain => while check_next(&mut dec, &mut model) {},
            Op::Finish => {
                assert_eq!(dec.finish(), model.finish(), "finish disagrees");
            }
            Op::SetLimit(l) => {
                dec.set_max_message_size(usize::from(l));
                model.limit = usize::from(l);
            }
        }
        assert_eq!(dec.buffered_len(), model.buffered(), "buffered_len");
    }
    // The end of the stream: whatever is left decodes (or fails) as the model
    // says, and an error stays.
    while check_next(&mut dec, &mut model) {}
    assert_eq!(dec.finish(), model.finish(), "finish at the end");
    if let Err(e) = dec.next_frame() {
        assert_eq!(dec.next_frame(), Err(e.clone()), "sticky error");
        assert_eq!(dec.finish(), Err(e), "sticky error in finish");
    }
});
