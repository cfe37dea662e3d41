//! MPCP canonical JSON and domain-separated hashing.
//!
//! Input is parsed by [`parse_strict`], which refuses anything whose canonical form would be a
//! guess: duplicate object keys, non-integer numbers, integers outside the IEEE-754 safe range
//! (where JCS and JavaScript would round), invalid UTF-8, nesting beyond [`MAX_DEPTH`] and
//! documents over [`MAX_DOCUMENT_BYTES`]. [`canonical_bytes`] omits null-valued members
//! (recursively; nulls inside arrays stay, as in the reference SDK) and serialises with RFC 8785
//! (serde_jcs). [`domain_digest`] is `SHA-256(UTF-8(prefix) || canonical_json)`.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};

/// Largest document accepted anywhere (bytes).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Deepest nesting of arrays/objects accepted (the top-level value is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Largest integer magnitude accepted: 2^53 - 1, the last one JavaScript represents exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Artifact kinds with a domain prefix. The spec defines the first four; `DestinationAllowlist`
/// and `KeySet` are extensions of this project using the same pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// `MPCP:Policy:{v}:` over a policy document (gives `policyHash`).
    Policy,
    /// `MPCP:PolicyGrant:{v}:` over a grant without `signature`.
    PolicyGrant,
    /// `MPCP:SBA:{v}:` over an SBA's inner authorization.
    Sba,
    /// `MPCP:TrustBundle:{v}:` over a bundle without `signature`.
    TrustBundle,
    /// Extension: `MPCP:DestinationAllowlist:{v}:`.
    DestinationAllowlist,
    /// Extension: `MPCP:KeySet:{v}:` over a signed key set without `signature`.
    KeySet,
}

/// Artifact versions whose canonicalisation this implementation knows.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0"];

impl Domain {
    /// The kind's name as it appears in the prefix.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Policy => "Policy",
            Domain::PolicyGrant => "PolicyGrant",
            Domain::Sba => "SBA",
            Domain::TrustBundle => "TrustBundle",
            Domain::DestinationAllowlist => "DestinationAllowlist",
            Domain::KeySet => "KeySet",
        }
    }

    const ALL: [Domain; 6] = [
        Domain::Policy,
        Domain::PolicyGrant,
        Domain::Sba,
        Domain::TrustBundle,
        Domain::DestinationAllowlist,
        Domain::KeySet,
    ];

    /// The prefix for an artifact of this kind and `version`; refuses unknown versions.
    pub fn prefix(self, version: &str) -> Result<String> {
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(Error::field(
                ErrorCode::VersionUnsupported,
                "version",
                format!("{} version {version:?} is not supported", self.name()),
            ));
        }
        Ok(format!("MPCP:{}:{version}:", self.name()))
    }

    /// Parses a full prefix such as `MPCP:Policy:1.0:`; anything else is refused rather than
    /// hashed under an unknown domain.
    pub fn parse_prefix(prefix: &str) -> Result<(Domain, String)> {
        let unsupported = || {
            Error::new(
                ErrorCode::CanonicalizationUnsupported,
                format!("unknown domain prefix {prefix:?}"),
            )
        };
        let rest = prefix.strip_prefix("MPCP:").ok_or_else(unsupported)?;
        let rest = rest.strip_suffix(':').ok_or_else(unsupported)?;
        let (name, version) = rest.split_once(':').ok_or_else(unsupported)?;
        let domain = Domain::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(unsupported)?;
        domain.prefix(version).map_err(|_| unsupported())?;
        Ok((domain, version.to_string()))
    }
}

/// Parses JSON bytes, refusing every ambiguity listed in the module documentation.
pub fn parse_strict(bytes: &[u8]) -> Result<Value> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::new(
            ErrorCode::JsonTooLarge,
            format!(
                "document is {} bytes, more than the {MAX_DOCUMENT_BYTES} allowed",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorCode::JsonInvalidUtf8,
            format!("document is not UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    let failure = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = StrictSeed {
        depth: 1,
        failure: &failure,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|_| v));
    parsed.map_err(|e| match failure.take() {
        Some(err) => err,
        None => Error::new(ErrorCode::JsonMalformed, format!("malformed JSON: {e}")),
    })
}

/// Parses a strict JSON document from a string (see [`parse_strict`]).
pub fn parse_strict_str(text: &str) -> Result<Value> {
    parse_strict(text.as_bytes())
}

/// Removes null-valued object members, recursively. Array elements are kept as they are.
pub fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// MPCP canonical JSON bytes: nulls omitted, RFC 8785 serialisation. Refuses values that
/// [`parse_strict`] would refuse (floats, unsafe integers), so a caller that built a `Value`
/// in code cannot smuggle in an ambiguous number.
pub fn canonical_bytes(value: &Value) -> Result<Vec<u8>> {
    canonical_view(value, None)
}

/// [`canonical_bytes`] of `value` without its top-level member `skip` (if it is an object),
/// serialised from a borrowed view: the hot signing path neither clones nor strips a copy.
fn canonical_view(value: &Value, skip: Option<&str>) -> Result<Vec<u8>> {
    check_numbers(value, 1)?;
    serde_jcs::to_vec(&NullsOmitted { value, skip })
        .map_err(|e| Error::new(ErrorCode::Internal, format!("canonical serialisation: {e}")))
}

