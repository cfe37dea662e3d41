//! Generates the project's signed L2 test vectors under `test-vectors/l2/` from fixed,
//! published test keys. Deterministic (Ed25519, RFC 6979 ECDSA): `tests/interop_vectors/vectors.rs` runs it
//! into a temporary directory and requires the committed files to be identical.
//!
//! `cargo run --example gen_vectors -- test-vectors/l2`

use std::path::Path;

use mpcp_pa::canonical::{Domain, signing_digest};
use mpcp_pa::crypto::{Alg, b64url_encode, decode_signature, secp256k1_flip_s};
use mpcp_pa::signer::{DigestSigner, SoftwareSigner, sign_artifact};
use mpcp_pa::xrpl::encode_classic_address;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The verification time every vector uses unless it says otherwise.
pub const AT: &str = "2026-06-01T12:00:00Z";

fn key(name: &str, alg: Alg) -> SoftwareSigner {
    let secret: [u8; 32] = Sha256::digest(format!("mpcp-pa test vector key {name}")).into();
    SoftwareSigner::from_secret(name, alg, &secret).expect("fixed test key")
}

fn addr(label: &str) -> String {
    let h = Sha256::digest(label.as_bytes());
    let mut id = [0u8; 20];
    id.copy_from_slice(&h[..20]);
    encode_classic_address(&id)
}

fn private_jwk(s: &SoftwareSigner) -> Value {
    let mut v = serde_json::to_value(s.public_key().to_jwk(s.kid(), true)).expect("jwk");
    v["d"] = Value::String(b64url_encode(&*s.secret_bytes()));
    v
}

fn public_jwk(s: &SoftwareSigner, active: bool) -> Value {
    serde_json::to_value(s.public_key().to_jwk(s.kid(), active)).expect("jwk")
}

fn grant(kid: &str) -> Value {
    json!({
        "version": "1.0",
        "grantId": "grant-vector-001",
        "policyHash": "b807638320a19a14cc769ccfa37f82998c850eb863074c3b8170c284dce5a711",
        "subjectId": "vehicle-4711",
        "operatorId": "operator-12",
        "scope": "SESSION",
        "allowedRails": ["xrpl"],
        "allowedAssets": [{"kind": "XRP"}, {"kind": "IOU", "currency": "RLUSD", "issuer": addr("iou-issuer")}],
        "authorizedGateway": addr("gateway"),
        "activeGrantCredentialIssuer": addr("pa"),
        "velocityLimit": {"maxPayments": 120, "windowSeconds": 3600},
        "destinationAllowlist": [addr("charger-1"), addr("toll-42")],
        "budgetMinor": "50000000",
        "budgetCurrency": "XRP",
        "offlineMaxSinglePayment": "5000000",
        "offlineMaxSinglePaymentCurrency": "XRP",
        "offlineMaxCumulativePayment": "15000000",
        "offlineMaxCumulativePaymentCurrency": "XRP",
        "maxSpend": {"perTxMinor": "5000", "perSessionMinor": "20000"},
        "issuedAt": "2026-06-01T08:00:00Z",
        "expiresAt": "2026-06-02T08:00:00Z",
        "issuer": "did:web:pa.example.com",
        "issuerKeyId": kid,
        "x-vendorNote": {"kept": ["as", "is"], "n": 7}
    })
}

/// A change applied to a grant before signing it.
type Mutation = fn(&mut Value);

struct Vector {
    id: &'static str,
    proves: &'static str,
    artifact: String,
    keys: &'static str,
    root: Option<&'static str>,
    at: &'static str,
    code: Option<&'static str>,
    domain: Option<Domain>,
    signature_valid: Option<bool>,
}

struct Out<'a> {
    dir: &'a Path,
    vectors: Vec<Vector>,
}

impl Out<'_> {
    fn write(&self, rel: &str, text: &str) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    fn json(&self, rel: &str, v: &Value) {
        self.write(
            rel,
            &(serde_json::to_string_pretty(v).expect("json") + "\n"),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        id: &'static str,
        proves: &'static str,
        artifact: &Value,
        domain: Domain,
        keys: &'static str,
        root: Option<&'static str>,
        at: &'static str,
        code: Option<&'static str>,
        signature_valid: bool,
    ) {
        let rel = format!("artifacts/{id}.json");
        self.json(&rel, artifact);
        self.vectors.push(Vector {
            id,
            proves,
            artifact: rel,
            keys,
            root,
            at,
            code,
            domain: Some(domain),
            signature_valid: Some(signature_valid),
        });
    }

    fn add_raw(
        &mut self,
        id: &'static str,
        proves: &'static str,
        text: &str,
        keys: &'static str,
        code: &'static str,
    ) {
        let rel = format!("artifacts/{id}.json");
        self.write(&rel, text);
        self.vectors.push(Vector {
            id,
            proves,
            artifact: rel,
            keys,
            root: None,
            at: AT,
            code: Some(code),
            domain: None,
            signature_valid: None,
        });
    }
}

