//! The receipt policy security officers manage: which requesters may ask for a decision, for
//! which audiences (providers) and tools, with which decision and which maximum age.
//!
//! Rules are checked in order and the first that matches decides. A request that no rule
//! matches gets the policy's `otherwise`, which may be `block` or `escalate` but never
//! `allow`: the policy fails closed. A pattern is either an exact name or `"*"`, which matches
//! any name. Nothing is matched by prefix or by a glob, so no rule is broader than it reads.

use serde::{Deserialize, Serialize};

use super::record::Decision;
use crate::error::{Error, ErrorCode, Result};
use crate::model::{check_id, check_identifier};

/// The longest a decision may be acted on, whatever a rule says.
pub const MAX_AGE_CEILING_SECONDS: u64 = 3600;

/// A receipt policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiptPolicy {
    /// Document version (1).
    pub version: u64,
    /// The policy's id, written as `decisionDerived.policyId` of what it decides.
    pub policy_id: String,
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// The decision when no rule matches: `block` or `escalate`.
    pub otherwise: Decision,
}

/// One rule: who may ask, for which audiences and tools, and what they get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Requester token names, or `"*"`.
    pub requesters: Vec<String>,
    /// Audiences (providers), or `"*"`.
    pub audiences: Vec<String>,
    /// Tool names (`tools/call` `name`), or `"*"`.
    pub tools: Vec<String>,
    /// The decision.
    pub decision: Decision,
    /// How long the decision may be acted on (`expSeconds`), at most
    /// [`MAX_AGE_CEILING_SECONDS`].
    pub max_age_seconds: u64,
    /// Short human-readable basis, written as `decisionDerived.reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the policy decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    /// The decision.
    pub decision: Decision,
    /// `expSeconds` of the decision record.
    pub max_age_seconds: u64,
    /// The basis, when the matching rule gives one.
    pub reason: Option<String>,
    /// Index of the rule that matched; `None` for `otherwise`.
    pub rule: Option<usize>,
}

fn matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| p == "*" || p == name)
}

