//! Drops `:authority` from the requests a server reads over a Unix domain
//! socket, before h2 sees them.
//!
//! gRPC's naming document says the `:authority` of a call over a Unix
//! socket is `localhost`, but clients differ: gRPC's C core (grpcio, and
//! every wrapper of it) sends the socket's path percent-encoded
//! (`tmp%2Fapp.sock`), grpc-java the path itself. Neither is an authority
//! HTTP accepts, and h2 resets such a request (`PROTOCOL_ERROR`) before the
//! server can see it. The server does not use `:authority`, so on a Unix
//! socket it removes it from every request's header block instead.
//!
//! Removing a header from an HPACK block must leave the decoder's dynamic
//! table as the client's encoder left it. Representations that do not
//! touch the table (an indexed field, a literal without indexing or never
//! indexed) can always go. A literal *with* incremental indexing adds an
//! entry, so it can go only while the client's dynamic table has size 0:
//! the server advertises `SETTINGS_HEADER_TABLE_SIZE = 0` on Unix sockets
//! (its h2 builder), clients answer with a table size update to 0 at the
//! start of their next block, and from then on no entry is ever kept.
//! [`AuthorityFilter`] follows those updates and keeps a block as it is
//! whenever it cannot prove the table empty, so the two sides' tables never
//! disagree; h2 then judges that block's `:authority` itself.
//!
//! No string is decoded (no Huffman): `:authority` is recognised by its
//! static-table index (1), as every client encodes it, or by a literal
//! name that is not Huffman-coded.
//!
//! Every other frame passes through unchanged and without being held back
//! (DATA is streamed); a header block (HEADERS and its CONTINUATION frames)
//! is collected whole, rewritten, and sent on as HEADERS and CONTINUATION
//! frames of at most 16 KiB, without padding.

use bytes::{Buf, BytesMut};

/// The client connection preface, passed through before the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame every HTTP/2 endpoint must accept.
const MAX_FRAME: usize = 16 * 1024;
/// A header block larger than this is passed on as it came.
const MAX_BLOCK: usize = 1 << 20;
/// `:authority`'s index in HPACK's static table.
const AUTHORITY_INDEX: usize = 1;
/// The dynamic table's size before the client says otherwise (RFC 9113's
/// default SETTINGS_HEADER_TABLE_SIZE).
const DEFAULT_TABLE_SIZE: usize = 4096;

/// A header block being collected.
struct Block {
    stream_id: u32,
    /// HEADERS' END_STREAM and PRIORITY flags.
    flags: u8,
    /// HEADERS' priority fields (with PRIORITY).
    priority: Option<[u8; 5]>,
    /// The concatenated fragments.
    fragment: Vec<u8>,
    /// The frames as they came, to pass on unchanged if need be.
    original: Vec<u8>,
    /// False for a HEADERS frame whose padding or priority does not fit:
    /// passed on as it came, for h2 to refuse.
    well_formed: bool,
}

/// What a frame's payload is being used for.
enum Payload {
    /// Copied through as it arrives: this many bytes left.
    Through(usize),
    /// Part of a header block too large to rewrite, copied through: this
    /// many bytes left, then the block goes on (unless it ended).
    BlockThrough { left: usize, ended: bool },
}

/// Rewrites the bytes a client sends on a Unix socket (see the module's
/// documentation): feed it what the socket gave, take what h2 may read.
pub(crate) struct AuthorityFilter {
    preface_left: usize,
    input: BytesMut,
    output: BytesMut,
    payload: Option<Payload>,
    block: Option<Block>,
    /// A block too large to rewrite is being copied through, up to its
    /// END_HEADERS.
    block_through: bool,
    /// The client's dynamic table size, as its last size update set it.
    table_size: usize,
}

impl Default for AuthorityFilter {
    fn default() -> Self {
        AuthorityFilter {
            preface_left: PREFACE_LEN,
            input: BytesMut::new(),
            output: BytesMut::new(),
            payload: None,
            block: None,
            block_through: false,
            table_size: DEFAULT_TABLE_SIZE,
        }
    }
}

