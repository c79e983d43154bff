//! The service config: the JSON a service owner publishes to tell clients
//! how to call the service (grpc/grpc `doc/service_config.md`, the schema in
//! grpc-proto `grpc/service_config/service_config.proto`, retries and hedging
//! in gRFC A6).
//!
//! This module only reads and checks the JSON into plain values; it opens no
//! connection and knows nothing of a channel. Unknown fields are ignored, as
//! the spec asks (a newer config must still load in an older client), and a
//! JSON `null` counts as an absent field, as in proto3 JSON. A config that
//! breaks a rule is refused whole, with the path of the offending field in
//! the error.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Number, Value};

use crate::code::Code;

/// The highest `maxAttempts` honoured; larger values are treated as this
/// (A6, "Limits on Retries and Hedges").
const MAX_ATTEMPTS_CAP: u32 = 5;

/// The largest number of seconds a proto3 `Duration` holds (ten thousand
/// years, `google/protobuf/duration.proto`).
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;

/// The upper bound of `retryThrottling.maxTokens` (A6, "Validation of
/// retryThrottling").
const MAX_TOKENS_LIMIT: i128 = 1000;

/// Why a service config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceConfigError {
    /// The text is not JSON.
    #[error("service config is not valid JSON: {0}")]
    Syntax(String),
    /// The JSON is not an object.
    #[error("service config must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A field is missing, has the wrong type, or breaks a rule of the spec.
    #[error("{field}: {reason}")]
    Invalid {
        /// The path of the field, e.g. `methodConfig[0].retryPolicy.maxAttempts`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ServiceConfigError {
    /// The path of the offending field, when one field is to blame.
    pub fn field(&self) -> Option<&str> {
        match self {
            ServiceConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The load-balancing policies this client supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoadBalancingPolicy {
    /// `pick_first`: one connection, to the first address that answers.
    PickFirst,
    /// `round_robin`: calls spread over a connection to every address.
    RoundRobin,
}

impl LoadBalancingPolicy {
    /// The policy's name in a service config, e.g. `"round_robin"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancingPolicy::PickFirst => "pick_first",
            LoadBalancingPolicy::RoundRobin => "round_robin",
        }
    }

    fn from_name(name: &str) -> Option<LoadBalancingPolicy> {
        match name {
            "pick_first" => Some(LoadBalancingPolicy::PickFirst),
            "round_robin" => Some(LoadBalancingPolicy::RoundRobin),
            _ => None,
        }
    }
}

/// The retry policy of a method (A6, "Retry Policy").
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included: at least 2, and at most 5
    /// (a larger configured value is lowered to 5, as A6 asks).
    pub max_attempts: u32,
    /// The delay before the first retry, before jitter; greater than zero.
    pub initial_backoff: Duration,
    /// The cap of the growing delay, before jitter; greater than zero.
    pub max_backoff: Duration,
    /// The growth of the delay per retry; greater than zero.
    pub backoff_multiplier: f64,
    /// The statuses that may be retried: not empty, each code once, in the
    /// order given.
    pub retryable_status_codes: Vec<Code>,
}

impl RetryPolicy {
    /// Whether a call that ended with `code` may be retried.
    pub fn is_retryable(&self, code: Code) -> bool {
        self.retryable_status_codes.contains(&code)
    }
}

/// The hedging policy of a method (A6, "Hedging Policy"): copies of the call
/// sent `hedging_delay` apart without waiting for a failure.
///
/// It is parsed and validated, so that a service config written for other
/// gRPC libraries is accepted (or refused, naming the field), but hedging is
/// not implemented: a call under a hedging policy is sent once, as without a
/// policy.
#[derive(Clone, Debug, PartialEq)]
pub struct HedgingPolicy {
    /// Copies in all, the first one included: at least 2, and at most 5
    /// (a larger configured value is lowered to 5).
    pub max_attempts: u32,
    /// The time between two copies; zero (also when not given) sends them
    /// all at once.
    pub hedging_delay: Duration,
    /// The statuses after which the other copies go on; may be empty (then
    /// any failure ends the call). Each code once, in the order given.
    pub non_fatal_status_codes: Vec<Code>,
}

impl HedgingPolicy {
    /// Whether a copy that ended with `code` lets the others go on.
    pub fn is_non_fatal(&self, code: Code) -> bool {
        self.non_fatal_status_codes.contains(&code)
    }
}

/// The settings of the methods one `methodConfig` entry names. Every field
/// is optional: `None` means the service config says nothing of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MethodConfig {
    /// The default timeout of a call (the earlier of it and the caller's
    /// own deadline applies).
    pub timeout: Option<Duration>,
    /// Whether a call waits for a connection instead of failing at once
    /// while the channel cannot connect.
    pub wait_for_ready: Option<bool>,
    /// The largest request message, in bytes (0 allows only empty ones).
    pub max_request_message_bytes: Option<u32>,
    /// The largest response message, in bytes (0 allows only empty ones).
    pub max_response_message_bytes: Option<u32>,
    /// How failed calls are retried. Never set together with
    /// [`hedging_policy`](MethodConfig::hedging_policy).
    pub retry_policy: Option<RetryPolicy>,
    /// How calls would be hedged (not applied: see [`HedgingPolicy`]).
    /// Never set together with [`retry_policy`](MethodConfig::retry_policy).
    pub hedging_policy: Option<HedgingPolicy>,
}

/// The `retryThrottling` settings of a service config (A6, "Throttling Retry
/// Attempts and Hedged RPCs"): the channel applies them to every call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryThrottling {
    /// The tokens the bucket holds when full, and starts with: 1 to 1000.
    pub max_tokens: u32,
    /// The tokens a successful call gives back: greater than zero, with
    /// digits past the third decimal place dropped (0.5466 reads as 0.546).
    pub token_ratio: f64,
}

/// A parsed and checked service config.
///
/// ```
/// use std::time::Duration;
/// use grpc_blocking::client::{LoadBalancingPolicy, ServiceConfig};
/// use grpc_blocking::Code;
///
/// let config = ServiceConfig::from_json(r#"{
///     "loadBalancingConfig": [{"round_robin": {}}],
///     "methodConfig": [{
///         "name": [{"service": "demo.Greeter"}],
///         "timeout": "1.5s",
///         "retryPolicy": {
///             "maxAttempts": 3,
///             "initialBackoff": "0.1s",
///             "maxBackoff": "1s",
///             "backoffMultiplier": 2,
///             "retryableStatusCodes": ["UNAVAILABLE"]
///         }
///     }]
/// }"#).unwrap();
/// assert_eq!(config.load_balancing(), Some(LoadBalancingPolicy::RoundRobin));
/// let method = config.method("/demo.Greeter/SayHello").unwrap();
/// assert_eq!(method.timeout, Some(Duration::from_millis(1500)));
/// assert!(method.retry_policy.as_ref().unwrap().is_retryable(Code::Unavailable));
/// assert!(config.method("/other.Service/Call").is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceConfig {
    load_balancing: Option<LoadBalancingPolicy>,
    shuffle_address_list: bool,
    health_check_service: Option<String>,
    retry_throttling: Option<RetryThrottling>,
    methods: Vec<MethodConfig>,
    /// `/service/method` or `/service/` (a whole service) to an index in
    /// `methods`.
    by_path: HashMap<String, usize>,
    /// The entry named with no service: the default of every method.
    default_method: Option<usize>,
}