/// Serialises a borrowed value with null object members omitted (recursively; array
/// elements kept as they are, like [`strip_nulls`]) and, at the top level only, without
/// the member named `skip`.
struct NullsOmitted<'a> {
    value: &'a Value,
    skip: Option<&'a str>,
}

impl serde::Serialize for NullsOmitted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.value {
            Value::Object(map) => {
                let mut m = s.serialize_map(None)?;
                for (k, v) in map {
                    if v.is_null() || Some(k.as_str()) == self.skip {
                        continue;
                    }
                    m.serialize_entry(
                        k,
                        &NullsOmitted {
                            value: v,
                            skip: None,
                        },
                    )?;
                }
                m.end()
            }
            Value::Array(items) => {
                let mut q = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    q.serialize_element(&NullsOmitted {
                        value: v,
                        skip: None,
                    })?;
                }
                q.end()
            }
            other => other.serialize(s),
        }
    }
}

/// Canonical JSON of any serialisable value (via `serde_json::Value`).
pub fn canonical_bytes_of<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let v = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("serialisation: {e}")))?;
    canonical_bytes(&v)
}

/// `SHA-256(UTF-8(prefix) || canonical_json(value))`.
pub fn digest_with_prefix(prefix: &str, value: &Value) -> Result<[u8; 32]> {
    let body = canonical_bytes(value)?;
    let mut h = Sha256::new();
    h.update(prefix.as_bytes());
    h.update(&body);
    Ok(h.finalize().into())
}

/// The domain digest of `value` for `domain` at artifact `version`.
pub fn domain_digest(domain: Domain, version: &str, value: &Value) -> Result<[u8; 32]> {
    digest_with_prefix(&domain.prefix(version)?, value)
}

/// The digest a signature covers: `value` with its top-level `signature` member removed.
pub fn signing_digest(domain: Domain, version: &str, value: &Value) -> Result<[u8; 32]> {
    let body = canonical_view(value, Some("signature"))?;
    let mut h = Sha256::new();
    h.update(domain.prefix(version)?.as_bytes());
    h.update(&body);
    Ok(h.finalize().into())
}

fn check_numbers(value: &Value, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    match value {
        Value::Number(n) => check_number(n),
        Value::Array(items) => items.iter().try_for_each(|v| check_numbers(v, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| check_numbers(v, depth + 1)),
        _ => Ok(()),
    }
}

fn check_number(n: &serde_json::Number) -> Result<()> {
    if let Some(u) = n.as_u64() {
        return safe_magnitude(u);
    }
    if let Some(i) = n.as_i64() {
        return safe_magnitude(i.unsigned_abs());
    }
    Err(float_error(n.as_f64().unwrap_or(f64::NAN)))
}

fn safe_magnitude(m: u64) -> Result<()> {
    if m > MAX_SAFE_INTEGER {
        return Err(Error::new(
            ErrorCode::JsonNumberOutOfRange,
            format!("integer {m} is outside +-(2^53-1)"),
        ));
    }
    Ok(())
}

fn float_error(f: f64) -> Error {
    if f.is_finite() && f.fract() == 0.0 && f.abs() > MAX_SAFE_INTEGER as f64 {
        Error::new(
            ErrorCode::JsonNumberOutOfRange,
            "integer is outside +-(2^53-1)",
        )
    } else {
        Error::new(
            ErrorCode::JsonNumberNotInteger,
            "non-integer number; amounts are strings and counts are integers",
        )
    }
}

fn too_deep() -> Error {
    Error::new(
        ErrorCode::JsonTooDeep,
        format!("nesting deeper than {MAX_DEPTH} levels"),
    )
}

/// Deserialises one value at `depth`, recording the typed reason for a refusal in `failure`
/// (serde's error type cannot carry our code).
struct StrictSeed<'a> {
    depth: usize,
    failure: &'a Cell<Option<Error>>,
}

