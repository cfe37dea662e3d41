//! Trust-bundle assurance profiles (policies/bundle-profiles.toml): how long the appliance
//! may sign a trust bundle for, per profile. No profile may exceed 7 days, whatever a file
//! says; low-assurance IoT bundles of up to 30 days are something verifiers tolerate
//! ([`crate::model::bundle::MAX_BUNDLE_LIFETIME`]), never something this PA issues.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, ErrorCode, Result};

/// The profiles file shipped with the appliance.
pub const BUILTIN_PROFILES_TOML: &str = include_str!("../policies/bundle-profiles.toml");

/// Longest lifetime any profile may allow.
pub const PROFILE_CEILING: Duration = Duration::from_secs(7 * 24 * 3600);

/// The request member that names a bundle's profile (kept in the signed bundle).
pub const PROFILE_MEMBER: &str = "assuranceProfile";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfiles {
    default: String,
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    max_lifetime_seconds: u64,
}

/// Validated profiles: each with a lifetime in (0, 7 days], and a default that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleProfiles {
    default: String,
    max_lifetime: BTreeMap<String, Duration>,
}

fn config(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::ConfigInvalid, msg)
}

impl BundleProfiles {
    /// The built-in profiles.
    pub fn builtin() -> Result<BundleProfiles> {
        BundleProfiles::from_toml_str(BUILTIN_PROFILES_TOML)
    }

    /// Loads a profiles file (CONFIG_INVALID on any defect, IO_ERROR when unreadable).
    pub fn load(path: &Path) -> Result<BundleProfiles> {
        crate::algorithms::load_file(path, BundleProfiles::from_toml_str)
    }

    /// Parses and validates profiles: unknown keys, an empty set, a zero lifetime, a
    /// lifetime over [`PROFILE_CEILING`], a profile name outside `[a-z0-9-]{1,32}` and a
    /// default that names no profile are refused.
    pub fn from_toml_str(text: &str) -> Result<BundleProfiles> {
        let raw: RawProfiles =
            toml::from_str(text).map_err(|e| config(format!("bundle profiles: {e}")))?;
        if raw.profiles.is_empty() {
            return Err(config("bundle profiles: no profile defined"));
        }
        let mut max_lifetime = BTreeMap::new();
        for (name, p) in raw.profiles {
            let valid_name = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_name {
                return Err(config(format!(
                    "bundle profiles: profile name {name:?} is not 1-32 of a-z 0-9 -"
                )));
            }
            let life = Duration::from_secs(p.max_lifetime_seconds);
            if life.is_zero() || life > PROFILE_CEILING {
                return Err(config(format!(
                    "bundle profiles: {name}: max_lifetime_seconds must be 1..={}",
                    PROFILE_CEILING.as_secs()
                )));
            }
            max_lifetime.insert(name, life);
        }
        if !max_lifetime.contains_key(&raw.default) {
            return Err(config(format!(
                "bundle profiles: default {:?} is not a defined profile",
                raw.default
            )));
        }
        Ok(BundleProfiles {
            default: raw.default,
            max_lifetime,
        })
    }

    /// The profile applied when a request names none.
    pub fn default_profile(&self) -> &str {
        &self.default
    }

    /// The longest lifetime of `profile` (SCHEMA_INVALID on `assuranceProfile` when unknown).
    pub fn max_lifetime(&self, profile: &str) -> Result<Duration> {
        self.max_lifetime.get(profile).copied().ok_or_else(|| {
            let known: Vec<&str> = self.max_lifetime.keys().map(String::as_str).collect();
            Error::field(
                ErrorCode::SchemaInvalid,
                PROFILE_MEMBER,
                format!(
                    "unknown assurance profile {profile:?} (known: {})",
                    known.join(", ")
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_follow_the_guidance() {
        let p = BundleProfiles::builtin().unwrap();
        assert_eq!(p.default_profile(), "standard");
        assert_eq!(
            p.max_lifetime("high-assurance").unwrap().as_secs(),
            6 * 3600
        );
        assert_eq!(p.max_lifetime("standard").unwrap().as_secs(), 24 * 3600);
        assert_eq!(p.max_lifetime("extended").unwrap(), PROFILE_CEILING);
        let e = p.max_lifetime("iot").unwrap_err();
        assert_eq!(e.code, ErrorCode::SchemaInvalid);
        assert_eq!(e.field.as_deref(), Some(PROFILE_MEMBER));
    }

    #[test]
    fn defective_files_are_refused() {
        let ok = "default = \"a\"\n[profiles.a]\nmax_lifetime_seconds = 3600\n";
        assert!(BundleProfiles::from_toml_str(ok).is_ok());
        for bad in [
            "default = \"b\"\n[profiles.a]\nmax_lifetime_seconds = 3600\n",
            "default = \"a\"\n[profiles.a]\nmax_lifetime_seconds = 604801\n",
            "default = \"a\"\n[profiles.a]\nmax_lifetime_seconds = 0\n",
            "default = \"a\"\n[profiles.a]\nmax_lifetime_seconds = 3600\nmin = 1\n",
            "default = \"a\"\n[profiles.a]\nmax_lifetime_seconds = 3.5\n",
            "default = \"A\"\n[profiles.A]\nmax_lifetime_seconds = 3600\n",
            "default = \"a\"\nprofiles = {}\n",
            "default = \"a\"\n[profiles.a]\nmax_lifetime_seconds = 3600\n[extra]\n",
        ] {
            let e = BundleProfiles::from_toml_str(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::ConfigInvalid, "{bad}");
        }
    }
}