impl AuthorityFilter {
    /// Takes bytes the client sent.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        self.run();
    }

    /// The client is done sending: what is left goes on as it is.
    pub(crate) fn finish(&mut self) {
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.original);
        }
        let rest = self.input.split();
        self.output.extend_from_slice(&rest);
    }

    /// Whether bytes for h2 are waiting.
    pub(crate) fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// The bytes waiting for h2.
    pub(crate) fn output(&self) -> &[u8] {
        &self.output
    }

    /// The first `n` bytes of [`AuthorityFilter::output`] went to h2.
    pub(crate) fn consume(&mut self, n: usize) {
        self.output.advance(n);
    }

    /// Moves waiting bytes for h2 into `buf`; returns how many.
    #[cfg(test)]
    fn take_output(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.output.len());
        buf[..n].copy_from_slice(&self.output[..n]);
        self.consume(n);
        n
    }

    fn run(&mut self) {
        loop {
            if self.preface_left > 0 {
                let n = self.preface_left.min(self.input.len());
                if n == 0 {
                    return;
                }
                let bytes = self.input.split_to(n);
                self.output.extend_from_slice(&bytes);
                self.preface_left -= n;
                continue;
            }
            if let Some(payload) = &mut self.payload {
                let left = match payload {
                    Payload::Through(left) | Payload::BlockThrough { left, .. } => left,
                };
                let n = (*left).min(self.input.len());
                let bytes = self.input.split_to(n);
                self.output.extend_from_slice(&bytes);
                *left -= n;
                if *left > 0 {
                    return;
                }
                if let Some(Payload::BlockThrough { ended: true, .. }) = self.payload {
                    self.block_through = false;
                }
                self.payload = None;
                continue;
            }
            if self.input.len() < FRAME_HEADER_LEN {
                return;
            }
            let header = &self.input[..FRAME_HEADER_LEN];
            let len = frame_len(header);
            let kind = header[3];
            let flags = header[4];
            let stream_id =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let in_block = self.block.is_some() || self.block_through;
            let of_block = (kind == HEADERS && !in_block) || (kind == CONTINUATION && in_block);
            if !of_block {
                // Not part of a header block (or a protocol error h2 will
                // report): what was collected goes on as it came.
                if let Some(block) = self.block.take() {
                    self.output.extend_from_slice(&block.original);
                }
                self.block_through = false;
                let bytes = self.input.split_to(FRAME_HEADER_LEN);
                self.output.extend_from_slice(&bytes);
                self.payload = Some(Payload::Through(len));
                continue;
            }
            let ended = flags & END_HEADERS != 0;
            let collected = self.block.as_ref().map_or(0, |b| b.original.len());
            if self.block_through || collected + FRAME_HEADER_LEN + len > MAX_BLOCK {
                if let Some(block) = self.block.take() {
                    self.output.extend_from_slice(&block.original);
                }
                self.block_through = true;
                let bytes = self.input.split_to(FRAME_HEADER_LEN);
                self.output.extend_from_slice(&bytes);
                self.payload = Some(Payload::BlockThrough { left: len, ended });
                if len == 0 && ended {
                    self.block_through = false;
                    self.payload = None;
                }
                continue;
            }
            if self.input.len() < FRAME_HEADER_LEN + len {
                return;
            }
            let frame = self.input.split_to(FRAME_HEADER_LEN + len);
            if kind == HEADERS {
                self.start_block(stream_id, flags, &frame);
            } else if let Some(block) = &mut self.block {
                block.fragment.extend_from_slice(&frame[FRAME_HEADER_LEN..]);
                block.original.extend_from_slice(&frame);
            }
            if ended {
                if let Some(block) = self.block.take() {
                    self.finish_block(block);
                }
            }
        }
    }

    /// A HEADERS frame: its fragment without padding and priority fields.
    fn start_block(&mut self, stream_id: u32, flags: u8, frame: &[u8]) {
        let mut payload = &frame[FRAME_HEADER_LEN..];
        let mut well_formed = true;
        if flags & PADDED != 0 {
            match payload.split_first() {
                Some((&pad, rest)) if usize::from(pad) <= rest.len() => {
                    payload = &rest[..rest.len() - usize::from(pad)];
                }
                _ => well_formed = false,
            }
        }
        let mut priority = None;
        if flags & PRIORITY != 0 && well_formed {
            match payload.split_first_chunk::<5>() {
                Some((fields, rest)) => {
                    priority = Some(*fields);
                    payload = rest;
                }
                None => well_formed = false,
            }
        }
        self.block = Some(Block {
            stream_id,
            flags: flags & (END_STREAM | PRIORITY),
            priority,
            fragment: payload.to_vec(),
            original: frame.to_vec(),
            well_formed,
        });
    }

    /// A whole block: rewritten if it names `:authority` and that is safe,
    /// else passed on as it came.
    fn finish_block(&mut self, block: Block) {
        let rewritten = if block.well_formed {
            without_authority(&block.fragment, &mut self.table_size)
        } else {
            None
        };
        let Some(fragment) = rewritten else {
            self.output.extend_from_slice(&block.original);
            return;
        };
        let mut first = true;
        let mut rest = &fragment[..];
        loop {
            let (kind, mut flags, prefix) = if first {
                let prefix = block.priority.map_or(Vec::new(), |p| p.to_vec());
                (HEADERS, block.flags, prefix)
            } else {
                (CONTINUATION, 0, Vec::new())
            };
            let room = MAX_FRAME - prefix.len();
            let chunk = &rest[..rest.len().min(room)];
            rest = &rest[chunk.len()..];
            if rest.is_empty() {
                flags |= END_HEADERS;
            }
            let len = prefix.len() + chunk.len();
            self.output
                .extend_from_slice(&u32::try_from(len).unwrap_or(0).to_be_bytes()[1..]);
            self.output.extend_from_slice(&[kind, flags]);
            self.output
                .extend_from_slice(&block.stream_id.to_be_bytes());
            self.output.extend_from_slice(&prefix);
            self.output.extend_from_slice(chunk);
            first = false;
            if rest.is_empty() {
                return;
            }
        }
    }
}

