//! One error type for the whole appliance: a stable machine-readable code, a human message
//! and, where it helps, the offending field. The HTTP layer maps (`api::error::http_status`)
//! and renders `{code, message, field?}`; the CLI prints the code. Messages never carry PINs,
//! tokens or key material.

use std::fmt;

/// Stable error codes. The string form ([`ErrorCode::as_str`]) is part of the public
/// contract: tests, vectors and clients match on it, so a variant is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // Input that cannot be canonicalised unambiguously.
    /// The body is not well-formed JSON.
    JsonMalformed,
    /// An object repeats a member name (ambiguous, refused).
    JsonDuplicateKey,
    /// A number has a fraction or exponent (MPCP canonical form takes integers only).
    JsonNumberNotInteger,
    /// An integer lies outside the exactly representable range.
    JsonNumberOutOfRange,
    /// The bytes are not valid UTF-8.
    JsonInvalidUtf8,
    /// Nesting exceeds the depth limit.
    JsonTooDeep,
    /// The document exceeds the size limit.
    JsonTooLarge,
    /// A value has no unambiguous canonical form.
    CanonicalizationUnsupported,
    // Schema and content validation.
    /// A member is missing, mistyped or malformed (`field` names it).
    SchemaInvalid,
    /// A closed object has a member it does not define (`field` names it).
    UnknownField,
    /// An artifact version other than the implemented one.
    VersionUnsupported,
    /// A PolicyGrant breaks an MPCP v1 conformance rule.
    GrantNotConforming,
    /// An address (XRPL, EVM) fails its format or checksum.
    AddressInvalid,
    /// An amount is not a decimal string of minor units.
    AmountInvalid,
    /// Amounts contradict each other (e.g. a cap above the budget).
    AmountInconsistent,
    /// A timestamp is outside the RFC 3339 profile or out of order.
    TimestampInvalid,
    /// A scope this appliance does not implement.
    ScopeUnsupported,
    /// The artifact kind cannot be recognised.
    ArtifactUnknown,
    // Keys and signatures.
    /// No key with that id (or no active key for the role).
    KeyNotFound,
    /// The key is revoked.
    KeyRevoked,
    /// A key set document is malformed or inconsistent.
    KeySetInvalid,
    /// A key (JWK) is malformed.
    KeyFormatInvalid,
    /// A key and the algorithm named for it disagree.
    KeyAlgMismatch,
    /// A public document carries private key material.
    KeyPrivateMaterial,
    /// An algorithm this appliance does not implement.
    AlgorithmUnsupported,
    /// The algorithm is deprecated by the algorithm policy.
    AlgorithmDeprecated,
    /// A signature is not encoded as the convention requires.
    SignatureEncodingInvalid,
    /// An ECDSA signature is not in low-S form.
    SignatureHighS,
    /// A signature does not verify.
    SignatureInvalid,
    /// A PolicyGrant's signature does not verify.
    PolicyGrantSignatureInvalid,
    /// A policy hash names no (or another) policy document.
    PolicyHashMismatch,
    /// The grant is revoked.
    GrantRevoked,
    /// The issuer is not approved by the trust bundle.
    IssuerNotApproved,
    /// A trust bundle is verified without a pinned root key.
    BundleRootRequired,
    // Time.
    /// The artifact has expired.
    ArtifactExpired,
    /// The artifact is not valid yet.
    ArtifactNotYetValid,
    /// A requested lifetime is longer than the applicable ceiling.
    LifetimeExceeded,
    // Appliance operations (HSM, key registry, audit log, service).
    /// The HSM (module, slot or token) cannot be reached (503).
    HsmUnavailable,
    /// The token refused the PIN.
    HsmPinInvalid,
    /// No token with the configured label.
    HsmTokenNotFound,
    /// The token lacks a required mechanism.
    HsmMechanismUnsupported,
    /// A key object's attributes would let its private half leave the token.
    HsmKeyAttributesUnsafe,
    /// An HSM call passed its deadline (503).
    HsmTimeout,
    /// The HSM failed an operation, or a signature failed its self-check.
    HsmError,
    /// A configuration file or flag is invalid.
    ConfigInvalid,
    /// The key lifecycle does not allow the change.
    KeyStateInvalid,
    /// The store failed to read or write (503).
    StoreError,
    /// The audit log cannot write: nothing was released (503).
    AuditUnavailable,
    /// The clock is behind the audit log: nothing is signed (503).
    ClockBehind,
    /// The clock jumped further than allowed since the last entry.
    ClockJump,
    /// A proof was asked for beyond the log's size.
    ProofOutOfRange,
    /// An Idempotency-Key reused with another request.
    IdempotencyConflict,
    /// The change conflicts with the current state.
    Conflict,
    /// No such resource.
    NotFound,
    /// A missing, unknown or revoked API token (401).
    Unauthorized,
    /// The token's role may not call the route (403).
    Forbidden,
    /// The issuer role requires a verified TLS client certificate.
    ClientCertificateRequired,
    /// The token exceeded its request rate (429).
    RateLimited,
    /// The body exceeds the body limit (413).
    PayloadTooLarge,
    /// The body is not `application/json` (415).
    UnsupportedMediaType,
    /// A local file could not be read or written.
    Io,
    /// A fault of the appliance itself; never caused by input.
    Internal,
    // Audit log verification.
    /// An inclusion or consistency proof does not verify.
    AuditProofInvalid,
    /// The audit log fails verification.
    AuditLogInvalid,
    /// An audit entry is dated before its predecessor.
    AuditTimeBackwards,
    /// A checkpoint is malformed or its signature does not verify.
    CheckpointInvalid,
    /// Two checkpoints are not consistent with one log.
    CheckpointInconsistent,
    // Appended codes.
    /// A key is used for a role it does not hold.
    KeyRoleMismatch,
    // Service routing.
    /// No route for the method and path (404).
    RouteNotFound,
    /// The route does not take the method (405).
    MethodNotAllowed,
    /// A dependency of readiness is down (503).
    NotReady,
    // Audit checkpoints.
    /// The audit role has no active key: no checkpoint can be signed (503).
    AuditKeyMissing,
    // API tokens.
    /// A retried token creation that already succeeded: its secret is never shown again.
    TokenSecretNotReplayed,
    // Key discovery.
    /// The signed key set cannot be produced: no usable root key (server state).
    KeySetUnavailable,
    /// An active key's private object is missing from its token (server state).
    KeyMaterialMissing,
    // Connection and request limits.
    /// The request body did not arrive within the body deadline (408).
    RequestTimeout,
    /// The request URI is longer than the service's head limit (414).
    UriTooLong,
    /// The request head (request line and header fields) is larger than the limit (431).
    HeadersTooLarge,
    // Authorization between callers.
    /// The artifact belongs to another issuer token (403): an issuer revokes only its own
    /// grants and versions only its own allowlists.
    NotOwner,
    /// The change would leave no active security-officer token (409).
    LastOfficer,
    /// This deployment has no receipt-signing token configured (503).
    ReceiptsNotConfigured,
    /// No receipt policy is set: no decision is signed until a security officer sets one
    /// (409).
    ReceiptPolicyNotSet,
    /// The `tools/call` params carry no usable `_meta.authorization_binding` (or no `name`
    /// / `arguments`): the call cannot be bound, so nothing is decided.
    AuthorizationBindingInvalid,
    /// A receipt record failed a check; the body's `verdict` says which (403).
    ReceiptRefused,
    /// The call binding or action was already consumed; the body's `outcome` is the prior
    /// outcome record, if one was signed (409).
    ReceiptAlreadyConsumed,
    /// The call binding or action was consumed for another digest, tool, audience or
    /// policy (409).
    ReceiptOutOfScope,
    /// An outcome for a decision that was not admitted by a consume (409).
    ReceiptNotConsumed,
    /// The decision already has an outcome that differs from the one reported (409).
    ReceiptOutcomeExists,
    /// Too many decisions under one call binding: `decidedAt` would run ahead of the clock
    /// beyond the drift tolerance (429).
    ReceiptDecisionRate,
    /// An id would make an XLS-70 CredentialType longer than the ledger's 64 bytes (400).
    CredentialTypeTooLong,
    /// The PA issues the grant's credential, but the grant's subject is no XRPL classic
    /// address the credential could name as its Subject (400).
    CredentialSubjectInvalid,
    /// `activeGrantCredentialIssuer` names neither the PA's own XRPL account nor an account
    /// the operator declared as a credential issuer (400).
    CredentialIssuerUnknown,
    /// This deployment has no xrpl-account token (or no active account key) (503).
    LedgerNotConfigured,
    /// The transaction must be signed by another XRPL account than the PA's current one
    /// (its account key was rotated) (409).
    LedgerAccountChanged,
}

