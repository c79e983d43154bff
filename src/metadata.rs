//! Call metadata: the (name, value) pairs a call carries besides its messages.
//!
//! Names are lower-case ASCII (`0-9 a-z _ - .`). A name ending in `-bin`
//! carries a binary value, base64-encoded on the wire (sent without padding,
//! accepted with or without); every other value is printable ASCII. Names the
//! protocol itself uses (pseudo-headers, `content-type`, `te`, `grpc-*`, and
//! HTTP/2's forbidden connection headers) are reserved: they never appear as
//! user metadata and cannot be sent as such. Two `grpc-` names of gRFC A6
//! are the exception: a retried call's `grpc-previous-rpc-attempts`, which
//! handlers may read, and the `grpc-retry-pushback-ms` a server may set in
//! its trailers.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// base64 (standard alphabet) that writes no padding and reads either form.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes a binary metadata value for the wire (unpadded base64).
pub(crate) fn encode_binary(value: &[u8]) -> String {
    BASE64.encode(value)
}

/// Decodes a binary metadata value from the wire (padded or unpadded base64).
pub(crate) fn decode_binary(value: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    BASE64.decode(value.trim_ascii())
}

/// One metadata value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum MetadataValue {
    /// A printable-ASCII value (names not ending in `-bin`).
    Ascii(String),
    /// A binary value (names ending in `-bin`).
    Binary(Vec<u8>),
}

impl MetadataValue {
    /// The value as text, if it is an ASCII value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::Ascii(s) => Some(s),
            MetadataValue::Binary(_) => None,
        }
    }

    /// The value's bytes: the text of an ASCII value, or the decoded bytes of
    /// a binary one.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            MetadataValue::Ascii(s) => s.as_bytes(),
            MetadataValue::Binary(b) => b,
        }
    }
}

impl fmt::Debug for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataValue::Ascii(s) => fmt::Debug::fmt(s, f),
            MetadataValue::Binary(b) => write!(f, "bin{:?}", b),
        }
    }
}

/// Why a metadata pair was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The name is empty or has characters outside `0-9 a-z _ - .`.
    #[error("invalid metadata name {0:?}: use lower-case letters, digits, '_', '-' and '.'")]
    InvalidName(String),
    /// The name is used by the protocol itself.
    #[error("metadata name {0:?} is reserved by gRPC/HTTP/2 and cannot be set as metadata")]
    Reserved(String),
    /// An ASCII value has characters outside printable ASCII.
    #[error("invalid value for metadata {name:?}: ASCII values must be printable ASCII (use a name ending in \"-bin\" for binary data)")]
    InvalidValue {
        /// The name the value was for.
        name: String,
    },
    /// A binary value was given for a name without the `-bin` suffix, or text
    /// for a name with it.
    #[error("metadata {name:?}: binary values need a name ending in \"-bin\", and only they")]
    BinarySuffix {
        /// The offending name.
        name: String,
    },
}

/// The `grpc-` names applications read and write as metadata (gRFC A6):
/// the attempt count a retried call carries, which handlers may read, and
/// the pushback a server sets in its trailers.
const APPLICATION_GRPC_NAMES: [&str; 2] = ["grpc-previous-rpc-attempts", "grpc-retry-pushback-ms"];

/// Whether `name` (lower-case) is reserved by the protocol.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with("grpc-") && !APPLICATION_GRPC_NAMES.contains(&name)
        || matches!(
            name,
            "content-type"
                | "te"
                | "content-length"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "host"
        )
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'-' | b'.'))
}

fn valid_ascii_value(value: &str) -> bool {
    value.bytes().all(|b| (0x20..=0x7E).contains(&b))
}

/// An ordered list of metadata pairs; a name may appear more than once.
///
/// ```
/// use grpc_blocking::Metadata;
/// let mut md = Metadata::new();
/// md.insert("x-request-id", "42").unwrap();
/// md.insert_bin("x-trace-bin", &[0, 1, 2]).unwrap();
/// assert_eq!(md.get("x-request-id"), Some("42"));
/// assert_eq!(md.get_bin("x-trace-bin"), Some(&[0u8, 1, 2][..]));
/// assert!(md.insert("grpc-status", "0").is_err()); // reserved
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, MetadataValue)>,
}