impl ServiceConfig {
    /// Parses and checks a service config. Any broken rule refuses the whole
    /// config, as the spec asks; the error names the field.
    pub fn from_json(json: &str) -> Result<ServiceConfig, ServiceConfigError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| ServiceConfigError::Syntax(e.to_string()))?;
        let Value::Object(root) = &value else {
            return Err(ServiceConfigError::NotAnObject(kind(&value)));
        };
        let mut config = ServiceConfig::default();

        // The deprecated name is checked even when loadBalancingConfig, which
        // wins over it, is present.
        let by_name = match field(root, "loadBalancingPolicy") {
            Some(v) => parse_lb_policy_name(v, "loadBalancingPolicy")?,
            None => None,
        };
        match field(root, "loadBalancingConfig") {
            Some(v) => {
                let (policy, shuffle) = parse_lb_config(v, "loadBalancingConfig")?;
                config.load_balancing = Some(policy);
                config.shuffle_address_list = shuffle;
            }
            None => config.load_balancing = by_name,
        }

        if let Some(v) = field(root, "healthCheckConfig") {
            let path = "healthCheckConfig";
            let health = as_object(v, path)?;
            if let Some(name) = field(health, "serviceName") {
                let name = as_str(name, &join(path, "serviceName"))?;
                config.health_check_service = Some(name.to_owned());
            }
        }

        if let Some(v) = field(root, "retryThrottling") {
            config.retry_throttling = Some(parse_retry_throttling(v, "retryThrottling")?);
        }

        if let Some(v) = field(root, "methodConfig") {
            config.parse_method_configs(v, "methodConfig")?;
        }
        Ok(config)
    }

    /// The load-balancing policy the config chooses: the first supported
    /// entry of `loadBalancingConfig`, else the deprecated
    /// `loadBalancingPolicy`; `None` when it names none (the channel's
    /// default, `pick_first`, applies).
    pub fn load_balancing(&self) -> Option<LoadBalancingPolicy> {
        self.load_balancing
    }

    /// Whether `pick_first` should shuffle the resolved addresses before
    /// trying them (its `shuffleAddressList` setting; false when not given
    /// or when another policy was chosen).
    pub fn shuffle_address_list(&self) -> bool {
        self.shuffle_address_list
    }

    /// The service name for client-side health checking
    /// (`healthCheckConfig.serviceName`); `None` when health checking is not
    /// asked for. An empty name is a real one: the server's overall health.
    pub fn health_check_service(&self) -> Option<&str> {
        self.health_check_service.as_deref()
    }

    /// The `retryThrottling` settings, if the config has them.
    pub fn retry_throttling(&self) -> Option<&RetryThrottling> {
        self.retry_throttling.as_ref()
    }

    /// The settings for a call to `path` (`/package.Service/Method`): the
    /// entry naming that service and method, else the one naming the whole
    /// service, else the default entry (named with no service); `None` when
    /// none applies.
    pub fn method(&self, path: &str) -> Option<&MethodConfig> {
        let whole_service = || {
            let slash = path.rfind('/').filter(|&i| i > 0)?;
            self.by_path.get(&path[..=slash])
        };
        self.by_path
            .get(path)
            .or_else(whole_service)
            .or(self.default_method.as_ref())
            .map(|&i| &self.methods[i])
    }

    fn parse_method_configs(&mut self, value: &Value, path: &str) -> Parsed<()> {
        // Where each name was first given, for the duplicate error.
        let mut first_given: HashMap<String, String> = HashMap::new();
        let mut default_given: Option<String> = None;
        for (i, entry) in as_array(value, path)?.iter().enumerate() {
            let at = index(path, i);
            let object = as_object(entry, &at)?;
            let slot = self.methods.len();
            self.methods.push(parse_method_config(object, &at)?);
            // An entry with no names is checked but applies to nothing
            // (service_config.proto: "MethodConfig without names (empty
            // list) will be skipped").
            let Some(names) = field(object, "name") else {
                continue;
            };
            let names_path = join(&at, "name");
            for (j, name) in as_array(names, &names_path)?.iter().enumerate() {
                let name_path = index(&names_path, j);
                let name = as_object(name, &name_path)?;
                let service = optional_str(name, "service", &name_path)?;
                let method = optional_str(name, "method", &name_path)?;
                if service.is_empty() {
                    if !method.is_empty() {
                        return Err(invalid(
                            &name_path,
                            format!("method {method:?} is given without a service"),
                        ));
                    }
                    if let Some(first) = &default_given {
                        return Err(invalid(
                            &name_path,
                            format!("duplicate default name (no service); first given at {first}"),
                        ));
                    }
                    default_given = Some(name_path);
                    self.default_method = Some(slot);
                    continue;
                }
                let key = format!("/{service}/{method}");
                if let Some(first) = first_given.get(&key) {
                    let what = if method.is_empty() {
                        format!("service {service:?}")
                    } else {
                        format!("service {service:?}, method {method:?}")
                    };
                    return Err(invalid(
                        &name_path,
                        format!("duplicate name ({what}); first given at {first}"),
                    ));
                }
                first_given.insert(key.clone(), name_path);
                self.by_path.insert(key, slot);
            }
        }
        Ok(())
    }
}

impl FromStr for ServiceConfig {
    type Err = ServiceConfigError;

    fn from_str(json: &str) -> Result<ServiceConfig, ServiceConfigError> {
        ServiceConfig::from_json(json)
    }
}

type Parsed<T> = Result<T, ServiceConfigError>;

fn invalid(field: &str, reason: impl Into<String>) -> ServiceConfigError {
    ServiceConfigError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// `path.key`, or `key` at the top.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// What a JSON value is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field of an object; `null` counts as absent, as in proto3 JSON.
fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// A field the spec requires.
fn required<'a>(object: &'a Map<String, Value>, key: &str, path: &str) -> Parsed<&'a Value> {
    field(object, key).ok_or_else(|| invalid(&join(path, key), "is required"))
}

fn as_object<'a>(value: &'a Value, path: &str) -> Parsed<&'a Map<String, Value>> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(invalid(
            path,
            format!("must be an object, got {}", kind(other)),
        )),
    }
}

fn as_array<'a>(value: &'a Value, path: &str) -> Parsed<&'a [Value]> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(invalid(
            path,
            format!("must be an array, got {}", kind(other)),
        )),
    }
}

fn as_str<'a>(value: &'a Value, path: &str) -> Parsed<&'a str> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(invalid(
            path,
            format!("must be a string, got {}", kind(other)),
        )),
    }
}

fn as_bool(value: &Value, path: &str) -> Parsed<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(invalid(
            path,
            format!("must be a boolean, got {}", kind(other)),
        )),
    }
}

/// An optional string field; absent, `null` and `""` are all `""` (as for
/// the names of service_config.proto).
fn optional_str<'a>(object: &'a Map<String, Value>, key: &str, path: &str) -> Parsed<&'a str> {
    match field(object, key) {
        Some(v) => as_str(v, &join(path, key)),
        None => Ok(""),
    }
}

/// An integer: a JSON integer, or a string holding a decimal one (proto3
/// JSON accepts both for its integer types).
fn as_integer(value: &Value, path: &str) -> Parsed<i128> {
    let parsed = match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<i128>().ok()
            } else {
                None
            }
        }
        other => {
            return Err(invalid(
                path,
                format!("must be an integer, got {}", kind(other)),
            ))
        }
    };
    parsed.ok_or_else(|| invalid(path, format!("must be an integer, got {value}")))
}

/// A number: a JSON number, or a string holding one. Returns the value and
/// its decimal text.
fn as_number(value: &Value, path: &str) -> Parsed<(f64, String)> {
    let (number, text) = match value {
        Value::Number(n) => (Some(n.clone()), n.to_string()),
        Value::String(s) => (Number::from_str(s).ok(), s.clone()),
        other => {
            return Err(invalid(
                path,
                format!("must be a number, got {}", kind(other)),
            ))
        }
    };
    match number.and_then(|n| n.as_f64()).filter(|f| f.is_finite()) {
        Some(f) => Ok((f, text)),
        None => Err(invalid(path, format!("must be a number, got {value}"))),
    }
}

/// `maxAttempts` of a retry or hedging policy: at least 2, lowered to 5.
fn max_attempts(object: &Map<String, Value>, path: &str) -> Parsed<u32> {
    let at = join(path, "maxAttempts");
    let n = as_integer(required(object, "maxAttempts", path)?, &at)?;
    if n < 2 {
        return Err(invalid(&at, format!("must be at least 2, got {n}")));
    }
    Ok(u32::try_from(n).unwrap_or(u32::MAX).min(MAX_ATTEMPTS_CAP))
}

fn as_duration(value: &Value, path: &str) -> Parsed<Duration> {
    let text = as_str(value, path)?;
    parse_duration(text).map_err(|why| invalid(path, format!("invalid duration {text:?}: {why}")))
}

