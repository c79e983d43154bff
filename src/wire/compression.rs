//! Per-message compression.
//!
//! Implements the message compression of grpc/grpc `doc/compression.md` and
//! `doc/PROTOCOL-HTTP2.md`: the `grpc-encoding` header names the algorithm a
//! sender used for messages whose compressed-flag is 1, and
//! `grpc-accept-encoding` lists the algorithms a peer can decode.
//!
//! Supported encodings and their exact formats (as in gRPC C-core):
//!
//! * `identity` — no compression;
//! * `gzip` — the gzip file format of RFC 1952 (a single member);
//! * `deflate` — despite its name, the **zlib** format of RFC 1950 (zlib
//!   header, raw deflate data, Adler-32 trailer), not raw RFC 1951 deflate.
//!
//! [`decompress`] bounds its output: it stops as soon as the decompressed size
//! would exceed the caller's limit, so a small "zip bomb" message cannot make
//! it allocate much more than that limit.

use std::fmt;
use std::io::{self, Read, Write};

use flate2::Compression;

/// A message compression algorithm, as named in `grpc-encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// No compression (`identity`).
    #[default]
    Identity,
    /// RFC 1952 gzip (`gzip`).
    Gzip,
    /// RFC 1950 zlib, which gRPC calls `deflate`.
    Deflate,
}

impl Encoding {
    /// Every supported encoding.
    pub const ALL: [Encoding; 3] = [Encoding::Identity, Encoding::Gzip, Encoding::Deflate];

    /// The header name of the encoding: `"identity"`, `"gzip"` or `"deflate"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }

    /// Parses an encoding name, ignoring ASCII case and surrounding whitespace.
    /// Returns `None` for names this crate does not support.
    #[must_use]
    pub fn parse(name: &str) -> Option<Encoding> {
        let name = name.trim();
        Encoding::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a `grpc-accept-encoding` value such as `"gzip, deflate,identity"`:
/// the supported encodings in the order listed, unknown names skipped,
/// duplicates removed.
#[must_use]
pub fn parse_accept_encoding(value: &str) -> Vec<Encoding> {
    let mut out = Vec::with_capacity(Encoding::ALL.len());
    for encoding in value.split(',').filter_map(Encoding::parse) {
        if !out.contains(&encoding) {
            out.push(encoding);
        }
    }
    out
}

/// The compression a server answers a request in: the request's own, when
/// the client accepts it (or said nothing of what it accepts), else none.
pub(crate) fn response_encoding(request: Encoding, accepted: &[Encoding]) -> Encoding {
    if request != Encoding::Identity && (accepted.is_empty() || accepted.contains(&request)) {
        request
    } else {
        Encoding::Identity
    }
}

/// The `grpc-accept-encoding` value advertising every supported encoding, in
/// the order gRPC C-core sends it.
pub const ACCEPT_ENCODING: &str = "identity,deflate,gzip";

/// Why a compressed message could not be decompressed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// The decompressed message would be larger than the allowed maximum.
    #[error(
        "decompressed message larger than max (more than {limit} bytes); \
         raise the maximum message size if such messages are expected"
    )]
    TooLarge {
        /// The maximum decompressed size that was in force, in bytes.
        limit: usize,
    },
    /// The data is not a valid stream of the given encoding.
    #[error("corrupt {encoding}-compressed message: {reason}")]
    Corrupt {
        /// The encoding the data was decoded with.
        encoding: Encoding,
        /// What was wrong with it.
        reason: String,
    },
    /// Decompression was asked for with [`Encoding::Identity`].
    #[error(
        "message has the compressed flag set but grpc-encoding is identity \
         (or absent): the sender must name its compression algorithm in grpc-encoding"
    )]
    Identity,
}

/// Compresses `data` with `encoding` at the default level, appending the
/// result to `out`. [`Encoding::Identity`] appends `data` unchanged.
///
/// # Errors
///
/// Only errors of the compressor itself; writing into a `Vec` cannot fail.
pub fn compress(encoding: Encoding, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    match encoding {
        Encoding::Identity => {
            out.extend_from_slice(data);
            Ok(())
        }
        Encoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, Compression::default());
            enc.write_all(data)?;
            enc.finish().map(drop)
        }
        Encoding::Deflate => {
            let mut enc = flate2::write::ZlibEncoder::new(out, Compression::default());
            enc.write_all(data)?;
            enc.finish().map(drop)
        }
    }
}

