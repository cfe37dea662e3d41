//! PolicyGrant: the PA-signed spending envelope (flat object, `signature` inside).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    check_credential_type, check_id, check_sha256_hex, check_version, from_value, parse_amount,
    parse_time,
};
use crate::error::{Error, ErrorCode, Result};
use crate::xrpl::validate_classic_address;

/// Grant scopes MPCP v1.0 defines.
pub const SCOPES: [&str; 3] = ["SESSION", "VEHICLE", "FLEET"];

/// An asset a grant allows. ERC20 is parsed only so it can be refused by name (not in v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum Asset {
    /// Native XRP.
    #[serde(rename = "XRP")]
    Xrp,
    /// An issued currency.
    #[serde(rename = "IOU")]
    Iou {
        /// Currency code (2-10 uppercase letters/digits).
        currency: String,
        /// XRPL classic address of the issuer.
        issuer: String,
    },
    /// Not allowed in MPCP v1 (refused by validation).
    #[serde(rename = "ERC20", rename_all = "camelCase")]
    Erc20 {
        /// EVM chain id.
        chain_id: u64,
        /// Token contract.
        token: String,
    },
}

/// Gateway-enforced settlement frequency cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VelocityLimit {
    /// Payments allowed per window (>= 1).
    pub max_payments: u64,
    /// Window length in seconds (>= 1).
    pub window_seconds: u64,
}

/// Policy-layer spending caps (minor units, strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxSpend {
    /// Per-transaction cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_tx_minor: Option<String>,
    /// Per-session cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_session_minor: Option<String>,
    /// Per-day cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day_minor: Option<String>,
}

/// A PolicyGrant. Optional members the spec defines are typed; anything else is kept in
/// `extra` and serialised back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct PolicyGrant {
    pub version: String,
    pub grant_id: String,
    pub policy_hash: String,
    pub subject_id: String,
    pub scope: String,
    pub allowed_rails: Vec<String>,
    pub expires_at: String,
    pub issuer: String,
    pub issuer_key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Required for conformance; optional here so its absence is GRANT_NOT_CONFORMING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_gateway: Option<String>,
    /// Required for conformance; optional here so its absence is GRANT_NOT_CONFORMING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity_limit: Option<VelocityLimit>,
    /// Must be absent on conforming grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_assets: Option<Vec<Asset>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spend: Option<MaxSpend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_grant_credential_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_purposes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_minor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_escrow_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_credential_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_credential_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_allowlist: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_credential_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_credential_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_credential_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_credential_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_max_single_payment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_max_single_payment_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_max_cumulative_payment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_max_cumulative_payment_currency: Option<String>,
    /// Members this implementation does not interpret, preserved exactly.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn not_conforming(field: &str, msg: impl Into<String>) -> Error {
    Error::field(ErrorCode::GrantNotConforming, field, msg)
}

impl PolicyGrant {
    /// Parses a grant from a strict JSON value (structure only; see [`PolicyGrant::validate`]).
    pub fn from_value(value: &Value) -> Result<PolicyGrant> {
        from_value(value, "PolicyGrant")
    }

    /// Checks MPCP v1 conformance only (the four rules and ERC20), with GRANT_NOT_CONFORMING.
    pub fn check_conformance(&self) -> Result<()> {
        if self.allowed_rails != ["xrpl"] {
            return Err(not_conforming(
                "allowedRails",
                format!(
                    "allowedRails must be exactly [\"xrpl\"], got {:?}",
                    self.allowed_rails
                ),
            ));
        }
        if self.authorized_gateway.is_none() {
            return Err(not_conforming(
                "authorizedGateway",
                "authorizedGateway is required",
            ));
        }
        match &self.velocity_limit {
            None => return Err(not_conforming("velocityLimit", "velocityLimit is required")),
            Some(v) if v.max_payments < 1 || v.window_seconds < 1 => {
                return Err(not_conforming(
                    "velocityLimit",
                    "velocityLimit.maxPayments and windowSeconds must be integers >= 1",
                ));
            }
            Some(_) => {}
        }
        if self.revocation_endpoint.is_some() {
            return Err(not_conforming(
                "revocationEndpoint",
                "revocationEndpoint must not be present (MPCP v1 revokes with XLS-70 credentials)",
            ));
        }
        for (i, a) in self.allowed_assets.iter().flatten().enumerate() {
            if matches!(a, Asset::Erc20 { .. }) {
                return Err(not_conforming(
                    &format!("allowedAssets[{i}]"),
                    "ERC20 assets are not part of MPCP v1",
                ));
            }
        }
        Ok(())
    }