fn sign(s: &SoftwareSigner, d: Domain, v: &Value) -> Value {
    sign_artifact(s, d, "1.0", v).expect("sign")
}

/// Writes every L2 vector and the manifest into `dir`.
pub fn generate(dir: &Path) {
    let ed = key("pa-ed25519-1", Alg::EdDSA);
    let k1 = key("pa-secp256k1-1", Alg::ES256K);
    let p2 = key("pa-p256-1", Alg::ES256);
    let revoked = key("pa-ed25519-revoked", Alg::EdDSA);
    let root = key("root-p256-1", Alg::ES256);
    let root_ed = key("root-ed25519-1", Alg::EdDSA);
    let mut out = Out {
        dir,
        vectors: Vec::new(),
    };

    for s in [&ed, &k1, &p2, &revoked, &root, &root_ed] {
        out.json(
            &format!("keys/{}.private.jwk.json", s.kid()),
            &private_jwk(s),
        );
    }
    let jwks = json!({"version": "1.0", "keys": [
        public_jwk(&ed, true), public_jwk(&k1, true), public_jwk(&p2, true), public_jwk(&revoked, false)
    ]});
    out.json("keys/jwks.json", &jwks);
    out.json(
        "keys/root-jwks.json",
        &json!({"version": "1.0", "keys": [public_jwk(&root, true), public_jwk(&root_ed, true)]}),
    );
    let mut mismatch = public_jwk(&k1, true);
    mismatch["alg"] = json!("EdDSA");
    out.json(
        "keys/jwks-alg-mismatch.json",
        &json!({"version": "1.0", "keys": [mismatch]}),
    );

    let g = Domain::PolicyGrant;
    // Positive vectors, one per algorithm.
    let ed_grant = sign(&ed, g, &grant("pa-ed25519-1"));
    out.add("grant-eddsa-valid", "Ed25519 over the 32-byte digest verifies; unknown member x-vendorNote is covered by the signature", &ed_grant, g, "keys/jwks.json", None, AT, None, true);
    let k1_grant = sign(&k1, g, &grant("pa-secp256k1-1"));
    out.add(
        "grant-es256k-valid",
        "ECDSA secp256k1 over SHA-256(digest), low-S DER, verifies",
        &k1_grant,
        g,
        "keys/jwks.json",
        None,
        AT,
        None,
        true,
    );
    let p2_grant = sign(&p2, g, &grant("pa-p256-1"));
    out.add(
        "grant-es256-valid",
        "ECDSA P-256 over SHA-256(digest), DER, verifies",
        &p2_grant,
        g,
        "keys/jwks.json",
        None,
        AT,
        None,
        true,
    );

    let mut std_b64 = ed_grant.clone();
    let raw = decode_signature(ed_grant["signature"].as_str().expect("sig")).expect("b64");
    use base64::Engine;
    std_b64["signature"] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
    out.add(
        "grant-eddsa-standard-base64",
        "a signature in standard base64 (as Node's decoder accepts) verifies too",
        &std_b64,
        g,
        "keys/jwks.json",
        None,
        AT,
        None,
        true,
    );
    out.add(
        "grant-eddsa-within-drift",
        "expiry allows the default 300 s drift: 200 s after expiresAt is still valid",
        &ed_grant,
        g,
        "keys/jwks.json",
        None,
        "2026-06-02T08:03:20Z",
        None,
        true,
    );

    // Negative vectors.
    let mut tampered = ed_grant.clone();
    tampered["budgetMinor"] = json!("50000001");
    out.add(
        "grant-tampered",
        "changing one signed field breaks the signature",
        &tampered,
        g,
        "keys/jwks.json",
        None,
        AT,
        Some("POLICY_GRANT_SIGNATURE_INVALID"),
        false,
    );
    let mut tampered_ext = ed_grant.clone();
    tampered_ext["x-vendorNote"]["n"] = json!(8);
    out.add(
        "grant-tampered-unknown-member",
        "unknown members are signed too: changing one breaks the signature",
        &tampered_ext,
        g,
        "keys/jwks.json",
        None,
        AT,
        Some("POLICY_GRANT_SIGNATURE_INVALID"),
        false,
    );
    // Signed by another Ed25519 key while naming pa-ed25519-1.
    let wrong = sign(&revoked, g, &grant("pa-ed25519-1"));
    out.add(
        "grant-wrong-key",
        "a signature by another key than the one issuerKeyId names does not verify",
        &wrong,
        g,
        "keys/jwks.json",
        None,
        AT,
        Some("POLICY_GRANT_SIGNATURE_INVALID"),
        false,
    );
    let rev = sign(&revoked, g, &grant("pa-ed25519-revoked"));
    out.add(
        "grant-inactive-key",
        "a key published active:false is refused even though its signature is sound",
        &rev,
        g,
        "keys/jwks.json",
        None,
        AT,
        Some("KEY_REVOKED"),
        true,
    );
    let unknown = sign(&ed, g, &grant("pa-unknown-9"));
    out.add(
        "grant-unknown-kid",
        "an issuerKeyId not in the key set is refused",
        &unknown,
        g,
        "keys/jwks.json",
        None,
        AT,
        Some("KEY_NOT_FOUND"),
        false,
    );
    let mut high = k1_grant.clone();
    let der = decode_signature(k1_grant["signature"].as_str().expect("sig")).expect("b64");
    high["signature"] = json!(b64url_encode(&secp256k1_flip_s(&der).expect("flip")));
    out.add(
        "grant-es256k-high-s",
        "the high-S twin (r, n-s) of a valid secp256k1 signature is refused",
        &high,
        g,
        "keys/jwks.json",
        None,
        AT,
        Some("SIGNATURE_HIGH_S"),
        true,
    );
    out.add(
        "grant-alg-curve-mismatch",
        "a JWK whose alg conflicts with its kty/crv is refused",
        &k1_grant,
        g,
        "keys/jwks-alg-mismatch.json",
        None,
        AT,
        Some("KEY_ALG_MISMATCH"),
        true,
    );
    out.add(
        "grant-expired",
        "expiresAt + 300 s drift in the past: ARTIFACT_EXPIRED",
        &ed_grant,
        g,
        "keys/jwks.json",
        None,
        "2026-06-02T08:05:01Z",
        Some("ARTIFACT_EXPIRED"),
        true,
    );
    out.add(
        "grant-not-yet-issued",
        "issuedAt beyond now + drift is refused",
        &ed_grant,
        g,
        "keys/jwks.json",
        None,
        "2026-06-01T07:54:59Z",
        Some("ARTIFACT_NOT_YET_VALID"),
        true,
    );

    let nonconforming: [(&'static str, &'static str, Mutation); 5] = [
        (
            "grant-nonconforming-rails",
            "allowedRails other than exactly [\"xrpl\"] is refused although signed",
            |v| v["allowedRails"] = json!(["xrpl", "evm"]),
        ),
        (
            "grant-nonconforming-no-gateway",
            "a grant without authorizedGateway is refused although signed",
            |v| {
                v.as_object_mut().expect("obj").remove("authorizedGateway");
            },
        ),
        (
            "grant-nonconforming-no-velocity",
            "a grant without velocityLimit is refused although signed",
            |v| {
                v.as_object_mut().expect("obj").remove("velocityLimit");
            },
        ),
        (
            "grant-nonconforming-revocation-endpoint",
            "a grant carrying revocationEndpoint is refused although signed",
            |v| v["revocationEndpoint"] = json!("https://pa.example.com/revoke"),
        ),
        (
            "grant-nonconforming-erc20",
            "an ERC20 asset is refused although signed",
            |v| v["allowedAssets"] = json!([{"kind": "ERC20", "chainId": 1, "token": "0x00"}]),
        ),
    ];
    for (id, proves, f) in nonconforming {
        let mut v = grant("pa-ed25519-1");
        f(&mut v);
        out.add(
            id,
            proves,
            &sign(&ed, g, &v),
            g,
            "keys/jwks.json",
            None,
            AT,
            Some("GRANT_NOT_CONFORMING"),
            true,
        );
    }
    let mut bad_addr = grant("pa-ed25519-1");
    let good = addr("gateway");
    let last = if good.ends_with('a') { "b" } else { "a" };
    bad_addr["authorizedGateway"] = json!(format!("{}{last}", &good[..good.len() - 1]));
    out.add(
        "grant-bad-xrpl-checksum",
        "an XRPL address with a wrong checksum is refused although signed",
        &sign(&ed, g, &bad_addr),
        g,
        "keys/jwks.json",
        None,
        AT,
        Some("ADDRESS_INVALID"),
        true,
    );
    let mut inconsistent = grant("pa-ed25519-1");
    inconsistent["offlineMaxCumulativePayment"] = json!("60000000");
    out.add(
        "grant-offline-cap-over-budget",
        "offlineMaxCumulativePayment above budgetMinor is refused although signed",
        &sign(&ed, g, &inconsistent),
        g,
        "keys/jwks.json",
        None,
        AT,
        Some("AMOUNT_INCONSISTENT"),
        true,
    );

    let text = serde_json::to_string(&ed_grant).expect("json");
    let dup = text.replacen(
        "\"scope\":\"SESSION\"",
        "\"scope\":\"SESSION\",\"scope\":\"FLEET\"",
        1,
    );
    out.add_raw("grant-duplicate-key", "a duplicate JSON member is refused before anything else, never resolved first- or last-wins", &dup, "keys/jwks.json", "JSON_DUPLICATE_KEY");
    let float = text.replacen("\"maxPayments\":120", "\"maxPayments\":120.0", 1);
    out.add_raw(
        "grant-float-count",
        "a float where an integer belongs is refused",
        &float,
        "keys/jwks.json",
        "JSON_NUMBER_NOT_INTEGER",
    );

    // Destination allowlist (project extension).
    let al = json!({
        "version": "1.0", "allowlistId": "fleet-chargers", "issuer": "did:web:pa.example.com",
        "issuerKeyId": "pa-secp256k1-1", "destinations": [addr("charger-1"), addr("charger-2"), addr("toll-42")],
        "issuedAt": "2026-06-01T00:00:00Z", "expiresAt": "2026-06-08T00:00:00Z", "sequence": 3
    });
    let al_signed = sign(&k1, Domain::DestinationAllowlist, &al);
    out.add(
        "allowlist-es256k-valid",
        "a DestinationAllowlist (domain MPCP:DestinationAllowlist:1.0:) verifies",
        &al_signed,
        Domain::DestinationAllowlist,
        "keys/jwks.json",
        None,
        AT,
        None,
        true,
    );
    let mut al_t = al_signed.clone();
    al_t["destinations"][1] = json!(addr("attacker"));
    out.add(
        "allowlist-tampered",
        "swapping a destination breaks the allowlist signature",
        &al_t,
        Domain::DestinationAllowlist,
        "keys/jwks.json",
        None,
        AT,
        Some("SIGNATURE_INVALID"),
        false,
    );

    // Signed key set (project extension), signed by the Ed25519 root key.
    let ks = json!({"version": "1.0", "keySet": jwks, "issuedAt": "2026-06-01T00:00:00Z", "expiresAt": "2026-06-02T00:00:00Z", "signerKeyId": "root-ed25519-1"});
    let ks_signed = sign(&root_ed, Domain::KeySet, &ks);
    out.add(
        "keyset-signed-valid",
        "a key set signed by a root key (domain MPCP:KeySet:1.0:) verifies against the root keys",
        &ks_signed,
        Domain::KeySet,
        "keys/root-jwks.json",
        None,
        AT,
        None,
        true,
    );
    let mut ks_t = ks_signed.clone();
    ks_t["keySet"]["keys"][3]["active"] = json!(true);
    out.add(
        "keyset-tampered",
        "re-activating a revoked key inside a signed key set breaks its signature",
        &ks_t,
        Domain::KeySet,
        "keys/root-jwks.json",
        None,
        AT,
        Some("SIGNATURE_INVALID"),
        false,
    );

    // Trust bundles, signed by the P-256 root key.
    let bundle = |revoked_grants: Option<Vec<&str>>| {
        let mut b = json!({
            "version": "1.0", "bundleId": "bundle-eu-ev-001", "bundleIssuer": "did:web:root.example.com",
            "bundleKeyId": "root-p256-1", "category": "ev-charging", "merchant": "did:web:chargers.example.com",
            "geography": {"region": "EU", "countryCodes": ["DE", "FR"]},
            "approvedIssuers": ["did:web:pa.example.com"],
            "issuers": [{"issuer": "did:web:pa.example.com", "keys": [public_jwk(&ed, true), public_jwk(&k1, true)]}],
            "issuedAt": "2026-06-01T06:00:00Z", "expiresAt": "2026-06-01T18:00:00Z"
        });
        if let Some(r) = revoked_grants {
            b["revokedGrantIds"] = json!(r);
        }
        b
    };
    let b_signed = sign(&root, Domain::TrustBundle, &bundle(None));
    out.add(
        "bundle-es256-valid",
        "a Trust Bundle signed by the P-256 root key verifies",
        &b_signed,
        Domain::TrustBundle,
        "keys/root-jwks.json",
        None,
        AT,
        None,
        true,
    );
    out.json("keys/bundle.json", &b_signed);
    out.add("grant-via-bundle-valid", "a grant verifies offline through a root-verified Trust Bundle (issuer approved, kid embedded)", &ed_grant, g, "keys/bundle.json", Some("keys/root-jwks.json"), AT, None, true);
    out.add(
        "grant-via-bundle-no-root",
        "a Trust Bundle used as key source without root keys is refused, not trusted",
        &ed_grant,
        g,
        "keys/bundle.json",
        None,
        AT,
        Some("BUNDLE_ROOT_REQUIRED"),
        true,
    );
    out.add(
        "grant-via-bundle-key-not-embedded",
        "a kid the bundle does not embed is not found",
        &p2_grant,
        g,
        "keys/bundle.json",
        Some("keys/root-jwks.json"),
        AT,
        Some("KEY_NOT_FOUND"),
        true,
    );
    let b_rev = sign(
        &root,
        Domain::TrustBundle,
        &bundle(Some(vec!["grant-vector-001"])),
    );
    out.json("keys/bundle-revoking.json", &b_rev);
    out.add(
        "grant-revoked-in-bundle",
        "a grant listed in the bundle's revokedGrantIds is refused",
        &ed_grant,
        g,
        "keys/bundle-revoking.json",
        Some("keys/root-jwks.json"),
        AT,
        Some("GRANT_REVOKED"),
        true,
    );
    let mut b_t = b_signed.clone();
    b_t["approvedIssuers"] = json!(["did:web:pa.example.com", "did:web:evil.example.com"]);
    out.add(
        "bundle-tampered",
        "adding an approved issuer breaks the bundle signature",
        &b_t,
        Domain::TrustBundle,
        "keys/root-jwks.json",
        None,
        AT,
        Some("SIGNATURE_INVALID"),
        false,
    );
    let mut b_unapproved = bundle(None);
    b_unapproved["issuers"][0]["issuer"] = json!("did:web:other.example.com");
    out.add(
        "bundle-unapproved-issuer",
        "embedding keys of an issuer not in approvedIssuers is refused although signed",
        &sign(&root, Domain::TrustBundle, &b_unapproved),
        Domain::TrustBundle,
        "keys/root-jwks.json",
        None,
        AT,
        Some("ISSUER_NOT_APPROVED"),
        true,
    );
    let mut b_revkey = bundle(None);
    b_revkey["issuers"][0]["keys"] = json!([public_jwk(&revoked, false)]);
    out.add(
        "bundle-embeds-revoked-key",
        "a bundle embedding a revoked key is refused although signed",
        &sign(&root, Domain::TrustBundle, &b_revkey),
        Domain::TrustBundle,
        "keys/root-jwks.json",
        None,
        AT,
        Some("KEY_REVOKED"),
        true,
    );
    out.add(
        "bundle-expired",
        "an expired bundle is refused",
        &b_signed,
        Domain::TrustBundle,
        "keys/root-jwks.json",
        None,
        "2026-06-01T18:05:01Z",
        Some("ARTIFACT_EXPIRED"),
        true,
    );

    // Manifest.
    let entries: Vec<Value> = out
        .vectors
        .iter()
        .map(|v| {
            let mut e = json!({
                "id": v.id, "proves": v.proves, "artifact": v.artifact, "keys": v.keys,
                "at": v.at, "driftSeconds": 300,
                "expect": {"verdict": if v.code.is_some() { "invalid" } else { "valid" }, "code": v.code},
            });
            if let Some(r) = v.root {
                e["root"] = json!(r);
            }
            if let (Some(d), Some(sv)) = (v.domain, v.signature_valid) {
                let text = std::fs::read(dir.join(&v.artifact)).expect("read back");
                let value: Value = serde_json::from_slice(&text).expect("parse back");
                let digest = signing_digest(d, "1.0", &value).expect("digest");
                e["domainPrefix"] = json!(d.prefix("1.0").expect("prefix"));
                e["signedDigest"] = json!(hex::encode(digest));
                e["signatureValid"] = json!(sv);
            }
            e
        })
        .collect();
    out.json("manifest.json", &json!({
        "description": "mpcp-pa L2 vectors; see test-vectors/README.md for the conventions and the order of checks",
        "version": 1,
        "vectors": entries
    }));
}

#[allow(dead_code)]
fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "test-vectors/l2".into());
    generate(Path::new(&dir));
    println!("wrote vectors to {dir}");
}
