//! Readiness of the HSM tokens for `GET /readyz`: ready only while every token that holds a
//! role's keys has a logged-in session.
//!
//! Each probe runs [`HsmBackend::check_token`]: `C_GetSessionInfo` on a pooled session (or a
//! fresh login), through the same pool and with the same timeout as signing. A token whose
//! sessions were closed or logged out elsewhere makes the probe fail once (and starts the
//! pool's recovery); the next probe re-opens and logs in, and reports ready again.

use std::sync::Arc;

use crate::error::Result;
use crate::hsm::HsmBackend;
use crate::seams::key_role::KeyRole;
use crate::seams::readiness::ReadinessProbe;

/// The readiness of one token, named after the roles it serves (never its label).
#[derive(Debug, Clone)]
pub struct TokenReadiness {
    backend: HsmBackend,
    role: KeyRole,
    name: String,
}

impl ReadinessProbe for TokenReadiness {
    fn name(&self) -> &str {
        &self.name
    }

    /// Ok while the token has a logged-in session; otherwise the HSM error (never a PIN).
    fn check(&self) -> Result<()> {
        self.backend.check_token(self.role)
    }
}

/// One probe per token that holds a role's keys (roles sharing a token share its probe).
pub fn probes(backend: &HsmBackend) -> Vec<Arc<dyn ReadinessProbe>> {
    let mut by_token: Vec<(String, Vec<KeyRole>)> = Vec::new();
    for role in KeyRole::ALL {
        let Ok(token) = backend.token_of(role) else {
            continue;
        };
        match by_token.iter_mut().find(|(t, _)| t == token) {
            Some((_, roles)) => roles.push(role),
            None => by_token.push((token.to_string(), vec![role])),
        }
    }
    by_token
        .into_iter()
        .map(|(_, roles)| {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Arc::new(TokenReadiness {
                backend: backend.clone(),
                role: roles[0],
                // Named by role: /readyz is public, and token labels are HSM internals.
                name: format!("HSM token of {}", names.join(", ")),
            }) as Arc<dyn ReadinessProbe>
        })
        .collect()
}
