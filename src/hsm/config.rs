//! The HSM configuration (`pkcs11.toml`): which PKCS#11 module, how many sessions per token,
//! how long one call may take, and for each key role the token and object label prefix.
//!
//! ```toml
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! pool_size = 4                # sessions per token
//! call_timeout_ms = 5000       # per HSM call
//! backoff_initial_ms = 100     # after a failed recovery attempt; doubled per failure ...
//! backoff_max_ms = 2000        # ... up to this (a token is back this long after its HSM)
//!
//! [tokens.mpcp-grant-signing]
//! pin_env = "MPCP_PA_PIN_GRANT_SIGNING"   # or pin_file = "secrets/grant.pin"
//! # optional: this token's own module (default: the top-level `module`), e.g. a remote
//! # token through p11-kit: module = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
//!
//! [roles.grant-signing]
//! token = "mpcp-grant-signing"
//! label_prefix = "mpcp-pa/grant-signing/"
//! algorithms = ["EdDSA", "ES256K"]
//! ```
//!
//! Guarantees of a loaded [`HsmConfig`]: the three required roles of [`KeyRole`] are bound,
//! the optional `receipt-signing` role may be (gateway or settlement roles are refused by
//! name); each role sits on its own token unless
//! `allow_shared_tokens = true` (development only); every token has exactly one PIN source and
//! no PIN value appears anywhere in the file; relative paths are resolved against the
//! directory of the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::crypto::Alg;
use crate::error::{Error, ErrorCode, Result};
use crate::hsm::pin::PinSource;
use crate::seams::key_role::KeyRole;

/// Default number of sessions per token.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default limit for one HSM call, in milliseconds.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 5_000;
/// Default longest wait between two recovery attempts, in milliseconds. A token comes back
/// at most this long (plus one attempt) after its HSM does; an attempt against an HSM that
/// is still down costs one failed call or connect.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 2_000;
/// Longest accepted token label (PKCS#11 CK_TOKEN_INFO.label is 32 bytes).
pub const MAX_TOKEN_LABEL: usize = 32;

/// The validated HSM configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// SoftHSM2 only: the `softhsm2.conf` this process must use. When set, the backend
    /// points `SOFTHSM2_CONF` at it before initialising the library (one per process).
    pub softhsm2_conf: Option<PathBuf>,
    /// Sessions per token (1..=64).
    pub pool_size: usize,
    /// Limit for one HSM call, including waiting for a free session.
    pub call_timeout: Duration,
    /// First wait after a failed recovery attempt; doubled per further failure.
    pub backoff_initial: Duration,
    /// Longest wait between recovery attempts.
    pub backoff_max: Duration,
    /// Development only: lets several roles share one token.
    pub allow_shared_tokens: bool,
    /// Tokens by label, with their PIN source.
    pub tokens: BTreeMap<String, TokenConfig>,
    /// The binding of every role.
    pub roles: BTreeMap<KeyRole, RoleConfig>,
}

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Where the user PIN is read from.
    pub pin: PinSource,
    /// The PKCS#11 module serving this token, when it is not the top-level `module`.
    pub module: Option<PathBuf>,
}

impl HsmConfig {
    /// The module path serving `token`: its own `module`, else the top-level one.
    pub fn module_of(&self, token: &str) -> &Path {
        self.tokens
            .get(token)
            .and_then(|t| t.module.as_deref())
            .unwrap_or(&self.module)
    }
}

/// Where one role's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleConfig {
    /// Label of the token holding the role's keys.
    pub token: String,
    /// Prefix of the CKA_LABEL of the role's key objects.
    pub label_prefix: String,
    /// Algorithms the role's keys may use; the startup probe checks the token offers them.
    pub algorithms: Vec<Alg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    module: PathBuf,
    softhsm2_conf: Option<PathBuf>,
    pool_size: Option<usize>,
    call_timeout_ms: Option<u64>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    #[serde(default)]
    allow_shared_tokens: bool,
    #[serde(default)]
    tokens: BTreeMap<String, RawToken>,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
    module: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    token: String,
    label_prefix: String,
    algorithms: Option<Vec<String>>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::ConfigInvalid, msg)
}

/// Keys that would hold a secret value rather than name where it is kept.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "pin" || k.ends_with("_pin") || k.ends_with("-pin") || k == "password" || k == "passphrase"
}

fn find_secret_key(value: &toml::Value, path: &str) -> Option<String> {
    match value {
        toml::Value::Table(t) => t.iter().find_map(|(k, v)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if is_secret_key(k) {
                Some(here)
            } else {
                find_secret_key(v, &here)
            }
        }),
        toml::Value::Array(a) => a.iter().find_map(|v| find_secret_key(v, path)),
        _ => None,
    }
}