/// A proto3 JSON `Duration`: seconds with up to nine decimals and an `s`,
/// e.g. `"1s"`, `"0.5s"`, `"1.000000001s"`. Like grpc-go, either side of
/// the point may be empty (`".5s"`, the form of A6's first examples), but
/// not both; negative durations are refused (none of these fields has a use
/// for one).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let Some(number) = text.strip_suffix('s') else {
        return Err("must be a number of seconds ending in \"s\", e.g. \"1.5s\"".into());
    };
    if number.starts_with('-') {
        return Err("must not be negative".into());
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err("must be a number of seconds ending in \"s\", e.g. \"1.5s\"".into());
    }
    if fraction.len() > 9 {
        return Err("more than 9 digits after the decimal point".into());
    }
    let seconds = match whole {
        "" => 0,
        _ => whole
            .parse::<u64>()
            .ok()
            .filter(|&s| s <= MAX_DURATION_SECONDS)
            .ok_or_else(|| format!("more than {MAX_DURATION_SECONDS} seconds"))?,
    };
    let mut nanos = 0u32;
    for i in 0..9 {
        let digit = fraction
            .as_bytes()
            .get(i)
            .map_or(0, |b| u32::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    Ok(Duration::new(seconds, nanos))
}

/// A status code: its number, or its name in any case (A6: `[14]`,
/// `["UNAVAILABLE"]` or `["unavailable"]`).
fn as_code(value: &Value, path: &str) -> Parsed<Code> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i @ 0..=16) => Ok(Code::from_i32(i as i32)),
            _ => Err(invalid(path, format!("unknown status code {n}"))),
        },
        Value::String(s) => Code::ALL
            .iter()
            .copied()
            .find(|code| code.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| invalid(path, format!("unknown status code {s:?}"))),
        other => Err(invalid(
            path,
            format!(
                "must be a status code (a name or a number), got {}",
                kind(other)
            ),
        )),
    }
}

/// A list of status codes, each kept once, in the order given.
fn as_codes(value: &Value, path: &str) -> Parsed<Vec<Code>> {
    let mut codes = Vec::new();
    for (i, item) in as_array(value, path)?.iter().enumerate() {
        let code = as_code(item, &index(path, i))?;
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

/// The deprecated `loadBalancingPolicy`: a policy name, in any case (as
/// grpc/grpc's client reads it; proto3 JSON writes its enum as
/// `"ROUND_ROBIN"`). An empty name is no choice.
fn parse_lb_policy_name(value: &Value, path: &str) -> Parsed<Option<LoadBalancingPolicy>> {
    let name = as_str(value, path)?;
    if name.is_empty() {
        return Ok(None);
    }
    LoadBalancingPolicy::from_name(&name.to_ascii_lowercase())
        .map(Some)
        .ok_or_else(|| invalid(path, format!("unknown policy {name:?}")))
}

/// `loadBalancingConfig`: a list of `{"policy_name": {config}}` objects. The
/// first supported policy wins, and only its config is checked; unknown
/// ones before it are skipped; a list with no supported policy is an error
/// (service_config.proto, `LoadBalancingConfig`). Returns the policy and
/// `pick_first`'s `shuffleAddressList`.
fn parse_lb_config(value: &Value, path: &str) -> Parsed<(LoadBalancingPolicy, bool)> {
    let entries = as_array(value, path)?;
    let mut unknown = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = index(path, i);
        let object = as_object(entry, &at)?;
        let mut pairs = object.iter();
        let (Some((name, config)), None) = (pairs.next(), pairs.next()) else {
            return Err(invalid(
                &at,
                format!(
                    "must have exactly one field, the policy's name, got {}",
                    object.len()
                ),
            ));
        };
        let Some(policy) = LoadBalancingPolicy::from_name(name) else {
            unknown.push(format!("{name:?}"));
            continue;
        };
        let config_path = join(&at, name);
        let mut shuffle = false;
        // `{"round_robin": null}` reads as an empty config.
        if !config.is_null() {
            let config = as_object(config, &config_path)?;
            if policy == LoadBalancingPolicy::PickFirst {
                if let Some(v) = field(config, "shuffleAddressList") {
                    shuffle = as_bool(v, &join(&config_path, "shuffleAddressList"))?;
                }
            }
        }
        return Ok((policy, shuffle));
    }
    Err(match unknown.as_slice() {
        [] => invalid(path, "names no policy; pick_first or round_robin is needed"),
        [only] => invalid(&index(path, 0), format!("unknown policy {only}")),
        all => invalid(
            path,
            format!("no supported policy: {} are unknown", all.join(", ")),
        ),
    })
}

fn parse_method_config(object: &Map<String, Value>, path: &str) -> Parsed<MethodConfig> {
    let mut config = MethodConfig::default();
    if let Some(v) = field(object, "waitForReady") {
        config.wait_for_ready = Some(as_bool(v, &join(path, "waitForReady"))?);
    }
    if let Some(v) = field(object, "timeout") {
        config.timeout = Some(as_duration(v, &join(path, "timeout"))?);
    }
    let message_bytes = |key: &str| -> Parsed<Option<u32>> {
        let Some(v) = field(object, key) else {
            return Ok(None);
        };
        let at = join(path, key);
        let n = as_integer(v, &at)?;
        u32::try_from(n)
            .map(Some)
            .map_err(|_| invalid(&at, format!("must be between 0 and {}, got {n}", u32::MAX)))
    };
    config.max_request_message_bytes = message_bytes("maxRequestMessageBytes")?;
    config.max_response_message_bytes = message_bytes("maxResponseMessageBytes")?;
    if let Some(v) = field(object, "retryPolicy") {
        config.retry_policy = Some(parse_retry_policy(v, &join(path, "retryPolicy"))?);
    }
    if let Some(v) = field(object, "hedgingPolicy") {
        config.hedging_policy = Some(parse_hedging_policy(v, &join(path, "hedgingPolicy"))?);
    }
    if config.retry_policy.is_some() && config.hedging_policy.is_some() {
        return Err(invalid(
            path,
            "has both retryPolicy and hedgingPolicy; at most one may be set",
        ));
    }
    Ok(config)
}

/// `retryPolicy`, with A6's "Validation of retryPolicy".
fn parse_retry_policy(value: &Value, path: &str) -> Parsed<RetryPolicy> {
    let object = as_object(value, path)?;
    let max_attempts = max_attempts(object, path)?;
    let positive_duration = |key: &str| -> Parsed<Duration> {
        let at = join(path, key);
        let d = as_duration(required(object, key, path)?, &at)?;
        if d.is_zero() {
            return Err(invalid(&at, "must be greater than 0"));
        }
        Ok(d)
    };
    let initial_backoff = positive_duration("initialBackoff")?;
    let max_backoff = positive_duration("maxBackoff")?;
    let at = join(path, "backoffMultiplier");
    let (backoff_multiplier, text) = as_number(required(object, "backoffMultiplier", path)?, &at)?;
    if backoff_multiplier <= 0.0 {
        return Err(invalid(&at, format!("must be greater than 0, got {text}")));
    }
    let at = join(path, "retryableStatusCodes");
    let retryable_status_codes = as_codes(required(object, "retryableStatusCodes", path)?, &at)?;
    if retryable_status_codes.is_empty() {
        return Err(invalid(&at, "must not be empty"));
    }
    Ok(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_status_codes,
    })
}

/// `hedgingPolicy`, with A6's "Validation of hedgingPolicy".
fn parse_hedging_policy(value: &Value, path: &str) -> Parsed<HedgingPolicy> {
    let object = as_object(value, path)?;
    let max_attempts = max_attempts(object, path)?;
    let hedging_delay = match field(object, "hedgingDelay") {
        Some(v) => as_duration(v, &join(path, "hedgingDelay"))?,
        None => Duration::ZERO,
    };
    let non_fatal_status_codes = match field(object, "nonFatalStatusCodes") {
        Some(v) => as_codes(v, &join(path, "nonFatalStatusCodes"))?,
        None => Vec::new(),
    };
    Ok(HedgingPolicy {
        max_attempts,
        hedging_delay,
        non_fatal_status_codes,
    })
}

/// `retryThrottling`, with A6's "Validation of retryThrottling".
fn parse_retry_throttling(value: &Value, path: &str) -> Parsed<RetryThrottling> {
    let object = as_object(value, path)?;
    let at = join(path, "maxTokens");
    let max_tokens = as_integer(required(object, "maxTokens", path)?, &at)?;
    if !(1..=MAX_TOKENS_LIMIT).contains(&max_tokens) {
        return Err(invalid(
            &at,
            format!("must be greater than 0 and at most {MAX_TOKENS_LIMIT}, got {max_tokens}"),
        ));
    }
    let at = join(path, "tokenRatio");
    let (ratio, text) = as_number(required(object, "tokenRatio", path)?, &at)?;
    let milli = if ratio > 0.0 { thousandths(&text) } else { 0 };
    if milli == 0 {
        return Err(invalid(
            &at,
            format!(
                "must be at least 0.001 (digits past the third decimal place are dropped), got {text}"
            ),
        ));
    }
    Ok(RetryThrottling {
        max_tokens: max_tokens as u32,
        token_ratio: milli as f64 / 1000.0,
    })
}

