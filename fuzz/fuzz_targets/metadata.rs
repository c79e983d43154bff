//! The public `grpc_blocking::Metadata` API with arbitrary names and values,
//! checked against a model list.
//!
//! Invariants: nothing panics; `insert`/`insert_bin` accept exactly the names
//! and values the documented rules allow (lower-cased name of `0-9 a-z _ - .`,
//! not reserved, `-bin` suffix iff binary, printable-ASCII text values); the
//! list then matches the model for `len`, `iter`, `get`, `get_bin`, `get_all`,
//! `remove`, `from_pairs`, `extend` and `clone`.
//!
//! The wire decoding (`Metadata::from_headers`, base64 `decode_binary`) is
//! crate-private; the `metadata_wire` target reaches it through a real call.
#![no_main]

use arbitrary::Arbitrary;
use grpc_blocking::{Metadata, MetadataError, MetadataValue};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Insert(String, String),
    InsertBin(String, Vec<u8>),
    /// A name that is likely valid, to get past validation often.
    InsertSimple(u8, String),
    InsertBinSimple(u8, Vec<u8>),
    Get(String),
    Remove(String),
    FromPairs(Vec<(String, String)>),
    Extend(Vec<(u8, String)>),
    CloneEq,
}

const RESERVED: [&str; 9] = [
    "content-type",
    "te",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The documented rules: `Ok(lower-cased name)` when `name` may carry a
/// value of that kind.
fn rule(name: &str, binary: bool) -> Result<String, &'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(':') || lower.starts_with("grpc-") || RESERVED.contains(&lower.as_str()) {
        return Err("reserved");
    }
    if lower.is_empty()
        || !lower
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'-' | b'.'))
    {
        return Err("invalid name");
    }
    if lower.ends_with("-bin") != binary {
        return Err("suffix");
    }
    Ok(lower)
}

fn simple_name(n: u8, binary: bool) -> String {
    let base = ["x-a", "X-B", "trace", "a.b_c", "grpc-x", "te", "x-bin-y"][usize::from(n % 7)];
    if binary {
        format!("{base}-bin")
    } else {
        base.to_owned()
    }
}

fn check_same(md: &Metadata, model: &[(String, MetadataValue)]) {
    assert_eq!(md.len(), model.len());
    assert_eq!(md.is_empty(), model.is_empty());
    let listed: Vec<(String, MetadataValue)> =
        md.iter().map(|(n, v)| (n.to_owned(), v.clone())).collect();
    assert_eq!(listed, model);
    let _ = format!("{md:?}");
}

fn insert(
    md: &mut Metadata,
    model: &mut Vec<(String, MetadataValue)>,
    name: &str,
    value: MetadataValue,
) {
    let binary = matches!(value, MetadataValue::Binary(_));
    let want = rule(name, binary).and_then(|n| match &value {
        MetadataValue::Ascii(s) if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) => {
            Err("invalid value")
        }
        _ => Ok(n),
    });
    let got = match &value {
        MetadataValue::Ascii(s) => md.insert(name, s),
        MetadataValue::Binary(b) => md.insert_bin(name, b),
    };
    match (want, got) {
        (Ok(lower), Ok(())) => {
            // The value comes back: last of the name's values.
            assert_eq!(md.get_all(name).last(), Some(&value));
            assert_eq!(md.get_all(&lower).last(), Some(&value));
            model.push((lower, value));
        }
        (Err(why), Err(e)) => {
            let kind_ok = match e {
                MetadataError::Reserved(_) => why == "reserved",
                MetadataError::InvalidName(_) => why == "invalid name",
                MetadataError::BinarySuffix { .. } => why == "suffix",
                MetadataError::InvalidValue { .. } => why == "invalid value",
                _ => false,
            };
            // The checks run in the documented order (reserved, name,
            // suffix, value), so the first rule broken is the one reported.
            assert!(kind_ok, "{name:?}: error {e:?} but the rules say {why}");
            let _ = e.to_string();
        }
        (want, got) => panic!("insert {name:?} {value:?}: got {got:?}, rules say {want:?}"),
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut md = Metadata::new();
    let mut model: Vec<(String, MetadataValue)> = Vec::new();
    for op in ops {
        match op {
            Op::Insert(n, v) => insert(&mut md, &mut model, &n, MetadataValue::Ascii(v)),
            Op::InsertBin(n, v) => insert(&mut md, &mut model, &n, MetadataValue::Binary(v)),
            Op::InsertSimple(n, v) => insert(
                &mut md,
                &mut model,
                &simple_name(n, false),
                MetadataValue::Ascii(v),
            ),
            Op::InsertBinSimple(n, v) => insert(
                &mut md,
                &mut model,
                &simple_name(n, true),
                MetadataValue::Binary(v),
            ),
            Op::Get(n) => {
                let all: Vec<&MetadataValue> = model
                    .iter()
                    .filter(|(m, _)| m.eq_ignore_ascii_case(&n))
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(md.get_all(&n).collect::<Vec<_>>(), all);
                assert_eq!(md.get(&n), all.iter().find_map(|v| v.as_str()));
                let bin = all.iter().find_map(|v| match v {
                    MetadataValue::Binary(b) => Some(b.as_slice()),
                    MetadataValue::Ascii(_) => None,
                });
                assert_eq!(md.get_bin(&n), bin);
            }
            Op::Remove(n) => {
                let before = model.len();
                model.retain(|(m, _)| !m.eq_ignore_ascii_case(&n));
                assert_eq!(md.remove(&n), before - model.len());
            }
            Op::FromPairs(pairs) => {
                let mut other = Metadata::new();
                let mut other_model = Vec::new();
                let mut ok = true;
                for (n, v) in &pairs {
                    let value = if n.ends_with("-bin") {
                        MetadataValue::Binary(v.as_bytes().to_vec())
                    } else {
                        MetadataValue::Ascii(v.clone())
                    };
                    let before = other_model.len();
                    insert(&mut other, &mut other_model, n, value);
                    if other_model.len() == before {
                        ok = false;
                        break;
                    }
                }
                let built =
                    Metadata::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                assert_eq!(built.is_ok(), ok, "from_pairs {pairs:?}");
                if let Ok(built) = built {
                    assert_eq!(built, other);
                    md.extend(built);
                    model.extend(other_model);
                }
            }
            Op::Extend(pairs) => {
                let mut other = Metadata::new();
                let mut other_model = Vec::new();
                for (n, v) in pairs {
                    insert(
                        &mut other,
                        &mut other_model,
                        &simple_name(n, false),
                        MetadataValue::Ascii(v),
                    );
                }
                md.extend(other);
                model.extend(other_model);
            }
            Op::CloneEq => {
                let copy = md.clone();
                assert_eq!(copy, md);
                let pairs: Vec<_> = copy.into_iter().collect();
                assert_eq!(pairs, model);
            }
        }
        check_same(&md, &model);
    }
});
