//! Version-gated signature-algorithm policy (`policies/algorithms.toml`).
//!
//! The policy states the MPCP spec version the appliance implements, which algorithms each
//! spec version allows (and which of them each key role may use), and the deprecations that
//! later spec revisions announced, each with an effective instant. Decisions are never cached
//! at load time: every check takes the instant to judge against (normally `Clock::now()` at
//! the call), so a deprecation takes effect at its effective instant without a restart.
//!
//! From a deprecation's effective instant on:
//! - keys of the algorithm can no longer be generated, activated or used to sign
//!   (ALGORITHM_DEPRECATED);
//! - its keys are published with `active: false`;
//! - the verifier ([`AlgorithmGate`]) rejects artifacts signed with it whose `issuedAt` is at or
//!   after the effective instant; an artifact without `issuedAt` counts as newly issued.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::crypto::{Alg, AlgorithmGate};
use crate::error::{Error, ErrorCode, Result};
use crate::seams::key_role::KeyRole;

/// The policy shipped with the appliance (`policies/algorithms.toml`).
pub const BUILTIN_POLICY_TOML: &str = include_str!("../policies/algorithms.toml");

/// A spec version `MAJOR.MINOR`, ordered numerically (1.10 > 1.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl SpecVersion {
    /// Parses `MAJOR.MINOR` (decimal, no sign, no leading zeros beyond a single `0`).
    pub fn parse(s: &str) -> Result<SpecVersion> {
        let bad = || config(format!("spec version {s:?} is not MAJOR.MINOR"));
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let num = |p: &str| -> Result<u32> {
            let canonical = !p.is_empty()
                && p.bytes().all(|c| c.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            if !canonical {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        Ok(SpecVersion {
            major: num(a)?,
            minor: num(b)?,
        })
    }
}

impl std::fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What one spec version allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRules {
    /// Algorithms a verifier of this version accepts.
    pub algorithms: BTreeSet<AlgKey>,
    /// Algorithms each appliance key role may generate and sign with (subset of `algorithms`).
    pub roles: BTreeMap<KeyRole, BTreeSet<AlgKey>>,
}

/// [`Alg`] with a total order, for sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlgKey(u8);

impl AlgKey {
    /// The key of `alg`.
    pub fn of(alg: Alg) -> AlgKey {
        AlgKey(Alg::ALL.iter().position(|a| *a == alg).unwrap_or(0) as u8)
    }
    /// The algorithm.
    pub fn alg(self) -> Alg {
        Alg::ALL[self.0 as usize]
    }
}

/// One announced deprecation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    /// The deprecated algorithm.
    pub algorithm: Alg,
    /// The spec revision that deprecates it.
    pub deprecated_in: SpecVersion,
    /// From this instant on the algorithm is deprecated.
    pub effective: OffsetDateTime,
}

/// The loaded, validated policy. Immutable; share it behind an `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgorithmPolicy {
    implemented: SpecVersion,
    versions: BTreeMap<SpecVersion, VersionRules>,
    deprecations: BTreeMap<AlgKey, Deprecation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    implemented: String,
    #[serde(default)]
    deprecations: Vec<RawDeprecation>,
    versions: BTreeMap<String, RawVersion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    algorithms: Vec<String>,
    roles: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeprecation {
    algorithm: String,
    deprecated_in: String,
    effective: String,
}

fn config(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::ConfigInvalid, msg)
}

fn alg_set(names: &[String], what: &str) -> Result<BTreeSet<AlgKey>> {
    let mut set = BTreeSet::new();
    for n in names {
        let alg = Alg::parse(n).map_err(|_| {
            config(format!(
                "{what}: unknown algorithm {n:?} (EdDSA, ES256K, ES256)"
            ))
        })?;
        if !set.insert(AlgKey::of(alg)) {
            return Err(config(format!("{what}: algorithm {n} listed twice")));
        }
    }
    Ok(set)
}