impl ReceiptPolicy {
    /// Checks the document: version 1, an identifier as `policyId`, at least one rule, every
    /// rule with non-empty patterns (names or `"*"`) and a maximum age of 1 to
    /// [`MAX_AGE_CEILING_SECONDS`] seconds, and `otherwise` not `allow`.
    pub fn validate(&self) -> Result<()> {
        if self.version != 1 {
            return Err(Error::field(
                ErrorCode::VersionUnsupported,
                "version",
                "receipt policy version must be 1",
            ));
        }
        check_identifier(&self.policy_id, "policyId")?;
        if self.otherwise == Decision::Allow {
            return Err(Error::field(
                ErrorCode::SchemaInvalid,
                "otherwise",
                "otherwise must be block or escalate: a request no rule names is never allowed",
            ));
        }
        if self.rules.is_empty() {
            return Err(Error::field(
                ErrorCode::SchemaInvalid,
                "rules",
                "a receipt policy needs at least one rule",
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = |m: &str| format!("rules[{i}].{m}");
            for (member, patterns) in [
                ("requesters", &r.requesters),
                ("audiences", &r.audiences),
                ("tools", &r.tools),
            ] {
                if patterns.is_empty() {
                    return Err(Error::field(
                        ErrorCode::SchemaInvalid,
                        at(member),
                        format!("{member} must name at least one entry (or \"*\")"),
                    ));
                }
                for (j, p) in patterns.iter().enumerate() {
                    if p != "*" {
                        check_id(p, &format!("{}[{j}]", at(member)))?;
                        if p.contains('*') {
                            return Err(Error::field(
                                ErrorCode::SchemaInvalid,
                                format!("{}[{j}]", at(member)),
                                "a pattern is an exact name or \"*\"; partial wildcards are refused",
                            ));
                        }
                    }
                }
            }
            if !(1..=MAX_AGE_CEILING_SECONDS).contains(&r.max_age_seconds) {
                return Err(Error::field(
                    ErrorCode::SchemaInvalid,
                    at("maxAgeSeconds"),
                    format!("maxAgeSeconds must be 1 to {MAX_AGE_CEILING_SECONDS}"),
                ));
            }
            if let Some(reason) = &r.reason {
                check_id(reason, &at("reason"))?;
            }
        }
        Ok(())
    }

    /// The ruling for `requester` asking to call `tool` at `audience`: the first rule that
    /// names all three, else `otherwise` (with the shortest maximum age of the policy).
    pub fn evaluate(&self, requester: &str, audience: &str, tool: &str) -> Ruling {
        for (i, r) in self.rules.iter().enumerate() {
            if matches(&r.requesters, requester)
                && matches(&r.audiences, audience)
                && matches(&r.tools, tool)
            {
                return Ruling {
                    decision: r.decision,
                    max_age_seconds: r.max_age_seconds,
                    reason: r.reason.clone(),
                    rule: Some(i),
                };
            }
        }
        Ruling {
            decision: self.otherwise,
            max_age_seconds: self
                .rules
                .iter()
                .map(|r| r.max_age_seconds)
                .min()
                .unwrap_or(MAX_AGE_CEILING_SECONDS),
            reason: None,
            rule: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> ReceiptPolicy {
        crate::model::from_value(
            &json!({
                "version": 1,
                "policyId": "receipt-policy-1",
                "rules": [
                    {"requesters": ["gateway-1"], "audiences": ["provider:hr-db"],
                     "tools": ["drop_table"], "decision": "block", "maxAgeSeconds": 60,
                     "reason": "destructive"},
                    {"requesters": ["gateway-1"], "audiences": ["provider:hr-db"],
                     "tools": ["*"], "decision": "allow", "maxAgeSeconds": 300},
                    {"requesters": ["*"], "audiences": ["provider:payments"],
                     "tools": ["pay"], "decision": "escalate", "maxAgeSeconds": 120},
                ],
                "otherwise": "block",
            }),
            "receipt policy",
        )
        .unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides_and_nothing_else_is_allowed() {
        let p = policy();
        p.validate().unwrap();
        let r = p.evaluate("gateway-1", "provider:hr-db", "drop_table");
        assert_eq!(
            (r.decision, r.rule, r.max_age_seconds),
            (Decision::Block, Some(0), 60)
        );
        assert_eq!(r.reason.as_deref(), Some("destructive"));
        let r = p.evaluate("gateway-1", "provider:hr-db", "query_table");
        assert_eq!((r.decision, r.rule), (Decision::Allow, Some(1)));
        let r = p.evaluate("gateway-2", "provider:payments", "pay");
        assert_eq!((r.decision, r.rule), (Decision::Escalate, Some(2)));
        // Another requester, audience or tool: otherwise, never allow.
        for (who, aud, tool) in [
            ("gateway-2", "provider:hr-db", "query_table"),
            ("gateway-1", "provider:hr-db2", "query_table"),
            ("gateway-1", "provider:payments", "refund"),
        ] {
            let r = p.evaluate(who, aud, tool);
            assert_eq!(
                (r.decision, r.rule, r.max_age_seconds),
                (Decision::Block, None, 60)
            );
        }
    }

    #[test]
    fn ambiguous_or_open_policies_are_refused() {
        let field = |edit: fn(&mut ReceiptPolicy)| {
            let mut p = policy();
            edit(&mut p);
            p.validate().unwrap_err().field
        };
        let at = |f: &str| Some(f.to_string());
        assert_eq!(field(|p| p.otherwise = Decision::Allow), at("otherwise"));
        assert_eq!(field(|p| p.rules.clear()), at("rules"));
        assert_eq!(field(|p| p.rules[1].tools.clear()), at("rules[1].tools"));
        assert_eq!(
            field(|p| p.rules[1].tools = vec!["query_*".into()]),
            at("rules[1].tools[0]")
        );
        assert_eq!(
            field(|p| p.rules[2].max_age_seconds = 0),
            at("rules[2].maxAgeSeconds")
        );
        assert_eq!(
            field(|p| p.rules[2].max_age_seconds = MAX_AGE_CEILING_SECONDS + 1),
            at("rules[2].maxAgeSeconds")
        );
        assert_eq!(field(|p| p.policy_id = "a b".into()), at("policyId"));
        assert_eq!(field(|p| p.version = 2), at("version"));
        let unknown = crate::model::from_value::<ReceiptPolicy>(
            &json!({"version": 1, "policyId": "p", "rules": [], "otherwise": "block", "x": 1}),
            "receipt policy",
        )
        .unwrap_err();
        assert_eq!(unknown.code, ErrorCode::UnknownField);
    }
}
