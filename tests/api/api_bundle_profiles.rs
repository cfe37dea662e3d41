//! Trust-bundle lifetimes follow the assurance profile the request names (or the default,
//! `standard`): a bundle over its profile's lifetime, an unknown profile, and any lifetime
//! over 7 days are refused and sign nothing; an accepted bundle carries its profile under the
//! root key's signature.

use crate::kit;
use std::sync::Arc;

use crate::kit::api::{Harness, assert_error};
use mpcp_pa::api::Limits;
use mpcp_pa::api::tokens::ApiRole;
use mpcp_pa::clock::{SystemClock, format_rfc3339};
use mpcp_pa::crypto::Alg;
use mpcp_pa::keys::keyset::build_root_key_set;
use mpcp_pa::signer::{DigestSigner, SoftwareSigner};
use mpcp_pa::verify::Verifier;
use serde_json::{Value, json};

fn in_secs(s: i64) -> String {
    format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
}

fn bundle(profile: Option<&str>, lifetime: i64) -> Value {
    // Another issuer's key: the PA embeds what the officer approves, checking only its own.
    let other = SoftwareSigner::from_secret("other-1", Alg::EdDSA, &[9u8; 32]).unwrap();
    let mut b = json!({
        "category": "parking",
        "approvedIssuers": ["other-pa.example"],
        "issuers": [{"issuer": "other-pa.example",
                     "keys": [other.public_key().to_jwk("other-1", true)]}],
        "expiresAt": in_secs(lifetime),
    });
    if let Some(p) = profile {
        b["assuranceProfile"] = json!(p);
    }
    b
}

fn bundles_signed(h: &Harness) -> usize {
    h.events()
        .iter()
        .filter(|(_, e)| matches!(e, mpcp_pa::events::Event::TrustBundleIssued { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_lifetime_follows_its_assurance_profile() {
    kit::child::own_process!("bundle_lifetime_follows_its_assurance_profile");
    let h = Harness::start(Limits::default()).await;
    let officer = h.token("officer-1", ApiRole::SecurityOfficer);
    let o = Some(officer.as_str());
    let hour = 3600;

    for (profile, lifetime, code) in [
        (Some("high-assurance"), 7 * hour, "LIFETIME_EXCEEDED"),
        (None, 25 * hour, "LIFETIME_EXCEEDED"),
        (Some("standard"), 25 * hour, "LIFETIME_EXCEEDED"),
        (Some("extended"), 8 * 24 * hour, "LIFETIME_EXCEEDED"),
        (Some("iot"), hour, "SCHEMA_INVALID"),
        (Some(""), hour, "SCHEMA_INVALID"),
    ] {
        let got = h
            .post(
                "/v1/trust-bundles",
                o,
                &bundle(profile, lifetime).to_string(),
            )
            .await;
        assert_error(&got, 400, code);
        let field = if code == "SCHEMA_INVALID" {
            "assuranceProfile"
        } else {
            "expiresAt"
        };
        assert_eq!(got.1["field"], field, "{profile:?} {lifetime}: {}", got.1);
    }
    let mut not_text = bundle(None, hour);
    not_text["assuranceProfile"] = json!(1);
    assert_error(
        &h.post("/v1/trust-bundles", o, &not_text.to_string()).await,
        400,
        "SCHEMA_INVALID",
    );
    assert_eq!(bundles_signed(&h), 0, "refusals signed nothing");

    let root = build_root_key_set(h.registry.as_ref()).unwrap();
    let verifier = Verifier::new(Arc::new(SystemClock));
    for (profile, lifetime, expect) in [
        (Some("high-assurance"), 5 * hour, "high-assurance"),
        (None, 23 * hour, "standard"),
        (Some("extended"), 6 * 24 * hour, "extended"),
    ] {
        let (status, signed) = h
            .post(
                "/v1/trust-bundles",
                o,
                &bundle(profile, lifetime).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{signed}");
        assert_eq!(signed["assuranceProfile"], expect);
        // The profile is covered by the root signature: changing it breaks verification.
        verifier.key_source(&signed, Some(&root)).unwrap();
        let mut changed = signed.clone();
        changed["assuranceProfile"] = json!("extended-plus");
        assert!(verifier.key_source(&changed, Some(&root)).is_err());
    }
    assert_eq!(bundles_signed(&h), 3);
}
