//! PolicyGrant: the PA-signed spending envelope (flat object, `signature` inside).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    check_credential_type, check_id, check_identifier, check_sha256_hex, check_text_tree,
    check_version, from_value, parse_amount, parse_time,
};
use crate::error::{Error, ErrorCode, Result};
use crate::xrpl::{validate_classic_address, validate_currency_code};

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
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxSpend {
    /// Per-transaction cap.
    pub per_tx_minor: Option<String>,
    /// Per-session cap.
    pub per_session_minor: Option<String>,
    /// Per-day cap.
    pub per_day_minor: Option<String>,
}

/// A PolicyGrant. Optional members the spec defines are typed; anything else is kept in
/// `extra` and serialised back unchanged.
#[serde_with::skip_serializing_none]
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
    pub signature: Option<String>,
    /// Required for conformance; optional here so its absence is GRANT_NOT_CONFORMING.
    pub authorized_gateway: Option<String>,
    /// Required for conformance; optional here so its absence is GRANT_NOT_CONFORMING.
    pub velocity_limit: Option<VelocityLimit>,
    /// Must be absent on conforming grants.
    pub revocation_endpoint: Option<String>,
    pub issued_at: Option<String>,
    pub operator_id: Option<String>,
    pub allowed_assets: Option<Vec<Asset>>,
    pub max_spend: Option<MaxSpend>,
    pub require_approval: Option<bool>,
    pub reasons: Option<Vec<String>>,
    pub active_grant_credential_issuer: Option<String>,
    pub allowed_purposes: Option<Vec<String>>,
    pub anchor_ref: Option<String>,
    pub budget_minor: Option<String>,
    pub budget_currency: Option<String>,
    pub budget_escrow_ref: Option<String>,
    pub gateway_credential_issuer: Option<String>,
    pub gateway_credential_type: Option<String>,
    pub destination_allowlist: Option<Vec<String>>,
    pub merchant_credential_issuer: Option<String>,
    pub merchant_credential_type: Option<String>,
    pub subject_credential_issuer: Option<String>,
    pub subject_credential_type: Option<String>,
    pub offline_max_single_payment: Option<String>,
    pub offline_max_single_payment_currency: Option<String>,
    pub offline_max_cumulative_payment: Option<String>,
    pub offline_max_cumulative_payment_currency: Option<String>,
    /// Members this implementation does not interpret, preserved exactly.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn not_conforming(field: &str, msg: impl Into<String>) -> Error {
    Error::field(ErrorCode::GrantNotConforming, field, msg)
}