impl StrictSeed<'_> {
    fn fail<E: serde::de::Error>(&self, err: Error) -> E {
        let msg = err.message.clone();
        self.failure.set(Some(err));
        E::custom(msg)
    }

    fn child(&self) -> StrictSeed<'_> {
        StrictSeed {
            depth: self.depth + 1,
            failure: self.failure,
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Value, E> {
        safe_magnitude(v.unsigned_abs()).map_err(|e| self.fail(e))?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Value, E> {
        safe_magnitude(v).map_err(|e| self.fail(e))?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        Err(self.fail(float_error(v)))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        if self.depth > MAX_DEPTH {
            return Err(self.fail(too_deep()));
        }
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child())? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        if self.depth > MAX_DEPTH {
            return Err(self.fail(too_deep()));
        }
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.fail(Error::field(
                    ErrorCode::JsonDuplicateKey,
                    key.clone(),
                    format!("duplicate object key {key:?}"),
                )));
            }
            let v = map.next_value_seed(self.child())?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(input: &str) -> ErrorCode {
        parse_strict(input.as_bytes()).unwrap_err().code
    }

    /// The borrowed view serialises exactly what stripping a copy did, and the signing
    /// digest equals the digest of the value with its `signature` removed.
    #[test]
    fn borrowed_view_matches_stripped_copy() {
        let docs = [
            r#"{"b":null,"a":[null,{"z":null,"y":1},[null]],"signature":"s","\u00e9":"x"}"#,
            r#"{"signature":null,"n":{"signature":"inner","k":null}}"#,
            r#"[{"a":null},null,"\ud83d\ude00",{"\ue000":1,"\ud83d\ude00":2}]"#,
            r#""plain""#,
            r#"{}"#,
        ];
        for d in docs {
            let v = parse_strict_str(d).unwrap();
            let old = serde_jcs::to_vec(&strip_nulls(&v)).unwrap();
            assert_eq!(canonical_bytes(&v).unwrap(), old, "{d}");
            let mut unsigned = v.clone();
            if let Value::Object(m) = &mut unsigned {
                m.remove("signature");
            }
            assert_eq!(
                signing_digest(Domain::PolicyGrant, "1.0", &v).unwrap(),
                domain_digest(Domain::PolicyGrant, "1.0", &unsigned).unwrap(),
                "{d}"
            );
        }
        assert_eq!(
            canonical_bytes(&parse_strict_str(r#"{"b":null,"a":[null,{"c":null}]}"#).unwrap())
                .unwrap(),
            br#"{"a":[null,{}]}"#
        );
    }

    #[test]
    fn refuses_ambiguous_input() {
        assert_eq!(code(r#"{"a":1,"a":2}"#), ErrorCode::JsonDuplicateKey);
        assert_eq!(
            code(r#"{"x":{"a":1,"b":{"a":1,"a":1}}}"#),
            ErrorCode::JsonDuplicateKey
        );
        assert_eq!(code(r#"{"a":1.5}"#), ErrorCode::JsonNumberNotInteger);
        assert_eq!(code(r#"{"a":1.0}"#), ErrorCode::JsonNumberNotInteger);
        assert_eq!(code(r#"{"a":1e3}"#), ErrorCode::JsonNumberNotInteger);
        assert_eq!(
            code(r#"{"a":9007199254740992}"#),
            ErrorCode::JsonNumberOutOfRange
        );
        assert_eq!(
            code(r#"{"a":-9007199254740992}"#),
            ErrorCode::JsonNumberOutOfRange
        );
        assert_eq!(code(r#"{"a":1e300}"#), ErrorCode::JsonNumberOutOfRange);
        assert_eq!(
            code(r#"{"a":123456789012345678901234}"#),
            ErrorCode::JsonNumberOutOfRange
        );
        assert_eq!(code("{\"a\":1"), ErrorCode::JsonMalformed);
        assert_eq!(code("{\"a\":1} x"), ErrorCode::JsonMalformed);
        assert_eq!(code(r#"{"a":"\ud800"}"#), ErrorCode::JsonMalformed);
        assert_eq!(
            parse_strict(b"{\"a\":\"\xff\"}").unwrap_err().code,
            ErrorCode::JsonInvalidUtf8
        );
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(code(&deep), ErrorCode::JsonTooDeep);
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_strict(ok.as_bytes()).is_ok());
        let big = format!("\"{}\"", "a".repeat(MAX_DOCUMENT_BYTES));
        assert_eq!(code(&big), ErrorCode::JsonTooLarge);
        assert_eq!(
            parse_strict(br#"{"a":9007199254740991,"b":-9007199254740991}"#).unwrap()["a"],
            9007199254740991u64
        );
    }

    #[test]
    fn canonical_form_sorts_and_omits_nulls() {
        let v = parse_strict(br#"{"b":[null,{"z":null,"y":"\u00e9"}],"a":null,"c":{"e":2,"d":1}}"#)
            .unwrap();
        let c = String::from_utf8(canonical_bytes(&v).unwrap()).unwrap();
        assert_eq!(c, r#"{"b":[null,{"y":"é"}],"c":{"d":1,"e":2}}"#);
    }

    #[test]
    fn canonical_refuses_floats_built_in_code() {
        let v = serde_json::json!({"a": 0.5});
        assert_eq!(
            canonical_bytes(&v).unwrap_err().code,
            ErrorCode::JsonNumberNotInteger
        );
    }

    #[test]
    fn prefixes_are_closed() {
        assert_eq!(
            Domain::PolicyGrant.prefix("1.0").unwrap(),
            "MPCP:PolicyGrant:1.0:"
        );
        assert_eq!(
            Domain::parse_prefix("MPCP:DestinationAllowlist:1.0:")
                .unwrap()
                .0,
            Domain::DestinationAllowlist
        );
        for bad in [
            "MPCP:Foo:1.0:",
            "MPCP:Policy:2.0:",
            "MPCP:Policy:1.0",
            "Policy",
        ] {
            assert_eq!(
                Domain::parse_prefix(bad).unwrap_err().code,
                ErrorCode::CanonicalizationUnsupported,
                "{bad}"
            );
        }
    }
}