impl HsmConfig {
    /// Reads and validates a configuration file; relative paths in it are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<HsmConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorCode::ConfigInvalid,
                format!("cannot read HSM configuration {}: {e}", path.display()),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        HsmConfig::parse(&text, base).map_err(|mut e| {
            e.message = format!("{}: {}", path.display(), e.message);
            e
        })
    }

    /// Parses and validates configuration text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<HsmConfig> {
        let value: toml::Value = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        if let Some(key) = find_secret_key(&value, "") {
            return Err(Error::field(
                ErrorCode::ConfigInvalid,
                key,
                "PIN values are never accepted in the configuration: name where the PIN is \
                 kept with pin_env (environment variable) or pin_file (file readable only by \
                 the service user)",
            ));
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

        let pool_size = raw.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if !(1..=64).contains(&pool_size) {
            return Err(Error::field(
                ErrorCode::ConfigInvalid,
                "pool_size",
                "pool_size must be 1..=64",
            ));
        }
        let ms = |v: Option<u64>, default: u64, name: &str| -> Result<Duration> {
            let v = v.unwrap_or(default);
            if !(1..=600_000).contains(&v) {
                return Err(Error::field(
                    ErrorCode::ConfigInvalid,
                    name,
                    format!("{name} must be 1..=600000"),
                ));
            }
            Ok(Duration::from_millis(v))
        };
        let call_timeout = ms(
            raw.call_timeout_ms,
            DEFAULT_CALL_TIMEOUT_MS,
            "call_timeout_ms",
        )?;
        let backoff_initial = ms(raw.backoff_initial_ms, 100, "backoff_initial_ms")?;
        let backoff_max = ms(raw.backoff_max_ms, DEFAULT_BACKOFF_MAX_MS, "backoff_max_ms")?;
        if backoff_max < backoff_initial {
            return Err(Error::field(
                ErrorCode::ConfigInvalid,
                "backoff_max_ms",
                "backoff_max_ms must not be below backoff_initial_ms",
            ));
        }

        let mut tokens = BTreeMap::new();
        for (label, t) in raw.tokens {
            let field = format!("tokens.{label}");
            if label.is_empty() || label.len() > MAX_TOKEN_LABEL || label.trim() != label {
                return Err(Error::field(
                    ErrorCode::ConfigInvalid,
                    field,
                    format!("token label must be 1..={MAX_TOKEN_LABEL} bytes without outer spaces"),
                ));
            }
            let pin = match (t.pin_env, t.pin_file) {
                (Some(v), None) if !v.is_empty() => PinSource::Env(v),
                (None, Some(p)) => PinSource::File(resolve(p)),
                _ => {
                    return Err(Error::field(
                        ErrorCode::ConfigInvalid,
                        field,
                        "give exactly one of pin_env or pin_file",
                    ));
                }
            };
            let module = t.module.map(resolve);
            tokens.insert(label, TokenConfig { pin, module });
        }

        let mut roles = BTreeMap::new();
        for (name, r) in raw.roles {
            let role = KeyRole::parse(&name).map_err(|e| e.within("roles"))?;
            let field = format!("roles.{name}");
            if !tokens.contains_key(&r.token) {
                return Err(Error::field(
                    ErrorCode::ConfigInvalid,
                    format!("{field}.token"),
                    format!("token {:?} is not declared under [tokens]", r.token),
                ));
            }
            let p = &r.label_prefix;
            if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::field(
                    ErrorCode::ConfigInvalid,
                    format!("{field}.label_prefix"),
                    "label_prefix must be 1..=64 printable ASCII characters",
                ));
            }
            let algorithms = match r.algorithms {
                // SEP-2828 receipts are ES256, RS256 or HS256: of the token algorithms this
                // appliance signs with, only ES256.
                // SEP-2828 receipts are ES256 and the XRPL signs with secp256k1 or Ed25519 only;
                // the required roles may have every token algorithm (the algorithm policy
                // narrows them).
                None if role.is_optional() => role.possible_algs().to_vec(),
                None => Alg::ALL.to_vec(),
                Some(names) => {
                    let mut algs = Vec::new();
                    for n in names {
                        let a =
                            Alg::parse(&n).map_err(|e| e.within(&format!("{field}.algorithms")))?;
                        if !algs.contains(&a) {
                            algs.push(a);
                        }
                    }
                    if algs.is_empty() {
                        return Err(Error::field(
                            ErrorCode::ConfigInvalid,
                            format!("{field}.algorithms"),
                            "a role needs at least one algorithm",
                        ));
                    }
                    algs
                }
            };
            if role.is_optional()
                && let Some(other) = algorithms
                    .iter()
                    .find(|a| !role.possible_algs().contains(a))
            {
                let why = match role {
                    KeyRole::ReceiptSigning => "receipts are signed with ES256 only",
                    _ => "XRPL transactions are signed with ES256K (secp256k1) or EdDSA only",
                };
                return Err(Error::field(
                    ErrorCode::ConfigInvalid,
                    format!("{field}.algorithms"),
                    format!("{other} is not allowed: {why}"),
                ));
            }
            roles.insert(
                role,
                RoleConfig {
                    token: r.token,
                    label_prefix: r.label_prefix,
                    algorithms,
                },
            );
        }
        for role in KeyRole::REQUIRED {
            if !roles.contains_key(&role) {
                return Err(Error::field(
                    ErrorCode::ConfigInvalid,
                    format!("roles.{role}"),
                    format!("role {role} is not configured"),
                ));
            }
        }

        let mut used: BTreeMap<&str, Vec<KeyRole>> = BTreeMap::new();
        for (role, rc) in &roles {
            used.entry(rc.token.as_str()).or_default().push(*role);
        }
        for (token, rs) in &used {
            if rs.len() > 1 && !raw.allow_shared_tokens {
                let names: Vec<&str> = rs.iter().map(|r| r.as_str()).collect();
                return Err(invalid(format!(
                    "roles {} share token {token:?}: each role must have its own token \
                     (set allow_shared_tokens = true for development only)",
                    names.join(", ")
                )));
            }
        }
        if let Some(unused) = tokens.keys().find(|t| !used.contains_key(t.as_str())) {
            return Err(Error::field(
                ErrorCode::ConfigInvalid,
                format!("tokens.{unused}"),
                format!("token {unused:?} is not used by any role"),
            ));
        }
        let prefixes: BTreeSet<&str> = roles.values().map(|r| r.label_prefix.as_str()).collect();
        if prefixes.len() != roles.len() {
            return Err(invalid("every role needs its own label_prefix"));
        }

        Ok(HsmConfig {
            module: resolve(raw.module),
            softhsm2_conf: raw.softhsm2_conf.map(resolve),
            pool_size,
            call_timeout,
            backoff_initial,
            backoff_max,
            allow_shared_tokens: raw.allow_shared_tokens,
            tokens,
            roles,
        })
    }

    /// The binding of `role` (present in every configuration that went through
    /// [`HsmConfig::parse`]; a hand-built one may lack it).
    pub fn role(&self, role: KeyRole) -> Result<&RoleConfig> {
        self.roles
            .get(&role)
            .ok_or_else(|| invalid(format!("role {role} is not configured")))
    }
}