impl PolicyGrant {
    /// Parses a grant from a strict JSON value: structure, and no control or format
    /// character in any string or member name ([`check_text_tree`]); see
    /// [`PolicyGrant::validate`] for the rest.
    pub fn from_value(value: &Value) -> Result<PolicyGrant> {
        check_text_tree(value)?;
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

    /// Full validation: version, identifiers (grantId by the identifier rule), conformance,
    /// every XRPL address, credential issuer/type pairs, amounts, currency codes, timestamps,
    /// credential types, anchorRef and amount consistency.
    pub fn validate(&self) -> Result<()> {
        check_version(&self.version)?;
        check_identifier(&self.grant_id, "grantId")?;
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
        self.check_credential_pairs()?;
        self.check_anchor_ref()?;
        self.check_amounts()
    }

    /// An on-ledger credential check needs both its issuer and its type: a gateway given one
    /// without the other would skip the check (or guess), so half a pair is refused, naming
    /// the member that is missing.
    fn check_credential_pairs(&self) -> Result<()> {
        let pairs = [
            (
                ("gatewayCredentialIssuer", &self.gateway_credential_issuer),
                ("gatewayCredentialType", &self.gateway_credential_type),
            ),
            (
                ("merchantCredentialIssuer", &self.merchant_credential_issuer),
                ("merchantCredentialType", &self.merchant_credential_type),
            ),
            (
                ("subjectCredentialIssuer", &self.subject_credential_issuer),
                ("subjectCredentialType", &self.subject_credential_type),
            ),
        ];
        for ((issuer_field, issuer), (type_field, kind)) in pairs {
            let missing = match (issuer, kind) {
                (Some(_), None) => Some((type_field, issuer_field)),
                (None, Some(_)) => Some((issuer_field, type_field)),
                _ => None,
            };
            if let Some((absent, present)) = missing {
                return Err(Error::field(
                    ErrorCode::SchemaInvalid,
                    absent,
                    format!("{present} requires {absent}: a credential is checked by both"),
                ));
            }
        }
        Ok(())
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

    /// Amounts are decimal minor units; currencies are XRPL codes. The offline caps are
    /// bounded by the budget, so they require budgetMinor and budgetCurrency (a cap without
    /// them bounds nothing), and every offline currency given must be budgetCurrency: a cap
    /// in another currency cannot be compared with the budget, and one currency throughout
    /// keeps offline merchants and the gateway counting the same units. A cap without its own
    /// currency is in budgetCurrency.
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
        // (cap member, its currency member, cap, currency)
        let caps = [
            (
                "offlineMaxSinglePayment",
                "offlineMaxSinglePaymentCurrency",
                single,
                self.offline_max_single_payment_currency.as_deref(),
            ),
            (
                "offlineMaxCumulativePayment",
                "offlineMaxCumulativePaymentCurrency",
                cumulative,
                self.offline_max_cumulative_payment_currency.as_deref(),
            ),
        ];
        if let Some(c) = &self.budget_currency {
            validate_currency_code(c, "budgetCurrency")?;
        }
        for (_, cur_field, _, cur) in caps {
            if let Some(c) = cur {
                validate_currency_code(c, cur_field)?;
            }
        }
        let offline = caps
            .iter()
            .find(|(_, _, cap, cur)| cap.is_some() || cur.is_some());
        let (budget, budget_cur) = match (offline, budget, self.budget_currency.as_deref()) {
            (None, _, _) => return Ok(()),
            (Some(_), Some(b), Some(c)) => (b, c),
            (Some((cap_field, cur_field, cap, _)), b, _) => {
                let present = if cap.is_some() { cap_field } else { cur_field };
                let absent = if b.is_none() {
                    "budgetMinor"
                } else {
                    "budgetCurrency"
                };
                return Err(Error::field(
                    ErrorCode::SchemaInvalid,
                    absent,
                    format!(
                        "{present} requires budgetMinor and budgetCurrency: offline caps are \
                         bounded by the budget"
                    ),
                ));
            }
        };
        for (cap_field, cur_field, cap, cur) in caps {
            if let Some(c) = cur
                && c != budget_cur
            {
                let field = if cap.is_some() { cap_field } else { cur_field };
                return Err(Error::field(
                    ErrorCode::AmountInconsistent,
                    field,
                    format!(
                        "{cur_field} is {c} but budgetCurrency is {budget_cur}: offline caps \
                         are in the budget's currency"
                    ),
                ));
            }
            if let Some(cap) = cap
                && cap > budget
            {
                return Err(Error::field(
                    ErrorCode::AmountInconsistent,
                    cap_field,
                    format!("{cap_field} ({cap}) exceeds budgetMinor ({budget})"),
                ));
            }
        }
        if let (Some(single), Some(cumulative)) = (single, cumulative)
            && single > cumulative
        {
            return Err(Error::field(
                ErrorCode::AmountInconsistent,
                "offlineMaxSinglePayment",
                format!(
                    "offlineMaxSinglePayment ({single}) exceeds offlineMaxCumulativePayment \
                     ({cumulative})"
                ),
            ));
        }
        Ok(())
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

    /// [`code_with`] the base grant's `member` set to `value`.
    fn code_with_member(member: &str, value: impl Into<Value>) -> ErrorCode {
        code_with(|m| {
            m.insert(member.into(), value.into());
        })
    }

    /// [`code_with`] the base grant without `member`.
    fn code_without(member: &str) -> ErrorCode {
        code_with(|m| {
            m.remove(member);
        })
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
            code_with_member("allowedRails", serde_json::json!(["xrpl", "evm"])),
            GrantNotConforming
        );
        assert_eq!(
            code_with_member("allowedRails", serde_json::json!([])),
            GrantNotConforming
        );
        assert_eq!(code_without("authorizedGateway"), GrantNotConforming);
        assert_eq!(code_without("velocityLimit"), GrantNotConforming);
        assert_eq!(
            code_with_member(
                "velocityLimit",
                serde_json::json!({"maxPayments": 0, "windowSeconds": 1})
            ),
            GrantNotConforming
        );
        assert_eq!(
            code_with_member(
                "velocityLimit",
                serde_json::json!({"maxPayments": -1, "windowSeconds": 1})
            ),
            SchemaInvalid
        );
        assert_eq!(
            code_with_member("revocationEndpoint", "https://x"),
            GrantNotConforming
        );
        assert_eq!(
            code_with_member(
                "allowedAssets",
                serde_json::json!([{"kind": "ERC20", "chainId": 1, "token": "0x0"}])
            ),
            GrantNotConforming
        );
        assert_eq!(
            code_with_member("anchorRef", "xrpl:nft:abc"),
            GrantNotConforming
        );
    }

    #[test]
    fn field_rules() {
        use ErrorCode::*;
        assert_eq!(
            code_with_member("authorizedGateway", "rTestGateway11111111111111111111"),
            AddressInvalid
        );
        assert_eq!(
            code_with_member("destinationAllowlist", serde_json::json!([addr(3), "rBad"])),
            AddressInvalid
        );
        assert_eq!(
            code_with_member(
                "allowedAssets",
                serde_json::json!([{"kind": "IOU", "currency": "USD", "issuer": "rNope1111111111111111111111"}])
            ),
            AddressInvalid
        );
        assert_eq!(code_with_member("budgetMinor", 1000), SchemaInvalid);
        assert_eq!(code_with_member("budgetMinor", "10.5"), AmountInvalid);
        assert_eq!(
            code_with_member("offlineMaxCumulativePayment", "1001"),
            AmountInconsistent
        );
        assert_eq!(
            code_with_member("offlineMaxSinglePayment", "2000"),
            AmountInconsistent
        );
        assert_eq!(
            code_with(|m| {
                m.insert("offlineMaxCumulativePayment".into(), "10".into());
                m.insert("offlineMaxCumulativePaymentCurrency".into(), "USD".into());
            }),
            AmountInconsistent
        );
        assert_eq!(code_with_member("expiresAt", "tomorrow"), TimestampInvalid);
        assert_eq!(code_with_member("scope", "GALAXY"), ScopeUnsupported);
        assert_eq!(code_with_member("version", "2.0"), VersionUnsupported);
        assert_eq!(code_with_member("policyHash", "ABC"), SchemaInvalid);
        assert_eq!(code_without("grantId"), SchemaInvalid);
        assert_eq!(
            code_with_member("gatewayCredentialType", "xyz"),
            SchemaInvalid
        );
        assert_eq!(
            code_with_member(
                "maxSpend",
                serde_json::json!({"perTxMinor": "5", "perYear": "1"})
            ),
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

    /// The refusal (code and field) of `base()` changed by `f`.
    fn refusal_with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> (ErrorCode, String) {
        let mut v = base();
        f(v.as_object_mut().unwrap());
        match PolicyGrant::from_value(&v).and_then(|g| g.validate()) {
            Ok(()) => panic!("accepted: {v}"),
            Err(e) => (e.code, e.field.unwrap_or_default()),
        }
    }

    fn accepted_with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        let mut v = base();
        f(v.as_object_mut().unwrap());
        PolicyGrant::from_value(&v)
            .and_then(|g| g.validate())
            .unwrap_or_else(|e| panic!("{v}: {e:?}"));
    }

    #[test]
    fn grant_id_is_an_identifier() {
        use ErrorCode::*;
        let set = |id: &str| {
            let id = id.to_string();
            move |m: &mut serde_json::Map<String, Value>| {
                m.insert("grantId".into(), id.into());
            }
        };
        accepted_with(set(&"g".repeat(46)));
        for bad in [
            "g".repeat(47),
            "g".repeat(61),
            "g-live\u{200b}".into(),
            "g-\u{202e}evil".into(),
            "gr\u{430}nt-1".into(),
            "g:1".into(),
        ] {
            assert_eq!(
                refusal_with(set(&bad)),
                (SchemaInvalid, "grantId".into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn free_text_refuses_control_and_format_characters() {
        use ErrorCode::*;
        accepted_with(|m| {
            m.insert("operatorId".into(), "Betreiber Zoë".into());
            m.insert("reasons".into(), serde_json::json!(["OK", "日本語"]));
        });
        let cases: [(&str, Value, &str); 6] = [
            ("operatorId", "op\u{7}".into(), "operatorId"),
            ("subjectId", "vehicle-1\u{200b}".into(), "subjectId"),
            (
                "reasons",
                serde_json::json!(["OK", "a\u{2066}b"]),
                "reasons[1]",
            ),
            (
                "allowedPurposes",
                serde_json::json!(["toll\n"]),
                "allowedPurposes[0]",
            ),
            ("x-note", serde_json::json!({"t": "\u{feff}"}), "x-note.t"),
            (
                "budgetEscrowRef",
                "xrpl:escrow:\u{2028}".into(),
                "budgetEscrowRef",
            ),
        ];
        for (member, value, field) in cases {
            assert_eq!(
                refusal_with(|m| {
                    m.insert(member.into(), value.clone());
                }),
                (SchemaInvalid, field.to_string()),
                "{member}"
            );
        }
    }

    #[test]
    fn credential_members_come_in_pairs() {
        use ErrorCode::*;
        let ty = hex::encode_upper("mpcp:approved-merchant");
        for prefix in ["gateway", "merchant", "subject"] {
            let (issuer, kind) = (
                format!("{prefix}CredentialIssuer"),
                format!("{prefix}CredentialType"),
            );
            accepted_with(|m| {
                m.insert(issuer.clone(), addr(7).into());
                m.insert(kind.clone(), ty.clone().into());
            });
            assert_eq!(
                refusal_with(|m| {
                    m.insert(issuer.clone(), addr(7).into());
                }),
                (SchemaInvalid, kind.clone())
            );
            assert_eq!(
                refusal_with(|m| {
                    m.insert(kind.clone(), ty.clone().into());
                }),
                (SchemaInvalid, issuer.clone())
            );
        }
    }

    #[test]
    fn currencies_are_xrpl_codes() {
        use ErrorCode::*;
        let hex_code = format!("52{}", "4C".repeat(19));
        accepted_with(|m| {
            m.insert("budgetCurrency".into(), hex_code.clone().into());
            m.insert("offlineMaxSinglePayment".into(), "10".into());
            m.insert(
                "offlineMaxSinglePaymentCurrency".into(),
                hex_code.clone().into(),
            );
        });
        for (member, field) in [
            ("budgetCurrency", "budgetCurrency"),
            (
                "offlineMaxSinglePaymentCurrency",
                "offlineMaxSinglePaymentCurrency",
            ),
            (
                "offlineMaxCumulativePaymentCurrency",
                "offlineMaxCumulativePaymentCurrency",
            ),
        ] {
            assert_eq!(
                refusal_with(|m| {
                    m.insert("offlineMaxSinglePayment".into(), "10".into());
                    m.insert(member.into(), "RLUSD".into());
                }),
                (SchemaInvalid, field.to_string())
            );
        }
    }

    #[test]
    fn offline_caps_need_a_budget_in_their_currency() {
        use ErrorCode::*;
        let huge = "9".repeat(38);
        assert_eq!(
            refusal_with(|m| {
                m.remove("budgetMinor");
                m.remove("budgetCurrency");
                m.insert("offlineMaxSinglePayment".into(), huge.clone().into());
                m.insert("offlineMaxCumulativePayment".into(), huge.clone().into());
            }),
            (SchemaInvalid, "budgetMinor".into())
        );
        assert_eq!(
            refusal_with(|m| {
                m.remove("budgetCurrency");
                m.insert("offlineMaxCumulativePayment".into(), "10".into());
            }),
            (SchemaInvalid, "budgetCurrency".into())
        );
        assert_eq!(
            refusal_with(|m| {
                m.remove("budgetMinor");
                m.insert("offlineMaxSinglePaymentCurrency".into(), "XRP".into());
            }),
            (SchemaInvalid, "budgetMinor".into())
        );
        // A cap's currency, where given, is the budget's.
        assert_eq!(
            refusal_with(|m| {
                m.insert("offlineMaxSinglePayment".into(), "10".into());
                m.insert("offlineMaxSinglePaymentCurrency".into(), "USD".into());
            }),
            (AmountInconsistent, "offlineMaxSinglePayment".into())
        );
        assert_eq!(
            refusal_with(|m| {
                m.insert("offlineMaxCumulativePaymentCurrency".into(), "USD".into());
            }),
            (
                AmountInconsistent,
                "offlineMaxCumulativePaymentCurrency".into()
            )
        );
        // Without caps, a budget alone is fine; caps without currencies are in the budget's.
        accepted_with(|m| {
            m.insert("offlineMaxSinglePayment".into(), "10".into());
            m.insert("offlineMaxCumulativePayment".into(), "100".into());
        });
    }

    #[test]
    fn timestamps_follow_the_profile() {
        use ErrorCode::*;
        for bad in [
            "2030-01-01t00:00:00Z",
            "2030-01-01T00:00:00z",
            "2030-01-01T00:00:00.99999999999999999999Z",
            "2030-01-01T00:00:00+00:00",
        ] {
            assert_eq!(
                refusal_with(|m| {
                    m.insert("expiresAt".into(), bad.into());
                }),
                (TimestampInvalid, "expiresAt".into())
            );
        }
    }

    #[test]
    fn unknown_members_survive_round_trip() {
        let text = r#"{"version":"1.0","grantId":"g","policyHash":"b807638320a19a14cc769ccfa37f82998c850eb863074c3b8170c284dce5a711","subjectId":"s","scope":"SESSION","allowedRails":["xrpl"],"expiresAt":"2030-01-01T00:00:00Z","issuer":"i","issuerKeyId":"k","zFuture":{"nested":[1,"\u00e9",{"b":true,"a":null}],"n":-5},"aExt":"x\"y\\z"}"#;
        let v = parse_strict(text.as_bytes()).unwrap();
        let g = PolicyGrant::from_value(&v).unwrap();
        assert_eq!(g.extra.len(), 2);
        assert_eq!(
            canonical_bytes_of(&g).unwrap(),
            canonical_bytes(&v).unwrap()
        );
    }
}
