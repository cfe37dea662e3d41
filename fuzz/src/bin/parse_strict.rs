//! The strict JSON parser and canonical form: no panic, and what is accepted round-trips.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(v) = mpcp_pa::canonical::parse_strict(data) {
            let c = mpcp_pa::canonical::canonical_bytes(&v).expect("accepted input canonicalises");
            let back = mpcp_pa::canonical::parse_strict(&c).expect("canonical form parses");
            assert_eq!(back, mpcp_pa::canonical::strip_nulls(&v));
        }
    });
}