/// Decompresses one message compressed with `encoding`.
///
/// Output is read through a cap of `limit + 1` bytes, so memory stays bounded
/// by about `limit` whatever the compression ratio.
///
/// # Errors
///
/// * [`DecompressError::TooLarge`] as soon as the output would exceed `limit`
///   bytes (an output of exactly `limit` bytes is fine);
/// * [`DecompressError::Corrupt`] for invalid, truncated or checksum-failing
///   data, and for bytes after the end of the compressed stream (including a
///   second gzip member);
/// * [`DecompressError::Identity`] if `encoding` is [`Encoding::Identity`]:
///   a message flagged compressed needs a real encoding.
pub fn decompress(
    encoding: Encoding,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    match encoding {
        Encoding::Identity => Err(DecompressError::Identity),
        Encoding::Gzip => {
            let mut decoder = flate2::bufread::GzDecoder::new(data);
            let out = read_bounded(&mut decoder, encoding, limit)?;
            check_no_trailing(decoder.into_inner(), encoding)?;
            Ok(out)
        }
        Encoding::Deflate => {
            let mut decoder = flate2::bufread::ZlibDecoder::new(data);
            let out = read_bounded(&mut decoder, encoding, limit)?;
            check_no_trailing(decoder.into_inner(), encoding)?;
            Ok(out)
        }
    }
}

/// Reads `reader` to its end, failing once more than `limit` bytes come out.
fn read_bounded<R: Read>(
    reader: &mut R,
    encoding: Encoding,
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|err| corrupt(encoding, &err))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

/// Rejects input left over after the compressed stream ended.
fn check_no_trailing(rest: &[u8], encoding: Encoding) -> Result<(), DecompressError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecompressError::Corrupt {
            encoding,
            reason: format!(
                "{} unexpected byte(s) after the end of the compressed stream",
                rest.len()
            ),
        })
    }
}