    /// Full validation: version, identifiers, conformance, every XRPL address, amounts,
    /// timestamps, credential types, anchorRef and amount consistency.
    pub fn validate(&self) -> Result<()> {
        check_version(&self.version)?;
        check_id(&self.grant_id, "grantId")?;
        check_sha256_hex(&self.policy_hash, "policyHash")?;
        check_id(&self.subject_id, "subjectId")?;
        check_id(&self.issuer, "issuer")?;
        check_id(&self.issuer_key_id, "issuerKeyId")?;
        if !SCOPES.contains(&self.scope.as_str()) {
            return Err(Error::field(
                ErrorCode::ScopeUnsupported,
                "scope",
                format!("scope {:?} is not one of {SCOPES:?}", self.scope),
            ));
        }
        self.check_conformance()?;
        parse_time(&self.expires_at, "expiresAt")?;
        if let Some(t) = &self.issued_at {
            parse_time(t, "issuedAt")?;
        }
        self.check_addresses()?;
        self.check_credential_types()?;
        self.check_anchor_ref()?;
        self.check_amounts()
    }

    fn check_addresses(&self) -> Result<()> {
        let singles = [
            ("authorizedGateway", &self.authorized_gateway),
            (
                "activeGrantCredentialIssuer",
                &self.active_grant_credential_issuer,
            ),
            ("gatewayCredentialIssuer", &self.gateway_credential_issuer),
            ("merchantCredentialIssuer", &self.merchant_credential_issuer),
            ("subjectCredentialIssuer", &self.subject_credential_issuer),
        ];
        for (field, value) in singles {
            if let Some(a) = value {
                validate_classic_address(a, field)?;
            }
        }
        for (i, a) in self.destination_allowlist.iter().flatten().enumerate() {
            validate_classic_address(a, &format!("destinationAllowlist[{i}]"))?;
        }
        for (i, asset) in self.allowed_assets.iter().flatten().enumerate() {
            if let Asset::Iou { currency, issuer } = asset {
                let ok = (2..=10).contains(&currency.len())
                    && currency
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                if !ok {
                    return Err(Error::field(
                        ErrorCode::SchemaInvalid,
                        format!("allowedAssets[{i}].currency"),
                        "IOU currency must be 2-10 uppercase letters or digits",
                    ));
                }
                validate_classic_address(issuer, &format!("allowedAssets[{i}].issuer"))?;
            }
        }
        Ok(())
    }

    fn check_credential_types(&self) -> Result<()> {
        let types = [
            ("gatewayCredentialType", &self.gateway_credential_type),
            ("merchantCredentialType", &self.merchant_credential_type),
            ("subjectCredentialType", &self.subject_credential_type),
        ];
        for (field, value) in types {
            if let Some(t) = value {
                check_credential_type(t, field)?;
            }
        }
        Ok(())
    }

