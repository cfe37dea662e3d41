//! Checkpoint bodies and signed notes: no panic on any text.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = mpcp_pa::audit::Checkpoint::parse_body(text);
            let _ = mpcp_pa::audit::note::Note::parse(text);
        }
    });
}