/// A TOML error without echoing input that may sit next to a secret: the position is given,
/// and the parser's message only when the offending line does not mention a PIN.
fn toml_error(text: &str, e: &toml::de::Error) -> Error {
    let (line, col, line_text) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            let line_text = text.lines().nth(line - 1).unwrap_or("");
            (line, col, line_text)
        }
        None => (0, 0, ""),
    };
    let msg = if line_text.to_ascii_lowercase().contains("pin") {
        "invalid PIN setting (value not shown)".to_string()
    } else {
        e.message().to_string()
    };
    invalid(format!(
        "HSM configuration line {line}, column {col}: {msg}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
module = "/usr/lib/softhsm/libsofthsm2.so"
pool_size = 2
[tokens.tok-a]
pin_env = "PIN_A"
[tokens.tok-b]
pin_file = "secrets/b.pin"
[tokens.tok-c]
pin_file = "/abs/c.pin"
[roles.grant-signing]
token = "tok-a"
label_prefix = "g/"
algorithms = ["EdDSA", "ES256K"]
[roles.root]
token = "tok-b"
label_prefix = "r/"
[roles.audit]
token = "tok-c"
label_prefix = "a/"
algorithms = ["EdDSA"]
"#;

    #[test]
    fn good_config_resolves_paths_and_defaults() {
        let c = HsmConfig::parse(GOOD, Path::new("/data")).unwrap();
        assert_eq!(c.pool_size, 2);
        assert_eq!(
            c.call_timeout,
            Duration::from_millis(DEFAULT_CALL_TIMEOUT_MS)
        );
        assert_eq!(
            c.tokens["tok-b"].pin,
            PinSource::File("/data/secrets/b.pin".into())
        );
        assert_eq!(c.tokens["tok-c"].pin, PinSource::File("/abs/c.pin".into()));
        assert_eq!(c.role(KeyRole::Root).unwrap().algorithms, Alg::ALL.to_vec());
        assert_eq!(c.role(KeyRole::Audit).unwrap().algorithms, vec![Alg::EdDSA]);
    }

    #[test]
    fn a_token_may_name_its_own_module() {
        let t = GOOD.replace(
            "pin_file = \"secrets/b.pin\"",
            "pin_file = \"secrets/b.pin\"\nmodule = \"lib/remote.so\"",
        );
        let c = HsmConfig::parse(&t, Path::new("/data")).unwrap();
        assert_eq!(c.module_of("tok-b"), Path::new("/data/lib/remote.so"));
        assert_eq!(
            c.module_of("tok-a"),
            Path::new("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(c.tokens["tok-a"].module, None);
    }

    #[test]
    fn pin_values_are_refused_without_echo() {
        let t = GOOD.replace("pin_env = \"PIN_A\"", "pin = \"9876543210\"");
        let e = HsmConfig::parse(&t, Path::new("/")).unwrap_err();
        assert_eq!(e.code, ErrorCode::ConfigInvalid);
        assert_eq!(e.field.as_deref(), Some("tokens.tok-a.pin"));
        assert!(!e.message.contains("9876543210"));
        let t = GOOD.replace("pool_size = 2", "so_pin = \"1111\"");
        assert!(HsmConfig::parse(&t, Path::new("/")).is_err());
        // A syntax error on a PIN line does not echo the line.
        let t = GOOD.replace("pin_env = \"PIN_A\"", "pin_env = \"sec ret");
        let e = HsmConfig::parse(&t, Path::new("/")).unwrap_err();
        assert!(!e.message.contains("sec ret"), "{}", e.message);
        // A wrongly typed value on a PIN line is not echoed either.
        let t = GOOD.replace("pin_env = \"PIN_A\"", "pin_env = 31337");
        let e = HsmConfig::parse(&t, Path::new("/")).unwrap_err();
        assert!(!e.message.contains("31337"), "{}", e.message);
    }

    #[test]
    fn exactly_one_pin_source() {
        let t = GOOD.replace("pin_env = \"PIN_A\"", "pin_env = \"A\"\npin_file = \"x\"");
        assert!(HsmConfig::parse(&t, Path::new("/")).is_err());
        let t = GOOD.replace("pin_env = \"PIN_A\"", "");
        assert!(HsmConfig::parse(&t, Path::new("/")).is_err());
    }

    #[test]
    fn roles_are_exactly_the_three() {
        let t = format!(
            "{GOOD}\n[roles.gateway-settlement]\ntoken = \"tok-a\"\nlabel_prefix = \"x/\"\n"
        );
        let e = HsmConfig::parse(&t, Path::new("/")).unwrap_err();
        assert!(e.message.contains("never holds"), "{}", e.message);
        let t = GOOD.replace(
            "[roles.audit]\ntoken = \"tok-c\"\nlabel_prefix = \"a/\"\nalgorithms = [\"EdDSA\"]\n",
            "",
        );
        let e = HsmConfig::parse(&t, Path::new("/")).unwrap_err();
        assert!(e.message.contains("audit"), "{}", e.message);
    }

    #[test]
    fn shared_tokens_need_the_dev_flag() {
        let t = GOOD
            .replace("token = \"tok-c\"", "token = \"tok-a\"")
            .replace("[tokens.tok-c]\npin_file = \"/abs/c.pin\"\n", "");
        let e = HsmConfig::parse(&t, Path::new("/")).unwrap_err();
        assert!(e.message.contains("share token"), "{}", e.message);
        let t = format!("allow_shared_tokens = true\n{t}");
        let c = HsmConfig::parse(&t, Path::new("/")).unwrap();
        assert!(c.allow_shared_tokens);
    }

    #[test]
    fn unknown_keys_algorithms_and_unused_tokens_are_refused() {
        let t = GOOD.replace("pool_size = 2", "pool_size = 2\ntimeout = 5");
        assert!(HsmConfig::parse(&t, Path::new("/")).is_err());
        let t = GOOD.replace("[\"EdDSA\"]", "[\"ES384\"]");
        assert_eq!(
            HsmConfig::parse(&t, Path::new("/")).unwrap_err().code,
            ErrorCode::AlgorithmUnsupported
        );
        let t = format!("{GOOD}\n[tokens.spare]\npin_env = \"X\"\n");
        assert!(HsmConfig::parse(&t, Path::new("/")).is_err());
        let t = GOOD.replace("pool_size = 2", "pool_size = 0");
        assert!(HsmConfig::parse(&t, Path::new("/")).is_err());
    }
}