/// A non-negative JSON number's text (`12`, `0.5466`, `5.466e-1`) in
/// thousandths, digits past the third decimal place dropped, as A6 asks of
/// `tokenRatio` (0.5466 is 546). Exact: read from the digits, not through a
/// float. Saturates at `u64::MAX`.
fn thousandths(text: &str) -> u64 {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = whole
        .bytes()
        .chain(fraction.bytes())
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .skip_while(|&d| d == 0)
        .collect();
    // value = digits × 10^(exponent − fraction digits); in thousandths, the
    // power grows by 3.
    let shift = exponent
        .saturating_sub(fraction.len() as i64)
        .saturating_add(3);
    let kept = if shift >= 0 {
        digits.len()
    } else {
        digits.len().saturating_sub(shift.unsigned_abs() as usize)
    };
    let mut value: u64 = 0;
    for &d in &digits[..kept] {
        value = value.saturating_mul(10).saturating_add(u64::from(d));
    }
    for _ in 0..shift.clamp(0, 64) {
        value = value.saturating_mul(10);
    }
    value
}

/// The retry throttle of one channel (A6, "Throttling Retry Attempts and
/// Hedged RPCs"): a token bucket shared by every call, cheap to share between
/// threads (one atomic).
///
/// The bucket starts full, at `max_tokens`. A failed attempt (one whose
/// status is retryable or non-fatal, or a server pushback saying not to
/// retry) takes one token; a successful call gives back `token_ratio`, up to
/// `max_tokens`. Retries and hedged copies are sent only while more than
/// `max_tokens / 2` tokens are left. Tokens are counted in thousandths, as
/// in grpc/grpc, so the arithmetic is exact.
#[derive(Debug)]
pub(crate) struct RetryThrottle {
    max_milli: u64,
    ratio_milli: u64,
    milli: AtomicU64,
}

impl RetryThrottle {
    /// A full bucket for these settings. A `token_ratio` with digits past
    /// the third decimal place has them dropped (A6).
    pub(crate) fn new(settings: RetryThrottling) -> RetryThrottle {
        let max_milli = u64::from(settings.max_tokens) * 1000;
        // The small addend undoes the float's rounding for ratios that have
        // three decimals (0.546 * 1000 may be 545.99…); the cast saturates
        // and takes NaN and negatives to 0.
        let ratio_milli = (settings.token_ratio * 1000.0 + 1e-6).floor() as u64;
        RetryThrottle {
            max_milli,
            ratio_milli,
            milli: AtomicU64::new(max_milli),
        }
    }

    /// Records a failed attempt (a retryable or non-fatal status, or a
    /// pushback saying not to retry): one token less, never below zero.
    /// Returns whether a retry is still allowed after it.
    pub(crate) fn record_failure(&self) -> bool {
        let before = self.update(|milli| milli.saturating_sub(1000));
        self.allows(before.saturating_sub(1000))
    }

    /// Records a successful call: `token_ratio` tokens more, up to
    /// `max_tokens`.
    pub(crate) fn record_success(&self) {
        let ratio = self.ratio_milli;
        let max = self.max_milli;
        self.update(|milli| milli.saturating_add(ratio).min(max));
    }

    /// Whether a retry or a hedged copy may be sent now: more than
    /// `max_tokens / 2` tokens are left.
    #[cfg(test)]
    pub(crate) fn retry_allowed(&self) -> bool {
        // The counter is the only shared state, so no ordering is needed.
        self.allows(self.milli.load(Ordering::Relaxed))
    }

    /// The tokens in the bucket now.
    #[cfg(test)]
    pub(crate) fn tokens(&self) -> f64 {
        self.milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn allows(&self, milli: u64) -> bool {
        milli.saturating_mul(2) > self.max_milli
    }

    /// Applies `change` atomically; returns the count before it.
    fn update(&self, change: impl Fn(u64) -> u64) -> u64 {
        match self
            .milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |milli| {
                Some(change(milli))
            }) {
            Ok(before) | Err(before) => before,
        }
    }
}

/// The delay before a retry under `policy` (A6, "Exponential Backoff"):
/// `min(initial_backoff × backoff_multiplier^(retry − 1), max_backoff)`,
/// times a jitter factor in [0.8, 1.2).
///
/// `retry` counts the retries from 1: the attempt after the original call is
/// retry 1 (attempt `n` is retry `n − 1`). After a server pushback the count
/// starts again from 1 (A6, "Pushback"). `draw` is a uniform random number
/// in [0, 1), passed in so that the formula is testable; it sets the jitter
/// factor to `0.8 + 0.4 × draw`. Values outside [0, 1] are clamped, NaN
/// reads as 0.
///
/// A6 once specified `random(0, min(…))` instead; it was changed to the
/// ±20% jitter in 2024, which is what grpc-go does.
pub(crate) fn retry_backoff(policy: &RetryPolicy, retry: u32, draw: f64) -> Duration {
    let max = policy.max_backoff.as_secs_f64();
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let grown = policy.initial_backoff.as_secs_f64() * policy.backoff_multiplier.powi(exponent);
    // `!(grown < max)` also takes an overflow to infinity (or NaN) to `max`.
    let base = if grown < max { grown } else { max };
    let draw = if draw.is_nan() {
        0.0
    } else {
        draw.clamp(0.0, 1.0)
    };
    let seconds = base * (0.8 + 0.4 * draw);
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}

/// The metadata key of server pushback (A6, "Pushback"), in a response's
/// trailers.
pub(crate) const RETRY_PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// What a server's `grpc-retry-pushback-ms` asks of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryPushback {
    /// Retry after exactly this delay (if attempts are left), instead of
    /// the backoff; the backoff starts again from the initial one after.
    RetryAfter(Duration),
    /// Do not retry (nor send further hedged copies). A failure for the
    /// throttle.
    DoNotRetry,
}