impl ErrorCode {
    /// The stable wire name of the code (SCREAMING_SNAKE_CASE).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            JsonMalformed => "JSON_MALFORMED",
            JsonDuplicateKey => "JSON_DUPLICATE_KEY",
            JsonNumberNotInteger => "JSON_NUMBER_NOT_INTEGER",
            JsonNumberOutOfRange => "JSON_NUMBER_OUT_OF_RANGE",
            JsonInvalidUtf8 => "JSON_INVALID_UTF8",
            JsonTooDeep => "JSON_TOO_DEEP",
            JsonTooLarge => "JSON_TOO_LARGE",
            CanonicalizationUnsupported => "CANONICALIZATION_UNSUPPORTED",
            SchemaInvalid => "SCHEMA_INVALID",
            UnknownField => "UNKNOWN_FIELD",
            VersionUnsupported => "VERSION_UNSUPPORTED",
            GrantNotConforming => "GRANT_NOT_CONFORMING",
            AddressInvalid => "ADDRESS_INVALID",
            AmountInvalid => "AMOUNT_INVALID",
            AmountInconsistent => "AMOUNT_INCONSISTENT",
            TimestampInvalid => "TIMESTAMP_INVALID",
            ScopeUnsupported => "SCOPE_UNSUPPORTED",
            ArtifactUnknown => "ARTIFACT_UNKNOWN",
            KeyNotFound => "KEY_NOT_FOUND",
            KeyRevoked => "KEY_REVOKED",
            KeySetInvalid => "KEY_SET_INVALID",
            KeyFormatInvalid => "KEY_FORMAT_INVALID",
            KeyAlgMismatch => "KEY_ALG_MISMATCH",
            KeyPrivateMaterial => "KEY_PRIVATE_MATERIAL",
            AlgorithmUnsupported => "ALGORITHM_UNSUPPORTED",
            AlgorithmDeprecated => "ALGORITHM_DEPRECATED",
            SignatureEncodingInvalid => "SIGNATURE_ENCODING_INVALID",
            SignatureHighS => "SIGNATURE_HIGH_S",
            SignatureInvalid => "SIGNATURE_INVALID",
            PolicyGrantSignatureInvalid => "POLICY_GRANT_SIGNATURE_INVALID",
            PolicyHashMismatch => "POLICY_HASH_MISMATCH",
            GrantRevoked => "GRANT_REVOKED",
            IssuerNotApproved => "ISSUER_NOT_APPROVED",
            BundleRootRequired => "BUNDLE_ROOT_REQUIRED",
            ArtifactExpired => "ARTIFACT_EXPIRED",
            ArtifactNotYetValid => "ARTIFACT_NOT_YET_VALID",
            LifetimeExceeded => "LIFETIME_EXCEEDED",
            HsmUnavailable => "HSM_UNAVAILABLE",
            HsmPinInvalid => "HSM_PIN_INVALID",
            HsmTokenNotFound => "HSM_TOKEN_NOT_FOUND",
            HsmMechanismUnsupported => "HSM_MECHANISM_UNSUPPORTED",
            HsmKeyAttributesUnsafe => "HSM_KEY_ATTRIBUTES_UNSAFE",
            HsmTimeout => "HSM_TIMEOUT",
            HsmError => "HSM_ERROR",
            ConfigInvalid => "CONFIG_INVALID",
            KeyStateInvalid => "KEY_STATE_INVALID",
            StoreError => "STORE_ERROR",
            AuditUnavailable => "AUDIT_UNAVAILABLE",
            ClockBehind => "CLOCK_BEHIND",
            ClockJump => "CLOCK_JUMP",
            ProofOutOfRange => "PROOF_OUT_OF_RANGE",
            IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            Conflict => "CONFLICT",
            NotFound => "NOT_FOUND",
            Unauthorized => "UNAUTHORIZED",
            Forbidden => "FORBIDDEN",
            ClientCertificateRequired => "CLIENT_CERTIFICATE_REQUIRED",
            RateLimited => "RATE_LIMITED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Io => "IO_ERROR",
            Internal => "INTERNAL",
            AuditProofInvalid => "AUDIT_PROOF_INVALID",
            AuditLogInvalid => "AUDIT_LOG_INVALID",
            AuditTimeBackwards => "AUDIT_TIME_BACKWARDS",
            CheckpointInvalid => "CHECKPOINT_INVALID",
            CheckpointInconsistent => "CHECKPOINT_INCONSISTENT",
            KeyRoleMismatch => "KEY_ROLE_MISMATCH",
            RouteNotFound => "ROUTE_NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            NotReady => "NOT_READY",
            AuditKeyMissing => "AUDIT_KEY_MISSING",
            TokenSecretNotReplayed => "TOKEN_SECRET_NOT_REPLAYED",
            KeySetUnavailable => "KEY_SET_UNAVAILABLE",
            KeyMaterialMissing => "KEY_MATERIAL_MISSING",
            RequestTimeout => "REQUEST_TIMEOUT",
            UriTooLong => "URI_TOO_LONG",
            HeadersTooLarge => "HEADERS_TOO_LARGE",
            NotOwner => "NOT_OWNER",
            LastOfficer => "LAST_OFFICER",
            ReceiptsNotConfigured => "RECEIPTS_NOT_CONFIGURED",
            ReceiptPolicyNotSet => "RECEIPT_POLICY_NOT_SET",
            AuthorizationBindingInvalid => "AUTHORIZATION_BINDING_INVALID",
            ReceiptRefused => "RECEIPT_REFUSED",
            ReceiptAlreadyConsumed => "RECEIPT_ALREADY_CONSUMED",
            ReceiptOutOfScope => "RECEIPT_OUT_OF_SCOPE",
            ReceiptNotConsumed => "RECEIPT_NOT_CONSUMED",
            ReceiptOutcomeExists => "RECEIPT_OUTCOME_EXISTS",
            ReceiptDecisionRate => "RECEIPT_DECISION_RATE",
            CredentialTypeTooLong => "CREDENTIAL_TYPE_TOO_LONG",
            CredentialSubjectInvalid => "CREDENTIAL_SUBJECT_INVALID",
            CredentialIssuerUnknown => "CREDENTIAL_ISSUER_UNKNOWN",
            LedgerNotConfigured => "LEDGER_NOT_CONFIGURED",
            LedgerAccountChanged => "LEDGER_ACCOUNT_CHANGED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An appliance error: stable code, human message, optional JSON field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
    /// The offending field (JSON member name or dotted path), when one is to blame.
    pub field: Option<String>,
}

impl Error {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// An error blaming one field.
    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// Prefixes the field path (used when a nested validator reports a relative field).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = Some(match self.field {
            Some(f) if f.starts_with('[') => format!("{parent}{f}"),
            Some(f) => format!("{parent}.{f}"),
            None => parent.to_string(),
        });
        self
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_render_stably() {
        assert_eq!(ErrorCode::KeyRevoked.as_str(), "KEY_REVOKED");
        assert_eq!(ErrorCode::ClockBehind.as_str(), "CLOCK_BEHIND");
        assert_eq!(
            ErrorCode::AuditTimeBackwards.as_str(),
            "AUDIT_TIME_BACKWARDS"
        );
        let e = Error::field(ErrorCode::AddressInvalid, "gateway", "bad checksum").within("grant");
        assert_eq!(e.field.as_deref(), Some("grant.gateway"));
        assert_eq!(e.to_string(), "ADDRESS_INVALID: bad checksum");
    }
}
