//! A minimal `--flag value` parser for the example binaries (no external
//! dependency; the flags are few and fixed).

use std::collections::HashMap;

/// Parsed `--name value` pairs.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses `--name value` and `--name=value` pairs. `allowed` lists the
    /// accepted names (without `--`); anything else is an error naming the
    /// flag, as is a flag without a value.
    pub fn parse(args: impl IntoIterator<Item = String>, allowed: &[&str]) -> Result<Args, String> {
        let mut values = HashMap::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_owned(), v)
                }
            };
            if !allowed.contains(&name.as_str()) {
                return Err(format!(
                    "unknown flag --{name}; expected one of: {}",
                    allowed
                        .iter()
                        .map(|a| format!("--{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            values.insert(name, value);
        }
        Ok(Args { values })
    }

    /// The value of `--name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `--name` parsed as `T`, or `default` when absent.
    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: invalid value {v:?}")),
        }
    }

    /// The value of `--name` parsed as `T`; an error if absent.
    pub fn required<T: std::str::FromStr>(&self, name: &str) -> Result<T, String> {
        let v = self
            .get(name)
            .ok_or_else(|| format!("--{name} is required"))?;
        v.parse()
            .map_err(|_| format!("--{name}: invalid value {v:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(|s| s.to_string()), &["port", "host"])
    }

    #[test]
    fn flags() {
        let a = parse(&["--port", "1", "--host=h"]).unwrap();
        assert_eq!(a.required::<u16>("port").unwrap(), 1);
        assert_eq!(a.get("host"), Some("h"));
        assert!(parse(&["--nope", "1"]).unwrap_err().contains("--nope"));
        assert!(parse(&["--port"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["x"]).is_err());
        let a = parse(&[]).unwrap();
        assert!(a.required::<u16>("port").unwrap_err().contains("required"));
        assert_eq!(a.parse_or("port", 7u16).unwrap(), 7);
    }
}
