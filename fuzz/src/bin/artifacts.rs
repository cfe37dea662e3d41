//! Grant, bundle and allowlist validation on strictly parsed input: no panic, and what
//! passes serialises to a document that passes again.
use mpcp_pa::model::{DestinationAllowlist, PolicyGrant, TrustBundle};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(v) = mpcp_pa::canonical::parse_strict(data) else {
            return;
        };
        if let Ok(g) = PolicyGrant::from_value(&v)
            && g.validate().is_ok()
        {
            let again = serde_json::to_value(&g).unwrap();
            assert!(PolicyGrant::from_value(&again).unwrap().validate().is_ok());
        }
        if let Ok(b) = TrustBundle::from_value(&v) {
            let _ = b.validate();
        }
        if let Ok(a) = DestinationAllowlist::from_value(&v) {
            let _ = a.validate();
        }
    });
}