/// The payload length in a frame header.
fn frame_len(header: &[u8]) -> usize {
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    usize::try_from(len).unwrap_or(usize::MAX)
}

/// An HPACK integer with an `n`-bit prefix at the start of `bytes` (RFC
/// 7541 section 5.1): its value and length.
fn integer(bytes: &[u8], n: u32) -> Option<(usize, usize)> {
    let mask = (1usize << n) - 1;
    let first = usize::from(*bytes.first()?) & mask;
    if first < mask {
        return Some((first, 1));
    }
    let mut value = mask;
    for (i, &b) in bytes[1..].iter().enumerate() {
        let shift = 7 * u32::try_from(i).ok()?;
        if shift > 28 {
            return None;
        }
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value, i + 2));
        }
    }
    None
}

/// An HPACK string literal at the start of `bytes` (section 5.2): whether
/// it is Huffman-coded, its octets, and its whole length.
fn string(bytes: &[u8]) -> Option<(bool, &[u8], usize)> {
    let huffman = *bytes.first()? & 0x80 != 0;
    let (len, prefix) = integer(bytes, 7)?;
    let end = prefix.checked_add(len)?;
    Some((huffman, bytes.get(prefix..end)?, end))
}

/// A literal's name (index `index`, or the string after its first
/// `prefix` bytes when 0): whether it is `:authority`, and where its value
/// starts.
fn literal_name(rep: &[u8], index: usize, prefix: usize) -> Option<(bool, usize)> {
    if index != 0 {
        return Some((index == AUTHORITY_INDEX, prefix));
    }
    let (huffman, name, len) = string(&rep[prefix..])?;
    Some((!huffman && name == b":authority", prefix + len))
}