/// Maps a decoder I/O error to [`DecompressError::Corrupt`].
fn corrupt(encoding: Encoding, err: &io::Error) -> DecompressError {
    let reason = if err.kind() == io::ErrorKind::UnexpectedEof {
        format!("data ends before the end of the compressed stream ({err})")
    } else {
        err.to_string()
    };
    DecompressError::Corrupt { encoding, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPRESSING: [Encoding; 2] = [Encoding::Gzip, Encoding::Deflate];

    fn compressed(encoding: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress(encoding, data, &mut out).unwrap();
        out
    }

    #[test]
    fn names() {
        for e in Encoding::ALL {
            assert_eq!(Encoding::parse(e.as_str()), Some(e));
            assert_eq!(e.to_string(), e.as_str());
        }
        assert_eq!(Encoding::Deflate.as_str(), "deflate");
        assert_eq!(Encoding::parse(" GZip\t"), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse("IDENTITY"), Some(Encoding::Identity));
        assert_eq!(Encoding::parse("snappy"), None);
        assert_eq!(Encoding::parse(""), None);
        assert_eq!(Encoding::parse("gzi"), None);
        assert_eq!(Encoding::parse("gzip2"), None);
        assert_eq!(Encoding::default(), Encoding::Identity);
    }

    #[test]
    fn accept_encoding_parsing() {
        assert_eq!(
            parse_accept_encoding("gzip, deflate,identity"),
            vec![Encoding::Gzip, Encoding::Deflate, Encoding::Identity]
        );
        assert_eq!(
            parse_accept_encoding(" snappy , gzip,,br,GZIP, deflate "),
            vec![Encoding::Gzip, Encoding::Deflate]
        );
        assert_eq!(parse_accept_encoding(""), vec![]);
        assert_eq!(parse_accept_encoding(" , ,"), vec![]);
        assert_eq!(
            parse_accept_encoding(ACCEPT_ENCODING),
            vec![Encoding::Identity, Encoding::Deflate, Encoding::Gzip]
        );
    }

    #[test]
    fn round_trip_each_encoding() {
        let inputs: [&[u8]; 4] = [b"", b"x", b"hello hello hello hello hello", &[0xAB; 70_000]];
        for e in COMPRESSING {
            for input in inputs {
                let c = compressed(e, input);
                assert!(!c.is_empty(), "{e} output of empty input has framing");
                assert_eq!(decompress(e, &c, input.len()).unwrap(), input, "{e}");
            }
        }
        for input in inputs {
            assert_eq!(compressed(Encoding::Identity, input), input);
        }
    }

    #[test]
    fn compress_appends() {
        for e in Encoding::ALL {
            let mut out = b"prefix".to_vec();
            compress(e, b"data", &mut out).unwrap();
            assert!(out.starts_with(b"prefix"));
            if e != Encoding::Identity {
                assert_eq!(decompress(e, &out[6..], 100).unwrap(), b"data");
            }
        }
    }

    #[test]
    fn wire_formats() {
        // gzip: RFC 1952 magic.
        let g = compressed(Encoding::Gzip, b"abc");
        assert_eq!(&g[..3], &[0x1f, 0x8b, 0x08]);
        // "deflate" is zlib: CMF 0x78 and (CMF*256 + FLG) % 31 == 0.
        let z = compressed(Encoding::Deflate, b"abc");
        assert_eq!(z[0], 0x78);
        assert_eq!((u16::from(z[0]) * 256 + u16::from(z[1])) % 31, 0);
        // Known zlib stream of "abc" from another implementation
        // (Python's zlib.compress(b"abc")).
        let known = [
            0x78, 0x9c, 0x4b, 0x4c, 0x4a, 0x06, 0x00, 0x02, 0x4d, 0x01, 0x27,
        ];
        assert_eq!(decompress(Encoding::Deflate, &known, 3).unwrap(), b"abc");
    }

    #[test]
    fn corrupt_data_errors() {
        for e in COMPRESSING {
            let good = compressed(e, b"some message some message some message");
            let mut cases: Vec<Vec<u8>> = vec![
                b"garbage data".to_vec(),
                Vec::new(),
                good[..1].to_vec(),
                good[..good.len() - 1].to_vec(),
            ];
            let mut flipped = good.clone();
            let n = flipped.len();
            flipped[n - 5] ^= 0x01; // checksum area
            cases.push(flipped);
            for case in cases {
                let err = decompress(e, &case, 1 << 20).unwrap_err();
                match &err {
                    DecompressError::Corrupt { encoding, reason } => {
                        assert_eq!(*encoding, e);
                        assert!(!reason.is_empty());
                    }
                    other => panic!("{e}: expected Corrupt, got {other:?}"),
                }
                assert!(
                    err.to_string().starts_with(&format!("corrupt {e}-")),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn trailing_garbage_is_corrupt() {
        for e in COMPRESSING {
            let mut data = compressed(e, b"payload");
            data.extend_from_slice(b"junk");
            let err = decompress(e, &data, 100).unwrap_err();
            assert!(
                matches!(&err, DecompressError::Corrupt { reason, .. } if reason.contains("4 unexpected")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn second_gzip_member_is_corrupt() {
        let mut data = compressed(Encoding::Gzip, b"one");
        data.extend_from_slice(&compressed(Encoding::Gzip, b"two"));
        assert!(matches!(
            decompress(Encoding::Gzip, &data, 100),
            Err(DecompressError::Corrupt { .. })
        ));
    }

    #[test]
    fn zip_bomb_is_too_large() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        for e in COMPRESSING {
            let c = compressed(e, &zeros);
            assert!(c.len() < 100 * 1024, "{e}: {}", c.len());
            let err = decompress(e, &c, 1 << 20).unwrap_err();
            assert!(
                matches!(err, DecompressError::TooLarge { limit } if limit == 1 << 20),
                "{err:?}"
            );
            assert!(err.to_string().contains("1048576"), "{err}");
        }
    }

    #[test]
    fn exactly_limit_is_ok_one_more_is_not() {
        let data = vec![7u8; 4096];
        for e in COMPRESSING {
            let c = compressed(e, &data);
            assert_eq!(decompress(e, &c, 4096).unwrap(), data);
            assert!(matches!(
                decompress(e, &c, 4095),
                Err(DecompressError::TooLarge { limit: 4095 })
            ));
            let empty = compressed(e, b"");
            assert_eq!(decompress(e, &empty, 0).unwrap(), b"");
            assert!(matches!(
                decompress(e, &c, 0),
                Err(DecompressError::TooLarge { limit: 0 })
            ));
        }
    }

    #[test]
    fn huge_limit_does_not_overflow() {
        for e in COMPRESSING {
            let c = compressed(e, b"abc");
            assert_eq!(decompress(e, &c, usize::MAX).unwrap(), b"abc");
        }
    }

    #[test]
    fn decompress_identity_error() {
        let err = decompress(Encoding::Identity, b"abc", 100).unwrap_err();
        assert!(matches!(err, DecompressError::Identity));
        let msg = err.to_string();
        assert!(
            msg.contains("compressed flag set but grpc-encoding is identity"),
            "{msg}"
        );
    }

    #[test]
    fn mangled_streams_never_panic() {
        let mut state: u32 = 0xDEAD_BEEF;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for e in COMPRESSING {
            let good = compressed(e, b"the quick brown fox jumps over the lazy dog");
            for _ in 0..500 {
                let mut data = good.clone();
                let idx = next() as usize % data.len();
                data[idx] ^= (next() % 255 + 1) as u8;
                let cut = next() as usize % (data.len() + 1);
                data.truncate(cut);
                let _ = decompress(e, &data, (next() % 64) as usize);
            }
        }
    }
}