/// Reads a `grpc-retry-pushback-ms` value (A6, "Pushback"): a non-negative
/// 32-bit integer is a number of milliseconds to wait before retrying; a
/// negative or unparsable one means do not retry. A response with several
/// values should be taken as do-not-retry too (grpc-go's reading).
pub(crate) fn parse_retry_pushback(value: impl AsRef<[u8]>) -> RetryPushback {
    let millis = std::str::from_utf8(value.as_ref())
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .and_then(|ms| u64::try_from(ms).ok());
    match millis {
        Some(ms) => RetryPushback::RetryAfter(Duration::from_millis(ms)),
        None => RetryPushback::DoNotRetry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ServiceConfig {
        match ServiceConfig::from_json(json) {
            Ok(config) => config,
            Err(e) => panic!("{json}: {e}"),
        }
    }

    fn error(json: &str) -> String {
        match ServiceConfig::from_json(json) {
            Ok(config) => panic!("{json}: accepted as {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A method config around `body`, for the error tests.
    fn method_error(body: &str) -> String {
        error(&format!(
            r#"{{"methodConfig": [{{"name": [{{"service": "s"}}], {body}}}]}}"#
        ))
    }

    const RETRY: &str = r#""maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]"#;

    fn retry_error(replace: &str, with: &str) -> String {
        assert!(RETRY.contains(replace), "{replace}");
        method_error(&format!(
            r#""retryPolicy": {{{}}}"#,
            RETRY.replace(replace, with)
        ))
    }

    #[test]
    fn empty_config_sets_nothing() {
        let config = parse("{}");
        assert_eq!(config, ServiceConfig::default());
        assert_eq!(config.load_balancing(), None);
        assert!(!config.shuffle_address_list());
        assert_eq!(config.health_check_service(), None);
        assert_eq!(config.retry_throttling(), None);
        assert_eq!(config.method("/a.B/C"), None);
        assert_eq!("{}".parse::<ServiceConfig>().unwrap(), config);
    }

    #[test]
    fn a6_retry_policy_example() {
        let config = parse(
            r#"{"methodConfig": [{
                "name": [{"service": "pkg.Svc", "method": "Get"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]
                }
            }]}"#,
        );
        let method = config.method("/pkg.Svc/Get").unwrap();
        assert_eq!(
            method.retry_policy,
            Some(RetryPolicy {
                max_attempts: 4,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                backoff_multiplier: 2.0,
                retryable_status_codes: vec![Code::Unavailable],
            })
        );
        assert_eq!(method.hedging_policy, None);
        assert_eq!(config.method("/pkg.Svc/Put"), None);
    }

    #[test]
    fn a6_hedging_policy_examples() {
        let config = parse(
            r#"{"methodConfig": [
                {"name": [{"service": "pkg.Svc", "method": "Spaced"}],
                 "hedgingPolicy": {"maxAttempts": 4, "hedgingDelay": "0.5s",
                     "nonFatalStatusCodes": ["UNAVAILABLE", "INTERNAL", "ABORTED"]}},
                {"name": [{"service": "pkg.Svc", "method": "AllAtOnce"}],
                 "hedgingPolicy": {"maxAttempts": 4, "hedgingDelay": "0s",
                     "nonFatalStatusCodes": ["UNAVAILABLE", "INTERNAL", "ABORTED"]}},
                {"name": [{"service": "pkg.Svc", "method": "Bare"}],
                 "hedgingPolicy": {"maxAttempts": 2}}
            ]}"#,
        );
        let spaced = config.method("/pkg.Svc/Spaced").unwrap();
        let hedging = spaced.hedging_policy.as_ref().unwrap();
        assert_eq!(hedging.max_attempts, 4);
        assert_eq!(hedging.hedging_delay, Duration::from_millis(500));
        assert_eq!(
            hedging.non_fatal_status_codes,
            [Code::Unavailable, Code::Internal, Code::Aborted]
        );
        assert!(hedging.is_non_fatal(Code::Aborted));
        assert!(!hedging.is_non_fatal(Code::InvalidArgument));
        assert_eq!(spaced.retry_policy, None);
        let at_once = config.method("/pkg.Svc/AllAtOnce").unwrap();
        assert_eq!(
            at_once.hedging_policy.as_ref().unwrap().hedging_delay,
            Duration::ZERO
        );
        // hedgingDelay and nonFatalStatusCodes are optional.
        let bare = config.method("/pkg.Svc/Bare").unwrap();
        assert_eq!(
            bare.hedging_policy,
            Some(HedgingPolicy {
                max_attempts: 2,
                hedging_delay: Duration::ZERO,
                non_fatal_status_codes: vec![],
            })
        );
    }

    #[test]
    fn a6_throttling_example() {
        let config = parse(r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#);
        assert_eq!(
            config.retry_throttling(),
            Some(&RetryThrottling {
                max_tokens: 10,
                token_ratio: 0.1,
            })
        );
    }

    #[test]
    fn every_method_field() {
        let config = parse(
            r#"{"methodConfig": [{
                "name": [{"service": "pkg.Svc"}],
                "waitForReady": true,
                "timeout": "1.000000001s",
                "maxRequestMessageBytes": 1024,
                "maxResponseMessageBytes": "4294967295"
            }]}"#,
        );
        assert_eq!(
            config.method("/pkg.Svc/Any"),
            Some(&MethodConfig {
                timeout: Some(Duration::new(1, 1)),
                wait_for_ready: Some(true),
                max_request_message_bytes: Some(1024),
                max_response_message_bytes: Some(u32::MAX),
                retry_policy: None,
                hedging_policy: None,
            })
        );
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let config = parse(
            r#"{
                "someFutureSetting": {"x": [1, 2]},
                "loadBalancingPolicy": null,
                "healthCheckConfig": {"serviceName": null, "other": 1},
                "methodConfig": [{
                    "name": [{"service": "pkg.Svc", "method": null, "extra": true}],
                    "timeout": null,
                    "perAttemptRecvTimeout": "1s",
                    "retryPolicy": {
                        "maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s",
                        "backoffMultiplier": 1, "retryableStatusCodes": [14],
                        "newKnob": "x"
                    }
                }]
            }"#,
        );
        assert_eq!(config.health_check_service(), None);
        let method = config.method("/pkg.Svc/M").unwrap();
        assert_eq!(method.timeout, None);
        assert_eq!(
            method.retry_policy.as_ref().unwrap().retryable_status_codes,
            [Code::Unavailable]
        );
    }

    #[test]
    fn lookup_prefers_method_then_service_then_default() {
        // The example of doc/service_config.md and service_config.proto.
        let config = parse(
            r#"{"methodConfig": [
                {"name": [{}], "timeout": "1s"},
                {"name": [{"service": "MyService"}], "timeout": "2s"},
                {"name": [{"service": "MyService", "method": "Foo"}], "timeout": "3s"}
            ]}"#,
        );
        let timeout = |path: &str| config.method(path).and_then(|m| m.timeout);
        assert_eq!(timeout("/MyService/Foo"), Some(Duration::from_secs(3)));
        assert_eq!(timeout("/MyService/Bar"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("/AnotherService/Baz"), Some(Duration::from_secs(1)));
        // Not a method path: only the default can apply.
        assert_eq!(timeout("nonsense"), Some(Duration::from_secs(1)));
        assert_eq!(timeout("MyService/Foo"), Some(Duration::from_secs(1)));
    }

    #[test]
    fn lookup_without_a_default_finds_nothing_elsewhere() {
        let config = parse(
            r#"{"methodConfig": [
                {"name": [{"service": "a.A", "method": "X"}, {"service": "b.B"}], "waitForReady": true}
            ]}"#,
        );
        assert!(config.method("/a.A/X").is_some());
        assert!(config.method("/b.B/Y").is_some());
        assert!(config.method("/a.A/Y").is_none());
        assert!(config.method("/c.C/X").is_none());
        // One entry, several names: the same settings.
        assert_eq!(config.method("/a.A/X"), config.method("/b.B/Z"));
    }

    #[test]
    fn the_default_entry_can_be_named_three_ways() {
        for name in [
            r#"{}"#,
            r#"{"service": ""}"#,
            r#"{"service": null, "method": ""}"#,
        ] {
            let config = parse(&format!(
                r#"{{"methodConfig": [{{"name": [{name}], "waitForReady": false}}]}}"#
            ));
            let method = config.method("/any.Service/Any").unwrap();
            assert_eq!(method.wait_for_ready, Some(false), "{name}");
        }
    }

    #[test]
    fn an_entry_without_names_is_checked_but_applies_to_nothing() {
        let config =
            parse(r#"{"methodConfig": [{"timeout": "1s"}, {"name": [], "timeout": "2s"}]}"#);
        assert_eq!(config.method("/a.B/C"), None);
        let e = error(r#"{"methodConfig": [{"timeout": "1m"}]}"#);
        assert!(e.starts_with("methodConfig[0].timeout: "), "{e}");
    }

    #[test]
    fn load_balancing_config_takes_the_first_supported_policy() {
        let config = parse(
            r#"{"loadBalancingConfig": [
                {"grpclb": {"childPolicy": [{"pick_first": {}}]}},
                {"round_robin": {}},
                {"pick_first": {}}
            ]}"#,
        );
        assert_eq!(
            config.load_balancing(),
            Some(LoadBalancingPolicy::RoundRobin)
        );
        assert!(!config.shuffle_address_list());

        let config =
            parse(r#"{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}"#);
        assert_eq!(
            config.load_balancing(),
            Some(LoadBalancingPolicy::PickFirst)
        );
        assert!(config.shuffle_address_list());

        let config = parse(r#"{"loadBalancingConfig": [{"round_robin": null}]}"#);
        assert_eq!(
            config.load_balancing(),
            Some(LoadBalancingPolicy::RoundRobin)
        );

        // Entries after the chosen one are not looked at.
        let config = parse(r#"{"loadBalancingConfig": [{"pick_first": {}}, {"a": 1, "b": 2}]}"#);
        assert_eq!(
            config.load_balancing(),
            Some(LoadBalancingPolicy::PickFirst)
        );
    }

    #[test]
    fn load_balancing_policy_is_the_fallback() {
        let config = parse(r#"{"loadBalancingPolicy": "round_robin"}"#);
        assert_eq!(
            config.load_balancing(),
            Some(LoadBalancingPolicy::RoundRobin)
        );
        let config = parse(r#"{"loadBalancingPolicy": "ROUND_ROBIN"}"#);
        assert_eq!(
            config.load_balancing(),
            Some(LoadBalancingPolicy::RoundRobin)
        );
        let config = parse(r#"{"loadBalancingPolicy": "pick_first"}"#);
        assert_eq!(
            config.load_balancing(),
            Some(LoadBalancingPolicy::PickFirst)
        );
        let config = parse(r#"{"loadBalancingPolicy": ""}"#);
        assert_eq!(config.load_balancing(), None);
        // loadBalancingConfig wins.
        let config = parse(
            r#"{"loadBalancingPolicy": "round_robin", "loadBalancingConfig": [{"pick_first": {}}]}"#,
        );
        assert_eq!(
            config.load_balancing(),
            Some(LoadBalancingPolicy::PickFirst)
        );
        assert_eq!(LoadBalancingPolicy::RoundRobin.as_str(), "round_robin");
    }

    #[test]
    fn health_check_service_name() {
        let config = parse(r#"{"healthCheckConfig": {"serviceName": "pkg.Svc"}}"#);
        assert_eq!(config.health_check_service(), Some("pkg.Svc"));
        let config = parse(r#"{"healthCheckConfig": {"serviceName": ""}}"#);
        assert_eq!(config.health_check_service(), Some(""));
        let config = parse(r#"{"healthCheckConfig": {}}"#);
        assert_eq!(config.health_check_service(), None);
    }

    #[test]
    fn status_codes_by_number_or_name_in_any_case() {
        let config = parse(&format!(
            r#"{{"methodConfig": [{{"name": [{{"service": "s"}}], "retryPolicy": {{{}}}}}]}}"#,
            RETRY.replace(
                r#"["UNAVAILABLE"]"#,
                r#"[14, "unavailable", "Deadline_Exceeded", 0, "CANCELLED", 16]"#
            )
        ));
        let policy = config.method("/s/m").unwrap().retry_policy.clone().unwrap();
        assert_eq!(
            policy.retryable_status_codes,
            [
                Code::Unavailable,
                Code::DeadlineExceeded,
                Code::Ok,
                Code::Cancelled,
                Code::Unauthenticated
            ]
        );
        assert!(policy.is_retryable(Code::DeadlineExceeded));
        assert!(!policy.is_retryable(Code::Internal));
    }

    #[test]
    fn max_attempts_above_five_is_lowered_to_five() {
        let config = parse(&format!(
            r#"{{"methodConfig": [
                {{"name": [{{"service": "r"}}], "retryPolicy": {{{}}}}},
                {{"name": [{{"service": "h"}}], "hedgingPolicy": {{"maxAttempts": "7"}}}}
            ]}}"#,
            RETRY.replace(r#""maxAttempts": 4"#, r#""maxAttempts": 100"#)
        ));
        let retry = config
            .method("/r/m")
            .unwrap()
            .retry_policy
            .as_ref()
            .unwrap();
        assert_eq!(retry.max_attempts, 5);
        let hedging = config
            .method("/h/m")
            .unwrap()
            .hedging_policy
            .as_ref()
            .unwrap();
        assert_eq!(hedging.max_attempts, 5);
    }

    #[test]
    fn numbers_may_be_strings() {
        let config = parse(&format!(
            r#"{{"retryThrottling": {{"maxTokens": "10", "tokenRatio": "0.25"}},
                "methodConfig": [{{"name": [{{"service": "s"}}], "maxRequestMessageBytes": "0",
                "retryPolicy": {{{}}}}}]}}"#,
            RETRY
                .replace(r#""maxAttempts": 4"#, r#""maxAttempts": "3""#)
                .replace(r#""backoffMultiplier": 2"#, r#""backoffMultiplier": "1.5""#)
        ));
        let throttling = config.retry_throttling().unwrap();
        assert_eq!(throttling.max_tokens, 10);
        assert_eq!(throttling.token_ratio, 0.25);
        let method = config.method("/s/m").unwrap();
        assert_eq!(method.max_request_message_bytes, Some(0));
        let retry = method.retry_policy.as_ref().unwrap();
        assert_eq!(retry.max_attempts, 3);
        assert_eq!(retry.backoff_multiplier, 1.5);
    }

    #[test]
    fn token_ratio_keeps_three_decimal_places() {
        let ratio = |text: &str| {
            parse(&format!(
                r#"{{"retryThrottling": {{"maxTokens": 10, "tokenRatio": {text}}}}}"#
            ))
            .retry_throttling()
            .unwrap()
            .token_ratio
        };
        assert_eq!(ratio("0.5466"), 0.546);
        assert_eq!(ratio("0.001"), 0.001);
        assert_eq!(ratio("0.0019"), 0.001);
        assert_eq!(ratio("1"), 1.0);
        assert_eq!(ratio("2.5e-1"), 0.25);
        assert_eq!(ratio("\"0.9999\""), 0.999);
    }

    #[test]
    fn thousandths_reads_the_decimal_digits() {
        assert_eq!(thousandths("0.5466"), 546);
        assert_eq!(thousandths("0.1"), 100);
        assert_eq!(thousandths("12"), 12_000);
        assert_eq!(thousandths("1.5e2"), 150_000);
        assert_eq!(thousandths("5.466e-1"), 546);
        assert_eq!(thousandths("1e-7"), 0);
        assert_eq!(thousandths("0.0009"), 0);
        assert_eq!(thousandths("007.25"), 7_250);
        assert_eq!(thousandths("1e300"), u64::MAX);
    }

    #[test]
    fn durations() {
        let ok = |text: &str| parse_duration(text).unwrap();
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("0.5s"), Duration::from_millis(500));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("315576000000s"), Duration::from_secs(315_576_000_000));
        assert_eq!(
            ok("315576000000.999999999s"),
            Duration::new(315_576_000_000, 999_999_999)
        );
        // As grpc-go reads them: an empty side of the point.
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("3.s"), Duration::from_secs(3));

        for bad in [
            "",
            "s",
            ".s",
            "1",
            "1m",
            "1S",
            "1.5",
            "1ms",
            "-1s",
            "-0.5s",
            "+1s",
            " 1s",
            "1s ",
            "1 s",
            "1e3s",
            "1.0000000001s",
            "1.2.3s",
            "0x10s",
            "abcs",
            "315576000001s",
            "99999999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn duration_errors_name_the_field() {
        assert_eq!(
            method_error(r#""timeout": "1m""#),
            r#"methodConfig[0].timeout: invalid duration "1m": must be a number of seconds ending in "s", e.g. "1.5s""#
        );
        assert_eq!(
            method_error(r#""timeout": "1.0123456789s""#),
            r#"methodConfig[0].timeout: invalid duration "1.0123456789s": more than 9 digits after the decimal point"#
        );
        assert_eq!(
            method_error(r#""timeout": "-1s""#),
            r#"methodConfig[0].timeout: invalid duration "-1s": must not be negative"#
        );
        assert_eq!(
            method_error(r#""timeout": 1"#),
            "methodConfig[0].timeout: must be a string, got a number"
        );
    }

    #[test]
    fn top_level_errors() {
        assert!(error("").starts_with("service config is not valid JSON: "));
        assert!(error(r#"{"methodConfig": [}"#).starts_with("service config is not valid JSON: "));
        assert_eq!(
            error("[]"),
            "service config must be a JSON object, got an array"
        );
        assert_eq!(
            error("null"),
            "service config must be a JSON object, got null"
        );
        assert_eq!(
            error(r#"{"methodConfig": {}}"#),
            "methodConfig: must be an array, got an object"
        );
        assert_eq!(
            error(r#"{"methodConfig": [1]}"#),
            "methodConfig[0]: must be an object, got a number"
        );
        assert_eq!(
            error(r#"{"healthCheckConfig": "x"}"#),
            "healthCheckConfig: must be an object, got a string"
        );
        assert_eq!(
            error(r#"{"healthCheckConfig": {"serviceName": 1}}"#),
            "healthCheckConfig.serviceName: must be a string, got a number"
        );
    }

    #[test]
    fn load_balancing_errors() {
        assert_eq!(
            error(r#"{"loadBalancingConfig": [{"foo": {}}]}"#),
            r#"loadBalancingConfig[0]: unknown policy "foo""#
        );
        assert_eq!(
            error(r#"{"loadBalancingConfig": [{"foo": {}}, {"bar": {}}]}"#),
            r#"loadBalancingConfig: no supported policy: "foo", "bar" are unknown"#
        );
        assert_eq!(
            error(r#"{"loadBalancingConfig": []}"#),
            "loadBalancingConfig: names no policy; pick_first or round_robin is needed"
        );
        assert_eq!(
            error(r#"{"loadBalancingConfig": {"round_robin": {}}}"#),
            "loadBalancingConfig: must be an array, got an object"
        );
        assert_eq!(
            error(
                r#"{"loadBalancingConfig": [{"foo": {}}, {"round_robin": {}, "pick_first": {}}]}"#
            ),
            "loadBalancingConfig[1]: must have exactly one field, the policy's name, got 2"
        );
        assert_eq!(
            error(r#"{"loadBalancingConfig": [{}]}"#),
            "loadBalancingConfig[0]: must have exactly one field, the policy's name, got 0"
        );
        assert_eq!(
            error(r#"{"loadBalancingConfig": ["round_robin"]}"#),
            "loadBalancingConfig[0]: must be an object, got a string"
        );
        assert_eq!(
            error(r#"{"loadBalancingConfig": [{"round_robin": []}]}"#),
            "loadBalancingConfig[0].round_robin: must be an object, got an array"
        );
        assert_eq!(
            error(
                r#"{"loadBalancingConfig": [{"x": 1}, {"pick_first": {"shuffleAddressList": 666}}]}"#
            ),
            "loadBalancingConfig[1].pick_first.shuffleAddressList: must be a boolean, got a number"
        );
        assert_eq!(
            error(r#"{"loadBalancingPolicy": "foo"}"#),
            r#"loadBalancingPolicy: unknown policy "foo""#
        );
        assert_eq!(
            error(r#"{"loadBalancingPolicy": 1}"#),
            "loadBalancingPolicy: must be a string, got a number"
        );
        // The deprecated field is checked even when the other one wins.
        assert_eq!(
            error(r#"{"loadBalancingPolicy": "foo", "loadBalancingConfig": [{"pick_first": {}}]}"#),
            r#"loadBalancingPolicy: unknown policy "foo""#
        );
    }

    #[test]
    fn name_errors() {
        assert_eq!(
            error(r#"{"methodConfig": [{"name": {"service": "s"}}]}"#),
            "methodConfig[0].name: must be an array, got an object"
        );
        assert_eq!(
            error(r#"{"methodConfig": [{"name": ["s"]}]}"#),
            "methodConfig[0].name[0]: must be an object, got a string"
        );
        assert_eq!(
            error(r#"{"methodConfig": [{"name": [{"service": 1}]}]}"#),
            "methodConfig[0].name[0].service: must be a string, got a number"
        );
        assert_eq!(
            error(r#"{"methodConfig": [{"name": [{"service": "s", "method": false}]}]}"#),
            "methodConfig[0].name[0].method: must be a string, got a boolean"
        );
        assert_eq!(
            error(r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#),
            r#"methodConfig[0].name[0]: method "M" is given without a service"#
        );
    }

    #[test]
    fn duplicate_names_are_errors() {
        assert_eq!(
            error(
                r#"{"methodConfig": [
                    {"name": [{"service": "s", "method": "m"}]},
                    {"name": [{"service": "t"}, {"service": "s", "method": "m"}]}
                ]}"#
            ),
            r#"methodConfig[1].name[1]: duplicate name (service "s", method "m"); first given at methodConfig[0].name[0]"#
        );
        assert_eq!(
            error(
                r#"{"methodConfig": [{"name": [{"service": "s"}, {"service": "s", "method": ""}]}]}"#
            ),
            r#"methodConfig[0].name[1]: duplicate name (service "s"); first given at methodConfig[0].name[0]"#
        );
        assert_eq!(
            error(r#"{"methodConfig": [{"name": [{}]}, {"name": [{"service": ""}]}]}"#),
            "methodConfig[1].name[0]: duplicate default name (no service); first given at methodConfig[0].name[0]"
        );
    }

    #[test]
    fn method_field_errors() {
        assert_eq!(
            method_error(r#""waitForReady": "yes""#),
            "methodConfig[0].waitForReady: must be a boolean, got a string"
        );
        assert_eq!(
            method_error(r#""maxRequestMessageBytes": -1"#),
            "methodConfig[0].maxRequestMessageBytes: must be between 0 and 4294967295, got -1"
        );
        assert_eq!(
            method_error(r#""maxResponseMessageBytes": 4294967296"#),
            "methodConfig[0].maxResponseMessageBytes: must be between 0 and 4294967295, got 4294967296"
        );
        assert_eq!(
            method_error(r#""maxRequestMessageBytes": 1.5"#),
            "methodConfig[0].maxRequestMessageBytes: must be an integer, got 1.5"
        );
        assert_eq!(
            method_error(r#""maxRequestMessageBytes": "12kb""#),
            r#"methodConfig[0].maxRequestMessageBytes: must be an integer, got "12kb""#
        );
        assert_eq!(
            method_error(r#""maxRequestMessageBytes": true"#),
            "methodConfig[0].maxRequestMessageBytes: must be an integer, got a boolean"
        );
        assert_eq!(
            method_error(&format!(
                r#""retryPolicy": {{{RETRY}}}, "hedgingPolicy": {{"maxAttempts": 2}}"#
            )),
            "methodConfig[0]: has both retryPolicy and hedgingPolicy; at most one may be set"
        );
        assert_eq!(
            method_error(r#""retryPolicy": []"#),
            "methodConfig[0].retryPolicy: must be an object, got an array"
        );
    }

    #[test]
    fn retry_policy_errors() {
        let p = "methodConfig[0].retryPolicy";
        assert_eq!(
            retry_error(r#""maxAttempts": 4"#, r#""maxAttempts": 1"#),
            format!("{p}.maxAttempts: must be at least 2, got 1")
        );
        assert_eq!(
            retry_error(r#""maxAttempts": 4"#, r#""maxAttempts": -3"#),
            format!("{p}.maxAttempts: must be at least 2, got -3")
        );
        assert_eq!(
            retry_error(r#""maxAttempts": 4,"#, ""),
            format!("{p}.maxAttempts: is required")
        );
        assert_eq!(
            retry_error(r#""maxAttempts": 4"#, r#""maxAttempts": 2.5"#),
            format!("{p}.maxAttempts: must be an integer, got 2.5")
        );
        assert_eq!(
            retry_error(r#""initialBackoff": "0.1s""#, r#""initialBackoff": "0s""#),
            format!("{p}.initialBackoff: must be greater than 0")
        );
        assert_eq!(
            retry_error(r#""initialBackoff": "0.1s","#, ""),
            format!("{p}.initialBackoff: is required")
        );
        assert_eq!(
            retry_error(
                r#""initialBackoff": "0.1s""#,
                r#""initialBackoff": "100ms""#
            ),
            format!(
                r#"{p}.initialBackoff: invalid duration "100ms": must be a number of seconds ending in "s", e.g. "1.5s""#
            )
        );
        assert_eq!(
            retry_error(r#""maxBackoff": "1s""#, r#""maxBackoff": "0.0s""#),
            format!("{p}.maxBackoff: must be greater than 0")
        );
        assert_eq!(
            retry_error(r#""maxBackoff": "1s","#, ""),
            format!("{p}.maxBackoff: is required")
        );
        assert_eq!(
            retry_error(r#""backoffMultiplier": 2"#, r#""backoffMultiplier": 0"#),
            format!("{p}.backoffMultiplier: must be greater than 0, got 0")
        );
        assert_eq!(
            retry_error(r#""backoffMultiplier": 2"#, r#""backoffMultiplier": -1.5"#),
            format!("{p}.backoffMultiplier: must be greater than 0, got -1.5")
        );
        assert_eq!(
            retry_error(r#""backoffMultiplier": 2"#, r#""backoffMultiplier": "two""#),
            format!(r#"{p}.backoffMultiplier: must be a number, got "two""#)
        );
        assert_eq!(
            retry_error(r#""backoffMultiplier": 2,"#, ""),
            format!("{p}.backoffMultiplier: is required")
        );
        assert_eq!(
            retry_error(r#"["UNAVAILABLE"]"#, "[]"),
            format!("{p}.retryableStatusCodes: must not be empty")
        );
        assert_eq!(
            retry_error(r#", "retryableStatusCodes": ["UNAVAILABLE"]"#, ""),
            format!("{p}.retryableStatusCodes: is required")
        );
        assert_eq!(
            retry_error(r#"["UNAVAILABLE"]"#, r#"["UNAVAILABLE", "NOPE"]"#),
            format!(r#"{p}.retryableStatusCodes[1]: unknown status code "NOPE""#)
        );
        assert_eq!(
            retry_error(r#"["UNAVAILABLE"]"#, "[17]"),
            format!("{p}.retryableStatusCodes[0]: unknown status code 17")
        );
        assert_eq!(
            retry_error(r#"["UNAVAILABLE"]"#, "[-1]"),
            format!("{p}.retryableStatusCodes[0]: unknown status code -1")
        );
        // A number in a string is neither a name nor a number.
        assert_eq!(
            retry_error(r#"["UNAVAILABLE"]"#, r#"["14"]"#),
            format!(r#"{p}.retryableStatusCodes[0]: unknown status code "14""#)
        );
        assert_eq!(
            retry_error(r#"["UNAVAILABLE"]"#, "[true]"),
            format!("{p}.retryableStatusCodes[0]: must be a status code (a name or a number), got a boolean")
        );
        assert_eq!(
            retry_error(r#"["UNAVAILABLE"]"#, r#""UNAVAILABLE""#),
            format!("{p}.retryableStatusCodes: must be an array, got a string")
        );
    }

    #[test]
    fn hedging_policy_errors() {
        let p = "methodConfig[0].hedgingPolicy";
        assert_eq!(
            method_error(r#""hedgingPolicy": {"maxAttempts": 1}"#),
            format!("{p}.maxAttempts: must be at least 2, got 1")
        );
        assert_eq!(
            method_error(r#""hedgingPolicy": {}"#),
            format!("{p}.maxAttempts: is required")
        );
        assert_eq!(
            method_error(r#""hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "1"}"#),
            format!(
                r#"{p}.hedgingDelay: invalid duration "1": must be a number of seconds ending in "s", e.g. "1.5s""#
            )
        );
        assert_eq!(
            method_error(
                r#""hedgingPolicy": {"maxAttempts": 3, "nonFatalStatusCodes": ["OK", "BAD"]}"#
            ),
            format!(r#"{p}.nonFatalStatusCodes[1]: unknown status code "BAD""#)
        );
    }

    #[test]
    fn retry_throttling_errors() {
        let p = "retryThrottling";
        let throttling = |body: &str| error(&format!(r#"{{"retryThrottling": {{{body}}}}}"#));
        assert_eq!(
            throttling(r#""maxTokens": 0, "tokenRatio": 0.1"#),
            format!("{p}.maxTokens: must be greater than 0 and at most 1000, got 0")
        );
        assert_eq!(
            throttling(r#""maxTokens": 1001, "tokenRatio": 0.1"#),
            format!("{p}.maxTokens: must be greater than 0 and at most 1000, got 1001")
        );
        assert_eq!(
            throttling(r#""maxTokens": 10.5, "tokenRatio": 0.1"#),
            format!("{p}.maxTokens: must be an integer, got 10.5")
        );
        assert_eq!(
            throttling(r#""tokenRatio": 0.1"#),
            format!("{p}.maxTokens: is required")
        );
        assert_eq!(
            throttling(r#""maxTokens": 10"#),
            format!("{p}.tokenRatio: is required")
        );
        assert_eq!(
            throttling(r#""maxTokens": 10, "tokenRatio": 0"#),
            format!("{p}.tokenRatio: must be at least 0.001 (digits past the third decimal place are dropped), got 0")
        );
        assert_eq!(
            throttling(r#""maxTokens": 10, "tokenRatio": -0.5"#),
            format!("{p}.tokenRatio: must be at least 0.001 (digits past the third decimal place are dropped), got -0.5")
        );
        assert_eq!(
            throttling(r#""maxTokens": 10, "tokenRatio": 0.0004"#),
            format!("{p}.tokenRatio: must be at least 0.001 (digits past the third decimal place are dropped), got 0.0004")
        );
        assert_eq!(
            throttling(r#""maxTokens": 10, "tokenRatio": [1]"#),
            format!("{p}.tokenRatio: must be a number, got an array")
        );
        assert_eq!(
            error(r#"{"retryThrottling": 5}"#),
            format!("{p}: must be an object, got a number")
        );
        assert_eq!(
            ServiceConfig::from_json(r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 1}}"#)
                .unwrap_err()
                .field(),
            Some("retryThrottling.maxTokens")
        );
    }

    fn throttle(max_tokens: u32, token_ratio: f64) -> RetryThrottle {
        RetryThrottle::new(RetryThrottling {
            max_tokens,
            token_ratio,
        })
    }

    #[test]
    fn throttle_starts_full_and_stops_retries_at_half() {
        let t = throttle(10, 0.1);
        assert_eq!(t.tokens(), 10.0);
        assert!(t.retry_allowed());
        // 9, 8, 7, 6 tokens: still more than 5.
        for left in [9.0, 8.0, 7.0, 6.0] {
            assert!(t.record_failure());
            assert_eq!(t.tokens(), left);
        }
        // 5 is not more than 5.
        assert!(!t.record_failure());
        assert!(!t.retry_allowed());
        // 5.1 is.
        t.record_success();
        assert_eq!(t.tokens(), 5.1);
        assert!(t.retry_allowed());
        assert!(!t.record_failure());
        assert_eq!(t.tokens(), 4.1);
    }

    #[test]
    fn throttle_stays_between_zero_and_max() {
        let t = throttle(3, 0.5);
        for _ in 0..10 {
            t.record_failure();
        }
        assert_eq!(t.tokens(), 0.0);
        assert!(!t.retry_allowed());
        for _ in 0..3 {
            t.record_success();
        }
        assert_eq!(t.tokens(), 1.5);
        // 1.5 of 3 is not more than half.
        assert!(!t.retry_allowed());
        t.record_success();
        assert!(t.retry_allowed());
        for _ in 0..10 {
            t.record_success();
        }
        assert_eq!(t.tokens(), 3.0);
    }

    #[test]
    fn throttle_counts_exactly_in_thousandths() {
        // 0.1 added ten thousand times is exactly 1000 tokens (a float sum
        // would drift).
        let t = throttle(1000, 0.1);
        for _ in 0..1000 {
            t.record_failure();
        }
        assert_eq!(t.tokens(), 0.0);
        for _ in 0..10_000 {
            t.record_success();
        }
        assert_eq!(t.tokens(), 1000.0);
        // Ratios from the parser and by hand, truncated to three decimals.
        assert_eq!(throttle(1, 0.546).ratio_milli, 546);
        assert_eq!(throttle(1, 0.5466).ratio_milli, 546);
        assert_eq!(throttle(1, 0.001).ratio_milli, 1);
        assert_eq!(throttle(1, -1.0).ratio_milli, 0);
        assert_eq!(throttle(1, f64::NAN).ratio_milli, 0);
    }

    #[test]
    fn throttle_is_shared_between_threads() {
        let t = std::sync::Arc::new(throttle(1000, 1.0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        t.record_failure();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(t.tokens(), 600.0);
    }

    fn policy(initial_ms: u64, max_ms: u64, multiplier: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
            backoff_multiplier: multiplier,
            retryable_status_codes: vec![Code::Unavailable],
        }
    }

    #[test]
    fn backoff_grows_then_caps_with_twenty_percent_jitter() {
        let p = policy(100, 1000, 2.0);
        let ms = |retry: u32, draw: f64| retry_backoff(&p, retry, draw).as_secs_f64() * 1000.0;
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        // Middle of the jitter: the bare formula, 100, 200, 400, 800, 1000.
        for (retry, base) in [(1, 100.0), (2, 200.0), (3, 400.0), (4, 800.0), (5, 1000.0)] {
            assert!(
                close(ms(retry, 0.5), base),
                "retry {retry}: {}",
                ms(retry, 0.5)
            );
            // The bounds: [0.8, 1.2) of it.
            assert!(close(ms(retry, 0.0), base * 0.8));
            assert!(ms(retry, 0.999_999) < base * 1.2);
            assert!(ms(retry, 0.999_999) > base * 1.199);
        }
        assert!(close(ms(1000, 0.5), 1000.0));
        assert!(close(ms(u32::MAX, 0.5), 1000.0));
        // Retry 0 reads as retry 1.
        assert!(close(ms(0, 0.5), 100.0));
        // Draws outside [0, 1) are clamped.
        assert!(close(ms(1, -3.0), 80.0));
        assert!(close(ms(1, 7.0), 120.0));
        assert!(close(ms(1, f64::NAN), 80.0));
    }

    #[test]
    fn backoff_with_a_shrinking_or_huge_multiplier() {
        let p = policy(1000, 1000, 0.5);
        assert_eq!(retry_backoff(&p, 3, 0.5), Duration::from_millis(250));
        let p = policy(1000, 5000, 1e300);
        assert_eq!(retry_backoff(&p, 100, 0.5), Duration::from_secs(5));
        let p = policy(100, 100, 1.0);
        assert_eq!(retry_backoff(&p, 9, 0.5), Duration::from_millis(100));
    }

    #[test]
    fn pushback_values() {
        use RetryPushback::*;
        assert_eq!(parse_retry_pushback("0"), RetryAfter(Duration::ZERO));
        assert_eq!(
            parse_retry_pushback("1500"),
            RetryAfter(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_pushback(b"2147483647"),
            RetryAfter(Duration::from_millis(2_147_483_647))
        );
        for bad in [
            "-1",
            "-2147483648",
            "2147483648",
            "",
            "1.5",
            "abc",
            " 5",
            "5ms",
            "0x10",
        ] {
            assert_eq!(parse_retry_pushback(bad), DoNotRetry, "{bad:?}");
        }
        assert_eq!(parse_retry_pushback([0xff, b'1']), DoNotRetry);
        assert_eq!(RETRY_PUSHBACK_HEADER, "grpc-retry-pushback-ms");
    }
}