    fn check_anchor_ref(&self) -> Result<()> {
        let Some(anchor) = &self.anchor_ref else {
            return Ok(());
        };
        if anchor.starts_with("xrpl:nft:") {
            return Err(not_conforming(
                "anchorRef",
                "anchorRef xrpl:nft: is deprecated and must not be used; use hcs:{topicId}:{seq}",
            ));
        }
        let parts: Vec<&str> = anchor.split(':').collect();
        let ok = parts.len() == 3
            && parts[0] == "hcs"
            && !parts[1].is_empty()
            && parts[1].bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && !parts[2].is_empty()
            && parts[2].bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(Error::field(
                ErrorCode::SchemaInvalid,
                "anchorRef",
                "anchorRef must be hcs:{topicId}:{sequenceNumber}",
            ));
        }
        Ok(())
    }

    fn check_amounts(&self) -> Result<()> {
        let amount =
            |v: &Option<String>, f: &str| v.as_deref().map(|s| parse_amount(s, f)).transpose();
        let budget = amount(&self.budget_minor, "budgetMinor")?;
        let single = amount(&self.offline_max_single_payment, "offlineMaxSinglePayment")?;
        let cumulative = amount(
            &self.offline_max_cumulative_payment,
            "offlineMaxCumulativePayment",
        )?;
        if let Some(ms) = &self.max_spend {
            amount(&ms.per_tx_minor, "maxSpend.perTxMinor")?;
            amount(&ms.per_session_minor, "maxSpend.perSessionMinor")?;
            amount(&ms.per_day_minor, "maxSpend.perDayMinor")?;
        }
        // Currencies: the cumulative cap falls back to the single-payment currency (spec).
        let budget_cur = self.budget_currency.as_deref();
        let single_cur = self.offline_max_single_payment_currency.as_deref();
        let cumulative_cur = self
            .offline_max_cumulative_payment_currency
            .as_deref()
            .or(single_cur);
        let bounded = |cap: Option<u128>,
                       cap_cur: Option<&str>,
                       cap_field: &str,
                       limit: Option<u128>,
                       limit_cur: Option<&str>,
                       limit_field: &str|
         -> Result<()> {
            let (Some(cap), Some(limit)) = (cap, limit) else {
                return Ok(());
            };
            if let (Some(a), Some(b)) = (cap_cur, limit_cur)
                && a != b
            {
                return Err(Error::field(
                    ErrorCode::AmountInconsistent,
                    cap_field,
                    format!("{cap_field} is in {a} but {limit_field} is in {b}: cannot be bounded"),
                ));
            }
            if cap > limit {
                return Err(Error::field(
                    ErrorCode::AmountInconsistent,
                    cap_field,
                    format!("{cap_field} ({cap}) exceeds {limit_field} ({limit})"),
                ));
            }
            Ok(())
        };
        bounded(
            cumulative,
            cumulative_cur,
            "offlineMaxCumulativePayment",
            budget,
            budget_cur,
            "budgetMinor",
        )?;
        bounded(
            single,
            single_cur,
            "offlineMaxSinglePayment",
            budget,
            budget_cur,
            "budgetMinor",
        )?;
        bounded(
            single,
            single_cur,
            "offlineMaxSinglePayment",
            cumulative,
            cumulative_cur,
            "offlineMaxCumulativePayment",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{canonical_bytes, canonical_bytes_of, parse_strict};
    use crate::xrpl::encode_classic_address;

    fn addr(n: u8) -> String {
        encode_classic_address(&[n; 20])
    }

    fn base() -> Value {
        serde_json::json!({
            "version": "1.0",
            "grantId": "grant-1",
            "policyHash": "b807638320a19a14cc769ccfa37f82998c850eb863074c3b8170c284dce5a711",
            "subjectId": "vehicle-1",
            "scope": "SESSION",
            "allowedRails": ["xrpl"],
            "expiresAt": "2030-01-01T00:00:00Z",
            "issuer": "did:web:pa.example.com",
            "issuerKeyId": "k1",
            "authorizedGateway": addr(1),
            "velocityLimit": {"maxPayments": 10, "windowSeconds": 60},
            "budgetMinor": "1000",
            "budgetCurrency": "XRP",
            "allowedAssets": [{"kind": "XRP"}, {"kind": "IOU", "currency": "RLUSD", "issuer": addr(2)}],
        })
    }

    fn code_with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> ErrorCode {
        let mut v = base();
        f(v.as_object_mut().unwrap());
        match PolicyGrant::from_value(&v).and_then(|g| g.validate()) {
            Ok(()) => panic!("accepted"),
            Err(e) => e.code,
        }
    }

    #[test]
    fn valid_grant_passes() {
        PolicyGrant::from_value(&base())
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn conformance_rules() {
        use ErrorCode::*;
        assert_eq!(
            code_with(|m| {
                m.insert("allowedRails".into(), serde_json::json!(["xrpl", "evm"]));
            }),
            GrantNotConforming
        );
        assert_eq!(
            code_with(|m| {
                m.insert("allowedRails".into(), serde_json::json!([]));
            }),
            GrantNotConforming
        );
        assert_eq!(
            code_with(|m| {
                m.remove("authorizedGateway");
            }),
            GrantNotConforming
        );
        assert_eq!(
            code_with(|m| {
                m.remove("velocityLimit");
            }),
            GrantNotConforming
        );
        assert_eq!(
            code_with(|m| {
                m.insert(
                    "velocityLimit".into(),
                    serde_json::json!({"maxPayments": 0, "windowSeconds": 1}),
                );
            }),
            GrantNotConforming
        );
        assert_eq!(
            code_with(|m| {
                m.insert(
                    "velocityLimit".into(),
                    serde_json::json!({"maxPayments": -1, "windowSeconds": 1}),
                );
            }),
            SchemaInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert("revocationEndpoint".into(), "https://x".into());
            }),
            GrantNotConforming
        );
        assert_eq!(
            code_with(|m| {
                m.insert(
                    "allowedAssets".into(),
                    serde_json::json!([{"kind": "ERC20", "chainId": 1, "token": "0x0"}]),
                );
            }),
            GrantNotConforming
        );
        assert_eq!(
            code_with(|m| {
                m.insert("anchorRef".into(), "xrpl:nft:abc".into());
            }),
            GrantNotConforming
        );
    }

    #[test]
    fn field_rules() {
        use ErrorCode::*;
        assert_eq!(
            code_with(|m| {
                m.insert(
                    "authorizedGateway".into(),
                    "rTestGateway11111111111111111111".into(),
                );
            }),
            AddressInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert(
                    "destinationAllowlist".into(),
                    serde_json::json!([addr(3), "rBad"]),
                );
            }),
            AddressInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert("allowedAssets".into(), serde_json::json!([{"kind": "IOU", "currency": "USD", "issuer": "rNope1111111111111111111111"}]));
            }),
            AddressInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert("budgetMinor".into(), 1000.into());
            }),
            SchemaInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert("budgetMinor".into(), "10.5".into());
            }),
            AmountInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert("offlineMaxCumulativePayment".into(), "1001".into());
            }),
            AmountInconsistent
        );
        assert_eq!(
            code_with(|m| {
                m.insert("offlineMaxSinglePayment".into(), "2000".into());
            }),
            AmountInconsistent
        );
        assert_eq!(
            code_with(|m| {
                m.insert("offlineMaxCumulativePayment".into(), "10".into());
                m.insert("offlineMaxCumulativePaymentCurrency".into(), "USD".into());
            }),
            AmountInconsistent
        );
        assert_eq!(
            code_with(|m| {
                m.insert("expiresAt".into(), "tomorrow".into());
            }),
            TimestampInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert("scope".into(), "GALAXY".into());
            }),
            ScopeUnsupported
        );
        assert_eq!(
            code_with(|m| {
                m.insert("version".into(), "2.0".into());
            }),
            VersionUnsupported
        );
        assert_eq!(
            code_with(|m| {
                m.insert("policyHash".into(), "ABC".into());
            }),
            SchemaInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.remove("grantId");
            }),
            SchemaInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert("gatewayCredentialType".into(), "xyz".into());
            }),
            SchemaInvalid
        );
        assert_eq!(
            code_with(|m| {
                m.insert(
                    "maxSpend".into(),
                    serde_json::json!({"perTxMinor": "5", "perYear": "1"}),
                );
            }),
            UnknownField
        );
        // Consistent caps pass.
        let mut v = base();
        let m = v.as_object_mut().unwrap();
        m.insert("offlineMaxSinglePayment".into(), "100".into());
        m.insert("offlineMaxSinglePaymentCurrency".into(), "XRP".into());
        m.insert("offlineMaxCumulativePayment".into(), "1000".into());
        PolicyGrant::from_value(&v).unwrap().validate().unwrap();
    }

    #[test]
    fn unknown_members_survive_round_trip() {
        let text = r#"{"version":"1.0","grantId":"g","policyHash":"b807638320a19a14cc769ccfa37f82998c850eb863074c3b8170c284dce5a711","subjectId":"s","scope":"SESSION","allowedRails":["xrpl"],"expiresAt":"2030-01-01T00:00:00Z","issuer":"i","issuerKeyId":"k","zFuture":{"nested":[1,"\u00e9",{"b":true,"a":null}],"n":-5},"aExt":"x\ny"}"#;
        let v = parse_strict(text.as_bytes()).unwrap();
        let g = PolicyGrant::from_value(&v).unwrap();
        assert_eq!(g.extra.len(), 2);
        assert_eq!(
            canonical_bytes_of(&g).unwrap(),
            canonical_bytes(&v).unwrap()
        );
    }
}