/// `block` without its `:authority` fields, or `None` when it has none, is
/// malformed, or one of them adds to a dynamic table that may keep it.
/// Follows the block's table size updates in `table_size`.
fn without_authority(block: &[u8], table_size: &mut usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len());
    let mut dropped = false;
    let mut pos = 0;
    while pos < block.len() {
        let rep = &block[pos..];
        let first = rep[0];
        let (len, authority) = if first & 0x80 != 0 {
            // Indexed field (section 6.1).
            let (index, len) = integer(rep, 7)?;
            (len, index == AUTHORITY_INDEX)
        } else if first & 0xc0 == 0x40 {
            // Literal with incremental indexing (6.2.1): it goes only into
            // a table of size 0, which keeps nothing.
            let (index, prefix) = integer(rep, 6)?;
            let (is_authority, value) = literal_name(rep, index, prefix)?;
            let (_, _, value_len) = string(&rep[value..])?;
            if is_authority && *table_size != 0 {
                return None;
            }
            (value + value_len, is_authority)
        } else if first & 0xe0 == 0x20 {
            // Dynamic table size update (6.3).
            let (size, len) = integer(rep, 5)?;
            *table_size = size;
            (len, false)
        } else {
            // Literal without indexing or never indexed (6.2.2, 6.2.3).
            let (index, prefix) = integer(rep, 4)?;
            let (is_authority, value) = literal_name(rep, index, prefix)?;
            let (_, _, value_len) = string(&rep[value..])?;
            (value + value_len, is_authority)
        };
        if authority {
            dropped = true;
        } else {
            out.extend_from_slice(&rep[..len]);
        }
        pos += len;
    }
    dropped.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn raw_string(s: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(s.len()).unwrap()];
        out.extend_from_slice(s);
        out
    }

    /// `:authority` as gRPC's C core sends it: literal with incremental
    /// indexing, the static table's name.
    fn authority_incremental(value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40 | 1];
        out.extend(raw_string(value));
        out
    }

    /// `:path` the same way (index 4), then `:method: POST` (indexed, 3)
    /// and `:scheme: http` (indexed, 6), then `te: trailers` as a literal
    /// without indexing with a new name.
    fn rest_of_request() -> (Vec<u8>, Vec<u8>) {
        let mut path = vec![0x40 | 4];
        path.extend(raw_string(b"/pkg.Service/Method"));
        let mut tail = vec![0x83, 0x86, 0x00];
        tail.extend(raw_string(b"te"));
        tail.extend(raw_string(b"trailers"));
        (path, tail)
    }

    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut filter = AuthorityFilter::default();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            filter.feed(piece);
            let mut buf = [0u8; 7];
            while filter.has_output() {
                let n = filter.take_output(&mut buf);
                out.extend_from_slice(&buf[..n]);
            }
        }
        filter.finish();
        let mut buf = vec![0u8; 1 << 16];
        while filter.has_output() {
            let n = filter.take_output(&mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn a_c_core_request_loses_its_authority_once_the_table_is_off() {
        let (path, tail) = rest_of_request();
        let block = [
            vec![0x20],
            path.clone(),
            authority_incremental(b"tmp%2Fx.sock"),
            tail.clone(),
        ]
        .concat();
        let data = frame(0x0, END_STREAM, 1, b"\0\0\0\0\x03abc");
        let input = [
            PREFACE.to_vec(),
            frame(HEADERS, END_HEADERS, 1, &block),
            data.clone(),
        ]
        .concat();
        let expected_block = [vec![0x20], path, tail].concat();
        let expected = [
            PREFACE.to_vec(),
            frame(HEADERS, END_HEADERS, 1, &expected_block),
            data,
        ]
        .concat();
        for chunk in [1, 3, 9, 1000] {
            assert_eq!(run(&input, chunk), expected, "fed {chunk} bytes at a time");
        }
    }

    #[test]
    fn an_indexing_authority_stays_while_the_table_may_keep_it() {
        let (path, tail) = rest_of_request();
        // No size update yet: the table is 4096 bytes and would keep it.
        let block = [path, authority_incremental(b"tmp%2Fx.sock"), tail].concat();
        let input = [PREFACE.to_vec(), frame(HEADERS, END_HEADERS, 1, &block)].concat();
        assert_eq!(run(&input, 5), input);
    }

    #[test]
    fn authorities_that_touch_no_table_always_go() {
        let (path, tail) = rest_of_request();
        let mut never_indexed = vec![0x10 | 1];
        never_indexed.extend(raw_string(b"/run/app.sock"));
        let mut literal_name = vec![0x00];
        literal_name.extend(raw_string(b":authority"));
        literal_name.extend(raw_string(b"localhost"));
        let indexed = vec![0x80 | 1];
        for authority in [never_indexed, literal_name, indexed] {
            let block = [path.clone(), authority, tail.clone()].concat();
            let input = frame(HEADERS, END_HEADERS | END_STREAM, 3, &block);
            let expected = frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                3,
                &[path.clone(), tail.clone()].concat(),
            );
            assert_eq!(
                run(&[PREFACE, &input[..]].concat(), 4),
                [PREFACE, &expected[..]].concat()
            );
        }
    }

    #[test]
    fn continuation_padding_and_priority() {
        let (path, tail) = rest_of_request();
        let block = [
            vec![0x20],
            path.clone(),
            authority_incremental(b"a%2Fb"),
            tail.clone(),
        ]
        .concat();
        // HEADERS with padding and priority, the block split mid-field.
        let mut payload = vec![3];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(&block[..5]);
        payload.extend_from_slice(&[0, 0, 0]);
        let input = [
            PREFACE.to_vec(),
            frame(HEADERS, PADDED | PRIORITY, 5, &payload),
            frame(CONTINUATION, 0, 5, &block[5..9]),
            frame(CONTINUATION, END_HEADERS, 5, &block[9..]),
        ]
        .concat();
        let mut expected_payload = vec![0, 0, 0, 0, 16];
        expected_payload.extend([vec![0x20], path, tail].concat());
        let expected = [
            PREFACE.to_vec(),
            frame(HEADERS, PRIORITY | END_HEADERS, 5, &expected_payload),
        ]
        .concat();
        assert_eq!(run(&input, 2), expected);
    }

    #[test]
    fn other_frames_and_odd_blocks_pass_unchanged() {
        let settings = frame(0x4, 0, 0, &[0, 1, 0, 0, 0, 0]);
        let big_data = frame(0x0, 0, 1, &vec![7u8; 40_000]);
        // A block without :authority, one cut short, one that is garbage.
        let plain = frame(HEADERS, END_HEADERS, 1, &[0x83, 0x86, 0x84]);
        let garbage = frame(HEADERS, END_HEADERS, 3, &[0x41, 0xff]);
        let input = [PREFACE.to_vec(), settings, big_data, plain, garbage].concat();
        assert_eq!(run(&input, 1000), input);
        // A HEADERS without its CONTINUATION at the end of the input.
        let cut = [PREFACE.to_vec(), frame(HEADERS, 0, 1, &[0x20, 0x81])].concat();
        assert_eq!(run(&cut, 3), cut);
    }

    #[test]
    fn a_long_block_is_split_into_continuations() {
        let (path, tail) = rest_of_request();
        let mut big = vec![0x00];
        big.extend(raw_string(b"x-big"));
        let value = vec![b'v'; 40_000];
        big.push(0x7f);
        let mut n = value.len() - 127;
        while n >= 128 {
            big.push(u8::try_from(n % 128).unwrap() | 0x80);
            n /= 128;
        }
        big.push(u8::try_from(n).unwrap());
        big.extend_from_slice(&value);
        let block = [
            vec![0x20],
            path.clone(),
            authority_incremental(b"h"),
            big.clone(),
            tail.clone(),
        ]
        .concat();
        let mut input = PREFACE.to_vec();
        let mut rest = &block[..];
        let mut first = true;
        while !rest.is_empty() {
            let n = rest.len().min(MAX_FRAME);
            let end = if n == rest.len() { END_HEADERS } else { 0 };
            input.extend(frame(
                if first { HEADERS } else { CONTINUATION },
                end,
                1,
                &rest[..n],
            ));
            rest = &rest[n..];
            first = false;
        }
        let out = run(&input, 4096);
        // Read the frames back: one block, every frame at most 16 KiB.
        let mut frames = &out[PREFACE_LEN..];
        let mut fragment = Vec::new();
        while !frames.is_empty() {
            let len = frame_len(frames);
            assert!(len <= MAX_FRAME);
            fragment.extend_from_slice(&frames[9..9 + len]);
            let last = frames[4] & END_HEADERS != 0;
            frames = &frames[9 + len..];
            assert_eq!(last, frames.is_empty());
        }
        assert_eq!(fragment, [vec![0x20], path, big, tail].concat());
    }

    #[test]
    fn integers() {
        assert_eq!(integer(&[0x0a], 5), Some((10, 1)));
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], 5), Some((1337, 3)));
        assert_eq!(integer(&[0x1f, 0x9a], 5), None);
        assert_eq!(
            integer(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 7),
            None
        );
    }
}