impl Metadata {
    /// An empty list.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Builds metadata from (name, value) pairs, as grpcio's `metadata=`
    /// argument does. A name ending in `-bin` takes the value's bytes as its
    /// binary value.
    pub fn from_pairs<'a, I>(pairs: I) -> Result<Metadata, MetadataError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut md = Metadata::new();
        for (name, value) in pairs {
            if name.ends_with("-bin") {
                md.insert_bin(name, value.as_bytes())?;
            } else {
                md.insert(name, value)?;
            }
        }
        Ok(md)
    }

    fn check_name(name: &str) -> Result<String, MetadataError> {
        let name = name.to_ascii_lowercase();
        if is_reserved(&name) {
            return Err(MetadataError::Reserved(name));
        }
        if !valid_name(&name) {
            return Err(MetadataError::InvalidName(name));
        }
        Ok(name)
    }

    /// Appends an ASCII pair. The name is lower-cased.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), MetadataError> {
        let name = Self::check_name(name)?;
        if name.ends_with("-bin") {
            return Err(MetadataError::BinarySuffix { name });
        }
        if !valid_ascii_value(value) {
            return Err(MetadataError::InvalidValue { name });
        }
        self.entries
            .push((name, MetadataValue::Ascii(value.to_owned())));
        Ok(())
    }

    /// Appends a binary pair; the name must end in `-bin`.
    pub fn insert_bin(&mut self, name: &str, value: &[u8]) -> Result<(), MetadataError> {
        let name = Self::check_name(name)?;
        if !name.ends_with("-bin") {
            return Err(MetadataError::BinarySuffix { name });
        }
        self.entries
            .push((name, MetadataValue::Binary(value.to_vec())));
        Ok(())
    }

    /// The first ASCII value for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).find_map(MetadataValue::as_str)
    }

    /// The first binary value for `name`.
    pub fn get_bin(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).find_map(|v| match v {
            MetadataValue::Binary(b) => Some(b.as_slice()),
            MetadataValue::Ascii(_) => None,
        })
    }

    /// Every value for `name`, in order.
    pub fn get_all<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a MetadataValue> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Removes every value for `name`; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before - self.entries.len()
    }

    /// All pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends all of `other`'s pairs.
    pub fn extend(&mut self, other: Metadata) {
        self.entries.extend(other.entries);
    }

    /// Writes the pairs as HTTP/2 headers (binary values base64-encoded).
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.entries {
            // Names and values were validated on insert; a failure here
            // cannot happen, and skipping is the safe answer if it did.
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let value = match value {
                MetadataValue::Ascii(s) => HeaderValue::from_str(s),
                MetadataValue::Binary(b) => HeaderValue::from_str(&encode_binary(b)),
            };
            if let Ok(value) = value {
                headers.append(name, value);
            }
        }
    }

    /// Reads the user metadata out of HTTP/2 headers, leaving out reserved
    /// names. Binary values that are not valid base64 and ASCII values that
    /// are not printable are dropped (logged), not fatal: the call goes on.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Metadata {
        let mut md = Metadata::new();
        for (name, value) in headers {
            let name = name.as_str();
            if is_reserved(name) {
                continue;
            }
            let value = if name.ends_with("-bin") {
                // Several values may have been joined with commas.
                for part in value.as_bytes().split(|&b| b == b',') {
                    match decode_binary(part) {
                        Ok(bytes) => md
                            .entries
                            .push((name.to_owned(), MetadataValue::Binary(bytes))),
                        Err(e) => {
                            log::debug!("dropping metadata {name}: invalid base64: {e}")
                        }
                    }
                }
                continue;
            } else {
                match value.to_str() {
                    Ok(s) if valid_ascii_value(s) => MetadataValue::Ascii(s.to_owned()),
                    _ => {
                        log::debug!("dropping metadata {name}: value is not printable ASCII");
                        continue;
                    }
                }
            };
            md.entries.push((name.to_owned(), value));
        }
        md
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl IntoIterator for Metadata {
    type Item = (String, MetadataValue);
    type IntoIter = std::vec::IntoIter<(String, MetadataValue)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values_accept_padded_and_unpadded_base64() {
        assert_eq!(encode_binary(b"\x00\x01"), "AAE");
        assert_eq!(decode_binary(b"AAE").unwrap(), b"\x00\x01");
        assert_eq!(decode_binary(b"AAE=").unwrap(), b"\x00\x01");
        assert!(decode_binary(b"!!").is_err());
    }

    #[test]
    fn names_are_checked_and_lower_cased() {
        let mut md = Metadata::new();
        md.insert("X-Custom", "v").unwrap();
        assert_eq!(md.iter().next().unwrap().0, "x-custom");
        assert_eq!(
            md.insert("bad name", "v"),
            Err(MetadataError::InvalidName("bad name".into()))
        );
        assert!(md.insert("", "v").is_err());
        for reserved in [
            ":path",
            "content-type",
            "te",
            "grpc-status",
            "grpc-timeout",
            "connection",
        ] {
            assert_eq!(
                md.insert(reserved, "v"),
                Err(MetadataError::Reserved(reserved.into()))
            );
        }
        assert!(md.insert("x", "line\nbreak").is_err());
        assert!(md.insert("x-bin", "text").is_err());
        assert!(md.insert_bin("x", b"bytes").is_err());
    }

    #[test]
    fn headers_round_trip_and_reserved_names_are_filtered() {
        let md = Metadata::from_pairs([("a", "1"), ("a", "2"), ("b-bin", "\u{1}\u{2}")]).unwrap();
        let mut headers = HeaderMap::new();
        md.write_headers(&mut headers);
        assert_eq!(headers.get("b-bin").unwrap(), "AQI");
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        let back = Metadata::from_headers(&headers);
        assert_eq!(back, md);
        assert_eq!(back.get_all("a").count(), 2);
        assert_eq!(back.get_bin("b-bin"), Some(&[1u8, 2][..]));
    }

    #[test]
    fn invalid_received_values_are_dropped_not_fatal() {
        let mut headers = HeaderMap::new();
        headers.insert("x-bin", HeaderValue::from_static("***"));
        headers.insert("ok", HeaderValue::from_static("fine"));
        let md = Metadata::from_headers(&headers);
        assert_eq!(md.len(), 1);
        assert_eq!(md.get("ok"), Some("fine"));
    }

    #[test]
    fn comma_joined_binary_values_split() {
        let mut headers = HeaderMap::new();
        headers.insert("x-bin", HeaderValue::from_static("AQI,AwQ="));
        let md = Metadata::from_headers(&headers);
        let all: Vec<_> = md.get_all("x-bin").map(|v| v.as_bytes().to_vec()).collect();
        assert_eq!(all, vec![vec![1, 2], vec![3, 4]]);
    }
}