/// Reads the text file at `path` and parses it with `parse`: IO_ERROR when it cannot be
/// read; a parse error keeps its code and gets the path in front of its message. The policy
/// files (algorithms, bundle profiles) are loaded this way.
pub fn load_file<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorCode::Io,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse(&text).map_err(|e| Error::new(e.code, format!("{}: {}", path.display(), e.message)))
}

impl AlgorithmPolicy {
    /// The policy shipped with the appliance.
    pub fn builtin() -> Result<AlgorithmPolicy> {
        AlgorithmPolicy::from_toml_str(BUILTIN_POLICY_TOML)
    }

    /// Loads a policy file (CONFIG_INVALID on any defect, IO_ERROR when unreadable).
    pub fn load(path: &Path) -> Result<AlgorithmPolicy> {
        load_file(path, AlgorithmPolicy::from_toml_str)
    }

    /// Parses and validates a policy. Refuses unknown keys, algorithm and role names, duplicate
    /// entries, malformed versions and non-RFC 3339 dates, an `implemented` version other than
    /// the one this build implements, role algorithms outside their version's list, an audit
    /// role allowed anything but EdDSA (checkpoints are Ed25519 signed notes), and
    /// deprecations of algorithms no earlier version allowed.
    pub fn from_toml_str(text: &str) -> Result<AlgorithmPolicy> {
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| config(format!("algorithm policy: {e}")))?;
        let implemented = SpecVersion::parse(&raw.implemented)?;
        if raw.implemented != crate::MPCP_SPEC_VERSION {
            return Err(config(format!(
                "algorithm policy states implemented = {:?} but this build implements MPCP {}",
                raw.implemented,
                crate::MPCP_SPEC_VERSION
            )));
        }
        let mut versions = BTreeMap::new();
        for (name, rv) in &raw.versions {
            let v = SpecVersion::parse(name)?;
            if v.to_string() != *name || versions.contains_key(&v) {
                return Err(config(format!(
                    "version {name:?} is not canonical or is repeated"
                )));
            }
            let algorithms = alg_set(&rv.algorithms, &format!("versions.{name}.algorithms"))?;
            if algorithms.is_empty() {
                return Err(config(format!("versions.{name}.algorithms is empty")));
            }
            let mut roles = BTreeMap::new();
            for (role_name, algs) in &rv.roles {
                let role = KeyRole::parse(role_name)?;
                let set = alg_set(algs, &format!("versions.{name}.roles.{role_name}"))?;
                if let Some(extra) = set.difference(&algorithms).next() {
                    return Err(config(format!(
                        "versions.{name}.roles.{role_name}: {} is not among the version's algorithms",
                        extra.alg()
                    )));
                }
                // Checkpoints are C2SP signed notes, whose signatures are Ed25519 only: an
                // audit key of another algorithm could never sign one.
                if role == KeyRole::Audit
                    && let Some(other) = set.iter().find(|a| a.alg() != Alg::EdDSA)
                {
                    return Err(config(format!(
                        "versions.{name}.roles.audit: {} is not allowed; audit checkpoints are \
                         C2SP signed notes, signed with Ed25519 (EdDSA) only",
                        other.alg()
                    )));
                }
                roles.insert(role, set);
            }
            if let Some(other) = roles
                .get(&KeyRole::ReceiptSigning)
                .and_then(|set| set.iter().find(|a| a.alg() != Alg::ES256))
            {
                return Err(config(format!(
                    "versions.{name}.roles.receipt-signing: {} is not allowed; SEP-2828 \
                     receipts are signed with ES256 only",
                    other.alg()
                )));
            }
            if let Some(other) = roles
                .get(&KeyRole::XrplAccount)
                .and_then(|set| set.iter().find(|a| a.alg() == Alg::ES256))
            {
                return Err(config(format!(
                    "versions.{name}.roles.xrpl-account: {} is not allowed; XRPL transactions \
                     are signed with ES256K (secp256k1) or EdDSA only",
                    other.alg()
                )));
            }
            // The optional roles may be left out: they are then allowed nothing.
            if let Some(missing) = KeyRole::REQUIRED.iter().find(|r| !roles.contains_key(r)) {
                return Err(config(format!(
                    "versions.{name}.roles: role {missing} is missing"
                )));
            }
            versions.insert(v, VersionRules { algorithms, roles });
        }
        if !versions.contains_key(&implemented) {
            return Err(config(format!(
                "no [versions.\"{implemented}\"] table for the implemented version"
            )));
        }
        let mut deprecations = BTreeMap::new();
        for (i, d) in raw.deprecations.iter().enumerate() {
            let what = format!("deprecations[{i}]");
            let algorithm = Alg::parse(&d.algorithm)
                .map_err(|_| config(format!("{what}: unknown algorithm {:?}", d.algorithm)))?;
            let deprecated_in = SpecVersion::parse(&d.deprecated_in)?;
            let effective = parse_rfc3339(&d.effective, "effective")
                .map_err(|e| config(format!("{what}: {}", e.message)))?;
            let first_allowed = versions
                .iter()
                .find(|(_, r)| r.algorithms.contains(&AlgKey::of(algorithm)))
                .map(|(v, _)| *v);
            match first_allowed {
                Some(v) if v < deprecated_in => {}
                _ => {
                    return Err(config(format!(
                        "{what}: {algorithm} is not allowed by any spec version before {deprecated_in}"
                    )));
                }
            }
            let dep = Deprecation {
                algorithm,
                deprecated_in,
                effective,
            };
            if deprecations.insert(AlgKey::of(algorithm), dep).is_some() {
                return Err(config(format!("{what}: {algorithm} is deprecated twice")));
            }
        }
        Ok(AlgorithmPolicy {
            implemented,
            versions,
            deprecations,
        })
    }

    /// The spec version this appliance implements.
    pub fn implemented(&self) -> SpecVersion {
        self.implemented
    }

    fn rules(&self) -> &VersionRules {
        // Presence checked at load.
        &self.versions[&self.implemented]
    }

    /// Algorithms the implemented version allows (verification side).
    pub fn allowed(&self) -> Vec<Alg> {
        self.rules().algorithms.iter().map(|a| a.alg()).collect()
    }

    /// Algorithms `role` may use under the implemented version.
    pub fn allowed_for_role(&self, role: KeyRole) -> Vec<Alg> {
        self.rules()
            .roles
            .get(&role)
            .map(|s| s.iter().map(|a| a.alg()).collect())
            .unwrap_or_default()
    }

    /// The announced deprecation of `alg`, if any (whether or not it is effective yet).
    pub fn deprecation(&self, alg: Alg) -> Option<&Deprecation> {
        self.deprecations.get(&AlgKey::of(alg))
    }

    /// Whether `alg` is deprecated at instant `at` (at or after its effective instant).
    pub fn is_deprecated_at(&self, alg: Alg, at: OffsetDateTime) -> bool {
        self.deprecation(alg).is_some_and(|d| at >= d.effective)
    }

    /// The first deprecation effective instant strictly after `at`, if any: until then,
    /// every decision of this policy made at `at` stays the same.
    pub fn next_change_after(&self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        self.deprecations
            .values()
            .map(|d| d.effective)
            .filter(|e| *e > at)
            .min()
    }

    /// Whether keys of `alg` are published `active: true` at `now` (not deprecated).
    pub fn publishable(&self, alg: Alg, now: OffsetDateTime) -> bool {
        !self.is_deprecated_at(alg, now)
    }

    fn deprecated_error(&self, alg: Alg) -> Error {
        let msg = match self.deprecation(alg) {
            Some(d) => format!(
                "{alg} is deprecated by MPCP {} since {}",
                d.deprecated_in,
                format_rfc3339(d.effective)
            ),
            None => format!("{alg} is deprecated"),
        };
        Error::field(ErrorCode::AlgorithmDeprecated, "alg", msg)
    }

    /// May `role` sign with `alg` at `now`? ALGORITHM_UNSUPPORTED when the role may not use the
    /// algorithm under the implemented version, ALGORITHM_DEPRECATED when it is deprecated.
    /// Used for key generation, activation and every signature.
    pub fn check_signing(&self, role: KeyRole, alg: Alg, now: OffsetDateTime) -> Result<()> {
        let allowed = self
            .rules()
            .roles
            .get(&role)
            .is_some_and(|s| s.contains(&AlgKey::of(alg)));
        if !allowed {
            return Err(Error::field(
                ErrorCode::AlgorithmUnsupported,
                "alg",
                format!(
                    "role {role} may not use {alg} under MPCP {} (allowed: {})",
                    self.implemented,
                    self.allowed_for_role(role)
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if self.is_deprecated_at(alg, now) {
            return Err(self.deprecated_error(alg));
        }
        Ok(())
    }
}

impl AlgorithmGate for AlgorithmPolicy {
    fn check_artifact(
        &self,
        alg: Alg,
        issued_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<()> {
        if !self.rules().algorithms.contains(&AlgKey::of(alg)) {
            return Err(Error::field(
                ErrorCode::AlgorithmUnsupported,
                "alg",
                format!("{alg} is not allowed by MPCP {}", self.implemented),
            ));
        }
        // An artifact without issuedAt is judged as issued now.
        if self.is_deprecated_at(alg, issued_at.unwrap_or(now)) {
            return Err(self.deprecated_error(alg));
        }
        Ok(())
    }
}

/// Fixtures shared by the unit tests of the algorithm policy and of its users (the key
/// registry, key sets and key publication).
#[cfg(test)]
pub(crate) mod test_fixtures {
    /// The text of an algorithm policy for spec 1.0 that deprecates ES256K in 1.1, effective
    /// at the given RFC 3339 instant (a string literal); a `&'static str`, usable in `const`.
    /// Grant signing allows EdDSA and ES256K, root all three algorithms, audit EdDSA only.
    macro_rules! deprecating_es256k_toml {
        ($effective:literal) => {
            concat!(
                "\nimplemented = \"1.0\"\n[[deprecations]]\nalgorithm = \"ES256K\"\n",
                "deprecated_in = \"1.1\"\neffective = \"",
                $effective,
                "\"\n[versions.\"1.0\"]\nalgorithms = [\"EdDSA\", \"ES256K\", \"ES256\"]\n",
                "[versions.\"1.0\".roles]\ngrant-signing = [\"EdDSA\", \"ES256K\"]\n",
                "root = [\"EdDSA\", \"ES256K\", \"ES256\"]\naudit = [\"EdDSA\"]\n",
            )
        };
    }
    pub(crate) use deprecating_es256k_toml;
}

#[cfg(test)]
mod tests {
    use super::test_fixtures::deprecating_es256k_toml;
    use super::*;
    use crate::clock::{Clock, FixedClock};

    #[test]
    fn the_shared_fixture_is_the_policy_text_it_replaced() {
        let expected = r#"
implemented = "1.0"
[[deprecations]]
algorithm = "ES256K"
deprecated_in = "1.1"
effective = "2027-07-01T00:00:00Z"
[versions."1.0"]
algorithms = ["EdDSA", "ES256K", "ES256"]
[versions."1.0".roles]
grant-signing = ["EdDSA", "ES256K"]
root = ["EdDSA", "ES256K", "ES256"]
audit = ["EdDSA"]
"#;
        assert_eq!(WITH_DEPRECATION, expected);
    }

    const WITH_DEPRECATION: &str = deprecating_es256k_toml!("2027-07-01T00:00:00Z");

    fn t(s: &str) -> OffsetDateTime {
        parse_rfc3339(s, "t").unwrap()
    }

    #[test]
    fn receipt_role_is_optional_and_es256_only() {
        let p = AlgorithmPolicy::builtin().unwrap();
        assert_eq!(
            p.allowed_for_role(KeyRole::ReceiptSigning),
            vec![Alg::ES256]
        );
        // A policy written before receipts allows the role nothing.
        let old = AlgorithmPolicy::from_toml_str(WITH_DEPRECATION).unwrap();
        assert!(old.allowed_for_role(KeyRole::ReceiptSigning).is_empty());
        let bad = BUILTIN_POLICY_TOML.replace(
            r#"receipt-signing = ["ES256"]"#,
            r#"receipt-signing = ["ES256", "EdDSA"]"#,
        );
        let e = AlgorithmPolicy::from_toml_str(&bad).unwrap_err();
        assert!(e.message.contains("receipt-signing"), "{}", e.message);
    }

    #[test]
    fn builtin_policy_loads_and_deprecates_nothing() {
        let p = AlgorithmPolicy::builtin().unwrap();
        assert_eq!(p.implemented().to_string(), crate::MPCP_SPEC_VERSION);
        assert_eq!(p.allowed(), vec![Alg::EdDSA, Alg::ES256K, Alg::ES256]);
        assert_eq!(
            p.allowed_for_role(KeyRole::GrantSigning),
            vec![Alg::EdDSA, Alg::ES256K]
        );
        let far = t("2999-01-01T00:00:00Z");
        for alg in Alg::ALL {
            assert!(p.deprecation(alg).is_none());
            assert!(p.check_artifact(alg, None, far).is_ok());
            assert!(p.check_signing(KeyRole::Root, alg, far).is_ok());
        }
        // Audit keys sign C2SP notes: EdDSA only.
        assert_eq!(p.allowed_for_role(KeyRole::Audit), vec![Alg::EdDSA]);
        for alg in [Alg::ES256K, Alg::ES256] {
            assert_eq!(
                p.check_signing(KeyRole::Audit, alg, far).unwrap_err().code,
                ErrorCode::AlgorithmUnsupported
            );
        }
        // Grants are never signed with ES256 (documented decision).
        assert_eq!(
            p.check_signing(KeyRole::GrantSigning, Alg::ES256, far)
                .unwrap_err()
                .code,
            ErrorCode::AlgorithmUnsupported
        );
    }

    #[test]
    fn deprecation_takes_effect_at_the_instant_without_reload() {
        let p = AlgorithmPolicy::from_toml_str(WITH_DEPRECATION).unwrap();
        let clock = FixedClock::new(t("2027-06-30T23:59:59Z"));
        let before_eff = t("2027-06-30T12:00:00Z");
        // Before the effective instant: everything allowed.
        assert!(
            p.check_signing(KeyRole::GrantSigning, Alg::ES256K, clock.now())
                .is_ok()
        );
        assert!(p.publishable(Alg::ES256K, clock.now()));
        assert!(p.check_artifact(Alg::ES256K, None, clock.now()).is_ok());
        // At the effective instant, same policy object.
        clock.advance(std::time::Duration::from_secs(1));
        let now = clock.now();
        let code = |r: Result<()>| r.unwrap_err().code;
        assert_eq!(
            code(p.check_signing(KeyRole::GrantSigning, Alg::ES256K, now)),
            ErrorCode::AlgorithmDeprecated
        );
        assert!(!p.publishable(Alg::ES256K, now));
        assert_eq!(p.next_change_after(before_eff), Some(now));
        assert_eq!(p.next_change_after(now), None);
        // Verifier: artifacts issued before the date still verify; newer ones and ones without
        // issuedAt are refused.
        assert!(p.check_artifact(Alg::ES256K, Some(before_eff), now).is_ok());
        assert_eq!(
            code(p.check_artifact(Alg::ES256K, Some(now), now)),
            ErrorCode::AlgorithmDeprecated
        );
        assert_eq!(
            code(p.check_artifact(Alg::ES256K, None, now)),
            ErrorCode::AlgorithmDeprecated
        );
        // Other algorithms unaffected.
        assert!(
            p.check_signing(KeyRole::GrantSigning, Alg::EdDSA, now)
                .is_ok()
        );
        assert!(p.check_artifact(Alg::EdDSA, None, now).is_ok());
        // Role restriction is independent of deprecation.
        assert_eq!(
            code(p.check_signing(KeyRole::Audit, Alg::ES256, now)),
            ErrorCode::AlgorithmUnsupported
        );
    }

    #[test]
    fn strict_loading_refuses_defects() {
        let refuse = |from: &str, to: &str| {
            let text = WITH_DEPRECATION.replacen(from, to, 1);
            assert_ne!(text, WITH_DEPRECATION, "edit {from:?} did not apply");
            let e = AlgorithmPolicy::from_toml_str(&text).unwrap_err();
            assert_eq!(e.code, ErrorCode::ConfigInvalid, "{from:?} -> {to:?}: {e}");
        };
        refuse("algorithm = \"ES256K\"", "algorithm = \"RS256\"");
        refuse(
            "effective = \"2027-07-01T00:00:00Z\"",
            "effective = \"2027-07-01\"",
        );
        refuse(
            "effective = \"2027-07-01T00:00:00Z\"",
            "effective = \"soon\"",
        );
        refuse("deprecated_in = \"1.1\"", "deprecated_in = \"1.0\"");
        refuse("deprecated_in = \"1.1\"", "deprecated_in = \"v1.1\"");
        refuse("implemented = \"1.0\"", "implemented = \"1.1\"");
        refuse(
            "algorithms = [\"EdDSA\", \"ES256K\", \"ES256\"]",
            "algorithms = [\"EdDSA\", \"HS256\"]",
        );
        refuse(
            "algorithms = [\"EdDSA\", \"ES256K\", \"ES256\"]",
            "algorithms = [\"EdDSA\", \"EdDSA\"]",
        );
        refuse("audit = [\"EdDSA\"]", "gateway = [\"EdDSA\"]");
        refuse("audit = [\"EdDSA\"]", "audit = [\"EdDSA\"]\nextra = 1");
        refuse("audit = [\"EdDSA\"]", "");
        // Audit keys sign C2SP notes: Ed25519 only.
        refuse("audit = [\"EdDSA\"]", "audit = [\"EdDSA\", \"ES256\"]");
        refuse("audit = [\"EdDSA\"]", "audit = [\"ES256K\"]");
        refuse(
            "grant-signing = [\"EdDSA\", \"ES256K\"]",
            "grant-signing = [\"EdDSA\", \"ES384\"]",
        );
        refuse("[versions.\"1.0\"]", "[versions.\"01.0\"]");
        refuse("implemented = \"1.0\"", "implemented = \"1.0\"\nexpiry = 3");
        // A second deprecation of the same algorithm.
        let twice = format!(
            "{WITH_DEPRECATION}\n[[deprecations]]\nalgorithm = \"ES256K\"\ndeprecated_in = \"1.2\"\neffective = \"2028-01-01T00:00:00Z\"\n"
        );
        assert_eq!(
            AlgorithmPolicy::from_toml_str(&twice).unwrap_err().code,
            ErrorCode::ConfigInvalid
        );
    }

    #[test]
    fn spec_versions_order_numerically() {
        assert!(SpecVersion::parse("1.10").unwrap() > SpecVersion::parse("1.9").unwrap());
        for bad in ["1", "1.", ".1", "1.0.0", "1.-1", "+1.0", "1.01"] {
            assert!(SpecVersion::parse(bad).is_err(), "{bad}");
        }
    }
}
